//! The JWS compact serialization, taken apart once: `header.payload.signature`, each segment
//! base64url without padding, the header a JSON object.
//!
//! Every failure here is [`Malformed`](AuthErrorKind::Malformed) except a `crit` header,
//! which is [`Invalid`](AuthErrorKind::Invalid). The work is bounded: a token longer than
//! [`MAX_TOKEN_LEN`] bytes is refused before anything is decoded, and no error message holds
//! the token or any part of it.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::auth::{AuthError, AuthErrorKind, MAX_TOKEN_LEN};

/// A compact JWS whose shape and header have been checked, its signature not yet.
pub(super) struct Compact<'a> {
    /// `header.payload`, the bytes the signature is over.
    pub(super) signing_input: &'a str,
    /// The payload segment, still encoded: it is decoded only once the signature verifies.
    payload: &'a str,
    /// The signature segment as it came (what `jsonwebtoken::crypto::verify` takes).
    #[cfg_attr(not(any(feature = "rs256", feature = "eddsa")), allow(dead_code))]
    pub(super) signature_b64: &'a str,
    /// The signature segment, decoded.
    pub(super) signature: Vec<u8>,
    /// The header's `alg`.
    pub(super) alg: String,
}

impl<'a> Compact<'a> {
    /// Splits `token` into its three segments and reads the protected header.
    ///
    /// Refuses, in this order: a token over [`MAX_TOKEN_LEN`] bytes, one that is not three
    /// segments, a header that is not base64url of a JSON object with a string `alg` (given
    /// once), a header with a `crit` member, and a signature segment that is not base64url.
    pub(super) fn parse(token: &'a str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed());
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature_b64), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(malformed());
        };
        let signing_input = token
            .get(..header.len() + 1 + payload.len())
            .ok_or_else(malformed)?;
        let header = decode(header)?;
        let header: Header = serde_json::from_slice(&header).map_err(|_| malformed())?;
        if header.has_crit {
            return Err(AuthError::new(
                AuthErrorKind::Invalid,
                "the token's header has a crit member; this verifier supports no critical extensions",
            ));
        }
        let alg = header.alg.ok_or_else(malformed)?;
        let signature = decode(signature_b64)?;
        Ok(Self {
            signing_input,
            payload,
            signature_b64,
            signature,
            alg,
        })
    }

    /// The payload decoded and read as `T`; call it only once the signature verifies.
    ///
    /// The claims set must be a JSON object (RFC 7519 §7.2): a derived `Deserialize` would
    /// also take a JSON array, its elements as the fields in order.
    pub(super) fn claims<T: DeserializeOwned>(&self) -> Result<T, AuthError> {
        let json = decode(self.payload)?;
        let first = json
            .iter()
            .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
        if first != Some(&b'{') {
            return Err(malformed());
        }
        serde_json::from_slice(&json).map_err(|_| malformed())
    }
}

pub(super) fn malformed() -> AuthError {
    AuthError::new(
        AuthErrorKind::Malformed,
        "the token is not a well-formed JWT",
    )
}

fn decode(segment: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| malformed())
}

/// What the verifier needs of a JOSE header: its `alg` (a string, given at most once) and
/// whether `crit` is there (with any value, `null` included; RFC 7515 §4.1.11 has a verifier
/// that understands no extension refuse every `crit`). Other members are skipped without
/// being kept. Anything but a JSON object does not deserialize.
struct Header {
    alg: Option<String>,
    has_crit: bool,
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;

        impl<'de> Visitor<'de> for Members {
            type Value = Header;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Header, M::Error> {
                let mut header = Header {
                    alg: None,
                    has_crit: false,
                };
                while let Some(name) = map.next_key::<Name>()? {
                    match name {
                        Name::Alg if header.alg.is_some() => {
                            return Err(de::Error::duplicate_field("alg"));
                        }
                        Name::Alg => header.alg = Some(map.next_value()?),
                        Name::Crit => {
                            header.has_crit = true;
                            map.next_value::<IgnoredAny>()?;
                        }
                        Name::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(header)
            }
        }

        deserializer.deserialize_map(Members)
    }
}

/// A header member name, as far as [`Header`] cares (compared after JSON unescaping, so
/// `"cr\u0069t"` is `crit`), without being kept.
enum Name {
    Alg,
    Crit,
    Other,
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
                Ok(match name {
                    "alg" => Name::Alg,
                    "crit" => Name::Crit,
                    _ => Name::Other,
                })
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}
