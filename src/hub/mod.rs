//! The Hub: the one source of truth for connections, rooms and presence (SPEC §1, §2, §4).
//!
//! A player may hold several connections at once, WebSocket and SSE alike; every message
//! for the player goes to all of them. Room membership belongs to the player, so it holds
//! across all of its connections and reconnects. A player is online while any connection
//! lives.
//!
//! Transports register through [`Hub::register`], which returns a [`ConnectionGuard`]
//! and the connection's [`Outbox`]. Dropping the guard is the only way a connection leaves
//! the hub, so every ending path cleans up the same way.
//!
//! ```
//! use dualcast::{ConnectionKind, Hub, Message, Presence};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = Hub::new();
//! let (guard, mut outbox) = hub.register("alice", ConnectionKind::Sse, None).unwrap();
//! hub.join_room("alice", "lobby");
//!
//! let report = hub.broadcast_to_room("lobby", &Message::json("chat", json!({"text": "hi"})), &[]);
//! assert_eq!((report.delivered, report.sse, report.players), (1, 1, Some(1)));
//! let frame = outbox.recv().await.unwrap();
//! assert!(frame.json().contains(r#""room":"lobby""#));
//!
//! assert_eq!(hub.presence("alice"), Presence::Online);
//! drop(guard);
//! assert_eq!(hub.presence("alice"), Presence::Offline);
//! # });
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, Notify};

use crate::connection::{
    Connection, ConnectionId, ConnectionInfo, ConnectionKind, DisconnectReason, Health,
};
use crate::message::{Frame, Message};

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HubConfig {
    outbox_capacity: usize,
    event_capacity: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            outbox_capacity: 256,
            event_capacity: 1024,
        }
    }
}

impl HubConfig {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages a connection may have queued before it is ended as a slow consumer.
    /// Above three quarters of it the connection is `degraded`. Default: 256. Minimum: 1.
    pub fn outbox_capacity(mut self, capacity: usize) -> Self {
        self.outbox_capacity = capacity.max(1);
        self
    }

    /// Events kept for a lagging [`Hub::subscribe`] receiver. Default: 1024. Minimum: 1.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        Hub::with_config(self)
    }
}

/// Whether a player is reachable (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// At least one connection lives.
    Online,
    /// No connection lives.
    Offline,
}

/// Something that happened in the hub; see [`Hub::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubEvent {
    /// A connection registered.
    Connected {
        /// The connection.
        connection_id: ConnectionId,
        /// Its player.
        player_id: Arc<str>,
        /// Its transport.
        kind: ConnectionKind,
    },
    /// A connection left the hub.
    Disconnected {
        /// The connection.
        connection_id: ConnectionId,
        /// Its player.
        player_id: Arc<str>,
        /// Its transport.
        kind: ConnectionKind,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// A player's presence changed.
    Presence {
        /// The player.
        player_id: Arc<str>,
        /// Its new presence.
        presence: Presence,
    },
}

/// What a publish reached (SPEC §4); serializes to the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// The envelope id every recipient got.
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
    /// Whether the message was kept for later delivery. Always `false` until pending
    /// queues exist.
    pub queued: bool,
    /// Players reached (room and global broadcasts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub players: Option<usize>,
}

impl DeliveryReport {
    fn new(id: Arc<str>, players: Option<usize>) -> Self {
        Self {
            id,
            delivered: 0,
            websocket: 0,
            sse: 0,
            failed: 0,
            queued: false,
            players,
        }
    }
}

/// Why [`Hub::register`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The hub is shutting down.
    ShuttingDown,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShuttingDown => f.write_str("the server is shutting down"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// The hub: a cheap-to-clone handle over shared state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: HubConfig,
    epoch: Box<str>,
    next_message: AtomicU64,
    next_connection: AtomicU64,
    registry: RwLock<Registry>,
    events: broadcast::Sender<HubEvent>,
    guards: AtomicUsize,
    guards_gone: Notify,
    shutting_down: AtomicBool,
}

#[derive(Default)]
struct Registry {
    players: HashMap<Arc<str>, Player>,
    rooms: HashMap<Arc<str>, HashSet<Arc<str>>>,
    connections: usize,
}

