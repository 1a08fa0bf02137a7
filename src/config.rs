//! The builder: every setting is checked once, when the verifier is built.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::budget::BudgetSettings;
use crate::cache::CacheSettings;
use crate::cognito::CallSettings;
use http::Uri;

use crate::error::ConfigError;
use crate::issuer::Issuers;
use crate::jwks::JwksSettings;
use crate::telemetry::Telemetry;
use crate::token::ClaimPolicy;
use crate::verifier::{PoolSettings, Settings, Verifier};

const HOUR: Duration = Duration::from_secs(3600);
/// The default ceiling of an adaptive TTL.
const DEFAULT_MAX_CACHE_TTL: Duration = Duration::from_secs(300);

/// Builds a [`Verifier`]. Start with [`Verifier::builder`].
///
/// Setters consume and return the builder; [`build`](Self::build) checks everything at once.
#[must_use = "a builder does nothing until `.build()` is called"]
#[derive(Debug, Clone)]
pub struct VerifierBuilder {
    /// The pools, the first one given to [`Verifier::builder`] first.
    pools: Vec<String>,
    client_ids: Vec<String>,
    audiences: Vec<String>,
    region: Option<String>,
    endpoint: Option<String>,
    endpoint_from_env: bool,
    extra_issuers: Vec<String>,
    leeway: Duration,
    max_token_bytes: usize,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    operation_timeout: Duration,
    max_attempts: u32,
    retry_after: Duration,
    cache: CacheSettings,
    signature_check: bool,
    jwks_url: Option<String>,
    jwks_refresh_interval: Duration,
    jwks_timeout: Duration,
    max_in_flight: usize,
    max_per_second: Option<u32>,
    get_user_budget: Option<u32>,
    max_cache_ttl: Option<Duration>,
    per_user_per_second: u32,
    /// Fleet mode: Redis's URL, and its settings, which may be set in any order.
    #[cfg(feature = "redis")]
    redis: Option<Secret<String>>,
    #[cfg(feature = "redis")]
    redis_prefix: String,
    #[cfg(feature = "redis")]
    redis_timeout: Duration,
    #[cfg(feature = "redis")]
    redis_secret: Option<Secret<Vec<u8>>>,
    #[cfg(feature = "redis")]
    redis_ca_pem: Option<Vec<u8>>,
    /// Feature `events`: the queue of Cognito's CloudTrail events, and the client to read it.
    #[cfg(feature = "events")]
    events_queue: Option<(String, Option<aws_sdk_sqs::Client>)>,
    /// The app's shared AWS configuration, whose credentials sign the SQS calls.
    #[cfg(feature = "events")]
    shared_sdk: Option<aws_types::SdkConfig>,
    /// The SDK configuration to build the Cognito client from.
    sdk: Option<aws_sdk_cognitoidentityprovider::config::Builder>,
    /// The `SdkConfig`'s region and endpoint, when one was given.
    sdk_region: Option<String>,
    sdk_endpoint: Option<String>,
    /// In-process stand-ins, for the crate's own tests.
    seams: crate::verifier::Seams,
    user_info_domain: Option<String>,
    /// A replicated pool: the replica's region and endpoint, the preferred region, the probe.
    replica_region: Option<String>,
    replica_endpoint: Option<String>,
    preferred_region: Option<String>,
    failover_probe_interval: Duration,
    /// The HTTP client of the `SdkConfig` or Cognito client given, if it has one.
    sdk_http: Option<aws_smithy_runtime_api::client::http::SharedHttpClient>,
    /// Certificates to trust besides the system's, for the client the crate builds.
    ca_pem: Option<Vec<u8>>,
    /// Attributes authorization reads, checked to be read-only for users.
    authorization_attributes: Vec<String>,
    /// Whether the `SdkConfig` or client given has credentials, for that check.
    sdk_credentials: bool,
}

/// A secret setting (a Redis URL may carry a password): `Debug` prints `[redacted]`.
#[cfg(feature = "redis")]
#[derive(Clone)]
struct Secret<T>(T);

#[cfg(feature = "redis")]
impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A URL with its password, if any, replaced by `***`, for error messages.
#[cfg(feature = "redis")]
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl Verifier {
    /// Starts a builder for the user pool `user_pool_id` (such as `eu-west-1_AbC123xyz`).
    pub fn builder(user_pool_id: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder::new(user_pool_id)
    }
}

impl VerifierBuilder {
    pub(crate) fn new(user_pool_id: impl Into<String>) -> Self {
        VerifierBuilder {
            pools: vec![user_pool_id.into()],
            client_ids: Vec::new(),
            audiences: Vec::new(),
            region: None,
            endpoint: None,
            endpoint_from_env: true,
            extra_issuers: Vec::new(),
            leeway: Duration::ZERO,
            max_token_bytes: 8 * 1024,
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_millis(1500),
            operation_timeout: Duration::from_secs(3),
            max_attempts: 2,
            retry_after: Duration::from_secs(1),
            cache: CacheSettings::default(),
            signature_check: true,
            jwks_url: None,
            jwks_refresh_interval: Duration::from_secs(5),
            jwks_timeout: Duration::from_secs(3),
            max_in_flight: 64,
            max_per_second: None,
            get_user_budget: None,
            max_cache_ttl: None,
            per_user_per_second: 8,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_prefix: "actix-cognito:".into(),
            #[cfg(feature = "redis")]
            redis_timeout: Duration::from_millis(50),
            #[cfg(feature = "redis")]
            redis_secret: None,
            #[cfg(feature = "redis")]
            redis_ca_pem: None,
            sdk: None,
            sdk_region: None,
            sdk_endpoint: None,
            #[cfg(feature = "events")]
            events_queue: None,
            #[cfg(feature = "events")]
            shared_sdk: None,
            seams: crate::verifier::Seams::default(),
            user_info_domain: None,
            replica_region: None,
            replica_endpoint: None,
            preferred_region: None,
            failover_probe_interval: Duration::from_secs(10),
            sdk_http: None,
            ca_pem: None,
            authorization_attributes: Vec::new(),
            sdk_credentials: false,
        }
    }

    /// Also accepts access tokens without the `aws.cognito.signin.user.admin` scope that
    /// `GetUser` needs, when they carry `openid` (managed login / Hosted UI sign-ins with
    /// `openid email profile`): they are checked with the pool domain's `/oauth2/userInfo`
    /// instead, which is revocation-aware too and returns the same attributes. `domain` is the
    /// pool's custom domain (`https://auth.example.com`) or its prefix domain
    /// (`https://{prefix}.auth.{region}.amazoncognito.com`).
    ///
    /// Same local checks, signature pre-check, cache, single flight, quota guard, timeouts and
    /// outage policy as `GetUser`: a 401 from userInfo is a rejection; 5xx, timeouts and
    /// throttling are unavailability. Tokens with the admin scope keep using `GetUser`.
    /// Several pools share one domain setting: use it with one pool.
    pub fn user_info_domain(mut self, domain: impl Into<String>) -> Self {
        self.user_info_domain = Some(domain.into());
        self
    }

    /// Puts in-process stand-ins behind the seams (tests of this crate only).
    #[cfg(test)]
    pub(crate) fn seams(mut self, seams: crate::verifier::Seams) -> Self {
        self.seams = seams;
        self
    }

