use super::*;
use crate::connection::{ConnectionKind, Health};
use crate::message::Message;
use serde_json::json;
use std::time::Duration;

fn message() -> Message {
    Message::json("test", json!({"n": 1}))
}

#[test]
fn a_dead_connection_found_during_delivery_is_removed_and_reported_as_failed() {
    let hub = Hub::new();
    let mut events = hub.subscribe();
    let (_live_guard, _live_outbox) = hub
        .register(Registration::new("alice", ConnectionKind::WebSocket))
        .unwrap();
    let (dead_guard, dead_outbox) = hub
        .register(Registration::new("alice", ConnectionKind::Sse))
        .unwrap();
    drop(dead_outbox); // the transport is gone, its guard not yet dropped

    let report = hub.send_to_player("alice", &message());
    assert_eq!(
        (
            report.delivered,
            report.websocket,
            report.sse,
            report.failed
        ),
        (1, 1, 0, 1)
    );
    assert_eq!(
        hub.connections_of("alice").len(),
        1,
        "the dead connection left the hub"
    );
    assert_eq!(
        dead_guard.end_reason(),
        Some(DisconnectReason::ClientClosed)
    );

    let report = hub.send_to_player("alice", &message());
    assert_eq!(
        (report.delivered, report.failed),
        (1, 0),
        "it is not counted twice"
    );
    drop(dead_guard);
    assert_eq!(hub.connection_count(), 1);
    let disconnects = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e, HubEvent::Disconnected { .. }))
        .count();
    assert_eq!(
        disconnects, 1,
        "removal during delivery and the guard's drop are one ending"
    );
}

#[test]
fn an_overflowing_outbox_ends_the_connection_as_a_slow_consumer() {
    let hub = HubSettings::new().outbox_capacity(4).build();
    let (guard, _outbox) = hub
        .register(Registration::new("bob", ConnectionKind::WebSocket))
        .unwrap();
    for _ in 0..4 {
        assert_eq!(hub.send_to_player("bob", &message()).delivered, 1);
    }
    assert_eq!(guard.info().health, Health::Degraded);
    let report = hub.send_to_player("bob", &message());
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert_eq!(guard.end_reason(), Some(DisconnectReason::SlowConsumer));
    assert_eq!(hub.presence("bob"), Presence::Reconnecting);
}

#[test]
fn room_membership_belongs_to_the_player_and_outlives_its_connections() {
    let hub = Hub::new();
    assert!(hub.join_room("carol", "lobby"));
    assert!(!hub.join_room("carol", "lobby"));
    let (guard, _outbox) = hub
        .register(Registration::new("carol", ConnectionKind::Sse))
        .unwrap();
    drop(guard);
    assert_eq!(hub.rooms_of("carol"), ["lobby"]);
    assert!(hub.leave_room("carol", "lobby"));
    assert!(hub.room_members("lobby").is_empty());
    // Only its session is left, until the session TTL (see
    // `session_tests::a_player_with_no_connection_room_or_session_left_is_forgotten`).
    let registry = hub.read();
    let carol = registry.players.get("carol").expect("kept for its session");
    assert!(carol.rooms.is_empty() && carol.connections.is_empty());
    assert!(carol.session.is_some());
}

#[test]
fn long_exclusion_lists_exclude_the_same_players_as_short_ones() {
    let hub = Hub::new();
    let players: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
    let _connections: Vec<_> = players
        .iter()
        .map(|p| {
            hub.join_room(p, "r");
            hub.register(Registration::new(p.as_str(), ConnectionKind::Sse))
                .unwrap()
        })
        .collect();
    let few: Vec<&str> = players[..3].iter().map(String::as_str).collect();
    let many: Vec<&str> = players[..30].iter().map(String::as_str).collect();
    assert_eq!(hub.broadcast_to_room("r", &message(), &few).delivered, 37);
    assert_eq!(hub.broadcast_to_room("r", &message(), &many).delivered, 10);
    assert_eq!(hub.broadcast_global(&message(), &many).players, Some(10));
}

#[test]
fn envelope_ids_are_unique_and_carry_the_epoch() {
    let hub = Hub::new();
    let a = hub.send_to_player("nobody", &message());
    let b = hub.send_to_player("nobody", &message());
    assert_ne!(a.id, b.id);
    assert!(a.id.starts_with(&format!("{}-", hub.epoch())));
    assert_eq!(a.delivered, 0);
}

