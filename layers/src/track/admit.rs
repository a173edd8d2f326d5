//! [`Admit`]: the per-player connection limit behind [`TrackLayer`](super::TrackLayer).
// SKELETON: the helper fills in LocalAdmission and tests; the trait is the agreed interface.

/// Admits connections of a player up to a limit; dualcast's `Hub` implements it (counting
/// the live connections it holds), [`LocalAdmission`] is the stand-alone default.
pub trait Admit {
    /// What keeps an admitted connection counted; dropped when the connection ends.
    type Lease: Send + Sync + 'static;

    /// Admits one more connection of `player_id` if it holds fewer than `limit`.
    fn admit(&self, player_id: &str, limit: usize) -> Result<Self::Lease, PlayerAtLimit>;
}

/// A player already holds its limit of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerAtLimit {
    /// Connections the player holds (or is opening).
    pub open: usize,
    /// The limit.
    pub limit: usize,
}