    /// Builds the Cognito client from this shared AWS configuration, as every AWS service of
    /// the app does (`aws_config::defaults(BehaviorVersion::latest()).load().await`): HTTP client
    /// (proxy, custom CA), FIPS and dual-stack endpoints, app name, endpoint override. Its HTTP
    /// client, when it has one, carries every call the crate makes: `GetUser`, the signing keys
    /// and userInfo.
    ///
    /// The crate still decides what is its to decide: the region is the pool's (the
    /// configuration's region serves only pools whose id names none, on emulators), every call
    /// is bounded by [`operation_timeout`](Self::operation_timeout) and
    /// [`attempt_timeout`](Self::attempt_timeout) and retried at most
    /// [`max_attempts`](Self::max_attempts) times whatever the configuration says, and no
    /// credentials are used or resolved: `GetUser` and `GlobalSignOut` are authorized by the
    /// token. The configuration's endpoint URL counts as an endpoint override (see
    /// [`endpoint_url`](Self::endpoint_url), which wins over it).
    pub fn sdk_config(mut self, config: &aws_types::SdkConfig) -> Self {
        let mut sdk = aws_sdk_cognitoidentityprovider::config::Builder::from(config);
        if config.behavior_version().is_none() {
            sdk.set_behavior_version(
                Some(aws_sdk_cognitoidentityprovider::config::BehaviorVersion::latest()),
            );
        }
        if let Some(connect) = config.timeout_config().and_then(|t| t.connect_timeout()) {
            self.connect_timeout = connect.min(self.operation_timeout);
        }
        self.sdk = Some(sdk);
        #[cfg(feature = "events")]
        {
            self.shared_sdk = Some(config.clone());
        }
        self.sdk_region = config.region().map(|r| r.to_string());
        self.sdk_endpoint = config.endpoint_url().map(str::to_owned);
        self.sdk_http = config.http_client();
        self.sdk_credentials = config.credentials_provider().is_some();
        self
    }

    /// Builds on a ready Cognito client's configuration instead, with the same rules as
    /// [`sdk_config`](Self::sdk_config). A client's endpoint override cannot be read back: set
    /// it here too with [`endpoint_url`](Self::endpoint_url) (or the environment) so that the
    /// emulator's issuers are accepted.
    pub fn cognito_client(mut self, client: &aws_sdk_cognitoidentityprovider::Client) -> Self {
        let config = client.config();
        if let Some(connect) = config.timeout_config().and_then(|t| t.connect_timeout()) {
            self.connect_timeout = connect.min(self.operation_timeout);
        }
        self.sdk_region = config.region().map(|r| r.to_string());
        self.sdk_http = config.http_client();
        // A ready client is taken to carry the app's credentials (they cannot be read back).
        self.sdk_credentials = true;
        self.sdk = Some(config.to_builder());
        self
    }

