//! The principal: who Cognito says the token belongs to.
//!
//! A cached principal is kept compact (about half a kilobyte for a typical user): every string of
//! it lives in one buffer, addressed by spans.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, SerializeSeq};

use crate::token::Claims;

/// A string of a principal: a range of its text buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// Collects strings into one buffer.
#[derive(Default)]
struct TextBuilder {
    text: String,
    spans: Vec<Span>,
}

impl TextBuilder {
    fn push(&mut self, s: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        self.spans.push(Span { start, end: self.text.len() as u32 });
    }

    fn finish(self) -> (Box<str>, Box<[Span]>) {
        (self.text.into_boxed_str(), self.spans.into_boxed_slice())
    }
}

/// Strings of one buffer: the token's scopes, the user's groups, the `amr` methods.
///
/// An iterator already (`for g in user.groups()`, `user.groups().collect::<Vec<_>>()`), and
/// cheap to clone; [`iter`](Self::iter) gives another one over the same names, for code that
/// reads `user.groups().iter()`.
#[derive(Clone)]
pub struct Names<'a> {
    text: &'a str,
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Names<'a> {
    fn new(text: &'a str, spans: &'a [Span]) -> Self {
        Names { text, spans: spans.iter() }
    }

    /// Whether `name` is among them.
    pub fn contains(&self, name: &str) -> bool {
        self.clone().any(|n| n == name)
    }

    /// The names not yet iterated, as a new iterator (this one is left as it is).
    pub fn iter(&self) -> Names<'a> {
        self.clone()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> Iterator for Names<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.spans.next().map(|s| &self.text[s.start as usize..s.end as usize])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for Names<'_> {}

impl fmt::Debug for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Names<'_> {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.len() == N && self.clone().zip(other.iter()).all(|(a, b)| a == *b)
    }
}

impl serde::Serialize for Names<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for name in self.clone() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

/// A user's attributes, sorted by name: `(name, value)` pairs. Serializes as a JSON object.
#[derive(Clone)]
pub struct Attributes<'a> {
    text: &'a str,
    pairs: std::slice::ChunksExact<'a, Span>,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.pairs.next()?;
        let get = |s: &Span| &self.text[s.start as usize..s.end as usize];
        Some((get(&pair[0]), get(&pair[1])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.pairs.size_hint()
    }
}

impl ExactSizeIterator for Attributes<'_> {}

impl fmt::Debug for Attributes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.clone()).finish()
    }
}

impl serde::Serialize for Attributes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.clone() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// What `GetUser` says of a user: the username, `sub` and attributes.
///
/// Shared by every cached token of one user (interned by `sub`), so a user with many sessions
/// and large attributes is kept once.
#[derive(PartialEq, Eq)]
pub(crate) struct Profile {
    /// The username, the `sub`, then `(name, value)` spans of the attributes sorted by name.
    text: Box<str>,
    spans: Box<[Span]>,
}

impl Profile {
    /// `attributes` in any order; sorted and deduplicated here. Cognito's own `sub` attribute
    /// wins over `sub` when both are given.
    pub(crate) fn new(username: &str, sub: &str, mut attributes: Vec<(&str, &str)>) -> Self {
        attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        attributes.dedup_by(|a, b| a.0 == b.0);
        let sub = attributes.iter().find(|(k, _)| *k == "sub").map_or(sub, |(_, v)| v);
        let mut b = TextBuilder::default();
        b.push(username);
        b.push(sub);
        for (k, v) in &attributes {
            b.push(k);
            b.push(v);
        }
        let (text, spans) = b.finish();
        Profile { text, spans }
    }

    fn get(&self, s: Span) -> &str {
        &self.text[s.start as usize..s.end as usize]
    }

    pub(crate) fn username(&self) -> &str {
        self.get(self.spans[0])
    }

    pub(crate) fn sub(&self) -> &str {
        self.get(self.spans[1])
    }

