//! Tests of the delivery guarantees at the hub: the replay buffer, the pending queue and
//! acknowledgements (unit tests and a property test of the state machine).
//!
//! Timers run on tokio's paused clock: a test sleeps (which auto-advances to the next timer,
//! so the hub's keeper resends exactly when due) and bounds every wait with a timeout.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use dualcast_layers::metrics::Observer;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::*;
use crate::connection::ConnectionKind;
use crate::message::{Frame, Message};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn hub_with(delivery: DeliverySettings) -> Hub {
    Hub::with_settings(HubSettings::new().delivery(delivery))
}

fn numbered(n: u64) -> Message {
    Message::json("note", json!({ "n": n }))
}

fn connect(hub: &Hub, player: &str, kind: ConnectionKind) -> (ConnectionGuard, Outbox) {
    hub.register(Registration::new(player, kind))
        .expect("registered")
}

fn resume(hub: &Hub, player: &str, last_event_id: &str) -> (ConnectionGuard, Outbox) {
    hub.register(Registration::new(player, ConnectionKind::Sse).last_event_id(last_event_id))
        .expect("registered")
}

/// Everything the outbox holds now, without waiting.
fn drain(outbox: &mut Outbox) -> Vec<Frame> {
    std::iter::from_fn(|| outbox.try_recv()).collect()
}

/// `(complete, replayed)` if `frame` is a `recovery` event.
fn recovery(frame: &Frame) -> Option<(bool, u64)> {
    let envelope: serde_json::Value = serde_json::from_str(frame.json()).expect("an envelope");
    (envelope["type"] == "recovery").then(|| {
        (
            envelope["data"]["complete"].as_bool().expect("complete"),
            envelope["data"]["replayed"].as_u64().expect("replayed"),
        )
    })
}

fn ids(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(Frame::id).collect()
}

/// The ids of the frames that are not `recovery` events.
fn message_ids(frames: &[Frame]) -> Vec<&str> {
    frames
        .iter()
        .filter(|f| recovery(f).is_none())
        .map(Frame::id)
        .collect()
}

fn report_ids(reports: &[&DeliveryReport]) -> Vec<String> {
    reports.iter().map(|r| r.id.to_string()).collect()
}

/// The acknowledgement waits that ended so far: (message id, player, outcome, resent).
fn settlements(
    events: &mut broadcast::Receiver<HubEvent>,
) -> Vec<(String, String, AckOutcome, u32)> {
    let mut settled = Vec::new();
    loop {
        match events.try_recv() {
            Ok(HubEvent::AckSettled {
                message_id,
                player_id,
                outcome,
                resent,
            }) => settled.push((
                message_id.to_string(),
                player_id.to_string(),
                outcome,
                resent,
            )),
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Empty) => return settled,
            Err(error) => panic!("events: {error}"),
        }
    }
}

/// The next frame within `within` (of the paused clock).
async fn next_frame(outbox: &mut Outbox, within: Duration) -> Option<Frame> {
    tokio::time::timeout(within, outbox.recv())
        .await
        .ok()
        .flatten()
}

/// What the hub tells its observer about pending queues, resends and acknowledgements.
#[derive(Debug, Default)]
struct Counts {
    pending_expired: AtomicU64,
    pending_overflow: AtomicU64,
    resent: AtomicU64,
    acked: AtomicU64,
    expired: AtomicU64,
    dropped: AtomicU64,
    complete: AtomicU64,
    incomplete: AtomicU64,
}

impl Counts {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(AtomicOrdering::Relaxed)
    }
}

struct Counting(Arc<Counts>);

impl Observer for Counting {
    fn pending_dropped(&self, reason: &'static str, count: u64) {
        match reason {
            "expired" => &self.0.pending_expired,
            "overflow" => &self.0.pending_overflow,
            other => panic!("unknown pending drop reason {other}"),
        }
        .fetch_add(count, AtomicOrdering::Relaxed);
    }

    fn recovered(&self, complete: bool, _replayed: u64) {
        if complete {
            &self.0.complete
        } else {
            &self.0.incomplete
        }
        .fetch_add(1, AtomicOrdering::Relaxed);
    }

    fn ack_settled(&self, outcome: &'static str) {
        match outcome {
            "acked" => &self.0.acked,
            "expired" => &self.0.expired,
            "dropped" => &self.0.dropped,
            other => panic!("unknown ack outcome {other}"),
        }
        .fetch_add(1, AtomicOrdering::Relaxed);
    }

    fn resent(&self, count: u64) {
        self.0.resent.fetch_add(count, AtomicOrdering::Relaxed);
    }
}

/// A hub reporting to the returned counts.
fn counted_hub(settings: HubSettings) -> (Hub, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    (settings.observer(Counting(counts.clone())).build(), counts)
}

