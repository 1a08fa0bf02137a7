//! Fleet mode: three instances sharing one real redis-server.
#![cfg(feature = "redis")]

use crate::common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{Rejection, Verifier, VerifyError};
use common::{example, fake_token, seeded, FAKE_CLIENT, FAKE_POOL};

/// A redis-server of the test's own on a free loopback port, stopped when dropped.
pub(crate) struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    pub(crate) async fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Redis { port, child: None };
        redis.restart().await;
        redis
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it (apt-get install redis-server) or run ./scripts/test.sh")
            });
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not listen on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a redis-cli-like command through a fresh connection.
    async fn cmd(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three example servers for the seeded pool, sharing the Redis at `redis_url`, with a 300 s TTL.
pub(crate) async fn three_servers(s: &common::Seeded, redis_url: &str) -> Vec<example::Server> {
    three_servers_with(s, &[("REDIS_URL", redis_url)]).await
}

/// Three example servers for the seeded pool with a 300 s TTL and these fleet-mode variables.
async fn three_servers_with(s: &common::Seeded, redis: &[(&str, &str)]) -> Vec<example::Server> {
    let endpoint = s.proxy.endpoint();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let mut vars = vec![
            ("COGNITO_USER_POOL_ID", s.pool.pool_id.as_str()),
            ("COGNITO_CLIENT_ID", s.pool.client_id.as_str()),
            ("COGNITO_CACHE_TTL_SECS", "300"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            // Every token of these tests is alice's: past the per-user rate (8 calls a second),
            // a quick run of new tokens would get a 503 by design.
            ("COGNITO_MAX_CALLS_PER_USER", "100"),
        ];
        vars.extend_from_slice(redis);
        servers.push(example::start(&vars).await);
    }
    servers
}

/// A fake Cognito that answers each genuine token as the user its claims name.
async fn claims_fake(attributes: &[(&str, &str)]) -> FakeCognito {
    let attributes = attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    FakeCognito::start(Behaviour::Claims { attributes }).await.unwrap()
}

/// Waits until `v` refuses `token` as revoked, failing if it still accepts it `limit` after
/// `started`.
async fn refused_within(v: &Verifier, token: &str, started: Instant, limit: Duration) {
    loop {
        match v.verify(token).await {
            Err(VerifyError::Rejected(Rejection::NotAuthorized)) => return,
            Ok(_) => assert!(started.elapsed() < limit, "still accepted after {limit:?}"),
            Err(e) => panic!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An instance's builder: the fake upstream, fleet mode on `url`.
fn member(fake: &FakeCognito, url: String) -> actix_cognito::VerifierBuilder {
    Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).redis(url)
}

/// `n` instances built (and subscribed) from `builder`.
async fn instances(n: usize, builder: impl Fn() -> actix_cognito::VerifierBuilder) -> Vec<Verifier> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(builder().build_hydrated().await.unwrap());
    }
    out
}

async fn three(fake: &FakeCognito, redis: &Redis) -> Vec<Verifier> {
    instances(3, || member(fake, redis.url())).await
}

#[tokio::test]
async fn a_token_verified_on_one_instance_costs_no_call_on_the_others() {
    let (fake, redis) = (claims_fake(&[("email", "a@example.com")]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let token = fake_token("shared", 3600);
    let first = fleet[0].verify(&token).await.unwrap();
    for v in &fleet[1..] {
        let user = v.verify(&token).await.unwrap();
        assert_eq!(
            (user.username(), user.email(), user.exp()),
            (first.username(), first.email(), first.exp())
        );
        assert_eq!(v.stats().shared_hits, 1);
    }
    assert_eq!(fake.get_user_calls(), 1);

    // 300 requests spread over the three: still that one call.
    for i in 0..300 {
        fleet[i % 3].verify(&token).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 1);

    // Without Redis, each instance asks Cognito itself.
    let alone: Vec<Verifier> = (0..3)
        .map(|_| {
            Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap()
        })
        .collect();
    let other = fake_token("alone", 3600);
    for v in &alone {
        v.verify(&other).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 4);
}

#[tokio::test]
async fn rejections_are_shared_and_entries_never_outlive_exp() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let revoked = fake_token("revoked", 3600);
    fake.revoke(&revoked);
    assert_eq!(fleet[0].verify(&revoked).await.unwrap_err(), VerifyError::Rejected(Rejection::NotAuthorized));
    assert_eq!(fleet[1].verify(&revoked).await.unwrap_err(), VerifyError::Rejected(Rejection::NotAuthorized));
    assert_eq!(fake.get_user_calls(), 1);

    let short = fake_token("short", 3);
    fleet[0].verify(&short).await.unwrap();
    let key_ttl = redis.cmd(&["PTTL", &redis_key_of(&redis, "short").await]).await;
    let redis::Value::Int(ms) = key_ttl else { panic!("{key_ttl:?}") };
    assert!(ms > 0 && ms <= 3_000, "{ms} ms");
}

/// The Redis key holding the verdict of the user whose `sub` is given.
async fn redis_key_of(redis: &Redis, sub: &str) -> String {
    match redis.cmd(&["SMEMBERS", &format!("actix-cognito:u:{{{sub}}}")]).await {
        redis::Value::Array(items) => match &items[0] {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn invalidate_user_on_one_instance_evicts_on_the_others_within_100_ms() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let token = fake_token("evict", 3600);
    for v in &fleet {
        v.verify(&token).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 1);
    // Give each instance's subscription a moment to be in place.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.revoke(&token);
    let started = Instant::now();
    fleet[0].invalidate_user("evict").await;
    for v in &fleet[1..] {
        loop {
            match v.verify(&token).await {
                Err(VerifyError::Rejected(Rejection::NotAuthorized)) => break,
                Ok(_) => {
                    assert!(started.elapsed() < Duration::from_millis(100), "still accepted after 100 ms")
                }
                Err(e) => panic!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
}

#[tokio::test]
async fn junk_under_a_key_is_a_miss() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let token = fake_token("junk", 3600);
    fleet[0].verify(&token).await.unwrap();
    let key = redis_key_of(&redis, "junk").await;
    for junk in ["not json", r#"{"v":1,"until":99999999999999,"user":{"u":1}}"#, r#"{"v":9,"until":1}"#, ""] {
        redis.cmd(&["SET", &key, junk]).await;
        let before = fake.get_user_calls();
        fleet[1].invalidate_all().await;
        redis.cmd(&["SET", &key, junk]).await;
        fleet[2].verify(&token).await.unwrap();
        assert_eq!(fake.get_user_calls(), before + 1, "{junk}");
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_costs_no_error_and_sharing_resumes_after_a_restart() {
    let (fake, mut redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    fleet[0].verify(&fake_token("warm", 3600)).await.unwrap();

    redis.stop();
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        let started = Instant::now();
        let user = fleet[i % 3].verify(&fake_token(&format!("down-{}", i % 10), 3600)).await;
        assert!(user.is_ok(), "{user:?}");
        slowest = slowest.max(started.elapsed());
    }
    // Each instance pays at most one timed-out Redis operation before its breaker opens.
    assert!(slowest < Duration::from_millis(400), "{slowest:?}");

    redis.restart().await;
    // After the breaker's 5 s, each instance tries Redis again and sharing resumes.
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let token = fake_token("after-restart", 3600);
    let before = fake.get_user_calls();
    fleet[0].verify(&token).await.unwrap();
    fleet[1].verify(&token).await.unwrap();
    fleet[2].verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), before + 1);
}

#[tokio::test]
async fn a_malformed_redis_url_fails_at_build() {
    let err = Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).redis("http://nope").build().unwrap_err();
    assert!(err.to_string().contains("redis://"), "{err}");
}

#[tokio::test]
async fn logout_on_one_example_server_is_refused_by_the_others_within_100_ms() {
    let s = seeded("fleet-logout").await;
    let redis = Redis::start().await;
    let servers = three_servers(&s, &redis.url()).await;
    for server in &servers {
        assert_eq!(common::http::get_with_token(server.addr, "/me", &s.tokens.access).await.status, 200);
    }
    assert_eq!(s.proxy.get_user_calls(), 1);

    let logout = common::http::post_with_token(servers[0].addr, "/logout", &s.tokens.access).await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    let started = Instant::now();
    for server in &servers {
        let r = common::http::get_with_token(server.addr, "/me", &s.tokens.access).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
}

/// The Redis key of a token's verdict: in the slot of its user's `sub`.
fn entry_key(token: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let sub = common::claims_of(token)["sub"].as_str().unwrap().to_owned();
    format!("actix-cognito:t:{{{sub}}}:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Whether Redis holds a positive verdict for the token (a shared rejection does not count).
async fn shares_a_user(redis: &Redis, token: &str) -> bool {
    match redis.cmd(&["GET", &entry_key(token)]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap().contains(r#""user":{"#),
        _ => false,
    }
}

/// Copies the value Redis holds under one token's key to another token's key.
async fn copy_entry(redis: &Redis, from: &str, to: &str) {
    let value = match redis.cmd(&["GET", &entry_key(from)]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("no shared verdict for the source token: {other:?}"),
    };
    redis.cmd(&["SET", &entry_key(to), &value, "PX", "60000"]).await;
}

#[tokio::test]
async fn a_genuine_entry_copied_under_a_forged_tokens_key_is_refused() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let genuine = fake_token("victim", 3600);
    fleet[0].verify(&genuine).await.unwrap();
    // Same claims, a signature nobody made: a Redis writer's dream token.
    let forged =
        common::altered(&genuine, &[("scope", serde_json::json!("aws.cognito.signin.user.admin openid"))]);
    copy_entry(&redis, &genuine, &forged).await;
    assert_eq!(common::rejection(fleet[1].verify(&forged).await), Rejection::BadSignature);
    assert_eq!(fake.get_user_calls(), 1);
}

#[tokio::test]
async fn an_admins_entry_copied_under_another_users_token_grants_nothing_of_the_admin() {
    let (fake, redis) = (claims_fake(&[("email", "someone@example.com")]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let signer = actix_cognito::testing::TestSigner::default();
    let mut admin = common::access_claims(FAKE_POOL, FAKE_CLIENT, "admin-sub", 3600);
    admin["cognito:groups"] = serde_json::json!(["admin"]);
    let admin = signer.sign(&admin);
    let bob = signer.sign(&common::access_claims(FAKE_POOL, FAKE_CLIENT, "bob-sub", 3600));
    assert!(fleet[0].verify(&admin).await.unwrap().in_group("admin"));
    copy_entry(&redis, &admin, &bob).await;

    let user = fleet[1].verify(&bob).await.unwrap();
    assert_eq!((user.username(), user.sub()), ("user-bob-sub", "bob-sub"));
    assert!(!user.in_group("admin"), "groups came from Redis: {user:?}");
    // The copied value was a miss: bob was asked about.
    assert_eq!(fake.get_user_calls(), 2);
}

#[tokio::test]
async fn a_sign_out_during_an_in_flight_call_is_not_undone_by_its_answer() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    // Every instance subscribed (a first verification starts the listener).
    for v in &fleet {
        v.verify(&fake_token("warm-up", 3600)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.set_latency(Duration::from_millis(800));
    let token = fake_token("racer", 3600);
    let in_flight = tokio::spawn({
        let (v, token) = (fleet[0].clone(), token.clone());
        async move { v.verify(&token).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The user signs out while instance 0's GetUser call is on its way.
    fake.revoke(&token);
    fleet[1].invalidate_user("racer").await;
    let _ = in_flight.await.unwrap();

    fake.set_latency(Duration::ZERO);
    assert!(!shares_a_user(&redis, &token).await, "the signed-out user is back in Redis");
    for v in &fleet {
        assert_eq!(common::rejection(v.verify(&token).await), Rejection::NotAuthorized);
    }
}

#[tokio::test]
async fn a_verdict_is_not_served_when_an_invalidation_ran_during_its_call_even_before_its_broadcast() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    fake.set_latency(Duration::from_millis(500));
    // Another instance's invalidation of the user, then of everything, whose broadcasts have
    // not reached instance 0 yet: the generations they move stand for them.
    for (sub, generation) in [("slow-user", "actix-cognito:g:{slow-user}"), ("slow-all", "actix-cognito:gen")]
    {
        let token = fake_token(sub, 3600);
        let in_flight = tokio::spawn({
            let (v, token) = (fleet[0].clone(), token.clone());
            async move { v.verify(&token).await }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        redis.cmd(&["INCR", generation]).await;
        in_flight.await.unwrap().unwrap();
        let calls = fake.get_user_calls();
        fleet[1].verify(&token).await.unwrap();
        assert_eq!(
            fake.get_user_calls(),
            calls + 1,
            "{sub}: a verdict crossed by an invalidation was served"
        );
    }
    // Sharing goes on for calls that no invalidation crossed.
    fake.set_latency(Duration::ZERO);
    let calm = fake_token("calm", 3600);
    fleet[0].verify(&calm).await.unwrap();
    assert!(shares_a_user(&redis, &calm).await);
    let calls = fake.get_user_calls();
    fleet[1].verify(&calm).await.unwrap();
    assert_eq!(fake.get_user_calls(), calls);
}

#[tokio::test]
async fn copied_redis_entries_grant_nothing_on_three_example_servers() {
    let s = seeded("fleet-poison").await;
    s.pool.create_user("root", common::PASSWORD, &[]).await.unwrap();
    s.pool.add_to_group("root", "admin").await.unwrap();
    let root = s.pool.sign_in(&s.pool.client_id, "root", common::PASSWORD).await.unwrap().access;
    let alice = s.tokens.access.clone();
    let redis = Redis::start().await;
    let servers = three_servers(&s, &redis.url()).await;
    let get = common::http::get_with_token;
    assert_eq!(get(servers[0].addr, "/admin", &root).await.status, 200);

    // A genuine entry under a forged token's key.
    let forged =
        common::altered(&root, &[("scope", serde_json::json!("aws.cognito.signin.user.admin openid"))]);
    copy_entry(&redis, &root, &forged).await;
    assert_eq!(get(servers[1].addr, "/admin", &forged).await.status, 401);
    assert_eq!(get(servers[1].addr, "/me", &forged).await.status, 401);

    // The admin's entry under another user's genuine token's key.
    copy_entry(&redis, &root, &alice).await;
    assert_eq!(get(servers[2].addr, "/admin", &alice).await.status, 403);
    let me = get(servers[1].addr, "/me", &alice).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["username"], "alice");
    assert_eq!(me.json()["groups"], serde_json::json!([]));
}

#[tokio::test]
async fn redis_settings_apply_in_any_order() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    // The prefix and timeout before `redis(..)`: they still apply.
    let verifier = Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(fake.endpoint())
        .redis_prefix("tenant-x:")
        .redis_timeout(Duration::from_millis(80))
        .redis(redis.url())
        .build_hydrated()
        .await
        .unwrap();
    let token = fake_token("ordered", 3600);
    verifier.verify(&token).await.unwrap();
    let key = entry_key(&token).replacen("actix-cognito:", "tenant-x:", 1);
    assert_eq!(redis.cmd(&["EXISTS", &key]).await, redis::Value::Int(1));
    assert_eq!(redis.cmd(&["EXISTS", &entry_key(&token)]).await, redis::Value::Int(0));
    let err =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).redis(redis.url()).redis_prefix("a*").build();
    assert!(matches!(err, Err(actix_cognito::ConfigError::InvalidSetting { setting: "redis_prefix", .. })));
}

#[tokio::test]
async fn a_revoked_session_is_refused_by_every_instance_within_100_ms() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let session = |n: u32| {
        let mut claims = common::access_claims(FAKE_POOL, FAKE_CLIENT, "roaming", 3600);
        claims["origin_jti"] = "session-1".into();
        claims["jti"] = format!("token-{n}").into();
        actix_cognito::testing::TestSigner::default().sign(&claims)
    };
    let (a, b) = (session(1), session(2));
    let other = fake_token("roaming-other-device", 3600);
    for v in &fleet {
        for token in [&a, &b, &other] {
            v.verify(token).await.unwrap();
        }
    }
    assert_eq!(fake.get_user_calls(), 3);
    fake.revoke(&a);
    fake.revoke(&b);
    fleet[0].revoke_session(&a, "refresh", None).await.unwrap();
    let started = Instant::now();
    for v in &fleet[1..] {
        for token in [&a, &b] {
            refused_within(v, token, started, Duration::from_millis(100)).await;
        }
        v.verify(&other).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert!(!shares_a_user(&redis, &a).await && !shares_a_user(&redis, &b).await);
    assert!(shares_a_user(&redis, &other).await);
}

/// A redis-server that speaks only TLS, with a certificate from a private CA, and one ACL user
/// limited to the crate's prefix and the commands README lists.
struct TlsRedis {
    port: u16,
    child: Child,
    ca_pem: String,
    dir: std::path::PathBuf,
}

/// The ACL rules of the README's `ACL SETUSER` line, after the user's name and password.
pub(crate) const ACL_RULES: &[&str] = &[
    "~actix-cognito:*",
    "&actix-cognito:*",
    "-@all",
    "+get",
    "+set",
    "+del",
    "+incr",
    "+sadd",
    "+smembers",
    "+pexpire",
    "+pfadd",
    "+pfcount",
    "+publish",
    "+subscribe",
    "+spublish",
    "+ssubscribe",
    "+cluster|slots",
    "+hello",
    "+ping",
];

fn private_ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "actix-cognito test CA");
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (rcgen::Issuer::new(params, key), pem)
}

/// Writes a private CA (`ca.pem`) and a server certificate for localhost and 127.0.0.1 signed by
/// it (`cert.pem`, `key.pem`) into `dir`; the CA's PEM.
pub(crate) fn write_tls_files(dir: &std::path::Path) -> String {
    let (ca, ca_pem) = private_ca();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    for (name, pem) in
        [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem()), ("ca.pem", ca_pem.clone())]
    {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    ca_pem
}

impl TlsRedis {
    async fn start() -> TlsRedis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("actix-cognito-tls-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = write_tls_files(&dir);
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let mut args: Vec<String> = ["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"]
            .map(String::from)
            .to_vec();
        args.extend(["--tls-cert-file".into(), path("cert.pem"), "--tls-key-file".into(), path("key.pem")]);
        args.extend(["--tls-ca-cert-file".into(), path("ca.pem"), "--tls-auth-clients".into(), "no".into()]);
        args.extend(["--save", "", "--appendonly", "no", "--user", "default", "off"].map(String::from));
        args.extend(["--user", "app", "on", ">s3cret-pass"].map(String::from));
        args.extend(ACL_RULES.iter().map(|r| r.to_string()));
        let log = std::fs::File::create(dir.join("redis.log")).unwrap();
        let child = Command::new("redis-server").args(&args).stdout(log).spawn().unwrap();
        // Dropped (killed and waited for) however this ends.
        let redis = TlsRedis { port, child, ca_pem, dir };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the TLS redis-server did not listen; see {}", redis.dir.join("redis.log").display());
    }

    fn url(&self) -> String {
        format!("rediss://app:s3cret-pass@localhost:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[tokio::test]
async fn fleet_mode_works_over_tls_with_a_private_ca_as_the_restricted_acl_user() {
    let (fake, redis) = (claims_fake(&[]).await, TlsRedis::start().await);
    let fleet = instances(3, || {
        member(&fake, redis.url())
            .redis_ca_pem(redis.ca_pem.clone())
            .redis_timeout(Duration::from_millis(500))
    })
    .await;
    let token = fake_token("over-tls", 3600);
    for v in &fleet {
        v.verify(&token).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 1, "verdicts are not shared over TLS");
    fake.revoke(&token);
    fleet[0].invalidate_user("over-tls").await;
    let started = Instant::now();
    for v in &fleet[1..] {
        while v.verify(&token).await.is_ok() {
            assert!(started.elapsed() < Duration::from_millis(200), "still accepted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Another CA: Redis is skipped (and the failure logged); requests are answered.
    let (_, wrong_ca) = private_ca();
    let v = member(&fake, redis.url()).redis_ca_pem(wrong_ca).build().unwrap();
    v.verify(&fake_token("untrusted", 3600)).await.unwrap();
    assert_eq!(v.stats().shared_hits, 0);
    assert_eq!(v.readiness().redis, Some(actix_cognito::RedisState::Down));
}

/// Two instances behind sticky sessions, each seeing half of 100 tokens, as the restricted ACL
/// user: the TTL fits the fleet's 100 tokens, not each instance's 50.
/// The bar over TLS: three example servers given a private CA (`REDIS_CA_FILE`), the restricted
/// ACL user and a fleet secret share verdicts and sign-outs, and a genuine entry copied under a
/// forged token's key grants nothing.
#[tokio::test]
async fn three_example_servers_share_over_tls_as_the_restricted_acl_user() {
    let s = seeded("fleet-tls").await;
    let redis = TlsRedis::start().await;
    let ca_file = redis.dir.join("ca-for-servers.pem");
    std::fs::write(&ca_file, &redis.ca_pem).unwrap();
    let servers = three_servers_with(
        &s,
        &[
            ("REDIS_URL", &redis.url()),
            ("REDIS_CA_FILE", ca_file.to_str().unwrap()),
            ("REDIS_SECRET", "0123456789abcdef0123456789abcdef"),
        ],
    )
    .await;
    let get = common::http::get_with_token;
    // One call for the three, with fresh tokens up to three times: on a starved machine a Redis
    // operation can outlast the 50 ms timeout and open an instance's breaker for 5 s, which
    // skips Redis by design. Sharing that never works fails all three.
    let mut calls = Vec::new();
    for attempt in 0..3 {
        let token = match attempt {
            0 => s.tokens.access.clone(),
            _ => s.pool.sign_in(&s.pool.client_id, "alice", common::PASSWORD).await.unwrap().access,
        };
        let before = s.proxy.get_user_calls();
        for server in &servers {
            assert_eq!(get(server.addr, "/me", &token).await.status, 200);
        }
        calls.push(s.proxy.get_user_calls() - before);
        if calls[attempt] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert_eq!(calls.last(), Some(&1), "verdicts are not shared over TLS: {calls:?} calls for three servers");
    for server in &servers {
        assert_eq!(get(server.addr, "/me", &s.tokens.access).await.status, 200);
    }

    // A forged token (the genuine one's claims, another scope, the same signature): 401.
    let forged = common::altered(
        &s.tokens.access,
        &[("scope", serde_json::json!("aws.cognito.signin.user.admin openid"))],
    );
    assert_eq!(get(servers[1].addr, "/me", &forged).await.status, 401);

    logout_reaches_the_others_within(&servers, &s.tokens.access, Duration::from_millis(200)).await;
}

/// `POST /logout` on the first server; the others answer 401 for the token within `limit`.
pub(crate) async fn logout_reaches_the_others_within(
    servers: &[example::Server],
    token: &str,
    limit: Duration,
) {
    let logout = common::http::post_with_token(servers[0].addr, "/logout", token).await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    let started = Instant::now();
    for server in &servers[1..] {
        loop {
            let r = common::http::get_with_token(server.addr, "/me", token).await;
            if r.status == 401 {
                break;
            }
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(started.elapsed() < limit, "still 200 after {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("logout refused on the others within {:?}", started.elapsed());
}

#[tokio::test]
async fn a_budget_fits_the_whole_fleets_population() {
    let (fake, redis) = (claims_fake(&[]).await, TlsRedis::start().await);
    let fleet = instances(2, || {
        member(&fake, redis.url())
            .redis_ca_pem(redis.ca_pem.clone())
            .redis_timeout(Duration::from_millis(500))
            .cache_ttl(Duration::from_secs(1))
            .get_user_budget(5)
    })
    .await;
    let tokens: Vec<String> = (0..100).map(|i| fake_token(&format!("fleet-user-{i}"), 3600)).collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        for (i, token) in tokens.iter().enumerate() {
            fleet[i % 2].verify(token).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 100 / (0.85 x 5) = 23.5 s; each instance alone would pick 11.8 s.
    for v in &fleet {
        let ttl = v.effective_cache_ttl();
        assert!((Duration::from_secs(18)..=Duration::from_secs(27)).contains(&ttl), "{ttl:?}");
        assert_eq!(v.readiness().redis, Some(actix_cognito::RedisState::Up));
    }
}

#[tokio::test]
async fn a_token_invalidated_on_one_instance_is_dropped_on_the_others_and_only_that_token() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = instances(2, || member(&fake, redis.url())).await;
    let (token, other) = (fake_token("one-token", 3600), fake_token("one-token", 3599));
    for v in &fleet {
        v.verify(&token).await.unwrap();
        v.verify(&other).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), 2);
    fake.revoke(&token);
    fleet[0].invalidate_token(&token).await;
    let started = Instant::now();
    while fleet[1].verify(&token).await.is_ok() {
        assert!(started.elapsed() < Duration::from_secs(1), "still cached on the other instance");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The user's other token stays cached there.
    let calls = fake.get_user_calls();
    fleet[1].verify(&other).await.unwrap();
    assert_eq!(fake.get_user_calls(), calls);
}

#[tokio::test]
async fn with_a_fleet_secret_a_value_written_without_it_is_a_miss() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let fleet = instances(2, || member(&fake, redis.url()).redis_secret(secret.clone())).await;
    let (token, other) = (fake_token("sealed", 3600), fake_token("sealed-other", 3600));
    fleet[0].verify(&token).await.unwrap();
    fleet[0].verify(&other).await.unwrap();
    fleet[1].verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 2, "sealed values are shared");

    // The token is signed out; a Redis writer without the secret puts a verdict back, as the
    // JSON an instance would write, or as another token's sealed value.
    fake.revoke(&token);
    fleet[0].invalidate_token(&token).await;
    let sealed = match redis.cmd(&["GET", &entry_key(&other)]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        v => panic!("{v:?}"),
    };
    let (_, json) = sealed.split_once('.').unwrap();
    let json = json.replace("sealed-other", "sealed");
    for forged in [json.as_str(), sealed.as_str()] {
        redis.cmd(&["SET", &entry_key(&token), forged, "PX", "60000"]).await;
        fleet[1].invalidate_token(&token).await;
        redis.cmd(&["SET", &entry_key(&token), forged, "PX", "60000"]).await;
        assert_eq!(common::rejection(fleet[1].verify(&token).await), Rejection::NotAuthorized);
    }
    let short = Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .redis(redis.url())
        .redis_secret(b"short".to_vec());
    assert!(matches!(
        short.build(),
        Err(actix_cognito::ConfigError::InvalidSetting { setting: "redis_secret", .. })
    ));
}

/// A token of user `sub` issued `ago` seconds ago.
fn issued_ago(sub: &str, jti: &str, ago: i64) -> String {
    let mut claims = common::access_claims(FAKE_POOL, FAKE_CLIENT, sub, 3600);
    claims["iat"] = (common::unix_now() - ago).into();
    claims["jti"] = jti.into();
    actix_cognito::testing::TestSigner::default().sign(&claims)
}

#[tokio::test]
async fn revoke_user_refuses_the_users_older_tokens_on_every_instance_at_once_without_a_call() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = three(&fake, &redis).await;
    let tokens: Vec<String> = (0..3).map(|i| issued_ago("revoked-user", &format!("t{i}"), 10)).collect();
    let bystander = issued_ago("bystander", "b", 10);
    for v in &fleet {
        for token in tokens.iter().chain([&bystander]) {
            v.verify(token).await.unwrap();
        }
    }
    let calls = fake.get_user_calls();
    assert_eq!(calls, 4);
    fleet[0].revoke_user("revoked-user").await;
    let started = Instant::now();
    for v in &fleet {
        for token in &tokens {
            refused_within(v, token, started, Duration::from_millis(100)).await;
        }
        v.verify(&bystander).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), calls, "refused locally, without GetUser");
    // Issued in the same second or later: verified normally.
    let fresh = issued_ago("revoked-user", "after", 0);
    fleet[1].verify(&fresh).await.unwrap();
    // An instance that starts later learns the watermark from Redis on its first miss.
    let late = three(&fake, &redis).await.remove(0);
    assert_eq!(common::rejection(late.verify(&tokens[0]).await), Rejection::NotAuthorized);
    // invalidate_user refuses nothing: it makes the next request ask Cognito again.
    fleet[2].invalidate_user("bystander").await;
    fleet[2].verify(&bystander).await.unwrap();
}

#[tokio::test]
async fn a_forged_watermark_broadcast_refuses_no_one_when_the_fleet_has_a_secret() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let v = instances(1, || member(&fake, redis.url()).redis_secret(secret.clone())).await.remove(0);
    let token = issued_ago("target", "t", 10);
    v.verify(&token).await.unwrap();
    let at = (common::unix_now() + 100).to_string();
    redis.cmd(&["PUBLISH", "actix-cognito:invalidate", &format!("w:{at}:-:target")]).await;
    redis.cmd(&["SET", "actix-cognito:w:{target}", &at]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    v.verify(&token).await.unwrap();
    v.invalidate_token(&token).await;
    v.verify(&token).await.unwrap();
}

/// Built outside a runtime (before `#[actix_web::main]` starts one, say), a verifier cannot
/// subscribe at once: it must at `hydrate`, not consider itself subscribed for good.
#[tokio::test]
async fn a_verifier_built_outside_a_runtime_subscribes_when_hydrated() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let builder = member(&fake, redis.url());
    let outside = std::thread::spawn(move || builder.build().unwrap()).join().unwrap();
    outside.hydrate().await.unwrap();
    let other = member(&fake, redis.url()).build_hydrated().await.unwrap();
    let token = fake_token("built-outside", 3600);
    outside.verify(&token).await.unwrap();
    fake.revoke(&token);
    other.invalidate_token(&token).await;
    refused_within(&outside, &token, Instant::now(), Duration::from_secs(2)).await;
}

/// Refresh-ahead in a fleet: the instance that refreshes a token first shares its verdict, and
/// the other takes it from Redis (younger than its own refresh point) instead of calling.
#[tokio::test]
async fn in_a_fleet_one_instance_refreshes_a_token_and_the_other_reads_its_verdict() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    // A Redis timeout with room for a starved machine: this is about refreshes, not Redis's speed.
    let ttl = Duration::from_secs(6);
    let fleet =
        instances(2, || member(&fake, redis.url()).cache_ttl(ttl).redis_timeout(Duration::from_millis(500)))
            .await;
    let (a, b) = (&fleet[0], &fleet[1]);
    let token = fake_token("refreshed-in-a-fleet", 3600);
    let started = Instant::now();
    a.verify(&token).await.unwrap();
    b.verify(&token).await.unwrap();
    assert_eq!(fake.get_user_calls(), 1, "the first verdict was not shared");
    // Past both refresh points (at most 0.875 of the TTL): A's hit refreshes, with a call.
    tokio::time::sleep_until((started + ttl.mul_f64(0.88)).into()).await;
    a.verify(&token).await.unwrap();
    let refreshed = Instant::now();
    while fake.get_user_calls() < 2 {
        assert!(refreshed.elapsed() < Duration::from_secs(1), "A did not refresh");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B's hit refreshes too, and finds A's younger verdict in Redis: no call.
    let misses = b.stats().misses;
    b.verify(&token).await.unwrap();
    tokio::time::sleep_until((started + ttl + Duration::from_millis(300)).into()).await;
    b.verify(&token).await.unwrap();
    assert_eq!(b.stats().misses, misses, "B's verdict expired: its refresh did not renew it");
    assert_eq!(fake.get_user_calls(), 2, "B called Cognito instead of reading A's refreshed verdict");
}

/// `hydrate` connects to Redis, not only subscribes: the first requests neither pay the
/// connection (a TLS handshake on a busy machine takes longer than the 50 ms operation timeout)
/// nor trip the breaker doing it.
#[tokio::test]
async fn hydrate_connects_to_redis_before_the_first_request() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let clients = || async {
        match redis.cmd(&["CLIENT", "LIST"]).await {
            redis::Value::BulkString(bytes) => String::from_utf8(bytes).unwrap().lines().count(),
            redis::Value::VerbatimString { text, .. } => text.lines().count(),
            other => panic!("CLIENT LIST answered {other:?}"),
        }
    };
    let before = clients().await;
    let _v = member(&fake, redis.url()).build_hydrated().await.unwrap();
    // The subscription's connection and the commands' one (each count includes the asking one).
    assert_eq!(clients().await, before + 2, "hydrate left the command connection to the first request");
}

/// Without a secret, a writer to Redis can publish or store a watermark dated far in the future,
/// which would refuse the user's every token, new ones included, until every instance restarts.
/// A mark more than a minute ahead is ignored (and logged); a genuine revocation still works.
#[tokio::test]
async fn a_watermark_dated_in_the_future_refuses_nobody() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = instances(2, || member(&fake, redis.url())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.cmd(&["PUBLISH", "actix-cognito:invalidate", &format!("w:{}:-:future-user", i64::MAX)]).await;
    redis.cmd(&["SET", "actix-cognito:w:{stored-user}", "99999999999"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for v in &fleet {
        v.verify(&fake_token("future-user", 3600)).await.expect("a future broadcast mark refused a user");
        v.verify(&fake_token("stored-user", 3600)).await.expect("a future stored mark refused a user");
    }
    // A mark of now still refuses the tokens issued before it, everywhere.
    let mut claims = common::access_claims(FAKE_POOL, FAKE_CLIENT, "genuine", 3600);
    claims["iat"] = (claims["iat"].as_i64().unwrap() - 10).into();
    let old = actix_cognito::testing::TestSigner::default().sign(&claims);
    fleet[1].verify(&old).await.unwrap();
    fleet[0].revoke_user("genuine").await;
    refused_within(&fleet[1], &old, Instant::now(), Duration::from_secs(10)).await;
}

/// Fleet mode without a secret says so when the verifier is built, and what it trusts.
#[test]
fn fleet_mode_without_a_secret_warns_at_start_up() {
    let (warnings, _guard) = common::capture_warnings();
    let build = |secret: Option<&str>| {
        let b = Verifier::builder(FAKE_POOL)
            .client_id(FAKE_CLIENT)
            .endpoint_url("http://127.0.0.1:9")
            .redis("redis://127.0.0.1:9");
        match secret {
            Some(s) => b.redis_secret(s.as_bytes().to_vec()),
            None => b,
        }
        .build()
        .unwrap()
    };
    drop(build(Some("a secret of at least thirty-two bytes!")));
    assert!(!warnings.text().contains("without a secret"), "{}", warnings.text());
    drop(build(None));
    let text = warnings.text();
    assert!(text.contains("fleet mode without a secret") && text.contains("forge"), "{text}");
}

/// A writer's junk under the fleet's keys (a set where a counter belongs) makes those reads
/// misses; it does not open the breaker, so the instance's broadcasts still go out: an
/// invalidation made on A reaches B at once.
#[tokio::test]
async fn keys_of_the_wrong_type_are_misses_and_do_not_silence_the_broadcasts() {
    let (fake, redis) = (claims_fake(&[]).await, Redis::start().await);
    let fleet = instances(2, || member(&fake, redis.url())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.cmd(&["SADD", "actix-cognito:gen", "x"]).await;
    redis.cmd(&["SADD", "actix-cognito:g:{poisoned}", "x"]).await;
    let token = fake_token("poisoned", 3600);
    // B holds the token in its cache and its front.
    for _ in 0..4 {
        fleet[1].verify(&token).await.unwrap();
    }
    // A verifies a fresh token: its reads and writes of the poisoned keys fail by type.
    fleet[0].verify(&fake_token("poisoned-fresh", 3600)).await.unwrap();
    fleet[0].verify(&token).await.unwrap();
    assert_eq!(fleet[0].readiness().redis, Some(actix_cognito::RedisState::Up), "the breaker opened");
    fake.revoke(&token);
    let started = Instant::now();
    fleet[0].invalidate_user("poisoned").await;
    refused_within(&fleet[1], &token, started, Duration::from_secs(1)).await;
}