    fn pairs(&self) -> &[Span] {
        &self.spans[2..]
    }

    pub(crate) fn attributes(&self) -> Attributes<'_> {
        Attributes { text: &self.text, pairs: self.pairs().chunks_exact(2) }
    }

    fn attribute(&self, name: &str) -> Option<&str> {
        let pairs = self.pairs();
        let (mut lo, mut hi) = (0, pairs.len() / 2);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.get(pairs[2 * mid]).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.get(pairs[2 * mid + 1])),
            }
        }
        None
    }

    /// Heap bytes held, the allocation of the `Arc` included.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 16 + self.text.len() + std::mem::size_of_val(&*self.spans)
    }
}

/// A user that Cognito vouched for, with their attributes and the token's trusted claims.
///
/// Cheap to clone (one reference count). Its `Debug` output names the user, the attribute names
/// (not their values) and the token's claims, never the token.
#[derive(Clone)]
pub struct CognitoUser(Arc<Inner>);

/// Fixed spans of the token's own text, then scopes, then groups, then `amr`.
const CLIENT_ID: usize = 0;
const JTI: usize = 1;
const ORIGIN_JTI: usize = 2;
const ACR: usize = 3;
const FIXED: usize = 4;

#[derive(Clone)]
struct Inner {
    profile: Arc<Profile>,
    /// The user pool the token came from.
    pool: Arc<str>,
    /// The token's issuer (`iss`), shared by the principals of its tokens.
    issuer: Arc<str>,
    /// The claims not kept below, in the profile or implied (`token_use` is `access`), as a JSON
    /// object (`event_id`, `version`, and those a pre-token-generation trigger added); empty
    /// when there are none.
    extra: Box<str>,
    /// The token's claims: client id, jti, origin_jti, acr, scopes, groups, amr.
    text: Box<str>,
    spans: Box<[Span]>,
    scopes: u16,
    amr: u16,
    has_jti: bool,
    has_origin_jti: bool,
    has_acr: bool,
    exp: i64,
    iat: Option<i64>,
    auth_time: Option<i64>,
}

impl CognitoUser {
    /// The principal of one token: the user's profile (from `GetUser` or a shared cache) and
    /// the token's own verified claims. Groups and scopes always come from the claims.
    pub(crate) fn new(profile: Arc<Profile>, claims: &Claims, pool: Arc<str>, issuer: Arc<str>) -> Self {
        let mut b = TextBuilder::default();
        b.push(claims.client_id.as_deref().unwrap_or_default());
        b.push(claims.jti.as_deref().unwrap_or_default());
        b.push(claims.origin_jti.as_deref().unwrap_or_default());
        b.push(claims.acr.as_deref().unwrap_or_default());
        let scopes = claims.scopes().inspect(|s| b.push(s)).count().min(u16::MAX as usize);
        claims.groups.iter().for_each(|g| b.push(g));
        let amr = claims.amr.len().min(u16::MAX as usize);
        claims.amr[..amr].iter().for_each(|m| b.push(m));
        let (text, spans) = b.finish();
        CognitoUser(Arc::new(Inner {
            profile,
            pool,
            issuer,
            extra: extra_claims(&claims.json),
            text,
            spans,
            scopes: scopes as u16,
            amr: amr as u16,
            has_jti: claims.jti.is_some(),
            has_origin_jti: claims.origin_jti.is_some(),
            has_acr: claims.acr.is_some(),
            exp: claims.exp,
            iat: claims.iat,
            auth_time: claims.auth_time,
        }))
    }

    /// Heap bytes this principal holds: its own part, and its share of a profile that other
    /// tokens of the same user may hold too.
    pub(crate) fn heap_bytes(&self) -> usize {
        let own = std::mem::size_of::<Inner>()
            + 16
            + self.0.extra.len()
            + self.0.text.len()
            + std::mem::size_of_val(&*self.0.spans);
        own + self.0.profile.heap_bytes() / Arc::strong_count(&self.0.profile).max(1)
    }

