//! Game sessions (SPEC §3): each player has at most one current session; a connection
//! joins it, takes over with a new one, or is refused for naming a replaced one.
//!
//! The rules live in one function, `Hub::apply_session_rules`, run under the registry's
//! write lock both when a connection request is resolved ([`ResolveSession`], what the
//! session layer asks before the connection is admitted) and again when the connection
//! registers, so two takeovers racing end with exactly one current session (the one that
//! registered last). At resolution a takeover is only decided; it is carried out at
//! registration, so a request refused on the way (by admission, say) ends nothing. The new
//! client's connection is never refused for the slots the old session still holds:
//! admission for a connection taking over counts only the new session's connections
//! (`Admit::admit_taking_over`).
//!
//! Replaced sessions are remembered per player, at most
//! [`HubSettings::remembered_sessions`](super::HubSettings::remembered_sessions) of them.
//! A player's session outlives its last connection: it is kept through the presence grace
//! and then for the [state TTL](super::HubSettings::state_ttl), so that a reconnect finds
//! it (see `presence`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use dualcast_layers::session::{ResolveSession, Session, SessionOutcome, SessionRefused};
use tokio::time::Instant;

use super::events::HubEvent;
use super::registry::{Player, Registry};
use super::{shared_key, Hub};
use crate::connection::{ConnectionKind, DisconnectReason};

/// A player's current session.
#[derive(Debug, Clone)]
pub(super) struct CurrentSession {
    pub(super) id: Arc<str>,
    pub(super) created: SystemTime,
    /// Begun through [`Hub::begin_session`] (what strict mode accepts).
    pub(super) begun_by_api: bool,
    /// In a cluster: sessions minted on other nodes for unnamed connections at about the
    /// same time, which joined this one rather than take it over (see `cluster`).
    /// Boxed: a single hub's session pays one word for it.
    #[allow(clippy::box_collection)]
    pub(super) aliases: Option<Box<Vec<Arc<str>>>>,
}

impl CurrentSession {
    pub(super) fn new(id: Arc<str>, begun_by_api: bool) -> Self {
        Self {
            id,
            created: SystemTime::now(),
            begun_by_api,
            aliases: None,
        }
    }

    /// Whether `id` is this session (or one of its aliases).
    pub(super) fn names(&self, id: &str) -> bool {
        *self.id == *id || self.aliases().iter().any(|alias| **alias == *id)
    }

    /// Its aliases, oldest first.
    pub(super) fn aliases(&self) -> &[Arc<str>] {
        self.aliases.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// A player's session, as [`Hub::session_of`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The current session, if the player has one.
    pub session_id: Option<Arc<str>>,
    /// When the current session began.
    pub created: Option<SystemTime>,
    /// Live connections of the player.
    pub active_connections: usize,
    /// The transports of those connections, each once, WebSocket first.
    pub connection_kinds: Vec<ConnectionKind>,
}

/// What [`Hub::begin_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionBegun {
    /// Connections of the player that the new session ended (`session_replaced`).
    pub connections_ended: usize,
    /// Whether the session was already the current one (then nothing changed).
    pub already_current: bool,
}

/// How a named or unnamed session settles against a player's state.
enum Settled {
    Join(Arc<str>),
    Create(Arc<str>),
    TakeOver(Arc<str>),
}

impl Hub {
    /// Applies the session rules for a connection of `player` naming `named` (or none),
    /// under the registry's write lock: joins the current session, creates one, or takes
    /// over (ending the old session's connections). Returns the session joined and what
    /// joining did.
    pub(super) fn settle_session(
        &self,
        registry: &mut Registry,
        player_id: &str,
        named: Option<&str>,
    ) -> Result<(Arc<str>, SessionOutcome), SessionRefused> {
        self.apply_session_rules(registry, player_id, named, true)
    }

    /// As [`settle_session`](Self::settle_session), but a takeover is only decided, not
    /// carried out: what the session layer asks before the connection is admitted.
    fn decide_session(
        &self,
        registry: &mut Registry,
        player_id: &str,
        named: Option<&str>,
    ) -> Result<(Arc<str>, SessionOutcome), SessionRefused> {
        self.apply_session_rules(registry, player_id, named, false)
    }

