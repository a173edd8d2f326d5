//! Heartbeats, health and presence (SPEC §5) over real sockets: a real server on
//! 127.0.0.1:0, tokio-tungstenite and hyper clients.
//!
//! Long timers run on tokio's paused clock, which jumps ahead whenever every task is idle;
//! those tests only wait for something to happen (a timeout, a grace period), so a jump
//! cannot break them. A test that must do something *before* a timer runs out (reconnect
//! within the grace) or that watches a state come and go (health) uses short periods on the
//! real clock instead.

mod common;

use std::time::Duration;

use common::*;
use dualcast::{
    ConnectionKind, DisconnectReason, Health, HeartbeatSettings, Hub, HubEvent, Message, Presence,
};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A WebSocket client read by a task of its own, so that tungstenite answers every ping the
/// server sends (it answers a ping as it reads it).
struct KeptReading {
    stop: oneshot::Sender<()>,
    task: JoinHandle<(WsClient, usize)>,
}

impl KeptReading {
    fn start(mut client: WsClient) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut pings = 0;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    frame = client.socket.next() => match frame {
                        Some(Ok(WsMessage::Ping(_))) => pings += 1,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
            (client, pings)
        });
        Self { stop, task }
    }

    /// Stops reading: the client, and how many pings it read.
    async fn stop(self) -> (WsClient, usize) {
        let _ = self.stop.send(());
        within("the reading task's end", self.task)
            .await
            .expect("the reading task did not panic")
    }
}

/// A close frame as a server sends it (unmasked), with `code` and `reason`.
fn server_close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut frame = vec![0x88, u8::try_from(2 + reason.len()).unwrap()];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason.as_bytes());
    frame
}

fn only_connection(hub: &Hub, player: &str) -> dualcast::ConnectionInfo {
    let mut connections = hub.connections_of(player);
    assert_eq!(connections.len(), 1, "{player} has one connection");
    connections.pop().unwrap()
}