    fn span(&self, i: usize) -> &str {
        let s = self.0.spans[i];
        &self.0.text[s.start as usize..s.end as usize]
    }

    /// The user name (`Username` in Cognito; a UUID in pools that sign in by email).
    pub fn username(&self) -> &str {
        self.0.profile.username()
    }

    /// The user pool the token came from (one of the verifier's pools).
    pub fn pool_id(&self) -> &str {
        &self.0.pool
    }

    /// The user's immutable id, the `sub` attribute.
    pub fn sub(&self) -> &str {
        self.0.profile.sub()
    }

    /// Every attribute `GetUser` returned, `custom:` ones included, sorted by name.
    pub fn attributes(&self) -> Attributes<'_> {
        self.0.profile.attributes()
    }

    /// One attribute by its full name, such as `email` or `custom:tenant`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.0.profile.attribute(name)
    }

    /// A custom attribute by its name without the `custom:` prefix.
    ///
    /// # Authorization
    /// Users can change their own attributes with their access token (`UpdateUserAttributes`),
    /// custom ones included, unless the app client's write permissions leave them out: a
    /// `custom:tenant` is then the user's to choose, and must not decide what they may reach.
    /// Remove such attributes from every app client's `WriteAttributes`, and name them in
    /// [`authorization_attributes`](crate::VerifierBuilder::authorization_attributes): the
    /// verifier then refuses to start while an app client can write them.
    pub fn custom_attribute(&self, name: &str) -> Option<&str> {
        self.attributes().find(|(k, _)| k.strip_prefix("custom:") == Some(name)).map(|(_, v)| v)
    }

    fn flag(&self, name: &str) -> Option<bool> {
        match self.attribute(name)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// The `email` attribute.
    pub fn email(&self) -> Option<&str> {
        self.attribute("email")
    }

    /// The `email_verified` attribute; `None` when absent or not a boolean.
    pub fn email_verified(&self) -> Option<bool> {
        self.flag("email_verified")
    }

    /// The `phone_number` attribute.
    pub fn phone_number(&self) -> Option<&str> {
        self.attribute("phone_number")
    }

    /// The `phone_number_verified` attribute; `None` when absent or not a boolean.
    pub fn phone_number_verified(&self) -> Option<bool> {
        self.flag("phone_number_verified")
    }

    /// The `name` attribute.
    pub fn name(&self) -> Option<&str> {
        self.attribute("name")
    }

    /// The `given_name` attribute.
    pub fn given_name(&self) -> Option<&str> {
        self.attribute("given_name")
    }

    /// The `family_name` attribute.
    pub fn family_name(&self) -> Option<&str> {
        self.attribute("family_name")
    }

    /// The `preferred_username` attribute.
    pub fn preferred_username(&self) -> Option<&str> {
        self.attribute("preferred_username")
    }

    /// The `locale` attribute.
    pub fn locale(&self) -> Option<&str> {
        self.attribute("locale")
    }

    /// The app client the token was issued to (`client_id`).
    pub fn client_id(&self) -> &str {
        self.span(CLIENT_ID)
    }

    /// The token's OAuth scopes (`scope`).
    pub fn scopes(&self) -> Names<'_> {
        Names::new(&self.0.text, &self.0.spans[FIXED..FIXED + self.0.scopes as usize])
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().contains(scope)
    }

    /// The user's groups at sign-in (`cognito:groups`).
    pub fn groups(&self) -> Names<'_> {
        let groups = FIXED + self.0.scopes as usize..self.0.spans.len() - self.0.amr as usize;
        Names::new(&self.0.text, &self.0.spans[groups])
    }

    /// Whether the user was in `group` at sign-in.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups().contains(group)
    }

    /// The authentication level of the sign-in (`acr`, such as `urn:cognito:loa:3`): present when
    /// the sign-in asked for one with `acr_values`. See
    /// [`CognitoAuth::require_acr`](crate::CognitoAuth::require_acr).
    pub fn acr(&self) -> Option<&str> {
        self.0.has_acr.then(|| self.span(ACR))
    }

    /// How the user authenticated (`amr`, such as `pwd`, `otp`, `mfa`; RFC 8176); empty when the
    /// token does not say.
    pub fn amr(&self) -> Names<'_> {
        Names::new(&self.0.text, &self.0.spans[self.0.spans.len() - self.0.amr as usize..])
    }

    /// When the token expires (`exp`).
    pub fn expires_at(&self) -> SystemTime {
        unix_time(self.0.exp)
    }

    /// `exp` in seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        self.0.exp
    }

    pub(crate) fn iat(&self) -> Option<i64> {
        self.0.iat
    }

    /// When the token was issued (`iat`).
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.0.iat.map(unix_time)
    }

    /// When the user authenticated (`auth_time`).
    pub fn auth_time(&self) -> Option<SystemTime> {
        self.0.auth_time.map(unix_time)
    }

    /// The token's unique id (`jti`).
    pub fn jti(&self) -> Option<&str> {
        self.0.has_jti.then(|| self.span(JTI))
    }

    /// Every claim of the token, as a JSON object: the standard ones and those a
    /// pre-token-generation trigger added. Parsed on each call.
    pub fn claims(&self) -> serde_json::Value {
        use serde_json::Value;
        let mut claims: serde_json::Map<String, Value> =
            serde_json::from_str(&self.0.extra).unwrap_or_default();
        let mut put = |name: &str, value: Value| {
            claims.insert(name.to_owned(), value);
        };
        put("iss", (*self.0.issuer).into());
        put("token_use", "access".into());
        put("sub", self.sub().into());
        put("username", self.username().into());
        put("client_id", self.client_id().into());
        if self.0.scopes > 0 {
            put("scope", self.scopes().collect::<Vec<_>>().join(" ").into());
        }
        if !self.groups().is_empty() {
            put("cognito:groups", self.groups().collect::<Vec<_>>().into());
        }
        put("exp", self.0.exp.into());
        for (name, value) in [("iat", self.0.iat), ("auth_time", self.0.auth_time)] {
            if let Some(v) = value {
                put(name, v.into());
            }
        }
        for (name, value) in [("jti", self.jti()), ("origin_jti", self.origin_jti()), ("acr", self.acr())] {
            if let Some(v) = value {
                put(name, v.into());
            }
        }
        if self.0.amr > 0 {
            put("amr", self.amr().collect::<Vec<_>>().into());
        }
        Value::Object(claims)
    }

    /// One claim of the token, as `T` (a string, a number, a list, a map...): `None` when the
    /// token lacks it or it is not a `T`. Parsed on each call.
    pub fn claim<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        match self.claims() {
            serde_json::Value::Object(mut claims) => serde_json::from_value(claims.remove(name)?).ok(),
            _ => None,
        }
    }

    /// The id shared by every token of one sign-in (`origin_jti`); revoked together.
    pub fn origin_jti(&self) -> Option<&str> {
        self.0.has_origin_jti.then(|| self.span(ORIGIN_JTI))
    }
}

