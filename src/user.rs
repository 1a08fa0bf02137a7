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
#[derive(Clone, Copy, Debug, Default)]
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

/// Strings of one buffer: the token's scopes, the user's groups.
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

/// A user that Cognito vouched for, with their attributes and the token's trusted claims.
///
/// Cheap to clone (one reference count). Its `Debug` output names the user, the attribute names
/// (not their values) and the token's claims, never the token.
#[derive(Clone)]
pub struct CognitoUser(Arc<Inner>);

/// Fixed spans, then `2 * attributes` spans of names and values, then scopes, then groups.
const USERNAME: usize = 0;
const SUB: usize = 1;
const CLIENT_ID: usize = 2;
const JTI: usize = 3;
const ORIGIN_JTI: usize = 4;
const FIXED: usize = 5;

struct Inner {
    text: Box<str>,
    spans: Box<[Span]>,
    attributes: u16,
    scopes: u16,
    has_jti: bool,
    has_origin_jti: bool,
    exp: i64,
    iat: Option<i64>,
    auth_time: Option<i64>,
}

/// The parts of a user, from `GetUser` and the claims, or from a shared cache.
pub(crate) struct UserParts<'a> {
    pub(crate) username: &'a str,
    pub(crate) sub: &'a str,
    /// Any order; sorted and deduplicated when built.
    pub(crate) attributes: Vec<(&'a str, &'a str)>,
    pub(crate) client_id: &'a str,
    pub(crate) scopes: Vec<&'a str>,
    pub(crate) groups: Vec<&'a str>,
    pub(crate) exp: i64,
    pub(crate) iat: Option<i64>,
    pub(crate) auth_time: Option<i64>,
    pub(crate) jti: Option<&'a str>,
    pub(crate) origin_jti: Option<&'a str>,
}

impl CognitoUser {
    /// Builds the principal from `GetUser`'s answer and the token's checked claims.
    pub(crate) fn new(username: String, attributes: Vec<(String, String)>, claims: Claims) -> Self {
        // Cognito's own `sub` attribute wins over the claim; they agree for any genuine token.
        let sub =
            attributes.iter().find(|(k, _)| k == "sub").map_or(claims.sub.as_str(), |(_, v)| v.as_str());
        CognitoUser::from_parts(UserParts {
            username: &username,
            sub,
            attributes: attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            client_id: claims.client_id.as_deref().unwrap_or_default(),
            scopes: claims.scopes().collect(),
            groups: claims.groups.iter().map(String::as_str).collect(),
            exp: claims.exp,
            iat: claims.iat,
            auth_time: claims.auth_time,
            jti: claims.jti.as_deref(),
            origin_jti: claims.origin_jti.as_deref(),
        })
    }

    pub(crate) fn from_parts(mut p: UserParts<'_>) -> Self {
        p.attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        p.attributes.dedup_by(|a, b| a.0 == b.0);
        let mut b = TextBuilder::default();
        for s in [p.username, p.sub, p.client_id, p.jti.unwrap_or(""), p.origin_jti.unwrap_or("")] {
            b.push(s);
        }
        for (k, v) in &p.attributes {
            b.push(k);
            b.push(v);
        }
        p.scopes.iter().chain(&p.groups).for_each(|s| b.push(s));
        let (text, spans) = b.finish();
        CognitoUser(Arc::new(Inner {
            text,
            spans,
            attributes: p.attributes.len() as u16,
            scopes: p.scopes.len() as u16,
            has_jti: p.jti.is_some(),
            has_origin_jti: p.origin_jti.is_some(),
            exp: p.exp,
            iat: p.iat,
            auth_time: p.auth_time,
        }))
    }

    fn span(&self, i: usize) -> &str {
        let s = self.0.spans[i];
        &self.0.text[s.start as usize..s.end as usize]
    }

    /// The user name (`Username` in Cognito; a UUID in pools that sign in by email).
    pub fn username(&self) -> &str {
        self.span(USERNAME)
    }

    /// The user's immutable id, the `sub` attribute.
    pub fn sub(&self) -> &str {
        self.span(SUB)
    }