/// The connection of `player` once its health is `health`.
async fn health_becomes(hub: &Hub, player: &str, health: Health) -> dualcast::ConnectionInfo {
    poll_until(&format!("{player}'s connection {health:?}"), || {
        let info = only_connection(hub, player);
        (info.health == health).then_some(info)
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_websocket_whose_client_never_answers_pings_ends_with_heartbeat_timeout_and_one_that_reads_stays(
) {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    // Reads nothing, so the server's pings are never answered (default settings: a ping
    // after 25 s of quiet, the end after 60 s of silence).
    let mut silent = server.stalled_ws("/api/ws", &player_token("silent")).await;
    let listener = KeptReading::start(server.ws("/api/ws", &player_token("listener")).await);

    let ended = wait_for_within(Duration::from_secs(120), &mut events, |e| {
        matches!(e, HubEvent::Disconnected { .. })
    })
    .await;
    let HubEvent::Disconnected {
        player_id, reason, ..
    } = ended
    else {
        unreachable!("wait_for returned {ended:?}")
    };
    assert_eq!(
        (&*player_id, reason),
        ("silent", DisconnectReason::HeartbeatTimeout)
    );
    assert_eq!(server.hub.connections_of("listener").len(), 1);

    // Three more minutes, three times the timeout: the pings are answered, so the reading
    // client stays (it sends nothing else).
    tokio::time::sleep(Duration::from_secs(180)).await;
    assert_eq!(
        server.hub.connections_of("listener").len(),
        1,
        "a client that answers pings is never timed out"
    );
    let (listener, pings) = listener.stop().await;
    assert!(pings > 0, "the reading client was pinged");

    // The silent client reads its socket at last, as raw bytes (tungstenite would try to
    // answer the pings, on a socket the server closed long ago): the unanswered pings,
    // then the close frame that says why, and the end.
    let received = read_to_end(silent.socket.get_mut()).await;
    let close = server_close_frame(4004, "heartbeat_timeout");
    assert!(
        received.ends_with(&close),
        "the last frame is the close frame {close:?}; got {received:?}"
    );
    assert!(
        received.starts_with(&[0x89, 0x00]),
        "an empty ping came first; got {received:?}"
    );
    drop(listener);
    server.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_ping_makes_a_websocket_degraded_until_its_client_sends_a_frame_or_a_pong() {
    let heartbeat = HeartbeatSettings::new()
        .interval(Duration::from_secs(1))
        .late_after(Duration::from_secs(1))
        .timeout(Duration::from_secs(30));
    let hub = Hub::builder().heartbeat(heartbeat).build();
    let server = TestServer::start_with(hub, |app| app).await;
    let mut ws = server.ws("/api/ws", &player_token("amy")).await;
    assert_eq!(only_connection(&server.hub, "amy").health, Health::Healthy);

    // The client reads nothing, so the server's ping goes unanswered.
    let degraded = health_becomes(&server.hub, "amy", Health::Degraded).await;
    // A frame from the client.
    ws.send_json(&json!({"type": "ping", "id": "back"})).await;
    let healthy = health_becomes(&server.hub, "amy", Health::Healthy).await;
    assert!(
        healthy.last_seen > degraded.last_seen,
        "the frame moved last_seen"
    );

    // Unanswered again; then the client reads, and tungstenite answers the pings.
    let degraded = health_becomes(&server.hub, "amy", Health::Degraded).await;
    let reading = KeptReading::start(ws);
    let healthy = health_becomes(&server.hub, "amy", Health::Healthy).await;
    assert!(
        healthy.last_seen > degraded.last_seen,
        "the pong moved last_seen"
    );
    let (ws, pings) = reading.stop().await;
    assert!(pings >= 2, "both pings were read and answered");
    drop(ws);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn presence_goes_online_then_reconnecting_then_offline_once_the_grace_period_is_over() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut ws = server.ws("/api/ws", &player_token("pia")).await;
    assert_eq!(server.hub.presence("pia"), Presence::Online);

    within("the close frame sent", ws.socket.close(None))
        .await
        .unwrap();
    let seen = events_until(WAIT, &mut events, |e| {
        is_presence(e, "pia", Presence::Reconnecting)
    })
    .await;
    assert_eq!(
        presence_changes(&seen, "pia"),
        [Presence::Online, Presence::Reconnecting]
    );
    assert!(
        seen.iter().any(|e| matches!(
            e,
            HubEvent::Disconnected {
                reason: DisconnectReason::ClientClosed,
                ..
            }
        )),
        "the client closed it: {seen:?}"
    );
    assert_eq!(server.hub.presence("pia"), Presence::Reconnecting);

    // The default grace is 10 s.
    let seen = events_until(Duration::from_secs(60), &mut events, |e| {
        is_presence(e, "pia", Presence::Offline)
    })
    .await;
    assert_eq!(presence_changes(&seen, "pia"), [Presence::Offline]);
    assert_eq!(server.hub.presence("pia"), Presence::Offline);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reconnect_within_the_grace_period_keeps_rooms_and_session_and_sends_no_offline() {
    // The real clock: the reconnect must come before the grace is over.
    const GRACE: Duration = Duration::from_secs(2);
    let hub = Hub::builder().presence_grace(GRACE).build();
    let server = TestServer::start_with(hub, |app| app).await;
    let mut events = server.hub.subscribe();
    let token = player_token("rex");
    let mut first = server.ws("/api/ws?session_id=s1", &token).await;
    assert!(server.hub.join_room("rex", "lobby"));

    within("the close frame sent", first.socket.close(None))
        .await
        .unwrap();
    let mut seen = events_until(WAIT, &mut events, |e| {
        is_presence(e, "rex", Presence::Reconnecting)
    })
    .await;
    let headers = [("sec-websocket-protocol", format!("bearer, {token}"))];
    let mut second = match server.try_ws("/api/ws?session_id=s1", &headers).await {
        Ok(client) => client,
        Err((status, body)) => panic!("s1 is still current, yet: {status} {body}"),
    };
    assert_eq!(server.hub.presence("rex"), Presence::Online);
    assert_eq!(server.hub.rooms_of("rex"), ["lobby"]);
    assert_eq!(
        server.hub.session_of("rex").session_id.as_deref(),
        Some("s1")
    );

    // A witness leaves after rex came back: its grace ends after rex's would have, so its
    // `offline` comes after any `offline` of rex's.
    drop(server.sse("/api/sse", &player_token("wes")).await);
    seen.extend(
        events_until(GRACE + WAIT, &mut events, |e| {
            is_presence(e, "wes", Presence::Offline)
        })
        .await,
    );
    assert_eq!(
        presence_changes(&seen, "rex"),
        [Presence::Online, Presence::Reconnecting, Presence::Online]
    );
    assert_eq!(server.hub.presence("rex"), Presence::Online);

    // The kept room reaches the new connection.
    let report = server
        .hub
        .broadcast_to_room("lobby", &Message::json("in-lobby", json!({})), &[]);
    assert_eq!(report.delivered, 1);
    let envelope = second.next_json().await;
    assert_eq!(
        (envelope["type"].as_str(), envelope["room"].as_str()),
        (Some("in-lobby"), Some("lobby"))
    );
    drop(second);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_offline_players_rooms_and_session_are_forgotten_once_the_grace_and_the_state_ttl_are_over(
) {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut ws = server
        .ws("/api/ws?session_id=s1", &player_token("oli"))
        .await;
    assert!(server.hub.join_room("oli", "lobby"));
    within("the close frame sent", ws.socket.close(None))
        .await
        .unwrap();

    // Offline after the grace (10 s), with its state kept for the state TTL (5 minutes).
    events_until(Duration::from_secs(60), &mut events, |e| {
        is_presence(e, "oli", Presence::Offline)
    })
    .await;
    assert_eq!(server.hub.rooms_of("oli"), ["lobby"]);
    assert_eq!(
        server.hub.session_of("oli").session_id.as_deref(),
        Some("s1")
    );

    // Nothing else happens in the hub (these reads change nothing): the hub's keeper
    // forgets the player on its own.
    poll_until_within(Duration::from_secs(10 * 60), "oli forgotten", || {
        let forgotten = server.hub.rooms_of("oli").is_empty()
            && server.hub.session_of("oli").session_id.is_none();
        forgotten.then_some(())
    })
    .await;
    assert!(server.hub.room_members("lobby").is_empty());
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_logout_makes_the_player_offline_at_once_without_a_reconnecting_period() {
    let server = TestServer::start().await;
    let mut events = server.hub.subscribe();
    let mut ws = server.ws("/api/ws", &player_token("lou")).await;

    let (status, body) = server
        .post("/api/connections/lou/logout", &service_token(), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ws.next_close().await, (4000, "logout".to_owned()));
    let seen = events_until(WAIT, &mut events, |e| {
        is_presence(e, "lou", Presence::Offline)
    })
    .await;
    assert_eq!(
        presence_changes(&seen, "lou"),
        [Presence::Online, Presence::Offline]
    );
    assert!(
        seen.iter().any(|e| matches!(
            e,
            HubEvent::Disconnected {
                kind: ConnectionKind::WebSocket,
                reason: DisconnectReason::Logout,
                ..
            }
        )),
        "{seen:?}"
    );
    assert_eq!(server.hub.presence("lou"), Presence::Offline);

    // A witness leaves after lou and goes offline after its grace: by then lou had no
    // late `reconnecting` (or second `offline`).
    let mut witness = server.ws("/api/ws", &player_token("wes")).await;
    within("the close frame sent", witness.socket.close(None))
        .await
        .unwrap();
    let later = events_until(Duration::from_secs(60), &mut events, |e| {
        is_presence(e, "wes", Presence::Offline)
    })
    .await;
    assert_eq!(presence_changes(&later, "lou"), []);
    server.shutdown().await;
}
