//! The registry of live connections: [`Registration`] in, [`ConnectionGuard`] out, and the
//! one place a connection leaves.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dualcast_layers::session::SessionRefused;
use dualcast_layers::{OwnedLeases, Role};
use tokio::time::Instant;

use super::deadlines::Deadlines;
use super::events::HubEvent;
use super::guard::{ConnectionGuard, Outbox};
use super::presence::PlayerQueue;
use super::sessions::CurrentSession;
use super::Hub;
use crate::connection::{
    Connection, ConnectionId, ConnectionKind, DisconnectReason, NewConnection,
};
use crate::inbound::InboundBudget;

/// Everything the hub is told about a connection when it opens; see [`Hub::register`].
///
/// ```
/// use dualcast::{ConnectionKind, Hub, Registration};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let hub = Hub::new();
/// let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
/// let (guard, _outbox) = hub
///     .register(
///         Registration::new("alice", ConnectionKind::Sse)
///             .session("match-7")
///             .credential_deadline(deadline),
///     )
///     .unwrap();
/// assert_eq!(guard.info().session_id.as_deref(), Some("match-7"));
/// # });
/// ```
#[derive(Debug)]
#[must_use]
pub struct Registration {
    pub(super) player: Arc<str>,
    pub(super) kind: ConnectionKind,
    pub(super) session: Option<Arc<str>>,
    pub(super) credential_deadline: Option<Instant>,
    pub(super) requested_at: Option<std::time::Instant>,
    pub(super) resume: Option<Box<str>>,
    pub(super) role: Role,
    pub(super) heartbeats: bool,
    pub(super) leases: OwnedLeases,
}

impl Registration {
    /// A connection of `player` over `kind`: no session, no credential deadline, no leases.
    pub fn new(player: impl Into<Arc<str>>, kind: ConnectionKind) -> Self {
        Self {
            player: player.into(),
            kind,
            session: None,
            credential_deadline: None,
            requested_at: None,
            resume: None,
            role: Role::Player,
            heartbeats: false,
            leases: OwnedLeases::default(),
        }
    }

    /// The role of the identity that opened the connection, which the host's message
    /// handler sees ([`ClientMessage::role`](crate::inbound::ClientMessage::role)).
    /// Default: [`Role::Player`].
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Whether the hub pings this connection and ends it when it falls silent
    /// ([`HeartbeatSettings`](super::HeartbeatSettings)): when a ping is due the hub wakes the
    /// task polling [`ConnectionGuard::poll_end`], which finds
    /// [`ConnectionGuard::take_ping_request`] true and sends the ping; the transport calls
    /// [`ConnectionGuard::touch`] on every frame and pong from the client (what
    /// [`WebSocketHandler`](crate::WebSocketHandler) does). Needs a tokio runtime.
    /// Default: off (SSE streams send keep-alive comments instead).
    pub fn heartbeats(mut self, on: bool) -> Self {
        self.heartbeats = on;
        self
    }

    /// The game session the connection names (SPEC §3): it joins it if it is the player's
    /// current one, takes over if it is new (every connection of the old session ends with
    /// `session_replaced`), and is refused if it was replaced before
    /// ([`RegisterError::Session`]). Default: none, which joins the current session (one
    /// is created if the player has none).
    pub fn session(mut self, session: impl Into<Arc<str>>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// The id of the last message the client got, to resume after it (SSE's
    /// `Last-Event-ID`, the `last_event_id` query): the connection is first sent the
    /// player's messages after it, in order (then its pending queue and what awaits an
    /// acknowledgement, as for any new connection), then a `recovery` event
    /// `{"complete":…,"replayed":…}`; `complete: false` when the replay buffer no longer
    /// holds the id (too old, from before a restart, or not a message id), so the client
    /// knows to reload its state. Default: none (no replay, no `recovery` event; the
    /// pending queue is delivered either way).
    pub fn last_event_id(mut self, id: impl Into<Box<str>>) -> Self {
        self.resume = Some(id.into());
        self
    }

    /// When the credential that opened the connection stops being valid: the hub then ends
    /// it with `auth_expired`. Default: never.
    pub fn credential_deadline(mut self, deadline: Instant) -> Self {
        self.credential_deadline = Some(deadline);
        self
    }

    /// When the connection's request arrived, for the establishment time the hub's
    /// [observer](super::HubSettings::observer) sees. Default: unknown (reported as zero).
    pub fn requested_at(mut self, at: std::time::Instant) -> Self {
        self.requested_at = Some(at);
        self
    }

    /// Values that must live exactly as long as the connection (what the layers in front
    /// of the handler put in the request's [`Leases`](dualcast_layers::Leases)): the
    /// connection's guard owns them and drops them when the connection has left the hub.
    /// Default: none.
    pub fn leases(mut self, leases: OwnedLeases) -> Self {
        self.leases = leases;
        self
    }
}

/// A new connection's catch-up: ready, or being read from the cluster's log.
enum CatchUpNow {
    Ready(VecDeque<crate::message::Frame>),
    FromLog(tokio::sync::oneshot::Receiver<VecDeque<crate::message::Frame>>),
}

impl Hub {
    /// Reads a resuming connection's catch-up from the cluster's log, in a task: the
    /// entries after `resume` up to where this node is now, then `local`.
    fn read_catch_up(
        &self,
        player_id: &Arc<str>,
        resume: &str,
        local: VecDeque<crate::message::Frame>,
    ) -> tokio::sync::oneshot::Receiver<VecDeque<crate::message::Frame>> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let hub = self.clone();
        let (player_id, resume) = (player_id.clone(), resume.to_owned());
        let up_to = self.log_position();
        tokio::spawn(async move {
            let frames = hub.resume_from_log(&player_id, &resume, up_to, local).await;
            let _ = sender.send(frames);
        });
        receiver
    }
}

