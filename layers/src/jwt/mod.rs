//! JSON Web Tokens: [`JwtAuthenticator`] verifies them, [`issue_hs256`] mints them.
//!
//! Claims (SPEC §7): `sub` (the player id), `exp`, optional `nbf`, `iss`, `aud`, `role`
//! (`player` when absent, `service`, `admin`) and `sid` (a session id).
//!
//! Algorithms: HS256 always (HMAC-SHA256 from the RustCrypto `hmac` and `sha2` crates);
//! RS256 with the `rs256` cargo feature and EdDSA (Ed25519) with the `eddsa` feature, both on
//! by default, whose signatures `jsonwebtoken` checks. A verifier accepts exactly its own
//! algorithm: a token whose header names another one (`none` included) is refused, so an
//! HS256 token cannot pass an RS256 key off as a shared secret.
//!
//! One code path parses the token and checks its claims, whatever the algorithm. A token
//! whose protected header has a `crit` member is refused: this verifier understands no JWS
//! extensions, and RFC 7515 §4.1.11 requires refusing a token that names one it does not
//! understand (an empty or non-list `crit` is invalid as well).
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

mod compact;
#[cfg(test)]
mod tests;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::Digest as _;
use hmac::{Hmac, Mac};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;

use self::compact::Compact;
use crate::auth::{AuthError, AuthErrorKind, Authenticate, Identity, Role};

/// The longest `sub` accepted, in characters (Unicode scalar values), as dualcast's player
/// ids are counted.
pub const MAX_SUBJECT_LEN: usize = 128;

/// The clock skew allowed on `exp` and `nbf` unless [`JwtAuthenticator::leeway`] says
/// otherwise, in seconds.
const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The protected header [`issue_hs256`] writes.
const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

type HmacSha256 = Hmac<Sha256>;

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
    /// Audience. (A verifier also accepts a token whose `aud` is a list of audiences.)
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
///
/// The header is `{"alg":"HS256","typ":"JWT"}` and the payload `claims` as JSON.
pub fn issue_hs256(secret: &[u8], claims: &Claims) -> Result<String, IssueError> {
    let claims = serde_json::to_vec(claims).map_err(|source| IssueError { source })?;
    let mut token = URL_SAFE_NO_PAD.encode(HS256_HEADER);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(claims, &mut token);
    let mut mac = hmac_sha256(secret);
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

/// A token that [`issue_hs256`] could not mint: its claims did not serialize.
#[derive(Debug)]
pub struct IssueError {
    source: serde_json::Error,
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the token's claims could not be serialized")
    }
}

impl StdError for IssueError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// HMAC-SHA256 keyed with `secret`, any length.
///
/// RFC 2104 §2: a key longer than the hash's block (64 bytes) is hashed first, and the key
/// is then zero-padded to the block. `Mac::new` takes exactly that block, so unlike
/// `new_from_slice` it has no error case to handle (the tests compare the two).
fn hmac_sha256(secret: &[u8]) -> HmacSha256 {
    let mut block = hmac::digest::Key::<HmacSha256>::default();
    if secret.len() > block.len() {
        let digest = Sha256::digest(secret);
        for (to, from) in block.iter_mut().zip(digest) {
            *to = from;
        }
    } else {
        for (to, from) in block.iter_mut().zip(secret) {
            *to = *from;
        }
    }
    <HmacSha256 as Mac>::new(&block)
}

/// Verifies JWTs with one key and one algorithm.
///
/// Defaults: `exp` required, 30 s of leeway for clock skew (see [`leeway`](Self::leeway)),
/// no issuer check until [`issuer`](Self::issuer) is set, and, until
/// [`audience`](Self::audience) is set, a token that carries an `aud` claim is refused (it
/// was meant for some other audience). The header's `alg` must be this verifier's algorithm
/// exactly, and a token whose header has `crit` is always refused (no extension is
/// understood). A token over [`MAX_TOKEN_LEN`](crate::auth::MAX_TOKEN_LEN) bytes is refused
/// unread. Cloning is cheap.
#[derive(Clone)]
#[must_use]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    key: Key,
    leeway: u64,
    issuer: Option<Box<str>>,
    audience: Option<Box<str>>,
}

