//! JSON Web Tokens: [`JwtAuthenticator`] verifies them, [`issue_hs256`] mints them.
//!
//! Claims (SPEC §7): `sub` (the player id), `exp`, optional `nbf`, `iss`, `aud`, `role`
//! (`player` when absent, `service`, `admin`) and `sid` (a session id).
//!
//! A token whose protected header has a `crit` member is refused: this verifier understands
//! no JWS extensions, and RFC 7515 §4.1.11 requires refusing a token that names one it does
//! not understand (an empty or non-list `crit` is invalid as well).
//!
//! ```
//! use dualcast_layers::jwt::{issue_hs256, Claims, JwtAuthenticator};
//! use dualcast_layers::{Authenticate, AuthErrorKind, Role};
//!
//! let secret = b"an example secret of enough length";
//! let verify = JwtAuthenticator::hs256(secret);
//!
//! let token = issue_hs256(secret, &Claims::new("alice", Role::Player, 60).with_session("s1")).unwrap();
//! let identity = verify.authenticate(&token).unwrap();
//! assert_eq!(identity.player_id(), "alice");
//! assert_eq!(identity.session_id(), Some("s1"));
//!
//! let other = issue_hs256(b"another secret entirely, also long", &Claims::new("eve", Role::Admin, 60)).unwrap();
//! assert_eq!(verify.authenticate(&other).unwrap_err().kind(), AuthErrorKind::Invalid);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::{AuthError, AuthErrorKind, Authenticate, Identity, Role, MAX_TOKEN_LEN};

/// The longest `sub` accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 128;

/// The claims dualcast reads and [`issue_hs256`] writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The player id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// `player` (the default), `service` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A session id the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl Claims {
    /// Claims for `sub` with `role`, expiring `valid_for_secs` seconds from now.
    #[must_use]
    pub fn new(sub: impl Into<String>, role: Role, valid_for_secs: u64) -> Self {
        Self {
            sub: sub.into(),
            exp: unix_now().saturating_add(valid_for_secs),
            nbf: None,
            iss: None,
            aud: None,
            role: Some(role.as_str().to_owned()),
            sid: None,
        }
    }

    /// Binds the token to a session (`sid`).
    #[must_use]
    pub fn with_session(mut self, sid: impl Into<String>) -> Self {
        self.sid = Some(sid.into());
        self
    }

    /// Sets an absolute expiry, seconds since the Unix epoch.
    #[must_use]
    pub fn with_expiry(mut self, exp: u64) -> Self {
        self.exp = exp;
        self
    }
}

/// Mints an HS256 token, for tests, tools and the example server.
pub fn issue_hs256(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Verifies JWTs with one key and one algorithm.
///
/// Defaults: `exp` required, 30 s of leeway for clock skew (see [`leeway`](Self::leeway)),
/// no issuer check until [`issuer`](Self::issuer) is set, and, until
/// [`audience`](Self::audience) is set, a token that carries an `aud` claim is refused (it
/// was meant for some other audience). A token whose header has `crit` is always refused
/// (no extension is understood). Cloning is cheap.
#[derive(Clone)]
#[must_use]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    key: DecodingKey,
    validation: Validation,
}

/// A key that could not be read.
#[derive(Debug)]
pub struct KeyError(jsonwebtoken::errors::Error);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid verification key: {}", self.0)
    }
}

impl std::error::Error for KeyError {}

impl JwtAuthenticator {
    /// HS256 with a shared secret (use at least 32 random bytes).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_key(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 with an RSA public key in PEM.
    pub fn rs256_pem(public_key: &[u8]) -> Result<Self, KeyError> {
        DecodingKey::from_rsa_pem(public_key)
            .map(|key| Self::with_key(key, Algorithm::RS256))
            .map_err(KeyError)
    }

