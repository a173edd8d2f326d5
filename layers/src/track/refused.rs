//! [`TrackRefused`]: why [`Track`](super::Track) refused a connection attempt, and the
//! `429` it answers with.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::error::{AdmissionRefused, ErrorResponse, ErrorType};

use super::PlayerAtLimit;

/// Why [`Track`](super::Track) refused a connection attempt. Each is answered `429` with
/// `Retry-After`; see the [module docs](super#refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackRefused {
    /// The client address made more connection attempts than its rate allows.
    AddressRate {
        /// The attempts a second allowed on average.
        per_second: u32,
        /// How long until an attempt would be allowed again.
        retry_after: Duration,
    },
    /// The player made more connection attempts than its rate allows.
    PlayerRate {
        /// The attempts a second allowed on average.
        per_second: u32,
        /// How long until an attempt would be allowed again.
        retry_after: Duration,
    },
    /// The player already holds its limit of connections.
    PlayerLimit(PlayerAtLimit),
}

impl TrackRefused {
    /// The `details.error_code`: `CONNECT_RATE_ADDRESS`, `CONNECT_RATE_PLAYER` or
    /// `TOO_MANY_CONNECTIONS`.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::AddressRate { .. } => "CONNECT_RATE_ADDRESS",
            Self::PlayerRate { .. } => "CONNECT_RATE_PLAYER",
            Self::PlayerLimit(_) => "TOO_MANY_CONNECTIONS",
        }
    }

    /// The cause counted by metrics ([`AdmissionRefused`]): `address_rate`, `player_rate`
    /// or `player_limit`.
    #[must_use]
    pub const fn cause(&self) -> &'static str {
        match self {
            Self::AddressRate { .. } => "address_rate",
            Self::PlayerRate { .. } => "player_rate",
            Self::PlayerLimit(_) => "player_limit",
        }
    }

    /// The `details.limit`: the attempts a second allowed, or the connections a player may
    /// hold.
    #[must_use]
    pub fn limit(&self) -> usize {
        match *self {
            Self::AddressRate { per_second, .. } | Self::PlayerRate { per_second, .. } => {
                usize::try_from(per_second).unwrap_or(usize::MAX)
            }
            Self::PlayerLimit(at_limit) => at_limit.limit,
        }
    }

    /// The `Retry-After`, in whole seconds: the wait rounded up, at least `1`; `1` for the
    /// connection limit (a connection may end any moment).
    #[must_use]
    pub fn retry_after_seconds(&self) -> u64 {
        match *self {
            Self::AddressRate { retry_after, .. } | Self::PlayerRate { retry_after, .. } => {
                let whole = retry_after.as_secs();
                let seconds = whole.saturating_add(u64::from(retry_after.subsec_nanos() > 0));
                seconds.max(1)
            }
            Self::PlayerLimit(_) => 1,
        }
    }

    /// The `429`: the SPEC error body (`rate_limited`, `details.error_code`
    /// ([`code`](Self::code)), `details.retry_after_seconds`, `details.limit`), the
    /// `Retry-After` header, and an [`AdmissionRefused`] ([`cause`](Self::cause)) in the
    /// response extensions.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let retry_after = self.retry_after_seconds();
        let mut response = ErrorResponse::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimited,
            self.to_string(),
        )
        .detail("error_code", self.code())
        .detail("retry_after_seconds", retry_after)
        .detail("limit", self.limit())
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        response.extensions_mut().insert(AdmissionRefused {
            cause: self.cause(),
        });
        response
    }
}

impl fmt::Display for TrackRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddressRate { per_second, .. } => write!(
                f,
                "too many connection attempts from this address (more than {per_second} a second)"
            ),
            Self::PlayerRate { per_second, .. } => write!(
                f,
                "too many connection attempts for this player (more than {per_second} a second)"
            ),
            Self::PlayerLimit(at_limit) => write!(
                f,
                "this player already holds its {} connections; close one first",
                at_limit.limit
            ),
        }
    }
}

impl std::error::Error for TrackRefused {}
