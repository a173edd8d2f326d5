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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backplane::{BackplaneState, Entry, WireConnection, WirePlayer};
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
    /// Unbounded, but for the announcements that may be dropped (connections opened and
    /// closed, which the node's list says too; acks, which only end resends early): at most
    /// [`ANNOUNCEMENTS_WAITING`] of them wait. Session changes and logouts are never
    /// dropped; they come at the rate of connections and session requests, both limited.
    sender: mpsc::UnboundedSender<Announcement>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Announcement>>>,
    droppable_waiting: AtomicUsize,
    list_due: AtomicU8,
    /// Whether dropping was logged (once per episode: until the list went out).
    dropping_logged: AtomicBool,
}

/// One announcement: its entry, and whether it may be dropped (see [`Announcer`]).
struct Announcement {
    entry: Vec<u8>,
    droppable: bool,
    /// When a session change or logout stops being retried (the log was away that long):
    /// later it would act on connections opened since.
    give_up: Instant,
}

/// How long a session change of this node counts as in flight at most: one lost (its
/// announcement could not be queued) stops superseding the others' after it.
const SESSION_IN_FLIGHT: Duration = Duration::from_secs(10);

/// How long a session change or logout is retried while the log is away.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// The most connections of one player this node keeps of another node's announcements.
const REMOTE_PER_PLAYER: usize = 1024;

impl Announcer {
    pub(super) fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            droppable_waiting: AtomicUsize::new(0),
            list_due: AtomicU8::new(REJOIN),
            dropping_logged: AtomicBool::new(false),
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

