//! A real server on 127.0.0.1:0 and real clients: tokio-tungstenite for WebSocket, a hyper
//! client reading the SSE stream, a hyper client for the HTTP API.
//!
//! Every await in these helpers is bounded by [`WAIT`] and panics saying what did not
//! arrive, so a bug shows up as a failure rather than a hang.
#![allow(dead_code)]

pub mod redis_server;

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use std::convert::Infallible;

use dualcast::jwt::{issue_hs256, Claims};
use dualcast::{
    AuthError, AuthLayer, Authenticate, Dualcast, DualcastBuilder, Endpoints, Hub, HubEvent,
    Identity, JwtAuthenticator, Message, Role, ServeSettings,
};
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{broadcast, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tower::Service;

/// The default stack's builder with JWT auth verified by `A`.
pub type Builder<A> = DualcastBuilder<AuthLayer<A>>;

pub const SECRET: &[u8] = b"integration-test-secret-of-32-bytes!";
/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);
/// The `type` of the message [`publish_sentinel`] sends.
pub const SENTINEL: &str = "sentinel";

/// `future`'s output, or a panic naming `what` did not happen within [`WAIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(WAIT, what, future).await
}

/// `future`'s output, or a panic naming `what` did not happen within `limit`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Hub::new(), |app| app).await
    }

    /// `dualcast::serve` over `hub`, the stack configured by `configure`.
    pub async fn start_with(
        hub: Hub,
        configure: impl FnOnce(Builder<JwtAuthenticator>) -> Builder<JwtAuthenticator>,
    ) -> Self {
        Self::start_with_authenticator(hub, JwtAuthenticator::hs256(SECRET), configure).await
    }

    /// `dualcast::serve` over `hub`, verifying credentials with `authenticator`.
    pub async fn start_with_authenticator<A>(
        hub: Hub,
        authenticator: A,
        configure: impl FnOnce(Builder<A>) -> Builder<A>,
    ) -> Self
    where
        A: Authenticate + Clone + Send + Sync + 'static,
    {
        let builder = Dualcast::builder(AuthLayer::new(authenticator)).hub(hub.clone());
        let (app, _) = configure(builder).build_service();
        let endpoints = app.endpoints().clone();
        Self::serve(hub, endpoints, app, ServeSettings::default()).await
    }

    /// `dualcast::serve_with_settings` with `settings` (the connection cap, say).
    pub async fn start_with_settings(settings: ServeSettings) -> Self {
        let hub = Hub::new();
        let (app, _) = Dualcast::builder(AuthLayer::new(JwtAuthenticator::hs256(SECRET)))
            .hub(hub.clone())
            .build_service();
        let endpoints = app.endpoints().clone();
        Self::serve(hub, endpoints, app, settings).await
    }

    /// `dualcast::serve_with_settings` of any service embedding the stack of `endpoints`
    /// (a host's router with dualcast as a layer, say).
    pub async fn serve<S, B>(
        hub: Hub,
        endpoints: Endpoints,
        app: S,
        settings: ServeSettings,
    ) -> Self
    where
        S: Service<Request<Incoming>, Response = http::Response<B>, Error = Infallible>
            + Service<
                Request<http_body_util::Empty<Bytes>>,
                Response = http::Response<B>,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        <S as Service<Request<Incoming>>>::Future: Send + 'static,
        <S as Service<Request<http_body_util::Empty<Bytes>>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            dualcast::serve_with_settings(listener, endpoints, app, settings, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// dualcast served by a host's own hyper accept loop (as in `tests/embedding.rs`), not
    /// by `dualcast::serve`: every request, SSE streams included, goes through hyper.
    /// On [`shutdown`](Self::shutdown) the loop stops accepting and shuts the hub down.
    pub async fn start_hosted(hub: Hub) -> Self {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        let (app, _) = Dualcast::builder(AuthLayer::new(JwtAuthenticator::hs256(SECRET)))
            .hub(hub.clone())
            .build_service();
        let (stop, stopped) = oneshot::channel::<()>();
        let draining = hub.clone();
        let task = tokio::spawn(async move {
            let accept = async {
                loop {
                    let (stream, _) = listener.accept().await.expect("accept");
                    let app = app.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |request: Request<Incoming>| {
                                app.clone().call(request)
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            };
            tokio::select! {
                _ = stopped => {}
                () = accept => {}
            }
            within("every connection guard dropped", draining.shutdown()).await;
        });
        Self {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits for its graceful shutdown to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within_for(
                Duration::from_secs(15),
                "the server's graceful shutdown",
                task,
            )
            .await
            .expect("the server task did not panic");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn ws(&self, path: &str, token: &str) -> WsClient {
        self.try_ws(
            path,
            &[("sec-websocket-protocol", format!("bearer, {token}"))],
        )
        .await
        .unwrap()
    }

    /// A WebSocket handshake with extra headers; the error is the refused HTTP response.
    pub async fn try_ws(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<WsClient, (StatusCode, Value)> {
        let mut request = format!("ws://{}{}", self.addr, path)
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let stream = self.connect().await;
        let handshake = within(
            &format!("the WebSocket handshake answer for {path}"),
            tokio_tungstenite::client_async(request, stream),
        )
        .await;
        match handshake {
            Ok((socket, response)) => Ok(WsClient { socket, response }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body = response.into_body().unwrap_or_default();
                Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
            }
            Err(other) => panic!("handshake failed: {other}"),
        }
    }

    /// A WebSocket whose client reads nothing and has a tiny receive buffer.
    pub async fn stalled_ws(&self, path: &str, token: &str) -> WsClient {
        let stream = self.connect_with_tiny_receive_buffer().await;
        let mut request = format!("ws://{}{}", self.addr, path)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().unwrap(),
        );
        let (socket, response) = within(
            &format!("the WebSocket handshake answer for {path}"),
            tokio_tungstenite::client_async(request, stream),
        )
        .await
        .expect("the handshake succeeds");
        WsClient { socket, response }
    }

    /// An SSE request from a client that reads nothing and has a tiny receive buffer.
    pub async fn stalled_sse(&self, path: &str, token: &str) -> TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = self.connect_with_tiny_receive_buffer().await;
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\r\n",
            self.addr
        );
        within(
            "the request head written",
            stream.write_all(request.as_bytes()),
        )
        .await
        .unwrap();
        stream
    }

    async fn connect(&self) -> TcpStream {
        within(
            "a TCP connection to the server",
            TcpStream::connect(self.addr),
        )
        .await
        .expect("the server accepts connections")
    }

    async fn connect_with_tiny_receive_buffer(&self) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        within("a TCP connection to the server", socket.connect(self.addr))
            .await
            .expect("the server accepts connections")
    }

    pub async fn sse(&self, path: &str, token: &str) -> SseClient {
        let (status, client) = self.try_sse(path, Some(token)).await;
        assert_eq!(status, StatusCode::OK);
        client.unwrap()
    }

    /// Opens an SSE stream with the token as `Authorization: Bearer` (or none).
    pub async fn try_sse(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Option<SseClient>) {
        let mut request = Request::get(path).header("host", self.addr.to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .send(request.body(Full::new(Bytes::new())).unwrap())
            .await;
        let status = response.status();
        if status != StatusCode::OK {
            return (status, None);
        }
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let (parts, body) = response.into_parts();
        let mut client = SseClient {
            headers: parts.headers,
            body,
            buffer: String::new(),
        };
        let opening = client.next_record().await;
        assert!(opening.is_comment, "the stream opens with a comment");
        (status, Some(client))
    }

    /// Sends `request` on a new connection; the response head.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> http::Response<Incoming> {
        let stream = self.connect().await;
        let (mut sender, connection) = within(
            "the HTTP client handshake",
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let what = format!(
            "the response head to {} {}",
            request.method(),
            request.uri()
        );
        within(&what, sender.send_request(request))
            .await
            .expect("a response")
    }

    /// An HTTP request with a JSON (or empty) body; answers the status and the JSON body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = self
            .send(
                request
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .unwrap(),
            )
            .await;
        let status = response.status();
        let bytes = within(
            &format!("the whole response body to {method} {path}"),
            response.into_body().collect(),
        )
        .await
        .expect("a readable body")
        .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.request("POST", path, Some(token), Some(body)).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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

pub fn token(player: &str, role: Role) -> String {
    issue_hs256(SECRET, &Claims::new(player, role, 3600)).unwrap()
}

/// A player token accepted for one or two more seconds: its `exp` passed 28 s ago and the
/// verifier allows 30 s of leeway (`exp` has whole-second precision).
pub fn expiring_token(player: &str) -> String {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    issue_hs256(
        SECRET,
        &Claims::new(player, Role::Player, 0).with_expiry(now - 28),
    )
    .unwrap()
}

pub fn player_token(player: &str) -> String {
    token(player, Role::Player)
}

pub fn service_token() -> String {
    token("backend", Role::Service)
}

/// Verifies tokens as the JWT authenticator does, but every identity it gives expires
/// `lifetime` after it was authenticated: a connection's expiry at a precise moment,
/// without waiting for a whole-second `exp` to come around.
#[derive(Clone)]
pub struct ExpiresAfter {
    jwt: JwtAuthenticator,
    lifetime: Duration,
}

impl ExpiresAfter {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            jwt: JwtAuthenticator::hs256(SECRET),
            lifetime,
        }
    }
}

impl Authenticate for ExpiresAfter {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let identity = self.jwt.authenticate(token)?;
        Ok(identity.with_expiry(SystemTime::now() + self.lifetime))
    }
}