/// Serializes as the JSON object `{"username", "sub", "pool", "attributes", "groups",
/// "scopes", "claims"}`, written straight from the principal (no intermediate `Value`), so
/// `HttpResponse::Ok().json(&user)` is cheap. `claims` is what [`claims`](CognitoUser::claims)
/// returns. The token itself is not there; its claims are (they are the user's own data).
impl serde::Serialize for CognitoUser {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("username", self.username())?;
        map.serialize_entry("sub", self.sub())?;
        map.serialize_entry("pool", self.pool_id())?;
        map.serialize_entry("attributes", &self.attributes())?;
        map.serialize_entry("groups", &self.groups())?;
        map.serialize_entry("scopes", &self.scopes())?;
        map.serialize_entry("claims", &ClaimsOf(self))?;
        map.end()
    }
}

/// A user's claims, serialized as [`CognitoUser::claims`] builds them.
struct ClaimsOf<'a>(&'a CognitoUser);

/// Scopes as the `scope` claim has them: space-separated.
struct SpaceSeparated<'a>(Names<'a>);

impl fmt::Display for SpaceSeparated<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.clone().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl serde::Serialize for ClaimsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// A claim's name, borrowed unless it holds escapes.
        #[derive(serde::Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord)]
        #[serde(transparent)]
        struct Name<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
        type Extra<'a> = std::collections::BTreeMap<Name<'a>, &'a serde_json::value::RawValue>;
        let user = self.0;
        let extra: Extra<'_> = serde_json::from_str(&user.0.extra).unwrap_or_default();
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in &extra {
            map.serialize_entry(name, value)?;
        }
        map.serialize_entry("iss", &*user.0.issuer)?;
        map.serialize_entry("token_use", "access")?;
        map.serialize_entry("sub", user.sub())?;
        map.serialize_entry("username", user.username())?;
        map.serialize_entry("client_id", user.client_id())?;
        if user.0.scopes > 0 {
            map.serialize_entry("scope", &format_args!("{}", SpaceSeparated(user.scopes())))?;
        }
        if !user.groups().is_empty() {
            map.serialize_entry("cognito:groups", &user.groups())?;
        }
        map.serialize_entry("exp", &user.0.exp)?;
        for (name, value) in [("iat", user.0.iat), ("auth_time", user.0.auth_time)] {
            if let Some(v) = value {
                map.serialize_entry(name, &v)?;
            }
        }
        for (name, value) in [("jti", user.jti()), ("origin_jti", user.origin_jti()), ("acr", user.acr())] {
            if let Some(v) = value {
                map.serialize_entry(name, v)?;
            }
        }
        if user.0.amr > 0 {
            map.serialize_entry("amr", &user.amr())?;
        }
        map.end()
    }
}

