//! Delivery: a message is encoded once and a refcounted clone goes into each recipient's
//! bounded outbox; a connection that cannot take it is ended and reported as failed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use dualcast_layers::metrics::Transport;
use serde::Serialize;
use tokio::time::Instant;

use super::mailbox::Meta;
use super::registry::Player;
use super::Hub;
use crate::connection::{Connection, ConnectionKind, DisconnectReason};
use crate::message::{Frame, Message};
use crate::queue::SendError;

/// What a publish reached (SPEC §4); serializes to the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeliveryReport {
    /// The envelope id every recipient got.
    #[schema(value_type = String)]
    pub id: Arc<str>,
    /// Connections reached, both kinds.
    pub delivered: usize,
    /// WebSocket connections reached.
    pub websocket: usize,
    /// SSE connections reached.
    pub sse: usize,
    /// Connections that could not take the message: they were ending, gone, or overflowed;
    /// each was removed from the hub.
    pub failed: usize,
    /// Whether the message was kept in a pending queue (of at least one recipient that had
    /// no live connection), to be delivered on its next connect.
    pub queued: bool,
    /// Players whose pending queue took it (when any did).
    #[serde(skip)]
    pub(crate) queued_for: Option<usize>,
    /// Players now waiting for its acknowledgement (messages published with `ack` only;
    /// in Rust, [`Message::with_ack`](crate::Message::with_ack), and each wait's end comes
    /// as a [`HubEvent::AckSettled`](super::HubEvent::AckSettled)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_ack: Option<usize>,
    /// Players reached (room and global broadcasts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub players: Option<usize>,
    /// On a hub with a [backplane](super::Backplane): what each node that answered within
    /// [`report_wait`](super::HubSettings::report_wait) reached, this node first. The
    /// counts above are their sums.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeDelivery>>,
    /// On a hub with a backplane: the live nodes that had not answered within the wait.
    /// Their connections may have got the message; they are not counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub unanswered: Option<Vec<Arc<str>>>,
}

/// What one node of a cluster reached of a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NodeDelivery {
    /// The node's id.
    #[schema(value_type = String)]
    pub node: Arc<str>,
    /// Its connections reached, both kinds.
    pub delivered: usize,
    /// Its WebSocket connections reached.
    pub websocket: usize,
    /// Its SSE connections reached.
    pub sse: usize,
    /// Its connections that could not take the message.
    pub failed: usize,
    /// Whether it kept the message in a pending queue.
    pub queued: bool,
    /// Players it reached (room and global broadcasts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub players: Option<usize>,
}

impl NodeDelivery {
    pub(super) fn of(node: Arc<str>, report: &DeliveryReport) -> Self {
        Self {
            node,
            delivered: report.delivered,
            websocket: report.websocket,
            sse: report.sse,
            failed: report.failed,
            queued: report.queued,
            players: report.players,
        }
    }
}

impl DeliveryReport {
    fn new(frame: &Frame, players: Option<usize>) -> Self {
        Self::with_id(frame.shared_id(), players)
    }

    /// The report of the keeper's resends, which no caller reads.
    pub(super) fn new_resend() -> Self {
        Self::with_id(Arc::from(""), None)
    }

    fn with_id(id: Arc<str>, players: Option<usize>) -> Self {
        Self {
            id,
            queued_for: None,
            awaiting_ack: None,
            delivered: 0,
            websocket: 0,
            sse: 0,
            failed: 0,
            queued: false,
            players,
            nodes: None,
            unanswered: None,
        }
    }

    /// The report of a publish in the cluster's log that this node has not applied yet.
    pub(super) fn unapplied(id: Arc<str>, players: Option<usize>) -> Self {
        Self::with_id(id, players)
    }

    /// Adds the other nodes' answers (`others`) to this node's counts, lists every node that
    /// answered (this one first, when it did: `here`) and names the `peers` that did not.
    pub(super) fn add_nodes(
        &mut self,
        here: Option<NodeDelivery>,
        others: Vec<NodeDelivery>,
        peers: &[Arc<str>],
    ) {
        for node in &others {
            self.delivered += node.delivered;
            self.websocket += node.websocket;
            self.sse += node.sse;
            self.failed += node.failed;
            self.queued |= node.queued;
            if let (Some(players), Some(more)) = (self.players.as_mut(), node.players) {
                *players += more;
            }
        }
        let missing: Vec<Arc<str>> = peers
            .iter()
            .filter(|peer| !others.iter().any(|n| n.node == **peer))
            .cloned()
            .collect();
        self.unanswered.get_or_insert_with(Vec::new).extend(missing);
        self.nodes = Some(here.into_iter().chain(others).collect());
    }
}

