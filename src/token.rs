//! Bearer token handling: the cache key, the unverified claims and the local checks.
//!
//! Everything here works on the exact bytes that would be sent to Cognito, so a token can never
//! pass the checks in one form and be sent in another.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use crate::error::Rejection;
use crate::issuer::Issuers;

/// The scope that `GetUser` demands of an access token.
pub(crate) const ADMIN_SCOPE: &str = "aws.cognito.signin.user.admin";

/// A cache key: the SHA-256 of the token. The token itself is never kept.
pub(crate) type TokenKey = [u8; 32];

/// The key of the local cache: a 64-bit hash of the token under a process-random seed. It is
/// not collision-resistant and need not be: a hit must also match the token's [`Tail`] and
/// the entry's own SHA-256 was computed from the very token that was verified.
pub(crate) type FastKey = u64;

/// How many of a token's last bytes its cache entry keeps.
pub(crate) const TAIL: usize = 43;

/// A token's last [`TAIL`] bytes (zero-padded in front when shorter): in a Cognito token, 43
/// base64url characters of its RS256 signature, 258 bits that only whoever holds the token
/// knows. The token itself is never kept.
pub(crate) type Tail = [u8; TAIL];

#[inline]
pub(crate) fn tail(token: &[u8]) -> Tail {
    let mut tail = [0u8; TAIL];
    let n = token.len().min(TAIL);
    tail[TAIL - n..].copy_from_slice(&token[token.len() - n..]);
    tail
}

pub(crate) fn key(token: &[u8]) -> TokenKey {
    // aws-lc's SHA-256 (already built for TLS) uses the CPU's SHA extensions.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Strips an RFC 6750 `Bearer` scheme (case-insensitive) from an `Authorization` value.
///
/// Returns what follows the single space. That rest is not scanned here: it is either found in
/// the cache by its hash (so it is byte for byte a token that passed [`parse`] before) or it goes
/// through [`parse`], which refuses anything but one base64url JWT.
#[inline]
pub(crate) fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    match value.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => Some(rest),
        // HTTP trims trailing spaces: `Bearer ` arrives as a scheme with an empty token.
        None if value.eq_ignore_ascii_case(b"bearer") => Some(&[]),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims of a Cognito access token, read before Cognito has vouched for them. No `Debug`:
/// `json` is the token's payload.
#[derive(Deserialize)]
pub(crate) struct Claims {
    /// The header's key id; not a claim, but read with them.
    #[serde(skip)]
    pub(crate) kid: Option<String>,
    /// Every claim, as the token's JSON payload.
    #[serde(skip)]
    pub(crate) json: Box<str>,
    pub(crate) token_use: String,
    pub(crate) iss: String,
    #[serde(default)]
    pub(crate) client_id: Option<String>,
    /// The audiences: an ID token's app client; an access token's resource, where managed
    /// login binds it (RFC 8707). One string or an array, as RFC 7519 allows.
    #[serde(default, deserialize_with = "one_or_many")]
    pub(crate) aud: Vec<String>,
    pub(crate) exp: i64,
    #[serde(default)]
    pub(crate) iat: Option<i64>,
    #[serde(default)]
    pub(crate) auth_time: Option<i64>,
    /// The authentication context class (`acr`, such as `urn:cognito:loa:3`), where the sign-in
    /// asked for one (`acr_values`).
    #[serde(default)]
    pub(crate) acr: Option<String>,
    /// The authentication methods (`amr`, such as `["pwd","otp","mfa"]`; RFC 8176).
    #[serde(default, deserialize_with = "one_or_many")]
    pub(crate) amr: Vec<String>,
    pub(crate) sub: String,
    #[serde(default)]
    pub(crate) username: Option<String>,
    #[serde(default)]
    pub(crate) scope: Option<String>,
    #[serde(default, rename = "cognito:groups")]
    pub(crate) groups: Vec<String>,
    #[serde(default)]
    pub(crate) jti: Option<String>,
    #[serde(default)]
    pub(crate) origin_jti: Option<String>,
}

/// `aud` or `amr` as one string, an array of them, or `null`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        Some(OneOrMany::One(aud)) => vec![aud],
        Some(OneOrMany::Many(auds)) => auds,
        None => Vec::new(),
    })
}

impl Claims {
    /// The first audience that is one of `client_ids`.
    pub(crate) fn client_audience<'a>(&'a self, client_ids: &[String]) -> Option<&'a str> {
        self.aud.iter().find(|a| client_ids.contains(a)).map(String::as_str)
    }

    pub(crate) fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().unwrap_or("").split_ascii_whitespace()
    }
}

const fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn decode_segment(segment: &[u8]) -> Result<Vec<u8>, Rejection> {
    // Strict: no padding, no trailing bits, no other alphabet.
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| Rejection::Malformed)
}

/// Reads a token's header and claims without verifying its signature.
///
/// Accepts one compact JWT of at most `max_len` bytes: three non-empty base64url segments, an
/// RS256 header, a JSON object payload with the claims a Cognito access token carries.
pub(crate) fn parse(token: &[u8], max_len: usize) -> Result<Claims, Rejection> {
    if token.is_empty() {
        return Err(Rejection::Missing);
    }
    if token.len() > max_len {
        return Err(Rejection::TooLarge);
    }
    let mut segments = token.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(Rejection::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(Rejection::Malformed);
    }
    if !token.iter().all(|&b| is_base64url(b) || b == b'.') {
        return Err(Rejection::Malformed);
    }
    let header = decode_segment(header)?;
    let header: Header<'_> = serde_json::from_slice(&header).map_err(|_| Rejection::Malformed)?;
    if header.alg != "RS256" {
        return Err(Rejection::UnsupportedAlgorithm);
    }
    decode_segment(signature)?;
    let payload = decode_segment(payload)?;
    let mut claims: Claims = serde_json::from_slice(&payload).map_err(|_| Rejection::Malformed)?;
    claims.kid = header.kid;
    // The payload parsed as JSON, so it is UTF-8.
    claims.json = String::from_utf8(payload).map_err(|_| Rejection::Malformed)?.into_boxed_str();
    Ok(claims)
}

/// What a token must show before it is worth a `GetUser` call.
#[derive(Debug, Clone)]
pub(crate) struct ClaimPolicy {
    /// The issuers of each pool, in the verifier's pool order.
    pub(crate) issuers: Vec<Issuers>,
    pub(crate) client_ids: Vec<String>,
    /// When not empty, an access token's `aud` must name one of them.
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway_secs: i64,
    pub(crate) max_len: usize,
}

impl ClaimPolicy {
    /// The pool whose issuer `iss` is.
    pub(crate) fn pool_of(&self, iss: &str) -> Option<usize> {
        self.issuers.iter().position(|i| i.accepts(iss))
    }