/// Publishes a sentinel (type [`SENTINEL`]) to every connection; its id. Per connection,
/// messages arrive in publish order, so the sentinel is the next message on a connection
/// that was sent nothing more than the test read: see
/// [`Envelopes::expect_next_is_sentinel`].
pub fn publish_sentinel(hub: &Hub) -> String {
    let report = hub.broadcast_global(&Message::json(SENTINEL, Value::Null), &[]);
    report.id.to_string()
}

/// A client that receives envelopes: a WebSocket or an SSE stream.
#[allow(async_fn_in_trait)]
pub trait Envelopes {
    /// The next message's envelope, skipping what is not a message (pings, comments).
    async fn next_envelope(&mut self) -> Value;

    /// Asserts that the next message is the sentinel `id` from [`publish_sentinel`]: nothing
    /// else arrived after what the test read (no duplicate, nothing unexpected).
    async fn expect_next_is_sentinel(&mut self, id: &str) {
        let next = self.next_envelope().await;
        assert_eq!(
            (next["type"].as_str(), next["id"].as_str()),
            (Some(SENTINEL), Some(id)),
            "the sentinel was the next message; instead: {}",
            abbreviated(&next)
        );
    }
}

impl Envelopes for WsClient {
    async fn next_envelope(&mut self) -> Value {
        self.next_json().await
    }
}