    /// The attributes the app authorizes with, such as `custom:tenant`: users must not be able to
    /// write them. Users change their own attributes with their access token
    /// (`UpdateUserAttributes`) unless the app client's write permissions (`WriteAttributes`)
    /// leave them out, custom ones included.
    ///
    /// [`Verifier::hydrate`] (and [`build_hydrated`](Self::build_hydrated)) then reads every app
    /// client with `DescribeUserPoolClient`, signed with the [`sdk_config`](Self::sdk_config)'s
    /// credentials (`cognito-idp:DescribeUserPoolClient`), and fails with
    /// [`ConfigError::WritableAttribute`] while one lets its users write such an attribute, or
    /// has no `WriteAttributes` list (Cognito's default lets users write). Without credentials the
    /// check is skipped with a warning.
    pub fn authorization_attributes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.authorization_attributes.extend(names.into_iter().map(Into::into));
        self
    }

    /// Trusts these certificates (PEM, one or more) besides the system's roots, for every HTTPS
    /// call the crate makes: `GetUser`, the signing keys (JWKS), userInfo. For a TLS-inspecting
    /// proxy or a VPC endpoint with a private certificate. Without an
    /// [`sdk_config`](Self::sdk_config) HTTP client, the crate builds the SDK's default client,
    /// which honours `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`; with one, give the CA to that
    /// client instead ([`build`](Self::build) refuses both).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Also accepts tokens of this user pool: one verifier, and one cache, for a multi-tenant
    /// app with a pool per tenant or during a migration between pools. Each token is checked
    /// against the pool its `iss` names (its keys, its region's Cognito endpoint); a token of a
    /// pool not given is refused without any call. App client ids are global: the ones given
    /// with [`client_id`](Self::client_id) are accepted for every pool, and a token can only
    /// name a client of its own pool.
    pub fn pool(mut self, user_pool_id: impl Into<String>) -> Self {
        self.pools.push(user_pool_id.into());
        self
    }

    /// Allows tokens issued to this app client. Call once per client; at least once.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_ids.push(id.into());
        self
    }

    /// Allows tokens issued to each of these app clients.
    pub fn client_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_ids.extend(ids.into_iter().map(Into::into));
        self
    }

    /// States the region. It must match the region the pool id names; by default it is derived
    /// from the pool id, so this only guards against a mismatched configuration.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends `GetUser` to this endpoint instead of Cognito's, such as `http://localhost:4566`
    /// for LocalStack.
    ///
    /// Without it, `AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER` and then `AWS_ENDPOINT_URL` are
    /// read at [`build`](Self::build), as the AWS SDKs do (unless
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Whether to read the endpoint from the environment when none is set (default `true`).
    pub fn endpoint_from_env(mut self, read: bool) -> Self {
        self.endpoint_from_env = read;
        self
    }

    /// Also accepts tokens whose `iss` is exactly `issuer`, for emulators that issue tokens
    /// under their own address. Cognito's two issuer forms for the pool are always accepted.
    pub fn allow_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.extra_issuers.push(issuer.into());
        self
    }

    /// Tolerance for clock skew when checking `exp` locally (default 0, at most 5 minutes).
    /// Cached answers are never served past `exp` itself.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Longest token accepted, in bytes (default 8 KiB); longer ones are refused unread.
    pub fn max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// Time allowed to open a connection to Cognito (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for one attempt of the `GetUser` call (default 1.5 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Time allowed for the whole `GetUser` call, retries included (default 3 s). This bounds how
    /// long a request can wait on a hung Cognito.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Attempts per `GetUser` call, the first included (default 2, at most 5). Each attempt
    /// spends the account's quota.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The `Retry-After` suggested when Cognito is unavailable (default 1 s).
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = delay;
        self
    }

    /// How long a positive verdict is reused (default 30 s): the longest a sign-out, a disabled
    /// or a deleted user can go unnoticed. Never past the token's `exp`. Zero disables caching:
    /// every request then costs one `GetUser` call.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// Most positive verdicts kept at once (default 100 000).
    pub fn cache_capacity(mut self, entries: u64) -> Self {
        self.cache.capacity = entries;
        self
    }

    /// Most memory the positive verdicts may take, in bytes (default 128 MiB, at least 1 MiB).
    ///
    /// Each verdict weighs what its principal holds on the heap (attributes included; users can
    /// write their own, up to tens of kilobytes), so large attributes cannot grow the cache past
    /// this budget. Tokens of one user share one copy of the user's attributes. With
    /// stale-if-error, the stale copies have a budget of the same size.
    pub fn cache_max_bytes(mut self, bytes: u64) -> Self {
        self.cache.max_bytes = bytes;
        self
    }

    /// How long a definitive rejection from Cognito is remembered (default 10 s; zero disables),
    /// so that a replayed dead token costs one call per this period.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.cache.negative_ttl = ttl;
        self
    }

    /// Most rejections kept at once (default 10 000).
    pub fn negative_capacity(mut self, entries: u64) -> Self {
        self.cache.negative_capacity = entries;
        self
    }

    /// Stale-if-error (off by default): while Cognito is unavailable, a token verified less than
    /// `ttl + grace` ago keeps its positive verdict. A definitive rejection always wins, and
    /// nothing is served past the token's `exp`.
    pub fn stale_if_error(mut self, grace: Duration) -> Self {
        self.cache.stale_grace = Some(grace);
        self
    }

    /// Whether to verify each token's RS256 signature against the pool's JWKS before asking
    /// Cognito (default `true`). With it, a forged token costs no `GetUser` call; without it, any
    /// token with the right claims does (and machine tokens cannot be accepted at all).
    pub fn signature_check(mut self, on: bool) -> Self {
        self.signature_check = on;
        self
    }

    /// Fetches the keys from this URL. By default `{issuer}/.well-known/jwks.json`, or with an
    /// endpoint override `{endpoint}/{pool}/.well-known/jwks.json`, where emulators serve it.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// The least time between two JWKS fetches caused by unknown key ids (default 5 s, from 1 s
    /// to 1 h): a flood of tokens with made-up `kid`s costs at most one fetch per interval, and a
    /// key Cognito rotates in is accepted within one interval even during such a flood. A `kid`
    /// that was absent from a fetch made after the token was issued costs no fetch at all.
    pub fn jwks_refresh_interval(mut self, interval: Duration) -> Self {
        self.jwks_refresh_interval = interval;
        self
    }

    /// Time allowed to fetch the JWKS, connection included (default 3 s, at most 60 s).
    pub fn jwks_timeout(mut self, timeout: Duration) -> Self {
        self.jwks_timeout = timeout;
        self
    }

    /// Most `GetUser` calls in flight at once (default 64). A request that would need one more
    /// gets "unavailable" (503 with `Retry-After`) instead of waiting; cached tokens are unaffected.
    pub fn max_get_user_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls;
        self
    }

    /// Most `GetUser` calls per second from this verifier (default: no cap). Set it below the
    /// account's quota (about 120 per second by default) to leave room for other apps; a request
    /// over it gets "unavailable" (503 with `Retry-After`), never a rejection.
    pub fn max_get_user_per_second(mut self, calls: u32) -> Self {
        self.max_per_second = Some(calls);
        self
    }

    /// A budget of `GetUser` calls a second for the active tokens (default: none, the TTL is
    /// `cache_ttl`). With one, the cache TTL adapts: the shortest between `cache_ttl` (the floor)
    /// and [`max_cache_ttl`](Self::max_cache_ttl) (the ceiling) that keeps the calls of the
    /// tokens requested in the last 5 to 10 s under about 85 % of the budget. That TTL is the
    /// revocation delay: 30 000 active tokens within 100 calls a second get 333 s, where a fixed
    /// 30 s TTL would need 1 000 calls a second. Only tokens that pass are counted, so garbage
    /// cannot stretch it; reloads are spread evenly over the period, never in bursts. Read it
    /// with [`Verifier::effective_cache_ttl`](crate::Verifier::effective_cache_ttl) and the gauge
    /// `actix_cognito_effective_ttl_seconds`; a change by more than half is logged.
    ///
    /// In fleet mode the budget is the fleet's: each instance adds the tokens it sees to a
    /// count in Redis (a HyperLogLog per 5 s window, under the prefix), and every instance
    /// picks the TTL that fits the fleet's whole population; as each token's entry ends on the
    /// same point of the grid on every instance and the first instance to reload it shares the
    /// verdict, the fleet calls once per token and period. Without fleet mode the count is the
    /// instance's own: give each instance its share. Leave room for the other apps of the
    /// account: Cognito's default is about 120 `GetUser` calls a second.
    pub fn get_user_budget(mut self, calls_per_second: u32) -> Self {
        self.get_user_budget = Some(calls_per_second);
        self
    }

    /// The region of the pool's replica (Cognito multi-Region replication: "a separate user pool
    /// with a shared user pool ID" in a second region), such as `us-west-2` for
    /// `us-east-1_AbC123xyz`. Then:
    /// - tokens with the replica region's original issuer
    ///   (`https://cognito-idp.us-west-2.amazonaws.com/us-east-1_AbC123xyz`) pass as well as the
    ///   pool's own two forms, each checked against its own issuer's keys;
    /// - `GetUser`, `GlobalSignOut` and `RevokeToken` go to the preferred region
    ///   ([`preferred_region`](Self::preferred_region), the pool's own by default) and fail over
    ///   to the other while it is unavailable (no connection, a timeout, a 5xx, throttling). A
    ///   region found unavailable is skipped, so requests do not wait for its timeouts, and is
    ///   tried again by one call every [`failover_probe_interval`](Self::failover_probe_interval).
    ///
    /// One pool per verifier: [`build`](Self::build) refuses a replica with several pools, a
    /// replica region equal to the pool's, one that is not a region, or one in another partition.
    pub fn replica_region(mut self, region: impl Into<String>) -> Self {
        self.replica_region = Some(region.into());
        self
    }

    /// The replica region's endpoint, as [`endpoint_url`](Self::endpoint_url) is the pool's:
    /// an emulator standing in for the second region, or a VPC endpoint. Required when the pool's
    /// endpoint is overridden (calls would otherwise leave for AWS's replica region).
    pub fn replica_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.replica_endpoint = Some(url.into());
        self
    }

    /// Which region of a replicated pool the calls go to first: the pool's own (the default) or
    /// the replica's, for an instance that runs in the replica's region.
    pub fn preferred_region(mut self, region: impl Into<String>) -> Self {
        self.preferred_region = Some(region.into());
        self
    }

    /// How long a replicated pool's region found unavailable is skipped before one call tries it
    /// again (default 10 s; from 1 s to 5 minutes): the delay before traffic returns to a
    /// recovered region.
    pub fn failover_probe_interval(mut self, interval: Duration) -> Self {
        self.failover_probe_interval = interval;
        self
    }

    /// Requires an access token's `aud` to name this audience (call it again to accept one of
    /// several): the resource indicator (RFC 8707) that managed login sets as the audience when
    /// the client asks for one, such as `https://api.example.com`. A token minted for another
    /// resource, or with no audience, is refused locally (`Rejection::WrongAudience`, a 401
    /// `invalid_token`), at no `GetUser` call. Without it, `aud` is not checked (it may be a
    /// string or an array). ID tokens keep their own check: `aud` is their app client.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Refresh-ahead (on by default): a hit on a verdict past
    /// [`refresh_ahead_fraction`](Self::refresh_ahead_fraction) of its life verifies the token
    /// again in the background, so that a token in use never waits on Cognito when its verdict
    /// expires. The revocation delay is unchanged: no verdict is served longer than the TTL after
    /// the call that made it, a refresh that Cognito refuses replaces the verdict with the
    /// rejection at once, and invalidations win over refreshes in flight. Idle tokens are never
    /// refreshed. A token in use costs `1 / fraction` calls per TTL instead of one (1.33 at
    /// 0.75). With a [`get_user_budget`](Self::get_user_budget), whose TTL is long and whose
    /// verdicts end on a grid that spreads the calls, refresh-ahead is off. `false` verifies
    /// expired verdicts on the request path, as a plain cache does.
    pub fn refresh_ahead(mut self, on: bool) -> Self {
        self.cache.refresh_ahead =
            on.then_some(self.cache.refresh_ahead.unwrap_or(crate::cache::DEFAULT_REFRESH_AHEAD));
        self
    }

    /// The share of a verdict's life after which a hit refreshes it (default 0.75, from 0.5 to
    /// 0.95; turns refresh-ahead on). Each instance adds its own share, up to half, of the rest,
    /// so that a fleet's instances spread their refreshes and read each other's from Redis. The
    /// rest of the life is what the call has to come back in: at 0.75 and a 2 s TTL, 250 ms.
    pub fn refresh_ahead_fraction(mut self, fraction: f64) -> Self {
        self.cache.refresh_ahead = Some(fraction);
        self
    }

    /// Most `GetUser` calls a second for one user, refreshes included (default 8): Cognito
    /// throttles one user past about 10 reads a second, shared with the app's own calls, so a
    /// call past it would fail there anyway, after spending the account's quota. A request over
    /// it gets "unavailable" (503 with `Retry-After`); a refresh over it is left to the request
    /// path. Only a user with more tokens in use than this many per TTL meets it.
    pub fn max_get_user_per_user_per_second(mut self, calls: u32) -> Self {
        self.per_user_per_second = calls;
        self
    }

    /// The longest TTL a [`get_user_budget`](Self::get_user_budget) may pick (default 300 s, at
    /// most 24 h): the worst revocation delay you accept. Never past a token's `exp`.
    pub fn max_cache_ttl(mut self, ttl: Duration) -> Self {
        self.max_cache_ttl = Some(ttl);
        self
    }

    /// Revocations made elsewhere (feature `events`): consumes the SQS queue at `queue_url`, which
    /// an EventBridge rule feeds with Cognito's "AWS API Call via CloudTrail" events (README:
    /// the rule's pattern and the IAM policy). After a call that can end a user's access
    /// (`AdminDisableUser`, `AdminDeleteUser`, `DeleteUser`, `AdminUserGlobalSignOut`,
    /// `GlobalSignOut`, `RevokeToken`, `AdminResetUserPassword`, `AdminSetUserPassword`,
    /// `ChangePassword`, `AdminRemoveUserFromGroup`) on one of the verifier's pools, that user's
    /// verdicts are dropped (on every instance, in fleet mode), so their next request goes to
    /// `GetUser`: with a long TTL, a user disabled in the console is refused within seconds of
    /// the event, not at the end of the TTL. An event never refuses a token by itself.
    ///
    /// The SQS calls are signed with the credentials and region of
    /// [`sdk_config`](Self::sdk_config), which is required (a queue URL's own region wins). Each
    /// message goes to one instance: without fleet mode, give each instance a queue of its own.
    /// Messages are deleted once handled (malformed ones too, with a warning), event ids are
    /// remembered to skip redeliveries, receive errors back off from 1 s to 30 s; requests never
    /// wait on the queue.
    #[cfg(feature = "events")]
    pub fn events_queue(mut self, queue_url: impl Into<String>) -> Self {
        self.events_queue = Some((queue_url.into(), None));
        self
    }

    /// As [`events_queue`](Self::events_queue), reading the queue with this client (its own
    /// credentials, region and endpoint).
    #[cfg(feature = "events")]
    pub fn events_queue_client(mut self, client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        self.events_queue = Some((queue_url.into(), Some(client)));
        self
    }

    /// Fleet mode (feature `redis`): shares verdicts with every instance through the Redis at
    /// `url` (`redis://` or, recommended, `rediss://` with an ACL user), and broadcasts
    /// invalidations over pub/sub. Lookups go local cache, then Redis, then Cognito. Redis
    /// trouble never fails a request: each operation has a 50 ms timeout and a failure skips
    /// Redis for 5 s.
    ///
    /// A cluster is detected from the node `url` names (any node, or ElastiCache's configuration
    /// endpoint): the cluster client then follows the slots, and invalidations go over sharded
    /// pub/sub. The README lists the keys, the ACL line, and what Redis can and cannot do.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(Secret(url.into()));
        self
    }

    /// The prefix of every Redis key and of the pub/sub channel (default `actix-cognito:`).
    /// Instances share verdicts only with instances of the same prefix.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = prefix.into();
        self
    }

    /// Authenticates what the fleet writes to Redis (at least 32 bytes, the same on every
    /// instance, such as 32 random bytes from a secrets manager): each value carries an
    /// HMAC-SHA256 over its key and content, and a value that fails it is a miss (and a logged
    /// warning). Without it, whoever can write under the prefix can make a genuine, signed,
    /// unexpired token pass until its `exp`; with it, they can only delete.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.redis_secret = Some(Secret(secret.into()));
        self
    }

    /// Trusts this CA (PEM certificates) for `rediss://`, instead of the system's roots: for
    /// a Redis with a private CA.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.redis_ca_pem = Some(pem.into());
        self
    }

    /// The timeout of each Redis operation (default 50 ms, at most 5 s).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// Builds the verifier and fetches the pool's signing keys before returning, so that a
    /// wrong pool id, endpoint or network fails at start-up.
    ///
    /// # Errors
    /// As [`build`](Self::build), and [`ConfigError::Jwks`] when the keys cannot be fetched.
    pub async fn build_hydrated(self) -> Result<Verifier, ConfigError> {
        let verifier = self.build()?;
        verifier.hydrate().await?;
        Ok(verifier)
    }

    /// Checks every setting and builds the verifier.
    ///
    /// Reads the endpoint from the environment unless one was set (see
    /// [`endpoint_url`](Self::endpoint_url)). Makes no network call: the first request does.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting to fix: a malformed pool id, no or malformed
    /// client ids, a region that does not match the pool id, a malformed endpoint, a setting out
    /// of range.
    pub fn build(self) -> Result<Verifier, ConfigError> {
        let endpoint = self.endpoint()?;
        let regions: Vec<String> =
            self.pools.iter().map(|id| self.pool_region(id, endpoint.is_some())).collect::<Result<_, _>>()?;
        self.check_clients()?;
        let max_per_second = self.check_ranges()?;
        let per_user = self.check_refresh()?;
        let budget = self.budget()?;
        if self.pools.len() > 1 && self.jwks_url.is_some() {
            return Err(ConfigError::InvalidSetting {
                setting: "jwks_url",
                reason: "one URL cannot serve several pools: each pool's keys are read where its issuer (or the endpoint) serves them",
            });
        }
        let issuers: Vec<Issuers> = self
            .pools
            .iter()
            .zip(&regions)
            .map(|(id, region)| self.issuers(id, region, endpoint.as_ref()))
            .collect();
        let mut pools = Vec::with_capacity(self.pools.len());
        for ((id, region), issuers) in self.pools.iter().zip(&regions).zip(&issuers) {
            let jwks = self.jwks(id, issuers, endpoint.as_ref())?;
            pools.push(PoolSettings { id: id.clone(), region: region.clone(), jwks, replica: false });
        }
        let mut issuers = issuers;
        let replica = self.replica(&regions[0], endpoint.as_ref())?;
        if let Some(replica) = &replica {
            // The replica's issuer is a pool entry of its own, with its own keys.
            let id = &self.pools[0];
            let mut replica_issuers = Issuers::new(vec![format!("{}/{id}", cognito_origin(&replica.region))]);
            let replica_endpoint =
                replica.endpoint.as_deref().map(|e| checked_url(e, "replica_endpoint_url()"));
            let replica_endpoint = replica_endpoint.transpose()?;
            if let Some(e) = &replica_endpoint {
                replica_issuers.add_emulator(e, &[id]);
            }
            let jwks = self.jwks(id, &replica_issuers, replica_endpoint.as_ref())?;
            pools.push(PoolSettings { id: id.clone(), region: replica.region.clone(), jwks, replica: true });
            issuers.push(replica_issuers);
        }
        let policy = ClaimPolicy {
            issuers,
            client_ids: self.client_ids.clone(),
            audiences: self.audiences.clone(),
            leeway_secs: self.leeway.as_secs() as i64,
            max_len: self.max_token_bytes,
        };
        let transport = self.transport()?;
        let attribute_check = self.attribute_check(&regions, endpoint.as_ref(), &transport);
        let telemetry = Telemetry::register();
        #[cfg(feature = "redis")]
        let fleet = self.fleet(&telemetry)?;
        Ok(Verifier::from_settings(Settings {
            #[cfg(feature = "redis")]
            fleet,
            telemetry,
            policy,
            call: CallSettings {
                http: transport.client(),
                base: self.sdk.clone(),
                region: String::new(),
                endpoint: endpoint.map(|e| e.to_string()),
                connect_timeout: self.connect_timeout,
                attempt_timeout: self.attempt_timeout,
                operation_timeout: self.operation_timeout,
                max_attempts: self.max_attempts,
                retry_after: self.retry_after,
            },
            cache: CacheSettings {
                // With a budget, verdicts end on its grid and are verified on the request path
                // (see `refresh_ahead`).
                refresh_ahead: self.cache.refresh_ahead.filter(|_| budget.is_none()),
                budget,
                refresh_retry: self.retry_after,
                ..self.cache
            },
            pools,
            replica,
            max_in_flight: self.max_in_flight,
            max_per_second,
            per_user,
            transport,
            attribute_check,
            user_info: match &self.user_info_domain {
                Some(domain) => Some(checked_url(domain, "user_info_domain()")?.to_string()),
                None => None,
            },
            #[cfg(feature = "events")]
            events: self.events()?,
            seams: self.seams,
        }))
    }

    /// The check of `authorization_attributes`: a client signed with the SDK configuration's
    /// credentials for each pool, when there are credentials.
    fn attribute_check(
        &self,
        regions: &[String],
        endpoint: Option<&Uri>,
        transport: &crate::transport::Transport,
    ) -> crate::attributes::AttributeCheck {
        let signed = |region: &str| {
            let mut conf = self.sdk.clone()?;
            conf = conf
                .region(aws_sdk_cognitoidentityprovider::config::Region::new(region.to_owned()))
                .http_client(transport.client())
                .timeout_config(
                    aws_sdk_cognitoidentityprovider::config::timeout::TimeoutConfig::builder()
                        .connect_timeout(self.connect_timeout)
                        .operation_timeout(self.operation_timeout)
                        .build(),
                );
            if let Some(endpoint) = endpoint {
                conf = conf.endpoint_url(endpoint.to_string());
            }
            Some(aws_sdk_cognitoidentityprovider::Client::from_conf(conf.build()))
        };
        let with_credentials = self.sdk_credentials && !self.authorization_attributes.is_empty();
        crate::attributes::AttributeCheck {
            attributes: self.authorization_attributes.clone(),
            client_ids: self.client_ids.clone(),
            pools: match with_credentials {
                true => self
                    .pools
                    .iter()
                    .zip(regions)
                    .filter_map(|(p, r)| Some((p.clone(), signed(r)?)))
                    .collect(),
                false => Vec::new(),
            },
        }
    }

    /// The one HTTP client: the SDK configuration's, else the SDK's default with `ca_pem`.
    fn transport(&self) -> Result<crate::transport::Transport, ConfigError> {
        let client = match (&self.sdk_http, &self.ca_pem) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::InvalidSetting {
                    setting: "ca_pem",
                    reason: "the SdkConfig brings its own HTTP client, which carries every call: give the CA to that client",
                })
            }
            (Some(client), None) => client.clone(),
            (None, pem) => crate::transport::default_client(pem.as_deref()).map_err(|_| ConfigError::InvalidSetting {
                setting: "ca_pem",
                reason: "one or more PEM certificates (-----BEGIN CERTIFICATE-----)",
            })?,
        };
        Ok(crate::transport::Transport::new(client, self.connect_timeout))
    }

    /// A replicated pool's settings, checked: one pool, a region in the pool's partition other
    /// than its own, an endpoint when the pool's is overridden, a preferred region among the two.
    fn replica(
        &self,
        pool_region: &str,
        endpoint: Option<&Uri>,
    ) -> Result<Option<crate::regions::ReplicaSettings>, ConfigError> {
        let invalid = |setting, reason| Err(ConfigError::InvalidSetting { setting, reason });
        let Some(region) = &self.replica_region else {
            return match (&self.replica_endpoint, &self.preferred_region) {
                (Some(_), _) => {
                    invalid("replica_endpoint_url", "is the replica's endpoint: set replica_region too")
                }
                (_, Some(_)) => invalid(
                    "preferred_region",
                    "chooses between a replicated pool's regions: set replica_region too",
                ),
                (None, None) => Ok(None),
            };
        };
        if self.pools.len() > 1 {
            return invalid(
                "replica_region",
                "a replicated pool needs a verifier of its own: build one verifier per replicated pool",
            );
        }
        if !is_region(region) {
            return invalid("replica_region", "a region such as `us-west-2`");
        }
        if region == pool_region {
            return invalid(
                "replica_region",
                "the replica's region, not the pool's own (the region its id names)",
            );
        }
        let suffix = |r: &str| {
            cognito_origin(r).trim_start_matches("https://cognito-idp.").trim_start_matches(r).to_owned()
        };
        if suffix(region) != suffix(pool_region) {
            return invalid(
                "replica_region",
                "a region of the pool's own partition (aws, aws-cn, aws-us-gov...)",
            );
        }
        if endpoint.is_some() && self.replica_endpoint.is_none() {
            return invalid("replica_endpoint_url", "the pool's endpoint is overridden: give the replica's endpoint too, or calls would leave for AWS");
        }
        let prefer_replica = match self.preferred_region.as_deref() {
            None => false,
            Some(r) if r == pool_region => false,
            Some(r) if r == region => true,
            Some(_) => {
                return invalid(
                    "preferred_region",
                    "one of the pool's two regions: its own or replica_region",
                )
            }
        };
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.failover_probe_interval) {
            return invalid("failover_probe_interval", "from 1 s to 5 minutes");
        }
        Ok(Some(crate::regions::ReplicaSettings {
            region: region.clone(),
            endpoint: self.replica_endpoint.clone(),
            prefer_replica,
            probe_interval: self.failover_probe_interval,
        }))
    }

    /// The consumer of Cognito's events, when a queue was given.
    #[cfg(feature = "events")]
    fn events(&self) -> Result<Option<crate::events::Events>, ConfigError> {
        let Some((url, client)) = &self.events_queue else { return Ok(None) };
        let parsed = checked_url(url, "events_queue()")?;
        let client = match (client, &self.shared_sdk) {
            (Some(client), _) => client.clone(),
            (None, Some(shared)) => {
                let mut config = aws_sdk_sqs::config::Builder::from(shared);
                // https://sqs.{region}.amazonaws.com/{account}/{queue}: the queue's region wins.
                let host = parsed.host().unwrap_or_default();
                if let Some(region) = host.strip_prefix("sqs.").and_then(|h| h.split('.').next()) {
                    if host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
                        config.set_region(Some(aws_types::region::Region::new(region.to_owned())));
                    }
                }
                if shared.behavior_version().is_none() {
                    config.set_behavior_version(Some(aws_sdk_sqs::config::BehaviorVersion::latest()));
                }
                aws_sdk_sqs::Client::from_conf(config.build())
            }
            (None, None) => {
                return Err(ConfigError::InvalidSetting {
                    setting: "events_queue",
                    reason: "needs sdk_config(&aws_config::load_defaults(..).await): the SQS calls are signed with the app's AWS credentials",
                })
            }
        };
        Ok(Some(crate::events::Events::new(client, url.clone())))
    }

    /// Fleet mode's connection, when a Redis URL was given.
    #[cfg(feature = "redis")]
    fn fleet(&self, telemetry: &Telemetry) -> Result<Option<crate::fleet::Fleet>, ConfigError> {
        let Some(Secret(url)) = &self.redis else { return Ok(None) };
        let invalid = |setting, reason| ConfigError::InvalidSetting { setting, reason };
        if self.redis_timeout.is_zero() || self.redis_timeout > Duration::from_secs(5) {
            return Err(invalid("redis_timeout", "more than zero and at most 5 s"));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['*', '?', '[', ']', '{', '}']) {
            return Err(invalid(
                "redis_prefix",
                "not empty, and no glob characters (* ? [ ]) or braces (hash tags)",
            ));
        }
        if self.redis_secret.as_ref().is_some_and(|s| s.0.len() < 32) {
            return Err(invalid("redis_secret", "at least 32 bytes"));
        }
        let settings = crate::fleet::FleetSettings {
            url: url.clone(),
            prefix: self.redis_prefix.clone(),
            timeout: self.redis_timeout,
            breaker: Duration::from_secs(5),
            secret: self.redis_secret.as_ref().map(|s| s.0.clone()),
            ca_pem: self.redis_ca_pem.clone(),
        };
        crate::fleet::Fleet::new(settings, telemetry)
            .map(Some)
            .map_err(|reason| ConfigError::InvalidRedisUrl { value: redact_password(url), reason })
    }

    /// The endpoint override: set on the builder, else from the environment.
    fn endpoint(&self) -> Result<Option<Uri>, ConfigError> {
        match (&self.endpoint, &self.sdk_endpoint) {
            (Some(url), _) => checked_url(url, "endpoint_url()").map(Some),
            (None, Some(url)) => checked_url(url, "the SdkConfig's endpoint_url").map(Some),
            (None, None) if self.endpoint_from_env => endpoint_from_env(),
            (None, None) => Ok(None),
        }
    }

    /// The pool's region: the one its id names, which an explicit region must match. An
    /// emulator's pool id may name none (cognito-local's `local_...`): the region is then the
    /// configured one, else `AWS_REGION`, else `us-east-1`.
    fn pool_region(&self, id: &str, emulated: bool) -> Result<String, ConfigError> {
        match (pool_region(id), emulated) {
            (Ok(pool_region), _) => match &self.region {
                Some(region) if *region != pool_region => Err(ConfigError::RegionMismatch {
                    configured: region.clone(),
                    pool: id.to_owned(),
                    pool_region: pool_region.to_owned(),
                }),
                _ => Ok(pool_region.to_owned()),
            },
            (Err(_), true) if emulator_pool_id(id) => Ok(self
                .region
                .clone()
                .or_else(|| self.sdk_region.clone())
                .or_else(|| env_var("AWS_REGION"))
                .or_else(|| env_var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned())),
            (Err(problem), _) => Err(ConfigError::InvalidUserPoolId { value: id.to_owned(), problem }),
        }
    }

    fn check_clients(&self) -> Result<(), ConfigError> {
        if self.audiences.iter().any(|a| a.trim().is_empty() || a.trim() != a) {
            return Err(ConfigError::InvalidSetting {
                setting: "audience",
                reason: "a non-empty audience without surrounding spaces, such as https://api.example.com",
            });
        }
        if self.client_ids.is_empty() {
            return Err(ConfigError::NoClientIds);
        }
        match self.client_ids.iter().find(|id| !valid_client_id(id)) {
            Some(bad) => Err(ConfigError::InvalidClientId(bad.clone())),
            None => Ok(()),
        }
    }

    /// Checks every numeric setting; returns the per-second cap.
    fn check_ranges(&self) -> Result<Option<NonZeroU32>, ConfigError> {
        let range = |ok: bool, setting, reason| match ok {
            true => Ok(()),
            false => Err(ConfigError::InvalidSetting { setting, reason }),
        };
        range(self.leeway <= Duration::from_secs(300), "leeway", "at most 5 minutes")?;
        range(
            (64..=64 * 1024).contains(&self.max_token_bytes),
            "max_token_bytes",
            "between 64 bytes and 64 KiB",
        )?;
        range((1..=5).contains(&self.max_attempts), "max_attempts", "between 1 and 5")?;
        for (setting, t) in [
            ("connect_timeout", self.connect_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("operation_timeout", self.operation_timeout),
            ("jwks_timeout", self.jwks_timeout),
        ] {
            range(
                t > Duration::ZERO && t <= Duration::from_secs(60),
                setting,
                "more than zero and at most 60 s",
            )?;
        }
        range(
            self.retry_after >= Duration::from_secs(1),
            "retry_after",
            "at least 1 s (Retry-After counts whole seconds)",
        )?;
        range(self.retry_after <= HOUR, "retry_after", "at most 1 hour")?;
        range(self.cache.capacity > 0, "cache_capacity", "at least 1")?;
        range(self.cache.max_bytes >= 1 << 20, "cache_max_bytes", "at least 1 MiB")?;
        // Access tokens live a day at most: nothing is kept longer. These bounds also keep every
        // instant computed on the request path far from overflowing.
        range(
            self.cache.ttl <= 24 * HOUR,
            "cache_ttl",
            "at most 24 hours (the longest an access token lives)",
        )?;
        range(self.cache.negative_ttl <= HOUR, "negative_ttl", "at most 1 hour")?;
        range(self.cache.stale_grace.is_none_or(|g| g <= 24 * HOUR), "stale_if_error", "at most 24 hours")?;
        range(self.cache.negative_capacity > 0, "negative_capacity", "at least 1")?;
        range(self.max_in_flight > 0, "max_get_user_in_flight", "at least 1")?;
        range(
            (Duration::from_secs(1)..=HOUR).contains(&self.jwks_refresh_interval),
            "jwks_refresh_interval",
            "from 1 s to 1 hour",
        )?;
        match self.max_per_second {
            Some(n) => NonZeroU32::new(n).map(Some).ok_or(ConfigError::InvalidSetting {
                setting: "max_get_user_per_second",
                reason: "at least 1",
            }),
            None => Ok(None),
        }
    }

    /// The refresh-ahead settings; the per-user call rate.
    fn check_refresh(&self) -> Result<NonZeroU32, ConfigError> {
        if let Some(fraction) = self.cache.refresh_ahead {
            if !(0.5..=0.95).contains(&fraction) {
                return Err(ConfigError::InvalidSetting {
                    setting: "refresh_ahead_fraction",
                    reason: "from 0.5 to 0.95 (the share of a verdict's life after which it is refreshed)",
                });
            }
        }
        NonZeroU32::new(self.per_user_per_second).ok_or(ConfigError::InvalidSetting {
            setting: "max_get_user_per_user_per_second",
            reason: "at least 1",
        })
    }

    /// The call budget's settings, when one is set.
    fn budget(&self) -> Result<Option<BudgetSettings>, ConfigError> {
        let invalid = |setting, reason| Err(ConfigError::InvalidSetting { setting, reason });
        let max_ttl = self.max_cache_ttl.unwrap_or(DEFAULT_MAX_CACHE_TTL.max(self.cache.ttl));
        let Some(per_second) = self.get_user_budget else {
            return match self.max_cache_ttl {
                Some(_) => invalid("max_cache_ttl", "is the ceiling of an adaptive TTL: set get_user_budget too, or use cache_ttl for a fixed TTL"),
                None => Ok(None),
            };
        };
        if per_second == 0 {
            return invalid("get_user_budget", "at least 1 call a second");
        }
        if self.cache.ttl.is_zero() {
            return invalid("get_user_budget", "needs the cache: cache_ttl is zero");
        }
        if max_ttl < self.cache.ttl {
            return invalid("max_cache_ttl", "at least cache_ttl (the adaptive TTL's floor)");
        }
        if max_ttl > 24 * HOUR {
            return invalid("max_cache_ttl", "at most 24 hours (the longest an access token lives)");
        }
        #[cfg(feature = "redis")]
        let fleet = self.redis.is_some();
        #[cfg(not(feature = "redis"))]
        let fleet = false;
        Ok(Some(BudgetSettings { per_second, max_ttl, fleet }))
    }

    /// Cognito's two issuer forms, in the region's partition; an emulator's; `allow_issuer`'s.
    fn issuers(&self, pool: &str, region: &str, endpoint: Option<&Uri>) -> Issuers {
        let host = cognito_origin(region);
        let mut issuers = Issuers::new(vec![
            format!("{host}/{pool}"),
            format!("{}/{pool}", host.replacen("https://cognito-idp.", "https://issuer-cognito-idp.", 1)),
        ]);
        if let Some(endpoint) = endpoint {
            issuers.add_emulator(endpoint, &[pool]);
        }
        // An allowed issuer belongs to the pool it names as its path, else to the first pool.
        let first = self.pools[0] == pool;
        let mine = |iss: &&String| match self.pools.iter().find(|p| iss.ends_with(&format!("/{p}"))) {
            Some(named) => named == pool,
            None => first,
        };
        issuers.exact.extend(self.extra_issuers.iter().filter(mine).cloned());
        issuers
    }

    /// Where the keys come from: the setting, else where an emulator serves them, else the
    /// issuer's well-known location.
    fn jwks(
        &self,
        pool: &str,
        issuers: &Issuers,
        endpoint: Option<&Uri>,
    ) -> Result<Option<JwksSettings>, ConfigError> {
        let url = match (&self.jwks_url, endpoint) {
            (Some(url), _) => checked_url(url, "jwks_url()")?.to_string(),
            (None, Some(endpoint)) => {
                format!("{}/{pool}/.well-known/jwks.json", endpoint.to_string().trim_end_matches('/'))
            }
            (None, None) => format!("{}/.well-known/jwks.json", issuers.exact[0]),
        };
        Ok(self.signature_check.then_some(JwksSettings {
            url,
            refresh_interval: self.jwks_refresh_interval,
            timeout: self.jwks_timeout,
            retry_after: self.retry_after,
        }))
    }
}