    fn apply_session_rules(
        &self,
        registry: &mut Registry,
        player_id: &str,
        named: Option<&str>,
        take_over: bool,
    ) -> Result<(Arc<str>, SessionOutcome), SessionRefused> {
        let now = Instant::now();
        self.expire_players(registry, now);
        let strict = self.inner.settings.strict_sessions;
        let current = registry
            .players
            .get(player_id)
            .and_then(|player| player.session.as_ref());
        let settled = match (named, current) {
            (None, Some(current)) => Settled::Join(current.id.clone()),
            (None, None) => Settled::Create(mint_session_id().into()),
            (Some(named), Some(current)) if current.names(named) => {
                Settled::Join(if *current.id == *named {
                    current.id.clone()
                } else {
                    named.into()
                })
            }
            (Some(named), _) => {
                let player = registry.players.get(player_id);
                if player.is_some_and(|p| p.replaced.iter().any(|old| **old == *named)) {
                    return Err(SessionRefused::Stale);
                }
                if strict {
                    return Err(SessionRefused::Unknown);
                }
                if current.is_none() {
                    Settled::Create(named.into())
                } else {
                    Settled::TakeOver(named.into())
                }
            }
        };
        let settled = match settled {
            Settled::Join(id) => (id, SessionOutcome::Joined),
            // A named session is only decided too: registering creates it, so a request
            // refused on the way leaves no session behind for a later one to "replace" or
            // for its own retry to find stale. A minted one is kept at once, so that the
            // id the request was told is the one its connection joins.
            Settled::Create(id) if !take_over && named.is_some() => (id, SessionOutcome::Created),
            Settled::Create(id) => {
                let player = self.player_entry(registry, player_id, now);
                player.session = Some(CurrentSession::new(id.clone(), false));
                self.announce_session(registry, player_id, &id, false, named.is_none());
                (id, SessionOutcome::Created)
            }
            Settled::TakeOver(id) => {
                if take_over {
                    self.replace_session(registry, player_id, id.clone(), false, now);
                    self.announce_session(registry, player_id, &id, false, false);
                }
                (id, SessionOutcome::TakesOver)
            }
        };
        self.mark_idle_if_unused(registry, player_id, now);
        Ok(settled)
    }

    /// Makes `id` the current session of `player_id`: the old one is remembered as
    /// replaced and every connection not of `id` ends with `session_replaced`. Returns how
    /// many it ended.
    pub(super) fn replace_session(
        &self,
        registry: &mut Registry,
        player_id: &str,
        id: Arc<str>,
        begun_by_api: bool,
        now: Instant,
    ) -> usize {
        let remembered = self.inner.settings.remembered_sessions;
        let player = self.player_entry(registry, player_id, now);
        let old = player.session.take();
        let replaced = old.as_ref().map(|old| old.id.clone());
        for old in old
            .iter()
            .flat_map(|old| std::iter::once(&old.id).chain(old.aliases()))
        {
            remember(&mut player.replaced, old.clone(), remembered);
        }
        player.session = Some(CurrentSession::new(id.clone(), begun_by_api));
        let ended = player
            .connections
            .iter()
            .filter(|c| c.session_id.as_deref() != Some(&*id))
            .filter(|c| self.end_connection(c, DisconnectReason::SessionReplaced))
            .count();
        if let Some(observer) = self.observer() {
            if replaced.is_some() {
                observer.session_replaced();
            }
        }
        tracing::info!(
            player_id,
            session_id = &*id,
            replaced = replaced.as_deref().unwrap_or(""),
            connections_ended = ended,
            "new game session"
        );
        self.emit(HubEvent::SessionBegan {
            player_id: shared_key(&registry.players, player_id),
            session_id: id,
            replaced,
            connections_ended: ended,
        });
        ended
    }

    /// Begins session `session_id` for `player_id`, as `POST
    /// /api/connections/{player_id}/session` does: it becomes current (strict mode accepts
    /// it from now on) and every connection of the old session ends with
    /// `session_replaced`. Naming the current session changes nothing; naming a replaced
    /// one is refused ([`SessionRefused::Stale`]).
    ///
    /// ```
    /// use dualcast::{ConnectionKind, DisconnectReason, Hub, Registration};
    ///
    /// let hub = Hub::new();
    /// let (old, _outbox) = hub.register(Registration::new("alice", ConnectionKind::Sse).session("s1")).unwrap();
    /// let begun = hub.begin_session("alice", "s2").unwrap();
    /// assert_eq!(begun.connections_ended, 1);
    /// assert_eq!(old.end_reason(), Some(DisconnectReason::SessionReplaced));
    /// assert!(hub.begin_session("alice", "s1").is_err(), "s1 was replaced");
    /// ```
    pub fn begin_session(
        &self,
        player_id: &str,
        session_id: &str,
    ) -> Result<SessionBegun, SessionRefused> {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        self.expire_players(registry, now);
        if let Some(player) = registry.players.get_mut(player_id) {
            if player.replaced.iter().any(|old| **old == *session_id) {
                return Err(SessionRefused::Stale);
            }
            if let Some(current) = player.session.as_mut() {
                if current.names(session_id) {
                    current.begun_by_api = true;
                    return Ok(SessionBegun {
                        connections_ended: 0,
                        already_current: true,
                    });
                }
            }
        }
        let ended = self.replace_session(registry, player_id, session_id.into(), true, now);
        self.announce_session(registry, player_id, session_id, true, false);
        self.mark_idle_if_unused(registry, player_id, now);
        Ok(SessionBegun {
            connections_ended: ended,
            already_current: false,
        })
    }

