//! SPEC §2 and §5 over real sockets: connections of one player coexist, presence follows
//! the last connection, and a connection that cannot keep up is removed and reported.

mod common;

use std::time::Duration;

use common::*;
use dualcast::{
    ConnectionKind, DisconnectReason, Hub, HubEvent, Message, Presence, WebSocketSettings,
};
use serde_json::json;

/// Messages of [`MIB`] bytes published to a client that stopped reading: far more than any
/// loopback buffer holds (the stalled clients' receive buffers are 4 KiB, a send buffer is
/// at most a few MiB), so the server is blocked in the middle of writing them.
const BIG_MESSAGES: usize = 24;
const MIB: usize = 1024 * 1024;

/// How long after it opened a connection's credential expires in the tests of blocked
/// writes: well after the burst is published (and the writer blocked on it).
const LIFETIME: Duration = Duration::from_secs(1);

/// Publishes [`BIG_MESSAGES`] messages of a MiB each to `player`'s only connection.
fn publish_big_burst(hub: &Hub, player: &str) {
    let big = Message::json("big", json!("b".repeat(MIB)));
    for n in 0..BIG_MESSAGES {
        let report = hub.send_to_player(player, &big);
        assert_eq!((report.delivered, report.failed), (1, 0), "message {n}");
    }
}

