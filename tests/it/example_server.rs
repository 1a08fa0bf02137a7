//! The example server, run as its own process against the emulator and driven over HTTP.

use crate::common;

use common::example::{command, start};
use common::http::{get, get_with_token};
use common::{sample, seeded, PASSWORD};

#[tokio::test]
async fn the_example_server_behaves_as_documented() {
    let s = seeded("example").await;
    s.pool.create_user("root", PASSWORD, &[]).await.unwrap();
    s.pool.add_to_group("root", "admin").await.unwrap();
    let root = s.pool.sign_in(&s.pool.client_id, "root", PASSWORD).await.unwrap();
    let endpoint = s.proxy.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", &s.pool.pool_id),
        ("COGNITO_CLIENT_ID", &format!("otherclient1, {}", s.pool.client_id)),
        ("COGNITO_CACHE_TTL_SECS", "60"),
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_REGION", "us-east-1"),
    ])
    .await;
    let addr = server.addr;

    let health = get(addr, "/health", &[]).await;
    assert_eq!((health.status, health.json()["status"].as_str()), (200, Some("ok")));

    let me = get_with_token(addr, "/me", &s.tokens.access).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let me = me.json();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["sub"], me["attributes"]["sub"]);
    for (name, value) in common::ALICE_ATTRIBUTES {
        assert_eq!(me["attributes"][name], *value, "{name}");
    }
    assert_eq!(me["groups"], serde_json::json!([]));
    assert_eq!(me["scopes"], serde_json::json!(["aws.cognito.signin.user.admin"]));
    assert_eq!(me["claims"]["client_id"], s.pool.client_id.as_str());
    assert_eq!(me["claims"]["token_use"], "access");
    assert_eq!(
        me["claims"]["iss"],
        format!("https://cognito-idp.us-east-1.amazonaws.com/{}", s.pool.pool_id)
    );
    assert_eq!(me["claims"]["exp"], common::claims_of(&s.tokens.access)["exp"]);

    let anonymous = get(addr, "/me", &[]).await;
    assert_eq!(anonymous.status, 401);
    let metadata = format!("http://127.0.0.1:{}/.well-known/oauth-protected-resource", addr.port());
    let challenge = format!(r#"Bearer realm="api", resource_metadata="{metadata}""#);
    assert_eq!(anonymous.header("www-authenticate"), Some(challenge.as_str()));

    let bad = get_with_token(addr, "/me", &s.tokens.id).await;
    assert_eq!(bad.status, 401);
    assert!(bad.header("www-authenticate").unwrap().contains(r#"error="invalid_token""#));

    let not_admin = get_with_token(addr, "/admin", &s.tokens.access).await;
    assert_eq!(not_admin.status, 403);
    let admin = get_with_token(addr, "/admin", &root.access).await;
    assert_eq!(admin.status, 200, "{}", admin.body);

    // /me and /admin share one cache: alice cost one call, root one.
    assert_eq!(s.proxy.get_user_calls(), 2);
}

#[tokio::test]
async fn the_example_server_refuses_to_start_with_a_bad_configuration() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("COGNITO_CLIENT_ID", "abc")], "COGNITO_USER_POOL_ID"),
        (&[("COGNITO_USER_POOL_ID", "eu-west-1_Abc")], "COGNITO_CLIENT_ID"),
        (&[("COGNITO_USER_POOL_ID", "eu-west-1"), ("COGNITO_CLIENT_ID", "abc")], "<region>_<id>"),
        (
            &[
                ("COGNITO_USER_POOL_ID", "eu-west-1_Abc"),
                ("COGNITO_CLIENT_ID", "abc"),
                ("AWS_REGION", "us-east-1"),
            ],
            "set it to `eu-west-1`",
        ),
    ];
    for (vars, hint) in cases {
        let out = command(vars).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{vars:?}: {err}");
        assert!(err.contains(hint), "{vars:?}: {err}");
    }
    // A set but unreadable value is refused by name, not read as unset: a REDIS_SECRET that
    // is not UTF-8 would otherwise run fleet mode without its MAC.
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"secret-\xff-of-at-least-32-bytes-long!!");
    let base = [("COGNITO_USER_POOL_ID", "eu-west-1_Abc"), ("COGNITO_CLIENT_ID", "abc")];
    for name in ["REDIS_SECRET", "REDIS_URL", "COGNITO_CACHE_TTL_SECS"] {
        // The secret is read with a Redis URL (one nothing listens on: it is never reached).
        let mut child =
            command(&base).env("REDIS_URL", "redis://127.0.0.1:9").env(name, not_utf8).spawn().unwrap();
        // Read as unset, it would start and serve: a failure, not a hang.
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                panic!("the example server started with a {name} that is not UTF-8");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&format!("{name} is set but is not UTF-8")), "{name}: {err}");
    }
}