/// Why [`Hub::register`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The hub is shutting down.
    ShuttingDown,
    /// A credential deadline was given outside a tokio runtime, so nothing could enforce it.
    NoRuntime,
    /// The session rules refused the session the connection names (SPEC §3).
    Session(SessionRefused),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShuttingDown => f.write_str("the server is shutting down"),
            Self::NoRuntime => f.write_str(
                "a connection with a credential deadline must be registered inside a tokio runtime",
            ),
            Self::Session(SessionRefused::Stale) => {
                f.write_str("this session was replaced by a newer one")
            }
            Self::Session(_) => f.write_str("this session was not begun through the session API"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// The hasher of the registry's player and room maps: a fan-out looks every member up, and
/// SipHash (std's default) was a tenth of a 19,000-member broadcast's CPU. foldhash is
/// seeded at random per process, so ids chosen to collide are not known in advance.
pub(super) type FastHash = foldhash::fast::RandomState;

/// Players by id.
pub(super) type PlayerMap = HashMap<Arc<str>, Player, FastHash>;

/// The members of a room.
pub(super) type Members = HashSet<Arc<str>, FastHash>;

#[derive(Default)]
pub(super) struct Registry {
    pub(super) players: PlayerMap,
    pub(super) rooms: HashMap<Arc<str>, Members, FastHash>,
    pub(super) connections: usize,
    pub(super) deadlines: Deadlines,
    /// Players that became idle (no connection, none being admitted), oldest first (see
    /// `presence`).
    pub(super) idle: PlayerQueue,
    /// Players in their presence grace period, by its end.
    pub(super) grace: PlayerQueue,
    /// Live connections the hub pings.
    pub(super) heartbeats: usize,
}

#[derive(Default)]
pub(super) struct Player {
    pub(super) connections: Vec<Arc<Connection>>,
    pub(super) rooms: HashSet<Arc<str>>,
    pub(super) session: Option<CurrentSession>,
    /// Sessions replaced before, oldest first, bounded.
    pub(super) replaced: VecDeque<Arc<str>>,
    /// Connections admitted (a [`HubAdmission`](super::HubAdmission) lease) and not
    /// registered yet.
    pub(super) admitting: usize,
    /// Since when it has had no connection and none being admitted.
    pub(super) idle_since: Option<Instant>,
    /// The end of its presence grace period, while it is `reconnecting`.
    pub(super) reconnecting_until: Option<Instant>,
    /// Logged out while connections were still closing: when the last one goes, no grace.
    pub(super) logged_out: bool,
    /// Its replay buffer, pending queue and messages awaiting acknowledgement; locked by
    /// every delivery to it.
    pub(super) mailbox: std::sync::Mutex<super::mailbox::Mailbox>,
    /// On a hub with a backplane only: what the cluster knows of it (boxed, so that a
    /// single hub's player pays one word for it).
    pub(super) cluster: Option<Box<ClusterPlayer>>,
}

/// What a node of a cluster keeps of a player beside its own connections.
#[derive(Default)]
pub(super) struct ClusterPlayer {
    /// Its live connections on other nodes, as their nodes announced them in the log.
    pub(super) remote: Vec<RemoteConnection>,
    /// Session changes made here and not yet back from the log. While one is, a session
    /// change from another node comes before it in the log, so it is superseded (see
    /// `cluster`).
    pub(super) sessions_in_flight: u32,
    /// When the last of them stops counting as in flight, lost or not.
    pub(super) sessions_in_flight_until: Option<Instant>,
    /// Whether the last of them was a session minted for an unnamed connection.
    pub(super) session_in_flight_minted: bool,
    /// This node's connections of the player as the log has them (opened and back from the
    /// log, not yet closed in it). With `remote`, what every node counts, at the same place
    /// in the log, to decide whether a message is pending.
    pub(super) own_in_log: usize,
}

impl Player {
    /// No connection here or on another node, none being admitted.
    pub(super) fn is_unused(&self) -> bool {
        self.connections.is_empty() && self.admitting == 0 && self.remote().is_empty()
    }

    /// Its live connections on other nodes of the cluster.
    pub(super) fn remote(&self) -> &[RemoteConnection] {
        self.cluster.as_ref().map_or(&[], |cluster| &cluster.remote)
    }

    /// What the cluster knows of it, made on first use.
    pub(super) fn cluster(&mut self) -> &mut ClusterPlayer {
        self.cluster.get_or_insert_with(Box::default)
    }

    /// Its connections anywhere in the cluster as the log has them.
    pub(super) fn in_log(&self) -> usize {
        self.cluster
            .as_ref()
            .map_or(0, |cluster| cluster.own_in_log + cluster.remote.len())
    }
}

/// A connection held by another node of the cluster, as that node announced it.
#[derive(Debug, Clone)]
pub(crate) struct RemoteConnection {
    /// The node that holds it.
    pub(crate) node: Arc<str>,
    /// Its id on that node.
    pub(crate) id: ConnectionId,
    pub(crate) kind: ConnectionKind,
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) established_at: std::time::SystemTime,
}