/// `https://cognito-idp.{region}.{the partition's DNS suffix}`, from the SDK's own endpoint rules
/// and partition data (aws, aws-cn, aws-us-gov, aws-eusc, the ISO partitions, and any it adds).
/// Never the FIPS or dual-stack endpoint: tokens name the plain one whatever endpoint is called.
fn cognito_origin(region: &str) -> String {
    use std::future::Future as _;
    use std::task::{Context, Poll, Waker};

    use aws_sdk_cognitoidentityprovider::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};

    let resolved =
        Params::builder().region(region).use_fips(false).use_dual_stack(false).build().ok().and_then(
            |params| {
                let resolver = DefaultResolver::new();
                // The rules run synchronously: the future is ready when first polled.
                let mut future = std::pin::pin!(resolver.resolve_endpoint(&params));
                match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(Ok(endpoint)) => Some(endpoint.url().trim_end_matches('/').to_owned()),
                    _ => None,
                }
            },
        );
    resolved.unwrap_or_else(|| format!("https://cognito-idp.{region}.amazonaws.com"))
}

/// The region a pool id such as `eu-west-1_AbC123` names, or what is wrong with it.
fn pool_region(pool_id: &str) -> Result<&str, &'static str> {
    let Some((region, id)) = pool_id.split_once('_') else {
        return Err("no `_` separates the region from the id");
    };
    if !is_region(region) {
        return Err("the part before `_` is not a region such as `eu-west-1`");
    }
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("the part after `_` is not letters and digits");
    }
    if pool_id.len() > 55 {
        return Err("it is longer than 55 characters");
    }
    Ok(region)
}

