//! Fleet mode: a Redis second level between the in-process cache and Cognito, and invalidations
//! broadcast to every instance over Redis pub/sub.
//!
//! Redis trouble never takes the app down and never turns into a pass: every operation has a
//! tight timeout, a failure opens a breaker for a few seconds (during which Redis is skipped and
//! adds no latency), and anything that does not decode is a miss.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use crate::error::Rejection;
use crate::token::TokenKey;
use crate::user::{CognitoUser, StoredUser};

/// Fleet-mode settings, from [`VerifierBuilder::redis`](crate::VerifierBuilder::redis).
#[derive(Debug, Clone)]
pub(crate) struct FleetSettings {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) breaker: Duration,
}

/// What Redis holds for a token.
pub(crate) enum Shared {
    /// A user, and until when (Unix ms) the verdict may be served.
    User(CognitoUser, u64),
    Rejected(Rejection),
}

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

/// An invalidation, as broadcast.
pub(crate) enum Message {
    Token(TokenKey),
    User(String),
    All,
}

pub(crate) struct Fleet {
    settings: FleetSettings,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    down_until: Mutex<Option<Instant>>,
    listening: AtomicBool,
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
    pub(crate) fn new(settings: FleetSettings) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| e.to_string())?;
        Ok(Fleet {
            settings,
            client,
            conn: OnceCell::new(),
            down_until: Mutex::new(None),
            listening: AtomicBool::new(false),
        })
    }

    fn entry_key(&self, key: &TokenKey) -> String {
        format!("{}t:{}", self.settings.prefix, hex(key))
    }

    fn user_index(&self, id: &str) -> String {
        format!("{}u:{id}", self.settings.prefix)
    }

    fn channel(&self) -> String {
        format!("{}invalidate", self.settings.prefix)
    }

    fn trip(&self, what: &str, error: &dyn std::fmt::Display) {
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

    /// The shared verdict for a token, if there is a good one.
    pub(crate) async fn get(&self, key: &TokenKey) -> Option<Shared> {
        let name = self.entry_key(key);
        let raw: Option<Vec<u8>> = self
            .run("get", |mut c| {
                let name = name.clone();
                async move { c.get(name).await }
            })
            .await?;
        let stored: Stored = match serde_json::from_slice(&raw?) {
            Ok(s) => s,
            Err(_) => {
                tracing::warn!("a value in Redis does not decode; treating it as a miss");
                return None;
            }
        };
        if stored.v != 1 || stored.until <= unix_ms() {
            return None;
        }
        match (stored.user, stored.rejected) {
            (Some(user), None) => {
                let user = CognitoUser::from(user);
                (user.exp() as u64 * 1000 > unix_ms()).then_some(Shared::User(user, stored.until))
            }
            (None, Some(code)) => {
                Rejection::ALL.iter().find(|r| r.as_str() == code).map(|r| Shared::Rejected(*r))
            }
            _ => None,
        }
    }

    /// Shares a positive verdict until `until_ms` (never past `exp`).
    pub(crate) async fn put_user(&self, key: &TokenKey, user: &CognitoUser, until_ms: u64) {
        let until = until_ms.min(user.exp().max(0) as u64 * 1000);
        let ttl = until.saturating_sub(unix_ms());
        if ttl == 0 {
            return;
        }
        let value = serde_json::to_vec(&Stored { v: 1, until, user: Some(user.into()), rejected: None })
            .expect("serializing a user cannot fail");
        let name = self.entry_key(key);
        let indexes = [self.user_index(user.sub()), self.user_index(user.username())];
        self.run("set", |mut c| {
            let (name, value, indexes) = (name.clone(), value.clone(), indexes.clone());
            async move {
                let mut pipe = redis::pipe();
                pipe.cmd("SET").arg(&name).arg(value).arg("PX").arg(ttl).ignore();
                for index in &indexes {
                    pipe.sadd(index, &name).ignore();
                    pipe.cmd("PEXPIRE").arg(index).arg(ttl).arg("GT").ignore();
                    pipe.cmd("PEXPIRE").arg(index).arg(ttl).arg("NX").ignore();
                }
                pipe.query_async::<()>(&mut c).await
            }
        })
        .await;
    }

    /// Shares a rejection for `ttl`.
    pub(crate) async fn put_rejection(&self, key: &TokenKey, rejection: Rejection, ttl: Duration) {
        let until = unix_ms() + ttl.as_millis() as u64;
        let value = serde_json::to_vec(&Stored {
            v: 1,
            until,
            user: None,
            rejected: Some(rejection.as_str().into()),
        })
        .expect("serializing a rejection cannot fail");
        let name = self.entry_key(key);
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
        self.run("invalidate", |mut c| {
            let (name, channel, message) = (name.clone(), channel.clone(), message.clone());
            async move {
                redis::pipe()
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

    /// Removes a user's shared verdicts and tells every instance to drop theirs.
    pub(crate) async fn invalidate_user(&self, id: &str) {
        let (index, channel, message) = (self.user_index(id), self.channel(), format!("u:{id}"));
        self.run("invalidate", |mut c| {
            let (index, channel, message) = (index.clone(), channel.clone(), message.clone());
            async move {
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
        let (pattern, channel) = (format!("{}*", self.settings.prefix), self.channel());
        self.run("invalidate", |mut c| {
            let (pattern, channel) = (pattern.clone(), channel.clone());
            async move {
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
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else { continue };
                        let message = match payload.split_once(':') {
                            Some(("t", key)) => unhex(key).map(Message::Token),
                            Some(("u", id)) => Some(Message::User(id.to_owned())),
                            _ if payload == "a" => Some(Message::All),
                            _ => None,
                        };
                        match (message, target.upgrade()) {
                            (Some(m), Some(t)) => apply(&t, m),
                            (_, None) => return,
                            (None, _) => {}
                        }
                    }
                    tracing::warn!("lost the Redis invalidation channel; resubscribing");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
