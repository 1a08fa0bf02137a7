//! Fleet mode: a Redis second level between the in-process cache and Cognito, and invalidations
//! broadcast to every instance over Redis pub/sub.
//!
//! Redis trouble never takes the app down and never turns into a pass: every operation has a
//! tight timeout, a failure opens a breaker for a few seconds (during which Redis is skipped and
//! adds no latency), and anything that does not decode is a miss.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::clock::unix_ms;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, PushInfo, PushKind};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::OnceCell;

use crate::error::Rejection;
use crate::telemetry::Telemetry;
use crate::token::Claims;
use crate::token::TokenKey;
use crate::user::{CognitoUser, Profile};

/// Fleet-mode settings, from [`VerifierBuilder::redis`](crate::VerifierBuilder::redis).
#[derive(Clone)]
pub(crate) struct FleetSettings {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) breaker: Duration,
    /// The fleet's secret: values carry a MAC over their key and content.
    pub(crate) secret: Option<Vec<u8>>,
    /// A private CA's certificates (PEM), for `rediss://`.
    pub(crate) ca_pem: Option<Vec<u8>>,
}

/// The invalidation generations a verdict was made under: the fleet's (`invalidate_all`), the
/// user's (`invalidate_user`, `invalidate_token`) and the session's (`invalidate_session`). A
/// shared verdict is served only while all three are still the ones it was made under, so a
/// verdict whose `GetUser` call was in flight during an invalidation can never be served after
/// it, whenever it lands in Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Generations {
    fleet: u64,
    user: u64,
    session: u64,
}

/// What a lookup in Redis found.
#[derive(Default)]
pub(crate) struct Lookup {
    /// A verdict made for this token.
    pub(crate) shared: Option<Shared>,
    /// The generations to write back under (none when Redis could not be read).
    pub(crate) generations: Option<Generations>,
    /// The user's watermark (`revoke_user`), if any.
    pub(crate) watermark: Option<i64>,
}

/// What Redis holds for a token, once checked against the token's own claims.
pub(crate) enum Shared {
    /// A user's profile, and until when (Unix ms) the verdict may be served.
    User(Profile, u64),
    Rejected(Rejection),
}

/// A shared verdict as stored. A positive one names the token it was made for (`sub`, username,
/// `client_id`, `exp`, `jti`): it is served only to a token whose verified claims say the same,
/// and only the profile (username and attributes) is taken from it. Groups and scopes always
/// come from the token.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    /// Format version.
    v: u8,
    /// Until when the verdict may be served, Unix milliseconds.
    until: u64,
    /// A positive verdict's generations.
    #[serde(default)]
    g: Option<Generations>,
    #[serde(default)]
    user: Option<StoredUser>,
    #[serde(default)]
    rejected: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredUser {
    u: String,
    s: String,
    a: Vec<(String, String)>,
    c: String,
    e: i64,
    j: Option<String>,
}

impl StoredUser {
    fn new(user: &CognitoUser) -> Self {
        let owned = |s: &str| s.to_owned();
        StoredUser {
            u: owned(user.username()),
            s: owned(user.sub()),
            a: user.attributes().map(|(k, v)| (owned(k), owned(v))).collect(),
            c: owned(user.client_id()),
            e: user.exp(),
            j: user.jti().map(owned),
        }
    }

    /// Whether this verdict was made for the token whose claims these are.
    fn made_for(&self, claims: &Claims) -> bool {
        self.s == claims.sub
            && claims.username.as_deref() == Some(self.u.as_str())
            && claims.client_id.as_deref() == Some(self.c.as_str())
            && self.e == claims.exp
            && self.j == claims.jti
    }
}

/// Format version of [`Stored`]; values of any other version are misses.
const VERSION: u8 = 3;

/// The longest a connection may take to set up at `hydrate` (the request path allows a few
/// operation timeouts).
const CONNECT_LIMIT: Duration = Duration::from_secs(2);

/// How long a handled event is remembered: EventBridge retries a delivery for up to 24 hours.
#[cfg(feature = "events")]
const EVENT_MARK_MS: u64 = 24 * 3600 * 1000;

/// An invalidation, as broadcast.
pub(crate) enum Message {
    /// A token, and its user's `sub`.
    Token(TokenKey, Option<String>),
    User(String),
    Session(String),
    /// `revoke_user`: the user's tokens issued before the instant (Unix seconds) are refused.
    Watermark(String, i64),
    All,
}

