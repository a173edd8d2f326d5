//! SPEC §7: past the global connection cap, new connections get a quick 503 with
//! `Retry-After`, and `/healthz` keeps answering.

mod common;

use common::*;
use dualcast::{HubEvent, ServeSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` on a new connection and reads the whole answer (the server closes it).
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the answer and the close in time")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_get_503_and_healthz_still_answers() {
    let server = TestServer::start_with_settings(ServeSettings::new().max_connections(2)).await;
    let (addr, hub) = (server.addr, server.hub.clone());
    let mut events = hub.subscribe();
    let token = player_token("yuri");
    let first = server.ws("/api/ws", &token).await;
    let _second = server.ws("/api/ws", &token).await;
    assert_eq!(hub.connection_count(), 2);

    let refused = raw_exchange(
        addr,
        &format!("GET /api/sse HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("\r\nretry-after: 1\r\n"), "{refused}");
    let body: serde_json::Value =
        serde_json::from_str(refused.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error_type"], "connection_error");
    assert_eq!(body["details"]["error_code"], "SERVER_AT_CAPACITY");
    assert!(!refused.contains(&token), "no token in the answer");
    assert_eq!(hub.connection_count(), 2, "nothing was registered");

    let health = raw_exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200 "), "{health}");

    // A connection closes; its place is free again.
    drop(first);
    wait_for(&mut events, |e| matches!(e, HubEvent::Disconnected { .. })).await;
    let admitted = tokio::time::timeout(WAIT, async {
        loop {
            let answer = raw_exchange(
                addr,
                "GET /api/ws HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            if !answer.starts_with("HTTP/1.1 503 ") {
                return answer;
            }
        }
    })
    .await
    .expect("a place freed up");
    assert!(admitted.starts_with("HTTP/1.1 401 "), "served: {admitted}");
}

#[tokio::test]
async fn past_the_cap_a_flood_is_refused_at_once_without_spending_the_reserve() {
    // No connection is admitted, and one at a time past the cap is answered at leisure.
    let settings = ServeSettings::new()
        .max_connections(0)
        .over_capacity_answers(1);
    let server = TestServer::start_with_settings(settings).await;
    let addr = server.addr;
    // A client that sends nothing holds that one place (for up to half a second)...
    let _silent = TcpStream::connect(addr).await.unwrap();
    // ...so the next one is not served, not even a health check: it gets the 503 written at
    // once and the connection closed (which may reach the client as a reset, since its
    // request is never read).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the connection closed in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503 "),
        "{answer}"
    );
}