#[derive(Clone)]
enum Key {
    /// A shared secret, keyed once; each verification works on a clone.
    Hs256(HmacSha256),
    /// A public key, verified by `jsonwebtoken::crypto::verify`.
    #[cfg(any(feature = "rs256", feature = "eddsa"))]
    Public {
        key: jsonwebtoken::DecodingKey,
        algorithm: jsonwebtoken::Algorithm,
        /// `algorithm`'s name in a header.
        alg: &'static str,
    },
}

impl Key {
    /// The header `alg` this key verifies (RFC 7518 §3.1, RFC 8037 §3.1).
    fn alg(&self) -> &'static str {
        match self {
            Self::Hs256(_) => "HS256",
            #[cfg(any(feature = "rs256", feature = "eddsa"))]
            Self::Public { alg, .. } => alg,
        }
    }

    fn verify(&self, token: &Compact<'_>) -> Result<(), AuthError> {
        let verified = match self {
            Self::Hs256(mac) => {
                let mut mac = mac.clone();
                mac.update(token.signing_input.as_bytes());
                // Constant time, and a signature of any other length is refused.
                mac.verify_slice(&token.signature).is_ok()
            }
            #[cfg(any(feature = "rs256", feature = "eddsa"))]
            Self::Public { key, algorithm, .. } => matches!(
                jsonwebtoken::crypto::verify(
                    token.signature_b64,
                    token.signing_input.as_bytes(),
                    key,
                    *algorithm,
                ),
                Ok(true)
            ),
        };
        if verified {
            Ok(())
        } else {
            Err(invalid("the token does not verify"))
        }
    }
}

/// A key that could not be read.
#[derive(Debug)]
pub struct KeyError {
    message: &'static str,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid verification key: {}", self.message)
    }
}

impl StdError for KeyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

impl JwtAuthenticator {
    /// HS256 with a shared secret (use at least 32 random bytes).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_key(Key::Hs256(hmac_sha256(secret)))
    }

    /// RS256 with an RSA public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    ///
    /// Only with the `rs256` cargo feature (on by default).
    #[cfg(feature = "rs256")]
    pub fn rs256_pem(public_key: &[u8]) -> Result<Self, KeyError> {
        let key =
            jsonwebtoken::DecodingKey::from_rsa_pem(public_key).map_err(|error| KeyError {
                message: "not an RSA public key in PEM",
                source: Some(Box::new(error)),
            })?;
        Ok(Self::with_key(Key::Public {
            key,
            algorithm: jsonwebtoken::Algorithm::RS256,
            alg: "RS256",
        }))
    }

    /// EdDSA (Ed25519) with a public key in PEM (`PUBLIC KEY`).
    ///
    /// Only with the `eddsa` cargo feature (on by default).
    #[cfg(feature = "eddsa")]
    pub fn eddsa_pem(public_key: &[u8]) -> Result<Self, KeyError> {
        const ED25519_PUBLIC_KEY_LEN: usize = 32;
        let not_ed25519 = |source: Option<Box<dyn StdError + Send + Sync>>| KeyError {
            message: "not an Ed25519 public key in PEM",
            source,
        };
        let key = jsonwebtoken::DecodingKey::from_ed_pem(public_key)
            .map_err(|error| not_ed25519(Some(Box::new(error))))?;
        // jsonwebtoken slices the first 32 bytes out of the key when it verifies, so a
        // shorter one must not get that far; and a point that does not decompress is
        // refused now rather than as every token failing to verify.
        match key.try_get_as_bytes() {
            Ok(bytes) if bytes.len() == ED25519_PUBLIC_KEY_LEN => {}
            _ => return Err(not_ed25519(None)),
        }
        let algorithm = jsonwebtoken::Algorithm::EdDSA;
        // An empty signature makes `Ok(false)`; only a key the verifier cannot use errs.
        jsonwebtoken::crypto::verify("", b"", &key, algorithm)
            .map_err(|error| not_ed25519(Some(Box::new(error))))?;
        Ok(Self::with_key(Key::Public {
            key,
            algorithm,
            alg: "EdDSA",
        }))
    }

    fn with_key(key: Key) -> Self {
        Self {
            inner: Arc::new(Inner {
                key,
                leeway: DEFAULT_LEEWAY_SECS,
                issuer: None,
                audience: None,
            }),
        }
    }

    fn edit(mut self, edit: impl FnOnce(&mut Inner)) -> Self {
        edit(Arc::make_mut(&mut self.inner));
        self
    }

    /// Requires `iss` to equal `issuer`. Default: not checked.
    pub fn issuer(self, issuer: &str) -> Self {
        self.edit(|inner| inner.issuer = Some(issuer.into()))
    }

    /// Requires `aud` (one string, or a list of them) to contain `audience`. Default: a token
    /// without `aud` is accepted and one with any `aud` is refused, since it names an
    /// audience that is not this server.
    pub fn audience(self, audience: &str) -> Self {
        self.edit(|inner| inner.audience = Some(audience.into()))
    }

    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (a fraction is dropped).
    /// Default: 30 seconds.
    pub fn leeway(self, leeway: Duration) -> Self {
        self.edit(|inner| inner.leeway = leeway.as_secs())
    }
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithm", &self.inner.key.alg())
            .field("leeway_secs", &self.inner.leeway)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticate for JwtAuthenticator {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let inner = &*self.inner;
        let token = Compact::parse(token)?;
        if token.alg != inner.key.alg() {
            return Err(invalid(
                "the token's alg is not the algorithm this verifier accepts",
            ));
        }
        inner.key.verify(&token)?;
        inner.identity(token.claims()?)
    }
}

