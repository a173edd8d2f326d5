//! The cluster's rules under interleavings a real Redis makes rare: a log in memory that
//! each node reads only when the test says, so a test puts entries in any order the log
//! could have them and applies them to each node at any moment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::connection::{ConnectionKind, DisconnectReason};
use crate::message::Message;

#[derive(Default)]
struct Log {
    entries: Mutex<Vec<(Arc<str>, Vec<u8>)>>,
    /// Entries of this kind are held back until [`release`](Self::release).
    hold: Mutex<Option<&'static str>>,
    held: Mutex<Vec<Vec<u8>>>,
}

impl Log {
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    fn push(&self, entry: Vec<u8>) -> Arc<str> {
        let mut entries = self.entries.lock().unwrap();
        let id: Arc<str> = format!("{}-0", entries.len() + 1).into();
        entries.push((id.clone(), entry));
        id
    }

    /// Appends what was held back.
    fn release(&self) {
        *self.hold.lock().unwrap() = None;
        for entry in std::mem::take(&mut *self.held.lock().unwrap()) {
            self.push(entry);
        }
    }

    fn kinds(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| {
                let v: serde_json::Value = serde_json::from_slice(e).unwrap();
                v["k"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

/// A node's view of the memory log.
#[derive(Clone)]
struct Manual {
    node: Arc<str>,
    log: Arc<Log>,
    sink: Arc<Mutex<Option<LogSink>>>,
    read: Arc<Mutex<usize>>,
    peers: Vec<Arc<str>>,
}

impl Manual {
    /// Applies the log's entries this node has not read yet.
    fn catch_up(&self) {
        let sink = self.sink.lock().unwrap().clone().unwrap();
        loop {
            let next = {
                let mut read = self.read.lock().unwrap();
                let entries = self.log.entries.lock().unwrap();
                let Some(entry) = entries.get(*read).cloned() else {
                    return;
                };
                *read += 1;
                entry
            };
            sink.apply(&next.0, &next.1);
        }
    }
}

impl Backplane for Manual {
    fn node_id(&self) -> &str {
        &self.node
    }

    fn start(&self, sink: LogSink) {
        *self.sink.lock().unwrap() = Some(sink);
    }

    fn append(&self, entry: Vec<u8>) -> BoxFuture<Result<Arc<str>, BackplaneError>> {
        let kind = serde_json::from_slice::<serde_json::Value>(&entry).unwrap()["k"].clone();
        if let Some(held) = *self.log.hold.lock().unwrap() {
            if kind == held {
                self.log.held.lock().unwrap().push(entry);
                return Box::pin(async { Ok(Arc::from("held")) });
            }
        }
        let id = self.log.push(entry);
        Box::pin(async move { Ok(id) })
    }

    fn answer(&self, _origin: &str, _answer: Vec<u8>) {}

    fn peers(&self) -> Vec<Arc<str>> {
        self.peers.clone()
    }

    fn status(&self) -> BackplaneStatus {
        BackplaneStatus {
            node: self.node.clone(),
            state: BackplaneState::Up,
            peers: self.peers.len(),
        }
    }

    fn read_from(&self, from: &str, count: usize) -> BoxFuture<Result<LogEntries, BackplaneError>> {
        let entries = self.log.entries.lock().unwrap();
        let start = entries.iter().position(|(id, _)| **id == *from);
        let found: LogEntries = start
            .map(|start| entries[start..].iter().take(count).cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(found) })
    }
}

/// Two nodes, `a` and `b`, on one memory log; their lists of connections already sent.
async fn two_nodes() -> (Arc<Log>, [(Hub, Manual); 2]) {
    let log = Arc::new(Log::default());
    let make = |name: &str, peer: &str| {
        let manual = Manual {
            node: name.into(),
            log: log.clone(),
            sink: Arc::default(),
            read: Arc::default(),
            peers: vec![peer.into()],
        };
        let hub = Hub::builder()
            .backplane(manual.clone())
            .report_wait(Duration::from_millis(50))
            .build();
        (hub, manual)
    };
    let nodes = [make("a", "b"), make("b", "a")];
    // Each node's first list (empty) goes out, and asks for the other's.
    settle(&log, 2).await;
    for (_, manual) in &nodes {
        manual.catch_up();
    }
    settle(&log, 4).await;
    for (_, manual) in &nodes {
        manual.catch_up();
    }
    (log, nodes)
}

/// Lets the announcers run until the log holds `len` entries.
async fn settle(log: &Log, len: usize) {
    for _ in 0..1000 {
        if log.len() >= len {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the log never held {len} entries: {:?}", log.kinds());
}

fn ids(frames: &mut crate::Outbox) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(frame) = frames.try_recv() {
        ids.push(frame.id().to_owned());
    }
    ids
}

#[tokio::test]
async fn a_message_published_as_the_last_connection_leaves_is_pending_on_every_node() {
    let (log, [(a, on_a), (b, on_b)]) = two_nodes().await;
    let (guard, _outbox) = a
        .register(Registration::new("p", ConnectionKind::WebSocket))
        .unwrap();
    let before = log.len();
    settle(&log, before + 2).await; // its session, its opening
    on_a.catch_up();
    on_b.catch_up();

    // It leaves node A; a publish reaches the log before A's word of it.
    *log.hold.lock().unwrap() = Some("c-");
    drop(guard);
    let publishing = {
        let b = b.clone();
        tokio::spawn(async move {
            b.publish(Audience::Player("p"), &Message::json("m", 1.into()))
                .await
                .unwrap()
        })
    };
    settle(&log, before + 3).await;
    log.release();
    assert_eq!(
        log.kinds()[before + 2..],
        ["p", "c-"],
        "the publish, then the closing"
    );
    on_a.catch_up();
    on_b.catch_up();
    let published = publishing.await.unwrap();

    // Back on node B without a resume id: the message is pending there too.
    let (_back, mut outbox) = b
        .register(Registration::new("p", ConnectionKind::Sse))
        .unwrap();
    assert_eq!(ids(&mut outbox), [published.id.to_string()]);
}

#[tokio::test]
async fn another_nodes_logout_ends_only_the_connections_before_it_in_the_log() {
    let (log, [(a, on_a), (b, on_b)]) = two_nodes().await;
    let (old, _o) = a
        .register(Registration::new("p", ConnectionKind::WebSocket))
        .unwrap();
    let before = log.len();
    settle(&log, before + 2).await;
    on_a.catch_up();
    on_b.catch_up();

    b.logout("p");
    settle(&log, before + 3).await;
    // The player logs in again on A before A hears of the logout.
    let (new, _n) = a
        .register(Registration::new("p", ConnectionKind::Sse))
        .unwrap();
    on_a.catch_up();
    assert_eq!(old.end_reason(), Some(DisconnectReason::Logout));
    assert_eq!(
        new.end_reason(),
        None,
        "opened after the logout, as the log has it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_change_in_flight_too_long_still_ends_as_the_log_orders_it() {
    let (log, [(a, on_a), (b, on_b)]) = two_nodes().await;
    // Node A begins s2 and node B s3 at about the same time; s3 is first in the log, and
    // A's own announcement comes back after its in-flight time ran out.
    let before = log.len();
    a.begin_session("p", "s2").unwrap();
    settle(&log, before + 1).await;
    let s2 = log.entries.lock().unwrap().pop().unwrap();
    b.begin_session("p", "s3").unwrap();
    settle(&log, before + 1).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    log.entries
        .lock()
        .unwrap()
        .push((format!("{}-0", before + 2).into(), s2.1));
    on_a.catch_up();
    on_b.catch_up();
    let current = |hub: &Hub| hub.session_of("p").session_id;
    assert_eq!(current(&a).as_deref(), Some("s2"), "last in the log");
    assert_eq!(current(&b), current(&a), "the same on every node");
}

#[tokio::test]
async fn presence_events_follow_the_connections_of_every_node() {
    let (log, [(a, on_a), (b, _on_b)]) = two_nodes().await;
    let mut events = a.subscribe();
    let (guard, _outbox) = b
        .register(Registration::new("p", ConnectionKind::Sse))
        .unwrap();
    let before = log.len();
    settle(&log, before + 2).await;
    on_a.catch_up();
    drop(guard);
    settle(&log, before + 3).await;
    on_a.catch_up();
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let HubEvent::Presence { presence, .. } = event {
            seen.push(presence);
        }
    }
    assert_eq!(
        seen,
        [Presence::Online, Presence::Reconnecting],
        "node A saw B's player"
    );
    assert_eq!(
        a.presence("p"),
        Presence::Reconnecting,
        "the grace, as on one node"
    );
}
