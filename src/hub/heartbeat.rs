//! Heartbeats (SPEC §5): the hub's one sweep over its connections pings the quiet ones and
//! ends the silent ones with `heartbeat_timeout`.
//!
//! No timer lives in a connection: the hub's keeper task runs the sweep once a tick (at
//! most a second) and, for a connection due a ping, sets a flag and wakes its transport,
//! which sends the ping itself. The sweep reads atomics only, under the registry's read
//! lock; with 19,000 connections it is a fraction of a millisecond a second.

use std::time::Duration;

use super::Hub;
use crate::connection::{DisconnectReason, Pulse};

/// When the hub pings WebSocket connections and when it gives up on them.
///
/// ```
/// use dualcast::hub::HeartbeatSettings;
/// use std::time::Duration;
///
/// let heartbeats = HeartbeatSettings::new()
///     .interval(Duration::from_secs(10))
///     .timeout(Duration::from_secs(30));
/// assert_eq!(heartbeats.get_interval(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct HeartbeatSettings {
    interval: Duration,
    timeout: Duration,
    late_after: Duration,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(60),
            late_after: Duration::from_secs(10),
        }
    }
}

impl HeartbeatSettings {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a connection may be quiet (no frame from the client, no ping from the
    /// server) before the server pings it. Keep it well below the
    /// [timeout](Self::timeout): a client is given at least one ping before it is ended.
    /// Default: 25 s. Minimum: 10 ms; at most half the timeout (larger values are lowered to
    /// that when the hub uses them).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a connection may go without any frame or pong from its client before it
    /// ends with `heartbeat_timeout` (close code 4004). Default: 60 s. Minimum: 10 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long a ping may go unanswered before the connection counts as `degraded`; it is
    /// healthy again at its next frame or pong. Zero: degraded from the sweep after each
    /// ping until the answer comes. Default: 10 s.
    pub fn late_after(mut self, late_after: Duration) -> Self {
        self.late_after = late_after;
        self
    }

    /// The ping interval.
    #[must_use]
    pub fn get_interval(&self) -> Duration {
        self.interval
    }

    /// The heartbeat timeout.
    #[must_use]
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// How long until an unanswered ping makes the connection degraded.
    #[must_use]
    pub fn get_late_after(&self) -> Duration {
        self.late_after
    }

    /// The ping interval the hub uses: at most half the timeout.
    pub(super) fn effective_interval(&self) -> Duration {
        self.interval.min(self.timeout / 2)
    }

    /// How often the sweep runs: a fifth of the shortest period, between 10 ms and 1 s.
    pub(super) fn tick(&self) -> Duration {
        let shortest = self.effective_interval();
        let shortest = if self.late_after.is_zero() {
            shortest
        } else {
            shortest.min(self.late_after)
        };
        (shortest / 5).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Hub {
    /// One heartbeat sweep: pings what is due, ends what is dead, and tells a connection
    /// whose outbox has drained that it is healthy again.
    pub(super) fn sweep_heartbeats(&self) {
        let settings = self.inner.settings.heartbeat;
        let interval = settings.effective_interval();
        let low_water = self.inner.settings.outbox_capacity / 2;
        let mut dead = Vec::new();
        {
            let registry = self.read();
            for connection in registry.players.values().flat_map(|p| &p.connections) {
                if connection.end_reason().is_some() {
                    continue;
                }
                if connection.outbox_high() && connection.outbox.free() > low_water {
                    connection.set_outbox_high(false);
                }
                if connection.has_heartbeats()
                    && connection.pulse(interval, settings.timeout, settings.late_after)
                        == Pulse::Dead
                {
                    dead.push(connection.clone());
                }
            }
        }
        // Ended and logged outside the lock: after a network partition these may be many.
        for connection in dead {
            if self.end_connection(&connection, DisconnectReason::HeartbeatTimeout) {
                tracing::info!(
                    connection_id = %connection.id,
                    player_id = &*connection.player_id,
                    timeout_ms = u64::try_from(settings.timeout.as_millis()).unwrap_or(u64::MAX),
                    "no sign of life within the heartbeat timeout: connection ended"
                );
            }
        }
    }
}
