//! What a node tells the others through the cluster's log, and what it makes of theirs
//! (SPEC §10): connections opened and closed, sessions begun, logouts. Every node applies
//! them in the log's order, so each knows the whole cluster's connections of a player
//! (`Player::remote`): presence is their union, the per-player limit counts them, the
//! management API lists them, and a session begun on one node ends the old session's
//! connections on all.
//!
//! Announcements go out in order through one task (the announcer) that appends them one
//! after the other. When one cannot be appended (Redis away), or too many wait, or the
//! node (re)joins the cluster, the announcer sends instead the node's whole list of
//! connections (`n`), which replaces what the others held of it; a joining node's list
//! asks the others for theirs. A node that stops beating is forgotten by the others
//! ([`LogSink::node_gone`](super::LogSink::node_gone)): its connections leave their
//! registries and its players' presence with them.
//!
//! Pending queues: a node queues a message for a player only when the player has no
//! connection here nor announced elsewhere; when another node announces a connection of
//! the player, that node has sent it the queue (at its registration, and what came later
//! live), so the others drop their copies.
//!
//! Acknowledgements: the node whose client acks a message tells the others, which stop
//! waiting for it too.
//!
//! Sessions: a node that changes a player's session here (a takeover, a new session, the
//! session API) announces it and counts it in flight until it comes back from the log. A
//! session change from another node that arrives meanwhile is earlier in the log than the
//! one in flight, so it is superseded: remembered as replaced, its connections here ended,
//! the current session kept. Every node thus ends with the session that came last in the
//! log, and refuses every other.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backplane::{BackplaneState, Entry, WireConnection};
use super::registry::{Registry, RemoteConnection};
use super::sessions::{remember, CurrentSession};
use super::{Hub, Inner};
use crate::connection::{Connection, ConnectionId, ConnectionKind, DisconnectReason};
use crate::message::unix_millis;

/// Announcements waiting for the announcer; past it, the node sends its whole list instead.
const ANNOUNCEMENTS_WAITING: usize = 4096;

/// No list to send.
const IN_STEP: u8 = 0;
/// The node's list is due (announcements were lost).
const RESEND_LIST: u8 = 1;
/// The node's list is due, asking the others for theirs (the node joined or came back).
const REJOIN: u8 = 2;

/// This node's side: the queue of announcements and whether its list is due.
pub(super) struct Announcer {
    sender: mpsc::Sender<Announcement>,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<Announcement>>>,
    list_due: AtomicU8,
}

/// One announcement: its entry, and whether the node's list would say it too (a
/// connection opened or closed), so that it can go when the list is due.
struct Announcement {
    entry: Vec<u8>,
    in_list: bool,
}

/// How long a session change of this node counts as in flight at most: one lost (its
/// announcement could not be queued) stops superseding the others' after it.
const SESSION_IN_FLIGHT: Duration = Duration::from_secs(10);

impl Announcer {
    pub(super) fn new() -> Self {
        let (sender, receiver) = mpsc::channel(ANNOUNCEMENTS_WAITING);
        Self {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            list_due: AtomicU8::new(REJOIN),
        }
    }

    /// The node's list is due (`rejoin`: asking for the others' too).
    pub(super) fn list_due(&self, rejoin: bool) {
        let due = if rejoin { REJOIN } else { RESEND_LIST };
        self.list_due.fetch_max(due, Ordering::AcqRel);
    }
}

impl Hub {
    fn announcer(&self) -> Option<&Announcer> {
        self.inner.announcer.as_ref()
    }

    fn node_id(&self) -> Option<&str> {
        self.backplane().map(|backplane| backplane.node_id())
    }