/// The example server for the seeded pool, at `endpoint`, with a 1 s TTL and nothing else.
async fn with_a_one_second_ttl(s: &common::Seeded, endpoint: &str) -> common::example::Server {
    start(&[
        ("COGNITO_USER_POOL_ID", &s.pool.pool_id),
        ("COGNITO_CLIENT_ID", &s.pool.client_id),
        ("COGNITO_CACHE_TTL_SECS", "1"),
        ("AWS_ENDPOINT_URL", endpoint),
    ])
    .await
}

/// What a new user of cognito-local sees: its default configuration (pool `local_...`, issuer
/// `http://localhost:{port}`), reached either way, with no region and no issuer setting.
#[tokio::test]
async fn the_example_server_works_with_cognito_local_as_it_comes() {
    let s = common::seeded_on(common::Kind::CognitoLocal, "example-local").await;
    assert!(s.pool.pool_id.starts_with("local_"), "{}", s.pool.pool_id);
    s.pool.create_user("root", PASSWORD, &[]).await.unwrap();
    s.pool.add_to_group("root", "admin").await.unwrap();
    let root = s.pool.sign_in(&s.pool.client_id, "root", PASSWORD).await.unwrap();
    let port = s.emulator.endpoint().rsplit(':').next().unwrap().to_owned();
    for host in ["127.0.0.1", "localhost"] {
        let endpoint = format!("http://{host}:{port}");
        let server = with_a_one_second_ttl(&s, &endpoint).await;
        let addr = server.addr;
        let me = get_with_token(addr, "/me", &s.tokens.access).await;
        assert_eq!(me.status, 200, "{endpoint}: {}", me.body);
        assert_eq!(me.json()["username"], s.pool.username("alice"));
        assert_eq!(me.json()["attributes"]["custom:tenant"], "acme");
        assert_eq!(get_with_token(addr, "/admin", &root.access).await.status, 200);
        assert_eq!(get_with_token(addr, "/admin", &s.tokens.access).await.status, 403);
        assert_eq!(get_with_token(addr, "/me", "garbage").await.status, 401);
        let tampered = common::altered(&s.tokens.access, &[("username", serde_json::json!("root"))]);
        assert_eq!(get_with_token(addr, "/me", &tampered).await.status, 401);
        // cognito-local cannot sign out: that is the upstream's trouble, not the token's.
        let logout = common::http::post_with_token(addr, "/logout", &s.tokens.access).await;
        assert_eq!(logout.status, 503, "{}", logout.body);
    }

    // A deleted user is refused within TTL + 1 s.
    let endpoint = s.emulator.endpoint().to_owned();
    let server = with_a_one_second_ttl(&s, &endpoint).await;
    assert_eq!(get_with_token(server.addr, "/me", &s.tokens.access).await.status, 200);
    s.revoke(common::Revoke::AdminDeleteUser).await;
    let deleted = std::time::Instant::now();
    while get_with_token(server.addr, "/me", &s.tokens.access).await.status == 200 {
        assert!(deleted.elapsed() < std::time::Duration::from_secs(2), "a deleted user still passes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(get_with_token(server.addr, "/me", &s.tokens.access).await.status, 401);
}

/// LocalStack behind a remapped port names 4566 in its tokens; an emulator with an issuer of its
/// own needs `COGNITO_ALLOW_ISSUER`.
#[tokio::test]
async fn the_example_server_accepts_emulator_issuers_on_loopback_and_allowed_ones_only() {
    use actix_cognito::testing::{FakeCognito, TestSigner};
    let fake = FakeCognito::user("alice", &[("email", "alice@example.com")]).await.unwrap();
    let pool = "us-east-1_Emulated1";
    let token_from = |iss: &str| {
        let mut claims = common::access_claims(pool, "client1", "s1", 3600);
        claims["iss"] = iss.into();
        TestSigner::default().sign(&claims)
    };
    let vars = |allow: &'static str| {
        let endpoint = fake.endpoint();
        let mut vars = vec![
            ("COGNITO_USER_POOL_ID", pool.to_owned()),
            ("COGNITO_CLIENT_ID", "client1".to_owned()),
            ("AWS_ENDPOINT_URL", endpoint),
        ];
        if !allow.is_empty() {
            vars.push(("COGNITO_ALLOW_ISSUER", allow.to_owned()));
        }
        vars
    };
    let plain = vars("");
    let plain: Vec<(&str, &str)> = plain.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start(&plain).await;
    let localstack = token_from(&format!("http://localhost.localstack.cloud:4566/{pool}"));
    assert_eq!(get_with_token(server.addr, "/me", &localstack).await.status, 200);
    let arbitrary = token_from(&format!("https://auth.dev.example.com/{pool}"));
    let refused = get_with_token(server.addr, "/me", &arbitrary).await;
    assert_eq!(refused.status, 401);
    let challenge = refused.header("www-authenticate").unwrap();
    assert!(challenge.contains("issuer"), "{challenge}");

    let allowed = vars(" https://other.example.com , https://auth.dev.example.com/us-east-1_Emulated1");
    let allowed: Vec<(&str, &str)> = allowed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = start(&allowed).await;
    assert_eq!(get_with_token(server.addr, "/me", &arbitrary).await.status, 200);
}

#[tokio::test]
async fn the_example_server_serves_two_pools_and_refuses_a_third_without_a_call() {
    let s = common::seeded("example-pool-a").await;
    let b = s.emulator.create_pool("example-pool-b").await.unwrap();
    b.create_user("bob", PASSWORD, &[]).await.unwrap();
    let bob = b.sign_in(&b.client_id, "bob", PASSWORD).await.unwrap();
    let c = s.emulator.create_pool("example-pool-c").await.unwrap();
    c.create_user("carol", PASSWORD, &[]).await.unwrap();
    let carol = c.sign_in(&c.client_id, "carol", PASSWORD).await.unwrap();
    let endpoint = s.proxy.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", &format!("{},{}", s.pool.pool_id, b.pool_id)),
        ("COGNITO_CLIENT_ID", &format!("{},{},{}", s.pool.client_id, b.client_id, c.client_id)),
        ("AWS_ENDPOINT_URL", &endpoint),
    ])
    .await;
    for (token, pool, user) in
        [(&s.tokens.access, &s.pool.pool_id, "alice"), (&bob.access, &b.pool_id, "bob")]
    {
        let me = get_with_token(server.addr, "/me", token).await;
        assert_eq!(me.status, 200, "{}", me.body);
        assert_eq!(
            (me.json()["pool"].as_str(), me.json()["username"].as_str()),
            (Some(pool.as_str()), Some(user))
        );
    }
    assert_eq!(s.proxy.get_user_calls(), 2);
    assert_eq!(get_with_token(server.addr, "/me", &carol.access).await.status, 401);
    assert_eq!(s.proxy.get_user_calls(), 2);
}