/// The burst's messages among `received` (what a stalled SSE client's socket held): only
/// whole records count. Asserts that the writer got to the burst, and that it was blocked
/// in the middle of it when the connection ended (not all of it arrived).
fn assert_burst_was_cut_short(received: &[u8]) {
    let text = String::from_utf8_lossy(received);
    let whole = complete_sse_records(&text)
        .iter()
        .filter(|record| record.data.contains(r#""type":"big""#))
        .count();
    assert!(
        text.contains(r#""type":"big""#),
        "the writer had started on the burst when the connection ended"
    );
    assert!(
        whole < BIG_MESSAGES,
        "a write was blocked when the connection ended, yet all {whole} messages arrived"
    );
}

#[tokio::test]
async fn opening_a_second_connection_of_either_kind_never_closes_the_first() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut first_ws = server.ws("/api/ws", &token).await;
    let mut second_ws = server.ws("/api/ws", &token).await;
    let mut first_sse = server.sse("/sse/alice", &token).await;
    let mut second_sse = server.sse("/api/sse", &token).await;

    // Four: the default per-player limit (the fifth would be refused, not the first ended).
    let connections = server.hub.connections_of("alice");
    assert_eq!(connections.len(), 4);
    assert_eq!(
        connections
            .iter()
            .filter(|c| c.kind == ConnectionKind::Sse)
            .count(),
        2
    );

    let (_, report) = server
        .post(
            "/api/players/alice/messages",
            &service_token(),
            json!({"type": "still-here"}),
        )
        .await;
    assert_eq!(
        (report["delivered"].as_u64(), report["failed"].as_u64()),
        (Some(4), Some(0))
    );
    for envelope in [
        first_ws.next_json().await,
        second_ws.next_json().await,
        first_sse.next_json().await,
        second_sse.next_json().await,
    ] {
        assert_eq!(envelope["type"], "still-here");
    }
    let sentinel = publish_sentinel(&server.hub);
    first_ws.expect_next_is_sentinel(&sentinel).await;
    second_ws.expect_next_is_sentinel(&sentinel).await;
    first_sse.expect_next_is_sentinel(&sentinel).await;
    second_sse.expect_next_is_sentinel(&sentinel).await;
}

#[tokio::test]
async fn presence_is_online_while_any_connection_lives_and_reconnecting_after_the_last_closes() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let token = player_token("bob");
    assert_eq!(server.hub.presence("bob"), Presence::Offline);
    let online = HubEvent::Presence {
        player_id: "bob".into(),
        presence: Presence::Online,
    };

    // The first connection brings the player online, and an event says so right after its
    // own; the second one changes nothing.
    let mut ws = server.ws("/api/ws", &token).await;
    let sse = server.sse("/sse/bob", &token).await;
    assert_eq!(server.hub.presence("bob"), Presence::Online);
    let opened = next_event(&mut events).await;
    assert!(
        matches!(
            opened,
            HubEvent::Connected {
                kind: ConnectionKind::WebSocket,
                ..
            }
        ),
        "{opened:?}"
    );
    assert_eq!(next_event(&mut events).await, online);
    let opened = next_event(&mut events).await;
    assert!(
        matches!(
            opened,
            HubEvent::Connected {
                kind: ConnectionKind::Sse,
                ..
            }
        ),
        "{opened:?}"
    );

    within("the close frame sent", ws.socket.close(None))
        .await
        .unwrap();
    // The next event: the WebSocket left (the second connection sent no second `Online`).
    let closed = next_event(&mut events).await;
    let HubEvent::Disconnected { reason, kind, .. } = closed else {
        panic!("expected the WebSocket's disconnect, got {closed:?}")
    };
    assert_eq!(
        (kind, reason),
        (ConnectionKind::WebSocket, DisconnectReason::ClientClosed)
    );
    assert_eq!(
        server.hub.presence("bob"),
        Presence::Online,
        "the SSE stream still lives"
    );

    drop(sse);
    let closed = next_event(&mut events).await;
    assert!(
        matches!(
            closed,
            HubEvent::Disconnected {
                kind: ConnectionKind::Sse,
                ..
            }
        ),
        "{closed:?}"
    );
    assert_eq!(
        next_event(&mut events).await,
        HubEvent::Presence {
            player_id: "bob".into(),
            presence: Presence::Reconnecting,
        }
    );
    assert_eq!(server.hub.presence("bob"), Presence::Reconnecting);
    assert_eq!(server.hub.connection_count(), 0);
}

#[tokio::test]
async fn a_connection_that_cannot_take_a_message_is_removed_during_delivery_and_reported_as_failed()
{
    // A tiny outbox and a client that reads nothing: once the socket buffers are full the
    // outbox overflows, and that publish finds the connection dead.
    let server = TestServer::start_with(Hub::builder().outbox_capacity(8).build(), |app| app).await;
    let mut events = server.hub.subscribe();
    let token = player_token("carol");
    let mut stalled = server.stalled_ws("/api/ws", &token).await;
    let mut healthy = server.sse("/sse/carol", &token).await;

    let service = service_token();
    let payload = "x".repeat(32 * 1024);
    let mut failed_report = None;
    for sent in 1..=2_000 {
        let (status, report) = server
            .post(
                "/api/players/carol/messages",
                &service,
                json!({"type": "bulk", "data": payload}),
            )
            .await;
        assert_eq!(status, 200);
        // The SSE stream keeps up, so the outbox of the stalled WebSocket is the one to fill.
        assert_eq!(healthy.next_json().await["type"], "bulk");
        if report["failed"] == 1 {
            failed_report = Some((sent, report));
            break;
        }
        assert_eq!(
            report["delivered"], 2,
            "both connections took message {sent}"
        );
    }
    let (_, report) =
        failed_report.expect("the stalled connection overflowed within 2,000 messages of 32 KiB");
    assert_eq!(
        (
            report["delivered"].as_u64(),
            report["sse"].as_u64(),
            report["websocket"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );

    let (kind, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(
        (reason, kind),
        (DisconnectReason::SlowConsumer, ConnectionKind::WebSocket)
    );
    assert_eq!(
        server.hub.connections_of("carol").len(),
        1,
        "only the SSE stream is left"
    );
    // The client reads again: whole frames, then the close frame that says why.
    assert_eq!(
        stalled.next_close().await,
        (4005, "slow_consumer".to_owned())
    );

    let (_, report) = server
        .post(
            "/api/players/carol/messages",
            &service,
            json!({"type": "after"}),
        )
        .await;
    assert_eq!(
        (report["delivered"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(0)),
        "counted once"
    );
    assert_eq!(healthy.next_json().await["type"], "after");
    healthy
        .expect_next_is_sentinel(&publish_sentinel(&server.hub))
        .await;
}

#[tokio::test]
async fn shutdown_tells_every_client_why_before_closing() {
    let server = TestServer::start().await;
    let token = player_token("dave");
    let mut ws = server.ws("/api/ws", &token).await;
    let mut sse = server.sse("/sse/dave", &token).await;
    let hub = server.hub.clone();

    let shutdown = tokio::spawn(server.shutdown());
    let (code, reason) = ws.next_close().await;
    assert_eq!((code, reason.as_str()), (1001, "server_shutdown"));
    let disconnect = sse.next_named("disconnect").await;
    assert_eq!(
        disconnect,
        json!({"reason": "server_shutdown", "code": 1001, "reconnect": true, "recover": true}),
        "come back, and ask for what was missed"
    );
    sse.closed().await;
    drop(ws);
    tokio::time::timeout(WAIT * 3, shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test]
async fn a_connection_whose_client_stops_reading_still_ends_when_its_token_expires() {
    let server =
        TestServer::start_with_authenticator(Hub::new(), ExpiresAfter::new(LIFETIME), |app| {
            app.websocket(WebSocketSettings::new().close_timeout(Duration::from_millis(500)))
        })
        .await;
    let mut events = server.hub.subscribe();
    let mut stalled = server.stalled_ws("/api/ws", &player_token("frank")).await;

    publish_big_burst(&server.hub, "frank");
    let (_, reason) = wait_for_disconnect_within(WAIT * 2, &mut events).await;
    assert_eq!(
        reason,
        DisconnectReason::AuthExpired,
        "a blocked write does not hold the connection open"
    );

    // The client reads again: what the socket buffers held, and then the end.
    let (received, close) = stalled.rest_until_closed().await;
    assert!(
        !received.is_empty() && received.iter().all(|m| m["type"] == "big"),
        "the writer had started on the burst"
    );
    assert!(
        received.len() < BIG_MESSAGES,
        "a write was blocked when the connection ended, yet all {} messages arrived",
        received.len()
    );
    if let Some(close) = close {
        assert_eq!(close, (4002, "auth_expired".to_owned()));
    }
}

#[tokio::test]
async fn a_ping_is_answered_and_delivery_goes_on() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let server = TestServer::start().await;
    let mut ws = server.ws("/api/ws", &player_token("gina")).await;
    ws.socket
        .send(WsMessage::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, ws.socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, WsMessage::Pong(b"are you there".to_vec().into()));
    server
        .post(
            "/api/players/gina/messages",
            &service_token(),
            json!({"type": "after-ping"}),
        )
        .await;
    assert_eq!(ws.next_json().await["type"], "after-ping");
    ws.expect_next_is_sentinel(&publish_sentinel(&server.hub))
        .await;
    assert_eq!(server.hub.connections_of("gina").len(), 1);
}

#[tokio::test]
async fn an_sse_client_that_hangs_up_leaves_the_hub_without_waiting_for_a_write() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let sse = server.sse("/sse/ida", &player_token("ida")).await;
    wait_for(&mut events, |e| matches!(e, HubEvent::Connected { .. })).await;
    drop(sse);
    let (_, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(reason, DisconnectReason::ClientClosed);
    assert_eq!(server.hub.presence("ida"), Presence::Reconnecting);
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_still_ends_when_its_token_expires() {
    let server =
        TestServer::start_with_authenticator(Hub::new(), ExpiresAfter::new(LIFETIME), |app| app)
            .await;
    let mut events = server.hub.subscribe();
    let mut stalled = server.stalled_sse("/sse/jill", &player_token("jill")).await;
    wait_for(&mut events, |e| matches!(e, HubEvent::Connected { .. })).await;

    publish_big_burst(&server.hub, "jill");
    // The credential's expiry, then up to 2 s for the last events to go out.
    let (_, reason) = wait_for_disconnect_within(WAIT * 2, &mut events).await;
    assert_eq!(
        reason,
        DisconnectReason::AuthExpired,
        "a blocked write does not hold the stream open"
    );
    assert_burst_was_cut_short(&read_to_end(&mut stalled).await);
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_an_sse_client_that_stopped_reading() {
    let server = TestServer::start().await;
    let hub = server.hub.clone();
    let mut events = hub.subscribe();
    let mut stalled = server.stalled_sse("/sse/kim", &player_token("kim")).await;
    wait_for(&mut events, |e| matches!(e, HubEvent::Connected { .. })).await;

    // The stream's writer is woken by the first message, before the server hears of the
    // shutdown, so it is blocked in the middle of the burst when the connection ends.
    publish_big_burst(&hub, "kim");
    // Well under serve's 10 s grace period: the stream is dropped once its last events
    // cannot go out within the 2 s close timeout.
    within("the end of the server's shutdown", server.shutdown()).await;
    within("every guard dropped", hub.shutdown()).await;
    assert_burst_was_cut_short(&read_to_end(&mut stalled).await);
}
