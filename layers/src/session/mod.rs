//! Sessions: [`SessionLayer`] resolves the game session a connection request names.
// SKELETON: the helper fills in the layer; the types below are the agreed interface.

use std::sync::Arc;

/// Longest session id, in bytes (SPEC §3).
pub const MAX_SESSION_ID_LEN: usize = 128;

/// Whether `id` is a valid session id: 1 to [`MAX_SESSION_ID_LEN`] bytes of printable
/// ASCII (`!` to `~`).
#[must_use]
pub fn is_valid_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SESSION_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Decides which session a connection of a player joins (SPEC §3); dualcast's `Hub`
/// implements it.
pub trait ResolveSession {
    /// The session a new connection of `player_id` joins, given the session it names
    /// (`named`: the `session_id` query parameter, else the credential's `sid`), or why it
    /// is refused. `named` has been validated ([`is_valid_session_id`]).
    fn resolve(&self, player_id: &str, named: Option<&str>) -> Result<Session, SessionRefused>;
}

/// The resolved session of a connection request, put in the request extensions by
/// [`SessionLayer`] for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: Arc<str>,
    named: bool,
    outcome: SessionOutcome,
}

impl Session {
    /// A resolved session: its id, whether the request named it, and what joining it does.
    pub fn new(id: impl Into<Arc<str>>, named: bool, outcome: SessionOutcome) -> Self {
        Self {
            id: id.into(),
            named,
            outcome,
        }
    }

    /// The session id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session id, shared.
    #[must_use]
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// Whether the request named this session (else it was given the current one, or a new
    /// one was minted).
    #[must_use]
    pub fn named(&self) -> bool {
        self.named
    }

    /// What joining it does.
    #[must_use]
    pub fn outcome(&self) -> SessionOutcome {
        self.outcome
    }
}

/// What a connection joining a [`Session`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionOutcome {
    /// It joins the player's current session.
    Joined,
    /// The player had no session: this one is created.
    Created,
    /// A new session: it becomes current and the old one's connections end.
    TakesOver,
}

/// Why a connection request's session is refused (`409 session_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionRefused {
    /// The session was replaced earlier (`STALE_SESSION`).
    Stale,
    /// Strict mode: the session was not begun through the session API (`UNKNOWN_SESSION`).
    Unknown,
}

impl SessionRefused {
    /// The `details.error_code`: `STALE_SESSION` or `UNKNOWN_SESSION`.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Stale => "STALE_SESSION",
            Self::Unknown => "UNKNOWN_SESSION",
        }
    }

    /// The cause counted by metrics ([`AdmissionRefused`](crate::error::AdmissionRefused)):
    /// `stale_session` or `unknown_session`.
    #[must_use]
    pub const fn cause(self) -> &'static str {
        match self {
            Self::Stale => "stale_session",
            Self::Unknown => "unknown_session",
        }
    }
}
