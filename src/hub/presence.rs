//! Presence (SPEC §5): online while a connection lives; `reconnecting` for a grace period
//! after the last one ends; then `offline`, with the player's rooms and session kept for the
//! state TTL so that a reconnect restores them; then the player is forgotten.
//!
//! Each change is one [`HubEvent::Presence`], emitted under the registry lock, so
//! subscribers see them once each and in order: `online`, `reconnecting`, then `online`
//! again (a reconnect within the grace, and no `offline`) or `offline`. A logout skips the
//! grace: its player is `offline` at once.
//!
//! Two queues, both in time order since their periods are fixed, hold what is due: the
//! players in their grace period and the idle players (no connection, none being admitted).
//! Every write that touches players, and the hub's keeper, pops what is due: a peek when
//! nothing is.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::events::{HubEvent, Presence};
use super::registry::Registry;
use super::{shared_key, Hub};

impl Hub {
    /// Whether `player_id` is online, reconnecting (in its grace period) or offline.
    #[must_use]
    pub fn presence(&self, player_id: &str) -> Presence {
        match self.read().players.get(player_id) {
            Some(player) if !player.connections.is_empty() || !player.remote().is_empty() => {
                Presence::Online
            }
            Some(player) if player.reconnecting_until.is_some() => Presence::Reconnecting,
            _ => Presence::Offline,
        }
    }

    /// How long after its last connection an idle player is forgotten: the grace, then the
    /// state TTL.
    pub(super) fn forget_after(&self) -> Duration {
        self.inner
            .settings
            .presence_grace
            .saturating_add(self.inner.settings.state_ttl)
    }

    /// A player's first connection registered: `online`, ending a grace period if it was
    /// in one (and no `offline` is sent for it).
    pub(super) fn came_online(&self, registry: &mut Registry, player_id: &str) {
        let key = shared_key(&registry.players, player_id);
        if let Some(player) = registry.players.get_mut(player_id) {
            player.reconnecting_until = None;
        }
        self.emit(HubEvent::Presence {
            player_id: key,
            presence: Presence::Online,
        });
    }

    /// A player's last connection left at `now`: `reconnecting` for the grace period, or
    /// `offline` at once after a logout (or without a grace period).
    pub(super) fn went_away(
        &self,
        registry: &mut Registry,
        player_id: &str,
        logout: bool,
        now: Instant,
    ) {
        let grace = self.inner.settings.presence_grace;
        let key = shared_key(&registry.players, player_id);
        let Some(player) = registry.players.get_mut(player_id) else {
            return;
        };
        // Also when a connection that had ended for another reason was the last to go.
        let logout = logout || std::mem::take(&mut player.logged_out);
        if logout || grace.is_zero() {
            player.reconnecting_until = None;
            self.emit(HubEvent::Presence {
                player_id: key,
                presence: Presence::Offline,
            });
            return;
        }
        let until = now + grace;
        player.reconnecting_until = Some(until);
        let first = registry.grace.is_empty();
        registry.grace.push_back((until, key.clone()));
        self.emit(HubEvent::Presence {
            player_id: key,
            presence: Presence::Reconnecting,
        });
        if first {
            self.wake_keeper();
        }
    }

    /// Starts the player's idle clock if it has no connection and none being admitted: its
    /// state (session, rooms) is forgotten the grace and the
    /// [state TTL](super::HubSettings::state_ttl) later, unless a connection comes.
    pub(super) fn mark_idle_if_unused(
        &self,
        registry: &mut Registry,
        player_id: &str,
        now: Instant,
    ) {
        let key = shared_key(&registry.players, player_id);
        let Some(player) = registry.players.get_mut(player_id) else {
            return;
        };
        if player.is_unused() && player.idle_since.is_none() {
            player.idle_since = Some(now);
            let first = registry.idle.is_empty();
            registry.idle.push_back((now, key));
            if first {
                self.wake_keeper();
            }
        }
    }