/// Refresh-ahead through the example server: Cognito 80 ms away, a 6 s TTL (a refresh has 0.75
/// to 1.5 s to come back, ample on a busy machine), five tokens in use for three TTLs. No request after the first of each token is a cache miss (none waited on
/// `GetUser`), and each token costs at most 1.5 calls per TTL.
#[tokio::test]
async fn the_example_server_refreshes_tokens_in_use_so_that_no_request_waits_on_cognito() {
    let s = seeded("refresh-example").await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(s.pool.sign_in(&s.pool.client_id, "alice", PASSWORD).await.unwrap().access);
    }
    s.proxy.set_latency(std::time::Duration::from_millis(80));
    let endpoint = s.proxy.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", &s.pool.pool_id),
        ("COGNITO_CLIENT_ID", &s.pool.client_id),
        ("COGNITO_CACHE_TTL_SECS", "6"),
        ("AWS_ENDPOINT_URL", &endpoint),
    ])
    .await;
    let addr = server.addr;
    for token in &tokens {
        assert_eq!(get_with_token(addr, "/me", token).await.status, 200);
    }
    let misses = |page: &str| sample(page, "actix_cognito_cache_misses_total{level=\"local\"}");
    let before = get(addr, "/metrics", &[]).await.body;
    let calls_before = s.proxy.get_user_calls();
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(18) {
        for token in &tokens {
            let reply = get_with_token(addr, "/me", token).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = get(addr, "/metrics", &[]).await.body;
    let calls = s.proxy.get_user_calls() - calls_before;
    let renewed = sample(&after, "actix_cognito_refreshes_total{outcome=\"renewed\"}");
    eprintln!("over 3 TTLs: {calls} GetUser calls for 5 tokens, {renewed} refreshes renewed");
    assert_eq!(misses(&after), misses(&before), "a request of a token in use waited on GetUser");
    assert!(renewed >= 10.0, "{renewed} refreshes for 5 tokens over 3 TTLs");
    assert!(calls as f64 <= 5.0 * 3.0 * 1.5, "{calls} calls for 5 tokens over 3 TTLs");
}

/// `COGNITO_AUDIENCE`: moto's tokens carry no `aud`, so with an audience required each is a 401
/// `invalid_token` naming the audience, at no `GetUser` call.
#[tokio::test]
async fn the_example_server_refuses_a_token_without_the_required_audience_at_no_call() {
    let s = seeded("audience-example").await;
    let endpoint = s.proxy.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", &s.pool.pool_id),
        ("COGNITO_CLIENT_ID", &s.pool.client_id),
        ("COGNITO_AUDIENCE", "https://api.example.com, https://other.example.com"),
        ("AWS_ENDPOINT_URL", &endpoint),
    ])
    .await;
    let reply = get_with_token(server.addr, "/me", &s.tokens.access).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("error=\"invalid_token\"") && challenge.contains("audience"), "{challenge}");
    assert_eq!(s.proxy.get_user_calls(), 0);
}