    /// The session of `player_id` and its live connections (on every node of its cluster).
    #[must_use]
    pub fn session_of(&self, player_id: &str) -> SessionInfo {
        let registry = self.read();
        let player = registry.players.get(player_id);
        let session = player.and_then(|p| p.session.as_ref());
        let live = || {
            player
                .into_iter()
                .flat_map(|p| &p.connections)
                .filter(|c| c.end_reason().is_none())
        };
        let remote = || player.into_iter().flat_map(|p| p.remote());
        let connection_kinds = [ConnectionKind::WebSocket, ConnectionKind::Sse]
            .into_iter()
            .filter(|kind| live().any(|c| c.kind == *kind) || remote().any(|r| r.kind == *kind))
            .collect();
        SessionInfo {
            session_id: session.map(|s| s.id.clone()),
            created: session.map(|s| s.created),
            active_connections: live().count() + remote().count(),
            connection_kinds,
        }
    }

    /// Logs `player_id` out: every connection of the player ends with `logout` (both
    /// kinds), and its current session ends without being remembered as replaced, so the
    /// next login starts afresh. Returns how many connections it ended.
    ///
    /// ```
    /// use dualcast::{ConnectionKind, DisconnectReason, Hub, Registration};
    ///
    /// let hub = Hub::new();
    /// let (ws, _a) = hub.register(Registration::new("alice", ConnectionKind::WebSocket)).unwrap();
    /// let (sse, _b) = hub.register(Registration::new("alice", ConnectionKind::Sse)).unwrap();
    /// assert_eq!(hub.logout("alice"), 2);
    /// assert_eq!(ws.end_reason(), Some(DisconnectReason::Logout));
    /// assert_eq!(sse.end_reason(), Some(DisconnectReason::Logout));
    /// assert_eq!(hub.session_of("alice").session_id, None);
    /// ```
    ///
    /// On a hub with a [backplane](super::Backplane), every node ends the player's
    /// connections it holds.
    pub fn logout(&self, player_id: &str) -> usize {
        let ended = self.logout_here(player_id, false);
        self.announce_logout(player_id);
        ended
    }

    /// [`logout`](Self::logout) on this node only: what another node's logout does here,
    /// where it ends only the connections whose opening came back from the log before it
    /// (`in_log_only`).
    pub(super) fn logout_here(&self, player_id: &str, in_log_only: bool) -> usize {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        let Some(player) = registry.players.get_mut(player_id) else {
            return 0;
        };
        player.session = None;
        // Connections ending already (for another reason) are gone with the logout too.
        player.logged_out = !player.connections.is_empty();
        let ended = player
            .connections
            .iter()
            .filter(|c| !in_log_only || c.is_in_log())
            .filter(|c| self.end_connection(c, DisconnectReason::Logout))
            .count();
        self.logged_out_while_reconnecting(registry, player_id);
        tracing::info!(player_id, connections_ended = ended, "player logged out");
        self.mark_idle_if_unused(registry, player_id, now);
        ended
    }

    /// The player's record, created (and marked idle, until a connection comes) if new.
    pub(super) fn player_entry<'r>(
        &self,
        registry: &'r mut Registry,
        player_id: &str,
        now: Instant,
    ) -> &'r mut Player {
        if !registry.players.contains_key(player_id) {
            registry.players.insert(player_id.into(), Player::default());
            self.mark_idle_if_unused(registry, player_id, now);
        }
        registry
            .players
            .get_mut(player_id)
            .expect("inserted just above when missing")
    }
}

/// Remembers `old` as replaced, keeping at most `limit` (the oldest is forgotten first).
pub(super) fn remember(replaced: &mut VecDeque<Arc<str>>, old: Arc<str>, limit: usize) {
    if replaced.iter().any(|known| *known == old) {
        return;
    }
    if replaced.len() >= limit {
        replaced.pop_front();
    }
    replaced.push_back(old);
}

/// A new session id: 128 random bits from the OS, as 32 hex digits.
pub(crate) fn mint_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: ids must still differ; the time and a counter do that, though
        // they are guessable (logged, since a guessable id weakens strict mode).
        tracing::warn!("no OS randomness: the minted session id is not cryptographically random");
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..].copy_from_slice(&count.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ResolveSession for Hub {
    /// Applies SPEC §3 for a new connection of `player_id`: it joins the current session,
    /// creates one, takes over, or is refused. A takeover is only decided here: the old
    /// session's connections end when the new connection registers ([`Hub::register`]
    /// settles the session again under its lock), so a connection refused after this (by
    /// the admission layer, say) takes over nothing. Admission leaves the old session's
    /// connections out of the count ([`Admit::admit_taking_over`]).
    ///
    /// [`Admit::admit_taking_over`]: dualcast_layers::track::Admit::admit_taking_over
    fn resolve(&self, player_id: &str, named: Option<&str>) -> Result<Session, SessionRefused> {
        let mut registry = self.write();
        let (id, outcome) = self.decide_session(&mut registry, player_id, named)?;
        Ok(Session::new(id, named.is_some(), outcome))
    }
}