#[derive(Default)]
struct Player {
    connections: Vec<Arc<Connection>>,
    rooms: HashSet<Arc<str>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("epoch", &self.inner.epoch)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with default settings ([`HubConfig`]).
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(HubConfig::default())
    }

    /// Settings to build a hub from.
    pub fn builder() -> HubConfig {
        HubConfig::default()
    }

    /// A hub with `config`.
    #[must_use]
    pub fn with_config(config: HubConfig) -> Self {
        let (events, _) = broadcast::channel(config.event_capacity);
        Self {
            inner: Arc::new(Inner {
                epoch: random_epoch().into_boxed_str(),
                config,
                next_message: AtomicU64::new(1),
                next_connection: AtomicU64::new(1),
                registry: RwLock::new(Registry::default()),
                events,
                guards: AtomicUsize::new(0),
                guards_gone: Notify::new(),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// This hub's epoch: the prefix of every envelope id, new at every start.
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// Registers a live connection of `player_id`.
    ///
    /// The guard keeps it in the hub until dropped; the outbox yields what is published
    /// to it. Other connections of the player, of either kind, are untouched.
    pub fn register(
        &self,
        player_id: &str,
        kind: ConnectionKind,
        session_id: Option<&str>,
    ) -> Result<(ConnectionGuard, Outbox), RegisterError> {
        let (sender, receiver) = mpsc::channel(self.inner.config.outbox_capacity);
        let id = ConnectionId(self.inner.next_connection.fetch_add(1, Ordering::Relaxed));
        let connection = {
            let mut registry = self.write();
            // Checked under the lock: `shutdown` sets the flag and then ends every connection
            // it finds, so a connection is either refused here or found and ended there.
            if self.inner.shutting_down.load(Ordering::Acquire) {
                return Err(RegisterError::ShuttingDown);
            }
            let player_id = shared_key(&registry.players, player_id);
            let connection = Arc::new(Connection::new(
                id,
                player_id.clone(),
                kind,
                session_id.map(Arc::from),
                sender,
            ));
            let player = registry.players.entry(player_id.clone()).or_default();
            player.connections.push(connection.clone());
            let came_online = player.connections.len() == 1;
            registry.connections += 1;
            self.inner.guards.fetch_add(1, Ordering::AcqRel);
            // Events are sent under the lock, so subscribers see them in registry order
            // (sending never blocks).
            self.emit(HubEvent::Connected {
                connection_id: id,
                player_id: player_id.clone(),
                kind,
            });
            if came_online {
                self.emit(HubEvent::Presence {
                    player_id,
                    presence: Presence::Online,
                });
            }
            connection
        };
        tracing::info!(
            connection_id = %id,
            player_id = &*connection.player_id,
            kind = kind.as_str(),
            session_id = session_id.unwrap_or(""),
            "connection opened"
        );
        Ok((
            ConnectionGuard {
                hub: self.clone(),
                connection: connection.clone(),
            },
            Outbox {
                receiver,
                connection,
            },
        ))
    }

    /// Sends `message` to every live connection of `player_id`, both kinds.
    pub fn send_to_player(&self, player_id: &str, message: &Message) -> DeliveryReport {
        let frame = self.encode(message, None);
        let mut report = DeliveryReport::new(frame.shared_id(), None);
        let mut failed = Vec::new();
        {
            let registry = self.read();
            if let Some(player) = registry.players.get(player_id) {
                self.deliver_to_player(player, &frame, &mut report, &mut failed);
            }
        }
        self.remove_failed(failed);
        report
    }

    /// Sends `message` to every connection of every member of `room`, except the players
    /// in `exclude`.
    pub fn broadcast_to_room(
        &self,
        room: &str,
        message: &Message,
        exclude: &[&str],
    ) -> DeliveryReport {
        let excluded = Excluded::new(exclude);
        let frame = self.encode(message, Some(room));
        let mut report = DeliveryReport::new(frame.shared_id(), Some(0));
        let mut failed = Vec::new();
        {
            let registry = self.read();
            if let Some(members) = registry.rooms.get(room) {
                for member in members {
                    if excluded.contains(member) {
                        continue;
                    }
                    if let Some(player) = registry.players.get(member) {
                        self.deliver_to_player(player, &frame, &mut report, &mut failed);
                    }
                }
            }
        }
        self.remove_failed(failed);
        report
    }

    /// Sends `message` to every connection of every player, except the players in
    /// `exclude`.
    pub fn broadcast_global(&self, message: &Message, exclude: &[&str]) -> DeliveryReport {
        let excluded = Excluded::new(exclude);
        let frame = self.encode(message, None);
        let mut report = DeliveryReport::new(frame.shared_id(), Some(0));
        let mut failed = Vec::new();
        {
            let registry = self.read();
            for (player_id, player) in &registry.players {
                if !excluded.contains(player_id) {
                    self.deliver_to_player(player, &frame, &mut report, &mut failed);
                }
            }
        }
        self.remove_failed(failed);
        report
    }

    /// Adds `player_id` to `room`; membership holds across all of its connections, and
    /// while it has none. Returns `true` if it was not a member yet.
    pub fn join_room(&self, player_id: &str, room: &str) -> bool {
        let mut registry = self.write();
        let registry = &mut *registry;
        let player_key = shared_key(&registry.players, player_id);
        let room_key = shared_key(&registry.rooms, room);
        let player = registry.players.entry(player_key.clone()).or_default();
        if !player.rooms.insert(room_key.clone()) {
            return false;
        }
        registry
            .rooms
            .entry(room_key)
            .or_default()
            .insert(player_key);
        true
    }

    /// Removes `player_id` from `room`. Returns `true` if it was a member.
    pub fn leave_room(&self, player_id: &str, room: &str) -> bool {
        let mut registry = self.write();
        let Some(player) = registry.players.get_mut(player_id) else {
            return false;
        };
        if !player.rooms.remove(room) {
            return false;
        }
        if player.connections.is_empty() && player.rooms.is_empty() {
            registry.players.remove(player_id);
        }
        if let Some(members) = registry.rooms.get_mut(room) {
            members.remove(player_id);
            if members.is_empty() {
                registry.rooms.remove(room);
            }
        }
        true
    }

    /// The members of `room`, sorted.
    #[must_use]
    pub fn room_members(&self, room: &str) -> Vec<String> {
        sorted(self.read().rooms.get(room))
    }

    /// The rooms `player_id` belongs to, sorted.
    #[must_use]
    pub fn rooms_of(&self, player_id: &str) -> Vec<String> {
        sorted(self.read().players.get(player_id).map(|p| &p.rooms))
    }

    /// Whether `player_id` has a live connection.
    #[must_use]
    pub fn presence(&self, player_id: &str) -> Presence {
        match self.read().players.get(player_id) {
            Some(player) if !player.connections.is_empty() => Presence::Online,
            _ => Presence::Offline,
        }
    }

    /// The live connections of `player_id`, oldest first.
    #[must_use]
    pub fn connections_of(&self, player_id: &str) -> Vec<ConnectionInfo> {
        self.read()
            .players
            .get(player_id)
            .map(|p| p.connections.iter().map(|c| c.info()).collect())
            .unwrap_or_default()
    }

    /// Live connections in the hub.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.read().connections
    }

    /// A receiver of [`HubEvent`]s from now on. A receiver that falls more than
    /// [`HubConfig::event_capacity`] events behind loses the oldest ones.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    /// Refuses new connections, ends every live one with `server_shutdown`, and resolves
    /// once every [`ConnectionGuard`] has been dropped (bound it with a timeout).
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.shutting_down.store(true, Ordering::Release);
        {
            let registry = self.read();
            for connection in registry.players.values().flat_map(|p| &p.connections) {
                connection.end(DisconnectReason::ServerShutdown);
            }
        }
        let inner = self.inner.clone();
        async move {
            loop {
                let gone = inner.guards_gone.notified();
                if inner.guards.load(Ordering::Acquire) == 0 {
                    return;
                }
                gone.await;
            }
        }
    }

    fn encode(&self, message: &Message, room: Option<&str>) -> Frame {
        let sequence = self.inner.next_message.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = format!("{}-{sequence}", self.inner.epoch).into();
        Frame::encode(id, message, room)
    }

    fn deliver_to_player(
        &self,
        player: &Player,
        frame: &Frame,
        report: &mut DeliveryReport,
        failed: &mut Vec<Arc<Connection>>,
    ) {
        let reached_before = report.delivered;
        for connection in &player.connections {
            if connection.end_reason().is_some() {
                // Ending already (its transport is closing it): it cannot take the message.
                // Removed now, so it is counted once.
                report.failed += 1;
                failed.push(connection.clone());
                continue;
            }
            match connection.outbox.try_send(frame.clone()) {
                Ok(()) => {
                    report.delivered += 1;
                    match connection.kind {
                        ConnectionKind::WebSocket => report.websocket += 1,
                        ConnectionKind::Sse => report.sse += 1,
                    }
                    let free = connection.outbox.capacity();
                    let capacity = self.inner.config.outbox_capacity;
                    if free < capacity / 4 {
                        connection.set_health(Health::Degraded);
                    } else if free > capacity / 2 && connection.health() == Health::Degraded {
                        connection.set_health(Health::Healthy);
                    }
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    report.failed += 1;
                    connection.end(DisconnectReason::SlowConsumer);
                    failed.push(connection.clone());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    report.failed += 1;
                    connection.end(DisconnectReason::ClientClosed);
                    failed.push(connection.clone());
                }
            }
        }
        if let Some(players) = report.players.as_mut() {
            *players += usize::from(report.delivered > reached_before);
        }
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
            self.remove(&connection, reason);
        }
    }

    /// Takes `connection` out of the registry if it is still there; idempotent.
    fn remove(&self, connection: &Arc<Connection>, reason: DisconnectReason) {
        let mut registry = self.write();
        let Some(player) = registry.players.get_mut(&*connection.player_id) else {
            return;
        };
        let before = player.connections.len();
        player.connections.retain(|c| c.id != connection.id);
        if player.connections.len() == before {
            return;
        }
        let went_offline = player.connections.is_empty();
        if went_offline && player.rooms.is_empty() {
            registry.players.remove(&*connection.player_id);
        }
        registry.connections -= 1;
        // Under the lock, like `register`'s events.
        self.emit(HubEvent::Disconnected {
            connection_id: connection.id,
            player_id: connection.player_id.clone(),
            kind: connection.kind,
            reason,
        });
        if went_offline {
            self.emit(HubEvent::Presence {
                player_id: connection.player_id.clone(),
                presence: Presence::Offline,
            });
        }
    }

    fn emit(&self, event: HubEvent) {
        // No subscriber is not an error.
        let _ = self.inner.events.send(event);
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The names in `set`, sorted; empty for `None`.
fn sorted(set: Option<&HashSet<Arc<str>>>) -> Vec<String> {
    let mut names: Vec<String> = set
        .into_iter()
        .flatten()
        .map(|name| name.to_string())
        .collect();
    names.sort_unstable();
    names
}

/// The key already stored for `key` in `map`, so that one string is shared; a new one if none.
fn shared_key<V>(map: &HashMap<Arc<str>, V>, key: &str) -> Arc<str> {
    map.get_key_value(key)
        .map_or_else(|| Arc::from(key), |(stored, _)| stored.clone())
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

fn random_epoch() -> String {
    let mut bytes = [0u8; 4];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: the start time still tells restarts apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps one connection in the hub; dropping it removes the connection, logs the ending
/// with its reason, and emits [`HubEvent::Disconnected`].
///
/// Owned by the WebSocket task or the SSE body, so every way a connection can end cleans
/// up the same way.
pub struct ConnectionGuard {
    hub: Hub,
    connection: Arc<Connection>,
}

/// A connection's end signal without its ownership: lets the code that writes a stream
/// notice that the connection ended even while it cannot poll the stream's body.
#[derive(Clone)]
pub(crate) struct EndWatch(Arc<Connection>);

impl EndWatch {
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        self.0.poll_end(cx)
    }

    pub(crate) fn end(&self, reason: DisconnectReason) {
        self.0.end(reason);
    }
}

impl ConnectionGuard {
    pub(crate) fn end_watch(&self) -> EndWatch {
        EndWatch(self.connection.clone())
    }

    /// The connection's id.
    #[must_use]
    pub fn id(&self) -> ConnectionId {
        self.connection.id
    }

    /// The connection's player.
    #[must_use]
    pub fn player_id(&self) -> &str {
        &self.connection.player_id
    }

    /// The connection's transport.
    #[must_use]
    pub fn kind(&self) -> ConnectionKind {
        self.connection.kind
    }

    /// A snapshot of the connection's metadata.
    #[must_use]
    pub fn info(&self) -> ConnectionInfo {
        self.connection.info()
    }

    /// Records a sign of life from the client (moves `last_seen`).
    pub fn touch(&self) {
        self.connection.touch();
    }

    /// Ends the connection with `reason`, unless it already has one; the transport sees it
    /// through [`poll_end`](Self::poll_end).
    pub fn end(&self, reason: DisconnectReason) {
        self.connection.end(reason);
    }

    /// The reason the connection is ending, once it is.
    #[must_use]
    pub fn end_reason(&self) -> Option<DisconnectReason> {
        self.connection.end_reason()
    }

    /// Ready with the reason once the hub (or anyone) ended the connection.
    pub fn poll_end(&self, cx: &mut Context<'_>) -> Poll<DisconnectReason> {
        self.connection.poll_end(cx)
    }
}

impl fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("connection", &self.connection.id)
            .finish_non_exhaustive()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.connection.end(DisconnectReason::ClientClosed);
        let reason = self
            .connection
            .end_reason()
            .unwrap_or(DisconnectReason::ClientClosed);
        self.hub.remove(&self.connection, reason);
        let lived = self.connection.established_at.elapsed().unwrap_or_default();
        tracing::info!(
            connection_id = %self.connection.id,
            player_id = &*self.connection.player_id,
            kind = self.connection.kind.as_str(),
            session_id = self.connection.session_id.as_deref().unwrap_or(""),
            reason = reason.code(),
            lived_ms = lived.as_millis() as u64,
            "connection closed"
        );
        if self.hub.inner.guards.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.hub.inner.guards_gone.notify_waiters();
        }
    }
}

