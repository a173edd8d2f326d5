//! The Hub: the one source of truth for connections, rooms and presence (SPEC §1, §2, §4).
//!
//! A player may hold several connections at once, WebSocket and SSE alike; every message
//! for the player goes to all of them. Room membership belongs to the player, so it holds
//! across all of its connections and reconnects. A player is online while any connection
//! lives, `reconnecting` for a grace period after the last one ends, then offline.
//!
//! Transports register through [`Hub::register`], which returns a [`ConnectionGuard`]
//! and the connection's [`Outbox`]. Dropping the guard is the only way a connection leaves
//! the hub, so every ending path cleans up the same way. The hub owns every ending it
//! decides (credential expiry, [`disconnect_player`](Hub::disconnect_player), shutdown):
//! it sets the connection's end reason, and the transport, which only watches that signal,
//! tells the client and closes.
//!
//! The modules follow the concerns: `registry` (registration and removal), `delivery`
//! (publishing and reports), `rooms`, `events` (what subscribers hear), `guard` (a
//! connection's life), `sessions`, `presence` (grace and state TTL), `heartbeat`,
//! `inbound` (client messages), `deadlines` (credential expiry) and `keeper` (the one timer
//! task that does what is due).
//!
//! ```
//! use dualcast::{ConnectionKind, Hub, Message, Presence, Registration};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = Hub::new();
//! let (guard, mut outbox) = hub.register(Registration::new("alice", ConnectionKind::Sse)).unwrap();
//! hub.join_room("alice", "lobby");
//!
//! let report = hub.broadcast_to_room("lobby", &Message::json("chat", json!({"text": "hi"})), &[]);
//! assert_eq!((report.delivered, report.sse, report.players), (1, 1, Some(1)));
//! let frame = outbox.recv().await.unwrap();
//! assert!(frame.json().contains(r#""room":"lobby""#));
//!
//! assert_eq!(hub.presence("alice"), Presence::Online);
//! drop(guard);
//! // Within the grace period a reconnect keeps the player's rooms and session.
//! assert_eq!(hub.presence("alice"), Presence::Reconnecting);
//! # });
//! ```

mod admission;
mod backplane;
mod cluster;
mod deadlines;
mod delivery;
mod events;
mod figures;
mod guard;
mod heartbeat;
mod inbound;
mod keeper;
mod mailbox;
mod presence;
mod recovery;
mod registry;
mod rooms;
mod sessions;

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

pub use admission::HubAdmission;
pub use backplane::{
    Audience, Backplane, BackplaneError, BackplaneState, BackplaneStatus, BoxFuture, LogEntries,
    LogSink,
};
pub use delivery::{DeliveryReport, NodeDelivery};
pub use events::{HubEvent, Presence};
pub use figures::{
    percentage, Census, ClusterFigures, EstablishmentFigures, HealthCount, HealthTrends,
    Performance,
};
pub(crate) use guard::EndWatch;
pub use guard::{ConnectionGuard, Outbox};
pub use heartbeat::HeartbeatSettings;
pub(crate) use inbound::{Content, Handling, Received};
pub use mailbox::{AckOutcome, DeliverySettings};
pub use registry::{RegisterError, Registration};
pub(crate) use sessions::mint_session_id;
pub use sessions::{SessionBegun, SessionInfo};

use crate::connection::{ConnectionInfo, DisconnectReason};
use crate::inbound::{InboundSettings, MessageHandler};
use dualcast_layers::metrics::Observer;
use registry::Registry;

/// The longest grace or state TTL: far enough to mean "forever", near enough that adding it
/// to an instant cannot overflow.
pub(crate) const LONGEST_PERIOD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long [`Hub::shutdown_on`] waits for connections to finish closing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Settings of a [`Hub`].
#[derive(Clone)]
#[must_use]
pub struct HubSettings {
    outbox_capacity: usize,
    event_capacity: usize,
    pub(super) strict_sessions: bool,
    pub(super) remembered_sessions: usize,
    pub(super) state_ttl: Duration,
    pub(super) presence_grace: Duration,
    pub(super) heartbeat: HeartbeatSettings,
    pub(super) delivery: DeliverySettings,
    pub(super) inbound: InboundSettings,
    pub(super) observer: Option<Arc<dyn Observer>>,
    pub(super) message_handler: Option<MessageHandler>,
    pub(super) backplane: Option<Arc<dyn Backplane>>,
    pub(super) report_wait: Duration,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            outbox_capacity: 256,
            event_capacity: 1024,
            strict_sessions: false,
            remembered_sessions: 16,
            state_ttl: Duration::from_secs(300),
            presence_grace: Duration::from_secs(10),
            heartbeat: HeartbeatSettings::default(),
            delivery: DeliverySettings::default(),
            inbound: InboundSettings::default(),
            observer: None,
            message_handler: None,
            backplane: None,
            report_wait: Duration::from_millis(250),
        }
    }
}