/// The MAC (hex) of a watermark, so that a forged broadcast cannot refuse anyone's tokens.
fn watermark_tag(key: &aws_lc_rs::hmac::Key, sub: &str, at: i64) -> String {
    let tag = aws_lc_rs::hmac::sign(key, format!("w\n{at}\n{sub}").as_bytes());
    hex(tag.as_ref().try_into().unwrap_or(&[0u8; 32]))
}

/// A watermark broadcast, `w:{at}:{tag or -}:{sub}`, if it is well formed and (with a fleet
/// secret) genuine.
fn parse_watermark(rest: &str, mac: Option<&aws_lc_rs::hmac::Key>) -> Option<Message> {
    let (at, rest) = rest.split_once(':')?;
    let (tag, sub) = rest.split_once(':')?;
    let at: i64 = at.parse().ok()?;
    if let Some(key) = mac {
        let expected = unhex(tag)?;
        aws_lc_rs::hmac::verify(key, format!("w\n{at}\n{sub}").as_bytes(), &expected).ok()?;
    }
    Some(Message::Watermark(sub.to_owned(), at))
}

/// Whether a Redis error is about what a key holds (a wrong type, a value that is not a number)
/// rather than about Redis being reachable.
fn data_error(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.code() == Some("WRONGTYPE")
        || e.kind() == redis::ErrorKind::UnexpectedReturnType
        || text.contains("WRONGTYPE")
        || text.contains("not an integer")
}

/// The connection: one node, or a cluster (detected from the node the URL names).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// The command that broadcasts on the invalidation channel: sharded pub/sub in a cluster.
    fn publish(&self, channel: &str, message: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(match self {
            Conn::Single(_) => "PUBLISH",
            Conn::Cluster(_) => "SPUBLISH",
        });
        cmd.arg(channel).arg(message);
        cmd
    }
}

/// Fleet mode's Redis: cheap to clone (one reference count).
#[derive(Clone)]
pub(crate) struct Fleet(Arc<FleetInner>);

pub(crate) struct FleetInner {
    settings: FleetSettings,
    client: redis::Client,
    conn: OnceCell<Conn>,
    /// Whether the URL names a node of a cluster, once asked.
    cluster: OnceCell<bool>,
    down_until: Mutex<Option<Instant>>,
    listening: AtomicBool,
    /// Whether the invalidation channel is subscribed to.
    subscribed: tokio::sync::watch::Sender<bool>,
    /// With a fleet secret: the MAC key of the values.
    mac: Option<aws_lc_rs::hmac::Key>,
    errors: metrics::Counter,
    breaker_open: metrics::Gauge,
    /// When a value that does not belong to its token was last reported, Unix seconds.
    mismatch_reported: AtomicU64,
}

impl std::ops::Deref for Fleet {
    type Target = FleetInner;

    fn deref(&self) -> &FleetInner {
        &self.0
    }
}

