//! RFC 6455 details over real sockets: the opening handshake's checks, the closing
//! handshake as the client sees it, invalid UTF-8, and a client that floods pings without
//! reading the pongs (SPEC §7: the pong backlog is bounded).

mod common;

use bytes::Bytes;
use common::*;
use dualcast::{DisconnectReason, HubEvent};
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// An upgrade request to `/api/ws` with a valid token and the given key and version.
fn upgrade_request(server: &TestServer, key: Option<&str>, version: &str) -> Request<Full<Bytes>> {
    let mut request = Request::get("/api/ws")
        .header("host", server.addr.to_string())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", version)
        .header(
            "authorization",
            format!("Bearer {}", player_token("ursula")),
        );
    if let Some(key) = key {
        request = request.header("sec-websocket-key", key);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

async fn json_body(response: http::Response<hyper::body::Incoming>) -> Value {
    let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the body in time")
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_sec_websocket_key_that_is_not_16_bytes_of_base64_is_refused_with_400() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    for key in [
        Some("abc"),
        Some(""),
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA="), // 20 bytes
        Some("AAAAAAAAAAAAAAAAAAAAA==="),     // bad padding
        Some("AAAAAAAAAAAAAAAAAAAA*A=="),     // not base64
        None,
    ] {
        let response = server.send(upgrade_request(&server, key, "13")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "key {key:?}");
        let body = json_body(response).await;
        assert_eq!(body["error_type"], "validation_error", "key {key:?}");
        assert_eq!(body["details"]["error_code"], "BAD_WEBSOCKET_UPGRADE");
    }
    // A well-formed key (16 bytes) is accepted.
    let response = server
        .send(upgrade_request(
            &server,
            Some("dGhlIHNhbXBsZSBub25jZQ=="),
            "13",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "RFC 6455's own example"
    );
    let connected = wait_for(&mut events, |e| matches!(e, HubEvent::Connected { .. })).await;
    assert!(matches!(connected, HubEvent::Connected { .. }));
}

#[tokio::test]
async fn an_unsupported_websocket_version_is_answered_426_with_the_supported_version() {
    let server = TestServer::start().await;
    for version in ["8", "14", ""] {
        let response = server
            .send(upgrade_request(
                &server,
                Some("dGhlIHNhbXBsZSBub25jZQ=="),
                version,
            ))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UPGRADE_REQUIRED,
            "{version:?}"
        );
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert_eq!(response.headers()["upgrade"], "websocket");
        assert_eq!(response.headers()["connection"], "upgrade", "RFC 9110 §7.8");
        let body = json_body(response).await;
        assert_eq!(body["error_type"], "validation_error");
        assert_eq!(
            body["details"]["error_code"],
            "UNSUPPORTED_WEBSOCKET_VERSION"
        );
    }
    // Without the header, the handshake is malformed: 400 (RFC 6455 §4.2.1).
    let mut request = upgrade_request(&server, Some("dGhlIHNhbXBsZSBub25jZQ=="), "13");
    request.headers_mut().remove("sec-websocket-version");
    let response = server.send(request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(response).await;
    assert_eq!(body["details"]["error_code"], "BAD_WEBSOCKET_UPGRADE");
    assert_eq!(server.hub.connection_count(), 0);
}

#[tokio::test]
async fn the_server_answers_a_clients_close_frame_with_the_same_code() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut ws = server.ws("/api/ws", &player_token("vera")).await;
    ws.socket
        .send(WsMessage::Close(Some(CloseFrame {
            code: CloseCode::from(4321),
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    // What the client sees: the server's close frame (RFC 6455 §5.5.1), then the end.
    let reply = tokio::time::timeout(WAIT, ws.socket.next())
        .await
        .expect("the server's close frame in time");
    match reply {
        Some(Ok(WsMessage::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4321);
        }
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, ws.socket.next())
        .await
        .expect("the end in time");
    assert!(end.is_none(), "a clean end after the handshake: {end:?}");
    let (_, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(reason, DisconnectReason::ClientClosed);
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut ws = server.ws("/api/ws", &player_token("wendy")).await;
    let frame = Frame::message(
        Bytes::from_static(&[b'{', 0xff, 0xfe, b'}']),
        OpCode::Data(Data::Text),
        true,
    );
    ws.socket.send(WsMessage::Frame(frame)).await.unwrap();
    let (code, reason) = ws.next_close().await;
    assert_eq!((code, reason.as_str()), (1007, "protocol_error"));
    let (_, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(reason, DisconnectReason::ProtocolError);
}

#[tokio::test]
async fn a_client_that_floods_pings_and_never_reads_the_pongs_is_ended_as_a_slow_consumer() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut ws = server.stalled_ws("/api/ws", &player_token("xena")).await;
    let ping = WsMessage::Ping(Bytes::from(vec![b'p'; 125]));
    let ended = wait_for_disconnect(&mut events);
    tokio::pin!(ended);
    let flood = async {
        // Far more pongs than any loopback buffer holds (about 2 GB of them).
        for sent in 1..=16_000_000u64 {
            if ws.socket.feed(ping.clone()).await.is_err() {
                return sent;
            }
            if sent % 1024 == 0 && ws.socket.flush().await.is_err() {
                return sent;
            }
        }
        panic!("the server took 16M pings without ending the connection");
    };
    let (_, reason) = tokio::select! {
        ended = &mut ended => ended,
        sent = flood => {
            // The server stopped reading: it must have ended the connection.
            tokio::time::timeout(WAIT, ended).await.unwrap_or_else(|_| {
                panic!("the client's writes failed after {sent} pings, but nothing ended")
            })
        }
    };
    assert_eq!(reason, DisconnectReason::SlowConsumer);
    assert_eq!(server.hub.connection_count(), 0);
}