/// The claims a principal keeps elsewhere (its spans, its profile, its fields).
const KEPT_CLAIMS: [&str; 14] = [
    "iss",
    "token_use",
    "sub",
    "username",
    "client_id",
    "scope",
    "cognito:groups",
    "exp",
    "iat",
    "auth_time",
    "jti",
    "origin_jti",
    "acr",
    "amr",
];

/// The token's other claims, as a JSON object.
fn extra_claims(json: &str) -> Box<str> {
    let mut claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).unwrap_or_default();
    KEPT_CLAIMS.iter().for_each(|k| {
        claims.remove(*k);
    });
    if claims.is_empty() {
        return Box::default();
    }
    serde_json::to_string(&claims).unwrap_or_default().into_boxed_str()
}

fn parse_claims(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap_or_default()
}

fn claim_of<T: serde::de::DeserializeOwned>(json: &str, name: &str) -> Option<T> {
    let mut claims: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    serde_json::from_value(claims.remove(name)?).ok()
}

fn unix_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

impl fmt::Debug for CognitoUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CognitoUser")
            .field("username", &self.username())
            .field("sub", &self.sub())
            .field("attributes", &self.attributes().map(|(k, _)| k).collect::<Vec<_>>())
            .field("client_id", &self.client_id())
            .field("scopes", &self.scopes())
            .field("groups", &self.groups())
            .field("exp", &self.0.exp)
            .field("jti", &self.jti())
            .finish_non_exhaustive()
    }
}

/// An app client that authenticated with its own credentials (the OAuth client-credentials
/// grant): a machine, not a user.
///
/// Its tokens are verified locally only (signature, issuer, client, expiry): `GetUser` can never
/// accept them, so they **cannot be revoked early** and stay valid until `exp`. Accepted only on
/// routes that opt in with [`CognitoAuth::allow_machine_tokens`](crate::CognitoAuth::allow_machine_tokens).
#[derive(Clone)]
pub struct MachineClient(Arc<MachineInner>);