// ---------------------------------------------------------------------------------------
// Replay and recovery
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_resume_after_a_known_id_replays_the_later_messages_in_order_then_a_complete_recovery() {
    let hub = hub_with(DeliverySettings::new());
    let (_live, mut live_outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let reports: Vec<_> = (0..5)
        .map(|n| hub.send_to_player("alice", &numbered(n)))
        .collect();
    hub.send_to_player("bob", &numbered(99)); // not alice's: never replayed to her
    let live = drain(&mut live_outbox);
    assert_eq!(
        message_ids(&live),
        report_ids(&reports.iter().collect::<Vec<_>>())
    );

    let (_resumed, mut outbox) = resume(&hub, "alice", &reports[1].id);
    let frames = drain(&mut outbox);
    assert_eq!(
        frames.len(),
        4,
        "three replayed, then the recovery: {frames:?}"
    );
    assert_eq!(
        ids(&frames[..3]),
        report_ids(&reports[2..].iter().collect::<Vec<_>>())
    );
    for (replayed, sent) in frames[..3].iter().zip(&live[2..]) {
        assert!(
            replayed.same(sent),
            "the very bytes of the publish are replayed"
        );
    }
    assert_eq!(recovery(&frames[3]), Some((true, 3)));
    let sse = std::str::from_utf8(frames[3].sse_event()).unwrap();
    assert!(
        sse.starts_with("event: recovery\n") && !sse.contains("id:"),
        "the recovery event leaves Last-Event-ID alone: {sse}"
    );

    // Resuming from the newest: nothing to replay, and complete.
    let (_newest, mut newest_outbox) = resume(&hub, "alice", &reports[4].id);
    let frames = drain(&mut newest_outbox);
    assert_eq!(frames.len(), 1);
    assert_eq!(recovery(&frames[0]), Some((true, 0)));

    // Live messages come after the catch-up, once on each connection.
    let later = hub.send_to_player("alice", &numbered(5));
    assert_eq!(later.delivered, 3);
    assert_eq!(ids(&drain(&mut outbox)), [&*later.id]);
    assert_eq!(ids(&drain(&mut newest_outbox)), [&*later.id]);
    assert_eq!(ids(&drain(&mut live_outbox)), [&*later.id]);
}

#[tokio::test(start_paused = true)]
async fn a_resume_from_an_id_evicted_by_the_replay_count_is_incomplete() {
    let (hub, counts) =
        counted_hub(HubSettings::new().delivery(DeliverySettings::new().replay_count(3)));
    let (_live, _live_outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let reports: Vec<_> = (0..5)
        .map(|n| hub.send_to_player("alice", &numbered(n)))
        .collect();
    // The buffer holds the last three (2, 3, 4).
    for evicted in &reports[..2] {
        let (_guard, mut outbox) = resume(&hub, "alice", &evicted.id);
        let frames = drain(&mut outbox);
        assert_eq!(frames.len(), 1, "nothing replayed: {frames:?}");
        assert_eq!(recovery(&frames[0]), Some((false, 0)));
    }
    let (_guard, mut outbox) = resume(&hub, "alice", &reports[2].id);
    let frames = drain(&mut outbox);
    assert_eq!(
        message_ids(&frames),
        report_ids(&[&reports[3], &reports[4]])
    );
    assert_eq!(recovery(frames.last().unwrap()), Some((true, 2)));
    assert_eq!(Counts::get(&counts.incomplete), 2);
    assert_eq!(Counts::get(&counts.complete), 1);
}

#[tokio::test(start_paused = true)]
async fn a_resume_from_another_epoch_or_a_garbage_id_is_incomplete() {
    let hub = hub_with(DeliverySettings::new());
    let (_live, _live_outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
    hub.send_to_player("alice", &numbered(0));
    let bobs = hub.send_to_player("bob", &numbered(1));
    let epoch = hub.epoch().to_owned();
    let unknown = [
        "otherepoch-5".to_owned(),
        "garbage".to_owned(),
        String::new(),
        format!("{epoch}-"),
        format!("{epoch}-x1"),
        format!("{epoch}-999999"), // of this epoch, never issued
        format!("-{epoch}-1"),
        bobs.id.to_string(), // another player's message
    ];
    for id in unknown {
        let (_guard, mut outbox) = resume(&hub, "alice", &id);
        let frames = drain(&mut outbox);
        assert_eq!(frames.len(), 1, "resume from {id:?}: {frames:?}");
        assert_eq!(recovery(&frames[0]), Some((false, 0)), "resume from {id:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn messages_older_than_the_replay_age_are_evicted_when_a_newer_one_is_kept() {
    let hub = hub_with(DeliverySettings::new().replay_age(Duration::from_secs(10)));
    let (_live, _live_outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let first = hub.send_to_player("alice", &numbered(0));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let second = hub.send_to_player("alice", &numbered(1));
    tokio::time::sleep(Duration::from_secs(4)).await;
    // 10 s after the first: not older than the age yet.
    let third = hub.send_to_player("alice", &numbered(2));
    let (_g, mut outbox) = resume(&hub, "alice", &first.id);
    let frames = drain(&mut outbox);
    assert_eq!(message_ids(&frames), report_ids(&[&second, &third]));
    assert_eq!(recovery(frames.last().unwrap()), Some((true, 2)));

    tokio::time::sleep(Duration::from_secs(2)).await;
    // 12 s after the first, 6 after the second: the first goes.
    let fourth = hub.send_to_player("alice", &numbered(3));
    let (_g, mut outbox) = resume(&hub, "alice", &first.id);
    assert_eq!(
        drain(&mut outbox).iter().map(recovery).collect::<Vec<_>>(),
        [Some((false, 0))]
    );
    let (_g, mut outbox) = resume(&hub, "alice", &second.id);
    let frames = drain(&mut outbox);
    assert_eq!(message_ids(&frames), report_ids(&[&third, &fourth]));
    assert_eq!(recovery(frames.last().unwrap()), Some((true, 2)));
}

#[tokio::test(start_paused = true)]
async fn a_replay_skips_messages_whose_ttl_ended() {
    let hub = hub_with(DeliverySettings::new());
    let (_live, _live_outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let from = hub.send_to_player("alice", &numbered(0));
    let short = hub.send_to_player("alice", &numbered(1).with_ttl(Duration::from_secs(1)));
    let kept = hub.send_to_player("alice", &numbered(2));
    let (_g, mut outbox) = resume(&hub, "alice", &from.id);
    assert_eq!(
        message_ids(&drain(&mut outbox)),
        report_ids(&[&short, &kept]),
        "within its TTL it is replayed"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_g, mut outbox) = resume(&hub, "alice", &from.id);
    let frames = drain(&mut outbox);
    assert_eq!(message_ids(&frames), report_ids(&[&kept]));
    assert_eq!(recovery(frames.last().unwrap()), Some((true, 1)));
}

// ---------------------------------------------------------------------------------------
// The pending queue
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_player_without_a_live_connection_gets_its_queue_on_the_next_connect_higher_priority_first(
) {
    for state in ["in its grace", "offline", "never seen"] {
        let hub = Hub::builder()
            .presence_grace(Duration::from_secs(10))
            .state_ttl(Duration::from_secs(600))
            .build();
        match state {
            "in its grace" => {
                drop(connect(&hub, "alice", ConnectionKind::Sse));
                assert_eq!(hub.presence("alice"), Presence::Reconnecting);
            }
            "offline" => {
                drop(connect(&hub, "alice", ConnectionKind::Sse));
                tokio::time::sleep(Duration::from_secs(11)).await;
                assert_eq!(hub.presence("alice"), Presence::Offline);
            }
            _ => assert!(!hub.read().players.contains_key("alice")),
        }
        let reports: Vec<_> = [0, 5, 0, 5, -1]
            .into_iter()
            .enumerate()
            .map(|(n, priority)| {
                hub.send_to_player("alice", &numbered(n as u64).with_priority(priority))
            })
            .collect();
        for report in &reports {
            assert!(report.queued, "{state}: {report:?}");
            assert_eq!((report.delivered, report.failed), (0, 0), "{state}");
        }
        let (_g, mut outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
        assert_eq!(
            ids(&drain(&mut outbox)),
            report_ids(&[
                &reports[1],
                &reports[3],
                &reports[0],
                &reports[2],
                &reports[4]
            ]),
            "{state}: higher priority first, publish order within one"
        );
        let (_g2, mut second) = connect(&hub, "alice", ConnectionKind::Sse);
        assert!(
            drain(&mut second).is_empty(),
            "{state}: the queue went to the first connect"
        );
        let live = hub.send_to_player("alice", &numbered(9));
        assert!(!live.queued, "{state}");
        assert_eq!(ids(&drain(&mut outbox)), [&*live.id], "{state}");
        assert_eq!(ids(&drain(&mut second)), [&*live.id], "{state}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_pending_message_past_its_ttl_is_dropped_and_counted_not_delivered() {
    let (hub, counts) = counted_hub(HubSettings::new());
    let short = hub.send_to_player("alice", &numbered(0).with_ttl(Duration::from_secs(1)));
    let kept = hub.send_to_player("alice", &numbered(1));
    assert!(short.queued && kept.queued);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_g, mut outbox) = connect(&hub, "alice", ConnectionKind::Sse);
    assert_eq!(ids(&drain(&mut outbox)), [&*kept.id]);
    assert_eq!(Counts::get(&counts.pending_expired), 1);
    assert_eq!(Counts::get(&counts.pending_overflow), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_pending_queue_drops_its_lowest_priority_oldest_first() {
    let (hub, counts) =
        counted_hub(HubSettings::new().delivery(DeliverySettings::new().pending_count(3)));
    let send = |n, priority| hub.send_to_player("alice", &numbered(n).with_priority(priority));
    let p0 = send(0, 1);
    let _p1 = send(1, 0); // evicted below
    let _p2 = send(2, 0); // evicted below
    let p3 = send(3, 2); // full: p1 (lowest, oldest) goes
    assert!(p3.queued);
    let p4 = send(4, -1); // below every queued one: not queued
    assert!(!p4.queued, "{p4:?}");
    let p5 = send(5, 0); // as low as the lowest: the oldest of it (p2) goes
    assert!(p5.queued);
    assert_eq!(Counts::get(&counts.pending_overflow), 3);
    let (_g, mut outbox) = connect(&hub, "alice", ConnectionKind::Sse);
    assert_eq!(ids(&drain(&mut outbox)), report_ids(&[&p3, &p0, &p5]));
}

#[tokio::test(start_paused = true)]
async fn the_pending_total_bounds_the_queues_of_all_players_together() {
    let (hub, counts) = counted_hub(
        HubSettings::new().delivery(DeliverySettings::new().pending_count(10).pending_total(3)),
    );
    let a1 = hub.send_to_player("alice", &numbered(1));
    let a2 = hub.send_to_player("alice", &numbered(2));
    let b1 = hub.send_to_player("bob", &numbered(3));
    assert!(a1.queued && a2.queued && b1.queued);
    let b2 = hub.send_to_player("bob", &numbered(4));
    assert!(!b2.queued, "the hub holds three already: {b2:?}");
    let c1 = hub.send_to_player("carol", &numbered(5));
    assert!(!c1.queued, "not for a player never seen either: {c1:?}");
    assert_eq!(Counts::get(&counts.pending_overflow), 2);

    let (_a, mut alice) = connect(&hub, "alice", ConnectionKind::Sse);
    assert_eq!(ids(&drain(&mut alice)), report_ids(&[&a1, &a2]));
    // Alice's delivery made room.
    let b3 = hub.send_to_player("bob", &numbered(6));
    assert!(b3.queued);
    let (_b, mut bob) = connect(&hub, "bob", ConnectionKind::WebSocket);
    assert_eq!(ids(&drain(&mut bob)), report_ids(&[&b1, &b3]));
    let (_c, mut carol) = connect(&hub, "carol", ConnectionKind::WebSocket);
    assert!(drain(&mut carol).is_empty());
}

// ---------------------------------------------------------------------------------------
// Acknowledgements
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_message_asking_for_an_ack_is_resent_with_backoff_to_every_live_connection_until_acked() {
    let (hub, counts) = counted_hub(
        HubSettings::new().delivery(
            DeliverySettings::new()
                .ack_retry(Duration::from_secs(1))
                .ack_retry_max(Duration::from_secs(4))
                .message_ttl(Duration::from_secs(600)),
        ),
    );
    let mut events = hub.subscribe();
    let (ws, mut ws_out) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let (_sse, mut sse_out) = connect(&hub, "alice", ConnectionKind::Sse);
    let (_bob, mut bob_out) = connect(&hub, "bob", ConnectionKind::WebSocket);
    let start = Instant::now();
    let report = hub.send_to_player("alice", &numbered(1).with_ack(true));
    assert_eq!(report.awaiting_ack, Some(1));
    let id = &*report.id;
    assert_eq!(ids(&drain(&mut ws_out)), [id]);
    assert_eq!(ids(&drain(&mut sse_out)), [id]);

    let mut late: Option<(ConnectionGuard, Outbox)> = None;
    let mut resent_at = Vec::new();
    for resend in 1..=5 {
        let frame = next_frame(&mut ws_out, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("resend {resend} came"));
        assert_eq!(frame.id(), id);
        resent_at.push(start.elapsed());
        assert_eq!(
            ids(&drain(&mut sse_out)),
            [id],
            "resend {resend} reached SSE too"
        );
        if let Some((_, outbox)) = late.as_mut() {
            assert_eq!(
                ids(&drain(outbox)),
                [id],
                "resend {resend} reached the late one"
            );
        }
        if resend == 2 {
            // A connection opened while it awaits its ack gets it at once.
            let (guard, mut outbox) = connect(&hub, "alice", ConnectionKind::Sse);
            assert_eq!(ids(&drain(&mut outbox)), [id]);
            late = Some((guard, outbox));
        }
    }
    let secs = |s: &[u64]| {
        s.iter()
            .map(|&s| Duration::from_secs(s))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        resent_at,
        secs(&[1, 3, 7, 11, 15]),
        "after 1 s, then doubling up to 4 s"
    );
    assert!(
        drain(&mut bob_out).is_empty(),
        "another player gets none of it"
    );
    assert!(settlements(&mut events).is_empty());
    assert_eq!(Counts::get(&counts.resent), 5);

    hub.acknowledge(ws.connection(), id);
    assert_eq!(
        settlements(&mut events),
        [(id.to_owned(), "alice".to_owned(), AckOutcome::Acked, 5)]
    );
    assert!(
        next_frame(&mut ws_out, Duration::from_secs(120))
            .await
            .is_none(),
        "no resend after the ack"
    );
    assert!(drain(&mut sse_out).is_empty());
    assert!(drain(&mut late.as_mut().unwrap().1).is_empty());
    // A second ack of the same id does nothing.
    hub.acknowledge(ws.connection(), id);
    assert!(settlements(&mut events).is_empty());
    assert_eq!(Counts::get(&counts.acked), 1);
    assert_eq!(Counts::get(&counts.resent), 5);
}

#[tokio::test(start_paused = true)]
async fn an_awaited_message_whose_ttl_ends_stops_being_resent_and_settles_as_expired() {
    let (hub, counts) = counted_hub(
        HubSettings::new().delivery(
            DeliverySettings::new()
                .ack_retry(Duration::from_secs(1))
                .ack_retry_max(Duration::from_secs(4)),
        ),
    );
    let mut events = hub.subscribe();
    let (_a, mut outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let start = Instant::now();
    let report = hub.send_to_player(
        "alice",
        &numbered(1).with_ack(true).with_ttl(Duration::from_secs(5)),
    );
    let id = report.id.to_string();
    assert_eq!(ids(&drain(&mut outbox)), [&*id]);
    for at in [1, 3] {
        let frame = next_frame(&mut outbox, Duration::from_secs(30))
            .await
            .expect("resent");
        assert_eq!(
            (frame.id(), start.elapsed()),
            (&*id, Duration::from_secs(at))
        );
    }
    let settled = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let HubEvent::AckSettled {
                message_id,
                player_id,
                outcome,
                resent,
            } = events.recv().await.expect("events")
            {
                return (
                    message_id.to_string(),
                    player_id.to_string(),
                    outcome,
                    resent,
                );
            }
        }
    })
    .await
    .expect("the wait ended");
    assert_eq!(
        settled,
        (id.clone(), "alice".to_owned(), AckOutcome::Expired, 2)
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(5),
        "at the end of its TTL"
    );
    assert!(
        next_frame(&mut outbox, Duration::from_secs(120))
            .await
            .is_none(),
        "no resend after its TTL"
    );
    let (_b, mut fresh) = connect(&hub, "alice", ConnectionKind::Sse);
    assert!(drain(&mut fresh).is_empty(), "nor to a new connection");
    assert_eq!(Counts::get(&counts.expired), 1);
    assert_eq!(Counts::get(&counts.resent), 2);
}

#[tokio::test(start_paused = true)]
async fn an_ack_by_another_players_connection_touches_only_that_players_wait() {
    let hub = hub_with(
        DeliverySettings::new()
            .ack_retry(Duration::from_secs(1))
            .ack_retry_max(Duration::from_secs(1)),
    );
    let mut events = hub.subscribe();
    hub.join_room("alice", "lobby");
    hub.join_room("bob", "lobby");
    let (alice, mut alice_out) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let (bob, mut bob_out) = connect(&hub, "bob", ConnectionKind::Sse);
    let room = hub.broadcast_to_room("lobby", &numbered(1).with_ack(true), &[]);
    assert_eq!(room.awaiting_ack, Some(2));
    let direct = hub.send_to_player("alice", &numbered(2).with_ack(true));
    assert_eq!(ids(&drain(&mut alice_out)), [&*room.id, &*direct.id]);
    assert_eq!(ids(&drain(&mut bob_out)), [&*room.id]);

    hub.acknowledge(bob.connection(), &room.id);
    assert_eq!(
        settlements(&mut events),
        [(room.id.to_string(), "bob".to_owned(), AckOutcome::Acked, 0)],
        "bob's ack ends bob's wait only"
    );
    hub.acknowledge(bob.connection(), &direct.id);
    assert!(
        settlements(&mut events).is_empty(),
        "alice's message is not bob's to ack"
    );

    let first = next_frame(&mut alice_out, Duration::from_secs(30))
        .await
        .expect("resent");
    let mut resent = vec![first];
    resent.extend(drain(&mut alice_out));
    assert_eq!(
        ids(&resent),
        [&*room.id, &*direct.id],
        "alice still waits on both"
    );
    assert!(
        drain(&mut bob_out).is_empty(),
        "bob acked: nothing resent to him"
    );

    hub.acknowledge(alice.connection(), &room.id);
    hub.acknowledge(alice.connection(), &direct.id);
    let mut settled = settlements(&mut events);
    settled.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut expected = vec![
        (
            room.id.to_string(),
            "alice".to_owned(),
            AckOutcome::Acked,
            1,
        ),
        (
            direct.id.to_string(),
            "alice".to_owned(),
            AckOutcome::Acked,
            1,
        ),
    ];
    expected.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(settled, expected);
    assert!(next_frame(&mut alice_out, Duration::from_secs(60))
        .await
        .is_none());
    assert!(drain(&mut bob_out).is_empty());
}

// ---------------------------------------------------------------------------------------
// The replay/live boundary
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_resume_gets_each_message_once_where_replay_pending_and_awaiting_overlap() {
    let hub = hub_with(DeliverySettings::new());
    let (first_guard, mut first_outbox) = connect(&hub, "alice", ConnectionKind::Sse);
    let seen = hub.send_to_player("alice", &numbered(0));
    assert_eq!(ids(&drain(&mut first_outbox)), [&*seen.id]);
    drop((first_guard, first_outbox));
    // Both queued and in the replay buffer; the second awaits its ack as well.
    let queued = hub.send_to_player("alice", &numbered(1));
    let awaited = hub.send_to_player("alice", &numbered(2).with_ack(true));
    assert!(queued.queued && awaited.queued);
    let (_g, mut outbox) = resume(&hub, "alice", &seen.id);
    // Published just after the register: live, after the catch-up.
    let after = hub.send_to_player("alice", &numbered(3));
    let frames = drain(&mut outbox);
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(
        message_ids(&frames),
        report_ids(&[&queued, &awaited, &after])
    );
    assert_eq!(recovery(&frames[2]), Some((true, 2)));
}

/// A publisher thread sends to a player while another connection of the player resumes
/// from one of its messages: every later message comes exactly once, in order, whether by
/// the replay or live.
#[test]
fn a_resume_while_another_thread_publishes_gets_each_later_message_once_and_in_order() {
    const MESSAGES: usize = 300;
    for round in 0..20 {
        let hub = Hub::with_settings(
            HubSettings::new()
                .outbox_capacity(4 * MESSAGES)
                .delivery(DeliverySettings::new().replay_count(4 * MESSAGES)),
        );
        // Keeps the player live: every message is delivered and kept for replay.
        let (_live, _live_outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
        let (sender, published) = std::sync::mpsc::channel::<Arc<str>>();
        let publisher = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for n in 0..MESSAGES {
                    let report = hub.send_to_player("alice", &numbered(n as u64));
                    if sender.send(report.id).is_err() {
                        return;
                    }
                }
            })
        };
        let from = 5 + round * 13;
        let mut ids_sent = Vec::new();
        while ids_sent.len() <= from {
            ids_sent.push(
                published
                    .recv_timeout(Duration::from_secs(30))
                    .expect("the publisher is publishing"),
            );
        }
        let (_g, mut outbox) = resume(&hub, "alice", &ids_sent[from]);
        while ids_sent.len() < MESSAGES {
            ids_sent.push(
                published
                    .recv_timeout(Duration::from_secs(30))
                    .expect("the publisher finished"),
            );
        }
        publisher.join().expect("the publisher did not panic");
        let frames = drain(&mut outbox);
        let recoveries: Vec<_> = frames
            .iter()
            .enumerate()
            .filter_map(|(at, f)| recovery(f).map(|r| (at, r)))
            .collect();
        assert_eq!(recoveries.len(), 1, "round {round}: one recovery");
        let (at, (complete, replayed)) = recoveries[0];
        assert!(complete, "round {round}");
        assert_eq!(
            replayed as usize, at,
            "round {round}: the replay precedes the recovery"
        );
        let expected: Vec<&str> = ids_sent[from + 1..].iter().map(|id| &**id).collect();
        assert_eq!(
            message_ids(&frames),
            expected,
            "round {round}: each later message once, in order ({replayed} replayed)"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Bugs the property found
// ---------------------------------------------------------------------------------------

/// The pending queue goes out in priority order, and the replay buffer follows that order:
/// a connection that got the queue [high (newer), low (older)] and broke after `high`
/// resumes from `high` and gets `low` (it was in publish order before, so `low` lay before
/// `high`, and was lost under `complete: true`).
#[tokio::test(start_paused = true)]
async fn a_resume_from_a_queued_message_delivered_out_of_publish_order_loses_nothing() {
    let hub = hub_with(DeliverySettings::new());
    let low = hub.send_to_player("alice", &numbered(1));
    let high = hub.send_to_player("alice", &numbered(2).with_priority(5));
    assert!(low.queued && high.queued);
    let (guard, mut outbox) = connect(&hub, "alice", ConnectionKind::Sse);
    let got = outbox.try_recv().expect("the queue");
    assert_eq!(got.id(), &*high.id, "higher priority first");
    // The stream broke before the client read `low`; its EventSource resumes from `high`.
    drop((guard, outbox));
    let (_g, mut resumed) = resume(&hub, "alice", &high.id);
    let frames = drain(&mut resumed);
    let answer = frames.iter().find_map(recovery);
    assert!(
        message_ids(&frames).contains(&&*low.id) || answer == Some((false, 0)),
        "{} is neither replayed nor reported: {frames:?} (recovery {answer:?})",
        low.id
    );
}

/// The keeper's resend queue holds one entry per player awaiting an ack: it kept one per
/// message ever published with `ack` while any was outstanding, each re-pushed at every
/// tick (memory and keeper work growing without bound).
#[tokio::test(start_paused = true)]
async fn the_resend_queue_does_not_grow_with_messages_already_acknowledged() {
    let hub = hub_with(
        DeliverySettings::new()
            .ack_retry(Duration::from_secs(1))
            .ack_retry_max(Duration::from_secs(1))
            .message_ttl(Duration::from_secs(3600)),
    );
    let (guard, mut outbox) = connect(&hub, "alice", ConnectionKind::WebSocket);
    let outstanding = hub.send_to_player("alice", &numbered(0).with_ack(true));
    for n in 1..=200 {
        let report = hub.send_to_player("alice", &numbered(n).with_ack(true));
        hub.acknowledge(guard.connection(), &report.id);
    }
    drain(&mut outbox);
    // Three resend ticks of the one message still awaited.
    for _ in 0..3 {
        let frame = next_frame(&mut outbox, Duration::from_secs(30))
            .await
            .expect("resent");
        assert_eq!(frame.id(), &*outstanding.id);
    }
    let entries = hub.inner.resends.lock().unwrap().len();
    assert!(
        entries <= 2,
        "{entries} resend entries for one message awaiting its ack"
    );
}

// ---------------------------------------------------------------------------------------
// The property: the replay/queue/ack state machine against a model
// ---------------------------------------------------------------------------------------

/// The hub's replay buffers, pending queues and acknowledgements, driven by random
/// operations and checked against a model, on a paused clock.
///
/// **Operations** over 1–2 players (`p0`, `p1`, both members of room `r` from the start, so
/// the hub knows them; their state TTL is an hour, so none is forgotten) and 1–3 connection
/// *slots* per player (a slot is one client, e.g. a browser tab: it keeps the last message
/// id it read across its connections):
/// `Publish` (to a player, the room or everyone, with an optional exclusion; priority 0–2;
/// the default TTL or a short one; with or without `ack`), `Connect` (a slot opens a
/// connection, resuming from its last seen id or not; a connected slot reconnects),
/// `Disconnect`, `Ack` (a slot's connection acks one of the ack messages, possibly another
/// player's), `Advance` (sleep on the paused clock: the keeper resends and expires what is
/// due) and `Drain` (the client reads up to n frames, or all, of what its connection got).
/// After every operation each live connection's outbox is emptied with `try_recv` into the
/// slot's unread frames, so the test knows what each operation put into which outbox.
///
/// **Timing** is tie-free: operations happen at even milliseconds from the start, while
/// every TTL, and so every expiry, and every resend (333 ms, then 666 ms, then 1332 ms
/// apart) falls on an odd millisecond. So the keeper never runs at the instant of an
/// operation, and when an operation runs, everything due before it has been done.
///
/// **The exact model** mirrors what `DeliverySettings` documents, with bounds small enough
/// to be hit: per player the replay buffer (4 messages, 5 s, 6 over the hub), the pending
/// queue (3, higher priority first, 4 over the hub) and the messages awaiting an ack (2, 3
/// over the hub, resent at 333 ms doubling up to 1332 ms, until acked or expired). Room and
/// global publishes visit players in the hub's own map order (read from the registry), as
/// the hub totals depend on it. From it the test predicts, and checks exactly:
/// - each publish's report (delivered by kind, players, queued, awaiting_ack) and that it
///   reaches every live connection of its recipients once, and nothing else;
/// - each new connection's catch-up: the replay after its id (only messages still within
///   their TTL), then the pending queue in priority order less what was replayed, then what
///   awaits an ack less what came already, then for a resume the `recovery` event with
///   `complete` (whether the id is still in the buffer) and `replayed`;
/// - during each `Advance`, the resends each connection gets, in order, and nothing else;
/// - every `AckSettled` event (message, player, outcome, resent): acked only by an ack
///   from a connection of that very player, expired at the TTL, dropped by a bound;
///   at the end (after every TTL) each wait settled exactly once;
/// - the observer's counts of pending drops (expired, overflow), resends, acks settled and
///   recoveries (complete or not).
///
/// **The guarantees**, checked independently of how the hub goes about them:
/// - *Never silently lost.* Each slot is *owed* what it has not read since its last seen
///   id: when its connection ends, the frames it got but did not read; while it has no
///   connection, every message published to its player. When the slot resumes from its last
///   seen id, each owed message must be in the new connection's catch-up, unless it is
///   covered by a report: the `recovery` said `complete: false`; its TTL ended; or it asked
///   for an ack and its wait already ended (an `AckSettled`). A connection that does not
///   resume gives up what its slot was owed.
/// - *No duplicates across the replay/live boundary*: on one connection a message id
///   arrives more than once only by an ack resend (and resends are checked exactly).
/// - *Order*: on one connection, the first arrivals of messages without `ack` and of one
///   priority come in publish order (the pending queue reorders only by priority; ack
///   messages are resent whenever due).
///
/// It found two bugs, each now a test of its own:
/// `a_resume_from_a_queued_message_delivered_out_of_publish_order_loses_nothing` and
/// `the_resend_queue_does_not_grow_with_messages_already_acknowledged`.
mod state_machine {
    use std::collections::{HashMap, HashSet, VecDeque};

    use proptest::prelude::*;
    use proptest::test_runner::{TestCaseError, TestRunner};

    use super::*;

    const PLAYERS: [&str; 2] = ["p0", "p1"];
    const ROOM: &str = "r";
    const REPLAY_COUNT: usize = 4;
    const REPLAY_AGE: Duration = Duration::from_millis(5000);
    const REPLAY_TOTAL: usize = 6;
    const PENDING_COUNT: usize = 3;
    const PENDING_TOTAL: usize = 4;
    /// Odd, like every TTL: expiries never fall on an operation's instant.
    const MESSAGE_TTL: Duration = Duration::from_millis(8001);
    const AWAITING_COUNT: usize = 2;
    const AWAITING_TOTAL: usize = 3;
    /// Odd, and the later waits even: resends fall on odd milliseconds.
    const ACK_RETRY: Duration = Duration::from_millis(333);
    const ACK_RETRY_MAX: Duration = Duration::from_millis(1332);
    /// Past every TTL: at the end nothing awaits an ack.
    const FINAL_ADVANCE_MS: u64 = 20_000;

    fn settings() -> HubSettings {
        HubSettings::new()
            .event_capacity(1 << 14)
            .state_ttl(Duration::from_secs(3600))
            .delivery(
                DeliverySettings::new()
                    .replay_count(REPLAY_COUNT)
                    .replay_age(REPLAY_AGE)
                    .replay_total(REPLAY_TOTAL)
                    .pending_count(PENDING_COUNT)
                    .pending_total(PENDING_TOTAL)
                    .message_ttl(MESSAGE_TTL)
                    .awaiting_count(AWAITING_COUNT)
                    .awaiting_total(AWAITING_TOTAL)
                    .ack_retry(ACK_RETRY)
                    .ack_retry_max(ACK_RETRY_MAX),
            )
    }

    /// The wait before the resend after `resent` ones (DeliverySettings::ack_retry).
    fn retry_after(resent: u32) -> Duration {
        ACK_RETRY
            .checked_mul(1 << resent.min(20))
            .map_or(ACK_RETRY_MAX, |wait| wait.min(ACK_RETRY_MAX))
    }

    #[derive(Debug, Clone, Copy)]
    enum Target {
        Player(usize),
        Room { exclude: Option<usize> },
        Everyone { exclude: Option<usize> },
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Publish {
            target: Target,
            priority: i32,
            /// Odd milliseconds; `None`: the default TTL.
            ttl_ms: Option<u64>,
            ack: bool,
        },
        Connect {
            slot: usize,
            resume: bool,
        },
        Disconnect {
            slot: usize,
        },
        Ack {
            slot: usize,
            pick: usize,
        },
        /// Even milliseconds.
        Advance {
            ms: u64,
        },
        /// Reads up to `max` frames; 0: all.
        Drain {
            slot: usize,
            max: usize,
        },
    }

    #[derive(Debug, Clone)]
    struct Scenario {
        players: usize,
        slots_per_player: usize,
        ops: Vec<Op>,
    }

    fn op() -> impl Strategy<Value = Op> {
        let target = prop_oneof![
            3 => (0..2usize).prop_map(Target::Player),
            1 => proptest::option::of(0..2usize).prop_map(|exclude| Target::Room { exclude }),
            1 => proptest::option::of(0..2usize).prop_map(|exclude| Target::Everyone { exclude }),
        ];
        let ttl_ms = prop_oneof![
            2 => Just(None),
            1 => (50u64..1500).prop_map(|half| Some(2 * half + 1)),
        ];
        let advance = prop_oneof![1u64..250, 250u64..1500];
        prop_oneof![
            6 => (target, 0..3i32, ttl_ms, proptest::bool::weighted(0.4)).prop_map(
                |(target, priority, ttl_ms, ack)| Op::Publish { target, priority, ttl_ms, ack }
            ),
            3 => (0..6usize, proptest::bool::weighted(0.8))
                .prop_map(|(slot, resume)| Op::Connect { slot, resume }),
            3 => (0..6usize).prop_map(|slot| Op::Disconnect { slot }),
            1 => (0..6usize, 0..64usize).prop_map(|(slot, pick)| Op::Ack { slot, pick }),
            2 => advance.prop_map(|half| Op::Advance { ms: 2 * half }),
            4 => (0..6usize, 0..4usize).prop_map(|(slot, max)| Op::Drain { slot, max }),
        ]
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        (
            1..=2usize,
            1..=3usize,
            proptest::collection::vec(op(), 1..64),
        )
            .prop_map(|(players, slots_per_player, ops)| Scenario {
                players,
                slots_per_player,
                ops,
            })
    }

    /// A published message, as the model knows it; its index is its publish order.
    struct Sent {
        id: Arc<str>,
        priority: i32,
        ack: bool,
        expires: Instant,
    }

    struct Awaited {
        message: usize,
        next: Instant,
        resent: u32,
    }

    /// The model of one player's mailbox.
    #[derive(Default)]
    struct Mailbox {
        /// (message, published at), oldest first.
        replay: VecDeque<(usize, Instant)>,
        /// Higher priority first, then publish order.
        pending: Vec<usize>,
        /// In the order they began to wait.
        awaiting: Vec<Awaited>,
    }

    /// What a connection got, decoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Arrival {
        Message(usize),
        Recovery { complete: bool, replayed: u64 },
    }

    /// A settled acknowledgement wait: (message, player, outcome, resent).
    type Settlement = (usize, usize, &'static str, u32);

    struct Live {
        guard: ConnectionGuard,
        outbox: Outbox,
        /// Taken from the outbox, not read by the client yet.
        unread: VecDeque<Arrival>,
        /// Every arrival, and whether it came during an `Advance` (a resend).
        arrivals: Vec<(Arrival, bool)>,
    }

    struct Slot {
        player: usize,
        kind: ConnectionKind,
        live: Option<Live>,
        last_seen: Option<usize>,
        /// What the slot has not read since its last seen id (see the module doc).
        owed: Vec<usize>,
    }

    #[derive(Default, Debug, PartialEq, Eq)]
    struct Expected {
        pending_expired: u64,
        pending_overflow: u64,
        resent: u64,
        acked: u64,
        expired: u64,
        dropped: u64,
        complete: u64,
        incomplete: u64,
    }

    struct Run {
        hub: Hub,
        events: broadcast::Receiver<HubEvent>,
        counts: Arc<Counts>,
        players: usize,
        sent: Vec<Sent>,
        by_id: HashMap<Arc<str>, usize>,
        mailboxes: Vec<Mailbox>,
        slots: Vec<Slot>,
        expected: Expected,
        /// The operation running, for messages.
        step: usize,
    }

    impl Run {
        fn new(scenario: &Scenario) -> Self {
            let counts = Arc::new(Counts::default());
            let hub = settings().observer(Counting(counts.clone())).build();
            let events = hub.subscribe();
            for player in &PLAYERS[..scenario.players] {
                hub.join_room(player, ROOM);
            }
            let slots = (0..scenario.players * scenario.slots_per_player)
                .map(|slot| Slot {
                    player: slot / scenario.slots_per_player,
                    kind: if slot % 2 == 0 {
                        ConnectionKind::WebSocket
                    } else {
                        ConnectionKind::Sse
                    },
                    live: None,
                    last_seen: None,
                    owed: Vec::new(),
                })
                .collect();
            Self {
                hub,
                events,
                counts,
                players: scenario.players,
                sent: Vec::new(),
                by_id: HashMap::new(),
                mailboxes: (0..scenario.players).map(|_| Mailbox::default()).collect(),
                slots,
                expected: Expected::default(),
                step: 0,
            }
        }

        async fn play(mut self, ops: &[Op]) -> Result<(), TestCaseError> {
            for (step, op) in ops.iter().enumerate() {
                self.step = step;
                self.apply(*op).await?;
            }
            self.step = ops.len();
            self.apply(Op::Advance {
                ms: FINAL_ADVANCE_MS,
            })
            .await?;
            for player in 0..self.players {
                prop_assert!(
                    self.mailboxes[player].awaiting.is_empty(),
                    "the model still awaits acks after every TTL"
                );
            }
            for slot in 0..self.slots.len() {
                if let Some(live) = self.slots[slot].live.take() {
                    self.check_history(slot, &live)?;
                }
            }
            let c = &self.counts;
            let observed = Expected {
                pending_expired: Counts::get(&c.pending_expired),
                pending_overflow: Counts::get(&c.pending_overflow),
                resent: Counts::get(&c.resent),
                acked: Counts::get(&c.acked),
                expired: Counts::get(&c.expired),
                dropped: Counts::get(&c.dropped),
                complete: Counts::get(&c.complete),
                incomplete: Counts::get(&c.incomplete),
            };
            prop_assert_eq!(observed, self.expected, "the observer's counts");
            Ok(())
        }

        async fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
            let slots = self.slots.len();
            // What each slot's outbox must have got by the end of the operation.
            let mut arrivals: Vec<Vec<Arrival>> = vec![Vec::new(); slots];
            let mut settled: Vec<Settlement> = Vec::new();
            let mut resends = false;
            match op {
                Op::Publish {
                    target,
                    priority,
                    ttl_ms,
                    ack,
                } => self.publish(target, priority, ttl_ms, ack, &mut arrivals, &mut settled)?,
                Op::Connect { slot, resume } => self.connect(slot % slots, resume)?,
                Op::Disconnect { slot } => self.disconnect(slot % slots)?,
                Op::Ack { slot, pick } => self.ack(slot % slots, pick, &mut settled),
                Op::Advance { ms } => {
                    resends = true;
                    self.advance(ms, &mut arrivals, &mut settled).await?;
                }
                Op::Drain { slot, max } => self.read(slot % slots, max),
            }
            for (slot, expected) in arrivals.iter().enumerate() {
                let got = self.take_arrivals(slot, resends)?;
                prop_assert_eq!(
                    &got,
                    expected,
                    "step {} ({:?}): what slot {}'s connection got",
                    self.step,
                    op,
                    slot
                );
            }
            let mut events = self.settlements()?;
            events.sort_unstable();
            settled.sort_unstable();
            prop_assert_eq!(
                events,
                settled,
                "step {} ({:?}): AckSettled events",
                self.step,
                op
            );
            Ok(())
        }

        fn player_slots(&self, player: usize) -> impl Iterator<Item = usize> + '_ {
            (0..self.slots.len()).filter(move |&slot| self.slots[slot].player == player)
        }

        /// The recipients of a publish to `target`, in the order the hub visits them.
        fn recipients(&self, target: Target) -> Vec<usize> {
            let index = |name: &str| {
                PLAYERS
                    .iter()
                    .position(|p| *p == name)
                    .expect("one of the players")
            };
            let registry = self.hub.read();
            let (order, exclude): (Vec<usize>, _) = match target {
                Target::Player(player) => return vec![player % self.players],
                Target::Room { exclude } => (
                    registry
                        .rooms
                        .get(ROOM)
                        .map(|members| members.iter().map(|m| index(m)).collect())
                        .unwrap_or_default(),
                    exclude,
                ),
                Target::Everyone { exclude } => {
                    (registry.players.keys().map(|p| index(p)).collect(), exclude)
                }
            };
            let exclude = exclude.map(|p| p % self.players);
            order.into_iter().filter(|&p| Some(p) != exclude).collect()
        }

        fn publish(
            &mut self,
            target: Target,
            priority: i32,
            ttl_ms: Option<u64>,
            ack: bool,
            arrivals: &mut [Vec<Arrival>],
            settled: &mut Vec<Settlement>,
        ) -> Result<(), TestCaseError> {
            let index = self.sent.len();
            let now = Instant::now();
            let ttl = ttl_ms.map(Duration::from_millis);
            let mut message = Message::json("m", json!({ "n": index }))
                .with_priority(priority)
                .with_ack(ack);
            if let Some(ttl) = ttl {
                message = message.with_ttl(ttl);
            }
            let recipients = self.recipients(target);
            let excluded = |exclude: Option<usize>| -> Vec<&'static str> {
                exclude
                    .map(|p| PLAYERS[p % self.players])
                    .into_iter()
                    .collect()
            };
            let report = match target {
                Target::Player(player) => self
                    .hub
                    .send_to_player(PLAYERS[player % self.players], &message),
                Target::Room { exclude } => {
                    self.hub
                        .broadcast_to_room(ROOM, &message, &excluded(exclude))
                }
                Target::Everyone { exclude } => {
                    self.hub.broadcast_global(&message, &excluded(exclude))
                }
            };
            self.sent.push(Sent {
                id: report.id.clone(),
                priority,
                ack,
                expires: now + ttl.unwrap_or(MESSAGE_TTL),
            });
            self.by_id.insert(report.id.clone(), index);

            let (mut websocket, mut sse, mut reached, mut queued, mut awaiting) =
                (0, 0, 0, false, 0);
            for &player in &recipients {
                let live: Vec<usize> = self
                    .player_slots(player)
                    .filter(|&slot| self.slots[slot].live.is_some())
                    .collect();
                for &slot in &live {
                    match self.slots[slot].kind {
                        ConnectionKind::WebSocket => websocket += 1,
                        ConnectionKind::Sse => sse += 1,
                    }
                    arrivals[slot].push(Arrival::Message(index));
                }
                reached += usize::from(!live.is_empty());
                self.keep_for_replay(player, index, now);
                if live.is_empty() {
                    queued |= self.queue(player, index, now);
                }
                if ack && self.await_ack(player, index, now, settled) {
                    awaiting += 1;
                }
                let offline: Vec<usize> = self
                    .player_slots(player)
                    .filter(|&slot| self.slots[slot].live.is_none())
                    .collect();
                for slot in offline {
                    self.slots[slot].owed.push(index);
                }
            }
            let step = self.step;
            prop_assert_eq!(
                (
                    report.delivered,
                    report.websocket,
                    report.sse,
                    report.failed
                ),
                (websocket + sse, websocket, sse, 0),
                "step {}: delivered",
                step
            );
            prop_assert_eq!(report.queued, queued, "step {}: queued", step);
            let players = match target {
                Target::Player(_) => None,
                _ => Some(reached),
            };
            prop_assert_eq!(report.players, players, "step {}: players", step);
            prop_assert_eq!(
                report.awaiting_ack,
                (awaiting > 0).then_some(awaiting),
                "step {}: awaiting_ack",
                step
            );
            Ok(())
        }

        fn keep_for_replay(&mut self, player: usize, message: usize, now: Instant) {
            let buffer = &mut self.mailboxes[player].replay;
            while buffer
                .front()
                .is_some_and(|&(_, at)| now.saturating_duration_since(at) > REPLAY_AGE)
            {
                buffer.pop_front();
            }
            while buffer.len() >= REPLAY_COUNT {
                buffer.pop_front();
            }
            let total: usize = self.mailboxes.iter().map(|m| m.replay.len()).sum();
            let buffer = &mut self.mailboxes[player].replay;
            // The hub is full: the player's oldest makes room, if it has one.
            if total >= REPLAY_TOTAL && buffer.pop_front().is_none() {
                return;
            }
            buffer.push_back((message, now));
        }

        /// Whether the pending queue took it.
        fn queue(&mut self, player: usize, message: usize, now: Instant) -> bool {
            let sent = &self.sent;
            let pending = &mut self.mailboxes[player].pending;
            let before = pending.len();
            pending.retain(|&m| sent[m].expires > now);
            self.expected.pending_expired += (before - pending.len()) as u64;
            let priority = sent[message].priority;
            if pending.len() >= PENDING_COUNT {
                let lowest = pending
                    .iter()
                    .map(|&m| sent[m].priority)
                    .min()
                    .expect("a full queue");
                self.expected.pending_overflow += 1;
                if priority < lowest {
                    return false;
                }
                let oldest = pending
                    .iter()
                    .position(|&m| sent[m].priority == lowest)
                    .expect("the lowest");
                pending.remove(oldest);
            }
            let total: usize = self.mailboxes.iter().map(|m| m.pending.len()).sum();
            if total >= PENDING_TOTAL {
                self.expected.pending_overflow += 1;
                return false;
            }
            let pending = &mut self.mailboxes[player].pending;
            let at = pending
                .iter()
                .position(|&m| sent[m].priority < priority)
                .unwrap_or(pending.len());
            pending.insert(at, message);
            true
        }

        /// Whether it now awaits an ack.
        fn await_ack(
            &mut self,
            player: usize,
            message: usize,
            now: Instant,
            settled: &mut Vec<Settlement>,
        ) -> bool {
            if self.mailboxes[player].awaiting.len() >= AWAITING_COUNT {
                let oldest = self.mailboxes[player].awaiting.remove(0);
                self.expected.dropped += 1;
                settled.push((oldest.message, player, "dropped", oldest.resent));
            }
            let total: usize = self.mailboxes.iter().map(|m| m.awaiting.len()).sum();
            if total >= AWAITING_TOTAL {
                self.expected.dropped += 1;
                settled.push((message, player, "dropped", 0));
                return false;
            }
            self.mailboxes[player].awaiting.push(Awaited {
                message,
                next: now + retry_after(0),
                resent: 0,
            });
            true
        }

        fn connect(&mut self, slot: usize, resume: bool) -> Result<(), TestCaseError> {
            if self.slots[slot].live.is_some() {
                self.disconnect(slot)?;
            }
            let player = self.slots[slot].player;
            let from = if resume {
                self.slots[slot].last_seen
            } else {
                None
            };
            let now = Instant::now();
            let mut registration = Registration::new(PLAYERS[player], self.slots[slot].kind);
            if let Some(from) = from {
                registration = registration.last_event_id(&*self.sent[from].id);
            }
            let (guard, outbox) = self
                .hub
                .register(registration)
                .map_err(|e| TestCaseError::fail(format!("register: {e}")))?;

            // The model's catch-up. An id older than the replay age is gone; the buffer from
            // the first queued message on (with the queued messages it lost) is put in queue
            // order (the order this connection gets the queue), so a resume from one of them
            // replays the rest.
            let mailbox = &mut self.mailboxes[player];
            while mailbox
                .replay
                .front()
                .is_some_and(|&(_, at)| now.saturating_duration_since(at) > REPLAY_AGE)
            {
                mailbox.replay.pop_front();
            }
            let pending = mailbox.pending.clone();
            if !pending.is_empty() {
                let start = mailbox
                    .replay
                    .iter()
                    .position(|(m, _)| pending.contains(m))
                    .unwrap_or(mailbox.replay.len());
                let tail: Vec<usize> = mailbox.replay.drain(start..).map(|(m, _)| m).collect();
                let mut ordered: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|&m| self.sent[m].expires > now && !tail.contains(&m))
                    .collect();
                ordered.extend(tail);
                ordered.sort_by_key(|&m| std::cmp::Reverse(self.sent[m].priority));
                for m in ordered {
                    self.keep_for_replay(player, m, now);
                }
            }
            let sent = &self.sent;
            let mailbox = &mut self.mailboxes[player];
            let mut expected: Vec<usize> = Vec::new();
            let answer =
                from.map(
                    |from| match mailbox.replay.iter().position(|&(m, _)| m == from) {
                        Some(at) => {
                            expected.extend(
                                mailbox
                                    .replay
                                    .iter()
                                    .skip(at + 1)
                                    .map(|&(m, _)| m)
                                    .filter(|&m| sent[m].expires > now),
                            );
                            (true, expected.len() as u64)
                        }
                        None => (false, 0),
                    },
                );
            for m in std::mem::take(&mut mailbox.pending) {
                if sent[m].expires <= now {
                    self.expected.pending_expired += 1;
                } else if !expected.contains(&m) {
                    expected.push(m);
                }
            }
            for awaited in &mailbox.awaiting {
                let m = awaited.message;
                if sent[m].expires > now && !expected.contains(&m) {
                    expected.push(m);
                }
            }
            let mut expected: Vec<Arrival> = expected.into_iter().map(Arrival::Message).collect();
            if let Some((complete, replayed)) = answer {
                if complete {
                    self.expected.complete += 1;
                } else {
                    self.expected.incomplete += 1;
                }
                expected.push(Arrival::Recovery { complete, replayed });
            }

            self.slots[slot].live = Some(Live {
                guard,
                outbox,
                unread: VecDeque::new(),
                arrivals: Vec::new(),
            });
            let catch_up = self.take_arrivals(slot, false)?;
            prop_assert_eq!(
                &catch_up,
                &expected,
                "step {}: the catch-up of slot {} (resuming from {:?})",
                self.step,
                slot,
                from
            );

            // Never silently lost: what the slot was owed came, or was reported.
            let owed = std::mem::take(&mut self.slots[slot].owed);
            if let (Some(from), Some((true, _))) = (from, answer) {
                for m in owed {
                    let sent = &self.sent[m];
                    let caught_up = catch_up.contains(&Arrival::Message(m));
                    let expired = sent.expires <= now;
                    let settled = sent.ack
                        && !self.mailboxes[player]
                            .awaiting
                            .iter()
                            .any(|a| a.message == m);
                    prop_assert!(
                        caught_up || expired || settled,
                        "step {}: message {} ({}) owed to slot {} was neither replayed nor \
                         reported when it resumed from message {} ({}): recovery {:?}, \
                         catch-up {:?}",
                        self.step,
                        m,
                        sent.id,
                        slot,
                        from,
                        self.sent[from].id,
                        answer,
                        catch_up
                    );
                }
            }
            Ok(())
        }

        fn disconnect(&mut self, slot: usize) -> Result<(), TestCaseError> {
            let Some(live) = self.slots[slot].live.take() else {
                return Ok(());
            };
            self.check_history(slot, &live)?;
            let mut owed = Vec::new();
            for arrival in &live.unread {
                if let Arrival::Message(m) = *arrival {
                    if !owed.contains(&m) {
                        owed.push(m);
                    }
                }
            }
            let state = &mut self.slots[slot];
            state.owed = owed;
            drop(live.guard);
            drop(live.outbox);
            Ok(())
        }

        fn ack(&mut self, slot: usize, pick: usize, settled: &mut Vec<Settlement>) {
            let Some(live) = &self.slots[slot].live else {
                return;
            };
            let acks: Vec<usize> = (0..self.sent.len()).filter(|&m| self.sent[m].ack).collect();
            if acks.is_empty() {
                return;
            }
            let message = acks[pick % acks.len()];
            self.hub
                .acknowledge(live.guard.connection(), &self.sent[message].id);
            let player = self.slots[slot].player;
            let awaiting = &mut self.mailboxes[player].awaiting;
            if let Some(at) = awaiting.iter().position(|a| a.message == message) {
                let awaited = awaiting.remove(at);
                self.expected.acked += 1;
                settled.push((message, player, "acked", awaited.resent));
            }
        }

        async fn advance(
            &mut self,
            ms: u64,
            arrivals: &mut [Vec<Arrival>],
            settled: &mut Vec<Settlement>,
        ) -> Result<(), TestCaseError> {
            let until = Instant::now() + Duration::from_millis(ms);
            for player in 0..self.players {
                let resent = self.keep_until(player, until, settled);
                for slot in self.player_slots(player).collect::<Vec<_>>() {
                    if self.slots[slot].live.is_some() {
                        arrivals[slot].extend(resent.iter().map(|&m| Arrival::Message(m)));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            prop_assert_eq!(Instant::now(), until, "the paused clock");
            Ok(())
        }

        /// The model keeper: what it resends to `player` before `until`, in order.
        fn keep_until(
            &mut self,
            player: usize,
            until: Instant,
            settled: &mut Vec<Settlement>,
        ) -> Vec<usize> {
            let sent = &self.sent;
            let awaiting = &mut self.mailboxes[player].awaiting;
            let mut resent = Vec::new();
            loop {
                let due = awaiting
                    .iter()
                    .map(|a| a.next.min(sent[a.message].expires))
                    .min();
                let Some(now) = due.filter(|&at| at < until) else {
                    return resent;
                };
                awaiting.retain(|a| {
                    let expired = sent[a.message].expires <= now;
                    if expired {
                        self.expected.expired += 1;
                        settled.push((a.message, player, "expired", a.resent));
                    }
                    !expired
                });
                for awaited in awaiting.iter_mut() {
                    if awaited.next <= now {
                        awaited.resent += 1;
                        awaited.next = now + retry_after(awaited.resent);
                        self.expected.resent += 1;
                        resent.push(awaited.message);
                    }
                }
            }
        }

        /// The client of `slot` reads up to `max` frames (0: all).
        fn read(&mut self, slot: usize, max: usize) {
            let state = &mut self.slots[slot];
            let Some(live) = state.live.as_mut() else {
                return;
            };
            let max = if max == 0 { usize::MAX } else { max };
            for _ in 0..max {
                match live.unread.pop_front() {
                    Some(Arrival::Message(m)) => state.last_seen = Some(m),
                    Some(Arrival::Recovery { .. }) => {}
                    None => break,
                }
            }
        }

        /// Empties `slot`'s outbox (if it is connected) into its unread frames.
        fn take_arrivals(
            &mut self,
            slot: usize,
            resend: bool,
        ) -> Result<Vec<Arrival>, TestCaseError> {
            let Some(live) = self.slots[slot].live.as_mut() else {
                return Ok(Vec::new());
            };
            let mut got = Vec::new();
            while let Some(frame) = live.outbox.try_recv() {
                let arrival = match (self.by_id.get(frame.id()), recovery(&frame)) {
                    (Some(&m), None) => Arrival::Message(m),
                    (None, Some((complete, replayed))) => Arrival::Recovery { complete, replayed },
                    _ => return Err(TestCaseError::fail(format!("an unknown frame {frame:?}"))),
                };
                live.unread.push_back(arrival);
                live.arrivals.push((arrival, resend));
                got.push(arrival);
            }
            Ok(got)
        }

        fn settlements(&mut self) -> Result<Vec<Settlement>, TestCaseError> {
            let mut settled = Vec::new();
            loop {
                match self.events.try_recv() {
                    Ok(HubEvent::AckSettled {
                        message_id,
                        player_id,
                        outcome,
                        resent,
                    }) => {
                        let message = *self
                            .by_id
                            .get(&message_id)
                            .ok_or_else(|| TestCaseError::fail("a settlement of no message"))?;
                        let player = PLAYERS
                            .iter()
                            .position(|p| **p == *player_id)
                            .ok_or_else(|| TestCaseError::fail("a settlement of no player"))?;
                        settled.push((message, player, outcome.as_str(), resent));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::TryRecvError::Empty) => return Ok(settled),
                    Err(error) => return Err(TestCaseError::fail(format!("events: {error}"))),
                }
            }
        }

        /// No duplicate but ack resends; one priority's messages in publish order.
        fn check_history(&self, slot: usize, live: &Live) -> Result<(), TestCaseError> {
            let mut seen = HashSet::new();
            let mut last_of_priority: HashMap<i32, usize> = HashMap::new();
            let mut recoveries = 0;
            for &(arrival, resend) in &live.arrivals {
                let m = match arrival {
                    Arrival::Recovery { .. } => {
                        recoveries += 1;
                        continue;
                    }
                    Arrival::Message(m) => m,
                };
                let sent = &self.sent[m];
                if resend {
                    prop_assert!(sent.ack, "slot {}: message {} resent without ack", slot, m);
                    continue;
                }
                prop_assert!(
                    seen.insert(m),
                    "slot {}: message {} ({}) arrived twice, not by a resend: {:?}",
                    slot,
                    m,
                    sent.id,
                    live.arrivals
                );
                if !sent.ack {
                    if let Some(&before) = last_of_priority.get(&sent.priority) {
                        prop_assert!(
                            before < m,
                            "slot {}: message {} came after {} of the same priority: {:?}",
                            slot,
                            m,
                            before,
                            live.arrivals
                        );
                    }
                    last_of_priority.insert(sent.priority, m);
                }
            }
            prop_assert!(
                recoveries <= 1,
                "slot {}: {} recovery events",
                slot,
                recoveries
            );
            Ok(())
        }
    }

    fn run(scenario: &Scenario) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let play = async { Run::new(scenario).play(&scenario.ops).await };
            tokio::time::timeout(Duration::from_secs(24 * 3600), play)
                .await
                .map_err(|_| TestCaseError::fail("the scenario did not finish"))?
        })
    }

    /// `PROPTEST_CASES`, else `default`.
    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(default)
    }

    fn check(default_cases: u32) {
        let mut runner = TestRunner::new(crate::proptest_config(cases(default_cases)));
        if let Err(error) = runner.run(&scenario(), |scenario| run(&scenario)) {
            panic!("{error}");
        }
    }

    #[test]
    fn the_hub_keeps_its_replay_queue_and_ack_promises() {
        check(128);
    }
}