impl fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSettings")
            .field("outbox_capacity", &self.outbox_capacity)
            .field("event_capacity", &self.event_capacity)
            .field("strict_sessions", &self.strict_sessions)
            .field("remembered_sessions", &self.remembered_sessions)
            .field("state_ttl", &self.state_ttl)
            .field("presence_grace", &self.presence_grace)
            .field("heartbeat", &self.heartbeat)
            .field("delivery", &self.delivery)
            .field("inbound", &self.inbound)
            .field("observer", &self.observer.is_some())
            .field("message_handler", &self.message_handler.is_some())
            .field(
                "backplane",
                &self.backplane.as_ref().map(|backplane| backplane.node_id()),
            )
            .field("report_wait", &self.report_wait)
            .finish()
    }
}

impl HubSettings {
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

    /// Strict sessions (SPEC §3): a connection naming a session that is neither current nor
    /// replaced is refused (`409 UNKNOWN_SESSION`) unless the session was begun through
    /// [`Hub::begin_session`] (`POST /api/connections/{player_id}/session`). Default: off
    /// (a new session takes over).
    pub fn strict_sessions(mut self, on: bool) -> Self {
        self.strict_sessions = on;
        self
    }

    /// Replaced sessions remembered per player, refused when named again; the oldest is
    /// forgotten first. Default: 16. Minimum: 1.
    pub fn remembered_sessions(mut self, count: usize) -> Self {
        self.remembered_sessions = count.max(1);
        self
    }

    /// How long a player's state (its session, the sessions it replaced, its rooms) is kept
    /// once it is offline, so that a reconnect restores it; then the player is forgotten.
    /// The player is forgotten the presence grace and this TTL after it was last left
    /// without a connection (its last connection ended, or it was put in a room by the API
    /// without having one). Default: 5 minutes (SPEC §5). Maximum: 100 years.
    pub fn state_ttl(mut self, ttl: Duration) -> Self {
        self.state_ttl = ttl.min(LONGEST_PERIOD);
        self
    }

    /// How long a player whose last connection ended stays `reconnecting` (no `offline`
    /// event; rooms and session kept) before it is `offline`. A logout skips it. Zero turns
    /// the grace off. Default: 10 s (SPEC §5). Maximum: 100 years.
    pub fn presence_grace(mut self, grace: Duration) -> Self {
        self.presence_grace = grace.min(LONGEST_PERIOD);
        self
    }

    /// When connections registered with
    /// [`heartbeats`](Registration::heartbeats) (every WebSocket) are pinged and when they
    /// are given up. Default: [`HeartbeatSettings::default`] (ping after 25 s of quiet, end
    /// after 60 s of silence).
    pub fn heartbeat(mut self, heartbeat: HeartbeatSettings) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The replay buffers, pending queues and acknowledgements (SPEC §4): their bounds,
    /// the default message TTL and the resend backoff. Default:
    /// [`DeliverySettings::default`] (100 messages for 5 minutes per player).
    pub fn delivery(mut self, delivery: DeliverySettings) -> Self {
        self.delivery = delivery;
        self
    }

    /// Limits on what clients send (size, rate, messages in the handler at once).
    /// Default: [`InboundSettings::default`].
    pub fn inbound(mut self, inbound: InboundSettings) -> Self {
        self.inbound = inbound;
        self
    }

    /// The host's handler of client messages (SPEC §6); see [`Hub::set_message_handler`].
    /// Default: none (a client message of a type the hub does not handle itself is answered
    /// with an `UNKNOWN_TYPE` error).
    pub fn message_handler(mut self, handler: MessageHandler) -> Self {
        self.message_handler = Some(handler);
        self
    }

    /// Reports what only the hub sees (connections opened and closed, deliveries, failures,
    /// overflows, sessions replaced) to `observer`, e.g. a
    /// [`Metrics`](dualcast_layers::metrics::Metrics). Default: none.
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Shares this hub's publishes and room memberships with the other nodes of a cluster
    /// through `backplane` (SPEC §10), such as a
    /// `RedisBackplane`: [`Hub::publish`] and
    /// [`Hub::set_room_member`] then act on every node. Build the hub inside a tokio
    /// runtime: the backplane starts its tasks then. Default: none (this hub is the whole
    /// system).
    ///
    /// Each node announces in the log the connections it opens and closes, the sessions
    /// it begins, logouts and acknowledgements, so presence, the per-player limit, session
    /// takeover, pending queues and replay hold across nodes. Not shared yet: the
    /// monitoring figures, and what a node started later missed (older sessions,
    /// memberships and messages).
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Some(Arc::new(backplane));
        self
    }

    /// How long a [`Hub::publish`] on a hub with a backplane waits for the other nodes'
    /// counts (and for this node to apply the publish) before it answers with what came.
    /// Default: 250 ms. Maximum: 10 s.
    pub fn report_wait(mut self, wait: Duration) -> Self {
        self.report_wait = wait.min(Duration::from_secs(10));
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        Hub::with_settings(self)
    }
}