/// `/sensitive` with `COGNITO_STEP_UP_ACR` and `COGNITO_STEP_UP_MAX_AGE_SECS`: moto's tokens carry
/// no `acr`, so each gets RFC 9470's challenge there and passes `/me`; a signed-out token gets
/// `invalid_token` on both. Tokens at the level come from the test signer, through a fake.
#[tokio::test]
async fn the_example_server_asks_for_step_up_on_the_sensitive_route_only() {
    let s = seeded("step-up-example").await;
    let endpoint = s.proxy.endpoint();
    let vars = |acr: &'static str| {
        [
            ("COGNITO_USER_POOL_ID", s.pool.pool_id.clone()),
            ("COGNITO_CLIENT_ID", s.pool.client_id.clone()),
            ("COGNITO_STEP_UP_ACR", acr.to_owned()),
            ("COGNITO_STEP_UP_MAX_AGE_SECS", "600".to_owned()),
            ("AWS_ENDPOINT_URL", endpoint.clone()),
        ]
    };
    let owned = vars("urn:cognito:loa:3, urn:cognito:loa:4");
    let server = start(&owned.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>()).await;
    let addr = server.addr;
    let r = get_with_token(addr, "/sensitive", &s.tokens.access).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate").unwrap_or_default(),
        format!(
            "Bearer realm=\"api\", resource_metadata=\"http://127.0.0.1:{}/.well-known/oauth-protected-resource\", \
             error=\"insufficient_user_authentication\", error_description=\"a higher authentication level is required\", \
             acr_values=\"urn:cognito:loa:3 urn:cognito:loa:4\", max_age=600",
            addr.port()
        )
    );
    assert_eq!(get_with_token(addr, "/me", &s.tokens.access).await.status, 200);
    let logout = common::http::post_with_token(addr, "/logout", &s.tokens.access).await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    let r = get_with_token(addr, "/sensitive", &s.tokens.access).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""));
    drop(server);

    // A bad level or age is refused at start, naming the variable.
    for (name, value, hint) in [
        ("COGNITO_STEP_UP_ACR", "a\"b", "without spaces"),
        ("COGNITO_STEP_UP_MAX_AGE_SECS", "0", "at least one second"),
        ("COGNITO_STEP_UP_MAX_AGE_SECS", "soon", "not a whole number"),
    ] {
        let mut vars: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.retain(|(k, _)| *k != name);
        vars.push((name, value));
        let out = command(&vars).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {err}");
        assert!(err.contains(name) && err.contains(hint), "{name}={value}: {err}");
    }
}