    /// Every attribute `GetUser` returned, `custom:` ones included, sorted by name.
    pub fn attributes(&self) -> Attributes<'_> {
        let end = FIXED + 2 * self.0.attributes as usize;
        Attributes { text: &self.0.text, pairs: self.0.spans[FIXED..end].chunks_exact(2) }
    }

    /// One attribute by its full name, such as `email` or `custom:tenant`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        let end = FIXED + 2 * self.0.attributes as usize;
        let pairs = &self.0.spans[FIXED..end];
        let text = &self.0.text;
        let get = |s: Span| &text[s.start as usize..s.end as usize];
        let (mut lo, mut hi) = (0, pairs.len() / 2);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match get(pairs[2 * mid]).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(get(pairs[2 * mid + 1])),
            }
        }
        None
    }

    /// A custom attribute by its name without the `custom:` prefix.
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
        let start = FIXED + 2 * self.0.attributes as usize;
        Names::new(&self.0.text, &self.0.spans[start..start + self.0.scopes as usize])
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().contains(scope)
    }

    /// The user's groups at sign-in (`cognito:groups`).
    pub fn groups(&self) -> Names<'_> {
        let start = FIXED + 2 * self.0.attributes as usize + self.0.scopes as usize;
        Names::new(&self.0.text, &self.0.spans[start..])
    }

    /// Whether the user was in `group` at sign-in.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups().contains(group)
    }

    /// When the token expires (`exp`).
    pub fn expires_at(&self) -> SystemTime {
        unix_time(self.0.exp)
    }

    /// `exp` in seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        self.0.exp
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

    /// The id shared by every token of one sign-in (`origin_jti`); revoked together.
    pub fn origin_jti(&self) -> Option<&str> {
        self.0.has_origin_jti.then(|| self.span(ORIGIN_JTI))
    }

    #[cfg(feature = "redis")]
    pub(crate) fn iat_secs(&self) -> Option<i64> {
        self.0.iat
    }

    #[cfg(feature = "redis")]
    pub(crate) fn auth_time_secs(&self) -> Option<i64> {
        self.0.auth_time
    }
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

struct MachineInner {
    /// `client_id`, `jti`, then the scopes.
    text: Box<str>,
    spans: Box<[Span]>,
    has_jti: bool,
    exp: i64,
}

impl MachineClient {
    pub(crate) fn new(claims: Claims) -> Self {
        let mut b = TextBuilder::default();
        b.push(claims.client_id.as_deref().unwrap_or_default());
        b.push(claims.jti.as_deref().unwrap_or_default());
        claims.scopes().for_each(|s| b.push(s));
        let (text, spans) = b.finish();
        MachineClient(Arc::new(MachineInner { text, spans, has_jti: claims.jti.is_some(), exp: claims.exp }))
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

/// Who a verified token speaks for: a user, or (on routes that allow it) a machine.
#[derive(Clone, Debug)]
pub enum Principal {
    /// A user, vouched for by `GetUser`.
    User(CognitoUser),
    /// An app client with a client-credentials token, verified locally.
    Machine(MachineClient),
}

impl Principal {
    /// The user, if it is one.
    pub fn user(&self) -> Option<&CognitoUser> {
        match self {
            Principal::User(u) => Some(u),
            Principal::Machine(_) => None,
        }
    }

    /// The machine client, if it is one.
    pub fn machine(&self) -> Option<&MachineClient> {
        match self {
            Principal::Machine(m) => Some(m),
            Principal::User(_) => None,
        }
    }

    /// The token's scopes.
    pub fn scopes(&self) -> Names<'_> {
        match self {
            Principal::User(u) => u.scopes(),
            Principal::Machine(m) => m.scopes(),
        }
    }

    /// The user's groups; a machine has none.
    pub fn groups(&self) -> Names<'_> {
        match self {
            Principal::User(u) => u.groups(),
            Principal::Machine(_) => Names::new("", &[]),
        }
    }

    /// `exp` in seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        match self {
            Principal::User(u) => u.exp(),
            Principal::Machine(m) => m.exp(),
        }
    }
}

/// The form a user takes in a shared cache (fleet mode): every field, compact names.
#[cfg(feature = "redis")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredUser {
    u: String,
    s: String,
    a: Vec<(String, String)>,
    c: String,
    sc: Vec<String>,
    g: Vec<String>,
    e: i64,
    i: Option<i64>,
    t: Option<i64>,
    j: Option<String>,
    o: Option<String>,
}

#[cfg(feature = "redis")]
impl From<&CognitoUser> for StoredUser {
    fn from(user: &CognitoUser) -> Self {
        let owned = |s: &str| s.to_owned();
        StoredUser {
            u: owned(user.username()),
            s: owned(user.sub()),
            a: user.attributes().map(|(k, v)| (owned(k), owned(v))).collect(),
            c: owned(user.client_id()),
            sc: user.scopes().map(owned).collect(),
            g: user.groups().map(owned).collect(),
            e: user.exp(),
            i: user.iat_secs(),
            t: user.auth_time_secs(),
            j: user.jti().map(owned),
            o: user.origin_jti().map(owned),
        }
    }
}

#[cfg(feature = "redis")]
impl From<StoredUser> for CognitoUser {
    fn from(s: StoredUser) -> Self {
        CognitoUser::from_parts(UserParts {
            username: &s.u,
            sub: &s.s,
            attributes: s.a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            client_id: &s.c,
            scopes: s.sc.iter().map(String::as_str).collect(),
            groups: s.g.iter().map(String::as_str).collect(),
            exp: s.e,
            iat: s.i,
            auth_time: s.t,
            jti: s.j.as_deref(),
            origin_jti: s.o.as_deref(),
        })
    }
}