    /// Queues `entry` for the announcer; when too many droppable ones wait, a connection's
    /// opening or closing is dropped and the node's list goes instead (an ack is dropped).
    fn announce(&self, entry: &Entry<'_>) {
        let Some(announcer) = self.announcer() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(entry) else {
            return;
        };
        let droppable = entry.c.is_some() || entry.k == "a";
        if droppable {
            let waiting = announcer.droppable_waiting.fetch_add(1, Ordering::AcqRel);
            if waiting >= ANNOUNCEMENTS_WAITING {
                announcer.droppable_waiting.fetch_sub(1, Ordering::AcqRel);
                if entry.c.is_some() {
                    announcer.list_due(false);
                }
                if !announcer.dropping_logged.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        "too many announcements wait for the cluster's log: connections opened \
                         and closed go as this node's list once it is back, acks are dropped"
                    );
                }
                return;
            }
        }
        let announcement = Announcement {
            entry: bytes,
            droppable,
            give_up: Instant::now() + RETRY_FOR,
        };
        if announcer.sender.send(announcement).is_err() && droppable {
            announcer.droppable_waiting.fetch_sub(1, Ordering::AcqRel);
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
            entry.q = self.log_position();
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
            player.cluster().sessions_in_flight += 1;
            player.cluster().sessions_in_flight_until = Some(Instant::now() + SESSION_IN_FLIGHT);
            player.cluster().session_in_flight_minted = minted;
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
        match (&*entry.k, own) {
            ("c+", true) => {
                if let Some(connection) = &entry.c {
                    self.own_opened(player_id, ConnectionId(connection.i));
                }
            }
            ("c-", true) => self.own_closed(player_id, entry.q),
            ("c+", false) => {
                if let Some(connection) = &entry.c {
                    self.remote_opened(&entry.o, connection);
                }
            }
            ("c-", false) => {
                if let Some(connection) = &entry.c {
                    self.remote_closed(&entry.o, player_id, ConnectionId(connection.i), entry.q);
                }
            }
            ("s", _) => {
                if let Some(session) = entry.s.as_deref() {
                    self.session_announced(player_id, session, entry.f, entry.u, own);
                }
            }
            ("a", false) => {
                if let Some(id) = entry.s.as_deref() {
                    self.acknowledge_here(player_id, id);
                }
            }
            // Only the connections that came before it in the log: one opened since (a
            // player logging in again at once, on another node) stays.
            ("o", false) => {
                self.logout_here(player_id, true);
            }
            ("n", true) => self.own_listed(&entry.n),
            ("n", false) => self.node_listed(&entry.o, &entry.n, &entry.pl, entry.f),
            ("f", false) => self.answer_figures(&entry.o, entry.r),
            ("a" | "o" | "f", true) => {}
            _ => return false,
        }
        true
    }

    /// This node's announcement of `id` came back: from here on in the log the connection
    /// counts, and what was pending for its player is delivered (the catch-up took what was
    /// queued before it registered, and it got what came after live).
    fn own_opened(&self, player_id: &str, id: ConnectionId) {
        let mut registry = self.write();
        let Some(player) = registry.players.get_mut(player_id) else {
            return;
        };
        let Some(connection) = player.connections.iter().find(|c| c.id == id) else {
            // Gone already: its closing follows in the log, and counts it out again.
            player.cluster().own_in_log += 1;
            return;
        };
        connection.set_in_log();
        player.cluster().own_in_log += 1;
        self.drop_pending(player);
    }

    /// This node's announcement of a connection's closing came back.
    fn own_closed(&self, player_id: &str, left_at: Option<(u64, u64)>) {
        let now = Instant::now();
        let mut registry = self.write();
        let Some(player) = registry.players.get_mut(player_id) else {
            return;
        };
        player.cluster().own_in_log = player.cluster().own_in_log.saturating_sub(1);
        self.queue_missed(player_id, player, left_at, None, now);
    }

    /// With no connection of the player left as the log has it: what its last connection
    /// may have missed (after `after` in the log, or recorded since `since`) is pending, as
    /// every node decides at this same place in the log.
    fn queue_missed(
        &self,
        player_id: &str,
        player: &mut super::registry::Player,
        after: Option<(u64, u64)>,
        since: Option<Instant>,
        now: Instant,
    ) {
        if player.in_log() > 0 {
            return;
        }
        let outcome = player
            .mailbox
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .queue_missed(
                after,
                since,
                now,
                &self.inner.settings.delivery,
                &self.inner.totals,
            );
        self.count_dropped(outcome.dropped_expired, outcome.dropped_overflow);
        if outcome.queued {
            tracing::debug!(
                player_id,
                "messages its last connection may have missed are pending"
            );
        }
    }

    /// This node's list came back: its connections as the log has them are these.
    fn own_listed(&self, connections: &[WireConnection<'_>]) {
        let mut registry = self.write();
        let registry = &mut *registry;
        for player in registry.players.values_mut() {
            player.cluster().own_in_log = 0;
        }
        for listed in connections {
            let Some(player) = registry.players.get_mut(&*listed.p) else {
                continue;
            };
            player.cluster().own_in_log += 1;
            if let Some(connection) = player.connections.iter().find(|c| c.id.0 == listed.i) {
                connection.set_in_log();
            }
        }
    }

    /// Drops `player`'s pending queue: a connection of it, as the log has it, got it.
    fn drop_pending(&self, player: &mut super::registry::Player) {
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

    fn remote_opened(&self, node: &str, connection: &WireConnection<'_>) {
        if self.is_gone(node) {
            // Late news of a node already forgotten: it sends its list when it is back.
            return;
        }
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        self.expire_players(registry, now);
        self.add_remote(registry, node, connection);
    }

    /// Adds another node's connection to its player (once): the player is online, and
    /// what every node held pending for it is delivered by that node.
    fn add_remote(&self, registry: &mut Registry, node: &str, connection: &WireConnection<'_>) {
        let key = super::shared_key(&registry.players, &connection.p);
        let player = registry.players.entry(key.clone()).or_default();
        let id = ConnectionId(connection.i);
        if player.cluster().remote.len() >= REMOTE_PER_PLAYER
            || player
                .cluster()
                .remote
                .iter()
                .any(|r| r.id == id && *r.node == *node)
        {
            return;
        }
        let came_online = player.connections.is_empty() && player.cluster().remote.is_empty();
        player.cluster().remote.push(remote(node, connection));
        player.idle_since = None;
        self.drop_pending(player);
        if came_online {
            self.came_online(registry, &key);
        }
    }

    fn remote_closed(
        &self,
        node: &str,
        player_id: &str,
        id: ConnectionId,
        left_at: Option<(u64, u64)>,
    ) {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        let Some(player) = registry.players.get_mut(player_id) else {
            return;
        };
        let before = player.cluster().remote.len();
        player
            .cluster()
            .remote
            .retain(|r| !(r.id == id && *r.node == *node));
        if player.cluster().remote.len() != before {
            self.queue_missed(player_id, player, left_at, None, now);
            self.went_away_if_gone(registry, player_id, now);
        }
    }

    /// The player lost a connection of another node: with none left anywhere, it is
    /// `reconnecting` for the grace period, as after its last connection here.
    fn went_away_if_gone(&self, registry: &mut Registry, player_id: &str, now: Instant) {
        let gone = registry
            .players
            .get(player_id)
            .is_some_and(|p| p.connections.is_empty() && p.remote().is_empty());
        if gone {
            self.went_away(registry, player_id, false, now);
        }
        self.mark_idle_if_unused(registry, player_id, now);
    }

    fn is_gone(&self, node: &str) -> bool {
        self.inner
            .gone_nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(node)
    }

    /// Replaces what this node holds of `node`'s connections with `connections`; when the
    /// node (re)joins, this node's list is due in turn.
    fn node_listed(
        &self,
        node: &str,
        connections: &[WireConnection<'_>],
        players: &[WirePlayer<'_>],
        rejoins: bool,
    ) {
        let now = Instant::now();
        self.inner
            .gone_nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(node);
        {
            let mut registry = self.write();
            let registry = &mut *registry;
            self.forget_node_in(registry, node, None, now);
            for listed in players {
                self.adopt_state(registry, listed, now);
            }
            for connection in connections {
                self.add_remote(registry, node, connection);
            }
        }
        let synced = {
            let mut listed = self
                .inner
                .listed_nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            listed.insert(node.into());
            self.backplane()
                .is_some_and(|b| b.peers().iter().all(|peer| listed.contains(peer)))
        };
        if synced && !self.inner.cluster_synced.swap(true, Ordering::AcqRel) {
            tracing::debug!("every peer's list is in: this node's players are the cluster's");
        }
        self.inner.node_listed.notify_waiters();
        if rejoins {
            if let Some(announcer) = self.announcer() {
                announcer.list_due(false);
            }
        }
    }

    /// Waits (at most `limit`) until every live peer's list has come since this node
    /// started: what it knows of players' rooms and sessions is then the cluster's.
    pub(super) async fn peers_listed(&self, limit: Duration) {
        let Some(backplane) = self.backplane() else {
            return;
        };
        let deadline = Instant::now() + limit;
        loop {
            let listed = self.inner.node_listed.notified();
            let all = {
                let known = self
                    .inner
                    .listed_nodes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                backplane.peers().iter().all(|peer| known.contains(peer))
            };
            if all || tokio::time::timeout_at(deadline, listed).await.is_err() {
                return;
            }
        }
    }

    /// Takes another node's state of a player: all of it for a player this node knows
    /// nothing of, and merged in (sessions, replaced sessions, rooms) while this node has
    /// not had every peer's list since it started (what it decided alone meanwhile, such as
    /// a session minted for a connection, joins the cluster's). Otherwise the log kept this
    /// node's state in step, and it is kept.
    fn adopt_state(&self, registry: &mut Registry, listed: &WirePlayer<'_>, now: Instant) {
        let fresh = registry
            .players
            .get(&*listed.p)
            .is_none_or(|p| p.session.is_none() && p.rooms.is_empty() && p.replaced.is_empty());
        if !fresh && self.inner.cluster_synced.load(Ordering::Acquire) {
            return;
        }
        let remembered = self.inner.settings.remembered_sessions;
        let player = self.player_entry(registry, &listed.p, now);
        for old in &listed.x {
            remember(&mut player.replaced, Arc::from(&**old), remembered);
        }
        let mut sessions = listed.s.iter();
        if let Some(current) = sessions.next() {
            match player.session.as_mut() {
                Some(ours) if ours.names(current) => {}
                Some(ours) => {
                    let mine = std::mem::replace(&mut ours.id, Arc::from(&**current));
                    self::alias(ours, mine, remembered);
                }
                None => player.session = Some(CurrentSession::new(Arc::from(&**current), false)),
            }
            if let Some(session) = player.session.as_mut() {
                for alias in sessions {
                    if !session.names(alias) {
                        self::alias(session, Arc::from(&**alias), remembered);
                    }
                }
            }
        }
        let key = super::shared_key(&registry.players, &listed.p);
        for room in &listed.r {
            let room_key = super::shared_key(&registry.rooms, room);
            if let Some(player) = registry.players.get_mut(&*listed.p) {
                player.rooms.insert(room_key.clone());
            }
            registry
                .rooms
                .entry(room_key)
                .or_default()
                .insert(key.clone());
        }
    }

    /// `node` stopped beating: its connections leave this node's registry.
    pub(super) fn node_gone(&self, node: &str, silent_for: Duration) {
        let now = Instant::now();
        self.inner
            .gone_nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(node.into());
        let mut registry = self.write();
        let since = now.checked_sub(silent_for);
        let forgotten = self.forget_node_in(&mut registry, node, since, now);
        drop(registry);
        tracing::warn!(
            node,
            connections = forgotten,
            "a node of the cluster stopped beating: its connections are forgotten here"
        );
    }

    /// Forgets `node`'s connections; with `since`, what their players (left with none)
    /// were sent since then is pending for them.
    fn forget_node_in(
        &self,
        registry: &mut Registry,
        node: &str,
        since: Option<Instant>,
        now: Instant,
    ) -> usize {
        let mut forgotten = 0;
        let mut idle = Vec::new();
        for (player_id, player) in &mut registry.players {
            let before = player.cluster().remote.len();
            player.cluster().remote.retain(|r| *r.node != *node);
            if player.cluster().remote.len() != before {
                forgotten += before - player.cluster().remote.len();
                idle.push(player_id.clone());
                if since.is_some() {
                    self.queue_missed(player_id, player, None, since, now);
                }
            }
        }
        for player_id in idle {
            self.went_away_if_gone(registry, &player_id, now);
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
            let Some(player) = registry.players.get_mut(player_id) else {
                return;
            };
            player.cluster().sessions_in_flight =
                player.cluster().sessions_in_flight.saturating_sub(1);
            // With no later change of this node in flight, everything applied so far was
            // before it in the log: it wins here too (another node's, applied while it was
            // in flight too long, must not).
            let named = player.session.as_ref().is_some_and(|c| c.names(session));
            if player.cluster().sessions_in_flight == 0 && !named && !minted {
                self.replace_session(registry, player_id, session.into(), by_api, now);
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
        let cluster = player.cluster();
        let in_flight = cluster.sessions_in_flight > 0
            && cluster
                .sessions_in_flight_until
                .is_some_and(|until| now < until);
        let ours_minted = in_flight && cluster.session_in_flight_minted;
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
        let players: Vec<WirePlayer<'_>> = registry
            .players
            .iter()
            .filter(|(_, p)| p.session.is_some() || !p.rooms.is_empty() || !p.replaced.is_empty())
            .map(|(id, p)| WirePlayer {
                p: Cow::Borrowed(id),
                s: p.session
                    .iter()
                    .flat_map(|s| std::iter::once(&s.id).chain(s.aliases()))
                    .map(|s| Cow::Borrowed(&**s))
                    .collect(),
                x: p.replaced.iter().map(|s| Cow::Borrowed(&**s)).collect(),
                r: p.rooms.iter().map(|r| Cow::Borrowed(&**r)).collect(),
            })
            .collect();
        let entry = Entry {
            o: Cow::Borrowed(node),
            k: Cow::Borrowed("n"),
            f: rejoin,
            n: connections,
            pl: players,
            ..Entry::default()
        };
        serde_json::to_vec(&entry).ok()
    }

    /// The connections of `player_id` on other nodes, as their nodes announced them.
    pub(crate) fn remote_connections_of(&self, player_id: &str) -> Vec<RemoteConnection> {
        self.read()
            .players
            .get(player_id)
            .map(|p| p.remote().to_vec())
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
    let aliases = current.aliases.get_or_insert_with(Box::default);
    if aliases.len() >= limit {
        aliases.remove(0);
    }
    aliases.push(alias);
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

/// The announcer: appends the node's announcements in order (a session change or logout
/// retried while the log is away, for [`RETRY_FOR`] at most; a connection's opening or
/// closing dropped when the list is due, which says it), and the node's list when it is due
/// and the backplane is up, until the hub is gone.
async fn announce(hub: Weak<Inner>, mut receiver: mpsc::UnboundedReceiver<Announcement>) {
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
                if announcement.droppable {
                    announcer.droppable_waiting.fetch_sub(1, Ordering::AcqRel);
                }
                let due = announcer.list_due.load(Ordering::Acquire) != IN_STEP;
                let skip = due && announcement.droppable;
                if !skip && backplane.append(announcement.entry.clone()).await.is_err() {
                    if announcement.droppable {
                        announcer.list_due(false);
                    } else if Instant::now() < announcement.give_up {
                        waiting = Some(announcement);
                        drop(hub);
                        tokio::time::sleep(retry).await;
                        continue;
                    } else {
                        tracing::warn!(
                            "a session change or logout could not reach the cluster's log \
                             for 10 s: the other nodes will not see it"
                        );
                    }
                }
            }
            Ok(None) => return,
            Err(_) => {}
        }
        if announcer.list_due.load(Ordering::Acquire) != IN_STEP
            && backplane.status().state == BackplaneState::Up
        {
            let due = announcer.list_due.swap(IN_STEP, Ordering::AcqRel);
            let sent = match hub.node_list(due == REJOIN) {
                Some(list) => backplane.append(list).await.is_ok(),
                None => true,
            };
            if sent {
                announcer.dropping_logged.store(false, Ordering::Release);
            } else {
                announcer.list_due(due == REJOIN);
            }
        }
    }
}
