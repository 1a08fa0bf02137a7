//! The principal: who Cognito says the token belongs to.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::token::Claims;

/// A user that Cognito vouched for, with their attributes and the token's trusted claims.
///
/// Cheap to clone (one reference count). Its `Debug` output names the user and the token's
/// claims, never the token.
#[derive(Clone)]
pub struct CognitoUser(Arc<Inner>);

struct Inner {
    username: String,
    sub: String,
    attributes: BTreeMap<String, String>,
    client_id: String,
    scopes: Vec<String>,
    groups: Vec<String>,
    exp: i64,
    iat: Option<i64>,
    auth_time: Option<i64>,
    jti: Option<String>,
    origin_jti: Option<String>,
}

impl CognitoUser {
    /// Builds the principal from `GetUser`'s answer and the token's checked claims.
    pub(crate) fn new(username: String, attributes: BTreeMap<String, String>, claims: Claims) -> Self {
        // Cognito's own `sub` attribute wins over the claim; they agree for any genuine token.
        let sub = attributes.get("sub").cloned().unwrap_or(claims.sub);
        let scopes =
            claims.scope.as_deref().unwrap_or("").split_ascii_whitespace().map(str::to_owned).collect();
        CognitoUser(Arc::new(Inner {
            username,
            sub,
            attributes,
            client_id: claims.client_id.unwrap_or_default(),
            scopes,
            groups: claims.groups,
            exp: claims.exp,
            iat: claims.iat,
            auth_time: claims.auth_time,
            jti: claims.jti,
            origin_jti: claims.origin_jti,
        }))
    }

    /// The user name (`Username` in Cognito; a UUID in pools that sign in by email).
    pub fn username(&self) -> &str {
        &self.0.username
    }

    /// The user's immutable id, the `sub` attribute.
    pub fn sub(&self) -> &str {
        &self.0.sub
    }

    /// Every attribute `GetUser` returned, `custom:` ones included, by name.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.0.attributes
    }

    /// One attribute by its full name, such as `email` or `custom:tenant`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.0.attributes.get(name).map(String::as_str)
    }

    /// A custom attribute by its name without the `custom:` prefix.
    pub fn custom_attribute(&self, name: &str) -> Option<&str> {
        self.0
            .attributes
            .iter()
            .find(|(k, _)| k.strip_prefix("custom:") == Some(name))
            .map(|(_, v)| v.as_str())
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
        &self.0.client_id
    }

    /// The token's OAuth scopes (`scope`).
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.iter().any(|s| s == scope)
    }

    /// The user's groups at sign-in (`cognito:groups`).
    pub fn groups(&self) -> &[String] {
        &self.0.groups
    }

    /// Whether the user was in `group` at sign-in.
    pub fn in_group(&self, group: &str) -> bool {
        self.0.groups.iter().any(|g| g == group)
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
        self.0.jti.as_deref()
    }

    /// The id shared by every token of one sign-in (`origin_jti`); revoked together.
    pub fn origin_jti(&self) -> Option<&str> {
        self.0.origin_jti.as_deref()
    }
}

fn unix_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

impl fmt::Debug for CognitoUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.0;
        f.debug_struct("CognitoUser")
            .field("username", &i.username)
            .field("sub", &i.sub)
            .field("attributes", &i.attributes.keys().collect::<Vec<_>>())
            .field("client_id", &i.client_id)
            .field("scopes", &i.scopes)
            .field("groups", &i.groups)
            .field("exp", &i.exp)
            .field("jti", &i.jti)
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
    client_id: String,
    scopes: Vec<String>,
    exp: i64,
    jti: Option<String>,
}

impl MachineClient {
    pub(crate) fn new(claims: Claims) -> Self {
        let scopes = claims.scopes().map(str::to_owned).collect();
        MachineClient(Arc::new(MachineInner {
            client_id: claims.client_id.unwrap_or_default(),
            scopes,
            exp: claims.exp,
            jti: claims.jti,
        }))
    }

    /// The app client id (`client_id`, also the token's `sub`).
    pub fn client_id(&self) -> &str {
        &self.0.client_id
    }

    /// The token's scopes, typically custom resource-server scopes such as `orders/read`.
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.iter().any(|s| s == scope)
    }

    /// `exp` in seconds since the Unix epoch.
    pub fn exp(&self) -> i64 {
        self.0.exp
    }

    /// The token's unique id (`jti`).
    pub fn jti(&self) -> Option<&str> {
        self.0.jti.as_deref()
    }
}

impl fmt::Debug for MachineClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineClient")
            .field("client_id", &self.0.client_id)
            .field("scopes", &self.0.scopes)
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
    pub fn scopes(&self) -> &[String] {
        match self {
            Principal::User(u) => u.scopes(),
            Principal::Machine(m) => m.scopes(),
        }
    }

    /// The user's groups; a machine has none.
    pub fn groups(&self) -> &[String] {
        match self {
            Principal::User(u) => u.groups(),
            Principal::Machine(_) => &[],
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
    a: BTreeMap<String, String>,
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
        let i = &user.0;
        StoredUser {
            u: i.username.clone(),
            s: i.sub.clone(),
            a: i.attributes.clone(),
            c: i.client_id.clone(),
            sc: i.scopes.clone(),
            g: i.groups.clone(),
            e: i.exp,
            i: i.iat,
            t: i.auth_time,
            j: i.jti.clone(),
            o: i.origin_jti.clone(),
        }
    }
}

#[cfg(feature = "redis")]
impl From<StoredUser> for CognitoUser {
    fn from(s: StoredUser) -> Self {
        CognitoUser(Arc::new(Inner {
            username: s.u,
            sub: s.s,
            attributes: s.a,
            client_id: s.c,
            scopes: s.sc,
            groups: s.g,
            exp: s.e,
            iat: s.i,
            auth_time: s.t,
            jti: s.j,
            origin_jti: s.o,
        }))
    }
}