    /// A logout of a player in its grace period: `offline` at once.
    pub(super) fn logged_out_while_reconnecting(&self, registry: &mut Registry, player_id: &str) {
        let key = shared_key(&registry.players, player_id);
        let Some(player) = registry.players.get_mut(player_id) else {
            return;
        };
        if player.connections.is_empty() && player.reconnecting_until.take().is_some() {
            self.emit(HubEvent::Presence {
                player_id: key,
                presence: Presence::Offline,
            });
        }
    }

    /// Ends the grace periods that are over (`offline`) and forgets the players whose state
    /// TTL ran out.
    pub(super) fn expire_players(&self, registry: &mut Registry, now: Instant) {
        self.end_grace_periods(registry, now);
        self.forget_idle_players(registry, now);
    }

    fn end_grace_periods(&self, registry: &mut Registry, now: Instant) {
        while registry
            .grace
            .front()
            .is_some_and(|(until, _)| *until <= now)
        {
            let Some((until, player_id)) = registry.grace.pop_front() else {
                break;
            };
            let Some(player) = registry.players.get_mut(&*player_id) else {
                continue;
            };
            // Stale unless it is this very grace period, still running.
            if player.reconnecting_until != Some(until) || !player.connections.is_empty() {
                continue;
            }
            player.reconnecting_until = None;
            self.emit(HubEvent::Presence {
                player_id,
                presence: Presence::Offline,
            });
        }
    }

    /// Forgets the players idle for longer than the grace and the state TTL: their session,
    /// the sessions they replaced, and their rooms.
    fn forget_idle_players(&self, registry: &mut Registry, now: Instant) {
        let after = self.forget_after();
        while let Some((since, _)) = registry.idle.front() {
            if now.saturating_duration_since(*since) < after {
                break;
            }
            let Some((since, player_id)) = registry.idle.pop_front() else {
                break;
            };
            let Some(player) = registry.players.get_mut(&*player_id) else {
                continue;
            };
            // A stale entry: the player went idle again later, with an entry of its own.
            if player.idle_since != Some(since) {
                continue;
            }
            if !player.is_unused() {
                // It came back; its next idle spell gets a new entry.
                player.idle_since = None;
                continue;
            }
            let Some(mut player) = registry.players.remove(&*player_id) else {
                continue;
            };
            let (pending, settled) = player
                .mailbox
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .release(&self.inner.totals);
            self.count_dropped(pending, 0);
            self.settle(&player_id, settled);
            if player.reconnecting_until.is_some() {
                // Its grace is not over (a state TTL of zero): it still goes offline first.
                self.emit(HubEvent::Presence {
                    player_id: player_id.clone(),
                    presence: Presence::Offline,
                });
            }
            for room in &player.rooms {
                if let Some(members) = registry.rooms.get_mut(room) {
                    members.remove(&*player_id);
                    if members.is_empty() {
                        registry.rooms.remove(room);
                    }
                }
            }
            tracing::debug!(
                player_id = &*player_id,
                rooms = player.rooms.len(),
                "state TTL over: player forgotten"
            );
        }
    }
}

impl Registry {
    /// Whether a grace period or a state TTL is over at `now`.
    pub(super) fn has_due_players(&self, now: Instant, forget_after: Duration) -> bool {
        self.next_player_due(forget_after)
            .is_some_and(|due| due <= now)
    }

    /// When the next grace period or state TTL is over.
    pub(super) fn next_player_due(&self, forget_after: Duration) -> Option<Instant> {
        let grace = self.grace.front().map(|(until, _)| *until);
        let idle = self.idle.front().map(|(since, _)| *since + forget_after);
        grace.into_iter().chain(idle).min()
    }
}

/// The queue type of both: (instant, player), oldest first.
pub(super) type PlayerQueue = VecDeque<(Instant, std::sync::Arc<str>)>;
