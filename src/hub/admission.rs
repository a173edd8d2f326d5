//! The hub as the per-player connection limit of `TrackLayer` ([`Admit`]): it counts the
//! player's live connections (not those already ending, such as an old session's), those
//! other nodes of its cluster announced, and the ones admitted but not yet registered.

use std::sync::Arc;

use dualcast_layers::track::{Admit, PlayerAtLimit};
use tokio::time::Instant;

use super::registry::Player;
use super::{shared_key, Hub};

/// The admission of one connection by the [`Hub`]: counts towards its player's limit from
/// admission until registration (then the registered connection counts, until it ends).
/// The connection's guard owns it among its leases.
pub struct HubAdmission {
    hub: Hub,
    player_id: Arc<str>,
    registered: bool,
}

impl std::fmt::Debug for HubAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubAdmission")
            .field("player_id", &self.player_id)
            .field("registered", &self.registered)
            .finish()
    }
}

impl HubAdmission {
    /// Called by `register`, under the registry lock, for the player's `entry`.
    pub(super) fn registered(&mut self, hub: &Hub, entry: &mut Player) {
        if self.registered || !Arc::ptr_eq(&self.hub.inner, &hub.inner) {
            return;
        }
        self.registered = true;
        entry.admitting = entry.admitting.saturating_sub(1);
    }
}

impl Drop for HubAdmission {
    fn drop(&mut self) {
        if self.registered {
            return;
        }
        // Admitted, never registered (refused later, or the upgrade failed).
        let now = Instant::now();
        let mut registry = self.hub.write();
        let registry = &mut *registry;
        if let Some(player) = registry.players.get_mut(&*self.player_id) {
            player.admitting = player.admitting.saturating_sub(1);
        }
        self.hub.mark_idle_if_unused(registry, &self.player_id, now);
    }
}

impl Admit for Hub {
    type Lease = HubAdmission;

    /// Admits a connection of `player_id` if its live connections (not counting those
    /// already ending) and admissions in flight are fewer than `limit` (`0`: no limit).
    fn admit(&self, player_id: &str, limit: usize) -> Result<HubAdmission, PlayerAtLimit> {
        self.admit_counting(player_id, limit, None)
    }

    /// As [`admit`](Self::admit), without counting the connections of sessions other than
    /// `taking_over`: [`register`](Hub::register) ends them with `session_replaced` as it
    /// takes the player over, so their slots are the new connection's to use.
    fn admit_taking_over(
        &self,
        player_id: &str,
        taking_over: &str,
        limit: usize,
    ) -> Result<HubAdmission, PlayerAtLimit> {
        self.admit_counting(player_id, limit, Some(taking_over))
    }
}

impl Hub {
    /// Admits a connection of `player_id`, counting its live connections (of the session
    /// `taking_over` only, when given) and its admissions in flight against `limit`.
    fn admit_counting(
        &self,
        player_id: &str,
        limit: usize,
        taking_over: Option<&str>,
    ) -> Result<HubAdmission, PlayerAtLimit> {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        self.expire_players(registry, now);
        let key = shared_key(&registry.players, player_id);
        let player = registry.players.entry(key.clone()).or_default();
        let open = player
            .connections
            .iter()
            .filter(|c| c.end_reason().is_none())
            .filter(|c| taking_over.is_none_or(|new| c.session_id.as_deref() == Some(new)))
            .count()
            + player
                .remote()
                .iter()
                .filter(|r| taking_over.is_none_or(|new| r.session_id.as_deref() == Some(new)))
                .count()
            + player.admitting;
        if limit != 0 && open >= limit {
            self.mark_idle_if_unused(registry, player_id, now);
            return Err(PlayerAtLimit { open, limit });
        }
        player.admitting += 1;
        Ok(HubAdmission {
            hub: self.clone(),
            player_id: key,
            registered: false,
        })
    }
}
