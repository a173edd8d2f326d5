//! [`Admit`]: the per-player connection limit behind [`TrackLayer`](super::TrackLayer), and
//! [`LocalAdmission`], its stand-alone implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Admits connections of a player up to a limit; dualcast's `Hub` implements it (counting
/// the live connections it holds), [`LocalAdmission`] is the stand-alone default.
///
/// A limit of `0` means no limit. [`Track`](super::Track) keeps the returned lease with the
/// connection (in the request's [`Leases`](super::Leases)), so the admission ends exactly
/// when the connection does.
pub trait Admit {
    /// What keeps an admitted connection counted; dropped when the connection ends.
    type Lease: Send + Sync + 'static;

    /// Admits one more connection of `player_id` if it holds fewer than `limit`.
    fn admit(&self, player_id: &str, limit: usize) -> Result<Self::Lease, PlayerAtLimit>;

    /// Admits one more connection of `player_id` that takes the player over to the new
    /// session `taking_over` (the request's [`Session`](crate::session::Session) says
    /// [`TakesOver`](crate::session::SessionOutcome::TakesOver)): the connections of its
    /// other sessions end when this one registers, so an implementation that knows sessions
    /// leaves them out of the count. Default: [`admit`](Self::admit).
    fn admit_taking_over(
        &self,
        player_id: &str,
        taking_over: &str,
        limit: usize,
    ) -> Result<Self::Lease, PlayerAtLimit> {
        let _ = taking_over;
        self.admit(player_id, limit)
    }
}

impl<A: Admit + ?Sized> Admit for Arc<A> {
    type Lease = A::Lease;

    fn admit(&self, player_id: &str, limit: usize) -> Result<Self::Lease, PlayerAtLimit> {
        (**self).admit(player_id, limit)
    }

    fn admit_taking_over(
        &self,
        player_id: &str,
        taking_over: &str,
        limit: usize,
    ) -> Result<Self::Lease, PlayerAtLimit> {
        (**self).admit_taking_over(player_id, taking_over, limit)
    }
}

/// A player already holds its limit of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerAtLimit {
    /// Connections the player holds (or is opening).
    pub open: usize,
    /// The limit.
    pub limit: usize,
}

impl fmt::Display for PlayerAtLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the player holds {} of its {} connections",
            self.open, self.limit
        )
    }
}

impl std::error::Error for PlayerAtLimit {}

/// The stand-alone [`Admit`]: counts each player's admitted connections in memory, for as
/// long as their [`LocalAdmissionLease`]s live.
///
/// Clones share the same counts. A player's entry exists only while it holds a lease: the
/// last lease dropped removes it, so nothing is kept for players who left.
///
/// ```
/// use dualcast_layers::track::{Admit, LocalAdmission, PlayerAtLimit};
///
/// let admission = LocalAdmission::new();
/// let first = admission.admit("alice", 2).unwrap();
/// let _second = admission.admit("alice", 2).unwrap();
/// assert_eq!(admission.admit("alice", 2).unwrap_err(), PlayerAtLimit { open: 2, limit: 2 });
/// assert!(admission.admit("bob", 2).is_ok(), "each player has its own limit");
///
/// drop(first);
/// assert_eq!(admission.open("alice"), 1);
/// assert!(admission.admit("alice", 2).is_ok());
/// ```
#[derive(Clone, Default)]
pub struct LocalAdmission {
    open: Arc<Mutex<HashMap<Arc<str>, usize>>>,
}

impl LocalAdmission {
    /// An admission counting no connection yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many admitted connections of `player_id` are open (leases not yet dropped).
    #[must_use]
    pub fn open(&self, player_id: &str) -> usize {
        self.lock().get(player_id).copied().unwrap_or(0)
    }

    /// How many players hold at least one admitted connection: the entries kept.
    #[must_use]
    pub fn players(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Only counts are updated under the lock, with no user code: a poisoned lock still
        // guards well-formed counts.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Admit for LocalAdmission {
    type Lease = LocalAdmissionLease;

    /// Admits a connection of `player_id` if it holds fewer than `limit` (`0`: no limit).
    /// A refusal adds no entry.
    fn admit(&self, player_id: &str, limit: usize) -> Result<LocalAdmissionLease, PlayerAtLimit> {
        let mut open = self.lock();
        let key = match open.get_key_value(player_id) {
            Some((key, &count)) => {
                if limit != 0 && count >= limit {
                    return Err(PlayerAtLimit { open: count, limit });
                }
                Arc::clone(key)
            }
            None => Arc::from(player_id),
        };
        *open.entry(Arc::clone(&key)).or_insert(0) += 1;
        Ok(LocalAdmissionLease {
            open: Arc::clone(&self.open),
            player_id: key,
        })
    }
}

impl fmt::Debug for LocalAdmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalAdmission")
            .field("players", &self.players())
            .finish()
    }
}

/// One connection admitted by a [`LocalAdmission`]: counts towards its player's limit
/// until dropped.
pub struct LocalAdmissionLease {
    open: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    player_id: Arc<str>,
}

impl LocalAdmissionLease {
    /// The player this connection was admitted for.
    #[must_use]
    pub fn player_id(&self) -> &str {
        &self.player_id
    }
}

impl Drop for LocalAdmissionLease {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&*self.player_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&*self.player_id);
            }
        }
    }
}

impl fmt::Debug for LocalAdmissionLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalAdmissionLease")
            .field("player_id", &self.player_id)
            .finish()
    }
}