    /// Starts the task that appends this node's announcements in order.
    pub(super) fn start_announcer(&self) {
        let Some(announcer) = self.announcer() else {
            return;
        };
        let Some(receiver) = announcer
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return;
        };
        tokio::spawn(announce(Arc::downgrade(&self.inner), receiver));
    }

    /// Queues `entry` for the announcer; when too many wait, the node's list goes instead.
    fn announce(&self, entry: &Entry<'_>) {
        let Some(announcer) = self.announcer() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(entry) else {
            return;
        };
        let announcement = Announcement {
            entry: bytes,
            in_list: entry.c.is_some(),
        };
        if announcer.sender.try_send(announcement).is_err() {
            tracing::warn!(
                kind = &*entry.k,
                "too many announcements wait for the cluster's log: this one is dropped, and \
                 this node's list of connections goes instead"
            );
            announcer.list_due(false);
        }
    }

    fn announcement<'a>(&'a self, kind: &'static str, player_id: &'a str) -> Option<Entry<'a>> {
        Some(Entry {
            o: Cow::Borrowed(self.node_id()?),
            k: Cow::Borrowed(kind),
            t: Some(Cow::Borrowed(player_id)),
            ..Entry::default()
        })
    }

    /// Tells the cluster that `connection` opened here.
    pub(super) fn announce_opened(&self, connection: &Connection) {
        if let Some(mut entry) = self.announcement("c+", &connection.player_id) {
            entry.c = Some(wire(connection));
            self.announce(&entry);
        }
    }

    /// Tells the cluster that `connection` left this node.
    pub(super) fn announce_closed(&self, connection: &Connection) {
        if let Some(mut entry) = self.announcement("c-", &connection.player_id) {
            entry.c = Some(wire(connection));
            self.announce(&entry);
        }
    }

    /// Tells the cluster that `session_id` is `player_id`'s session now (begun through the
    /// session API: `by_api`); counted in flight until it comes back.
    pub(super) fn announce_session(
        &self,
        registry: &mut Registry,
        player_id: &str,
        session_id: &str,
        by_api: bool,
        minted: bool,
    ) {
        let Some(mut entry) = self.announcement("s", player_id) else {
            return;
        };
        if let Some(player) = registry.players.get_mut(player_id) {
            player.sessions_in_flight += 1;
            player.sessions_in_flight_until = Some(Instant::now() + SESSION_IN_FLIGHT);
            player.session_in_flight_minted = minted;
        }
        entry.s = Some(Cow::Borrowed(session_id));
        entry.f = by_api;
        entry.u = minted;
        self.announce(&entry);
    }

    /// Tells the cluster that a client of `player_id` acknowledged message `id`.
    pub(super) fn announce_ack(&self, player_id: &str, id: &str) {
        if let Some(mut entry) = self.announcement("a", player_id) {
            entry.s = Some(Cow::Borrowed(id));
            self.announce(&entry);
        }
    }

    /// Tells the cluster that `player_id` logged out.
    pub(super) fn announce_logout(&self, player_id: &str) {
        if let Some(entry) = self.announcement("o", player_id) {
            self.announce(&entry);
        }
    }

    /// Applies another node's announcement (or this node's, coming back); false for an
    /// entry that is none.
    pub(super) fn apply_announcement(&self, entry: &Entry<'_>) -> bool {
        let own = Some(&*entry.o) == self.node_id();
        let player_id = entry.t.as_deref().unwrap_or_default();
        match &*entry.k {
            "c+" | "c-" if own => {}
            "c+" => {
                if let Some(connection) = &entry.c {
                    self.remote_opened(&entry.o, connection);
                }
            }
            "c-" => {
                if let Some(connection) = &entry.c {
                    self.remote_closed(&entry.o, player_id, ConnectionId(connection.i));
                }
            }
            "s" => {
                if let Some(session) = entry.s.as_deref() {
                    self.session_announced(player_id, session, entry.f, entry.u, own);
                }
            }
            "a" if own => {}
            "a" => {
                if let Some(id) = entry.s.as_deref() {
                    self.acknowledge_here(player_id, id);
                }
            }
            "o" if own => {}
            "o" => {
                self.logout_here(player_id);
            }
            "n" if own => {}
            "n" => self.node_listed(&entry.o, &entry.n, entry.f),
            _ => return false,
        }
        true
    }

    fn remote_opened(&self, node: &str, connection: &WireConnection<'_>) {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        self.expire_players(registry, now);
        self.add_remote(registry, node, connection);
    }

    /// Adds another node's connection to its player (once).
    fn add_remote(&self, registry: &mut Registry, node: &str, connection: &WireConnection<'_>) {
        let key = super::shared_key(&registry.players, &connection.p);
        let player = registry.players.entry(key).or_default();
        let id = ConnectionId(connection.i);
        if player.remote.iter().any(|r| r.id == id && *r.node == *node) {
            return;
        }
        player.remote.push(remote(node, connection));
        player.idle_since = None;
        player.reconnecting_until = None;
        // The node that holds it sent it the pending queue when it registered, and what
        // came after live: every other node's copy of the queue is delivered.
        let dropped = player
            .mailbox
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drop_pending(&self.inner.totals);
        if dropped > 0 {
            if let Some(observer) = self.observer() {
                observer.queued(0, self.inner.totals.pending() as u64);
            }
        }
    }

    fn remote_closed(&self, node: &str, player_id: &str, id: ConnectionId) {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        let Some(player) = registry.players.get_mut(player_id) else {
            return;
        };
        player.remote.retain(|r| !(r.id == id && *r.node == *node));
        self.mark_idle_if_unused(registry, player_id, now);
    }

    /// Replaces what this node holds of `node`'s connections with `connections`; when the
    /// node (re)joins, this node's list is due in turn.
    fn node_listed(&self, node: &str, connections: &[WireConnection<'_>], rejoins: bool) {
        let now = Instant::now();
        {
            let mut registry = self.write();
            let registry = &mut *registry;
            self.forget_node_in(registry, node, now);
            for connection in connections {
                self.add_remote(registry, node, connection);
            }
        }
        if rejoins {
            if let Some(announcer) = self.announcer() {
                announcer.list_due(false);
            }
        }
    }

    /// `node` stopped beating: its connections leave this node's registry.
    pub(super) fn node_gone(&self, node: &str) {
        let now = Instant::now();
        let mut registry = self.write();
        let forgotten = self.forget_node_in(&mut registry, node, now);
        drop(registry);
        tracing::warn!(
            node,
            connections = forgotten,
            "a node of the cluster stopped beating: its connections are forgotten here"
        );
    }

    fn forget_node_in(&self, registry: &mut Registry, node: &str, now: Instant) -> usize {
        let mut forgotten = 0;
        let mut idle = Vec::new();
        for (player_id, player) in &mut registry.players {
            let before = player.remote.len();
            player.remote.retain(|r| *r.node != *node);
            if player.remote.len() != before {
                forgotten += before - player.remote.len();
                idle.push(player_id.clone());
            }
        }
        for player_id in idle {
            self.mark_idle_if_unused(registry, &player_id, now);
        }
        forgotten
    }

    /// A session change from the log: this node's own (no longer in flight), or another
    /// node's. Applied in the log's order as one node would have applied them one after
    /// the other: a named session takes over, a minted one (for an unnamed connection)
    /// joins the current session as an alias, or becomes current if there is none. A
    /// change of this node's still in flight is later in the log than the one applied now.
    fn session_announced(
        &self,
        player_id: &str,
        session: &str,
        by_api: bool,
        minted: bool,
        own: bool,
    ) {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        if own {
            if let Some(player) = registry.players.get_mut(player_id) {
                player.sessions_in_flight = player.sessions_in_flight.saturating_sub(1);
            }
            return;
        }
        let remembered = self.inner.settings.remembered_sessions;
        let player = self.player_entry(registry, player_id, now);
        if player.replaced.iter().any(|old| **old == *session) {
            return;
        }
        if let Some(current) = player.session.as_mut() {
            if current.names(session) {
                current.begun_by_api |= by_api;
                return;
            }
        }
        let in_flight = player.sessions_in_flight > 0
            && player
                .sessions_in_flight_until
                .is_some_and(|until| now < until);
        let ours_minted = in_flight && player.session_in_flight_minted;
        match (&mut player.session, minted) {
            // Ours, later, is minted: it joins this one, which becomes current.
            (Some(current), _) if ours_minted => {
                let ours = std::mem::replace(&mut current.id, session.into());
                alias(current, ours, remembered);
                current.begun_by_api |= by_api;
            }
            // Ours, later, is named: it replaces this one.
            (Some(_), _) if in_flight => {
                remember(&mut player.replaced, session.into(), remembered);
                for connection in &player.connections {
                    if connection.session_id.as_deref() == Some(session) {
                        self.end_connection(connection, DisconnectReason::SessionReplaced);
                    }
                }
            }
            // Minted elsewhere for an unnamed connection: it joins the current session.
            (Some(current), true) => alias(current, session.into(), remembered),
            (None, true) => player.session = Some(CurrentSession::new(session.into(), by_api)),
            (_, false) => {
                self.replace_session(registry, player_id, session.into(), by_api, now);
            }
        }
        self.mark_idle_if_unused(registry, player_id, now);
    }

    /// This node's whole list of connections, as an `n` entry.
    fn node_list(&self, rejoin: bool) -> Option<Vec<u8>> {
        let node = self.node_id()?;
        let registry = self.read();
        let connections: Vec<WireConnection<'_>> = registry
            .players
            .values()
            .flat_map(|p| &p.connections)
            .filter(|c| c.end_reason().is_none())
            .map(|c| wire(c))
            .collect();
        let entry = Entry {
            o: Cow::Borrowed(node),
            k: Cow::Borrowed("n"),
            f: rejoin,
            n: connections,
            ..Entry::default()
        };
        serde_json::to_vec(&entry).ok()
    }

    /// The connections of `player_id` on other nodes, as their nodes announced them.
    pub(crate) fn remote_connections_of(&self, player_id: &str) -> Vec<RemoteConnection> {
        self.read()
            .players
            .get(player_id)
            .map(|p| p.remote.clone())
            .unwrap_or_default()
    }

    /// This node's id in its cluster, if it is in one.
    #[must_use]
    pub fn cluster_node(&self) -> Option<&str> {
        self.node_id()
    }
}