    /// EdDSA (Ed25519) with a public key in PEM.
    pub fn eddsa_pem(public_key: &[u8]) -> Result<Self, KeyError> {
        DecodingKey::from_ed_pem(public_key)
            .map(|key| Self::with_key(key, Algorithm::EdDSA))
            .map_err(KeyError)
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            inner: Arc::new(Inner { key, validation }),
        }
    }

    fn edit(mut self, edit: impl FnOnce(&mut Validation)) -> Self {
        let mut validation = self.inner.validation.clone();
        edit(&mut validation);
        let key = self.inner.key.clone();
        self.inner = Arc::new(Inner { key, validation });
        self
    }

    /// Requires `iss` to equal `issuer`. Default: not checked.
    pub fn issuer(self, issuer: &str) -> Self {
        self.edit(|v| {
            v.set_issuer(&[issuer]);
            v.required_spec_claims.insert("iss".to_owned());
        })
    }

    /// Requires `aud` to contain `audience`. Default: a token without `aud` is accepted and
    /// one with any `aud` is refused, since it names an audience that is not this server.
    pub fn audience(self, audience: &str) -> Self {
        self.edit(|v| {
            v.set_audience(&[audience]);
            v.required_spec_claims.insert("aud".to_owned());
        })
    }

    /// Clock skew allowed on `exp` and `nbf`. Default: 30 seconds.
    pub fn leeway(self, leeway: Duration) -> Self {
        self.edit(|v| v.leeway = leeway.as_secs())
    }
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.inner.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticate for JwtAuthenticator {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        refuse_critical_extensions(token)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.inner.key, &self.inner.validation)
            .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => {
                AuthError::new(AuthErrorKind::Expired, "the token has expired")
            }
            ErrorKind::ImmatureSignature => {
                AuthError::new(AuthErrorKind::NotYetValid, "the token is not valid yet")
            }
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => malformed(),
            _ => AuthError::new(AuthErrorKind::Invalid, "the token does not verify"),
        })?;
        let claims = data.claims;
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_SUBJECT_LEN
            || claims.sub.chars().any(char::is_control)
        {
            return Err(AuthError::new(
                AuthErrorKind::Invalid,
                "the sub claim must be 1 to 128 bytes without control characters",
            ));
        }
        let role = match claims.role.as_deref() {
            None => Role::Player,
            Some(role) => Role::parse(role).ok_or(AuthError::new(
                AuthErrorKind::Invalid,
                "the role claim must be player, service or admin",
            ))?,
        };
        // The credential is accepted until `exp` plus the leeway, so a connection opened
        // with it lives until then too (and not a moment less than the handshake allowed).
        let accepted_until = claims
            .exp
            .checked_add(self.inner.validation.leeway)
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .ok_or(AuthError::new(
                AuthErrorKind::Invalid,
                "the exp claim is out of range",
            ))?;
        let mut identity = Identity::new(claims.sub, role).with_expiry(accepted_until);
        if let Some(sid) = claims.sid {
            identity = identity.with_session_id(sid);
        }
        Ok(identity)
    }
}

fn malformed() -> AuthError {
    AuthError::new(
        AuthErrorKind::Malformed,
        "the token is not a well-formed JWT",
    )
}

/// Refuses a token whose protected header (its first segment) has a `crit` member.
///
/// jsonwebtoken reads `crit` but acts on none of it, so the header is decoded here. The
/// work is bounded: the header is at most [`MAX_TOKEN_LEN`] bytes and is scanned without
/// keeping its values.
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    let encoded = token.split_once('.').map_or(token, |(header, _)| header);
    if encoded.len() > MAX_TOKEN_LEN {
        return Err(malformed());
    }
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
    let header: HeaderMembers = serde_json::from_slice(&json).map_err(|_| malformed())?;
    if header.has_crit {
        return Err(AuthError::new(
            AuthErrorKind::Invalid,
            "the token's header has a crit member; this verifier supports no critical extensions",
        ));
    }
    Ok(())
}

/// What [`refuse_critical_extensions`] needs of a JOSE header: whether `crit` is there (with
/// any value, `null` included). Anything but a JSON object does not deserialize.
struct HeaderMembers {
    has_crit: bool,
}

impl<'de> Deserialize<'de> for HeaderMembers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;

        impl<'de> Visitor<'de> for Members {
            type Value = HeaderMembers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<HeaderMembers, M::Error> {
                let mut has_crit = false;
                while let Some(name) = map.next_key::<Name>()? {
                    has_crit |= name.is_crit;
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(HeaderMembers { has_crit })
            }
        }

        deserializer.deserialize_map(Members)
    }
}

/// A member name, compared with `crit` without being kept.
struct Name {
    is_crit: bool,
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl Visitor<'_> for NameVisitor {
            type Value = Name;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
                Ok(Name {
                    is_crit: name == "crit",
                })
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a test secret that is long enough!";

    #[test]
    fn expired_tokens_are_told_apart() {
        let verify = JwtAuthenticator::hs256(SECRET);
        let past = Claims::new("alice", Role::Player, 0).with_expiry(unix_now() - 3600);
        let token = issue_hs256(SECRET, &past).unwrap();
        assert_eq!(
            verify.authenticate(&token).unwrap_err().kind(),
            AuthErrorKind::Expired
        );
        assert_eq!(
            verify.authenticate("not-a-jwt").unwrap_err().kind(),
            AuthErrorKind::Malformed
        );
    }

    #[test]
    fn tokens_not_yet_valid_are_refused_and_far_expiries_do_not_panic() {
        let verify = JwtAuthenticator::hs256(SECRET);
        let mut claims = Claims::new("alice", Role::Player, 60);
        claims.nbf = Some(unix_now() + 3600);
        let token = issue_hs256(SECRET, &claims).unwrap();
        assert_eq!(
            verify.authenticate(&token).unwrap_err().kind(),
            AuthErrorKind::NotYetValid
        );
        let far = Claims::new("alice", Role::Player, 0).with_expiry(u64::MAX);
        let token = issue_hs256(SECRET, &far).unwrap();
        assert!(verify.authenticate(&token).is_err(), "refused, not a panic");
    }

    #[test]
    fn an_identity_expires_when_its_token_stops_being_accepted() {
        let verify = JwtAuthenticator::hs256(SECRET).leeway(Duration::from_secs(10));
        let exp = unix_now() + 60;
        let token = issue_hs256(
            SECRET,
            &Claims::new("alice", Role::Player, 0).with_expiry(exp),
        )
        .unwrap();
        let expires_at = verify.authenticate(&token).unwrap().expires_at().unwrap();
        assert_eq!(expires_at, UNIX_EPOCH + Duration::from_secs(exp + 10));
    }

