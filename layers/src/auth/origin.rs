//! The `Origin` rule against cross-site WebSocket hijacking (see the
//! [module docs](super#origin-policy)).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode, Uri};

use crate::error::{ErrorResponse, ErrorType};

/// The longest offered origin echoed in a 403 body, in bytes.
const MAX_ECHOED_ORIGIN_LEN: usize = 256;

/// Which origins [`Auth`](super::Auth) admits on the requests it checks.
#[derive(Debug, Clone, Default)]
pub(super) enum OriginPolicy {
    /// The `Origin` authority must equal the `Host` header; only requests whose credential
    /// is not a token are checked.
    #[default]
    SameOrigin,
    /// Exact origins, stored without a trailing `/`; WebSocket upgrades and requests whose
    /// credential is not a token are checked.
    AllowList(Arc<[Box<str>]>),
    /// No check.
    Any,
}

impl OriginPolicy {
    pub(super) fn allow_list<I>(origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let origins = origins
            .into_iter()
            .map(|origin| Box::from(trim_origin(origin.as_ref())))
            .collect();
        Self::AllowList(origins)
    }

    /// Does a request with these traits have its origin checked at all?
    pub(super) fn applies(&self, websocket_upgrade: bool, credential_is_token: bool) -> bool {
        match self {
            Self::SameOrigin => !credential_is_token,
            Self::AllowList(_) => websocket_upgrade || !credential_is_token,
            Self::Any => false,
        }
    }

    /// Admits the request's origin, or refuses it with the origin offered.
    ///
    /// A request without `Origin` passes (non-browser clients, same-origin `GET`s);
    /// `Origin: null`, a repeated or unreadable `Origin`, or an origin the policy does not
    /// allow is refused.
    pub(super) fn check(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), OriginRefused> {
        let mut values = headers.get_all(header::ORIGIN).iter();
        let Some(value) = values.next() else {
            return Ok(());
        };
        let refused = || OriginRefused::new(value.as_bytes());
        if matches!(self, Self::Any) {
            return Ok(());
        }
        if values.next().is_some() {
            return Err(refused());
        }
        let Ok(origin) = value.to_str() else {
            return Err(refused());
        };
        let origin = trim_origin(origin);
        if origin.eq_ignore_ascii_case("null") {
            return Err(refused());
        }
        let allowed = match self {
            Self::Any => true,
            Self::AllowList(allowed) => allowed
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin)),
            Self::SameOrigin => same_origin(origin, headers, uri),
        };
        if allowed {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

/// An origin without surrounding spaces or a trailing `/`.
fn trim_origin(origin: &str) -> &str {
    let origin = origin.trim();
    origin.strip_suffix('/').unwrap_or(origin)
}

/// Is `origin` (`scheme://host[:port]`) the authority the request was sent to (`Host`, or
/// the URI's authority for HTTP/2)? A port that is the scheme's default may be left out on
/// either side.
fn same_origin(origin: &str, headers: &HeaderMap, uri: &Uri) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if scheme.is_empty() || authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let host = match headers.get(header::HOST) {
        Some(host) => match host.to_str() {
            Ok(host) => host.trim(),
            Err(_) => return false,
        },
        None => match uri.authority() {
            Some(authority) => authority.as_str(),
            None => return false,
        },
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss")
    {
        ":443"
    } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        ":80"
    } else {
        ""
    };
    strip_port(authority, default_port).eq_ignore_ascii_case(strip_port(host, default_port))
}

/// `authority` without a trailing `port` (e.g. `":443"`); unchanged when `port` is empty.
fn strip_port<'a>(authority: &'a str, port: &str) -> &'a str {
    if port.is_empty() {
        return authority;
    }
    authority.strip_suffix(port).unwrap_or(authority)
}

/// A refused origin: the 403 answer and what to log.
#[derive(Debug)]
pub(super) struct OriginRefused {
    origin: String,
}

impl OriginRefused {
    fn new(offered: &[u8]) -> Self {
        let origin = match String::from_utf8_lossy(offered) {
            Cow::Borrowed(origin) => truncate(origin).to_owned(),
            Cow::Owned(origin) => truncate(&origin).to_owned(),
        };
        Self { origin }
    }

