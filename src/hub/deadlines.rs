//! Credential deadlines: one task per hub ends each connection whose credential expired.
//!
//! A connection registered with a deadline gets one entry in an ordered map under the
//! registry lock (removed when its guard is dropped, so the map holds live connections
//! only; the deadline is kept in the guard, not in the connection record that every
//! delivery reads, which stays small); the keeper task sleeps until the earliest entry and ends what is due with
//! `auth_expired`, by the same path as every other ending the hub decides. No timer lives
//! in the transports.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::registry::RegisterError;
use super::{Hub, Inner};
use crate::connection::{Connection, ConnectionId, DisconnectReason};

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
    fn next(&self) -> Option<Instant> {
        self.by_deadline
            .keys()
            .next()
            .map(|(deadline, _)| *deadline)
    }

    /// Takes out every connection due at `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Arc<Connection>> {
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

impl Hub {
    /// Starts the keeper task unless it runs already.
    pub(super) fn start_deadline_keeper(&self) -> Result<(), RegisterError> {
        if self.inner.keeper_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| RegisterError::NoRuntime)?;
        if self
            .inner
            .keeper_started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let hub = Arc::downgrade(&self.inner);
            // Moved into the future as it is made, so that it is dropped with it even if
            // the task never ran (its runtime shut down first).
            let running = Running(hub.clone());
            runtime.spawn(keep_deadlines(
                hub,
                self.inner.deadline_changed.clone(),
                running,
            ));
        }
        Ok(())
    }
}

/// The keeper: holds the hub only weakly, so it ends once the hub is gone (the hub's drop
/// wakes it).
///
/// `_running` is dropped with this future, also when its runtime shuts down under it: the
/// next registration with a deadline then starts a keeper again, on its own runtime.
async fn keep_deadlines(hub: Weak<Inner>, changed: Arc<Notify>, _running: Running) {
    loop {
        let next = {
            let Some(inner) = hub.upgrade() else { return };
            let hub = Hub { inner };
            let due = hub.write().deadlines.take_due(Instant::now());
            for connection in due {
                if hub.end_connection(&connection, DisconnectReason::AuthExpired) {
                    tracing::info!(
                        connection_id = %connection.id,
                        player_id = &*connection.player_id,
                        "credential expired: connection ended"
                    );
                }
            }
            let next = hub.read().deadlines.next();
            next
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = changed.notified() => {}
                }
            }
            None => changed.notified().await,
        }
    }
}

/// Marks the keeper as gone when its future is dropped.
struct Running(Weak<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.keeper_started.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
impl Deadlines {
    pub(super) fn len(&self) -> usize {
        self.by_deadline.len()
    }
}
