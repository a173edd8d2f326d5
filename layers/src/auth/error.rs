//! Why a request did not authenticate: [`AuthError`] and its [`AuthErrorKind`].

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::error::{ErrorResponse, ErrorType};

/// Why a request did not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthErrorKind {
    /// No credential: no token in any of the three places and no identity from the hook.
    Missing,
    /// A token that is not a well-formed credential (wrong scheme, too long, not a JWT).
    Malformed,
    /// A well-formed credential whose `exp` has passed.
    Expired,
    /// A credential that is not yet valid (`nbf` in the future).
    NotYetValid,
    /// A credential that does not verify: bad signature, wrong issuer or audience, bad
    /// claims, an unknown session cookie.
    Invalid,
}

impl AuthErrorKind {
    /// The stable `details.error_code` of the 401 body.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Missing => "MISSING_TOKEN",
            Self::Malformed => "MALFORMED_TOKEN",
            Self::Expired => "TOKEN_EXPIRED",
            Self::NotYetValid => "TOKEN_NOT_YET_VALID",
            Self::Invalid => "INVALID_TOKEN",
        }
    }
}

/// An authentication failure: a kind and a message that never contains the credential.
///
/// ```
/// use dualcast_layers::{AuthError, AuthErrorKind};
///
/// let error = AuthError::invalid("unknown session cookie");
/// assert_eq!(error.kind(), AuthErrorKind::Invalid);
/// assert_eq!(error.to_string(), "unknown session cookie (INVALID_TOKEN)");
///
/// let response: http::Response<bytes::Bytes> = error.into_response();
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["www-authenticate"], "Bearer");
/// assert_eq!(response.extensions().get(), Some(&AuthErrorKind::Invalid));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    kind: AuthErrorKind,
    message: &'static str,
}

impl AuthError {
    /// A failure of `kind` explained by `message` (never put a credential in it).
    #[must_use]
    pub const fn new(kind: AuthErrorKind, message: &'static str) -> Self {
        Self { kind, message }
    }

    /// [`AuthErrorKind::Missing`]: the request carries no credential, e.g. no session
    /// cookie.
    #[must_use]
    pub const fn missing(message: &'static str) -> Self {
        Self::new(AuthErrorKind::Missing, message)
    }

    /// [`AuthErrorKind::Invalid`]: the request carries a credential that does not verify,
    /// e.g. an unknown or revoked session cookie.
    #[must_use]
    pub const fn invalid(message: &'static str) -> Self {
        Self::new(AuthErrorKind::Invalid, message)
    }

    pub(crate) const fn malformed(message: &'static str) -> Self {
        Self::new(AuthErrorKind::Malformed, message)
    }

    /// The kind of failure.
    #[must_use]
    pub const fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// The human explanation, as it appears in the 401 body.
    #[must_use]
    pub const fn message(&self) -> &'static str {
        self.message
    }

    /// The 401 answer: `authentication_error` with `details.error_code`,
    /// `WWW-Authenticate: Bearer`, and the [`AuthErrorKind`] (besides the [`ErrorType`]) in
    /// the response extensions.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response: Response<B> = ErrorResponse::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            self.message,
        )
        .detail("error_code", self.kind.code())
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response.extensions_mut().insert(self.kind);
        response
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.code())
    }
}

impl std::error::Error for AuthError {}
