//! Credential deadlines: the hub's keeper task ends each connection whose credential
//! expired.
//!
//! A connection registered with a deadline gets one entry in an ordered map under the
//! registry lock (removed when its guard is dropped, so the map holds live connections
//! only; the deadline is kept in the guard, not in the connection record that every
//! delivery reads, which stays small); the keeper sleeps until the earliest entry and ends
//! what is due with `auth_expired`, by the same path as every other ending the hub decides.
//! No timer lives in the transports.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::connection::{Connection, ConnectionId};

/// Connections by credential deadline.
#[derive(Default)]
pub(super) struct Deadlines {
    by_deadline: BTreeMap<(Instant, ConnectionId), Arc<Connection>>,
}

impl Deadlines {
    /// Adds `connection`, due at `deadline`; `true` when it is now the earliest (the keeper
    /// must wake to sleep less).
    pub(super) fn insert(&mut self, deadline: Instant, connection: &Arc<Connection>) -> bool {
        self.by_deadline
            .insert((deadline, connection.id), connection.clone());
        self.by_deadline
            .keys()
            .next()
            .is_some_and(|(first, id)| *first == deadline && *id == connection.id)
    }

    /// Forgets the deadline of `connection`, due at `deadline`.
    pub(super) fn remove(&mut self, deadline: Instant, connection: ConnectionId) {
        self.by_deadline.remove(&(deadline, connection));
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.by_deadline
            .keys()
            .next()
            .map(|(deadline, _)| *deadline)
    }

    /// Takes out every connection due at `now`.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Arc<Connection>> {
        let mut due = Vec::new();
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }
}

#[cfg(test)]
impl Deadlines {
    pub(super) fn len(&self) -> usize {
        self.by_deadline.len()
    }
}