impl Hub {
    /// Sends `message` to every live connection of `player_id`, both kinds. A player with
    /// none (known or not) gets it in its pending queue, delivered on its next connect
    /// (`queued: true`); see [`DeliverySettings`](super::DeliverySettings).
    ///
    /// On a hub with a [backplane](super::Backplane) this reaches this node's connections
    /// only; [`Hub::publish`] reaches the cluster's.
    pub fn send_to_player(&self, player_id: &str, message: &Message) -> DeliveryReport {
        self.warn_if_clustered();
        let publish = self.prepare(message, None);
        self.player_delivery(player_id, &publish)
    }

    /// Delivers `publish` to `player_id`'s connections, or its pending queue.
    pub(super) fn player_delivery(&self, player_id: &str, publish: &Publish) -> DeliveryReport {
        let mut report = DeliveryReport::new(&publish.frame, None);
        let mut failed = Vec::new();
        let known = {
            let registry = self.read();
            match registry.players.get_key_value(player_id) {
                Some((key, player)) => {
                    self.deliver_to_player(key, player, publish, &mut report, &mut failed);
                    true
                }
                None => false,
            }
        };
        if !known && self.inner.settings.delivery.pending_count > 0 {
            self.queue_for_unknown(player_id, publish, &mut report, &mut failed);
        }
        self.finish(&report, failed);
        report
    }

    /// A player the hub does not know yet: an entry of its own to queue into (unless the
    /// hub's pending total is reached), forgotten after the grace and state TTL like any
    /// idle player.
    fn queue_for_unknown(
        &self,
        player_id: &str,
        publish: &Publish,
        report: &mut DeliveryReport,
        failed: &mut Vec<Arc<Connection>>,
    ) {
        let settings = &self.inner.settings.delivery;
        if self.inner.totals.pending() >= settings.pending_total {
            self.count_dropped(0, 1);
            return;
        }
        let mut registry = self.write();
        let registry = &mut *registry;
        let key = super::shared_key(&registry.players, player_id);
        let player = registry.players.entry(key.clone()).or_default();
        self.deliver_to_player(&key, player, publish, report, failed);
        self.mark_idle_if_unused(registry, &key, publish.meta.at);
    }

    /// Sends `message` to every connection of every member of `room`, except the players
    /// in `exclude`; a member with no live connection gets it in its pending queue.
    ///
    /// On a hub with a [backplane](super::Backplane) this reaches this node's connections
    /// only; [`Hub::publish`] reaches the cluster's.
    pub fn broadcast_to_room(
        &self,
        room: &str,
        message: &Message,
        exclude: &[&str],
    ) -> DeliveryReport {
        self.warn_if_clustered();
        let publish = self.prepare(message, Some(room));
        self.room_delivery(room, exclude, &publish)
    }

    /// Delivers `publish` to the members of `room` but `exclude`.
    pub(super) fn room_delivery(
        &self,
        room: &str,
        exclude: &[&str],
        publish: &Publish,
    ) -> DeliveryReport {
        let excluded = Excluded::new(exclude);
        let mut report = DeliveryReport::new(&publish.frame, Some(0));
        let mut failed = Vec::new();
        {
            let registry = self.read();
            if let Some(members) = registry.rooms.get(room) {
                let mut batch = Batch::new();
                for member in members {
                    if excluded.contains(member) {
                        continue;
                    }
                    if let Some(player) = registry.players.get(member) {
                        if batch.push(member, player) {
                            self.deliver_batch(&mut batch, publish, &mut report, &mut failed);
                        }
                    }
                }
                self.deliver_batch(&mut batch, publish, &mut report, &mut failed);
            }
        }
        self.finish(&report, failed);
        report
    }

    /// Sends `message` to every connection of every player, except the players in
    /// `exclude`; a player the hub knows that has no live connection (in its grace or
    /// state TTL) gets it in its pending queue.
    ///
    /// On a hub with a [backplane](super::Backplane) this reaches this node's connections
    /// only; [`Hub::publish`] reaches the cluster's.
    pub fn broadcast_global(&self, message: &Message, exclude: &[&str]) -> DeliveryReport {
        self.warn_if_clustered();
        let publish = self.prepare(message, None);
        self.global_delivery(exclude, &publish)
    }