#[tokio::test]
async fn shutdown_ends_connections_and_waits_for_their_guards() {
    let hub = Hub::new();
    let (guard, _outbox) = hub
        .register(Registration::new("dave", ConnectionKind::WebSocket))
        .unwrap();
    let done = hub.shutdown();
    assert_eq!(guard.end_reason(), Some(DisconnectReason::ServerShutdown));
    assert_eq!(
        hub.register(Registration::new("erin", ConnectionKind::Sse))
            .unwrap_err(),
        RegisterError::ShuttingDown
    );
    let mut waiter = tokio::spawn(done);
    let early = tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiter).await;
    assert!(early.is_err(), "shutdown waits while a guard lives");
    drop(guard);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
}

/// `shutdown` promises to resolve once every guard is dropped, however long that takes
/// (the caller bounds it): not after some delay of its own.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_guard_held_for_an_hour_and_resolves_once_it_is_dropped() {
    use std::time::Duration;
    let hub = Hub::new();
    let (guard, _outbox) = hub
        .register(Registration::new("fay", ConnectionKind::Sse))
        .unwrap();
    let shutdown = hub.shutdown();
    tokio::pin!(shutdown);
    // The paused clock jumps to each timer as soon as nothing else can run: a shutdown
    // that merely waited would be over long before the hour.
    let early = tokio::time::timeout(Duration::from_secs(3600), &mut shutdown).await;
    assert!(early.is_err(), "shutdown resolved while a guard lives");
    assert_eq!(guard.end_reason(), Some(DisconnectReason::ServerShutdown));
    drop(guard);
    tokio::time::timeout(Duration::from_secs(1), &mut shutdown)
        .await
        .expect("shutdown resolves once the last guard is dropped");
    assert_eq!(hub.connection_count(), 0);
}

#[test]
fn disconnect_player_ends_every_connection_of_the_player_with_the_reason_and_no_other() {
    let hub = Hub::new();
    let (ws, _ws_outbox) = hub
        .register(Registration::new("gus", ConnectionKind::WebSocket))
        .unwrap();
    let (sse, _sse_outbox) = hub
        .register(Registration::new("gus", ConnectionKind::Sse))
        .unwrap();
    let (other, _other_outbox) = hub
        .register(Registration::new("hal", ConnectionKind::Sse))
        .unwrap();
    assert_eq!(hub.disconnect_player("gus", DisconnectReason::Logout), 2);
    assert_eq!(ws.end_reason(), Some(DisconnectReason::Logout));
    assert_eq!(sse.end_reason(), Some(DisconnectReason::Logout));
    assert_eq!(other.end_reason(), None);
    assert_eq!(
        hub.disconnect_player("gus", DisconnectReason::Logout),
        0,
        "an ending connection is not ended twice"
    );
    assert_eq!(hub.disconnect_player("nobody", DisconnectReason::Logout), 0);
}

#[tokio::test(start_paused = true)]
async fn the_hub_ends_a_connection_at_its_credential_deadline_and_not_before() {
    use std::time::Duration;
    use tokio::time::Instant;
    let hub = Hub::new();
    let start = Instant::now();
    let (late, _late_outbox) = hub
        .register(
            Registration::new("ida", ConnectionKind::Sse)
                .credential_deadline(start + Duration::from_secs(60)),
        )
        .unwrap();
    let (early, _early_outbox) = hub
        .register(
            Registration::new("ida", ConnectionKind::WebSocket)
                .credential_deadline(start + Duration::from_secs(10)),
        )
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(30), ended(&early))
        .await
        .expect("the earlier deadline, registered second, ends its connection");
    assert_eq!(reason, DisconnectReason::AuthExpired);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(late.end_reason(), None, "the other one has time left");
    let reason = tokio::time::timeout(Duration::from_secs(60), ended(&late))
        .await
        .unwrap();
    assert_eq!(reason, DisconnectReason::AuthExpired);
    assert_eq!(start.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_leaves_before_its_deadline_leaves_nothing_behind() {
    use std::time::Duration;
    let hub = Hub::new();
    for _ in 0..100 {
        let (guard, _outbox) = hub
            .register(
                Registration::new("jo", ConnectionKind::Sse)
                    .credential_deadline(tokio::time::Instant::now() + Duration::from_secs(3600)),
            )
            .unwrap();
        drop(guard);
    }
    assert_eq!(
        hub.read().deadlines.len(),
        0,
        "deadlines are kept for live connections only"
    );
}

#[test]
fn a_deadline_outside_a_runtime_is_refused_rather_than_ignored() {
    let hub = Hub::new();
    let deadline = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async { tokio::time::Instant::now() })
    };
    let refused = hub
        .register(Registration::new("kim", ConnectionKind::Sse).credential_deadline(deadline))
        .unwrap_err();
    assert_eq!(refused, RegisterError::NoRuntime);
    assert_eq!(hub.connection_count(), 0);
}