#[derive(Clone)]
struct MachineInner {
    /// Every claim of the token, as its JSON payload.
    claims: Box<str>,
    /// `client_id`, `jti`, then the scopes.
    text: Box<str>,
    spans: Box<[Span]>,
    has_jti: bool,
    exp: i64,
}

impl MachineClient {
    pub(crate) fn new(claims: &Claims) -> Self {
        let mut b = TextBuilder::default();
        b.push(claims.client_id.as_deref().unwrap_or_default());
        b.push(claims.jti.as_deref().unwrap_or_default());
        claims.scopes().for_each(|s| b.push(s));
        let (text, spans) = b.finish();
        MachineClient(Arc::new(MachineInner {
            claims: claims.json.clone(),
            text,
            spans,
            has_jti: claims.jti.is_some(),
            exp: claims.exp,
        }))
    }

    fn span(&self, i: usize) -> &str {
        let s = self.0.spans[i];
        &self.0.text[s.start as usize..s.end as usize]
    }

    /// The app client id (`client_id`, also the token's `sub`).
    pub fn client_id(&self) -> &str {
        self.span(0)
    }

    /// The token's scopes, typically custom resource-server scopes such as `orders/read`.
    pub fn scopes(&self) -> Names<'_> {
        Names::new(&self.0.text, &self.0.spans[2..])
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().contains(scope)
    }

    /// `exp` in seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        self.0.exp
    }

    /// The token's unique id (`jti`).
    pub fn jti(&self) -> Option<&str> {
        self.0.has_jti.then(|| self.span(1))
    }

    /// Every claim of the token, as a JSON object. Parsed on each call.
    pub fn claims(&self) -> serde_json::Value {
        parse_claims(&self.0.claims)
    }

    /// One claim of the token, as `T`; `None` when absent or not a `T`. Parsed on each call.
    pub fn claim<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        claim_of(&self.0.claims, name)
    }
}

impl fmt::Debug for MachineClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineClient")
            .field("client_id", &self.client_id())
            .field("scopes", &self.scopes())
            .field("exp", &self.0.exp)
            .finish_non_exhaustive()
    }
}

/// A user as an ID token describes them, on routes that accept ID tokens
/// ([`CognitoAuth::allow_id_tokens`](crate::CognitoAuth::allow_id_tokens)).
///
/// No Cognito API accepts an ID token, so it is verified **locally only** (signature, `iss`,
/// `aud` among the app clients, `token_use` = `id`, `exp`): it **cannot be revoked before it
/// expires**, and its attributes are those at sign-in. Prefer access tokens where you can.
#[derive(Clone)]
pub struct IdTokenUser(Arc<IdInner>);

/// The fixed spans of an ID token user: username, `sub`, `aud`, `acr`.
const ID_FIXED: usize = 4;

#[derive(Clone)]
struct IdInner {
    /// Every claim, as the token's JSON payload.
    claims: Box<str>,
    /// The username, `sub`, `aud`, `acr`, then the groups, then `amr`.
    text: Box<str>,
    spans: Box<[Span]>,
    groups: u16,
    has_acr: bool,
    pool: Arc<str>,
    exp: i64,
    auth_time: Option<i64>,
}

impl IdTokenUser {
    /// `client_id`: the audience that named one of the verifier's app clients.
    pub(crate) fn new(claims: &Claims, pool: Arc<str>, client_id: &str) -> Self {
        let mut b = TextBuilder::default();
        let username: Option<String> = claim_of(&claims.json, "cognito:username");
        b.push(username.as_deref().or(claims.username.as_deref()).unwrap_or(&claims.sub));
        b.push(&claims.sub);
        b.push(client_id);
        b.push(claims.acr.as_deref().unwrap_or_default());
        let groups = claims.groups.len().min(u16::MAX as usize);
        claims.groups[..groups].iter().for_each(|g| b.push(g));
        claims.amr.iter().for_each(|m| b.push(m));
        let (text, spans) = b.finish();
        IdTokenUser(Arc::new(IdInner {
            claims: claims.json.clone(),
            text,
            spans,
            groups: groups as u16,
            has_acr: claims.acr.is_some(),
            pool,
            exp: claims.exp,
            auth_time: claims.auth_time,
        }))
    }

