//! dualcast inside a host's server: as a layer or a fallback of an axum `Router`, served by
//! `axum::serve` or by `dualcast::serve_with_settings`, with the handlers at the host's own
//! paths, the host's own 404, cookie login through the identify hook, host-side endings,
//! and the layers' leases through the real handlers.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::*;
use dualcast::{
    AuthLayer, ConnectionKind, DisconnectReason, Dualcast, Endpoints, Hub, Identity,
    JwtAuthenticator, Message, Role, ServeSettings, SseHandler, TrackLayer, WebSocketHandler,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::{ServiceBuilder, ServiceExt};

/// How long a server has to finish its graceful shutdown: the hub's grace period, and more.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

/// The size of the host's `/sse/report` body.
const REPORT_LEN: usize = 100 * 1024;

fn jwt() -> AuthLayer<JwtAuthenticator> {
    AuthLayer::new(JwtAuthenticator::hs256(SECRET))
}

/// 100 KiB of numbered lines, so that a cut, a repeat or a reorder shows.
fn report_body() -> String {
    let body: String = (0..REPORT_LEN / 8).map(|n| format!("{n:07}\n")).collect();
    assert_eq!(body.len(), REPORT_LEN);
    body
}

async fn host_404() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "the host's own 404\n")
}

/// A host's server running in a task: `axum::serve` with the hub's `shutdown_on`, or
/// `dualcast::serve_with_settings`. Dropping it fires the stop signal.
struct Host {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Host {
    /// `axum::serve(listener, router).with_graceful_shutdown(hub.shutdown_on(stop))`.
    async fn axum(router: Router, hub: &Hub) -> Self {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = hub.shutdown_on(async move {
            stopped.await.ok();
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(signal)
                .await
                .expect("axum::serve ends without an error");
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `dualcast::serve_with_settings(listener, endpoints, service, default, stop)`.
    async fn dualcast<S, B>(service: S, endpoints: Endpoints) -> Self
    where
        S: tower::Service<Request<Incoming>, Response = http::Response<B>, Error = Infallible>
            + tower::Service<Request<Empty<Bytes>>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        <S as tower::Service<Request<Incoming>>>::Future: Send + 'static,
        <S as tower::Service<Request<Empty<Bytes>>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                stopped.await.ok();
            };
            dualcast::serve_with_settings(
                listener,
                endpoints,
                service,
                ServeSettings::default(),
                signal,
            )
            .await
            .expect("serve_with_settings ends without an error");
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Fires the stop signal.
    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Fires the stop signal (if not yet) and waits for the serve task to finish.
    async fn finished(mut self) {
        self.signal_stop();
        let task = self.task.take().expect("awaited once");
        within_for(SHUTDOWN_BOUND, "the host's serve task to finish", task)
            .await
            .expect("the serve task did not panic");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

async fn bind() -> tokio::net::TcpListener {
    within(
        "a listener on 127.0.0.1:0",
        tokio::net::TcpListener::bind("127.0.0.1:0"),
    )
    .await
    .unwrap()
}

/// A response read off a raw socket.
struct RawResponse {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Reads a response head from `stream`; the head, and the body bytes that came with it.
async fn read_head(stream: &mut TcpStream) -> (u16, HeaderMap, Vec<u8>) {
    let mut received = Vec::new();
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) =
            response.parse(&received).expect("a valid response head")
        {
            let mut map = HeaderMap::new();
            for header in response.headers.iter() {
                map.append(
                    http::HeaderName::from_bytes(header.name.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(header.value).unwrap(),
                );
            }
            let status = response.code.expect("a status");
            return (status, map, received[head_len..].to_vec());
        }
        let read = within("the response head", stream.read(&mut buffer))
            .await
            .expect("a readable socket");
        assert!(read > 0, "the connection closed before the response head");
        received.extend_from_slice(&buffer[..read]);
    }
}

/// Writes `request` in one write and reads the response to the end of the connection
/// (what the direct-SSE path does after an answer that is not a stream: it closes).
async fn raw_exchange(addr: SocketAddr, request: &str) -> RawResponse {
    let mut stream = connect_to(addr).await;
    within("the request written", stream.write_all(request.as_bytes()))
        .await
        .unwrap();
    let (status, headers, mut body) = read_head(&mut stream).await;
    body.extend(read_to_end(&mut stream).await);
    RawResponse {
        status,
        headers,
        body,
    }
}

fn assert_whole_report(response: &RawResponse) {
    assert_eq!(response.status, 200);
    if let Some(length) = response.headers.get("content-length") {
        assert_eq!(length, &REPORT_LEN.to_string(), "a correct content-length");
    }
    assert!(
        response.headers.get("transfer-encoding").is_none(),
        "a raw read expects no chunked framing: {:?}",
        response.headers
    );
    assert_eq!(
        response.body.len(),
        REPORT_LEN,
        "the whole body, nothing more"
    );
    assert!(
        response.body == report_body().as_bytes(),
        "the body as the host wrote it"
    );
}

// 1. A host route under `/sse/` returns its full body.

#[tokio::test]
async fn a_host_route_under_sse_gets_its_whole_body_through_the_direct_sse_path() {
    let (dualcast, hub) = Dualcast::builder(jwt()).build_service();
    let endpoints = dualcast.endpoints().clone();
    let router = Router::new()
        .route("/sse/report", get(|| async { report_body() }))
        .fallback_service(dualcast);
    let host = Host::dualcast(router, endpoints).await;

    // One write: the head `serve` takes for its direct-SSE path, and a path that is one of
    // dualcast's SSE routes (`/sse/{player_id}`) but the host's route.
    let response = raw_exchange(host.addr, "GET /sse/report HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_whole_report(&response);
    assert_eq!(
        response.headers["connection"], "close",
        "answered by the direct path"
    );
    assert_eq!(hub.connection_count(), 0, "no SSE connection was opened");

    host.finished().await;
}

#[tokio::test]
async fn under_a_prefix_the_layer_streams_its_sse_route_directly_and_the_host_keeps_sse_report() {
    let (layer, hub) = Dualcast::builder(jwt()).prefix("/rt").build();
    let endpoints = layer.endpoints().clone();
    let router = Router::new()
        .route("/sse/report", get(|| async { report_body() }))
        .layer(layer);
    let host = Host::dualcast(router, endpoints).await;

    let mut stream = connect_to(host.addr).await;
    let request = format!(
        "GET /rt/api/sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        player_token("dana")
    );
    within("the request written", stream.write_all(request.as_bytes()))
        .await
        .unwrap();
    let (status, headers, mut body) = read_head(&mut stream).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(
        headers["connection"], "close",
        "written by the direct path: {headers:?}"
    );
    assert!(
        headers.get("transfer-encoding").is_none(),
        "not chunked by hyper: {headers:?}"
    );
    let mut buffer = vec![0; 4096];
    while body.len() < b": connected".len() {
        let read = within("the stream's opening", stream.read(&mut buffer))
            .await
            .unwrap();
        assert!(read > 0, "the stream ended before its opening");
        body.extend_from_slice(&buffer[..read]);
    }
    assert!(
        body.starts_with(b": connected"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(hub.connections_of("dana").len(), 1);

    // Not dualcast's under the prefix: the host's route, through hyper.
    let (status, _, report) = http_at(host.addr, "GET", "/sse/report", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report.len(), REPORT_LEN);
    assert!(report == report_body().as_bytes());

    drop(stream);
    host.finished().await;
}

/// A host with its own `/api/openapi.json` keeps it: the layer leaves the path alone
/// unless asked, and then serves its document under its prefix, naming the prefixed paths;
/// the document is at hand for the host to merge or serve itself either way.
#[tokio::test]
async fn a_host_keeps_its_own_openapi_document_and_gets_dualcasts_under_the_prefix() {
    let host_router = || {
        Router::new()
            .route(
                "/api/openapi.json",
                get(|| async { "the host's own document" }),
            )
            .fallback(host_404)
    };
    // The layer's default: the route is off, even without a prefix.
    let (layer, hub) = Dualcast::builder(jwt()).build();
    assert!(layer
        .endpoints()
        .openapi_json()
        .starts_with(b"{\"openapi\":\"3.1.0\""));
    let host = Host::axum(host_router().layer(layer), &hub).await;
    let (status, _, own) = http_at(host.addr, "GET", "/api/openapi.json", &[], Bytes::new()).await;
    assert_eq!(
        (status, &own[..]),
        (StatusCode::OK, &b"the host's own document"[..])
    );
    host.finished().await;

    let (layer, hub) = Dualcast::builder(jwt())
        .prefix("/rt")
        .openapi_route(true)
        .build();
    let endpoints = layer.endpoints().clone();
    let host = Host::axum(host_router().layer(layer), &hub).await;

    let (status, _, own) = http_at(host.addr, "GET", "/api/openapi.json", &[], Bytes::new()).await;
    assert_eq!(
        (status, &own[..]),
        (StatusCode::OK, &b"the host's own document"[..])
    );
    let (status, _, theirs) =
        http_at(host.addr, "GET", "/rt/api/openapi.json", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(theirs, endpoints.openapi_json(), "the same document");
    let document: Value = serde_json::from_slice(&theirs).unwrap();
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().all(|p| p.starts_with("/rt/")), "{paths:?}");
    let (status, _, body) = http_at(host.addr, "GET", "/rt/nowhere", &[], Bytes::new()).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::NOT_FOUND, &b"the host's own 404\n"[..])
    );
    host.finished().await;
}

// 2. An axum host shuts down within the grace period, telling every connection.

#[tokio::test]
async fn an_axum_host_shuts_down_in_the_grace_period_with_close_frames_and_disconnect_events() {
    let (layer, hub) = Dualcast::builder(jwt()).build();
    let router = Router::new()
        .route("/", get(|| async { "home" }))
        .layer(layer);
    let mut host = Host::axum(router, &hub).await;
    let token = player_token("erin");
    let mut ws = ws_with_token_at(host.addr, "/api/ws", &token).await;
    let mut sse = sse_with_token_at(host.addr, "/api/sse", &token).await;
    assert_eq!(hub.connection_count(), 2);

    host.signal_stop();
    assert_eq!(ws.next_close().await, (1001, "server_shutdown".to_owned()));
    let disconnect = sse.next_named("disconnect").await;
    assert_eq!(disconnect["reason"], "server_shutdown");
    // Clients that behave: the WebSocket answers the close, the SSE stream is read to its end.
    ws.finish_close().await;
    sse.closed().await;

    host.finished().await;
    assert_eq!(hub.connection_count(), 0);
}

/// A client that stopped reading holds hyper's write, and axum's graceful shutdown waits
/// for it without end; `Hub::bounded_shutdown` gives that wait its bound.
#[tokio::test]
async fn a_client_that_stopped_reading_cannot_hold_an_axum_shutdown_open_past_its_bound() {
    let (layer, hub) = Dualcast::builder(jwt()).build();
    let router = Router::new()
        .route("/", get(|| async { "home" }))
        .layer(layer);
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = hub.shutdown_on(async move {
        stopped.await.ok();
    });
    let bounded = hub.clone();
    let server = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(signal);
        bounded
            .bounded_shutdown(server, Duration::from_millis(500))
            .await
    });

    // An SSE client with a small receive buffer that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = within("a connection", socket.connect(addr)).await.unwrap();
    let head = format!(
        "GET /api/sse HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\r\n",
        player_token("stuck")
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut events = hub.subscribe();
    within("the stream registered", async {
        while hub.connection_count() == 0 {
            let _ = events.recv().await;
        }
    })
    .await;
    // Until hyper's write is stuck: the outbox overflows and the hub ends it.
    let big = dualcast::Message::json("big", json!({ "pad": "x".repeat(32 * 1024) }));
    within("the stream overflowed", async {
        while hub.send_to_player("stuck", &big).failed == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let _ = stop.send(());
    let output = within_for(SHUTDOWN_BOUND, "the bounded shutdown", server)
        .await
        .expect("no panic");
    assert!(
        output.is_none(),
        "axum still waited for the stalled client: the bound cut it"
    );
    assert_eq!(hub.connection_count(), 0);
    drop(stalled);
}

// 3. A cookie-authenticated host connects both kinds through the identify hook.

/// The host's session table: cookie value → player.
fn player_of_session(session: &str) -> Option<&'static str> {
    match session {
        "s-carol" => Some("carol"),
        _ => None,
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get("cookie")?.to_str().ok()?;
    cookies
        .split(';')
        .find_map(|cookie| cookie.trim().strip_prefix("session="))
        .map(str::to_owned)
}

/// A router with dualcast as a layer that identifies requests by their session cookie
/// alone, with an async hook that counts its calls.
fn cookie_host(calls: Arc<AtomicUsize>) -> (Router, Endpoints) {
    let auth = AuthLayer::identify(move |parts: &Parts| {
        calls.fetch_add(1, Ordering::SeqCst);
        let session = session_cookie(&parts.headers);
        async move {
            // A database lookup would be awaited here.
            tokio::task::yield_now().await;
            let session = session.ok_or(dualcast::AuthError::missing("log in first"))?;
            let player = player_of_session(&session)
                .ok_or(dualcast::AuthError::invalid("unknown session"))?;
            Ok(Identity::new(player, Role::Player))
        }
    });
    let (layer, _hub) = Dualcast::builder(auth).build();
    let endpoints = layer.endpoints().clone();
    let router = Router::new()
        .route("/", get(|| async { "home" }))
        .layer(layer);
    (router, endpoints)
}

#[derive(Clone, Copy, Debug)]
enum Server {
    /// `axum::serve`: every request through hyper.
    Axum,
    /// `dualcast::serve_with_settings`: SSE streams written by the direct path.
    Dualcast,
}

async fn start_cookie_host(server: Server) -> (Host, Hub, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (router, endpoints) = cookie_host(calls.clone());
    let hub = endpoints.hub().clone();
    let host = match server {
        Server::Axum => Host::axum(router, &hub).await,
        Server::Dualcast => Host::dualcast(router, endpoints).await,
    };
    (host, hub, calls)
}

const COOKIE: (&str, &str) = ("cookie", "theme=dark; session=s-carol");

fn cookie() -> (&'static str, String) {
    (COOKIE.0, COOKIE.1.to_owned())
}

async fn both_kinds_connect_by_cookie_and_receive_what_the_host_sends(server: Server) {
    let (host, hub, calls) = start_cookie_host(server).await;
    let mut ws = ws_at(host.addr, "/api/ws", &[cookie()])
        .await
        .unwrap_or_else(|refused| panic!("{server:?}: the WebSocket was refused: {refused:?}"));
    assert!(
        ws.response
            .headers()
            .get("sec-websocket-protocol")
            .is_none(),
        "none was offered"
    );
    let mut sse = sse_at(host.addr, "/api/sse", &[cookie()])
        .await
        .unwrap_or_else(|refused| panic!("{server:?}: the SSE stream was refused: {refused:?}"));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the hook identified both");
    let kinds: Vec<ConnectionKind> = hub
        .connections_of("carol")
        .iter()
        .map(|connection| connection.kind)
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");

    let report = hub.send_to_player("carol", &Message::json("greeting", json!({"text": "hi"})));
    assert_eq!((report.websocket, report.sse), (1, 1));
    let on_ws = ws.next_json().await;
    let on_sse = sse.next_json().await;
    assert_eq!(on_ws["id"].as_str(), Some(&*report.id));
    assert_eq!(on_sse["id"].as_str(), Some(&*report.id));
    assert_eq!(on_ws["type"], "greeting");
    assert_eq!(on_sse["data"], json!({"text": "hi"}));

    drop((ws, sse));
    host.finished().await;
}

#[tokio::test]
async fn a_cookie_host_on_axum_connects_both_kinds_through_the_async_identify_hook() {
    both_kinds_connect_by_cookie_and_receive_what_the_host_sends(Server::Axum).await;
}

#[tokio::test]
async fn a_cookie_host_on_dualcast_serve_connects_both_kinds_through_the_async_identify_hook() {
    both_kinds_connect_by_cookie_and_receive_what_the_host_sends(Server::Dualcast).await;
}

fn assert_origin_refused(server: Server, kind: &str, refused: (StatusCode, Value)) {
    let (status, body) = refused;
    assert_eq!(status, StatusCode::FORBIDDEN, "{server:?} {kind}: {body}");
    assert_eq!(
        body["error_type"], "authorization_error",
        "{server:?} {kind}"
    );
    assert_eq!(
        body["details"]["error_code"], "ORIGIN_NOT_ALLOWED",
        "{server:?} {kind}"
    );
    assert_eq!(body["details"]["origin"], "http://evil.test");
}

async fn a_foreign_origin_is_refused_before_the_hook_and_a_same_or_no_origin_passes(
    server: Server,
) {
    let (host, _hub, calls) = start_cookie_host(server).await;
    let evil = [cookie(), ("origin", "http://evil.test".to_owned())];
    match ws_at(host.addr, "/api/ws", &evil).await {
        Ok(_) => panic!("{server:?}: a cross-site WebSocket was admitted"),
        Err(refused) => assert_origin_refused(server, "WebSocket", refused),
    }
    match sse_at(host.addr, "/api/sse", &evil).await {
        Ok(_) => panic!("{server:?}: a cross-site SSE stream was admitted"),
        Err(refused) => assert_origin_refused(server, "SSE", refused),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a refused origin costs no lookup"
    );

    let same = [
        cookie(),
        ("origin", format!("http://127.0.0.1:{}", host.addr.port())),
    ];
    let mut open = Vec::new();
    for headers in [&[cookie()][..], &same[..]] {
        let ws = ws_at(host.addr, "/api/ws", headers)
            .await
            .unwrap_or_else(|refused| panic!("{server:?} {headers:?}: {refused:?}"));
        let sse = sse_at(host.addr, "/api/sse", headers)
            .await
            .unwrap_or_else(|refused| panic!("{server:?} {headers:?}: {refused:?}"));
        open.push((ws, sse));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    drop(open);
    host.finished().await;
}

#[tokio::test]
async fn on_axum_a_foreign_origin_is_refused_on_both_kinds_before_the_hook_runs() {
    a_foreign_origin_is_refused_before_the_hook_and_a_same_or_no_origin_passes(Server::Axum).await;
}

#[tokio::test]
async fn on_dualcast_serve_a_foreign_origin_is_refused_on_both_kinds_before_the_hook_runs() {
    a_foreign_origin_is_refused_before_the_hook_and_a_same_or_no_origin_passes(Server::Dualcast)
        .await;
}

// 4. The host's 404 stays the host's; the handlers work at the host's paths.

#[tokio::test]
async fn as_a_layer_dualcast_leaves_unknown_paths_to_the_host_fallback() {
    let (layer, hub) = Dualcast::builder(jwt()).build();
    let router = Router::new()
        .route("/", get(|| async { "home" }))
        .fallback(host_404)
        .layer(layer);
    let host = Host::axum(router, &hub).await;

    for (method, path) in [
        ("GET", "/favicon.ico"),
        ("GET", "/api/nothing"),
        ("POST", "/sse"),
    ] {
        let (status, _, body) = http_at(host.addr, method, path, &[], Bytes::new()).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::NOT_FOUND, &b"the host's own 404\n"[..]),
            "{method} {path}"
        );
    }
    // dualcast's own routes are still there, and still need a credential.
    let (status, _, _) = http_at(host.addr, "GET", "/api/sse", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    host.finished().await;
}

#[tokio::test]
async fn as_a_fallback_service_dualcast_answers_route_not_found_not_missing_token() {
    let (dualcast, hub) = Dualcast::builder(jwt()).build_service();
    let router = Router::new()
        .route("/", get(|| async { "home" }))
        .fallback_service(dualcast);
    let host = Host::axum(router, &hub).await;

    let (status, _, body) = http_at(host.addr, "GET", "/favicon.ico", &[], Bytes::new()).await;
    let body: Value = serde_json::from_slice(&body).expect("dualcast's JSON error body");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["details"]["error_code"], "ROUTE_NOT_FOUND");
    let (status, _, body) = http_at(host.addr, "GET", "/", &[], Bytes::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"home"[..]));

    host.finished().await;
}

#[tokio::test]
async fn the_handlers_serve_connections_at_paths_the_host_chose() {
    let hub = Hub::new();
    let play = ServiceBuilder::new()
        .layer(jwt())
        .service(WebSocketHandler::new(hub.clone()));
    let events = ServiceBuilder::new()
        .layer(jwt())
        .service(SseHandler::new(hub.clone()));
    let router = Router::new()
        .route_service("/play", play)
        .route_service("/events", events);
    let host = Host::axum(router, &hub).await;

    let token = player_token("frank");
    let mut ws = ws_with_token_at(host.addr, "/play", &token).await;
    assert_eq!(ws.response.headers()["sec-websocket-protocol"], "bearer");
    let mut sse = sse_with_token_at(host.addr, "/events", &token).await;
    let report = hub.send_to_player("frank", &Message::json("hello", json!(1)));
    assert_eq!((report.websocket, report.sse), (1, 1));
    assert_eq!(ws.next_json().await["id"].as_str(), Some(&*report.id));
    assert_eq!(sse.next_json().await["id"].as_str(), Some(&*report.id));

    drop((ws, sse));
    host.finished().await;
}

#[tokio::test]
async fn under_a_prefix_the_deprecated_websocket_route_links_to_the_prefixed_successor() {
    let (layer, hub) = Dualcast::builder(jwt()).prefix("/rt").build();
    let router = Router::new().fallback(host_404).layer(layer);
    let host = Host::axum(router, &hub).await;

    let ws = ws_with_token_at(host.addr, "/rt/api/ws/gus", &player_token("gus")).await;
    let headers = ws.response.headers();
    assert_eq!(headers["link"], "</rt/api/ws>; rel=\"successor-version\"");
    assert_eq!(headers["deprecation"], "true");
    assert_eq!(hub.connections_of("gus").len(), 1);

    drop(ws);
    host.finished().await;
}

#[tokio::test]
async fn under_a_prefix_the_not_found_body_names_the_whole_request_path() {
    // dualcast alone, served by `serve_with_settings`; and as an axum router's fallback.
    for as_fallback in [false, true] {
        let (dualcast, hub) = Dualcast::builder(jwt()).prefix("/rt").build_service();
        let endpoints = dualcast.endpoints().clone();
        let host = if as_fallback {
            Host::axum(Router::new().fallback_service(dualcast), &hub).await
        } else {
            Host::dualcast(dualcast, endpoints).await
        };
        for path in ["/rt/api/nothing", "/rt/sse", "/favicon.ico"] {
            let (status, _, body) = http_at(host.addr, "GET", path, &[], Bytes::new()).await;
            let body: Value = serde_json::from_slice(&body).expect("dualcast's JSON error body");
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
            assert_eq!(body["details"]["error_code"], "ROUTE_NOT_FOUND", "{path}");
            assert_eq!(body["details"]["path"], path, "{path}");
        }
        host.finished().await;
    }
}

// 5. Opt-outs, and endings the host decides.

#[tokio::test]
async fn switched_off_publish_and_membership_routes_reach_the_host() {
    let host_router = || {
        Router::new()
            .route(
                "/api/broadcast",
                post(|| async { "the host's broadcast\n" }),
            )
            .fallback(host_404)
    };
    let service = [("authorization", format!("Bearer {}", service_token()))];
    let message = Bytes::from(json!({"type": "news", "data": null}).to_string());
    let json_headers = [
        service[0].clone(),
        ("content-type", "application/json".to_owned()),
    ];

    let (layer, hub) = Dualcast::builder(jwt())
        .publish_api(false)
        .membership_api(false)
        .build();
    let host = Host::axum(host_router().layer(layer), &hub).await;
    let (status, _, body) = http_at(
        host.addr,
        "POST",
        "/api/broadcast",
        &json_headers,
        message.clone(),
    )
    .await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"the host's broadcast\n"[..])
    );
    for (method, path) in [
        ("PUT", "/api/rooms/r/members/p"),
        ("DELETE", "/api/rooms/r/members/p"),
        ("POST", "/api/rooms/r/messages"),
        ("POST", "/api/players/p/messages"),
    ] {
        let (status, _, body) =
            http_at(host.addr, method, path, &json_headers, message.clone()).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::NOT_FOUND, &b"the host's own 404\n"[..]),
            "{method} {path}"
        );
    }
    assert!(hub.room_members("r").is_empty());
    host.finished().await;

