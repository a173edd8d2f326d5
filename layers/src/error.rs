//! The JSON error body of every dualcast response.
//!
//! ```json
//! { "error": true, "error_type": "authentication_error", "message": "…",
//!   "details": { "error_code": "TOKEN_EXPIRED" }, "timestamp": "2026-01-06T19:55:00Z" }
//! ```
//!
//! ```
//! use dualcast_layers::{ErrorResponse, ErrorType};
//! use http::StatusCode;
//!
//! let response: http::Response<bytes::Bytes> =
//!     ErrorResponse::new(StatusCode::FORBIDDEN, ErrorType::AuthorizationError, "not yours")
//!         .detail("error_code", "FORBIDDEN")
//!         .into_response();
//! assert_eq!(response.status(), StatusCode::FORBIDDEN);
//! let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
//! assert_eq!(body["error"], true);
//! assert_eq!(body["error_type"], "authorization_error");
//! assert_eq!(body["details"]["error_code"], "FORBIDDEN");
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{Map, Value};

/// The `error_type` field: the family of an error, stable for clients to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Connection establishment or maintenance failed.
    ConnectionError,
    /// A session rule refused the request.
    SessionError,
    /// No credentials, or credentials that do not verify.
    AuthenticationError,
    /// Valid credentials that may not do this.
    AuthorizationError,
    /// The request itself is malformed.
    ValidationError,
    /// Too many requests; see `Retry-After`.
    RateLimited,
    /// The server failed.
    SystemError,
}

impl ErrorType {
    /// Every error type, in the SPEC's order.
    pub const ALL: [Self; 7] = [
        Self::ConnectionError,
        Self::SessionError,
        Self::AuthenticationError,
        Self::AuthorizationError,
        Self::ValidationError,
        Self::RateLimited,
        Self::SystemError,
    ];

    /// The wire name, e.g. `"validation_error"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionError => "connection_error",
            Self::SessionError => "session_error",
            Self::AuthenticationError => "authentication_error",
            Self::AuthorizationError => "authorization_error",
            Self::ValidationError => "validation_error",
            Self::RateLimited => "rate_limited",
            Self::SystemError => "system_error",
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builder of an error response with the SPEC's JSON body.
#[derive(Debug, Clone)]
#[must_use]
pub struct ErrorResponse {
    status: StatusCode,
    error_type: ErrorType,
    message: String,
    details: Map<String, Value>,
}

impl ErrorResponse {
    /// An error with a status, a type and a human message (never put a token in it).
    pub fn new(status: StatusCode, error_type: ErrorType, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            details: Map::new(),
        }
    }

    /// Adds one field to `details`, e.g. `("error_code", "TOKEN_EXPIRED")`.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The HTTP status this error answers with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error_type` of this error.
    #[must_use]
    pub fn error_type(&self) -> ErrorType {
        self.error_type
    }

    /// The JSON body as bytes.
    #[must_use]
    pub fn to_json(&self) -> Bytes {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: bool,
            error_type: &'static str,
            message: &'a str,
            details: &'a Map<String, Value>,
            timestamp: String,
        }
        let body = Body {
            error: true,
            error_type: self.error_type.as_str(),
            message: &self.message,
            details: &self.details,
            timestamp: rfc3339(SystemTime::now()),
        };
        // Strings and a map of JSON values: serializing cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The response: status, `Content-Type: application/json`, the body, and the
    /// [`ErrorType`] in the response extensions for outer layers (metrics) to read.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.to_json()));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.extensions_mut().insert(self.error_type);
        response
    }
}

/// Why an admission layer (session, track) refused a connection request: put in the
/// refusal's response extensions so that an outer layer (metrics) counts refusals by cause.
///
/// The cause is a stable lowercase code, e.g. `"stale_session"`, `"player_limit"`,
/// `"address_rate"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdmissionRefused {
    /// The stable cause code.
    pub cause: &'static str,
}

/// Formats a time as RFC 3339 in UTC with second precision, e.g. `2026-01-06T19:55:00Z`.
#[must_use]
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Formats a time as an HTTP date (RFC 9110 IMF-fixdate), e.g.
/// `Mon, 06 Jan 2025 19:55:00 GMT`.
#[must_use]
pub fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_736_193_300);
        assert_eq!(rfc3339(t), "2025-01-06T19:55:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        assert_eq!(http_date(t), "Mon, 06 Jan 2025 19:55:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