/// A region's name, such as `eu-west-1` or `us-gov-west-1`.
fn is_region(region: &str) -> bool {
    region.split('-').count() >= 3
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.ends_with(|c: char| c.is_ascii_digit())
        && !region.contains("--")
}

/// An emulator's pool id: `<word>_<id>`, such as cognito-local's `local_0uznJEKW`.
fn emulator_pool_id(pool_id: &str) -> bool {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    pool_id.len() <= 55
        && pool_id.split_once('_').is_some_and(|(a, b)| word(a) && word(b) && !b.contains('-'))
}

fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// An absolute `http` or `https` URL with a host.
fn checked_url(url: &str, source_name: &'static str) -> Result<Uri, ConfigError> {
    let invalid = || ConfigError::InvalidEndpoint { value: url.to_owned(), source_name };
    let uri: Uri = url.trim().parse().map_err(|_| invalid())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(invalid()),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn endpoint_from_env() -> Result<Option<Uri>, ConfigError> {
    if env_var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    for name in ["AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", "AWS_ENDPOINT_URL"] {
        if let Some(url) = env_var(name) {
            return checked_url(&url, name).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(pool: &str) -> VerifierBuilder {
        VerifierBuilder::new(pool).client_id("abc123").endpoint_from_env(false)
    }

    #[test]
    fn pool_ids_are_checked() {
        assert_eq!(pool_region("eu-west-1_AbC123"), Ok("eu-west-1"));
        assert_eq!(pool_region("us-gov-west-1_x9"), Ok("us-gov-west-1"));
        assert_eq!(pool_region("us-east-1_1979848ff3a644f1a2b879f56df40739"), Ok("us-east-1"));
        for bad in [
            "",
            "eu-west-1",
            "eu-west-1_",
            "_abc",
            "EU-WEST-1_abc",
            "eu-west_abc",
            "eu-west-1_a-b",
            "eu--west-1_a",
        ] {
            assert!(pool_region(bad).is_err(), "{bad}");
        }
        assert_eq!(pool_region("eu-west-1"), Err("no `_` separates the region from the id"));
        assert!(pool_region("local_0uznJEKW").unwrap_err().contains("not a region"));
        assert!(pool_region("eu-west-1_a-b").unwrap_err().contains("after `_`"));
    }

    #[test]
    fn an_emulator_pool_id_is_accepted_only_with_an_endpoint_override() {
        let err = builder("local_0uznJEKW").build().unwrap_err();
        assert!(matches!(err, ConfigError::InvalidUserPoolId { .. }), "{err}");
        assert!(err.to_string().contains("not a region"), "{err}");
        let v = builder("local_0uznJEKW").endpoint_url("http://127.0.0.1:9229").build().unwrap();
        assert_eq!(v.region(), "us-east-1");
        let v = builder("local_0uznJEKW")
            .endpoint_url("http://127.0.0.1:9229")
            .region("eu-west-2")
            .build()
            .unwrap();
        assert_eq!(v.region(), "eu-west-2");
        assert!(v
            .issuers()
            .contains(&"https://cognito-idp.eu-west-2.amazonaws.com/local_0uznJEKW".to_owned()));
        for bad in ["local_", "_abc", "local_a b", "local_a_b", "local"] {
            let err = builder(bad).endpoint_url("http://127.0.0.1:9229").build().unwrap_err();
            assert!(matches!(err, ConfigError::InvalidUserPoolId { .. }), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_malformed_pool_id_fails_at_build_naming_the_fix() {
        let err = builder("eu-west-1").build().unwrap_err();
        assert!(matches!(&err, ConfigError::InvalidUserPoolId { value, .. } if value == "eu-west-1"));
        assert!(err.to_string().contains("<region>_<id>"), "{err}");
        assert!(err.to_string().contains("no `_`"), "{err}");
    }

    #[tokio::test]
    async fn a_region_that_does_not_match_the_pool_fails_at_build() {
        let err = builder("eu-west-1_Abc").region("us-east-1").build().unwrap_err();
        assert!(matches!(err, ConfigError::RegionMismatch { .. }));
        assert!(err.to_string().contains("set it to `eu-west-1`"), "{err}");
        assert!(builder("eu-west-1_Abc").region("eu-west-1").build().is_ok());
    }

    #[tokio::test]
    async fn client_ids_are_required_and_checked() {
        let no_client = VerifierBuilder::new("eu-west-1_Abc").endpoint_from_env(false).build();
        assert_eq!(no_client.unwrap_err(), ConfigError::NoClientIds);
        let bad = builder("eu-west-1_Abc").client_id("").build().unwrap_err();
        assert_eq!(bad, ConfigError::InvalidClientId(String::new()));
    }

    #[tokio::test]
    async fn endpoints_and_ranges_are_checked() {
        let err = builder("eu-west-1_Abc").endpoint_url("localhost:4566").build().unwrap_err();
        assert!(matches!(err, ConfigError::InvalidEndpoint { .. }), "{err}");
        let err = builder("eu-west-1_Abc").max_attempts(0).build().unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSetting { setting: "max_attempts", .. }));
        let err = builder("eu-west-1_Abc").operation_timeout(Duration::ZERO).build().unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSetting { setting: "operation_timeout", .. }));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_passwords_and_secrets_never_reach_debug_or_error_messages() {
        let b = builder("eu-west-1_Abc")
            .redis("rediss://app:hunter2-password@cache.example.com:6380")
            .redis_secret(b"fleet-secret-0123456789abcdefghij".to_vec());
        let debug = format!("{b:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("fleet-secret"), "{debug}");
        let err = builder("eu-west-1_Abc").redis("rediss://app:hunter2-password@").build().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(redact_password("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn durations_too_long_to_mean_anything_fail_at_build_naming_the_limit() {
        let err = builder("eu-west-1_Abc").cache_ttl(Duration::MAX).build().unwrap_err();
        assert!(matches!(err, ConfigError::InvalidSetting { setting: "cache_ttl", .. }), "{err}");
        assert!(err.to_string().contains("24 hours"), "{err}");
        for (b, setting) in [
            (builder("eu-west-1_Abc").negative_ttl(Duration::MAX), "negative_ttl"),
            (builder("eu-west-1_Abc").stale_if_error(Duration::MAX), "stale_if_error"),
            (builder("eu-west-1_Abc").retry_after(Duration::MAX), "retry_after"),
            (builder("eu-west-1_Abc").jwks_refresh_interval(Duration::MAX), "jwks_refresh_interval"),
            (builder("eu-west-1_Abc").leeway(Duration::MAX), "leeway"),
            (builder("eu-west-1_Abc").operation_timeout(Duration::MAX), "operation_timeout"),
        ] {
            let err = b.build().unwrap_err();
            assert!(matches!(err, ConfigError::InvalidSetting { setting: s, .. } if s == setting), "{err}");
        }
        assert!(builder("eu-west-1_Abc").cache_ttl(Duration::from_secs(24 * 3600)).build().is_ok());
    }

    #[tokio::test]
    async fn an_endpoint_override_also_accepts_the_emulator_issuers() {
        let v = builder("us-east-1_Abc").endpoint_url("http://127.0.0.1:4566/").build().unwrap();
        assert_eq!(&v.issuers()[2..], ["http://127.0.0.1:4566/us-east-1_Abc"]);
    }

    #[test]
    fn issuers_follow_the_partition_of_the_region() {
        for (region, suffix) in [
            ("eu-west-1", "amazonaws.com"),
            ("us-east-1", "amazonaws.com"),
            ("cn-northwest-1", "amazonaws.com.cn"),
            ("us-gov-west-1", "amazonaws.com"),
            ("eusc-de-east-1", "amazonaws.eu"),
            ("us-iso-east-1", "c2s.ic.gov"),
            ("us-isob-east-1", "sc2s.sgov.gov"),
            ("eu-isoe-west-1", "cloud.adc-e.uk"),
            ("us-isof-south-1", "csp.hci.ic.gov"),
        ] {
            let pool = format!("{region}_Abc");
            let v = builder(&pool).build().unwrap();
            assert_eq!(
                v.issuers(),
                [
                    format!("https://cognito-idp.{region}.{suffix}/{pool}"),
                    format!("https://issuer-cognito-idp.{region}.{suffix}/{pool}"),
                ],
                "{region}"
            );
            assert_eq!(
                v.jwks_url(),
                Some(format!("https://cognito-idp.{region}.{suffix}/{pool}/.well-known/jwks.json").as_str())
            );
        }
    }

    #[test]
    fn several_pools_each_keep_their_region_issuers_and_keys() {
        let v = builder("eu-west-1_Abc")
            .pool("us-east-2_Def")
            .allow_issuer("https://idp.example.com/us-east-2_Def")
            .build()
            .unwrap();
        assert_eq!(v.user_pool_ids().collect::<Vec<_>>(), ["eu-west-1_Abc", "us-east-2_Def"]);
        assert_eq!(
            v.issuers(),
            [
                "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc",
                "https://issuer-cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc",
                "https://cognito-idp.us-east-2.amazonaws.com/us-east-2_Def",
                "https://issuer-cognito-idp.us-east-2.amazonaws.com/us-east-2_Def",
                "https://idp.example.com/us-east-2_Def",
            ]
        );
        let err = builder("eu-west-1_Abc").pool("us-east-2_Def").jwks_url("https://keys.example.com").build();
        assert!(matches!(err, Err(ConfigError::InvalidSetting { setting: "jwks_url", .. })));
        let err = builder("eu-west-1_Abc").pool("eu-west-1_Def").pool("us-east-2").build().unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidUserPoolId { value, .. } if value == "us-east-2"),
            "{err}"
        );
        let err = builder("eu-west-1_Abc").pool("us-east-2_Def").region("eu-west-1").build().unwrap_err();
        assert!(matches!(&err, ConfigError::RegionMismatch { pool, .. } if pool == "us-east-2_Def"), "{err}");
    }

    #[tokio::test]
    async fn both_issuer_forms_are_accepted() {
        let v = builder("cn-north-1_Abc").build().unwrap();
        assert_eq!(
            v.issuers(),
            [
                "https://cognito-idp.cn-north-1.amazonaws.com.cn/cn-north-1_Abc",
                "https://issuer-cognito-idp.cn-north-1.amazonaws.com.cn/cn-north-1_Abc"
            ]
        );
    }
}