/// Adds `alias` to `current`'s aliases, at most `limit` of them (the oldest go first).
fn alias(current: &mut CurrentSession, alias: Arc<str>, limit: usize) {
    if current.aliases.len() >= limit {
        current.aliases.remove(0);
    }
    current.aliases.push(alias);
}

fn wire(connection: &Connection) -> WireConnection<'_> {
    WireConnection {
        p: Cow::Borrowed(&connection.player_id),
        i: connection.id.0,
        w: connection.kind == ConnectionKind::WebSocket,
        s: connection.session_id.as_deref().map(Cow::Borrowed),
        at: unix_millis(connection.established_at),
    }
}

fn remote(node: &str, connection: &WireConnection<'_>) -> RemoteConnection {
    RemoteConnection {
        node: node.into(),
        id: ConnectionId(connection.i),
        kind: if connection.w {
            ConnectionKind::WebSocket
        } else {
            ConnectionKind::Sse
        },
        session_id: connection.s.as_deref().map(Arc::from),
        established_at: UNIX_EPOCH + Duration::from_millis(connection.at),
    }
}

/// The announcer: appends the node's announcements in order (each retried until the log
/// takes it, but for those the node's list says too, which go when the list is due), and
/// the list when it is due and the backplane is up, until the hub is gone.
async fn announce(hub: Weak<Inner>, mut receiver: mpsc::Receiver<Announcement>) {
    let retry = Duration::from_millis(250);
    let mut waiting: Option<Announcement> = None;
    loop {
        let next = match waiting.take() {
            Some(announcement) => Ok(Some(announcement)),
            None => tokio::time::timeout(retry, receiver.recv()).await,
        };
        let Some(inner) = hub.upgrade() else {
            return;
        };
        let hub = Hub { inner };
        let (Some(backplane), Some(announcer)) = (hub.backplane().cloned(), hub.announcer()) else {
            return;
        };
        match next {
            Ok(Some(announcement)) => {
                let due = announcer.list_due.load(Ordering::Acquire) != IN_STEP;
                if !(due && announcement.in_list)
                    && backplane.append(announcement.entry.clone()).await.is_err()
                {
                    if announcement.in_list {
                        announcer.list_due(false);
                    } else {
                        // A session change or a logout: kept, in order, until the log
                        // takes it.
                        waiting = Some(announcement);
                        drop(hub);
                        tokio::time::sleep(retry).await;
                        continue;
                    }
                }
            }
            Ok(None) => return,
            Err(_) => {}
        }
        let due = announcer.list_due.load(Ordering::Acquire);
        if due != IN_STEP && backplane.status().state == BackplaneState::Up {
            announcer.list_due.store(IN_STEP, Ordering::Release);
            let sent = match hub.node_list(due == REJOIN) {
                Some(list) => backplane.append(list).await.is_ok(),
                None => true,
            };
            if !sent {
                announcer.list_due(due == REJOIN);
            }
        }
    }
}