/// The queue of frames published to one connection, drained by its transport.
#[derive(Debug)]
pub struct Outbox {
    receiver: mpsc::Receiver<Frame>,
    connection: Arc<Connection>,
}

impl Outbox {
    /// The next frame; `None` once the hub can send no more.
    pub async fn recv(&mut self) -> Option<Frame> {
        self.receiver.recv().await
    }

    /// Polls for the next frame.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        self.receiver.poll_recv(cx)
    }

    /// A frame if one is ready now.
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.receiver.try_recv().ok()
    }

    /// The connection this outbox feeds.
    #[must_use]
    pub fn connection_id(&self) -> ConnectionId {
        self.connection.id
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message() -> Message {
        Message::json("test", json!({"n": 1}))
    }

    #[test]
    fn a_dead_connection_found_during_delivery_is_removed_and_reported_as_failed() {
        let hub = Hub::new();
        let mut events = hub.subscribe();
        let (_live_guard, _live_outbox) = hub
            .register("alice", ConnectionKind::WebSocket, None)
            .unwrap();
        let (dead_guard, dead_outbox) = hub.register("alice", ConnectionKind::Sse, None).unwrap();
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
        let hub = HubConfig::new().outbox_capacity(4).build();
        let (guard, _outbox) = hub
            .register("bob", ConnectionKind::WebSocket, None)
            .unwrap();
        for _ in 0..4 {
            assert_eq!(hub.send_to_player("bob", &message()).delivered, 1);
        }
        assert_eq!(guard.info().health, Health::Degraded);
        let report = hub.send_to_player("bob", &message());
        assert_eq!((report.delivered, report.failed), (0, 1));
        assert_eq!(guard.end_reason(), Some(DisconnectReason::SlowConsumer));
        assert_eq!(hub.presence("bob"), Presence::Offline);
    }

    #[test]
    fn room_membership_belongs_to_the_player_and_outlives_its_connections() {
        let hub = Hub::new();
        assert!(hub.join_room("carol", "lobby"));
        assert!(!hub.join_room("carol", "lobby"));
        let (guard, _outbox) = hub.register("carol", ConnectionKind::Sse, None).unwrap();
        drop(guard);
        assert_eq!(hub.rooms_of("carol"), ["lobby"]);
        assert!(hub.leave_room("carol", "lobby"));
        assert!(hub.room_members("lobby").is_empty());
        assert_eq!(
            hub.read().players.len(),
            0,
            "nothing is kept for a player with no rooms and no connections"
        );
    }

    #[test]
    fn long_exclusion_lists_exclude_the_same_players_as_short_ones() {
        let hub = Hub::new();
        let players: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
        let _connections: Vec<_> = players
            .iter()
            .map(|p| {
                hub.join_room(p, "r");
                hub.register(p, ConnectionKind::Sse, None).unwrap()
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
            .register("dave", ConnectionKind::WebSocket, None)
            .unwrap();
        let done = hub.shutdown();
        assert_eq!(guard.end_reason(), Some(DisconnectReason::ServerShutdown));
        assert_eq!(
            hub.register("erin", ConnectionKind::Sse, None).unwrap_err(),
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
        let (guard, _outbox) = hub.register("fay", ConnectionKind::Sse, None).unwrap();
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
}
