//! What the hub tells its subscribers: [`HubEvent`] and [`Presence`].

use std::sync::Arc;

use serde::Serialize;

use super::Hub;
use crate::connection::{ConnectionId, ConnectionKind, DisconnectReason};

/// Whether a player is reachable (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// At least one connection lives.
    Online,
    /// The last connection ended less than the
    /// [presence grace](super::HubSettings::presence_grace) ago: rooms and session are kept
    /// and no `offline` has been announced.
    Reconnecting,
    /// No connection lives, and the grace period is over (or the player logged out).
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
    /// A new game session became the player's current one (SPEC §3).
    SessionBegan {
        /// The player.
        player_id: Arc<str>,
        /// The new current session.
        session_id: Arc<str>,
        /// The session it replaced, if any.
        replaced: Option<Arc<str>>,
        /// Connections of the replaced session it ended (`session_replaced`).
        connections_ended: usize,
    },
    /// A message published with [`with_ack`](crate::Message::with_ack) stopped waiting
    /// for `player_id`'s acknowledgement: acked, expired, or dropped by a bound.
    AckSettled {
        /// The envelope id of the message.
        message_id: Arc<str>,
        /// The player it was waiting on.
        player_id: Arc<str>,
        /// How the wait ended.
        outcome: super::AckOutcome,
        /// How many times it was resent.
        resent: u32,
    },
    /// A player's presence changed.
    Presence {
        /// The player.
        player_id: Arc<str>,
        /// Its new presence.
        presence: Presence,
    },
}

impl Hub {
    /// A receiver of [`HubEvent`]s from now on. A receiver that falls more than
    /// [`HubSettings::event_capacity`](super::HubSettings::event_capacity) events behind
    /// loses the oldest ones.
    #[must_use]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    /// Sends `event` to the subscribers. Called under the registry lock, so subscribers see
    /// events in registry order (sending never blocks).
    pub(super) fn emit(&self, event: HubEvent) {
        // No subscriber is not an error.
        let _ = self.inner.events.send(event);
    }
}
