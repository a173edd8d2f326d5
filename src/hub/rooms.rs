//! Room membership: it belongs to the player, so it holds across all of its connections
//! and while it has none.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::Instant;

use super::{shared_key, Hub};

impl Hub {
    /// Adds `player_id` to `room`; membership holds across all of its connections and
    /// reconnects. A player that has no connection keeps it for the presence grace and the
    /// [state TTL](super::HubSettings::state_ttl) unless it connects. Returns `true` if it
    /// was not a member yet.
    pub fn join_room(&self, player_id: &str, room: &str) -> bool {
        let now = Instant::now();
        let mut registry = self.write();
        let registry = &mut *registry;
        self.expire_players(registry, now);
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
        self.mark_idle_if_unused(registry, player_id, now);
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
        let mailbox_empty = player
            .mailbox
            .get_mut()
            .is_ok_and(|mailbox| mailbox.is_empty());
        if player.is_unused()
            && player.rooms.is_empty()
            && player.session.is_none()
            && mailbox_empty
        {
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

    /// Whether `player_id` is a member of `room`.
    #[must_use]
    pub fn is_member(&self, room: &str, player_id: &str) -> bool {
        self.read()
            .rooms
            .get(room)
            .is_some_and(|members| members.contains(player_id))
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
}

/// The names in `set`, sorted; empty for `None`.
fn sorted<S>(set: Option<&HashSet<Arc<str>, S>>) -> Vec<String> {
    let mut names: Vec<String> = set
        .into_iter()
        .flatten()
        .map(|name| name.to_string())
        .collect();
    names.sort_unstable();
    names
}
