//! Fleet mode: a Redis second level between the in-process cache and Cognito, and invalidations
//! broadcast to every instance over Redis pub/sub.
//!
//! Redis trouble never takes the app down and never turns into a pass: every operation has a
//! tight timeout, a failure opens a breaker for a few seconds (during which Redis is skipped and
//! adds no latency), and anything that does not decode is a miss.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
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

/// A lookup's raw answers: the verdict, the generation, the watermark.
type Read = (Option<Vec<u8>>, Option<String>, Option<Vec<u8>>);

/// What a lookup in Redis found.
#[derive(Default)]
pub(crate) struct Lookup {
    /// A verdict made for this token.
    pub(crate) shared: Option<Shared>,
    /// The invalidation generation to write back under (none when Redis could not be read).
    pub(crate) generation: Option<String>,
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
const VERSION: u8 = 2;

/// Writes a positive verdict only if no invalidation ran since the writer read the generation
/// (KEYS: entry, generation, user indexes; ARGV: value, ttl ms, generation read), so that a
/// `GetUser` answer that was in flight during a sign-out cannot put the user back.
const PUT_IF_CURRENT: &str = r"
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2], 'GT')
  redis.call('PEXPIRE', KEYS[i], ARGV[2], 'NX')
end
return 1
";

/// An invalidation, as broadcast.
pub(crate) enum Message {
    Token(TokenKey),
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

pub(crate) struct Fleet {
    settings: FleetSettings,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    down_until: Mutex<Option<Instant>>,
    listening: AtomicBool,
    /// Whether the invalidation channel is subscribed to.
    subscribed: tokio::sync::watch::Sender<bool>,
    put_if_current: redis::Script,
    /// With a fleet secret: the MAC key of the values.
    mac: Option<aws_lc_rs::hmac::Key>,
    errors: metrics::Counter,
    breaker_open: metrics::Gauge,
    /// When a value that does not belong to its token was last reported, Unix seconds.
    mismatch_reported: AtomicU64,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
        Ok(Fleet {
            settings,
            client,
            conn: OnceCell::new(),
            down_until: Mutex::new(None),
            listening: AtomicBool::new(false),
            subscribed: tokio::sync::watch::Sender::new(false),
            put_if_current: redis::Script::new(PUT_IF_CURRENT),
            mac,
            errors: telemetry.redis_errors.clone(),
            breaker_open: telemetry.redis_breaker_open.clone(),
            mismatch_reported: AtomicU64::new(0),
        })
    }

    fn entry_key(&self, key: &TokenKey) -> String {
        format!("{}t:{}", self.settings.prefix, hex(key))
    }

    fn user_index(&self, id: &str) -> String {
        format!("{}u:{id}", self.settings.prefix)
    }

    fn session_index(&self, origin_jti: &str) -> String {
        format!("{}o:{origin_jti}", self.settings.prefix)
    }

    fn watermark_key(&self, sub: &str) -> String {
        format!("{}w:{sub}", self.settings.prefix)
    }

