//! The publishing API over real sockets: a publish body must arrive in time (SPEC §7: every
//! half-read request body is bounded, with a timeout), and one that does is published.
//!
//! The tests that expect a timeout pause the clock: tokio advances it whenever every task
//! waits, so a 10 s body timeout passes at once while the sockets stay real.

mod common;

use std::time::Duration;

use common::*;
use dualcast::{ConnectionKind, Hub, Registration};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any body timeout here: how long a test waits (on the paused clock) for the
/// server to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// A response read off a raw socket.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A connection to `server` that sends each write at once. On the paused clock a write the
/// kernel holds back (Nagle's algorithm waiting for an ACK) looks like an idle runtime, and
/// the clock would jump past every timeout before the bytes went out.
async fn connect(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// The head of a `POST` to `path` with a service token and a `content_length`-byte body.
fn publish_head(server: &TestServer, path: &str, content_length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {content_length}\r\n\r\n",
        server.addr,
        service_token()
    )
}

/// Reads one response: its head, then `content-length` bytes of body.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> RawResponse {
    tokio::time::timeout(ANSWER_WAIT, async {
        let mut buffer = Vec::new();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response.parse(&buffer).unwrap() {
                let status = response.code.unwrap();
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8(h.value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .expect("a content-length");
                while buffer.len() < head_len + length {
                    read_more(stream, &mut buffer).await;
                }
                let body = buffer[head_len..head_len + length].to_vec();
                return RawResponse {
                    status,
                    headers,
                    body,
                };
            }
            read_more(stream, &mut buffer).await;
        }
    })
    .await
    .expect("a response in time")
}

async fn read_more(stream: &mut (impl AsyncRead + Unpin), buffer: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await.expect("a readable socket");
    assert_ne!(read, 0, "the connection closed before a whole response");
    buffer.extend_from_slice(&chunk[..read]);
}

/// Waits for the server to close the connection (an end of stream, or a reset).
async fn closed(stream: &mut (impl AsyncRead + Unpin)) {
    let mut chunk = [0u8; 256];
    let read = tokio::time::timeout(WAIT, stream.read(&mut chunk))
        .await
        .expect("the connection closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "nothing more after the answer"
    );
}

fn assert_body_timeout(response: &RawResponse) {
    assert_eq!(response.status, 408);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(
        response.header("connection"),
        Some("close"),
        "the body was not read to its end, so the connection is not reused"
    );
    let body = response.json();
    assert_eq!(body["error"], true);
    assert_eq!(body["error_type"], "connection_error");
    assert_eq!(body["details"]["error_code"], "BODY_TIMEOUT");
    assert!(body["timestamp"].is_string());
    assert!(
        !body.to_string().contains(&service_token()),
        "the token never reaches an error body"
    );
}

#[tokio::test(start_paused = true)]
async fn a_publish_body_that_stalls_is_answered_408_and_the_connection_closed() {
    let hub = Hub::new();
    let (_guard, mut outbox) = hub
        .register(Registration::new("alice", ConnectionKind::Sse))
        .unwrap();
    let server =
        TestServer::start_with(hub, |app| app.publish_body_timeout(Duration::from_secs(2))).await;
    let mut stream = connect(&server).await;
    let head = publish_head(&server, "/api/players/alice/messages", 100);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"type":"#).await.unwrap();
    // ...and nothing more: the other 92 bytes never come.

    let response = read_response(&mut stream).await;
    assert_body_timeout(&response);
    assert_eq!(response.json()["details"]["timeout_ms"], 2000);
    closed(&mut stream).await;
    assert!(outbox.try_recv().is_none(), "nothing was published");
}

#[tokio::test(start_paused = true)]
async fn a_publish_body_trickled_one_byte_at_a_time_is_answered_408_by_default() {
    let server = TestServer::start().await;
    let stream = connect(&server).await;
    let (mut read, mut write) = stream.into_split();
    let head = publish_head(&server, "/api/broadcast", 100);
    write.write_all(head.as_bytes()).await.unwrap();
    // One byte every 0.8 s: every read makes progress, the whole body never comes.
    let trickle = tokio::spawn(async move {
        for byte in br#"{"type":"trickle","data":"#.iter().cycle().take(100) {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
    });

    let response = read_response(&mut read).await;
    assert_body_timeout(&response);
    assert_eq!(
        response.json()["details"]["timeout_ms"],
        10_000,
        "the default"
    );
    closed(&mut read).await;
    trickle.abort();
}

/// On the real clock: a paused one would jump to the timeout if the second piece were late
/// to reach the server's socket, and this test expects no timeout.
#[tokio::test]
async fn a_publish_body_that_arrives_in_time_is_published() {
    let hub = Hub::new();
    let (_guard, mut outbox) = hub
        .register(Registration::new("alice", ConnectionKind::Sse))
        .unwrap();
    let server =
        TestServer::start_with(hub, |app| app.publish_body_timeout(Duration::from_secs(5))).await;
    let mut stream = connect(&server).await;
    let body = json!({ "type": "greeting", "data": { "text": "hi" } }).to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    // Twice on one connection: a body that came in time leaves the connection reusable.
    for _ in 0..2 {
        // In two pieces, the second well within the timeout.
        let head = publish_head(&server, "/api/players/alice/messages", body.len());
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(rest).await.unwrap();

        let response = read_response(&mut stream).await;
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.header("connection"), None, "kept alive");
        assert_eq!(response.json()["delivered"], 1);
        let frame = tokio::time::timeout(WAIT, outbox.recv())
            .await
            .expect("the message in time")
            .expect("the connection is open");
        let envelope: Value = serde_json::from_str(frame.json()).unwrap();
        assert_eq!(envelope["type"], "greeting");
        assert_eq!(envelope["data"]["text"], "hi");
    }
}

/// A request head that stops half way (an SSE `GET` whose last header line never comes, as
/// from a client stalled mid-request, or a slow-header attack) is told why it is dropped:
/// `408` with the SPEC's error body once the 10 s header timeout is over, then a close. It
/// used to be closed with no answer and nothing in the log.
#[tokio::test(start_paused = true)]
async fn a_request_head_that_stalls_is_answered_408_and_the_connection_closed() {
    let server = TestServer::start().await;
    for partial in [
        // The start of an SSE request (served without hyper when whole)...
        format!(
            "GET /api/sse HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n",
            server.addr
        ),
        // ...and the start of any other request.
        "POST /api/rooms/lob".to_string(),
    ] {
        let mut stream = connect(&server).await;
        stream.write_all(partial.as_bytes()).await.unwrap();
        let response = tokio::time::timeout(ANSWER_WAIT, read_response(&mut stream))
            .await
            .expect("an answer within the header timeout");
        assert_eq!(response.status, 408, "for {partial:?}");
        assert_eq!(response.header("connection"), Some("close"));
        let body = response.json();
        assert_eq!(body["error"], true);
        assert_eq!(body["error_type"], "connection_error");
        assert_eq!(body["details"]["error_code"], "HEAD_TIMEOUT");
        assert_eq!(body["details"]["timeout_ms"], 10_000);
        closed(&mut stream).await;
    }
}
