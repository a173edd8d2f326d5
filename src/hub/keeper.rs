//! The hub's one timer task, the keeper: it ends connections whose credential expired, runs
//! the heartbeat sweep, turns `reconnecting` players `offline` when their grace period is
//! over and forgets players whose state TTL ran out.
//!
//! It sleeps until the earliest thing due (a credential deadline, the next heartbeat tick
//! while any connection has heartbeats, the end of the first grace period, the first state
//! TTL) and is woken when something earlier is added. It holds the hub weakly, so it ends
//! once the hub is gone. Nothing here needs the keeper for correctness of what reads see:
//! every write that touches players also expires what is due; the keeper makes sure the
//! events come on time when nothing else happens.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::registry::RegisterError;
use super::{Hub, Inner};
use crate::connection::DisconnectReason;

impl Hub {
    /// Starts the keeper task unless it runs already; an error outside a tokio runtime.
    pub(super) fn start_keeper(&self) -> Result<(), RegisterError> {
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
            runtime.spawn(keep(hub, self.inner.keeper_wake.clone(), running));
        }
        Ok(())
    }

    /// Wakes the keeper to look again at what is due (something earlier was added).
    pub(super) fn wake_keeper(&self) {
        // Best effort outside a runtime: what the keeper would do is done by later writes.
        if self.start_keeper().is_ok() {
            self.inner.keeper_wake.notify_one();
        }
    }

    /// Does what is due at `now`; returns when to look again (`None`: when woken).
    pub(super) fn keep_once(&self, now: Instant) -> Option<Instant> {
        // The write lock only when something is due: the keeper wakes every second while
        // connections have heartbeats, and deliveries take the read lock.
        let deadline_due = self.read().deadlines.next().is_some_and(|at| at <= now);
        let due = if deadline_due {
            self.write().deadlines.take_due(now)
        } else {
            Vec::new()
        };
        for connection in due {
            if self.end_connection(&connection, DisconnectReason::AuthExpired) {
                tracing::info!(
                    connection_id = %connection.id,
                    player_id = &*connection.player_id,
                    "credential expired: connection ended"
                );
            }
        }
        if self.next_resend().is_some_and(|at| at <= now) {
            self.resend_due(now);
        }
        let heartbeats = self.read().heartbeats > 0;
        if heartbeats {
            self.sweep_heartbeats();
        }
        self.sample_health(now);
        if self.read().has_due_players(now, self.forget_after()) {
            let mut registry = self.write();
            self.expire_players(&mut registry, now);
        }
        let registry = self.read();
        let tick = heartbeats.then(|| now + self.inner.settings.heartbeat.tick());
        [
            registry.deadlines.next(),
            tick,
            registry.next_player_due(self.forget_after()),
            self.next_resend(),
            self.inner.figures.next_sample(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The keeper: holds the hub only weakly, so it ends once the hub is gone (the hub's drop
/// wakes it).
///
/// `_running` is dropped with this future, also when its runtime shuts down under it: the
/// next thing that needs a keeper then starts one again, on its own runtime.
async fn keep(hub: Weak<Inner>, wake: Arc<Notify>, _running: Running) {
    loop {
        let next = {
            let Some(inner) = hub.upgrade() else { return };
            Hub { inner }.keep_once(Instant::now())
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
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