    fn span(&self, i: usize) -> &str {
        let s = self.0.spans[i];
        &self.0.text[s.start as usize..s.end as usize]
    }

    /// The username (`cognito:username`).
    pub fn username(&self) -> &str {
        self.span(0)
    }

    /// The user's immutable id (`sub`).
    pub fn sub(&self) -> &str {
        self.span(1)
    }

    /// The app client the token was issued to (`aud`).
    pub fn client_id(&self) -> &str {
        self.span(2)
    }

    /// The user pool the token came from.
    pub fn pool_id(&self) -> &str {
        &self.0.pool
    }

    /// The user's groups at sign-in (`cognito:groups`).
    pub fn groups(&self) -> Names<'_> {
        Names::new(&self.0.text, &self.0.spans[ID_FIXED..ID_FIXED + self.0.groups as usize])
    }

    /// The authentication level of the sign-in (`acr`), when it asked for one.
    pub fn acr(&self) -> Option<&str> {
        self.0.has_acr.then(|| self.span(3))
    }

    /// How the user authenticated (`amr`); empty when the token does not say.
    pub fn amr(&self) -> Names<'_> {
        Names::new(&self.0.text, &self.0.spans[ID_FIXED + self.0.groups as usize..])
    }

    /// When the user authenticated (`auth_time`).
    pub fn auth_time(&self) -> Option<SystemTime> {
        self.0.auth_time.map(unix_time)
    }

    /// Whether the user was in `group` at sign-in.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups().contains(group)
    }

    /// The `email` claim.
    pub fn email(&self) -> Option<String> {
        self.claim("email")
    }

    /// An attribute as the token carries it, such as `email` or `custom:tenant`, as text.
    pub fn attribute(&self, name: &str) -> Option<String> {
        match self.claim::<serde_json::Value>(name)? {
            serde_json::Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }

    /// Every claim of the token, as a JSON object. Parsed on each call.
    pub fn claims(&self) -> serde_json::Value {
        parse_claims(&self.0.claims)
    }

    /// One claim of the token, as `T`; `None` when absent or not a `T`. Parsed on each call.
    pub fn claim<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        claim_of(&self.0.claims, name)
    }

    /// `exp` in seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        self.0.exp
    }
}

impl fmt::Debug for IdTokenUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdTokenUser")
            .field("username", &self.username())
            .field("sub", &self.sub())
            .field("client_id", &self.client_id())
            .field("groups", &self.groups())
            .field("exp", &self.0.exp)
            .finish_non_exhaustive()
    }
}

/// Who a verified token speaks for: a user, or (on routes that allow it) a machine.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Principal {
    /// A user, vouched for by `GetUser`.
    User(CognitoUser),
    /// An app client with a client-credentials token, verified locally.
    Machine(MachineClient),
    /// A user presenting an ID token, verified locally (routes that allow ID tokens).
    IdToken(IdTokenUser),
}

impl Principal {
    /// The user, if it is one.
    pub fn user(&self) -> Option<&CognitoUser> {
        match self {
            Principal::User(u) => Some(u),
            _ => None,
        }
    }

    /// The machine client, if it is one.
    pub fn machine(&self) -> Option<&MachineClient> {
        match self {
            Principal::Machine(m) => Some(m),
            _ => None,
        }
    }

    /// The ID-token user, if it is one.
    pub fn id_token(&self) -> Option<&IdTokenUser> {
        match self {
            Principal::IdToken(i) => Some(i),
            _ => None,
        }
    }

