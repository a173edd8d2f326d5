//! Reading one parameter from a URI query string.
//!
//! ```
//! use dualcast_layers::query::query_param;
//!
//! let uri: http::Uri = "/sse/alice?session_id=s%201&access_token=abc".parse().unwrap();
//! assert_eq!(query_param(&uri, "session_id").as_deref(), Some("s 1"));
//! assert_eq!(query_param(&uri, "access_token").as_deref(), Some("abc"));
//! assert_eq!(query_param(&uri, "missing"), None);
//! ```

use std::borrow::Cow;

/// The first value of `name` in the URI's query, percent-decoded (`+` is a space).
///
/// Returns `None` when the parameter is absent or its decoding is not UTF-8.
#[must_use]
pub fn query_param<'a>(uri: &'a http::Uri, name: &str) -> Option<Cow<'a, str>> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value)).flatten()
    })
}

/// Whether the URI's query has a parameter called `name`, whatever its value (compared
/// undecoded, as [`query_param`] does): with it, a `None` from [`query_param`] means a
/// value that could not be decoded, not an absent one.
///
/// ```
/// use dualcast_layers::query::{has_query_param, query_param};
///
/// let uri: http::Uri = "/api/ws?last_event_id=%FF".parse().unwrap();
/// assert_eq!(query_param(&uri, "last_event_id"), None);
/// assert!(has_query_param(&uri, "last_event_id"));
/// ```
#[must_use]
pub fn has_query_param(uri: &http::Uri, name: &str) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(key, _)| key) == name)
    })
}

/// Decodes a query value: `%XX` escapes, and `+` as a space. Borrows when there is nothing
/// to decode; `None` for a malformed escape or a result that is not UTF-8.
#[must_use]
pub fn percent_decode(input: &str) -> Option<Cow<'_, str>> {
    decode(input, true)
}

/// Decodes a path segment: `%XX` escapes only (in a path, `+` is a plus sign).
#[must_use]
pub fn percent_decode_path(input: &str) -> Option<Cow<'_, str>> {
    decode(input, false)
}

fn decode(input: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !input
        .bytes()
        .any(|b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Some(Cow::Borrowed(input));
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let high = hex_value(*bytes.get(i + 1)?)?;
                let low = hex_value(*bytes.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_rejects_truncated_ones() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(percent_decode("%+4"), None, "a sign is not a hex digit");
        assert_eq!(
            percent_decode_path("a+b%20c").as_deref(),
            Some("a+b c"),
            "+ is literal in a path"
        );
    }

    #[test]
    fn finds_the_first_matching_parameter_only() {
        let uri: http::Uri = "/x?a=1&ab=2&a=3&flag".parse().unwrap();
        assert_eq!(query_param(&uri, "a").as_deref(), Some("1"));
        assert_eq!(query_param(&uri, "ab").as_deref(), Some("2"));
        assert_eq!(query_param(&uri, "flag").as_deref(), Some(""));
    }
}
