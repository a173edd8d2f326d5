//! Heartbeats, health and presence (SPEC §5) at the hub's own API, on a paused clock: the
//! hub's keeper task asks for pings, ends silent connections, ends grace periods and
//! forgets players, with nothing else happening in the hub.

use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::broadcast;

use super::*;
use crate::connection::{ConnectionKind, Health};
use crate::message::Message;

/// A WebSocket-like connection of `player` that the hub pings.
fn pinged(hub: &Hub, player: &str) -> (ConnectionGuard, Outbox) {
    hub.register(Registration::new(player, ConnectionKind::WebSocket).heartbeats(true))
        .expect("registered")
}

async fn ended(guard: &ConnectionGuard) -> DisconnectReason {
    poll_fn(|cx| guard.poll_end(cx)).await
}

/// Waits until the hub asks `guard`'s transport for a ping (as a transport task would:
/// woken through the end signal's waker).
async fn ping_asked(guard: &ConnectionGuard) {
    poll_fn(|cx| {
        if guard.take_ping_request() {
            return std::task::Poll::Ready(());
        }
        // Registers the waker the hub wakes for pings too.
        match guard.poll_end(cx) {
            std::task::Poll::Ready(reason) => panic!("ended with {reason} before a ping"),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await;
}

/// The presence events for `player` received so far.
fn presence_events(events: &mut broadcast::Receiver<HubEvent>, player: &str) -> Vec<Presence> {
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let HubEvent::Presence {
            player_id,
            presence,
        } = event
        {
            if &*player_id == player {
                seen.push(presence);
            }
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_ends_with_heartbeat_timeout_while_one_answering_pings_lives_on() {
    let hub = Hub::new();
    let (silent, _a) = pinged(&hub, "alice");
    let (answering, _b) = pinged(&hub, "bob");
    let start = tokio::time::Instant::now();
    let answer = async {
        loop {
            ping_asked(&answering).await;
            answering.touch(); // its pong
        }
    };
    let reason = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::select! {
            reason = ended(&silent) => reason,
            () = answer => unreachable!(),
        }
    })
    .await
    .expect("the silent connection ended within 5 minutes");
    assert_eq!(reason, DisconnectReason::HeartbeatTimeout);
    let after = start.elapsed();
    assert!(after >= Duration::from_secs(60), "ended after {after:?}");
    // Three more minutes of answered pings: bob is still there.
    let answer = async {
        loop {
            ping_asked(&answering).await;
            answering.touch();
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(180), answer).await;
    assert_eq!(answering.end_reason(), None);
    drop(silent);
    assert_eq!(hub.connections_of("bob").len(), 1);
    assert!(hub.connections_of("alice").is_empty());
}

#[tokio::test(start_paused = true)]
async fn pings_come_after_the_interval_of_quiet_and_not_while_the_client_talks() {
    let hub = Hub::new();
    let (guard, _outbox) = pinged(&hub, "alice");
    let start = tokio::time::Instant::now();
    // A client frame every 10 s keeps the connection from being pinged.
    let talking = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            guard.touch();
        }
    };
    let asked = tokio::time::timeout(Duration::from_secs(100), async {
        tokio::select! {
            () = ping_asked(&guard) => true,
            () = talking => false,
        }
    })
    .await;
    assert!(asked.is_err(), "no ping while the client talks");
    let quiet_from = tokio::time::Instant::now();
    ping_asked(&guard).await;
    let quiet = quiet_from.elapsed();
    assert!(
        quiet >= Duration::from_secs(15) && quiet <= Duration::from_secs(27),
        "the first ping came {quiet:?} into the quiet (the last frame was ≤10 s before it)"
    );
    assert!(start.elapsed() >= Duration::from_secs(100));
}

#[tokio::test(start_paused = true)]
async fn health_is_degraded_while_a_ping_goes_unanswered_and_healthy_after_the_pong() {
    let hub = Hub::new();
    let (guard, _outbox) = pinged(&hub, "alice");
    ping_asked(&guard).await;
    assert_eq!(
        guard.info().health,
        Health::Healthy,
        "a fresh ping is not late"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(guard.info().health, Health::Degraded, "unanswered for 10 s");
    let seen_before = guard.info().last_seen;
    guard.touch();
    assert_eq!(guard.info().health, Health::Healthy);
    assert!(guard.info().last_seen > seen_before, "last_seen moved");
}

#[tokio::test(start_paused = true)]
async fn a_full_outbox_is_degraded_and_healthy_again_once_it_drained() {
    let hub = HubSettings::new().outbox_capacity(8).build();
    let (guard, mut outbox) = pinged(&hub, "alice");
    for _ in 0..7 {
        hub.send_to_player("alice", &Message::json("m", serde_json::json!(null)));
    }
    assert_eq!(guard.info().health, Health::Degraded);
    while outbox.try_recv().is_some() {}
    // No delivery comes to notice; the heartbeat sweep does.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(guard.info().health, Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn presence_goes_online_reconnecting_offline_once_each_in_order() {
    let hub = Hub::new();
    let mut events = hub.subscribe();
    let (guard, _outbox) = pinged(&hub, "alice");
    assert_eq!(hub.presence("alice"), Presence::Online);
    drop(guard);
    assert_eq!(hub.presence("alice"), Presence::Reconnecting);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(hub.presence("alice"), Presence::Reconnecting);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hub.presence("alice"), Presence::Offline);
    assert_eq!(
        presence_events(&mut events, "alice"),
        [Presence::Online, Presence::Reconnecting, Presence::Offline]
    );
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_within_the_grace_keeps_rooms_and_session_and_sends_no_offline() {
    let hub = Hub::new();
    let mut events = hub.subscribe();
    let (first, _a) = hub
        .register(Registration::new("alice", ConnectionKind::Sse).session("s1"))
        .unwrap();
    hub.join_room("alice", "lobby");
    drop(first);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (again, _b) = hub
        .register(Registration::new("alice", ConnectionKind::WebSocket).session("s1"))
        .unwrap();
    assert_eq!(again.info().session_id.as_deref(), Some("s1"));
    assert_eq!(hub.rooms_of("alice"), ["lobby"]);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(hub.rooms_of("alice"), ["lobby"], "kept while connected");
    assert_eq!(
        presence_events(&mut events, "alice"),
        [Presence::Online, Presence::Reconnecting, Presence::Online]
    );
}

#[tokio::test(start_paused = true)]
async fn an_offline_players_state_is_kept_for_the_ttl_then_removed() {
    let hub = Hub::builder()
        .presence_grace(Duration::from_secs(10))
        .state_ttl(Duration::from_secs(300))
        .build();
    let (guard, _outbox) = hub
        .register(Registration::new("alice", ConnectionKind::Sse).session("s1"))
        .unwrap();
    hub.join_room("alice", "lobby");
    drop(guard);
    tokio::time::sleep(Duration::from_secs(305)).await;
    assert_eq!(hub.presence("alice"), Presence::Offline);
    assert_eq!(hub.rooms_of("alice"), ["lobby"], "kept within the TTL");
    assert_eq!(hub.session_of("alice").session_id.as_deref(), Some("s1"));
    // Nothing else happens in the hub: the keeper forgets the player on its own.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(hub.rooms_of("alice").is_empty());
    assert!(hub.room_members("lobby").is_empty());
    assert_eq!(hub.session_of("alice").session_id, None);
    assert!(!hub.read().players.contains_key("alice"));
}

#[tokio::test(start_paused = true)]
async fn logout_skips_the_grace() {
    let hub = Hub::new();
    let mut events = hub.subscribe();
    let (guard, _outbox) = pinged(&hub, "alice");
    assert_eq!(hub.logout("alice"), 1);
    drop(guard);
    assert_eq!(hub.presence("alice"), Presence::Offline);
    assert_eq!(
        presence_events(&mut events, "alice"),
        [Presence::Online, Presence::Offline]
    );
}

#[test]
fn heartbeats_need_a_runtime() {
    let hub = Hub::new();
    let refused =
        hub.register(Registration::new("alice", ConnectionKind::WebSocket).heartbeats(true));
    assert!(matches!(refused, Err(RegisterError::NoRuntime)));
}

#[tokio::test(start_paused = true)]
async fn a_pong_in_the_same_millisecond_as_its_ping_keeps_the_connection_healthy() {
    let hub = Hub::new();
    let (guard, _outbox) = pinged(&hub, "alice");
    ping_asked(&guard).await;
    guard.touch(); // answered at once: the paused clock has not moved
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(guard.info().health, Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_logout_during_the_grace_makes_the_player_offline_at_once() {
    let hub = Hub::new();
    let mut events = hub.subscribe();
    let (guard, _outbox) = pinged(&hub, "alice");
    drop(guard);
    assert_eq!(hub.presence("alice"), Presence::Reconnecting);
    hub.logout("alice");
    assert_eq!(hub.presence("alice"), Presence::Offline);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        presence_events(&mut events, "alice"),
        [Presence::Online, Presence::Reconnecting, Presence::Offline],
        "offline once, at the logout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_ending_for_another_reason_as_its_player_logs_out_skips_the_grace() {
    let hub = Hub::new();
    let mut events = hub.subscribe();
    let (guard, _outbox) = pinged(&hub, "alice");
    guard.end(DisconnectReason::ProtocolError);
    hub.logout("alice");
    drop(guard);
    assert_eq!(hub.presence("alice"), Presence::Offline);
    assert_eq!(
        presence_events(&mut events, "alice"),
        [Presence::Online, Presence::Offline]
    );
}

#[tokio::test(start_paused = true)]
async fn a_grace_and_state_ttl_of_forever_do_not_overflow_the_clock() {
    let hub = Hub::builder()
        .presence_grace(Duration::MAX)
        .state_ttl(Duration::MAX)
        .build();
    let (guard, _outbox) = pinged(&hub, "alice");
    hub.join_room("alice", "lobby");
    drop(guard);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(hub.presence("alice"), Presence::Reconnecting);
    assert_eq!(hub.rooms_of("alice"), ["lobby"]);
    let (_again, _b) = pinged(&hub, "alice");
    assert_eq!(hub.presence("alice"), Presence::Online);
}

/// On the real clock, where every `Instant::now()` is a little past the keeper's `now`: the
/// keeper sleeps until its next tick. (The first health sample used to count as due at
/// "now" until taken, and was never taken, so the keeper woke every millisecond and swept
/// every connection each time: a quarter of a core during a 5,000-connection fan-out.)
#[tokio::test]
async fn the_keeper_sleeps_a_tick_on_the_real_clock() {
    let hub = Hub::new();
    let _alice = pinged(&hub, "alice");
    let now = tokio::time::Instant::now();
    let next = hub.keep_once(now).expect("a heartbeat tick is due");
    assert!(
        next >= now + hub.inner.settings.heartbeat.tick() / 2,
        "the keeper would wake {:?} after this turn",
        next.saturating_duration_since(now)
    );
    let again = hub.keep_once(tokio::time::Instant::now());
    assert!(
        again.is_some_and(|at| at >= next),
        "still asleep until then"
    );
}