    /// The token's scopes.
    pub fn scopes(&self) -> Names<'_> {
        match self {
            Principal::User(u) => u.scopes(),
            Principal::Machine(m) => m.scopes(),
            Principal::IdToken(_) => Names::new("", &[]),
        }
    }

    /// The user's groups; a machine has none.
    pub fn groups(&self) -> Names<'_> {
        match self {
            Principal::User(u) => u.groups(),
            Principal::Machine(_) => Names::new("", &[]),
            Principal::IdToken(i) => i.groups(),
        }
    }

    /// The user pool of a user's token; `None` for a machine.
    pub fn pool_id(&self) -> Option<&str> {
        match self {
            Principal::User(u) => Some(u.pool_id()),
            Principal::Machine(_) => None,
            Principal::IdToken(i) => Some(i.pool_id()),
        }
    }

    /// The authentication level of the sign-in (`acr`); a machine has none.
    pub fn acr(&self) -> Option<&str> {
        match self {
            Principal::User(u) => u.acr(),
            Principal::Machine(_) => None,
            Principal::IdToken(i) => i.acr(),
        }
    }

    /// How the user authenticated (`amr`); a machine has none.
    pub fn amr(&self) -> Names<'_> {
        match self {
            Principal::User(u) => u.amr(),
            Principal::Machine(_) => Names::new("", &[]),
            Principal::IdToken(i) => i.amr(),
        }
    }

    /// When the user authenticated (`auth_time`); a machine has none.
    pub fn auth_time(&self) -> Option<SystemTime> {
        match self {
            Principal::User(u) => u.auth_time(),
            Principal::Machine(_) => None,
            Principal::IdToken(i) => i.auth_time(),
        }
    }

    /// `auth_time` in seconds since the Unix epoch.
    pub(crate) fn auth_time_secs(&self) -> Option<i64> {
        match self {
            Principal::User(u) => u.0.auth_time,
            Principal::Machine(_) => None,
            Principal::IdToken(i) => i.0.auth_time,
        }
    }

    /// `exp` in seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        match self {
            Principal::User(u) => u.exp(),
            Principal::Machine(m) => m.exp(),
            Principal::IdToken(i) => i.exp(),
        }
    }

    /// Every claim of the token, as a JSON object.
    pub fn claims(&self) -> serde_json::Value {
        match self {
            Principal::User(u) => u.claims(),
            Principal::Machine(m) => m.claims(),
            Principal::IdToken(i) => i.claims(),
        }
    }

    /// One claim of the token, as `T`; `None` when absent or not a `T`.
    pub fn claim<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        match self {
            Principal::User(u) => u.claim(name),
            Principal::Machine(m) => m.claim(name),
            Principal::IdToken(i) => i.claim(name),
        }
    }

    /// A copy with reference counts of its own (the profile stays shared): for a thread that
    /// hands out clones, so that their counts are not bumped on another core.
    pub(crate) fn detached(&self) -> Principal {
        match self {
            Principal::User(u) => Principal::User(CognitoUser(Arc::new(Inner::clone(&u.0)))),
            Principal::Machine(m) => Principal::Machine(MachineClient(Arc::new(MachineInner::clone(&m.0)))),
            Principal::IdToken(i) => Principal::IdToken(IdTokenUser(Arc::new(IdInner::clone(&i.0)))),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Principal::User(u) => u.heap_bytes(),
            Principal::Machine(m) => {
                std::mem::size_of::<MachineInner>()
                    + 16
                    + m.0.text.len()
                    + m.0.claims.len()
                    + std::mem::size_of_val(&*m.0.spans)
            }
            Principal::IdToken(i) => {
                std::mem::size_of::<IdInner>()
                    + 16
                    + i.0.text.len()
                    + i.0.claims.len()
                    + std::mem::size_of_val(&*i.0.spans)
            }
        }
    }
}