/// `/sensitive` with tokens that carry `acr`, from the test signer through a fake upstream: the
/// level passes; a lower level, or a sign-in older than the age, gets the challenge that says why.
#[tokio::test]
async fn the_example_server_lets_a_recent_sign_in_at_the_level_through_the_sensitive_route() {
    use actix_cognito::testing::{access_claims, Behaviour, FakeCognito, TestSigner};
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    let endpoint = fake.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", common::FAKE_POOL),
        ("COGNITO_CLIENT_ID", common::FAKE_CLIENT),
        ("COGNITO_STEP_UP_ACR", "urn:cognito:loa:3"),
        ("COGNITO_STEP_UP_MAX_AGE_SECS", "600"),
        ("AWS_ENDPOINT_URL", &endpoint),
    ])
    .await;
    let token = |sub: &str, acr: &str, signed_in_ago: i64| {
        let mut claims = access_claims(common::FAKE_POOL, common::FAKE_CLIENT, sub, 3600);
        claims["acr"] = acr.into();
        claims["amr"] = serde_json::json!(["pwd", "otp", "mfa"]);
        claims["auth_time"] = (claims["iat"].as_i64().unwrap() - signed_in_ago).into();
        TestSigner::default().sign(&claims)
    };
    let r = get_with_token(server.addr, "/sensitive", &token("strong", "urn:cognito:loa:3", 0)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["claims"]["acr"], "urn:cognito:loa:3");
    assert_eq!(r.json()["claims"]["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    for (t, why) in [
        (token("weak", "urn:cognito:loa:2", 0), "a higher authentication level is required"),
        (token("stale", "urn:cognito:loa:3", 3600), "a more recent authentication is required"),
    ] {
        let r = get_with_token(server.addr, "/sensitive", &t).await;
        assert_eq!(r.status, 401, "{}", r.body);
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains(&format!("error_description=\"{why}\"")), "{challenge}");
        assert_eq!(get_with_token(server.addr, "/me", &t).await.status, 200);
    }
}