impl Hub {
    /// Registers a live connection.
    ///
    /// The guard keeps it in the hub until dropped; the outbox yields what is published
    /// to it. Other connections of the player, of either kind, are untouched.
    pub fn register(
        &self,
        registration: Registration,
    ) -> Result<(ConnectionGuard, Outbox), RegisterError> {
        let Registration {
            player,
            kind,
            session,
            credential_deadline,
            requested_at,
            resume,
            role,
            heartbeats,
            mut leases,
        } = registration;
        if credential_deadline.is_some() || heartbeats {
            self.start_keeper()?;
        }
        let id = ConnectionId(self.inner.next_connection.fetch_add(1, Ordering::Relaxed));
        let connection = {
            let mut registry = self.write();
            // Checked under the lock: `shutdown` sets the flag and then ends every connection
            // it finds, so a connection is either refused here or found and ended there.
            if self.inner.shutting_down.load(Ordering::Acquire) {
                return Err(RegisterError::ShuttingDown);
            }
            let registry = &mut *registry;
            let (session, _) = self
                .settle_session(registry, &player, session.as_deref())
                .map_err(RegisterError::Session)?;
            // One string per player: the one stored, else the registration's own.
            let player_id = match registry.players.get_key_value(&*player) {
                Some((stored, _)) => stored.clone(),
                None => player,
            };
            let connection = Arc::new(Connection::new(NewConnection {
                id,
                player_id: player_id.clone(),
                kind,
                role,
                session_id: Some(session),
                heartbeats,
                inbound: InboundBudget::new(&self.inner.settings.inbound),
                outbox_capacity: self.inner.settings.outbox_capacity,
            }));
            let entry = registry.players.entry(player_id.clone()).or_default();
            let (catch_up, from_log) = self.catch_up(entry, resume.as_deref(), Instant::now());
            let catch_up = match (from_log, resume.as_deref()) {
                (true, Some(resume)) => {
                    CatchUpNow::FromLog(self.read_catch_up(&player_id, resume, catch_up))
                }
                _ => CatchUpNow::Ready(catch_up),
            };
            entry.connections.push(connection.clone());
            entry.idle_since = None;
            entry.logged_out = false;
            if let Some(admission) = leases.get_mut::<super::HubAdmission>() {
                admission.registered(self, entry);
            }
            let came_online = entry.connections.len() == 1 && entry.remote().is_empty();
            registry.connections += 1;
            let mut wake_keeper = false;
            if heartbeats {
                registry.heartbeats += 1;
                wake_keeper = registry.heartbeats == 1;
            }
            if let Some(deadline) = credential_deadline {
                wake_keeper |= registry.deadlines.insert(deadline, &connection);
            }
            if wake_keeper {
                self.inner.keeper_wake.notify_one();
            }
            self.inner.guards.fetch_add(1, Ordering::AcqRel);
            self.emit(HubEvent::Connected {
                connection_id: id,
                player_id: player_id.clone(),
                kind,
            });
            if came_online {
                self.came_online(registry, &player_id);
            }
            self.announce_opened(&connection);
            (connection, catch_up)
        };
        let (connection, catch_up) = connection;
        let establishment = requested_at.map(|at| at.elapsed());
        if let Some(took) = establishment {
            self.inner.figures.established(kind, took);
        }
        if let Some(observer) = self.observer() {
            observer.connection_opened(kind.transport(), establishment.unwrap_or_default());
        }
        tracing::info!(
            connection_id = %id,
            player_id = &*connection.player_id,
            kind = kind.as_str(),
            session_id = connection.session_id.as_deref().unwrap_or(""),
            "connection opened"
        );
        Ok((
            ConnectionGuard::new(
                self.clone(),
                connection.clone(),
                credential_deadline,
                leases,
            ),
            match catch_up {
                CatchUpNow::Ready(frames) => Outbox::new(connection, frames, None),
                CatchUpNow::FromLog(fetching) => {
                    Outbox::new(connection, VecDeque::new(), Some(fetching))
                }
            },
        ))
    }