#[test]
fn the_leases_end_after_the_connection_left_the_hub() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Lease(Hub, Arc<AtomicUsize>);
    impl Drop for Lease {
        fn drop(&mut self) {
            // What the hub holds when the lease ends: the connection is gone already.
            self.1
                .store(self.0.connection_count() + 1, Ordering::SeqCst);
        }
    }
    let hub = Hub::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let mut leases = dualcast_layers::OwnedLeases::default();
    leases.push(Lease(hub.clone(), seen.clone()));
    let (guard, _outbox) = hub
        .register(Registration::new("lee", ConnectionKind::Sse).leases(leases))
        .unwrap();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "held while the connection lives"
    );
    drop(guard);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "dropped with zero connections left"
    );
}

/// Resolves with the reason once `guard`'s connection is ended.
async fn ended(guard: &ConnectionGuard) -> DisconnectReason {
    std::future::poll_fn(|cx| guard.poll_end(cx)).await
}

/// Memory per connection is a design constraint: the guard each WebSocket task and SSE
/// body holds is the hub, the connection, the leases (one word each) and the credential
/// deadline; and the connection record every delivery reads stays within 224 bytes (with
/// its reference counts, one 240-byte allocation at most): 104 before heartbeats and
/// inbound limits, which added the tokio-clock origin (16), the last ping (8), the
/// inbound budget with its lock and the in-flight count (24); then the outbox's queue moved
/// in (72 bytes for its lock, its `VecDeque`, its reader's waker and its bound, against
/// the 8-byte handle of a tokio channel whose own allocation, with its first block of
/// slots, was several hundred bytes more per connection).
#[test]
fn a_connection_guard_and_record_stay_small() {
    assert_eq!(
        std::mem::size_of::<ConnectionGuard>(),
        3 * std::mem::size_of::<usize>() + std::mem::size_of::<Option<tokio::time::Instant>>()
    );
    let record = std::mem::size_of::<crate::connection::Connection>();
    assert!(record <= 224, "the connection record is {record} bytes");
}

#[test]
fn a_keeper_whose_runtime_shut_down_is_started_again_on_the_next_runtime() {
    use std::time::Duration;
    let hub = Hub::new();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    first.block_on(async {
        let (_guard, _outbox) = hub
            .register(
                Registration::new("max", ConnectionKind::Sse)
                    .credential_deadline(tokio::time::Instant::now() + Duration::from_secs(3600)),
            )
            .unwrap();
    });
    drop(first); // the keeper's runtime is gone, and the keeper with it
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        let (guard, _outbox) = hub
            .register(
                Registration::new("max", ConnectionKind::WebSocket)
                    .credential_deadline(tokio::time::Instant::now() + Duration::from_secs(1)),
            )
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(60), ended(&guard))
            .await
            .expect("a keeper on this runtime ends it");
        assert_eq!(reason, DisconnectReason::AuthExpired);
    });
}

/// SPEC §4's bounds: messages published to players who never connect hold memory to the
/// hub-wide totals, whatever the volume, and the counted totals match what the mailboxes
/// hold; once the players' grace and state TTL pass, everything is released.
#[tokio::test(start_paused = true)]
async fn publishing_to_players_who_never_connect_holds_memory_to_the_bounds() {
    let delivery = DeliverySettings::new()
        .replay_count(5)
        .replay_total(800)
        .pending_count(3)
        .pending_total(500)
        .awaiting_total(50);
    let hub = Hub::with_settings(HubSettings::default().delivery(delivery));
    let mut queued = 0;
    for n in 0..20_000 {
        let player = format!("never-{}", n % 10_000);
        let message = message().with_ack(n % 7 == 0);
        queued += usize::from(hub.send_to_player(&player, &message).queued);
        if n % 1_000 == 0 {
            queued += hub.broadcast_global(&message, &[]).queued_for.unwrap_or(0);
        }
    }
    assert_eq!(queued, 500, "the hub's pending total bounds what is queued");
    let (players, held) = {
        let registry = hub.read();
        let mut held = (0, 0, 0);
        for player in registry.players.values() {
            let counts = player.mailbox.lock().unwrap().counts();
            held = (held.0 + counts.0, held.1 + counts.1, held.2 + counts.2);
        }
        (registry.players.len(), held)
    };
    assert!(players <= 500, "{players} player entries for 500 queued");
    assert_eq!(
        held,
        hub.inner.totals.counts(),
        "the totals count what is held"
    );
    assert!(held.0 <= 800 && held.1 <= 500 && held.2 <= 50, "{held:?}");

    let idle = hub.inner.settings.presence_grace + hub.inner.settings.state_ttl;
    tokio::time::sleep(idle + Duration::from_secs(2)).await;
    poll_until_released(&hub).await;
}