impl Inner {
    /// Checks verified claims and makes the identity they grant.
    fn identity(&self, claims: TokenClaims) -> Result<Identity, AuthError> {
        let sub = claims.sub.ok_or(invalid("the token has no sub claim"))?;
        let exp = claims.exp.ok_or(invalid("the token has no exp claim"))?;
        // The credential is accepted until `exp` plus the leeway, so a connection opened
        // with it lives until then too (and not a moment less than the handshake allowed).
        let accepted_until = exp
            .checked_add(self.leeway)
            .ok_or(invalid("the exp claim is out of range"))?;
        let now = unix_now();
        if accepted_until < now {
            return Err(AuthError::new(
                AuthErrorKind::Expired,
                "the token has expired",
            ));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(AuthError::new(
                AuthErrorKind::NotYetValid,
                "the token is not valid yet",
            ));
        }
        if let Some(issuer) = &self.issuer {
            if claims.iss.as_deref() != Some(&**issuer) {
                return Err(invalid("the iss claim is missing or names another issuer"));
            }
        }
        match (&self.audience, &claims.aud) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(invalid(
                    "the token names an audience (aud) and this verifier expects none",
                ))
            }
            (Some(audience), aud) => {
                if !aud.as_ref().is_some_and(|aud| aud.contains(audience)) {
                    return Err(invalid(
                        "the aud claim is missing or does not name this audience",
                    ));
                }
            }
        }
        if sub.is_empty()
            || sub.chars().count() > MAX_SUBJECT_LEN
            || sub.chars().any(char::is_control)
        {
            return Err(invalid(
                "the sub claim must be 1 to 128 characters without control characters",
            ));
        }
        let role = match claims.role.as_deref() {
            None => Role::Player,
            Some(role) => Role::parse(role)
                .ok_or(invalid("the role claim must be player, service or admin"))?,
        };
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(accepted_until))
            .ok_or(invalid("the exp claim is out of range"))?;
        let mut identity = Identity::new(sub, role).with_expiry(expires_at);
        if let Some(sid) = claims.sid {
            identity = identity.with_session_id(sid);
        }
        Ok(identity)
    }
}

const fn invalid(message: &'static str) -> AuthError {
    AuthError::new(AuthErrorKind::Invalid, message)
}

/// The claims as a token carries them: a claim of the wrong JSON type (or given twice)
/// makes the token malformed; a missing `sub` or `exp` makes it invalid. Other claims are
/// ignored.
#[derive(Deserialize)]
struct TokenClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    sid: Option<String>,
}

/// `aud`: one string or a list of them (RFC 7519 §4.1.3).
struct Audience(Vec<String>);

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        self.0.iter().any(|aud| aud == audience)
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AudienceVisitor;

        impl<'de> Visitor<'de> for AudienceVisitor {
            type Value = Audience;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, aud: &str) -> Result<Audience, E> {
                Ok(Audience(vec![aud.to_owned()]))
            }

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Audience, S::Error> {
                let mut audiences = Vec::new();
                while let Some(aud) = seq.next_element()? {
                    audiences.push(aud);
                }
                Ok(Audience(audiences))
            }
        }

        deserializer.deserialize_any(AudienceVisitor)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