    /// The origin offered, at most 256 bytes of it.
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    /// `403` with `authorization_error`, `details.error_code` `ORIGIN_NOT_ALLOWED` and
    /// `details.origin`; the [`ErrorType`] in the response extensions.
    pub(super) fn into_response<B: From<Bytes>>(self) -> Response<B> {
        ErrorResponse::new(
            StatusCode::FORBIDDEN,
            ErrorType::AuthorizationError,
            "this origin may not use the credentials of this request",
        )
        .detail("error_code", "ORIGIN_NOT_ALLOWED")
        .detail("origin", self.origin)
        .into_response()
    }
}

/// At most [`MAX_ECHOED_ORIGIN_LEN`] bytes of `value`, cut at a character boundary.
fn truncate(value: &str) -> &str {
    if value.len() <= MAX_ECHOED_ORIGIN_LEN {
        return value;
    }
    let mut end = MAX_ECHOED_ORIGIN_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        headers
    }

    fn same_origin_admits(origin: &str, host: &str) -> bool {
        OriginPolicy::SameOrigin
            .check(&headers(Some(origin), host), &Uri::from_static("/"))
            .is_ok()
    }

    #[test]
    fn same_origin_compares_the_authority_case_insensitively() {
        assert!(same_origin_admits("http://a.test", "a.test"));
        assert!(same_origin_admits("HTTPS://A.Test/", "a.test"));
        assert!(same_origin_admits("http://a.test:8080", "A.TEST:8080"));
        assert!(same_origin_admits("https://a.test", "a.test:443"));
        assert!(same_origin_admits("http://a.test:80", "a.test"));
        assert!(!same_origin_admits("http://a.test:8080", "a.test"));
        assert!(!same_origin_admits("http://evil.test", "a.test"));
        assert!(!same_origin_admits("http://a.test.evil.test", "a.test"));
        assert!(!same_origin_admits("a.test", "a.test"));
        assert!(!same_origin_admits("http://a.test/path", "a.test"));
        assert!(!same_origin_admits("http://user@a.test", "a.test"));
    }

    #[test]
    fn allow_list_is_exact_up_to_case_and_a_trailing_slash() {
        let policy = OriginPolicy::allow_list(["https://App.test/", "http://localhost:3000"]);
        let admits = |origin: &str| {
            policy
                .check(&headers(Some(origin), "api.test"), &Uri::from_static("/"))
                .is_ok()
        };
        assert!(admits("https://app.test"));
        assert!(admits("HTTPS://APP.TEST/"));
        assert!(admits("http://localhost:3000"));
        assert!(!admits("http://app.test"));
        assert!(!admits("https://app.test:8443"));
        assert!(!admits("http://localhost:3001"));
        assert!(!admits("null"));
    }

    #[test]
    fn null_and_repeated_origins_are_refused_and_a_missing_one_passes() {
        let uri = Uri::from_static("/");
        let policy = OriginPolicy::SameOrigin;
        assert!(policy.check(&headers(None, "a.test"), &uri).is_ok());
        assert!(policy
            .check(&headers(Some("null"), "a.test"), &uri)
            .is_err());
        let mut twice = headers(Some("http://a.test"), "a.test");
        twice.append(header::ORIGIN, HeaderValue::from_static("http://a.test"));
        assert!(policy.check(&twice, &uri).is_err());
        assert!(OriginPolicy::Any
            .check(&headers(Some("null"), "a.test"), &uri)
            .is_ok());
    }

    #[test]
    fn same_origin_falls_back_to_the_uri_authority() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://a.test"));
        let uri = Uri::from_static("https://a.test/ws");
        assert!(OriginPolicy::SameOrigin.check(&headers, &uri).is_ok());
        let uri = Uri::from_static("/ws");
        assert!(OriginPolicy::SameOrigin.check(&headers, &uri).is_err());
    }

    #[test]
    fn the_echoed_origin_is_truncated_at_a_character_boundary() {
        let long = format!("https://{}.test", "é".repeat(200));
        let refused = OriginRefused::new(long.as_bytes());
        assert!(refused.origin().len() <= MAX_ECHOED_ORIGIN_LEN);
        assert!(long.starts_with(refused.origin()));
        assert_eq!(OriginRefused::new(b"null").origin(), "null");
    }
}