    // The same host with the APIs on: dualcast answers those paths itself.
    let (layer, hub) = Dualcast::builder(jwt()).build();
    let host = Host::axum(host_router().layer(layer), &hub).await;
    let (status, _, body) =
        http_at(host.addr, "POST", "/api/broadcast", &json_headers, message).await;
    let report: Value = serde_json::from_slice(&body).expect("a delivery report");
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["delivered"], 0);
    let (status, _, _) = http_at(
        host.addr,
        "PUT",
        "/api/rooms/r/members/p",
        &service,
        Bytes::new(),
    )
    .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(hub.room_members("r"), ["p"]);
    host.finished().await;
}

#[tokio::test]
async fn disconnect_player_ends_every_connection_of_that_player_and_no_other() {
    let (layer, hub) = Dualcast::builder(jwt()).build();
    let router = Router::new().fallback(host_404).layer(layer);
    let host = Host::axum(router, &hub).await;
    let alice = player_token("alice");
    let mut alice_ws = ws_with_token_at(host.addr, "/api/ws", &alice).await;
    let mut alice_sse = sse_with_token_at(host.addr, "/sse/alice", &alice).await;
    let mut bob_ws = ws_with_token_at(host.addr, "/api/ws", &player_token("bob")).await;
    let mut events = hub.subscribe();

    assert_eq!(hub.disconnect_player("alice", DisconnectReason::Logout), 2);
    assert_eq!(alice_ws.next_close().await, (4000, "logout".to_owned()));
    assert_eq!(alice_sse.next_named("disconnect").await["reason"], "logout");
    alice_ws.finish_close().await;
    alice_sse.closed().await;
    for _ in 0..2 {
        let (_, reason) = wait_for_disconnect(&mut events).await;
        assert_eq!(reason, DisconnectReason::Logout);
    }
    assert!(hub.connections_of("alice").is_empty());

    assert_eq!(hub.connections_of("bob").len(), 1, "bob's connection stays");
    let report = hub.send_to_player("bob", &Message::json("still-here", Value::Null));
    assert_eq!(report.delivered, 1);
    assert_eq!(bob_ws.next_json().await["id"].as_str(), Some(&*report.id));

    drop(bob_ws);
    host.finished().await;
}