    /// Checks the claims in the order that gives the most useful reason first; returns the
    /// token's pool.
    pub(crate) fn check(&self, claims: &Claims, now: i64) -> Result<usize, Rejection> {
        if claims.token_use != "access" {
            return Err(Rejection::NotAccessToken);
        }
        let pool = self.pool_of(&claims.iss).ok_or(Rejection::WrongIssuer)?;
        match &claims.client_id {
            Some(id) if self.client_ids.iter().any(|c| c == id) => {}
            _ => return Err(Rejection::WrongClient),
        }
        if !self.audiences.is_empty() && !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(Rejection::WrongAudience);
        }
        if claims.exp.saturating_add(self.leeway_secs) <= now {
            return Err(Rejection::Expired);
        }
        if claims.username.is_none() {
            return Err(Rejection::MachineToken);
        }
        if !claims.scopes().any(|s| s == ADMIN_SCOPE) {
            return Err(Rejection::MissingAdminScope);
        }
        Ok(pool)
    }

    /// Checks an ID token's claims (on routes that accept them): `token_use` = `id`, `iss`,
    /// `aud` among the app clients, `exp`. Returns the token's pool.
    pub(crate) fn check_id(&self, claims: &Claims, now: i64) -> Result<usize, Rejection> {
        if claims.token_use != "id" {
            return Err(Rejection::NotAccessToken);
        }
        let pool = self.pool_of(&claims.iss).ok_or(Rejection::WrongIssuer)?;
        if claims.client_audience(&self.client_ids).is_none() {
            return Err(Rejection::WrongClient);
        }
        if claims.exp.saturating_add(self.leeway_secs) <= now {
            return Err(Rejection::Expired);
        }
        Ok(pool)
    }

    /// Parses and checks a token in one step.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn verify(&self, token: &[u8], now: i64) -> Result<Claims, Rejection> {
        let claims = parse(token, self.max_len)?;
        self.check(&claims, now)?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL_ISS: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Pool";

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(payload), b64("signature"))
    }

    fn claims(overrides: &[(&str, serde_json::Value)]) -> String {
        let mut c = serde_json::json!({
            "token_use": "access",
            "iss": POOL_ISS,
            "client_id": "client1",
            "exp": 2_000_000_000i64,
            "sub": "0000-1111",
            "username": "alice",
            "scope": "openid aws.cognito.signin.user.admin",
        });
        for (k, v) in overrides {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(*k);
            } else {
                c[*k] = v.clone();
            }
        }
        token(r#"{"alg":"RS256","kid":"k1"}"#, &c.to_string())
    }

    fn policy() -> ClaimPolicy {
        ClaimPolicy {
            issuers: vec![Issuers::new(vec![POOL_ISS.to_owned()])],
            client_ids: vec!["client1".to_owned()],
            audiences: Vec::new(),
            leeway_secs: 0,
            max_len: 8192,
        }
    }

    #[test]
    fn an_audience_is_one_string_or_an_array_as_rfc_7519_allows() {
        for aud in [
            serde_json::json!("https://api.example.com"),
            serde_json::json!(["https://api.example.com", "x"]),
        ] {
            let parsed = parse(claims(&[("aud", aud.clone())]).as_bytes(), 8192).unwrap();
            assert_eq!(parsed.aud[0], "https://api.example.com", "{aud}");
            assert_eq!(policy().check(&parsed, 1_900_000_000), Ok(0), "{aud}");
        }
        let none = parse(claims(&[("aud", serde_json::Value::Null)]).as_bytes(), 8192).unwrap();
        assert!(none.aud.is_empty());
        let mut id = serde_json::from_str::<serde_json::Value>(
            &String::from_utf8(URL_SAFE_NO_PAD.decode(claims(&[]).split('.').nth(1).unwrap()).unwrap())
                .unwrap(),
        )
        .unwrap();
        id["token_use"] = "id".into();
        id["aud"] = serde_json::json!(["other", "client1"]);
        let parsed = parse(token(r#"{"alg":"RS256"}"#, &id.to_string()).as_bytes(), 8192).unwrap();
        assert_eq!(policy().check_id(&parsed, 1_900_000_000), Ok(0));
        assert_eq!(parsed.client_audience(&policy().client_ids), Some("client1"));
        id["aud"] = serde_json::json!(["other"]);
        let parsed = parse(token(r#"{"alg":"RS256"}"#, &id.to_string()).as_bytes(), 8192).unwrap();
        assert_eq!(policy().check_id(&parsed, 1_900_000_000), Err(Rejection::WrongClient));
        assert!(parse(claims(&[("aud", serde_json::json!(7))]).as_bytes(), 8192).is_err());
    }

    fn verdict(t: &str) -> Result<(), Rejection> {
        policy().verify(t.as_bytes(), 1_900_000_000).map(|_| ())
    }

    #[test]
    fn a_well_formed_access_token_passes() {
        let c = policy().verify(claims(&[]).as_bytes(), 1_900_000_000).unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.scopes().collect::<Vec<_>>(), ["openid", ADMIN_SCOPE]);
    }

    #[test]
    fn shape_errors_are_malformed() {
        for bad in ["abc", "a.b", "a.b.c.d", "..", "a..c", "ab.cd.", "a b.c.d", "é.a.b"] {
            assert_eq!(verdict(bad), Err(Rejection::Malformed), "{bad}");
        }
        assert_eq!(verdict(""), Err(Rejection::Missing));
    }

    #[test]
    fn padding_and_trailing_characters_are_refused() {
        let good = claims(&[]);
        assert_eq!(verdict(&format!("{good}=")), Err(Rejection::Malformed));
        assert_eq!(verdict(&format!("{good} ")), Err(Rejection::Malformed));
        assert_eq!(verdict(&format!("{good}.")), Err(Rejection::Malformed));
        let (h, rest) = good.split_once('.').unwrap();
        assert_eq!(verdict(&format!("{h}==.{rest}")), Err(Rejection::Malformed));
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        let big = "a".repeat(9000);
        assert_eq!(verdict(&big), Err(Rejection::TooLarge));
    }

    #[test]
    fn algorithms_other_than_rs256_are_refused() {
        let payload = serde_json::json!({"token_use": "access"}).to_string();
        for alg in ["none", "HS256", "ES256", "rs256"] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), &payload);
            assert_eq!(verdict(&t), Err(Rejection::UnsupportedAlgorithm), "{alg}");
        }
    }

    #[test]
    fn each_claim_check_has_its_own_reason() {
        use serde_json::json;
        let cases = [
            (vec![("token_use", json!("id"))], Rejection::NotAccessToken),
            (
                vec![("iss", json!("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other"))],
                Rejection::WrongIssuer,
            ),
            (vec![("client_id", json!("client2"))], Rejection::WrongClient),
            (vec![("client_id", serde_json::Value::Null)], Rejection::WrongClient),
            (vec![("exp", json!(1_900_000_000i64))], Rejection::Expired),
            (vec![("exp", json!(-5))], Rejection::Expired),
            (
                vec![("username", serde_json::Value::Null), ("scope", json!("api/read"))],
                Rejection::MachineToken,
            ),
            (vec![("scope", json!("openid email"))], Rejection::MissingAdminScope),
            (vec![("exp", json!("soon"))], Rejection::Malformed),
            (vec![("exp", json!(1e300))], Rejection::Malformed),
            (vec![("sub", serde_json::Value::Null)], Rejection::Malformed),
        ];
        for (overrides, want) in cases {
            assert_eq!(verdict(&claims(&overrides)), Err(want), "{overrides:?}");
        }
    }

    #[test]
    fn duplicate_claims_are_refused() {
        let payload = format!(
            r#"{{"token_use":"access","iss":"{POOL_ISS}","client_id":"client1","client_id":"client1","exp":2000000000,"sub":"s","username":"u","scope":"{ADMIN_SCOPE}"}}"#
        );
        assert_eq!(verdict(&token(r#"{"alg":"RS256"}"#, &payload)), Err(Rejection::Malformed));
    }

    #[test]
    fn leeway_extends_expiry() {
        let mut p = policy();
        p.leeway_secs = 30;
        let t = claims(&[("exp", serde_json::json!(1_899_999_990i64))]);
        assert!(p.verify(t.as_bytes(), 1_900_000_000).is_ok());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn claim_strategy() -> impl Strategy<Value = serde_json::Value> {
            (
                prop_oneof![Just("access".to_owned()), Just("id".to_owned()), "[a-z]{0,8}"],
                prop_oneof![Just(POOL_ISS.to_owned()), "https://[a-z.-]{1,40}/[A-Za-z0-9_-]{1,20}"],
                prop_oneof![Just("client1".to_owned()), "[a-z0-9]{0,12}"],
                prop_oneof![1_900_000_001i64..2_100_000_000, -1_000i64..1_900_000_000],
                proptest::option::of("[a-z]{1,12}"),
                prop_oneof![Just(ADMIN_SCOPE.to_owned()), "[a-z/. ]{0,30}"],
            )
                .prop_map(|(token_use, iss, client_id, exp, username, scope)| {
                    serde_json::json!({
                        "token_use": token_use, "iss": iss, "client_id": client_id, "exp": exp,
                        "sub": "s", "username": username, "scope": scope,
                    })
                })
        }

        proptest! {
            #[test]
            fn the_parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = policy().verify(&bytes, 1_900_000_000);
            }

            #[test]
            fn the_parser_never_panics_on_near_tokens(a in "[A-Za-z0-9_=+/-]{0,64}", b in "[A-Za-z0-9_=+/.-]{0,400}", c in "[A-Za-z0-9_-]{0,64}") {
                let _ = policy().verify(format!("{a}.{b}.{c}").as_bytes(), 1_900_000_000);
            }

            #[test]
            fn a_token_passes_exactly_when_every_check_holds(c in claim_strategy()) {
                let t = token(r#"{"alg":"RS256","kid":"k"}"#, &c.to_string());
                let verdict = policy().verify(t.as_bytes(), 1_900_000_000);
                let expected = c["token_use"] == "access"
                    && c["iss"] == POOL_ISS
                    && c["client_id"] == "client1"
                    && c["exp"].as_i64().unwrap() > 1_900_000_000
                    && c["username"].is_string()
                    && c["scope"].as_str().unwrap().split_ascii_whitespace().any(|s| s == ADMIN_SCOPE);
                prop_assert_eq!(verdict.is_ok(), expected, "{}", c);
            }

            #[test]
            fn any_change_to_an_accepted_token_changes_its_cache_key(i in 0usize..200, b in any::<u8>()) {
                let t = claims(&[]).into_bytes();
                let i = i % t.len();
                prop_assume!(t[i] != b);
                let mut changed = t.clone();
                changed[i] = b;
                prop_assert_ne!(key(&t), key(&changed));
            }
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_one_space() {
        assert_eq!(strip_bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(strip_bearer(b"bEARER abc"), Some(&b"abc"[..]));
        assert_eq!(strip_bearer(b"Basic abcdef"), None);
        assert_eq!(strip_bearer(b"Bearer"), Some(&b""[..]));
        assert_eq!(strip_bearer(b"Bearer2"), None);
        assert_eq!(strip_bearer(b"Bearer  abc"), Some(&b" abc"[..]));
    }
}
