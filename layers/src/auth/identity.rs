//! Who a request speaks for: [`Identity`], its [`Role`] and its [`CredentialSource`].

use std::sync::Arc;
use std::time::SystemTime;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// An end user: sees and touches only its own connections and session.
    #[default]
    Player,
    /// A backend: may publish to and manage any player.
    Service,
    /// An operator: like `Service`.
    Admin,
}

impl Role {
    /// The claim value: `"player"`, `"service"` or `"admin"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Player => "player",
            Self::Service => "service",
            Self::Admin => "admin",
        }
    }

    /// Parses a claim value; `None` for anything else.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "player" => Some(Self::Player),
            "service" => Some(Self::Service),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// `true` for `Service` and `Admin`: roles that may act for any player.
    #[must_use]
    pub const fn is_privileged(self) -> bool {
        matches!(self, Self::Service | Self::Admin)
    }
}

/// How the credential of a request reached the server.
///
/// The first three are tokens, in the order [`Auth`](super::Auth) looks for them; the last
/// two are *ambient* credentials (typically a cookie), which a browser sends on a
/// cross-site request by itself, so [`Auth`](super::Auth) checks the `Origin` of such
/// requests (see the [module docs](super#origin-policy)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CredentialSource {
    /// A token in `Authorization: Bearer`.
    #[default]
    AuthorizationHeader,
    /// A token in `Sec-WebSocket-Protocol: bearer, <jwt>`.
    Subprotocol,
    /// A token in the `access_token` query parameter.
    QueryParameter,
    /// The host's [`Identify`](super::Identify) hook identified the request (for example
    /// from a session cookie).
    IdentifyHook,
    /// A host layer in front of [`Auth`](super::Auth) had already put an [`Identity`] in the
    /// request extensions.
    Host,
}

impl CredentialSource {
    /// `true` for the three token places; `false` for the ambient credentials
    /// ([`IdentifyHook`](Self::IdentifyHook), [`Host`](Self::Host)).
    #[must_use]
    pub const fn is_token(self) -> bool {
        matches!(
            self,
            Self::AuthorizationHeader | Self::Subprotocol | Self::QueryParameter
        )
    }

    /// A stable name for logs and metrics, e.g. `"authorization_header"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationHeader => "authorization_header",
            Self::Subprotocol => "subprotocol",
            Self::QueryParameter => "query_parameter",
            Self::IdentifyHook => "identify_hook",
            Self::Host => "host",
        }
    }
}

/// A verified principal, placed in the request extensions by [`Auth`](super::Auth).
///
/// It holds no token, so it may be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    player_id: Arc<str>,
    role: Role,
    session_id: Option<Arc<str>>,
    expires_at: Option<SystemTime>,
    credential_source: CredentialSource,
}

impl Identity {
    /// An identity for `player_id` with `role`, no session claim, no expiry and the
    /// default credential source ([`CredentialSource::AuthorizationHeader`]; the layer
    /// overwrites it with the real one).
    #[must_use]
    pub fn new(player_id: impl Into<Arc<str>>, role: Role) -> Self {
        Self {
            player_id: player_id.into(),
            role,
            session_id: None,
            expires_at: None,
            credential_source: CredentialSource::default(),
        }
    }

    /// Sets the session the credential names (the `sid` claim). Default: none.
    #[must_use]
    pub fn with_session_id(mut self, session_id: impl Into<Arc<str>>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets when the credential stops being valid (the `exp` claim). Default: never.
    #[must_use]
    pub fn with_expiry(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets how the credential reached the server. Default:
    /// [`CredentialSource::AuthorizationHeader`]; [`Auth`](super::Auth) sets it on every
    /// identity it admits.
    #[must_use]
    pub fn with_credential_source(mut self, credential_source: CredentialSource) -> Self {
        self.credential_source = credential_source;
        self
    }

    pub(super) fn set_credential_source(&mut self, credential_source: CredentialSource) {
        self.credential_source = credential_source;
    }

    /// The player this identity speaks for (the `sub` claim).
    #[must_use]
    pub fn player_id(&self) -> &str {
        &self.player_id
    }

    /// The player id as a shared string, cheap to clone.
    #[must_use]
    pub fn player_id_arc(&self) -> &Arc<str> {
        &self.player_id
    }

    /// The role claim.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The session the credential names, if any.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// When the credential stops being accepted, if ever: for a JWT, `exp` plus the
    /// verifier's leeway. A connection opened with it ends then with `auth_expired`.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// How the credential reached the server.
    #[must_use]
    pub fn credential_source(&self) -> CredentialSource {
        self.credential_source
    }

    /// May this identity act for `player_id`? Its own id always; any id when privileged.
    #[must_use]
    pub fn may_act_for(&self, player_id: &str) -> bool {
        self.role.is_privileged() || &*self.player_id == player_id
    }
}