// 6. The auth and token types are reachable from `dualcast` itself.

/// A host's own credential scheme: fixed passwords.
#[derive(Clone)]
struct Passwords;

impl dualcast::Authenticate for Passwords {
    fn authenticate(&self, token: &str) -> Result<Identity, dualcast::AuthError> {
        match token {
            "open-sesame" => Ok(Identity::new("hana", Role::Player)),
            _ => Err(dualcast::AuthError::new(
                dualcast::AuthErrorKind::Invalid,
                "unknown password",
            )),
        }
    }
}

fn mint(player: &str) -> Result<String, dualcast::jwt::IssueError> {
    dualcast::jwt::issue_hs256(
        SECRET,
        &dualcast::jwt::Claims::new(player, Role::Player, 60),
    )
}

#[tokio::test]
async fn the_auth_and_token_types_are_reachable_from_dualcast(
) -> Result<(), Box<dyn std::error::Error>> {
    use dualcast::Authenticate;

    let token = mint("hana")?;
    let identity = JwtAuthenticator::hs256(SECRET).authenticate(&token)?;
    assert_eq!(identity.player_id(), "hana");
    let refused: dualcast::AuthError = Passwords.authenticate("guess").unwrap_err();
    assert_eq!(refused.kind(), dualcast::AuthErrorKind::Invalid);
    assert_eq!(refused.kind().code(), "INVALID_TOKEN");

    let server = TestServer::start_with_authenticator(Hub::new(), Passwords, |app| app).await;
    let ws = server.ws("/api/ws", "open-sesame").await;
    assert_eq!(server.hub.connections_of("hana").len(), 1);
    let wrong = [("authorization", "Bearer guess".to_owned())];
    let (status, body) = sse_at(server.addr, "/api/sse", &wrong)
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["details"]["error_code"], "INVALID_TOKEN");

    drop(ws);
    server.shutdown().await;
    Ok(())
}

