//! Client-to-server messages (SPEC §6) over real sockets: WebSocket text frames and
//! `POST /api/messages`, validation, the inbound rate limit, and the host's handler.

mod common;

use bytes::Bytes;
use common::*;
use dualcast::inbound::Transport;
use dualcast::{
    ClientMessage, ConnectionId, DisconnectReason, Hub, InboundSettings, Message, MessageHandler,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What the host's handler saw of one message.
#[derive(Debug)]
struct Seen {
    message_type: String,
    id: Option<String>,
    data: Value,
    player_id: String,
    connection_id: Option<ConnectionId>,
    transport: Transport,
}

/// A handler that records every message and answers it with an `echo` of its type, id and
/// data.
fn recording_handler() -> (MessageHandler, mpsc::UnboundedReceiver<Seen>) {
    let (record, seen) = mpsc::unbounded_channel();
    let handler = MessageHandler::from_fn(move |message: ClientMessage| {
        let record = record.clone();
        async move {
            let data: Value = message.data_as().expect("data is JSON");
            let echo = json!({
                "type": message.message_type(),
                "id": message.id(),
                "data": data,
            });
            let _ = record.send(Seen {
                message_type: message.message_type().to_owned(),
                id: message.id().map(str::to_owned),
                data,
                player_id: message.player_id().to_owned(),
                connection_id: message.connection_id(),
                transport: message.transport(),
            });
            Some(Message::json("echo", echo))
        }
    });
    (handler, seen)
}

/// Asserts that `envelope` is an `error` of `error_type` and `code`.
fn assert_error(envelope: &Value, error_type: &str, code: &str) {
    assert_eq!(
        (
            envelope["type"].as_str(),
            envelope["data"]["error_type"].as_str(),
            envelope["data"]["error_code"].as_str()
        ),
        (Some("error"), Some(error_type), Some(code)),
        "{}",
        abbreviated(envelope)
    );
}

/// `POST /api/messages` with `body` as it is and `token`: the status and the JSON body.
async fn post_raw(server: &TestServer, path: &str, token: &str, body: &str) -> (u16, Value) {
    let headers = [
        ("authorization", format!("Bearer {token}")),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, _, body) = http_at(
        server.addr,
        "POST",
        path,
        &headers,
        Bytes::from(body.to_owned()),
    )
    .await;
    (
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn malformed_binary_and_oversized_frames_get_validation_errors_and_the_connection_keeps_working(
) {
    let server = TestServer::start().await;
    let mut ws = server.ws("/api/ws", &player_token("val")).await;
    let oversized = json!({"type": "chat", "data": "x".repeat(200 * 1024)}).to_string();
    let frames = [
        ("INVALID_JSON", WsMessage::Text(r#"{"type": "#.into())),
        ("INVALID_JSON", WsMessage::Text("[1, 2]".into())),
        ("MISSING_TYPE", WsMessage::Text(r#"{"data": {}}"#.into())),
        (
            "UNSUPPORTED_VERSION",
            WsMessage::Text(r#"{"type": "ping", "v": 2, "id": "v2"}"#.into()),
        ),
        (
            "BINARY_NOT_SUPPORTED",
            WsMessage::Binary(Bytes::from_static(b"\x01\x02")),
        ),
        ("MESSAGE_TOO_LARGE", WsMessage::Text(oversized.into())),
    ];
    for (code, frame) in frames {
        within("a frame sent", ws.socket.send(frame)).await.unwrap();
        assert_error(&ws.next_json().await, "validation_error", code);
    }

    ws.send_json(&json!({"type": "ping", "id": "still-there"}))
        .await;
    let pong = ws.next_json().await;
    assert_eq!(pong["type"], "pong", "{}", abbreviated(&pong));
    assert_eq!(pong["data"], json!({"id": "still-there"}));
    assert_eq!(server.hub.connections_of("val").len(), 1);
    ws.expect_next_is_sentinel(&publish_sentinel(&server.hub))
        .await;
    drop(ws);
    server.shutdown().await;
}

#[tokio::test]
async fn an_error_carries_the_id_the_client_gave_and_a_pong_without_one_has_a_null_id() {
    let server = TestServer::start().await;
    let mut ws = server.ws("/api/ws", &player_token("ida")).await;
    ws.send_json(&json!({"type": "ping", "v": 2, "id": "v2"}))
        .await;
    let error = ws.next_json().await;
    assert_error(&error, "validation_error", "UNSUPPORTED_VERSION");
    assert_eq!(error["data"]["id"], "v2");
    // A ping without an id gets a pong whose id is null.
    ws.send_json(&json!({"type": "ping"})).await;
    let pong = ws.next_json().await;
    assert_eq!(
        (&pong["type"], &pong["data"]),
        (&json!("pong"), &json!({"id": null}))
    );
    drop(ws);
    server.shutdown().await;
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_is_refused_with_rate_limited_and_then_ended_with_protocol_error(
) {
    // A burst of 5, then a token a second; the end once the refused messages outnumber the
    // accepted ones by more than 5.
    let inbound = InboundSettings::new().rate(1, 5).max_strikes(5);
    let server = TestServer::start_with(Hub::builder().inbound(inbound).build(), |app| app).await;
    let mut events = server.hub.subscribe();
    let mut ws = server.ws("/api/ws", &player_token("flo")).await;

    // A ping as soon as the last one is answered: hundreds a second.
    let mut replies = Vec::new();
    let close = loop {
        assert!(replies.len() < 100, "still open after 100 pings");
        ws.send_json(&json!({"type": "ping"})).await;
        match within("an answer or the close", ws.socket.next()).await {
            Some(Ok(WsMessage::Text(text))) => {
                replies.push(serde_json::from_str::<Value>(&text).unwrap())
            }
            Some(Ok(WsMessage::Close(frame))) => {
                break frame.map(|f| (u16::from(f.code), f.reason.to_string()))
            }
            other => panic!("expected an answer or the close frame, got {other:?}"),
        }
    };
    assert_eq!(close, Some((1002, "protocol_error".to_owned())));
    ws.finish_close().await;
    let (burst, rest) = replies.split_at(5);
    assert!(
        burst.iter().all(|r| r["type"] == "pong"),
        "the burst is answered: {replies:?}"
    );
    let mut refused = 0;
    for reply in rest {
        // A pong here: a token came back (a second passed).
        if reply["type"] != "pong" {
            assert_error(reply, "rate_limited", "RATE_LIMITED");
            refused += 1;
        }
    }
    assert!(refused >= 5, "told before the end: {replies:?}");
    let (_, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(reason, DisconnectReason::ProtocolError);
    server.shutdown().await;
}

#[tokio::test]
async fn the_hosts_handler_sees_the_message_and_its_reply_goes_only_to_the_sending_connection() {
    let (handler, mut seen) = recording_handler();
    let server =
        TestServer::start_with(Hub::builder().message_handler(handler).build(), |app| app).await;
    let token = player_token("han");
    let mut sender = server.ws("/api/ws", &token).await;
    let sender_id = server.hub.connections_of("han")[0].id;
    let mut other_ws = server.ws("/api/ws", &token).await;
    let mut other_sse = server.sse("/api/sse", &token).await;

    sender
        .send_json(&json!({"type": "chat", "id": "m1", "data": {"text": "hi"}}))
        .await;
    let message = within("the handler's call", seen.recv()).await.unwrap();
    assert_eq!(message.message_type, "chat");
    assert_eq!(message.id.as_deref(), Some("m1"));
    assert_eq!(message.data, json!({"text": "hi"}));
    assert_eq!(message.player_id, "han");
    assert_eq!(message.connection_id, Some(sender_id));
    assert_eq!(message.transport, Transport::WebSocket);

    let reply = sender.next_json().await;
    assert_eq!(reply["type"], "echo");
    assert_eq!(
        reply["data"],
        json!({"type": "chat", "id": "m1", "data": {"text": "hi"}})
    );
    let sentinel = publish_sentinel(&server.hub);
    sender.expect_next_is_sentinel(&sentinel).await;
    other_ws.expect_next_is_sentinel(&sentinel).await;
    other_sse.expect_next_is_sentinel(&sentinel).await;
    assert!(seen.try_recv().is_err(), "one call");
    drop((sender, other_ws));
    server.shutdown().await;
}

#[tokio::test]
async fn an_sse_only_client_sends_messages_with_post_api_messages_and_gets_the_reply_in_the_answer()
{
    let (handler, mut seen) = recording_handler();
    let server = TestServer::start_with(Hub::new(), |app| app.on_message(handler)).await;
    let token = player_token("sam");
    let mut sse = server.sse("/api/sse", &token).await;
    let sse_id = server.hub.connections_of("sam")[0].id;

    let (status, body) = server
        .post(
            "/api/messages",
            &token,
            json!({"type": "chat", "id": "h1", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reply"]["type"], "echo", "{body}");
    assert_eq!(
        body["reply"]["data"],
        json!({"type": "chat", "id": "h1", "data": {"text": "hi"}})
    );
    let message = within("the handler's call", seen.recv()).await.unwrap();
    assert_eq!(
        (message.player_id.as_str(), message.connection_id),
        ("sam", Some(sse_id))
    );
    assert_eq!(message.transport, Transport::Http);

    let (status, body) = server
        .post("/api/messages", &token, json!({"type": "ping", "id": "p1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["reply"]["type"], &body["reply"]["data"]),
        (&json!("pong"), &json!({"id": "p1"}))
    );

    let (status, body) = post_raw(&server, "/api/messages", &token, "{oops").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        (
            &body["error"],
            &body["error_type"],
            &body["details"]["error_code"]
        ),
        (
            &json!(true),
            &json!("validation_error"),
            &json!("INVALID_JSON")
        )
    );

    // A player with no live connection.
    let (status, body) = server
        .post(
            "/api/messages",
            &player_token("nobody"),
            json!({"type": "ping"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["details"]["error_code"], "NOT_CONNECTED");

    // Another player's connection.
    let _bob = server.sse("/api/sse", &player_token("bob")).await;
    let bob_id = server.hub.connections_of("bob")[0].id;
    let (status, body) = server
        .post(
            &format!("/api/messages?connection_id={bob_id}"),
            &token,
            json!({"type": "ping"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["details"]["error_code"], "CONNECTION_NOT_FOUND");

    assert!(
        seen.try_recv().is_err(),
        "only the chat reached the handler"
    );
    // The replies went in the HTTP answers, not on the stream.
    sse.expect_next_is_sentinel(&publish_sentinel(&server.hub))
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_has_at_most_max_in_flight_messages_in_the_handler_and_the_next_gets_handler_busy(
) {
    let (record, mut calls) = mpsc::unbounded_channel();
    // A handler that never finishes.
    let stuck = MessageHandler::from_fn(move |message: ClientMessage| {
        let record = record.clone();
        async move {
            let _ = record.send(message.id().map(str::to_owned));
            std::future::pending::<Option<Message>>().await
        }
    });
    let hub = Hub::builder()
        .inbound(InboundSettings::new().max_in_flight(2))
        .message_handler(stuck)
        .build();
    let server = TestServer::start_with(hub, |app| app).await;
    let mut ws = server.ws("/api/ws", &player_token("bea")).await;

    for id in ["w1", "w2", "w3"] {
        ws.send_json(&json!({"type": "work", "id": id})).await;
    }
    let busy = ws.next_json().await;
    assert_error(&busy, "rate_limited", "HANDLER_BUSY");
    assert_eq!(busy["data"]["id"], "w3");
    for expected in ["w1", "w2"] {
        let call = within("a handler call", calls.recv()).await.unwrap();
        assert_eq!(call.as_deref(), Some(expected));
    }

    // Pings are the hub's own: answered while the handler is full.
    ws.send_json(&json!({"type": "ping", "id": "p"})).await;
    let pong = ws.next_json().await;
    assert_eq!(
        (&pong["type"], &pong["data"]["id"]),
        (&json!("pong"), &json!("p"))
    );
    assert!(
        calls.try_recv().is_err(),
        "the third never reached the handler"
    );
    assert_eq!(server.hub.connections_of("bea").len(), 1);
    drop(ws);
    server.shutdown().await;
}

#[tokio::test]
async fn a_pipelined_flood_is_told_rate_limited_for_what_it_sent_before_it_is_ended() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut ws = server.ws("/api/ws", &player_token("flo")).await;

    // Every frame is sent before any answer is read, so the server reads the flood in a few
    // gulps and ends the connection with answers still queued: they go out before the close.
    // Defaults: a burst of 40, 20 a second, and the end once the refused messages
    // outnumber the accepted ones by more than 40. 200 pings in a row are far past that.
    let ping = json!({"type": "ping"}).to_string();
    for _ in 0..200 {
        if ws
            .socket
            .send(WsMessage::Text(ping.as_str().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (replies, close) = ws.rest_until_closed().await;
    assert_eq!(close, Some((1002, "protocol_error".to_owned())));
    assert!(
        replies[..40].iter().all(|r| r["type"] == "pong"),
        "the burst is answered"
    );
    let mut refused = 0;
    for reply in &replies[40..] {
        if reply["type"] == "error" {
            assert_error(reply, "rate_limited", "RATE_LIMITED");
            refused += 1;
        } else {
            assert_eq!(reply["type"], "pong", "{}", abbreviated(reply));
        }
    }
    assert!(
        refused >= 40,
        "refused more than accepted before the end: {refused}"
    );
    let (_, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(reason, DisconnectReason::ProtocolError);
    server.shutdown().await;
}

#[tokio::test]
async fn the_handlers_calls_for_a_connection_end_with_it() {
    /// Dropped with the handler's future: tells the test the call was cancelled.
    struct Cancelled(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Cancelled {
        fn drop(&mut self) {
            self.0.take();
        }
    }
    let (started, mut calls) = mpsc::unbounded_channel();
    let stuck = MessageHandler::from_fn(move |_: ClientMessage| {
        let started = started.clone();
        async move {
            let (cancelled, watched) = tokio::sync::oneshot::channel::<()>();
            let _held = Cancelled(Some(cancelled));
            let _ = started.send(watched);
            std::future::pending::<Option<Message>>().await
        }
    });
    let hub = Hub::builder().message_handler(stuck).build();
    let server = TestServer::start_with(hub, |app| app).await;
    let mut ws = server.ws("/api/ws", &player_token("cid")).await;
    ws.send_json(&json!({"type": "work"})).await;
    let watched = within("the handler's call", calls.recv()).await.unwrap();
    drop(ws);
    // The sender half is dropped with the call: the receiver then resolves with an error.
    assert!(within("the call cancelled", watched).await.is_err());
    server.shutdown().await;
}

/// What a browser client needs from the wire: a message that asks for an ack says so on
/// both transports, a reply (`pong`, `error`, the handler's answer) says it is one (its id
/// is no place to resume from), and an SSE stream opened with `keepalive=event` sends
/// keep-alives an `EventSource` sees; any other `keepalive` is refused.
#[tokio::test]
async fn envelopes_say_ack_and_reply_and_sse_keep_alives_can_be_events() {
    let (handler, _seen) = recording_handler();
    let server = TestServer::start_with(Hub::builder().message_handler(handler).build(), |app| {
        app.sse(dualcast::SseSettings::new().keep_alive(std::time::Duration::from_secs(1)))
    })
    .await;
    let token = player_token("flags");
    let mut ws = server.ws("/api/ws", &token).await;
    let mut sse = server.sse("/api/sse?keepalive=event", &token).await;

    let acked = Message::json("order", json!({"n": 1})).with_ack(true);
    server.hub.send_to_player("flags", &acked);
    for envelope in [ws.next_json().await, sse.next_json().await] {
        assert_eq!(envelope["type"], "order");
        assert_eq!(envelope["ack"], true, "{}", abbreviated(&envelope));
        assert!(
            envelope.get("reply").is_none(),
            "{}",
            abbreviated(&envelope)
        );
    }
    let plain = publish_sentinel(&server.hub);
    for envelope in [ws.next_json().await, sse.next_json().await] {
        assert_eq!(envelope["id"], plain.as_str());
        assert!(envelope.get("ack").is_none() && envelope.get("reply").is_none());
    }

    ws.send_json(&json!({"type": "ping", "id": "p1"})).await;
    ws.send_json(&json!({"type": "ping", "v": 2, "id": "p2"}))
        .await;
    ws.send_json(&json!({"type": "hello", "id": "h1", "data": {}}))
        .await;
    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(ws.next_json().await);
    }
    let mut types: Vec<_> = replies.iter().map(|r| r["type"].to_string()).collect();
    types.sort();
    assert_eq!(types, ["\"echo\"", "\"error\"", "\"pong\""]);
    for reply in &replies {
        assert_eq!(reply["reply"], true, "{}", abbreviated(reply));
    }

    // The stream's keep-alive is an event with an empty data line and no id.
    let record = within("a ping event", async {
        loop {
            let record = sse.next_record().await;
            if !record.is_comment {
                break record;
            }
        }
    })
    .await;
    assert_eq!(
        (record.event.as_deref(), record.id, record.data.as_str()),
        (Some("ping"), None, "")
    );

    for value in ["pong", "", "EVENT"] {
        let (status, _) = server
            .try_sse(&format!("/api/sse?keepalive={value}"), Some(&token))
            .await;
        assert_eq!(status, http::StatusCode::BAD_REQUEST, "keepalive={value}");
    }
    assert_eq!(server.hub.connections_of("flags").len(), 2);
    drop((ws, sse));
    server.shutdown().await;
}
