//! SPEC §2 and §5 over real sockets: connections of one player coexist, presence follows
//! the last connection, and a connection that cannot keep up is removed and reported.

mod common;

use common::*;
use dualcast::{ConnectionKind, DisconnectReason, Hub, HubEvent, Presence};
use serde_json::json;

#[tokio::test]
async fn opening_a_second_connection_of_either_kind_never_closes_the_first() {
    let server = TestServer::start().await;
    let token = player_token("alice");
    let mut first_ws = server.ws("/api/ws", &token).await;
    let mut second_ws = server.ws("/api/ws", &token).await;
    let mut first_sse = server.sse("/sse/alice", &token).await;
    let mut second_sse = server.sse("/api/sse", &token).await;
    let mut third_ws = server.ws("/api/ws", &token).await;

    let connections = server.hub.connections_of("alice");
    assert_eq!(connections.len(), 5);
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
        (Some(5), Some(0))
    );
    for envelope in [
        first_ws.next_json().await,
        second_ws.next_json().await,
        third_ws.next_json().await,
        first_sse.next_json().await,
        second_sse.next_json().await,
    ] {
        assert_eq!(envelope["type"], "still-here");
    }
}

#[tokio::test]
async fn presence_is_online_while_any_connection_lives_and_offline_after_the_last_closes() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let token = player_token("bob");
    assert_eq!(server.hub.presence("bob"), Presence::Offline);

    let mut ws = server.ws("/api/ws", &token).await;
    let sse = server.sse("/sse/bob", &token).await;
    assert_eq!(server.hub.presence("bob"), Presence::Online);

    ws.socket.close(None).await.unwrap();
    let closed = wait_for(&mut events, |e| {
        matches!(
            e,
            HubEvent::Disconnected {
                kind: ConnectionKind::WebSocket,
                ..
            }
        )
    })
    .await;
    let HubEvent::Disconnected { reason, .. } = closed else {
        unreachable!()
    };
    assert_eq!(reason, DisconnectReason::ClientClosed);
    assert_eq!(
        server.hub.presence("bob"),
        Presence::Online,
        "the SSE stream still lives"
    );

    drop(sse);
    wait_for(&mut events, |e| {
        matches!(
            e,
            HubEvent::Presence {
                presence: Presence::Offline,
                ..
            }
        )
    })
    .await;
    assert_eq!(server.hub.presence("bob"), Presence::Offline);
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
    assert_eq!(disconnect["reason"], "server_shutdown");
    assert_eq!(disconnect["reconnect"], true);
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
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let token = expiring_token("frank");
    let _stalled = server.stalled_ws("/api/ws", &token).await;

    // Enough to fill the socket buffers, far less than the outbox holds.
    let payload = "y".repeat(64 * 1024);
    for _ in 0..40 {
        let (status, report) = server
            .post(
                "/api/players/frank/messages",
                &service_token(),
                json!({"type": "big", "data": payload}),
            )
            .await;
        assert_eq!((status.as_u16(), report["failed"].as_u64()), (200, Some(0)));
    }
    let (_, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(
        reason,
        DisconnectReason::AuthExpired,
        "a blocked write does not hold the connection open"
    );
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
    assert_eq!(server.hub.presence("ida"), Presence::Offline);
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_still_ends_when_its_token_expires() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let token = expiring_token("jill");
    let _stalled = server.stalled_sse("/sse/jill", &token).await;
    wait_for(&mut events, |e| matches!(e, HubEvent::Connected { .. })).await;
    let payload = "z".repeat(64 * 1024);
    for _ in 0..60 {
        let (status, _) = server
            .post(
                "/api/players/jill/messages",
                &service_token(),
                json!({"type": "big", "data": payload}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, reason) = wait_for_disconnect(&mut events).await;
    assert_eq!(
        reason,
        DisconnectReason::AuthExpired,
        "a blocked write does not hold the stream open"
    );
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_an_sse_client_that_stopped_reading() {
    let hub = Hub::builder().outbox_capacity(8).build();
    let server = TestServer::start_with(hub, |app| app).await;
    let hub = server.hub.clone();
    let mut events = hub.subscribe();
    let _stalled = server.stalled_sse("/sse/kim", &player_token("kim")).await;
    wait_for(&mut events, |e| matches!(e, HubEvent::Connected { .. })).await;
    let payload = "q".repeat(64 * 1024);
    for _ in 0..6 {
        server
            .post(
                "/api/players/kim/messages",
                &service_token(),
                json!({"type": "big", "data": payload}),
            )
            .await;
    }
    // Well under serve's 10 s grace period: the stream is dropped once its last events
    // cannot go out within the 2 s close timeout.
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown finished");
    tokio::time::timeout(WAIT, hub.shutdown())
        .await
        .expect("every guard was dropped");
}