    /// Ends every live connection of `player_id` with `reason`, both kinds (a WebSocket gets
    /// the reason's close frame, an SSE stream a `disconnect` event), and returns how many
    /// it ended. The player's rooms are kept. For a host's own logout, ban or kick:
    ///
    /// ```
    /// use dualcast::{ConnectionKind, DisconnectReason, Hub, Registration};
    ///
    /// let hub = Hub::new();
    /// let (guard, _outbox) = hub.register(Registration::new("alice", ConnectionKind::WebSocket)).unwrap();
    /// assert_eq!(hub.disconnect_player("alice", DisconnectReason::Logout), 1);
    /// assert_eq!(guard.end_reason(), Some(DisconnectReason::Logout));
    /// ```
    pub fn disconnect_player(&self, player_id: &str, reason: DisconnectReason) -> usize {
        let registry = self.read();
        let Some(player) = registry.players.get(player_id) else {
            return 0;
        };
        player
            .connections
            .iter()
            .filter(|connection| self.end_connection(connection, reason))
            .count()
    }

    /// The one way the hub ends a connection: session takeover, logout, credential expiry
    /// and shutdown all come here. The transport sees the reason through the guard's end
    /// signal and tells the client. Returns whether this call ended it.
    pub(super) fn end_connection(&self, connection: &Connection, reason: DisconnectReason) -> bool {
        let ended = connection.end(reason);
        if ended {
            tracing::debug!(
                connection_id = %connection.id,
                player_id = &*connection.player_id,
                reason = reason.code(),
                "hub ended the connection"
            );
        }
        ended
    }

    /// Takes `connection` out of the registry if it is still there, and its credential
    /// deadline if given (its guard gives it); idempotent.
    pub(super) fn remove(
        &self,
        connection: &Arc<Connection>,
        reason: DisconnectReason,
        deadline: Option<Instant>,
    ) {
        let mut registry = self.write();
        let registry = &mut *registry;
        if let Some(deadline) = deadline {
            registry.deadlines.remove(deadline, connection.id);
        }
        let Some(player) = registry.players.get_mut(&*connection.player_id) else {
            return;
        };
        let before = player.connections.len();
        player.connections.retain(|c| c.id != connection.id);
        if player.connections.len() == before {
            return;
        }
        let went_away = player.connections.is_empty() && player.remote().is_empty();
        registry.connections -= 1;
        self.announce_closed(connection);
        if connection.has_heartbeats() {
            registry.heartbeats -= 1;
        }
        // Under the lock, like `register`'s events.
        self.emit(HubEvent::Disconnected {
            connection_id: connection.id,
            player_id: connection.player_id.clone(),
            kind: connection.kind,
            reason,
        });
        if went_away {
            let now = Instant::now();
            self.went_away(
                registry,
                &connection.player_id,
                reason == DisconnectReason::Logout,
                now,
            );
            // Its state is kept through the grace and the state TTL, then forgotten.
            self.mark_idle_if_unused(registry, &connection.player_id, now);
            self.expire_players(registry, now);
        }
    }
}