    #[test]
    fn roles_default_to_player_and_unknown_roles_are_refused() {
        let verify = JwtAuthenticator::hs256(SECRET);
        let mut claims = Claims::new("alice", Role::Player, 60);
        claims.role = None;
        assert_eq!(
            verify
                .authenticate(&issue_hs256(SECRET, &claims).unwrap())
                .unwrap()
                .role(),
            Role::Player
        );
        claims.role = Some("root".into());
        assert_eq!(
            verify
                .authenticate(&issue_hs256(SECRET, &claims).unwrap())
                .unwrap_err()
                .kind(),
            AuthErrorKind::Invalid
        );
    }

    #[test]
    fn issuer_and_audience_are_each_checked_when_set() {
        let verify = JwtAuthenticator::hs256(SECRET)
            .issuer("games")
            .audience("realtime");
        let with = |iss: Option<&str>, aud: Option<&str>| {
            let mut claims = Claims::new("alice", Role::Player, 60);
            claims.iss = iss.map(str::to_owned);
            claims.aud = aud.map(str::to_owned);
            verify.authenticate(&issue_hs256(SECRET, &claims).unwrap())
        };
        assert!(with(Some("games"), Some("realtime")).is_ok());
        // Each check alone refuses: the other claim is right every time.
        for (iss, aud, what) in [
            (None, Some("realtime"), "a missing iss"),
            (Some("elsewhere"), Some("realtime"), "a wrong iss"),
            (Some("games"), None, "a missing aud"),
            (Some("games"), Some("elsewhere"), "a wrong aud"),
        ] {
            assert_eq!(
                with(iss, aud).err().map(|error| error.kind()),
                Some(AuthErrorKind::Invalid),
                "{what} is refused"
            );
        }
        // Unset, the issuer is not checked; and a token meant for some audience is refused
        // by a verifier that names none.
        let lenient = JwtAuthenticator::hs256(SECRET);
        let mut claims = Claims::new("alice", Role::Player, 60);
        claims.iss = Some("elsewhere".into());
        assert!(lenient
            .authenticate(&issue_hs256(SECRET, &claims).unwrap())
            .is_ok());
        claims.aud = Some("another-service".into());
        assert_eq!(
            lenient
                .authenticate(&issue_hs256(SECRET, &claims).unwrap())
                .unwrap_err()
                .kind(),
            AuthErrorKind::Invalid
        );
    }

    /// An HS256 token with `header` as its protected header, signed with [`SECRET`].
    fn signed_with_header(header: &str, claims: &Claims) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    #[test]
    fn a_token_with_a_crit_header_is_refused() {
        let verify = JwtAuthenticator::hs256(SECRET);
        let claims = Claims::new("alice", Role::Player, 60);
        for header in [
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"alg":"HS256","typ":"JWT","kid":"k1","x-extra":{"n":1}}"#,
        ] {
            let token = signed_with_header(header, &claims);
            assert_eq!(
                verify.authenticate(&token).unwrap().player_id(),
                "alice",
                "{header} is accepted"
            );
        }
        for header in [
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            // The name as JSON escapes spell it is the same name.
            r#"{"alg":"HS256","typ":"JWT","cr\u0069t":["exp"]}"#,
            // RFC 7515 §4.1.11: an empty list, or anything but a list, is invalid too.
            r#"{"alg":"HS256","typ":"JWT","crit":[]}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":"exp"}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":null}"#,
        ] {
            let token = signed_with_header(header, &claims);
            let refused = verify.authenticate(&token).err();
            assert_eq!(
                refused.as_ref().map(AuthError::kind),
                Some(AuthErrorKind::Invalid),
                "{header} is refused"
            );
            let Some(error) = refused else { continue };
            let message = error.to_string();
            assert!(message.contains("crit"), "{message} says why");
            assert!(!message.contains(&token), "the token is not echoed");
        }
    }

    #[test]
    fn eddsa_public_keys_verify_and_refuse_hs256_tokens() {
        // An Ed25519 key pair generated for this test only.
        let private = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDzSHRAuF9uJRV+PuvN6Ox2bxcjIti5VehjQLuEJFQqC\n-----END PRIVATE KEY-----\n";
        let public = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAIDe3nwdrjYAI8L9I7At8N7xLt3DUdLzOBXQvz06aplM=\n-----END PUBLIC KEY-----\n";
        let verify = JwtAuthenticator::eddsa_pem(public).unwrap();
        let key = EncodingKey::from_ed_pem(private).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &Claims::new("alice", Role::Player, 60),
            &key,
        )
        .unwrap();
        assert_eq!(verify.authenticate(&token).unwrap().player_id(), "alice");
        let hs = issue_hs256(SECRET, &Claims::new("alice", Role::Player, 60)).unwrap();
        assert_eq!(
            verify.authenticate(&hs).unwrap_err().kind(),
            AuthErrorKind::Invalid
        );
    }
}