    /// Delivers `publish` to every player but `exclude`.
    pub(super) fn global_delivery(&self, exclude: &[&str], publish: &Publish) -> DeliveryReport {
        let excluded = Excluded::new(exclude);
        let mut report = DeliveryReport::new(&publish.frame, Some(0));
        let mut failed = Vec::new();
        {
            let registry = self.read();
            let mut batch = Batch::new();
            for (player_id, player) in &registry.players {
                if !excluded.contains(player_id) && batch.push(player_id, player) {
                    self.deliver_batch(&mut batch, publish, &mut report, &mut failed);
                }
            }
            self.deliver_batch(&mut batch, publish, &mut report, &mut failed);
        }
        self.finish(&report, failed);
        report
    }

    /// Says once per hub that a synchronous publish on a clustered hub stays on this node.
    fn warn_if_clustered(&self) {
        if self.backplane().is_some()
            && !self
                .inner
                .warned_local_publish
                .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "a synchronous publish (send_to_player, broadcast_to_room, broadcast_global) on \
                 a hub with a backplane reaches this node's connections only: use Hub::publish \
                 to reach the cluster (said once)"
            );
        }
    }

    pub(super) fn encode(&self, message: &Message, room: Option<&str>) -> Frame {
        Frame::encode(self.next_id(), message, room)
    }

    /// The next envelope id: the hub's epoch and its next sequence number.
    pub(super) fn next_id(&self) -> Arc<str> {
        let sequence = self.inner.next_message.fetch_add(1, Ordering::Relaxed);
        format!("{}-{sequence}", self.inner.epoch).into()
    }

    fn prepare(&self, message: &Message, room: Option<&str>) -> Publish {
        Publish::new(self, self.encode(message, room), message)
    }

    /// Delivers `publish` to the players of `batch`, and empties it.
    fn deliver_batch(
        &self,
        batch: &mut Batch<'_>,
        publish: &Publish,
        report: &mut DeliveryReport,
        failed: &mut Vec<Arc<Connection>>,
    ) {
        for (player_id, player) in batch.players.drain(..) {
            self.deliver_to_player(player_id, player, publish, report, failed);
        }
    }

    fn deliver_to_player(
        &self,
        player_id: &Arc<str>,
        player: &Player,
        publish: &Publish,
        report: &mut DeliveryReport,
        failed: &mut Vec<Arc<Connection>>,
    ) {
        let reached_before = report.delivered;
        // Held while the outboxes are written: the replay buffer has the order every
        // connection of the player got.
        let mut mailbox = player
            .mailbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for connection in &player.connections {
            self.send_frame(connection, &publish.frame, report, failed);
        }
        let reached = report.delivered - reached_before;
        // In a cluster, pending only with no connection anywhere as the log has it: every
        // node decides the same at the same place in the log.
        let connected = if self.backplane().is_some() {
            player.in_log()
        } else {
            reached
        };
        let recorded = mailbox.record(
            &publish.frame,
            &publish.meta,
            connected,
            &self.inner.settings.delivery,
            &self.inner.totals,
        );
        if recorded.awaiting {
            *report.awaiting_ack.get_or_insert(0) += 1;
            if let Some(next) = mailbox.schedule() {
                self.schedule_resend(next, player_id);
            }
        }
        drop(mailbox);
        if recorded.queued {
            report.queued = true;
            *report.queued_for.get_or_insert(0) += 1;
        }
        self.count_dropped(recorded.dropped_expired, recorded.dropped_overflow);
        self.settle(player_id, recorded.settled);
        if let Some(players) = report.players.as_mut() {
            *players += usize::from(reached > 0);
        }
    }

    /// Puts `frame` in `connection`'s outbox, counting it in `report`; a connection that
    /// cannot take it is ended and added to `failed`.
    pub(super) fn send_frame(
        &self,
        connection: &Arc<Connection>,
        frame: &Frame,
        report: &mut DeliveryReport,
        failed: &mut Vec<Arc<Connection>>,
    ) {
        if connection.end_reason().is_some() {
            // Ending already (its transport is closing it): it cannot take the message.
            // Removed now, so it is counted once.
            report.failed += 1;
            failed.push(connection.clone());
            return;
        }
        match connection.outbox.try_send(frame.clone()) {
            Ok(free) => {
                report.delivered += 1;
                match connection.kind {
                    ConnectionKind::WebSocket => report.websocket += 1,
                    ConnectionKind::Sse => report.sse += 1,
                }
                let capacity = self.inner.settings.outbox_capacity;
                if free < capacity / 4 {
                    connection.set_outbox_high(true);
                } else if free > capacity / 2 {
                    connection.set_outbox_high(false);
                }
            }
            Err(SendError::Full) => {
                report.failed += 1;
                if let Some(observer) = self.observer() {
                    observer.outbox_overflow();
                }
                connection.end(DisconnectReason::SlowConsumer);
                failed.push(connection.clone());
            }
            Err(SendError::Closed) => {
                report.failed += 1;
                connection.end(DisconnectReason::ClientClosed);
                failed.push(connection.clone());
            }
        }
    }

    /// Reports the delivery to the observer and removes the connections that failed.
    pub(super) fn finish(&self, report: &DeliveryReport, failed: Vec<Arc<Connection>>) {
        self.inner
            .figures
            .delivered(report.delivered, report.failed);
        if let Some(observer) = self.observer() {
            observer.delivered(Transport::WebSocket, report.websocket as u64);
            observer.delivered(Transport::Sse, report.sse as u64);
            if report.failed > 0 {
                observer.delivery_failed(report.failed as u64);
            }
            if let Some(queued) = report.queued_for {
                observer.queued(queued as u64, self.inner.totals.pending() as u64);
            }
        }
        self.remove_failed(failed);
    }

    fn remove_failed(&self, failed: Vec<Arc<Connection>>) {
        for connection in failed {
            let reason = connection
                .end_reason()
                .unwrap_or(DisconnectReason::ClientClosed);
            tracing::warn!(
                connection_id = %connection.id,
                player_id = &*connection.player_id,
                kind = connection.kind.as_str(),
                reason = reason.code(),
                "connection failed during delivery; removed"
            );
            self.remove(&connection, reason, None);
        }
    }
}