/// Waits (on the paused clock) until the keeper has forgotten every player.
async fn poll_until_released(hub: &Hub) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !hub.read().players.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
    .expect("every idle player forgotten");
    assert_eq!(hub.inner.totals.counts(), (0, 0, 0));
}

/// The resend queue holds one entry per player awaiting acks, however many messages it
/// awaits: it grew by one per publish (and each entry rescheduled itself) before.
#[tokio::test(start_paused = true)]
async fn the_resend_queue_grows_with_players_not_with_publishes() {
    let hub = Hub::new();
    let (_guard, mut outbox) = hub
        .register(Registration::new("alice", ConnectionKind::WebSocket))
        .unwrap();
    for _ in 0..50 {
        let report = hub.send_to_player("alice", &message().with_ack(true));
        assert_eq!(report.awaiting_ack, Some(1));
    }
    let queued = || hub.inner.resends.lock().unwrap().len();
    assert_eq!(queued(), 1);
    // Two rounds of resends: still one entry, and each message resent each round.
    let retry = DeliverySettings::default().ack_retry;
    for round in 1..=2 {
        tokio::time::sleep(retry * round + Duration::from_millis(1)).await;
        let mut resent = 0;
        tokio::time::timeout(Duration::from_secs(1), async {
            while resent < 100 {
                if outbox.recv().await.is_some() {
                    resent += 1;
                }
            }
        })
        .await
        .ok();
        assert!(resent >= 50, "round {round}: {resent} frames");
        assert_eq!(queued(), 1, "round {round}");
    }
}

/// A client acks every message the server asked it to, however many: settling acks give
/// their rate token back (a flood of 30 acks on a 1/s, burst 2 budget was refused, and
/// would have ended the connection), while acks of nothing still cost one.
#[tokio::test(start_paused = true)]
async fn acks_of_awaited_messages_do_not_count_against_the_rate_limit() {
    use crate::inbound::InboundSettings;
    use crate::inbound::Transport;
    let settings = HubSettings::default().inbound(InboundSettings::new().rate(1, 2));
    let hub = Hub::with_settings(settings);
    let (guard, mut outbox) = hub
        .register(Registration::new("alice", ConnectionKind::WebSocket))
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(hub.send_to_player("alice", &message().with_ack(true)).id);
    }
    while outbox.try_recv().is_some() {}
    let ack = |id: &str| {
        let text = json!({"type": "ack", "data": {"id": id}}).to_string();
        let received = hub.receive(
            guard.connection(),
            Content::Text(&text),
            Transport::WebSocket,
        );
        matches!(received, Received::Taken)
    };
    for id in &ids {
        assert!(ack(id), "the ack of {id} was refused");
    }
    let awaiting = hub.read().players["alice"]
        .mailbox
        .lock()
        .unwrap()
        .counts()
        .2;
    assert_eq!(awaiting, 0, "every message acked");
    // Acks of nothing are rate limited like any message.
    let refused = (0..5).filter(|_| !ack("none-1")).count();
    assert!(refused >= 3, "{refused} of 5 acks of nothing refused");
}

/// An id older than the replay age is gone even when nothing newer pushed it out: the
/// resume is answered `complete: false` (it was replayed as complete before).
#[tokio::test(start_paused = true)]
async fn a_resume_from_beyond_the_replay_age_is_incomplete() {
    let delivery = DeliverySettings::new()
        .replay_age(Duration::from_secs(60))
        .message_ttl(Duration::from_secs(3600));
    let hub = Hub::with_settings(HubSettings::default().delivery(delivery));
    let recovery_after = |wait: Duration, last: &str| {
        let hub = hub.clone();
        let last = last.to_owned();
        async move {
            tokio::time::sleep(wait).await;
            let (_guard, mut outbox) = hub
                .register(Registration::new("alice", ConnectionKind::Sse).last_event_id(last))
                .unwrap();
            let frame = outbox.try_recv().expect("the recovery event");
            let envelope: serde_json::Value = serde_json::from_str(frame.json()).unwrap();
            assert_eq!(envelope["type"], "recovery");
            envelope["data"]["complete"].as_bool().unwrap()
        }
    };
    let (guard, _outbox) = hub
        .register(Registration::new("alice", ConnectionKind::Sse))
        .unwrap();
    let last = hub.send_to_player("alice", &message()).id;
    drop(guard);
    assert!(recovery_after(Duration::from_secs(30), &last).await);
    assert!(!recovery_after(Duration::from_secs(31), &last).await);
}