impl Envelopes for SseClient {
    async fn next_envelope(&mut self) -> Value {
        self.next_json().await
    }
}

/// `value` as JSON, cut to a readable length.
pub fn abbreviated(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

pub struct WsClient {
    pub socket: WebSocketStream<TcpStream>,
    pub response: http::Response<Option<Vec<u8>>>,
}

impl WsClient {
    /// The next text frame as JSON, skipping pings.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = within("a WebSocket message", self.socket.next())
                .await
                .expect("the socket is open")
                .expect("a valid frame");
            match message {
                WsMessage::Text(text) => return serde_json::from_str(&text).unwrap(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The close frame's code and reason.
    pub async fn next_close(&mut self) -> (u16, String) {
        loop {
            let message = within("a WebSocket close frame", self.socket.next()).await;
            match message {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Some(Ok(WsMessage::Text(_) | WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Reads what is left: every whole text frame until the close frame (its code and
    /// reason) or the end of the stream (`None`).
    pub async fn rest_until_closed(&mut self) -> (Vec<Value>, Option<(u16, String)>) {
        let mut messages = Vec::new();
        loop {
            match within("the rest of the WebSocket", self.socket.next()).await {
                Some(Ok(WsMessage::Text(text))) => {
                    messages.push(serde_json::from_str(&text).expect("whole JSON"))
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                Some(Ok(WsMessage::Close(frame))) => {
                    let frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return (messages, frame);
                }
                Some(Ok(other)) => panic!("expected a text or close frame, got {other:?}"),
                // The socket was dropped (maybe in the middle of a frame).
                Some(Err(_)) | None => return (messages, None),
            }
        }
    }
}

pub struct SseClient {
    /// The response headers.
    pub headers: http::HeaderMap,
    body: Incoming,
    buffer: String,
}

#[derive(Debug, Default, Clone)]
pub struct SseRecord {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub is_comment: bool,
}

impl SseRecord {
    /// Parses one record (without its blank line).
    pub fn parse(raw: &str) -> Self {
        let mut record = SseRecord::default();
        let mut fields = 0;
        for line in raw.lines() {
            if let Some(value) = line.strip_prefix("id: ") {
                record.id = Some(value.to_owned());
                fields += 1;
            } else if let Some(value) = line.strip_prefix("event: ") {
                record.event = Some(value.to_owned());
                fields += 1;
            } else if let Some(value) = line.strip_prefix("data: ") {
                record.data.push_str(value);
                fields += 1;
            }
        }
        record.is_comment = fields == 0;
        record
    }
}

/// The complete records in `text` (a record is whole once its blank line arrived); a
/// trailing partial record is left out.
pub fn complete_sse_records(text: &str) -> Vec<SseRecord> {
    let mut records: Vec<&str> = text.split("\n\n").collect();
    records.pop(); // after the last blank line: a partial record, or nothing
    records.into_iter().map(SseRecord::parse).collect()
}

/// Reads `stream` to its end (or until it fails, e.g. reset); every byte that arrived.
pub async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match within("the rest of the stream", stream.read(&mut buffer)).await {
            Ok(0) | Err(_) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

impl SseClient {
    /// The next record (an event, or a comment-only record).
    pub async fn next_record(&mut self) -> SseRecord {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                return SseRecord::parse(&raw);
            }
            let frame = within("SSE bytes", self.body.frame())
                .await
                .expect("the stream is open")
                .expect("a readable frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The next `message` event's envelope, skipping comments.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let record = self.next_record().await;
            if record.is_comment {
                continue;
            }
            assert_eq!(record.event, None, "a plain message event");
            let envelope: Value = serde_json::from_str(&record.data).unwrap();
            assert_eq!(
                record.id.as_deref(),
                envelope["id"].as_str(),
                "the SSE id is the envelope id"
            );
            return envelope;
        }
    }

    /// The next event named `name`, skipping comments and messages.
    pub async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let record = self.next_record().await;
            if record.event.as_deref() == Some(name) {
                return serde_json::from_str(&record.data).unwrap();
            }
        }
    }

    /// Waits for the end of the stream.
    pub async fn closed(mut self) {
        loop {
            match within("the end of the SSE stream", self.body.frame()).await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Waits for the first hub event matching `predicate`.
pub async fn wait_for(
    events: &mut broadcast::Receiver<HubEvent>,
    predicate: impl Fn(&HubEvent) -> bool,
) -> HubEvent {
    wait_for_within(WAIT, events, predicate).await
}

/// Waits up to `limit` for the first hub event matching `predicate`.
pub async fn wait_for_within(
    limit: Duration,
    events: &mut broadcast::Receiver<HubEvent>,
    predicate: impl Fn(&HubEvent) -> bool,
) -> HubEvent {
    within_for(limit, "the awaited hub event", async {
        loop {
            let event = events.recv().await.expect("the hub is alive");
            if predicate(&event) {
                return event;
            }
        }
    })
    .await
}

/// The next hub event, whatever it is.
pub async fn next_event(events: &mut broadcast::Receiver<HubEvent>) -> HubEvent {
    within("the next hub event", events.recv())
        .await
        .expect("the hub is alive and the receiver kept up")
}

/// Waits for the next connection to leave the hub; its kind and reason.
pub async fn wait_for_disconnect(
    events: &mut broadcast::Receiver<HubEvent>,
) -> (dualcast::ConnectionKind, dualcast::DisconnectReason) {
    wait_for_disconnect_within(WAIT, events).await
}

/// [`wait_for_disconnect`], waiting up to `limit`.
pub async fn wait_for_disconnect_within(
    limit: Duration,
    events: &mut broadcast::Receiver<HubEvent>,
) -> (dualcast::ConnectionKind, dualcast::DisconnectReason) {
    match wait_for_within(limit, events, |e| {
        matches!(e, HubEvent::Disconnected { .. })
    })
    .await
    {
        HubEvent::Disconnected { kind, reason, .. } => (kind, reason),
        other => unreachable!("wait_for returned {other:?}"),
    }
}

// Clients for any server on an address, not only a `TestServer`: a host served by
// `axum::serve`, by its own hyper loop, or an example's process.

/// A TCP connection to `addr`.
pub async fn connect_to(addr: std::net::SocketAddr) -> TcpStream {
    within("a TCP connection to the server", TcpStream::connect(addr))
        .await
        .expect("the server accepts connections")
}

/// A WebSocket handshake to `addr` for `path`, with `headers` added (a `Cookie`, an
/// `Origin`, the `bearer` subprotocol); the error is the refused HTTP response: its status
/// and JSON body (`Null` when it is not JSON).
pub async fn ws_at(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
) -> Result<WsClient, (StatusCode, Value)> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = connect_to(addr).await;
    let handshake = within(
        &format!("the WebSocket handshake answer for {path}"),
        tokio_tungstenite::client_async(request, stream),
    )
    .await;
    match handshake {
        Ok((socket, response)) => Ok(WsClient { socket, response }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response.into_body().unwrap_or_default();
            Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// A WebSocket to `addr` for `path` with `token` in the `bearer` subprotocol.
pub async fn ws_with_token_at(addr: std::net::SocketAddr, path: &str, token: &str) -> WsClient {
    let offered = [("sec-websocket-protocol", format!("bearer, {token}"))];
    match ws_at(addr, path, &offered).await {
        Ok(client) => client,
        Err((status, body)) => panic!("the WebSocket to {path} was refused: {status} {body}"),
    }
}

/// An HTTP request to `addr` on a new connection, with `headers` added (`Host` is
/// `addr`); the status, the headers and the whole body.
pub async fn http_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let response = send_at(addr, request.body(Full::new(body)).unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = within(
        &format!("the whole response body to {method} {path}"),
        body.collect(),
    )
    .await
    .expect("a readable body")
    .to_bytes();
    (parts.status, parts.headers, bytes)
}

/// Sends `request` to `addr` on a new connection; the response head.
pub async fn send_at(
    addr: std::net::SocketAddr,
    request: Request<Full<Bytes>>,
) -> http::Response<Incoming> {
    let stream = connect_to(addr).await;
    let (mut sender, connection) = within(
        "the HTTP client handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let what = format!(
        "the response head to {} {}",
        request.method(),
        request.uri()
    );
    within(&what, sender.send_request(request))
        .await
        .expect("a response")
}

/// Opens an SSE stream at `addr` for `path` with `headers` added (`Host` is `addr`): the
/// stream, its opening comment read; or the refused status and JSON body.
pub async fn sse_at(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
) -> Result<SseClient, (StatusCode, Value)> {
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let response = send_at(addr, request.body(Full::new(Bytes::new())).unwrap()).await;
    let (parts, body) = response.into_parts();
    if parts.status != StatusCode::OK {
        let bytes = within(
            &format!("the body of the refusal of {path}"),
            body.collect(),
        )
        .await
        .expect("a readable body")
        .to_bytes();
        return Err((
            parts.status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ));
    }
    assert_eq!(parts.headers["content-type"], "text/event-stream");
    let mut client = SseClient {
        headers: parts.headers,
        body,
        buffer: String::new(),
    };
    let opening = client.next_record().await;
    assert!(opening.is_comment, "the stream opens with a comment");
    Ok(client)
}

/// An SSE stream at `addr` for `path` with `token` as `Authorization: Bearer`.
pub async fn sse_with_token_at(addr: std::net::SocketAddr, path: &str, token: &str) -> SseClient {
    let authorization = [("authorization", format!("Bearer {token}"))];
    match sse_at(addr, path, &authorization).await {
        Ok(client) => client,
        Err((status, body)) => panic!("the SSE stream {path} was refused: {status} {body}"),
    }
}

impl WsClient {
    /// After the close frame arrived: reads on, which sends the client's answering close
    /// frame, until the socket ends.
    pub async fn finish_close(&mut self) {
        loop {
            match within("the end of the WebSocket", self.socket.next()).await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    }
}

// Liveness and client messages (tests/liveness.rs, tests/client_messages.rs).

/// How often [`poll_until`] looks again.
pub const POLL_STEP: Duration = Duration::from_millis(20);

/// Looks at `probe` every [`POLL_STEP`] until it gives a value; a panic naming `what` if it
/// gives none within [`WAIT`]. For state the hub shows only by being asked (a health).
pub async fn poll_until<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    poll_until_within(WAIT, what, probe).await
}

/// [`poll_until`], looking for up to `limit`.
pub async fn poll_until_within<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    within_for(limit, what, async {
        loop {
            if let Some(found) = probe() {
                return found;
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    })
    .await
}

/// Every hub event up to and including the first that matches `last`, waiting up to
/// `limit` for it.
pub async fn events_until(
    limit: Duration,
    events: &mut broadcast::Receiver<HubEvent>,
    last: impl Fn(&HubEvent) -> bool,
) -> Vec<HubEvent> {
    within_for(limit, "the awaited hub event", async {
        let mut seen = Vec::new();
        loop {
            let event = events
                .recv()
                .await
                .expect("the hub is alive and the receiver kept up");
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    })
    .await
}

/// The presence changes of `player` among `events`, in order.
pub fn presence_changes(events: &[HubEvent], player: &str) -> Vec<dualcast::Presence> {
    events
        .iter()
        .filter_map(|event| match event {
            HubEvent::Presence {
                player_id,
                presence,
            } if &**player_id == player => Some(*presence),
            _ => None,
        })
        .collect()
}

/// Whether `event` is the presence change of `player` to `presence`.
pub fn is_presence(event: &HubEvent, player: &str, presence: dualcast::Presence) -> bool {
    matches!(
        event,
        HubEvent::Presence { player_id, presence: p } if &**player_id == player && *p == presence
    )
}

impl WsClient {
    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        within(
            "a text frame sent",
            self.socket.send(WsMessage::Text(text.into())),
        )
        .await
        .expect("the socket takes the frame");
    }

    /// Sends `value` as one text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }
}