/// A replicated pool through the example server: moto behind two loopback fakes standing in for
/// the pool's region and the replica's. The primary fails (500s): the first new token fails over,
/// the next ten go straight to the replica, a sign-out goes through the replica, `/ready` and
/// `/metrics` show each region, and traffic returns once the primary answers again.
#[tokio::test]
async fn the_example_server_fails_over_to_the_replica_region_and_back() {
    use actix_cognito::testing::{Behaviour, FakeCognito};
    let s = seeded("replica-example").await;
    let replica = FakeCognito::start(Behaviour::Forward(s.emulator.endpoint().to_owned())).await.unwrap();
    let (primary_url, replica_url) = (s.proxy.endpoint(), replica.endpoint());
    let vars = [
        ("COGNITO_USER_POOL_ID", s.pool.pool_id.as_str()),
        ("COGNITO_CLIENT_ID", s.pool.client_id.as_str()),
        ("AWS_ENDPOINT_URL", &primary_url),
        ("COGNITO_REPLICA_REGION", "us-west-2"),
        ("COGNITO_REPLICA_ENDPOINT_URL", &replica_url),
        // Every token is alice's: past the per-user rate, a new one would wait for its turn.
        ("COGNITO_MAX_CALLS_PER_USER", "100"),
    ];
    let server = start(&vars).await;
    let addr = server.addr;
    assert_eq!(get_with_token(addr, "/me", &s.tokens.access).await.status, 200);
    assert_eq!((s.proxy.get_user_calls(), replica.get_user_calls()), (1, 0));
    let ready = get(addr, "/ready", &[]).await;
    assert_eq!(
        ready.json()["regions"][1],
        serde_json::json!({"region": "us-west-2", "available": true, "preferred": false})
    );

    s.proxy.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    let fresh = || s.pool.sign_in(&s.pool.client_id, "alice", PASSWORD);
    let first = fresh().await.unwrap().access;
    let started = std::time::Instant::now();
    let r = get_with_token(addr, "/me", &first).await;
    let failover = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    let primary_calls = s.proxy.get_user_calls();
    let mut took = Vec::new();
    for _ in 0..10 {
        let token = fresh().await.unwrap().access;
        let started = std::time::Instant::now();
        assert_eq!(get_with_token(addr, "/me", &token).await.status, 200);
        took.push(started.elapsed());
    }
    took.sort();
    eprintln!("failover in {failover:?}; then a new token's median {:?}, slowest {:?}", took[5], took[9]);
    assert_eq!(s.proxy.get_user_calls(), primary_calls, "a request waited on the primary known down");
    assert_eq!(replica.get_user_calls(), 11);
    let ready = get(addr, "/ready", &[]).await;
    assert_eq!(ready.status, 200, "a region down is not unreadiness");
    assert_eq!(ready.json()["regions"][0]["available"], false);
    let metrics = get(addr, "/metrics", &[]).await.body;
    assert_eq!(sample(&metrics, "actix_cognito_get_user_calls_total{region=\"us-west-2\"}"), 11.0);
    assert_eq!(sample(&metrics, "actix_cognito_region_available{region=\"us-east-1\"}"), 0.0);
    assert_eq!(sample(&metrics, "actix_cognito_region_available{region=\"us-west-2\"}"), 1.0);

    // A sign-out while the primary is down goes through the replica.
    let logout = common::http::post_with_token(addr, "/logout", &s.tokens.access).await;
    assert_eq!(logout.status, 204, "{}", logout.body);
    assert_eq!(get_with_token(addr, "/me", &s.tokens.access).await.status, 401);

    // Recovered: a probe every 10 s brings the traffic back.
    s.proxy.set_behaviour(Behaviour::Forward(s.emulator.endpoint().to_owned()));
    let started = std::time::Instant::now();
    loop {
        let token = fresh().await.unwrap().access;
        let before = s.proxy.get_user_calls();
        assert_eq!(get_with_token(addr, "/me", &token).await.status, 200);
        if s.proxy.get_user_calls() > before {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no traffic back to the primary in 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    eprintln!("traffic back to the primary {:?} after it recovered", started.elapsed());
    let ready = get(addr, "/ready", &[]).await;
    assert_eq!(ready.json()["regions"][0]["available"], true);
    drop(server);

    // A replica region that is the pool's own is refused at start, naming the setting.
    let mut bad = vars.to_vec();
    bad[3] = ("COGNITO_REPLICA_REGION", "us-east-1");
    let out = command(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("replica_region"), "{err}");
}