/// The hub: a cheap-to-clone handle over shared state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    settings: HubSettings,
    epoch: Box<str>,
    next_message: AtomicU64,
    next_connection: AtomicU64,
    registry: RwLock<Registry>,
    events: broadcast::Sender<HubEvent>,
    guards: AtomicUsize,
    guards_gone: Notify,
    shutting_down: AtomicBool,
    keeper_started: AtomicBool,
    /// Set (and waiters woken) once a [`Hub::shutdown_on`] future finished draining.
    drained: AtomicBool,
    drained_notify: Notify,
    /// Wakes the keeper: something is due earlier than it thought, or the hub is gone.
    keeper_wake: Arc<Notify>,
    /// What every player's mailbox holds together.
    totals: mailbox::Totals,
    /// Establishment times, delivery counts and health samples (seed 004's figures).
    figures: figures::Figures,
    /// When the keeper resends unacknowledged messages, by player.
    resends: std::sync::Mutex<recovery::ResendQueue>,
    /// Set once: by the settings, or by [`Hub::set_observer`].
    observer: OnceLock<Arc<dyn Observer>>,
    /// Set once: by the settings, or by [`Hub::set_message_handler`].
    message_handler: OnceLock<MessageHandler>,
    /// The number of this node's next entry in the cluster's log.
    next_request: AtomicU64,
    /// This node's entries waiting to come back from the log.
    waiting: backplane::Waiting,
    /// Whether the warning about a synchronous publish on a clustered hub was given.
    warned_local_publish: AtomicBool,
    /// With a backplane: what this node tells the others, in order.
    announcer: Option<cluster::Announcer>,
    /// With a backplane: the last log entry applied.
    log_position: std::sync::Mutex<Option<(u64, u64)>>,
    /// With a backplane: nodes that stopped beating, whose late announcements are ignored
    /// until they send their list again.
    gone_nodes: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    /// With a backplane: the nodes whose list this node has had since it started (what
    /// they know of players' sessions and rooms), and a wake-up for each new one.
    listed_nodes: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    node_listed: Notify,
    /// With a backplane: whether every peer's list has come since this node started.
    cluster_synced: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.keeper_wake.notify_one();
    }
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
    /// A hub with default settings ([`HubSettings`]).
    #[must_use]
    pub fn new() -> Self {
        Self::with_settings(HubSettings::default())
    }

    /// Settings to build a hub from.
    pub fn builder() -> HubSettings {
        HubSettings::default()
    }

    /// A hub with `settings`.
    #[must_use]
    pub fn with_settings(settings: HubSettings) -> Self {
        let (events, _) = broadcast::channel(settings.event_capacity);
        let has_backplane = settings.backplane.is_some();
        let observer = settings.observer.clone();
        let message_handler = settings.message_handler.clone();
        let hub = Self {
            inner: Arc::new(Inner {
                epoch: random_epoch().into_boxed_str(),
                settings,
                next_message: AtomicU64::new(1),
                next_connection: AtomicU64::new(1),
                registry: RwLock::new(Registry::default()),
                events,
                guards: AtomicUsize::new(0),
                guards_gone: Notify::new(),
                shutting_down: AtomicBool::new(false),
                keeper_started: AtomicBool::new(false),
                drained: AtomicBool::new(false),
                drained_notify: Notify::new(),
                keeper_wake: Arc::new(Notify::new()),
                totals: mailbox::Totals::default(),
                figures: figures::Figures::default(),
                resends: std::sync::Mutex::default(),
                observer: OnceLock::new(),
                message_handler: OnceLock::new(),
                next_request: AtomicU64::new(1),
                waiting: backplane::Waiting::default(),
                warned_local_publish: AtomicBool::new(false),
                announcer: has_backplane.then(cluster::Announcer::new),
                log_position: std::sync::Mutex::new(None),
                gone_nodes: std::sync::Mutex::default(),
                listed_nodes: std::sync::Mutex::default(),
                node_listed: Notify::new(),
                cluster_synced: AtomicBool::new(false),
            }),
        };
        hub.start_backplane();
        if let Some(observer) = observer {
            hub.set_observer(observer);
        }
        if let Some(handler) = message_handler {
            hub.set_message_handler(handler);
        }
        hub
    }

    /// Hands the client messages the hub does not handle itself (every type but `ping` and
    /// `ack`) to `handler`, unless the hub has a handler already; returns whether this one
    /// was taken. The handler's reply, if any, goes back to the sending connection only (or
    /// into the HTTP answer of `POST /api/messages`).
    ///
    /// The handler gets the hub in each [`ClientMessage`](crate::inbound::ClientMessage), so
    /// it need not hold one (a handler stored in the hub that holds the hub would keep it
    /// alive forever).
    pub fn set_message_handler(&self, handler: MessageHandler) -> bool {
        self.inner.message_handler.set(handler).is_ok()
    }

    pub(super) fn message_handler(&self) -> Option<&MessageHandler> {
        self.inner.message_handler.get()
    }

    /// Reports what only the hub sees to `observer` (see [`HubSettings::observer`]), unless
    /// the hub has an observer already; returns whether this one was taken.
    /// [`Dualcast::builder`](crate::Dualcast::builder) sets its metrics this way.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    pub(super) fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.inner.observer.get()
    }

    /// This hub's epoch: the prefix of every envelope id, new at every start.
    #[must_use]
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
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

    /// Whether [`shutdown`](Self::shutdown) has begun: new connections are refused.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Refuses new connections, ends every live one with `server_shutdown`, and resolves
    /// once every [`ConnectionGuard`] has been dropped (bound it with a timeout).
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        if !self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            if let Some(backplane) = self.backplane() {
                backplane.leave();
            }
        }
        {
            let registry = self.read();
            for connection in registry.players.values().flat_map(|p| &p.connections) {
                self.end_connection(connection, DisconnectReason::ServerShutdown);
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

    /// The shutdown signal for a server that is not [`serve`](crate::serve()), such as
    /// `axum::serve`: waits for `signal`, then shuts the hub down (every WebSocket gets its
    /// `1001 server_shutdown` close frame, every SSE stream its `disconnect` event), waits
    /// until the connections have left the hub (at most [`SHUTDOWN_GRACE`]) and resolves,
    /// so that the server's own graceful shutdown begins with the realtime connections
    /// already gone (SSE streams would otherwise hold it open forever).
    ///
    /// The server's graceful shutdown still waits for every HTTP connection to finish
    /// writing, and one whose client stopped reading never does: bound it with
    /// [`bounded_shutdown`](Self::bounded_shutdown).
    ///
    /// ```no_run
    /// # async fn run(listener: tokio::net::TcpListener, app: axum::Router, hub: dualcast::Hub) {
    /// let ctrl_c = async { let _ = tokio::signal::ctrl_c().await; };
    /// let server = axum::serve(listener, app).with_graceful_shutdown(hub.shutdown_on(ctrl_c));
    /// hub.bounded_shutdown(server, dualcast::SHUTDOWN_GRACE).await;
    /// # }
    /// ```
    pub fn shutdown_on(
        &self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let hub = self.clone();
        async move {
            signal.await;
            let open = hub.connection_count();
            tracing::info!(open, "shutting down: ending realtime connections");
            let drained = hub.shutdown();
            if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
                tracing::warn!(
                    open = hub.connection_count(),
                    "shutdown grace period over: connections still open"
                );
            }
            hub.inner.drained.store(true, Ordering::Release);
            hub.inner.drained_notify.notify_waiters();
        }
    }

    /// Runs `server` to its end, but no longer than `grace` once a
    /// [`shutdown_on`](Self::shutdown_on) future of this hub has resolved: a client that
    /// stopped reading cannot hold the server's own graceful shutdown open forever. Returns
    /// the server's output, or `None` when the grace ran out and the server future was
    /// dropped; return from `main` then, and the connections it still held end with the
    /// runtime.
    pub async fn bounded_shutdown<F: IntoFuture>(
        &self,
        server: F,
        grace: Duration,
    ) -> Option<F::Output> {
        let drained_then_grace = async {
            loop {
                let drained = self.inner.drained_notify.notified();
                if self.inner.drained.load(Ordering::Acquire) {
                    break;
                }
                drained.await;
            }
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            output = server.into_future() => Some(output),
            () = drained_then_grace => {
                tracing::warn!(
                    grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                    "the server's graceful shutdown outlasted its grace: dropping what is left"
                );
                None
            }
        }
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

/// The key already stored for `key` in `map`, so that one string is shared; a new one if none.
fn shared_key<V, S: std::hash::BuildHasher>(map: &HashMap<Arc<str>, V, S>, key: &str) -> Arc<str> {
    map.get_key_value(key)
        .map_or_else(|| Arc::from(key), |(stored, _)| stored.clone())
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod session_model_tests;
#[cfg(test)]
mod session_tests;

#[cfg(test)]
mod liveness_tests;

#[cfg(test)]
mod delivery_tests;

#[cfg(test)]
mod cluster_tests;