/// One publish: its frame, and what the mailboxes keep of it.
pub(super) struct Publish {
    frame: Frame,
    meta: Meta,
}

impl Publish {
    /// The publish of `message` as `frame`, now: counted in the hub's figures.
    pub(super) fn new(hub: &Hub, frame: Frame, message: &Message) -> Self {
        hub.inner.figures.published();
        let meta = Meta::new(
            &hub.inner.settings.delivery,
            Instant::now(),
            message.ttl(),
            message.priority(),
            message.wants_ack(),
        );
        Self { frame, meta }
    }
}

/// Players of a broadcast, looked up a batch ahead of their delivery.
///
/// A delivery takes locks (each an atomic read-modify-write, which orders every memory
/// access around it), so the cache misses of one recipient cannot overlap those of the
/// next. The lookups of a batch have no such fence between them: the processor overlaps
/// their misses (hashing the id, finding the player, reading its first connection), and
/// the deliveries that follow find what they read in cache.
struct Batch<'a> {
    players: Vec<(&'a Arc<str>, &'a Player)>,
}

/// Players looked up ahead: enough to overlap many misses, few enough that what they read
/// stays in the core's own cache until delivered.
const BATCH: usize = 64;

impl<'a> Batch<'a> {
    fn new() -> Self {
        Self {
            players: Vec::with_capacity(BATCH),
        }
    }

    /// Adds a player (reading the first cache lines its delivery will need); `true` once
    /// the batch is full.
    fn push(&mut self, player_id: &'a Arc<str>, player: &'a Player) -> bool {
        if let Some(connection) = player.connections.first() {
            std::hint::black_box(connection.end_reason());
        }
        self.players.push((player_id, player));
        self.players.len() >= BATCH
    }
}

/// The players a broadcast skips: a slice scan for a few, a set for many.
enum Excluded<'a> {
    Few(&'a [&'a str]),
    Many(HashSet<&'a str>),
}

impl<'a> Excluded<'a> {
    fn new(exclude: &'a [&'a str]) -> Self {
        if exclude.len() <= 16 {
            Self::Few(exclude)
        } else {
            Self::Many(exclude.iter().copied().collect())
        }
    }

    fn contains(&self, player_id: &str) -> bool {
        match self {
            Self::Few(few) => few.contains(&player_id),
            Self::Many(many) => many.contains(player_id),
        }
    }
}
