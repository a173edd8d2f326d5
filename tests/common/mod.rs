//! A real server on 127.0.0.1:0 and real clients: tokio-tungstenite for WebSocket, a hyper
//! client reading the SSE stream, a hyper client for the HTTP API.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use dualcast::dualcast_layers::jwt::{issue_hs256, Claims};
use dualcast::{Dualcast, Hub, HubEvent, JwtAuthenticator, Role};
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

pub const SECRET: &[u8] = b"integration-test-secret-of-32-bytes!";
/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(5);

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

    pub async fn start_with(
        hub: Hub,
        configure: impl FnOnce(Dualcast<JwtAuthenticator>) -> Dualcast<JwtAuthenticator>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = configure(Dualcast::new(hub.clone(), JwtAuthenticator::hs256(SECRET)));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            dualcast::serve(listener, app, async {
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

    /// Stops the server and waits for its graceful shutdown to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .unwrap()
                .unwrap();
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
        let stream = TcpStream::connect(self.addr).await.unwrap();
        match tokio_tungstenite::client_async(request, stream).await {
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
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        let mut request = format!("ws://{}{}", self.addr, path)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("bearer, {token}").parse().unwrap(),
        );
        let (socket, response) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        WsClient { socket, response }
    }

    /// An SSE request from a client that reads nothing and has a tiny receive buffer.
    pub async fn stalled_sse(&self, path: &str, token: &str) -> TcpStream {
        use tokio::io::AsyncWriteExt;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(self.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        stream
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
        let mut client = SseClient {
            body: response.into_body(),
            buffer: String::new(),
        };
        let opening = client.next_record().await;
        assert!(opening.is_comment, "the stream opens with a comment");
        (status, Some(client))
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> http::Response<Incoming> {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
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
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
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

pub fn token(player: &str, role: Role) -> String {
    issue_hs256(SECRET, &Claims::new(player, role, 3600)).unwrap()
}

/// A player token accepted for one or two more seconds: its `exp` passed 28 s ago and the
/// verifier allows 30 s of leeway (`exp` has whole-second precision).
pub fn expiring_token(player: &str) -> String {
    let now = std::time::SystemTime::now()
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

pub struct WsClient {
    pub socket: WebSocketStream<TcpStream>,
    pub response: http::Response<Option<Vec<u8>>>,
}

impl WsClient {
    /// The next text frame as JSON, skipping pings.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a WebSocket message in time")
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
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a close in time");
            match message {
                Some(Ok(WsMessage::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Some(Ok(WsMessage::Text(_) | WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

pub struct SseClient {
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

impl SseClient {
    /// The next record (an event, or a comment-only record).
    pub async fn next_record(&mut self) -> SseRecord {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
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
                return record;
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("SSE bytes in time")
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
            match tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("the end of the stream in time")
            {
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
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("the hub is alive");
            if predicate(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the hub event in time")
}

/// Waits for the next connection to leave the hub; its kind and reason.
pub async fn wait_for_disconnect(
    events: &mut broadcast::Receiver<HubEvent>,
) -> (dualcast::ConnectionKind, dualcast::DisconnectReason) {
    match wait_for(events, |e| matches!(e, HubEvent::Disconnected { .. })).await {
        HubEvent::Disconnected { kind, reason, .. } => (kind, reason),
        other => unreachable!("wait_for returned {other:?}"),
    }
}
