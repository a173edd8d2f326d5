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

/// Decodes `%XX` escapes and `+`; borrows when there is nothing to decode.
#[must_use]
pub fn percent_decode(input: &str) -> Option<Cow<'_, str>> {
    if !input.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(input));
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'%' => return None,
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
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
    }

    #[test]
    fn finds_the_first_matching_parameter_only() {
        let uri: http::Uri = "/x?a=1&ab=2&a=3&flag".parse().unwrap();
        assert_eq!(query_param(&uri, "a").as_deref(), Some("1"));
        assert_eq!(query_param(&uri, "ab").as_deref(), Some("2"));
        assert_eq!(query_param(&uri, "flag").as_deref(), Some(""));
    }
}