// Leases of the layers in front of the handlers live as long as the connection.

#[tokio::test]
async fn an_sse_lease_lives_as_long_as_the_stream_body() {
    let hub = Hub::new();
    let (track_layer, tracker) = TrackLayer::pair();
    let sse = ServiceBuilder::new()
        .layer(jwt())
        .layer(track_layer)
        .service(SseHandler::new(hub.clone()));
    let request = |token: Option<&str>, method: &str| {
        let mut request = Request::builder().method(method).uri("/events");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(Empty::<Bytes>::new()).unwrap()
    };

    let token = player_token("ivan");
    let response = within(
        "the SSE answer",
        sse.clone().oneshot(request(Some(&token), "GET")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(tracker.open(), 1, "counted once the response resolved");
    // Pinned on the heap: the stream's body is not `Unpin`.
    let mut body = Box::pin(response.into_body());
    let opening = within("the opening comment", body.frame())
        .await
        .expect("a frame")
        .expect("a readable frame");
    assert!(opening.is_data());
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(tracker.open(), 1, "still counted while the body is held");
    assert_eq!(hub.connection_count(), 1);
    drop(body);
    assert_eq!(tracker.open(), 0, "ended with the body");
    assert_eq!(hub.connection_count(), 0);

    // Refused by the auth layer in front: never counted.
    let refused = sse.clone().oneshot(request(None, "GET")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(tracker.open(), 0);
    // Counted by the track layer, refused by the handler: the lease goes with the request.
    let refused = sse.oneshot(request(Some(&token), "POST")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(tracker.open(), 0);
}

#[tokio::test]
async fn a_websocket_lease_lives_as_long_as_the_connection() {
    let hub = Hub::new();
    let (track_layer, tracker) = TrackLayer::pair();
    let play = ServiceBuilder::new()
        .layer(jwt())
        .layer(track_layer)
        .service(WebSocketHandler::new(hub.clone()));
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(play.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades(),
            );
        }
    });
    let _stop_accepting = AbortOnDrop(accept);
    let mut events = hub.subscribe();

    let mut ws = ws_with_token_at(addr, "/", &player_token("judy")).await;
    assert_eq!(tracker.open(), 1, "counted once the 101 arrived");
    let report = hub.send_to_player("judy", &Message::json("ping", Value::Null));
    assert_eq!(ws.next_json().await["id"].as_str(), Some(&*report.id));
    assert_eq!(tracker.open(), 1, "still counted while the socket is open");

    within("the client's close sent", ws.socket.close(None))
        .await
        .unwrap();
    ws.finish_close().await;
    let (kind, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(
        (kind, reason),
        (ConnectionKind::WebSocket, DisconnectReason::ClientClosed)
    );
    // The guard drops its leases right after it has left the hub.
    within("the lease to end", async {
        while tracker.open() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(hub.connection_count(), 0);

    // Refused before the handler: no lease taken.
    let refused = ws_at(addr, "/", &[])
        .await
        .err()
        .expect("no token: refused");
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
    assert_eq!(tracker.open(), 0);
}

/// Aborts the task when dropped (an accept loop a test started).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A host's own auth and server, and the delivery guarantees: a cookie-identified player
/// whose SSE stream drops gets what the host published meanwhile (queued) when its
/// `EventSource` comes back with `Last-Event-ID`, each once and in order, then `recovery`.
async fn a_cookie_client_resumes_what_the_host_sent_while_it_was_away(server: Server) {
    let (host, hub, _calls) = start_cookie_host(server).await;
    let mut sse = sse_at(host.addr, "/api/sse", &[cookie()])
        .await
        .unwrap_or_else(|refused| panic!("{server:?}: refused: {refused:?}"));
    let first = hub.send_to_player("carol", &Message::json("n", json!(1)));
    assert_eq!(sse.next_json().await["id"].as_str(), Some(&*first.id));
    drop(sse);
    let gone = || hub.connections_of("carol").is_empty().then_some(());
    poll_until("the stream is gone", gone).await;

    let missed: Vec<String> = (2..=3)
        .map(|n| {
            let report = hub.send_to_player("carol", &Message::json("n", json!(n)));
            assert!(report.queued && report.delivered == 0, "{report:?}");
            report.id.to_string()
        })
        .collect();
    let resume = [cookie(), ("last-event-id", first.id.to_string())];
    let mut sse = sse_at(host.addr, "/api/sse", &resume)
        .await
        .unwrap_or_else(|refused| panic!("{server:?}: the resume was refused: {refused:?}"));
    for id in &missed {
        let record = loop {
            let record = sse.next_record().await;
            if !record.is_comment {
                break record;
            }
        };
        assert_eq!(record.id.as_deref(), Some(id.as_str()), "{server:?}");
    }
    let recovery = sse.next_named("recovery").await;
    assert_eq!(recovery["data"], json!({"complete": true, "replayed": 2}));
    let live = hub.send_to_player("carol", &Message::json("n", json!(4)));
    assert_eq!(sse.next_json().await["id"].as_str(), Some(&*live.id));
    drop(sse);
    host.finished().await;
}

#[tokio::test]
async fn on_axum_a_cookie_client_resumes_what_the_host_sent_while_it_was_away() {
    a_cookie_client_resumes_what_the_host_sent_while_it_was_away(Server::Axum).await;
}

#[tokio::test]
async fn on_dualcast_serve_a_cookie_client_resumes_what_the_host_sent_while_it_was_away() {
    a_cookie_client_resumes_what_the_host_sent_while_it_was_away(Server::Dualcast).await;
}