fn hex(key: &TokenKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<TokenKey> {
    let mut key = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// A generation as read (absent: 0).
fn generation(raw: Option<String>) -> u64 {
    raw.and_then(|g| g.parse().ok()).unwrap_or(0)
}

impl Fleet {
    pub(crate) fn new(settings: FleetSettings, telemetry: &Telemetry) -> Result<Self, String> {
        let client = match &settings.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                settings.url.as_str(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
            None => redis::Client::open(settings.url.as_str()),
        }
        .map_err(|e| e.to_string())?;
        let mac =
            settings.secret.as_deref().map(|s| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, s));
        if mac.is_none() {
            tracing::warn!(
                "fleet mode without a secret (redis_secret, REDIS_SECRET): what is in Redis is trusted as \
                 written, so anyone who can write to it can forge shared verdicts and broadcasts (drop \
                 verdicts, change a user's attributes, refuse a user until the mark expires); set a secret \
                 of 32 bytes or more on every instance"
            );
        }
        Ok(Fleet(Arc::new(FleetInner {
            settings,
            client,
            conn: OnceCell::new(),
            cluster: OnceCell::new(),
            down_until: Mutex::new(None),
            listening: AtomicBool::new(false),
            subscribed: tokio::sync::watch::Sender::new(false),
            mac,
            errors: telemetry.redis_errors.clone(),
            breaker_open: telemetry.redis_breaker_open.clone(),
            mismatch_reported: AtomicU64::new(0),
        })))
    }

    // The keys. Everything of one user lives in the slot of `{sub}` (a hash tag), so that a
    // lookup, a write and an invalidation are each one round trip to one node of a cluster, and
    // the users spread over the slots.

    fn entry_key(&self, sub: &str, key: &TokenKey) -> String {
        format!("{}t:{{{sub}}}:{}", self.settings.prefix, hex(key))
    }

    fn user_generation(&self, sub: &str) -> String {
        format!("{}g:{{{sub}}}", self.settings.prefix)
    }

    fn session_generation(&self, sub: &str, origin_jti: &str) -> String {
        format!("{}q:{{{sub}}}:{origin_jti}", self.settings.prefix)
    }

    fn user_index(&self, sub: &str) -> String {
        format!("{}u:{{{sub}}}", self.settings.prefix)
    }

    fn session_index(&self, sub: &str, origin_jti: &str) -> String {
        format!("{}o:{{{sub}}}:{origin_jti}", self.settings.prefix)
    }

    fn watermark_key(&self, sub: &str) -> String {
        format!("{}w:{{{sub}}}", self.settings.prefix)
    }

    /// A username's `sub`, for `invalidate_user(username)`.
    fn username_alias(&self, username: &str) -> String {
        format!("{}a:{{{username}}}", self.settings.prefix)
    }

    /// A session's `sub`, for `invalidate_session(origin_jti)`.
    fn session_alias(&self, origin_jti: &str) -> String {
        format!("{}s:{{{origin_jti}}}", self.settings.prefix)
    }

    /// A CloudTrail event about `sub` that an instance has handled.
    #[cfg(feature = "events")]
    fn event_key(&self, sub: &str, event_id: &str) -> String {
        format!("{}e:{{{sub}}}:{event_id}", self.settings.prefix)
    }

    fn fleet_generation(&self) -> String {
        format!("{}gen", self.settings.prefix)
    }

    fn population_key(&self, window: u64) -> String {
        format!("{}p:{{population}}:{window}", self.settings.prefix)
    }

    fn channel(&self) -> String {
        format!("{}invalidate", self.settings.prefix)
    }

    fn trip(&self, what: &str, error: &dyn std::fmt::Display) {
        self.errors.increment(1);
        self.breaker_open.set(1.0);
        tracing::warn!(what, %error, breaker_secs = self.settings.breaker.as_secs(), "Redis failed; using the local cache and Cognito only");
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + self.settings.breaker);
    }

    /// A cluster client for the URL's node, pushing to `push` (RESP3) when given.
    fn cluster_client(&self, push: Option<UnboundedSender<PushInfo>>) -> redis::RedisResult<ClusterClient> {
        let timeout = self.settings.timeout;
        let mut builder = ClusterClientBuilder::new(vec![self.settings.url.as_str()])
            .connection_timeout(timeout * 2)
            .response_timeout(timeout)
            .retries(2);
        if let Some(pem) = &self.settings.ca_pem {
            builder =
                builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) });
        }
        if let Some(push) = push {
            builder = builder.use_protocol(redis::ProtocolVersion::RESP3).push_sender(push);
        }
        builder.build()
    }

    /// Whether the URL names a node of a cluster: asked once (`CLUSTER SLOTS`), by whichever
    /// connects first.
    async fn is_cluster(&self) -> redis::RedisResult<bool> {
        self.cluster
            .get_or_try_init(|| async {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.settings.timeout * 2))
                    .set_response_timeout(Some(self.settings.timeout * 2));
                let mut probe = self.client.get_multiplexed_async_connection_with_config(&config).await?;
                match redis::cmd("CLUSTER").arg("SLOTS").query_async::<redis::Value>(&mut probe).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.to_string().contains("cluster support disabled") => Ok(false),
                    // An ACL user without `cluster|slots` cannot use a cluster anyway.
                    Err(e) if e.code() == Some("NOPERM") => {
                        tracing::warn!("the Redis user may not run CLUSTER SLOTS: taking Redis for a single node (see the README's ACL line)");
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
            .await
            .copied()
    }

    /// Connects now, within a second or two rather than the request path's few operation
    /// timeouts (a TLS handshake on a busy machine takes longer than those): called by
    /// `hydrate`, so that the first requests neither connect nor trip the breaker doing it.
    pub(crate) async fn connect(&self) -> bool {
        self.connection(CONNECT_LIMIT).await.is_some()
    }

    /// The connection, unless the breaker is open. Connects lazily, within the timeout.
    async fn conn(&self) -> Option<Conn> {
        self.connection(self.settings.timeout * 4).await
    }

    /// The connection, unless the breaker is open; connecting takes at most `limit`.
    async fn connection(&self, limit: Duration) -> Option<Conn> {
        if let Some(until) = *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) {
            if Instant::now() < until {
                return None;
            }
            self.breaker_open.set(0.0);
        }
        let connect = self.conn.get_or_try_init(|| async {
            if self.is_cluster().await? {
                let conn = self.cluster_client(None)?.get_async_connection().await?;
                tracing::info!("fleet mode on a Redis cluster");
                return Ok(Conn::Cluster(conn));
            }
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_LIMIT))
                .set_response_timeout(Some(self.settings.timeout))
                .set_number_of_retries(1);
            redis::RedisResult::Ok(Conn::Single(
                ConnectionManager::new_with_config(self.client.clone(), config).await?,
            ))
        });
        match tokio::time::timeout(limit, connect).await {
            Ok(Ok(conn)) => Some(conn.clone()),
            Ok(Err(e)) => {
                self.trip("connect", &e);
                None
            }
            Err(_) => {
                self.trip("connect", &"timed out");
                None
            }
        }
    }

    /// Runs one Redis operation within the timeout; a failure trips the breaker. A connection
    /// lost since the last use (Redis restarted) is retried once: the manager reconnects.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Option<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        let attempt = async {
            match op(conn.clone()).await {
                Err(e) if e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() => {
                    op(conn).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.settings.timeout, attempt).await {
            Ok(Ok(v)) => Some(v),
            // What a key holds, not whether Redis answers: a miss for this operation, and the
            // breaker stays closed for every other (a writer's junk must not silence the fleet's
            // broadcasts).
            Ok(Err(e)) if data_error(&e) => {
                self.errors.increment(1);
                tracing::warn!(operation = what, error = %e, "a Redis key holds what the fleet did not write");
                None
            }
            Ok(Err(e)) => {
                self.trip(what, &e);
                None
            }
            Err(_) => {
                self.trip(what, &"timed out");
                None
            }
        }
    }

    /// The shared verdict for a token, if there is one made for it, and the generations to
    /// write back under (none when Redis could not be read). Two reads at once: the user's slot
    /// (verdict, generations, watermark), and the fleet's generation.
    pub(crate) async fn get(&self, key: &TokenKey, claims: &Claims) -> Lookup {
        let sub = claims.sub.as_str();
        let name = self.entry_key(sub, key);
        let user = self.user_generation(sub);
        // Without a session, the user's generation stands for it.
        let session = match &claims.origin_jti {
            Some(origin) => self.session_generation(sub, origin),
            None => user.clone(),
        };
        let (mark, fleet) = (self.watermark_key(sub), self.fleet_generation());
        type Read = (Option<Vec<u8>>, Option<String>, Option<String>, Option<Vec<u8>>);
        let read: Option<(Read, Option<String>)> = self
            .run("get", |c| {
                let mut pipe = redis::pipe();
                pipe.get(&name).get(&user).get(&session).get(&mark);
                let fleet = redis::cmd("GET").arg(&fleet).clone();
                async move {
                    match c {
                        // One node: one round trip.
                        Conn::Single(mut c) => {
                            let (a, b, c2, d, e) = pipe.add_command(fleet).query_async(&mut c).await?;
                            Ok(((a, b, c2, d), e))
                        }
                        // A cluster: the user's slot and the fleet's, at once.
                        Conn::Cluster(c) => {
                            let (mut c1, mut c2) = (c.clone(), c);
                            let (ours, fleets) =
                                tokio::join!(pipe.query_async(&mut c1), fleet.query_async(&mut c2));
                            Ok((ours?, fleets?))
                        }
                    }
                }
            })
            .await;
        let Some(((raw, user, session, watermark), fleet)) = read else { return Lookup::default() };
        let generations =
            Generations { fleet: generation(fleet), user: generation(user), session: generation(session) };
        let watermark = watermark.and_then(|raw| {
            let at = self.open(&mark, &raw).and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
            if at.is_none() {
                self.report("a watermark in Redis does not carry this fleet's MAC; ignoring it");
            }
            at
        });
        Lookup {
            shared: raw.and_then(|raw| self.decode(&name, &raw, claims, &generations)),
            generations: Some(generations),
            watermark,
        }
    }

    /// The value to store under `name`: with a fleet secret, `{mac}.{json}` where the MAC
    /// (HMAC-SHA256, hex) covers the name and the JSON, so that a value is good only under
    /// the key it was written for, and only if written by an instance holding the secret.
    fn seal(&self, name: &str, json: Vec<u8>) -> Vec<u8> {
        match &self.mac {
            Some(key) => {
                let tag = aws_lc_rs::hmac::sign(key, &[name.as_bytes(), b"\n", &json].concat());
                let mut sealed = hex(tag.as_ref().try_into().unwrap_or(&[0u8; 32])).into_bytes();
                sealed.push(b'.');
                sealed.extend_from_slice(&json);
                sealed
            }
            None => json,
        }
    }

    /// The JSON of a value read under `name`, if its MAC holds (with a fleet secret).
    fn open<'a>(&self, name: &str, raw: &'a [u8]) -> Option<&'a [u8]> {
        let Some(key) = &self.mac else { return Some(raw) };
        let (tag, json) = (raw.get(..64)?, raw.get(65..)?);
        let tag = unhex(std::str::from_utf8(tag).ok()?)?;
        let genuine = raw.get(64) == Some(&b'.')
            && aws_lc_rs::hmac::verify(key, &[name.as_bytes(), b"\n", json].concat(), &tag).is_ok();
        genuine.then_some(json)
    }

    fn decode(&self, name: &str, raw: &[u8], claims: &Claims, now: &Generations) -> Option<Shared> {
        let Some(raw) = self.open(name, raw) else {
            self.report("a value in Redis does not carry this fleet's MAC; treating it as a miss");
            return None;
        };
        let Ok(stored) = serde_json::from_slice::<Stored>(raw) else {
            self.report("a value in Redis does not decode; treating it as a miss");
            return None;
        };
        if stored.v != VERSION || stored.until <= unix_ms() {
            return None;
        }
        match (stored.user, stored.rejected) {
            (Some(user), None) => {
                if !user.made_for(claims) {
                    self.report("a verdict in Redis was not made for the token it is stored under; treating it as a miss");
                    return None;
                }
                // Made before an invalidation that has run since: a miss.
                if stored.g.as_ref() != Some(now) {
                    return None;
                }
                let attributes = user.a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let profile = Profile::new(&user.u, &user.s, attributes);
                (profile.sub() == claims.sub && (claims.exp as u64).saturating_mul(1000) > unix_ms())
                    .then_some(Shared::User(profile, stored.until))
            }
            (None, Some(code)) => {
                Rejection::ALL.iter().find(|r| r.as_str() == code).map(|r| Shared::Rejected(*r))
            }
            _ => None,
        }
    }

    /// Logs a suspicious value at most once a minute: whoever can write to Redis must not be
    /// able to flood the logs.
    fn report(&self, message: &'static str) {
        let now = unix_ms() / 1000;
        let last = self.mismatch_reported.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .mismatch_reported
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(prefix = %self.settings.prefix, "{message}");
        }
    }

    /// Shares a positive verdict until `until_ms` (never past `exp`), stamped with the
    /// generations read before its call: if an invalidation has run since, it is never served.
    pub(crate) async fn put_user(
        &self,
        key: &TokenKey,
        user: &CognitoUser,
        until_ms: u64,
        generations: &Generations,
    ) {
        let until = until_ms.min((user.exp().max(0) as u64).saturating_mul(1000));
        let ttl = until.saturating_sub(unix_ms());
        if ttl == 0 {
            return;
        }
        let stored = Stored {
            v: VERSION,
            until,
            g: Some(*generations),
            user: Some(StoredUser::new(user)),
            rejected: None,
        };
        let value = serde_json::to_vec(&stored).expect("serializing a user cannot fail");
        let sub = user.sub();
        let name = self.entry_key(sub, key);
        let value = self.seal(&name, value);
        let mut indexes = vec![self.user_index(sub)];
        indexes.extend(user.origin_jti().map(|o| self.session_index(sub, o)));
        // Where invalidations by username or by session find the user's slot.
        let mut aliases = Vec::new();
        if user.username() != sub {
            aliases.push(self.username_alias(user.username()));
        }
        aliases.extend(user.origin_jti().map(|o| self.session_alias(o)));
        self.run("set", |mut c| {
            let mut pipe = redis::pipe();
            pipe.cmd("SET").arg(&name).arg(&value).arg("PX").arg(ttl).ignore();
            for index in &indexes {
                pipe.sadd(index, &name).ignore();
                pipe.cmd("PEXPIRE").arg(index).arg(ttl).arg("GT").ignore();
                pipe.cmd("PEXPIRE").arg(index).arg(ttl).arg("NX").ignore();
            }
            let aliases: Vec<redis::Cmd> = aliases
                .iter()
                .map(|alias| redis::cmd("SET").arg(alias).arg(sub).arg("PX").arg(ttl).clone())
                .collect();
            async move {
                pipe.query_async::<()>(&mut c).await?;
                for alias in aliases {
                    alias.query_async::<()>(&mut c).await?;
                }
                Ok(())
            }
        })
        .await;
    }

    /// Shares a rejection for `ttl`.
    pub(crate) async fn put_rejection(&self, key: &TokenKey, sub: &str, rejection: Rejection, ttl: Duration) {
        let until = unix_ms() + ttl.as_millis() as u64;
        let stored =
            Stored { v: VERSION, until, g: None, user: None, rejected: Some(rejection.as_str().into()) };
        let value = serde_json::to_vec(&stored).expect("serializing a rejection cannot fail");
        let name = self.entry_key(sub, key);
        let value = self.seal(&name, value);
        let ttl_ms = ttl.as_millis() as u64;
        self.run("set", |mut c| {
            let set = redis::cmd("SET").arg(&name).arg(&value).arg("PX").arg(ttl_ms.max(1)).clone();
            async move { set.query_async::<()>(&mut c).await }
        })
        .await;
    }

    /// Broadcasts `message` on the invalidation channel.
    async fn broadcast(&self, message: String) {
        let channel = self.channel();
        self.run("publish", |mut c| {
            let publish = c.publish(&channel, &message);
            async move { publish.query_async::<()>(&mut c).await }
        })
        .await;
    }

    /// Removes a token's shared verdict (its user's `sub` names its slot) and tells every
    /// instance to drop it.
    pub(crate) async fn invalidate_token(&self, key: &TokenKey, sub: &str) {
        let (generation, name) = (self.user_generation(sub), self.entry_key(sub, key));
        self.run("invalidate", |mut c| {
            let mut pipe = redis::pipe();
            pipe.cmd("INCR").arg(&generation).ignore().del(&name).ignore();
            async move { pipe.query_async::<()>(&mut c).await }
        })
        .await;
        self.broadcast(format!("t:{}:{sub}", hex(key))).await;
    }

    /// Records a watermark for `sub` in Redis (for instances that start or resubscribe later)
    /// and broadcasts it, authenticated with the fleet secret when there is one.
    pub(crate) async fn revoke_user(&self, sub: &str, at: i64) {
        let name = self.watermark_key(sub);
        let value = self.seal(&name, at.to_string().into_bytes());
        let tag = self.mac.as_ref().map_or_else(|| "-".to_owned(), |k| watermark_tag(k, sub, at));
        let life_ms = 24 * 3600 * 1000;
        self.run("revoke", |mut c| {
            let set = redis::cmd("SET").arg(&name).arg(&value).arg("PX").arg(life_ms).clone();
            async move { set.query_async::<()>(&mut c).await }
        })
        .await;
        self.broadcast(format!("w:{at}:{tag}:{sub}")).await;
    }

    /// Whether an instance has handled this event about `sub` (CloudTrail's `eventID`). `false`
    /// when Redis cannot say or the mark lacks the fleet's MAC: the event is handled again,
    /// which costs calls, never a revocation.
    #[cfg(feature = "events")]
    pub(crate) async fn event_handled(&self, sub: &str, event_id: &str) -> bool {
        let name = self.event_key(sub, event_id);
        let raw: Option<Option<Vec<u8>>> = self
            .run("event", |mut c| {
                let get = redis::cmd("GET").arg(&name).clone();
                async move { get.query_async(&mut c).await }
            })
            .await;
        raw.flatten().is_some_and(|raw| self.open(&name, &raw).is_some())
    }

    /// Marks an event handled for a day, as long as EventBridge may deliver it again.
    #[cfg(feature = "events")]
    pub(crate) async fn event_done(&self, sub: &str, event_id: &str) {
        let name = self.event_key(sub, event_id);
        let value = self.seal(&name, b"1".to_vec());
        self.run("event", |mut c| {
            let set = redis::cmd("SET").arg(&name).arg(&value).arg("PX").arg(EVENT_MARK_MS).clone();
            async move { set.query_async::<()>(&mut c).await }
        })
        .await;
    }

    /// Adds the tokens this instance first saw since the last call to the fleet's count of the
    /// window `window` (a HyperLogLog per 5 s window, kept 30 s), and reads the distinct tokens
    /// of this window and the previous one, every instance's.
    pub(crate) async fn count_population(&self, hashes: &[u64], window: u64) -> Option<u64> {
        let (current, previous) =
            (self.population_key(window), self.population_key(window.saturating_sub(1)));
        for chunk in hashes.chunks(4096) {
            let elements: Vec<Vec<u8>> = chunk.iter().map(|h| h.to_le_bytes().to_vec()).collect();
            self.run("population", |mut c| {
                let mut pipe = redis::pipe();
                pipe.cmd("PFADD").arg(&current).arg(&elements).ignore().pexpire(&current, 30_000).ignore();
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await?;
        }
        self.run("population", |mut c| {
            let count = redis::cmd("PFCOUNT").arg(&current).arg(&previous).clone();
            async move { count.query_async::<u64>(&mut c).await }
        })
        .await
    }

    /// The `sub`s an id may stand for: itself, and the user whose username it is.
    async fn subs_of(&self, id: &str) -> Vec<String> {
        let alias = self.username_alias(id);
        let sub: Option<Option<String>> = self
            .run("alias", |mut c| {
                let get = redis::cmd("GET").arg(&alias).clone();
                async move { get.query_async(&mut c).await }
            })
            .await;
        std::iter::once(id.to_owned()).chain(sub.flatten().filter(|s| s != id)).collect()
    }

    /// Removes a user's shared verdicts (by `sub` or username) and tells every instance to
    /// drop theirs.
    pub(crate) async fn invalidate_user(&self, id: &str) {
        for sub in self.subs_of(id).await {
            self.invalidate_indexed(self.user_generation(&sub), self.user_index(&sub)).await;
        }
        self.broadcast(format!("u:{id}")).await;
    }

    /// Removes a session's shared verdicts and tells every instance to drop theirs. Its user's
    /// `sub`, when not known, is read from the session's alias.
    pub(crate) async fn invalidate_session(&self, origin_jti: &str, sub: Option<&str>) {
        let sub = match sub {
            Some(sub) => Some(sub.to_owned()),
            None => {
                let alias = self.session_alias(origin_jti);
                self.run("alias", |mut c| {
                    let get = redis::cmd("GET").arg(&alias).clone();
                    async move { get.query_async::<Option<String>>(&mut c).await }
                })
                .await
                .flatten()
            }
        };
        if let Some(sub) = sub {
            let generation = self.session_generation(&sub, origin_jti);
            self.invalidate_indexed(generation, self.session_index(&sub, origin_jti)).await;
        }
        self.broadcast(format!("s:{origin_jti}")).await;
    }

    /// Moves a generation on, then removes the shared verdicts an index names (one slot).
    async fn invalidate_indexed(&self, generation: String, index: String) {
        self.run("invalidate", |mut c| {
            let (generation, index) = (generation.clone(), index.clone());
            async move {
                // First the generation, so that no verdict of a load already in flight can be
                // served once it lands. INCR, not INCRBY: the ACL line allows exactly the
                // commands used.
                redis::cmd("INCR").arg(&generation).query_async::<()>(&mut c).await?;
                let names: Vec<String> = c.smembers(&index).await?;
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.del(name).ignore();
                }
                pipe.del(&index).ignore().query_async::<()>(&mut c).await
            }
        })
        .await;
    }

    /// Makes every shared verdict a miss (the fleet's generation moves on; they expire on their
    /// own) and tells every instance to drop theirs: O(1), whatever the number of entries.
    pub(crate) async fn invalidate_all(&self) {
        let generation = self.fleet_generation();
        self.run("invalidate", |mut c| {
            let incr = redis::cmd("INCR").arg(&generation).clone();
            async move { incr.query_async::<()>(&mut c).await }
        })
        .await;
        self.broadcast("a".to_owned()).await;
    }

    /// Whether the breaker is open now (Redis skipped after a failure).
    pub(crate) fn breaker_open(&self) -> bool {
        self.down_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| Instant::now() < t)
    }

    /// Waits, at most `limit`, until the invalidation channel is subscribed to.
    pub(crate) async fn subscribed(&self, limit: Duration) -> bool {
        let mut rx = self.subscribed.subscribe();
        let subscribed = matches!(tokio::time::timeout(limit, rx.wait_for(|s| *s)).await, Ok(Ok(_)));
        subscribed
    }

    /// A broadcast's payload, if it is one of ours (watermarks checked against the secret).
    fn message(&self, payload: &str) -> Option<Message> {
        match payload.split_once(':') {
            Some(("t", rest)) => {
                let (key, sub) = rest.split_once(':').map_or((rest, None), |(k, s)| (k, Some(s.to_owned())));
                unhex(key).map(|key| Message::Token(key, sub))
            }
            Some(("u", id)) => Some(Message::User(id.to_owned())),
            Some(("s", id)) => Some(Message::Session(id.to_owned())),
            Some(("w", rest)) => parse_watermark(rest, self.mac.as_ref()),
            _ if payload == "a" => Some(Message::All),
            _ => None,
        }
    }

    /// Starts, once, the task that applies broadcast invalidations to this instance's cache.
    ///
    /// It holds the verifier weakly and ends when the verifier is dropped. Each time it
    /// (re)subscribes it drops the whole local cache, which may hold verdicts whose invalidation
    /// was broadcast before the subscription was in place. On one node, classic pub/sub; on a
    /// cluster, sharded pub/sub (`SSUBSCRIBE`) on the channel's slot, which the client follows
    /// through failovers and resubscribes.
    pub(crate) fn listen<V, F, Fut>(&self, lifecycle: &crate::lifecycle::Lifecycle, target: Weak<V>, apply: F)
    where
        V: Send + Sync + 'static,
        F: Fn(Arc<V>, Message) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        if tokio::runtime::Handle::try_current().is_err() || self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let fleet = self.clone();
        lifecycle.spawn(async move {
            loop {
                if target.strong_count() == 0 {
                    return;
                }
                let ended = match fleet.is_cluster().await {
                    Ok(false) => fleet.listen_single(&target, &apply).await,
                    Ok(true) => fleet.listen_cluster(&target, &apply).await,
                    Err(_) => false,
                };
                fleet.subscribed.send_replace(false);
                if ended {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Classic pub/sub on one node, until the subscription is lost (false) or the verifier is
    /// dropped (true).
    async fn listen_single<V, F, Fut>(&self, target: &Weak<V>, apply: &F) -> bool
    where
        F: Fn(Arc<V>, Message) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let channel = self.channel();
        let subscribed = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let Ok(Ok(mut pubsub)) = tokio::time::timeout(self.settings.timeout * 20, subscribed).await else {
            return false;
        };
        match target.upgrade() {
            Some(t) => apply(t, Message::All).await,
            None => return true,
        }
        self.subscribed.send_replace(true);
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else { continue };
            match (self.message(&payload), target.upgrade()) {
                (Some(m), Some(t)) => apply(t, m).await,
                (_, None) => return true,
                (None, _) => {}
            }
        }
        tracing::warn!("lost the Redis invalidation channel; resubscribing");
        false
    }

    /// Sharded pub/sub on a cluster, until the connection ends (false) or the verifier is
    /// dropped (true).
    async fn listen_cluster<V, F, Fut>(&self, target: &Weak<V>, apply: &F) -> bool
    where
        F: Fn(Arc<V>, Message) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let subscribed = async {
            let mut conn = self.cluster_client(Some(tx))?.get_async_connection().await?;
            conn.ssubscribe(self.channel()).await?;
            redis::RedisResult::Ok(conn)
        };
        let _conn = match tokio::time::timeout(self.settings.timeout * 20, subscribed).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "subscribing to the Redis invalidation channel");
                return false;
            }
            Err(_) => return false,
        };
        while let Some(push) = rx.recv().await {
            let Some(t) = target.upgrade() else { return true };
            match push.kind {
                // (Re)subscribed, first or after a failover: what is cached may have missed
                // an invalidation.
                PushKind::SSubscribe => {
                    apply(t, Message::All).await;
                    self.subscribed.send_replace(true);
                }
                PushKind::SMessage => {
                    let payload =
                        push.data.get(1).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
                    if let Some(m) = payload.and_then(|p| self.message(&p)) {
                        apply(t, m).await;
                    }
                }
                PushKind::SUnsubscribe | PushKind::Disconnection => {
                    self.subscribed.send_replace(false);
                }
                _ => {}
            }
        }
        false
    }
}
