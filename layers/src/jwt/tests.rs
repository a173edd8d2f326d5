use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::*;
use crate::auth::MAX_TOKEN_LEN;

const SECRET: &[u8] = b"a test secret that is long enough!";

/// The kind `token` is refused with, after checking the refusal does not echo the token or
/// any of its segments.
fn refusal(verify: &JwtAuthenticator, token: &str) -> AuthErrorKind {
    let Err(error) = verify.authenticate(token) else {
        panic!("the token was accepted");
    };
    let message = error.to_string();
    for part in std::iter::once(token).chain(token.split('.')) {
        if part.len() >= 4 {
            assert!(!message.contains(part), "{message} echoes the token");
        }
    }
    error.kind()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` signed with HMAC-SHA256 under `secret` (the `alg` in `header` is
/// whatever the test wants).
fn hmac_signed(header: &str, payload: &str, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64(header), b64(payload));
    let mut mac = HmacSha256::new_from_slice(secret).unwrap();
    mac.update(message.as_bytes());
    format!("{message}.{}", b64(mac.finalize().into_bytes()))
}

/// An HS256 token with `header` as its protected header, signed with [`SECRET`].
fn signed_with_header(header: &str, claims: &Claims) -> String {
    hmac_signed(header, &serde_json::to_string(claims).unwrap(), SECRET)
}

/// A token with [`SECRET`]'s HS256 signature over `payload`, any JSON.
fn signed_payload(payload: &str) -> String {
    hmac_signed(r#"{"alg":"HS256","typ":"JWT"}"#, payload, SECRET)
}

fn alice() -> Claims {
    Claims::new("alice", Role::Player, 60)
}

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
fn the_leeway_applies_to_exp_and_nbf_alike() {
    let verify = JwtAuthenticator::hs256(SECRET).leeway(Duration::from_secs(120));
    let now = unix_now();
    let mut claims = alice().with_expiry(now - 60);
    claims.nbf = Some(now + 60);
    assert!(verify
        .authenticate(&issue_hs256(SECRET, &claims).unwrap())
        .is_ok());
    let strict = JwtAuthenticator::hs256(SECRET).leeway(Duration::ZERO);
    let late = alice().with_expiry(now - 60);
    assert_eq!(
        refusal(&strict, &issue_hs256(SECRET, &late).unwrap()),
        AuthErrorKind::Expired
    );
    let mut early = alice();
    early.nbf = Some(now + 60);
    assert_eq!(
        refusal(&strict, &issue_hs256(SECRET, &early).unwrap()),
        AuthErrorKind::NotYetValid
    );
}

#[test]
fn tokens_not_yet_valid_are_refused_and_far_expiries_do_not_panic() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let mut claims = alice();
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
    let mut claims = alice();
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
fn subjects_are_required_and_bounded_and_exp_is_required() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let exp = unix_now() + 60;
    for (payload, what) in [
        (format!(r#"{{"exp":{exp}}}"#), "a missing sub"),
        (format!(r#"{{"sub":"","exp":{exp}}}"#), "an empty sub"),
        (
            format!(
                r#"{{"sub":"{}","exp":{exp}}}"#,
                "a".repeat(MAX_SUBJECT_LEN + 1)
            ),
            "a sub over 128 characters",
        ),
        (
            format!(r#"{{"sub":"al\nice","exp":{exp}}}"#),
            "a control character",
        ),
        (r#"{"sub":"alice"}"#.to_owned(), "a missing exp"),
    ] {
        assert_eq!(
            refusal(&verify, &signed_payload(&payload)),
            AuthErrorKind::Invalid,
            "{what} is refused"
        );
    }
    let longest = format!(r#"{{"sub":"{}","exp":{exp}}}"#, "a".repeat(MAX_SUBJECT_LEN));
    assert!(verify.authenticate(&signed_payload(&longest)).is_ok());
    // Counted in characters, as player ids are: 128 two-byte ones pass, 129 do not.
    let wide = format!(r#"{{"sub":"{}","exp":{exp}}}"#, "é".repeat(MAX_SUBJECT_LEN));
    assert!(verify.authenticate(&signed_payload(&wide)).is_ok());
    let wider = format!(
        r#"{{"sub":"{}","exp":{exp}}}"#,
        "é".repeat(MAX_SUBJECT_LEN + 1)
    );
    assert_eq!(
        refusal(&verify, &signed_payload(&wider)),
        AuthErrorKind::Invalid
    );
    // Claims of the wrong JSON type, or given twice, make a malformed token.
    for payload in [
        format!(r#"{{"sub":"alice","exp":"{exp}"}}"#),
        format!(r#"{{"sub":"alice","exp":{exp}.5}}"#),
        r#"{"sub":"alice","exp":-1}"#.to_owned(),
        format!(r#"{{"sub":7,"exp":{exp}}}"#),
        format!(r#"{{"sub":"alice","sub":"bob","exp":{exp}}}"#),
        format!(r#"{{"sub":"alice","exp":{exp},"iss":["a"]}}"#),
        format!(r#"["alice",{exp}]"#),
        format!(r#" ["alice",{exp}]"#),
        "null".to_owned(),
        "not json".to_owned(),
        String::new(),
    ] {
        assert_eq!(
            refusal(&verify, &signed_payload(&payload)),
            AuthErrorKind::Malformed,
            "{payload}"
        );
    }
    // Claims dualcast does not know are ignored; `sid` is read.
    let extra = format!(r#"{{"sub":"alice","exp":{exp},"jti":"j1","x":{{"y":[1]}},"sid":"s"}}"#);
    let identity = verify.authenticate(&signed_payload(&extra)).unwrap();
    assert_eq!(identity.session_id(), Some("s"));
    // JSON whitespace before the object is still JSON.
    let spaced = format!("\n\t {{\"sub\":\"alice\",\"exp\":{exp}}} ");
    assert!(verify.authenticate(&signed_payload(&spaced)).is_ok());
}

#[test]
fn issuer_and_audience_are_each_checked_when_set() {
    let verify = JwtAuthenticator::hs256(SECRET)
        .issuer("games")
        .audience("realtime");
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut claims = alice();
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
    let mut claims = alice();
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

#[test]
fn an_aud_list_must_contain_the_audience() {
    let verify = JwtAuthenticator::hs256(SECRET).audience("realtime");
    let lenient = JwtAuthenticator::hs256(SECRET);
    let exp = unix_now() + 60;
    let with = |aud: &str| signed_payload(&format!(r#"{{"sub":"alice","exp":{exp},"aud":{aud}}}"#));
    for aud in [
        r#"["realtime"]"#,
        r#"["billing","realtime"]"#,
        r#""realtime""#,
    ] {
        assert!(verify.authenticate(&with(aud)).is_ok(), "{aud} is accepted");
        assert_eq!(
            refusal(&lenient, &with(aud)),
            AuthErrorKind::Invalid,
            "{aud} is refused when no audience is set"
        );
    }
    for aud in [r#"[]"#, r#"["billing"]"#, r#"["Realtime"]"#, r#""""#] {
        assert_eq!(
            refusal(&verify, &with(aud)),
            AuthErrorKind::Invalid,
            "{aud} is refused"
        );
    }
    // An empty list still names audiences (none of them this one).
    assert_eq!(refusal(&lenient, &with("[]")), AuthErrorKind::Invalid);
    // `null` is no audience at all.
    assert!(lenient.authenticate(&with("null")).is_ok());
    for aud in [r#"["realtime",1]"#, "1", r#"{"realtime":true}"#] {
        assert_eq!(
            refusal(&verify, &with(aud)),
            AuthErrorKind::Malformed,
            "{aud}"
        );
    }
}

#[test]
fn a_token_with_a_crit_header_is_refused() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let claims = alice();
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
fn only_the_verifiers_own_alg_is_accepted() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let claims = serde_json::to_string(&alice()).unwrap();
    // `none`, with the empty signature it calls for, and with an HMAC one.
    let unsigned = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&claims));
    assert_eq!(refusal(&verify, &unsigned), AuthErrorKind::Invalid);
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"hs256"}"#,
        r#"{"alg":"HS256 "}"#,
        r#"{"alg":"RS256"}"#,
        r#"{"alg":"EdDSA"}"#,
        r#"{"alg":""}"#,
    ] {
        let token = hmac_signed(header, &claims, SECRET);
        assert_eq!(
            refusal(&verify, &token),
            AuthErrorKind::Invalid,
            "{header} is refused"
        );
    }
    // A real HS512 token under the same secret, from jsonwebtoken.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &alice(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert_eq!(refusal(&verify, &hs512), AuthErrorKind::Invalid);
    // The name as JSON escapes spell it is the same name.
    let escaped = hmac_signed(r#"{"\u0061lg":"HS\u0032\u0035\u0036"}"#, &claims, SECRET);
    assert!(verify.authenticate(&escaped).is_ok());
    // No `alg`, a non-string one, or two of them: not a JWS header.
    for header in [
        r#"{"typ":"JWT"}"#,
        r#"{"alg":null}"#,
        r#"{"alg":256}"#,
        r#"{"alg":["HS256"]}"#,
        r#"{"alg":"HS256","alg":"HS256"}"#,
        r#"{"alg":"HS256","alg":"none"}"#,
    ] {
        let token = hmac_signed(header, &claims, SECRET);
        assert_eq!(
            refusal(&verify, &token),
            AuthErrorKind::Malformed,
            "{header} is malformed"
        );
    }
}

#[test]
fn a_header_must_be_base64url_of_a_json_object() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let claims = serde_json::to_string(&alice()).unwrap();
    for header in [
        "[]",
        r#"["alg","HS256"]"#,
        r#""HS256""#,
        "1",
        "null",
        "",
        r#"{"alg":"HS256""#,
        r#"{"alg":"HS256"} x"#,
    ] {
        let token = hmac_signed(header, &claims, SECRET);
        assert_eq!(
            refusal(&verify, &token),
            AuthErrorKind::Malformed,
            "{header:?} is malformed"
        );
    }
    let good = issue_hs256(SECRET, &alice()).unwrap();
    let (_, rest) = good.split_once('.').unwrap();
    for header in [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9=", // padded
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9+", // not url-safe
        "e",                                     // impossible length
        "not base64!",
    ] {
        let token = format!("{header}.{rest}");
        assert_eq!(
            refusal(&verify, &token),
            AuthErrorKind::Malformed,
            "{header:?} is malformed"
        );
    }
}

#[test]
fn a_token_is_exactly_three_segments() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let good = issue_hs256(SECRET, &alice()).unwrap();
    assert!(verify.authenticate(&good).is_ok());
    let (message, _) = good.rsplit_once('.').unwrap();
    for token in [
        String::new(),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        message.to_owned(),
        format!("{good}."),
        format!("{good}.{good}"),
        format!(".{good}"),
        good.replacen('.', "", 1),
    ] {
        assert_eq!(
            refusal(&verify, &token),
            AuthErrorKind::Malformed,
            "{token:?} is malformed"
        );
    }
}

#[test]
fn a_token_over_the_length_limit_is_refused_unread() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let exp = unix_now() + 60;
    let fill = |n: usize| format!(r#"{{"sub":"alice","exp":{exp},"x":"{}"}}"#, "a".repeat(n));
    let base = signed_payload(&fill(0)).len();
    // base64 grows by 4/3, so this lands within a few bytes of the limit.
    let mut n = (MAX_TOKEN_LEN - base) * 3 / 4;
    while signed_payload(&fill(n + 1)).len() <= MAX_TOKEN_LEN {
        n += 1;
    }
    while signed_payload(&fill(n)).len() > MAX_TOKEN_LEN {
        n -= 1;
    }
    let at_limit = signed_payload(&fill(n));
    assert!(at_limit.len() <= MAX_TOKEN_LEN);
    assert!(verify.authenticate(&at_limit).is_ok());
    let mut over = n + 1;
    while signed_payload(&fill(over)).len() <= MAX_TOKEN_LEN {
        over += 1;
    }
    assert_eq!(
        refusal(&verify, &signed_payload(&fill(over))),
        AuthErrorKind::Malformed
    );
}

#[test]
fn tampered_and_truncated_tokens_are_refused() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let good = issue_hs256(SECRET, &alice().with_session("s1")).unwrap();
    assert!(verify.authenticate(&good).is_ok());
    let [header, payload, signature]: [&str; 3] =
        good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();

    // Another payload under the original signature.
    let mut admin = alice().with_session("s1");
    admin.role = Some("admin".into());
    let forged = format!(
        "{header}.{}.{}",
        b64(serde_json::to_vec(&admin).unwrap()),
        b64(&signature)
    );
    assert_eq!(refusal(&verify, &forged), AuthErrorKind::Invalid);
    // Another header under the original signature.
    let reheaded = format!(
        "{}.{payload}.{}",
        b64(r#"{"alg":"HS256"}"#),
        b64(&signature)
    );
    assert_eq!(refusal(&verify, &reheaded), AuthErrorKind::Invalid);

    // Every single-bit flip of the signature.
    for byte in 0..signature.len() {
        for bit in 0..8 {
            let mut flipped = signature.clone();
            flipped[byte] ^= 1 << bit;
            let token = format!("{header}.{payload}.{}", b64(&flipped));
            assert_eq!(refusal(&verify, &token), AuthErrorKind::Invalid);
        }
    }
    // A truncated (or extended, or empty) signature is refused, not compared as a prefix.
    for len in [0, 1, 16, 31] {
        let token = format!("{header}.{payload}.{}", b64(&signature[..len]));
        assert_eq!(
            refusal(&verify, &token),
            AuthErrorKind::Invalid,
            "{len} bytes"
        );
    }
    let mut longer = signature.clone();
    longer.push(0);
    let token = format!("{header}.{payload}.{}", b64(&longer));
    assert_eq!(refusal(&verify, &token), AuthErrorKind::Invalid);
    // A signature segment that is not base64url.
    let token = format!("{header}.{payload}.{}=", b64(&signature));
    assert_eq!(refusal(&verify, &token), AuthErrorKind::Malformed);
    // A payload that is not base64url, under a signature over it.
    let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
    mac.update(format!("{header}.*").as_bytes());
    let token = format!("{header}.*.{}", b64(mac.finalize().into_bytes()));
    assert_eq!(refusal(&verify, &token), AuthErrorKind::Malformed);
}

#[test]
fn the_hmac_key_block_matches_the_hmac_crate_for_every_key_length() {
    let message = b"header.payload";
    for len in [0, 1, 31, 32, 33, 63, 64, 65, 128, 200, 4096] {
        let secret: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let mut ours = hmac_sha256(&secret);
        ours.update(message);
        let mut theirs = HmacSha256::new_from_slice(&secret).unwrap();
        theirs.update(message);
        assert_eq!(
            ours.finalize().into_bytes(),
            theirs.finalize().into_bytes(),
            "a {len}-byte key"
        );
    }
}

#[test]
fn hs256_interoperates_with_jsonwebtoken_both_ways() {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

    let long_secret = [0x5a_u8; 100];
    for secret in [SECRET, &b"short"[..], &long_secret[..]] {
        let mut claims = alice().with_session("s1");
        claims.iss = Some("games".into());
        claims.aud = Some("realtime".into());
        claims.nbf = Some(unix_now() - 10);
        let verify = JwtAuthenticator::hs256(secret)
            .issuer("games")
            .audience("realtime");

        // Signed by jsonwebtoken, verified here.
        let theirs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        let identity = verify.authenticate(&theirs).unwrap();
        assert_eq!(identity.player_id(), "alice");
        assert_eq!(identity.session_id(), Some("s1"));

        // Signed here, verified by jsonwebtoken (claims included).
        let ours = issue_hs256(secret, &claims).unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["games"]);
        validation.set_audience(&["realtime"]);
        let decoded =
            jsonwebtoken::decode::<Claims>(&ours, &DecodingKey::from_secret(secret), &validation)
                .unwrap();
        assert_eq!(decoded.claims, claims);
        assert_eq!(decoded.header.alg, Algorithm::HS256);

        // And neither accepts the other's token under another secret.
        let other = b"some other secret altogether";
        assert_eq!(
            refusal(&JwtAuthenticator::hs256(other), &theirs),
            AuthErrorKind::Invalid
        );
        assert!(jsonwebtoken::decode::<Claims>(
            &ours,
            &DecodingKey::from_secret(other),
            &validation
        )
        .is_err());
    }
}

#[test]
fn issued_tokens_carry_the_documented_header() {
    let token = issue_hs256(SECRET, &alice()).unwrap();
    let (header, _) = token.split_once('.').unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(header).unwrap(),
        br#"{"alg":"HS256","typ":"JWT"}"#
    );
    let error = IssueError {
        source: serde_json::from_str::<u8>("x").unwrap_err(),
    };
    assert!(error.source().is_some());
    assert!(!error.to_string().is_empty());
}

#[test]
fn debug_output_names_the_algorithm_and_not_the_key() {
    let verify = JwtAuthenticator::hs256(b"super-secret-value").audience("realtime");
    let debug = format!("{verify:?}");
    assert!(debug.contains("HS256"), "{debug}");
    assert!(debug.contains("realtime"), "{debug}");
    assert!(!debug.contains("super-secret-value"), "{debug}");
}

#[test]
fn setters_on_a_clone_leave_the_original_alone() {
    let verify = JwtAuthenticator::hs256(SECRET);
    let strict = verify.clone().audience("realtime");
    let token = issue_hs256(SECRET, &alice()).unwrap();
    assert!(verify.authenticate(&token).is_ok());
    assert_eq!(refusal(&strict, &token), AuthErrorKind::Invalid);
}

#[cfg(feature = "eddsa")]
mod eddsa {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;

    // An Ed25519 key pair generated for these tests only.
    const PRIVATE: &[u8] = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDzSHRAuF9uJRV+PuvN6Ox2bxcjIti5VehjQLuEJFQqC\n-----END PRIVATE KEY-----\n";
    pub(super) const PUBLIC: &[u8] = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAIDe3nwdrjYAI8L9I7At8N7xLt3DUdLzOBXQvz06aplM=\n-----END PUBLIC KEY-----\n";

    fn sign(claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            claims,
            &EncodingKey::from_ed_pem(PRIVATE).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn eddsa_public_keys_verify_and_refuse_hs256_tokens() {
        let verify = JwtAuthenticator::eddsa_pem(PUBLIC).unwrap();
        let token = sign(&alice());
        assert_eq!(verify.authenticate(&token).unwrap().player_id(), "alice");
        let hs = issue_hs256(SECRET, &alice()).unwrap();
        assert_eq!(
            verify.authenticate(&hs).unwrap_err().kind(),
            AuthErrorKind::Invalid
        );
        // Nor an HS256 token whose secret is the public key.
        assert_eq!(
            refusal(&verify, &issue_hs256(PUBLIC, &alice()).unwrap()),
            AuthErrorKind::Invalid
        );
        assert!(format!("{verify:?}").contains("EdDSA"));
    }

    #[test]
    fn eddsa_tokens_go_through_the_same_claim_checks() {
        let verify = JwtAuthenticator::eddsa_pem(PUBLIC)
            .unwrap()
            .audience("realtime");
        let expired = alice().with_expiry(unix_now() - 3600);
        let mut claims = expired.clone();
        claims.aud = Some("realtime".into());
        assert_eq!(refusal(&verify, &sign(&claims)), AuthErrorKind::Expired);
        assert_eq!(refusal(&verify, &sign(&alice())), AuthErrorKind::Invalid);
        let mut claims = alice();
        claims.aud = Some("realtime".into());
        let good = sign(&claims);
        assert!(verify.authenticate(&good).is_ok());
        // Tampered, truncated, and with `crit`.
        let (message, signature) = good.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        let last = signature.pop().unwrap();
        let truncated = format!("{message}.{}", b64(&signature));
        assert_eq!(refusal(&verify, &truncated), AuthErrorKind::Invalid);
        // A flipped bit, never the same byte (a pushed 0 was the original one time in 256).
        signature.push(last ^ 1);
        let tampered = format!("{message}.{}", b64(&signature));
        assert_eq!(refusal(&verify, &tampered), AuthErrorKind::Invalid);
        let (_, rest) = good.split_once('.').unwrap();
        let crit = format!("{}.{rest}", b64(r#"{"alg":"EdDSA","crit":["x"]}"#));
        assert_eq!(refusal(&verify, &crit), AuthErrorKind::Invalid);
    }

    #[test]
    fn unusable_ed25519_keys_are_refused_when_read() {
        // SubjectPublicKeyInfo for Ed25519 (OID 1.3.101.112) holding 16 bytes, not 32.
        let mut short = vec![
            0x30, 0x1a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x11, 0x00,
        ];
        short.extend([7_u8; 16]);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&short)
        );
        let error = JwtAuthenticator::eddsa_pem(pem.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("Ed25519"), "{error}");
        for not_a_key in [&b""[..], b"not pem", PRIVATE] {
            assert!(JwtAuthenticator::eddsa_pem(not_a_key).is_err());
        }
    }
}

#[cfg(feature = "rs256")]
mod rs256 {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;

    // A 2048-bit RSA key pair generated for these tests only.
    const PRIVATE: &[u8] = include_bytes!("testdata/rs256_private.pem");
    const PUBLIC: &[u8] = include_bytes!("testdata/rs256_public.pem");

    fn sign(claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            claims,
            &EncodingKey::from_rsa_pem(PRIVATE).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn rs256_public_keys_verify_through_the_same_claim_checks() {
        let verify = JwtAuthenticator::rs256_pem(PUBLIC).unwrap();
        let good = sign(&alice().with_session("s1"));
        let identity = verify.authenticate(&good).unwrap();
        assert_eq!(identity.player_id(), "alice");
        assert_eq!(identity.session_id(), Some("s1"));
        assert!(format!("{verify:?}").contains("RS256"));
        let expired = sign(&alice().with_expiry(unix_now() - 3600));
        assert_eq!(refusal(&verify, &expired), AuthErrorKind::Expired);
        let (message, signature) = good.rsplit_once('.').unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        signature.truncate(signature.len() - 1);
        let truncated = format!("{message}.{}", b64(&signature));
        assert_eq!(refusal(&verify, &truncated), AuthErrorKind::Invalid);
        let mut admin = alice();
        admin.role = Some("admin".into());
        let (header, _) = good.split_once('.').unwrap();
        let (_, original_signature) = good.rsplit_once('.').unwrap();
        let forged = format!(
            "{header}.{}.{original_signature}",
            b64(serde_json::to_vec(&admin).unwrap())
        );
        assert_eq!(refusal(&verify, &forged), AuthErrorKind::Invalid);
        for not_a_key in [&b""[..], b"not pem"] {
            let error = JwtAuthenticator::rs256_pem(not_a_key).unwrap_err();
            assert!(error.to_string().contains("RSA"), "{error}");
            assert!(error.source().is_some());
        }
    }

    #[test]
    fn an_rs256_key_refuses_an_hs256_token_keyed_with_its_own_pem() {
        // The classic algorithm confusion: a verifier that let the header pick the
        // algorithm would check this HMAC with the public key's bytes as the secret.
        let forged = issue_hs256(PUBLIC, &alice()).unwrap();
        assert!(
            JwtAuthenticator::hs256(PUBLIC)
                .authenticate(&forged)
                .is_ok(),
            "the forgery is a good HS256 token under that secret"
        );
        let verify = JwtAuthenticator::rs256_pem(PUBLIC).unwrap();
        assert_eq!(refusal(&verify, &forged), AuthErrorKind::Invalid);
        // Nor does relabelling the HMAC token RS256 help.
        let relabelled = hmac_signed(
            r#"{"alg":"RS256","typ":"JWT"}"#,
            &serde_json::to_string(&alice()).unwrap(),
            PUBLIC,
        );
        assert_eq!(refusal(&verify, &relabelled), AuthErrorKind::Invalid);
        // And the other way round: an HS256 verifier refuses an RS256 token.
        assert_eq!(
            refusal(&JwtAuthenticator::hs256(PUBLIC), &sign(&alice())),
            AuthErrorKind::Invalid
        );
        #[cfg(feature = "eddsa")]
        {
            let eddsa = JwtAuthenticator::eddsa_pem(super::eddsa::PUBLIC).unwrap();
            assert_eq!(refusal(&eddsa, &sign(&alice())), AuthErrorKind::Invalid);
        }
    }
}