    fn generation(&self) -> String {
        format!("{}gen", self.settings.prefix)
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

    /// The connection, unless the breaker is open. Connects lazily, within the timeout.
    async fn conn(&self) -> Option<ConnectionManager> {
        if let Some(until) = *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) {
            if Instant::now() < until {
                return None;
            }
            self.breaker_open.set(0.0);
        }
        let connect = self.conn.get_or_try_init(|| async {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.settings.timeout))
                .set_response_timeout(Some(self.settings.timeout))
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), config).await
        });
        match tokio::time::timeout(self.settings.timeout * 2, connect).await {
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
        F: Fn(ConnectionManager) -> Fut,
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

    /// The shared verdict for a token, if there is one made for it, and the invalidation
    /// generation to write back under (none when Redis could not be read).
    pub(crate) async fn get(&self, key: &TokenKey, claims: &Claims) -> Lookup {
        let (name, generation, mark) =
            (self.entry_key(key), self.generation(), self.watermark_key(&claims.sub));
        let read: Option<Read> = self
            .run("get", |mut c| {
                let (name, generation, mark) = (name.clone(), generation.clone(), mark.clone());
                async move { redis::pipe().get(name).get(generation).get(mark).query_async(&mut c).await }
            })
            .await;
        let Some((raw, generation, watermark)) = read else { return Lookup::default() };
        let watermark = watermark.and_then(|raw| {
            let at = self.open(&mark, &raw).and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
            if at.is_none() {
                self.report("a watermark in Redis does not carry this fleet's MAC; ignoring it");
            }
            at
        });
        Lookup {
            shared: raw.and_then(|raw| self.decode(&name, &raw, claims)),
            generation: Some(generation.unwrap_or_else(|| "0".to_owned())),
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

    fn decode(&self, name: &str, raw: &[u8], claims: &Claims) -> Option<Shared> {
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

    /// Shares a positive verdict until `until_ms` (never past `exp`), unless an invalidation
    /// ran since `generation` was read.
    pub(crate) async fn put_user(&self, key: &TokenKey, user: &CognitoUser, until_ms: u64, generation: &str) {
        let until = until_ms.min((user.exp().max(0) as u64).saturating_mul(1000));
        let ttl = until.saturating_sub(unix_ms());
        if ttl == 0 {
            return;
        }
        let value = serde_json::to_vec(&Stored {
            v: VERSION,
            until,
            user: Some(StoredUser::new(user)),
            rejected: None,
        })
        .expect("serializing a user cannot fail");
        let value = self.seal(&self.entry_key(key), value);
        let mut keys = vec![
            self.entry_key(key),
            self.generation(),
            self.user_index(user.sub()),
            self.user_index(user.username()),
        ];
        keys.extend(user.origin_jti().map(|o| self.session_index(o)));
        self.run("set", |mut c| {
            let mut invocation = self.put_if_current.prepare_invoke();
            invocation.key(&keys[..]).arg(&value).arg(ttl).arg(generation);
            async move { invocation.invoke_async::<i64>(&mut c).await.map(drop) }
        })
        .await;
    }

    /// Shares a rejection for `ttl`.
    pub(crate) async fn put_rejection(&self, key: &TokenKey, rejection: Rejection, ttl: Duration) {
        let until = unix_ms() + ttl.as_millis() as u64;
        let value = serde_json::to_vec(&Stored {
            v: VERSION,
            until,
            user: None,
            rejected: Some(rejection.as_str().into()),
        })
        .expect("serializing a rejection cannot fail");
        let name = self.entry_key(key);
        let value = self.seal(&name, value);
        let ttl_ms = ttl.as_millis() as u64;
        self.run("set", |mut c| {
            let (name, value) = (name.clone(), value.clone());
            async move {
                redis::cmd("SET")
                    .arg(&name)
                    .arg(value)
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await;
    }

    /// Removes a token's shared verdict and tells every instance to drop it.
    pub(crate) async fn invalidate_token(&self, key: &TokenKey) {
        let (name, channel, message) = (self.entry_key(key), self.channel(), format!("t:{}", hex(key)));
        let generation = self.generation();
        self.run("invalidate", |mut c| {
            let (name, channel, message) = (name.clone(), channel.clone(), message.clone());
            let generation = generation.clone();
            async move {
                redis::pipe()
                    .cmd("INCR")
                    .arg(&generation)
                    .ignore()
                    .del(&name)
                    .ignore()
                    .publish(&channel, message)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await;
    }

    /// Records a watermark for `sub` in Redis (for instances that start or resubscribe later)
    /// and broadcasts it, authenticated with the fleet secret when there is one.
    pub(crate) async fn revoke_user(&self, sub: &str, at: i64) {
        let name = self.watermark_key(sub);
        let value = self.seal(&name, at.to_string().into_bytes());
        let tag = self.mac.as_ref().map_or_else(|| "-".to_owned(), |k| watermark_tag(k, sub, at));
        let (channel, message) = (self.channel(), format!("w:{at}:{tag}:{sub}"));
        let life_ms = 24 * 3600 * 1000;
        self.run("revoke", |mut c| {
            let (name, value, channel, message) =
                (name.clone(), value.clone(), channel.clone(), message.clone());
            async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(&name)
                    .arg(value)
                    .arg("PX")
                    .arg(life_ms)
                    .ignore()
                    .publish(&channel, message)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await;
    }

    /// Adds the tokens this instance first saw since the last call to the fleet's count of the
    /// window `window` (a HyperLogLog per 5 s window, kept 30 s), and reads the distinct tokens
    /// of this window and the previous one, every instance's.
    pub(crate) async fn count_population(&self, hashes: &[u64], window: u64) -> Option<u64> {
        let prefix = &self.settings.prefix;
        let (current, previous) =
            (format!("{prefix}n:{window}"), format!("{prefix}n:{}", window.saturating_sub(1)));
        for chunk in hashes.chunks(4096) {
            let elements: Vec<Vec<u8>> = chunk.iter().map(|h| h.to_le_bytes().to_vec()).collect();
            self.run("population", |mut c| {
                let (current, elements) = (current.clone(), elements.clone());
                async move {
                    redis::pipe()
                        .cmd("PFADD")
                        .arg(&current)
                        .arg(&elements)
                        .ignore()
                        .pexpire(&current, 30_000)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await?;
        }
        self.run("population", |mut c| {
            let (current, previous) = (current.clone(), previous.clone());
            async move { redis::cmd("PFCOUNT").arg(current).arg(previous).query_async::<u64>(&mut c).await }
        })
        .await
    }

    /// Removes a user's shared verdicts and tells every instance to drop theirs.
    pub(crate) async fn invalidate_user(&self, id: &str) {
        self.invalidate_indexed(self.user_index(id), format!("u:{id}")).await;
    }

    /// Removes a session's shared verdicts and tells every instance to drop theirs.
    pub(crate) async fn invalidate_session(&self, origin_jti: &str) {
        self.invalidate_indexed(self.session_index(origin_jti), format!("s:{origin_jti}")).await;
    }

    /// Removes the shared verdicts an index names and broadcasts `message`.
    async fn invalidate_indexed(&self, index: String, message: String) {
        let channel = self.channel();
        let generation = self.generation();
        self.run("invalidate", |mut c| {
            let (index, channel, message) = (index.clone(), channel.clone(), message.clone());
            let generation = generation.clone();
            async move {
                // First the generation, so that no write of a load already in flight can land
                // after the entries are gone.
                // INCR, not INCRBY: the ACL line allows exactly the commands used.
                redis::cmd("INCR").arg(&generation).query_async::<()>(&mut c).await?;
                let names: Vec<String> = c.smembers(&index).await?;
                let mut pipe = redis::pipe();
                for name in &names {
                    pipe.del(name).ignore();
                }
                pipe.del(&index).ignore().publish(&channel, message).ignore().query_async::<()>(&mut c).await
            }
        })
        .await;
    }

    /// Removes every shared verdict of this prefix and tells every instance to drop theirs.
    pub(crate) async fn invalidate_all(&self) {
        let (pattern, channel) = (format!("{}[tuo]:*", self.settings.prefix), self.channel());
        let generation = self.generation();
        self.run("invalidate", |mut c| {
            let (pattern, channel) = (pattern.clone(), channel.clone());
            let generation = generation.clone();
            async move {
                // INCR, not INCRBY: the ACL line allows exactly the commands used.
                redis::cmd("INCR").arg(&generation).query_async::<()>(&mut c).await?;
                let names: Vec<String> = {
                    let mut iter: redis::AsyncIter<String> = c.scan_match(&pattern).await?;
                    let mut names = Vec::new();
                    while let Some(name) = iter.next_item().await {
                        names.push(name?);
                    }
                    names
                };
                let mut pipe = redis::pipe();
                for chunk in names.chunks(500) {
                    pipe.del(chunk).ignore();
                }
                pipe.publish(&channel, "a").ignore().query_async::<()>(&mut c).await
            }
        })
        .await;
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

    /// Starts, once, the task that applies broadcast invalidations to this instance's cache.
    ///
    /// It holds the verifier weakly and ends when the verifier is dropped. Each time it
    /// (re)subscribes it drops the whole local cache, which may hold verdicts whose invalidation
    /// was broadcast before the subscription was in place.
    pub(crate) fn listen<V, F>(&self, target: Weak<V>, apply: F)
    where
        V: Send + Sync + 'static,
        F: Fn(&V, Message) + Send + Sync + 'static,
    {
        if self.listening.swap(true, Ordering::AcqRel) || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (client, channel, timeout) = (self.client.clone(), self.channel(), self.settings.timeout);
        let status = self.subscribed.clone();
        let mac = self.mac.clone();
        tokio::spawn(async move {
            loop {
                if target.strong_count() == 0 {
                    return;
                }
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    redis::RedisResult::Ok(pubsub)
                };
                if let Ok(Ok(mut pubsub)) = tokio::time::timeout(timeout * 20, subscribed).await {
                    // Whatever was cached before this subscription was in place may have
                    // missed an invalidation: drop it.
                    match target.upgrade() {
                        Some(t) => apply(&t, Message::All),
                        None => return,
                    }
                    status.send_replace(true);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else { continue };
                        let message = match payload.split_once(':') {
                            Some(("t", key)) => unhex(key).map(Message::Token),
                            Some(("u", id)) => Some(Message::User(id.to_owned())),
                            Some(("s", id)) => Some(Message::Session(id.to_owned())),
                            Some(("w", rest)) => parse_watermark(rest, mac.as_ref()),
                            _ if payload == "a" => Some(Message::All),
                            _ => None,
                        };
                        match (message, target.upgrade()) {
                            (Some(m), Some(t)) => apply(&t, m),
                            (_, None) => return,
                            (None, _) => {}
                        }
                    }
                    status.send_replace(false);
                    tracing::warn!("lost the Redis invalidation channel; resubscribing");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
