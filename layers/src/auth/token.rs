//! Finding a token in the three places (SPEC §7) and reading the WebSocket headers.

use std::borrow::Cow;

use http::{header, HeaderMap, Uri};

use super::{AuthError, Authenticate, CredentialSource, Identity, MAX_TOKEN_LEN};
use crate::query::query_param;

/// The message of the 401 answered to a request with no credential at all.
pub(super) const NO_TOKEN: &str =
    "no token: send Authorization: Bearer, the bearer subprotocol, or access_token";

/// Finds the request's token in the three places, in order; `Ok(None)` when there is none.
///
/// A present but unusable `Authorization` header, or a `bearer` subprotocol with no token
/// after it, is an error rather than a reason to look further, so a client never has its
/// credential silently ignored. The one exception is `other_schemes_are_not_tokens` (set
/// when an identify hook follows): an `Authorization` header of another scheme, such as
/// the `Basic` credentials a browser resends to a site behind HTTP authentication, is then
/// not a token, and the search goes on.
fn find_token<'a>(
    headers: &'a HeaderMap,
    uri: &'a Uri,
    other_schemes_are_not_tokens: bool,
) -> Result<Option<(Cow<'a, str>, CredentialSource)>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::malformed("the Authorization header is not ASCII"))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Some((
                token.trim().into(),
                CredentialSource::AuthorizationHeader,
            )));
        }
        if !other_schemes_are_not_tokens {
            return Err(AuthError::malformed(
                "the Authorization header must use the Bearer scheme",
            ));
        }
    }
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        let mut protocols = value.split(',').map(str::trim);
        while let Some(protocol) = protocols.next() {
            if protocol == "bearer" {
                return match protocols.next() {
                    Some(token) if !token.is_empty() => {
                        Ok(Some((token.into(), CredentialSource::Subprotocol)))
                    }
                    _ => Err(AuthError::malformed(
                        "the bearer subprotocol must be followed by a token",
                    )),
                };
            }
        }
    }
    Ok(query_param(uri, "access_token").map(|token| (token, CredentialSource::QueryParameter)))
}

/// Finds and verifies the request's token: `Ok(None)` when it carries none, an error when
/// the token it carries is unusable or does not verify. `hook_follows`: see [`find_token`].
pub(super) fn authenticate_request<A: Authenticate + ?Sized>(
    authenticator: &A,
    headers: &HeaderMap,
    uri: &Uri,
    hook_follows: bool,
) -> Result<Option<Identity>, AuthError> {
    let Some((token, source)) = find_token(headers, uri, hook_follows)? else {
        return Ok(None);
    };
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::malformed(
            "the token is empty or longer than 8 KiB",
        ));
    }
    let mut identity = authenticator.authenticate(&token)?;
    identity.set_credential_source(source);
    Ok(Some(identity))
}

/// Did the client offer the `bearer` WebSocket subprotocol?
pub(super) fn offers_bearer(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|p| p.trim() == "bearer"))
}

/// Does the request ask for a WebSocket (`Upgrade: websocket`, any case)?
pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}
