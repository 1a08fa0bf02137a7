//! Reliability and hostile input: outages, the quota guard, and garbage sent on purpose.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_cognito::testing::{Behaviour, FakeCognito, TestSigner};
use actix_cognito::{CognitoAuth, CognitoUser, Verifier};
use actix_web::{web, App, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::http::{get_with_token, request_raw};
use common::{access_claims, fake_token, unix_now, FAKE_CLIENT, FAKE_POOL};
use serde_json::json;

async fn me(user: CognitoUser) -> HttpResponse {
    HttpResponse::Ok().body(user.username().to_owned())
}

fn serve(verifier: Verifier) -> SocketAddr {
    let auth = CognitoAuth::new(verifier);
    common::spawn(move || App::new().wrap(auth.clone()).route("/me", web::get().to(me)))
}

fn builder(fake: &FakeCognito) -> actix_cognito::VerifierBuilder {
    Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint())
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

fn jwt(header: &str, payload: &str) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64("not a signature"))
}

fn claims_with(changes: &[(&str, serde_json::Value)]) -> String {
    let mut c = access_claims(FAKE_POOL, FAKE_CLIENT, "s1", 3600);
    for (k, v) in changes {
        c[*k] = v.clone();
    }
    c.to_string()
}

#[actix_web::test]
async fn hostile_tokens_get_401_or_400_with_no_get_user_call() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let addr = serve(builder(&fake).build().unwrap());
    let rs256 = r#"{"alg":"RS256","kid":"test-key-1"}"#;
    // Deeper than serde_json's recursion limit, and still under the 8 KiB size cap.
    let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(2400), "]".repeat(2400));
    let wide = format!(r#"{{"a":[{}]}}"#, vec!["{}"; 2000].join(","));
    let signed = fake_token("s1", 3600);
    let (h, p, s) = {
        let mut parts = signed.split('.');
        (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", jwt(r#"{"alg":"none"}"#, &claims_with(&[]))),
        ("alg HS256", jwt(r#"{"alg":"HS256","kid":"test-key-1"}"#, &claims_with(&[]))),
        ("no kid", jwt(r#"{"alg":"RS256"}"#, &claims_with(&[]))),
        ("deep nesting", jwt(rs256, &deep)),
        ("wide payload", jwt(rs256, &wide)),
        ("huge exp", jwt(rs256, &claims_with(&[("exp", json!(1e30))]))),
        ("max exp", jwt(rs256, &claims_with(&[("exp", json!(i64::MAX))]))),
        ("negative exp", jwt(rs256, &claims_with(&[("exp", json!(-1))]))),
        ("exp as string", jwt(rs256, &claims_with(&[("exp", json!(unix_now().to_string() + "0"))]))),
        ("padding", format!("{h}==.{p}.{s}")),
        ("padding in payload", format!("{h}.{p}=.{s}")),
        ("standard base64 alphabet", format!("{h}.+{}.{s}", &p[1..])),
        ("four segments", format!("{signed}.x")),
        ("payload not JSON", format!("{h}.{}.{s}", b64("not json"))),
        ("payload JSON array", format!("{h}.{}.{s}", b64("[1,2,3]"))),
        ("groups not a list", jwt(rs256, &claims_with(&[("cognito:groups", json!("admin"))]))),
        ("oversized token", format!("{h}.{}.{s}", "A".repeat(9000))),
        ("tampered", format!("{h}.{}.{s}", b64(&claims_with(&[("username", json!("root"))])))),
    ];
    for (name, token) in &cases {
        let r = get_with_token(addr, "/me", token).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_token", "{name}");
    }

    // Raw header bytes: non-ASCII, non-UTF-8, control characters.
    let raw: Vec<Vec<u8>> = vec![
        b"Authorization: Bearer \xc3\xa9t\xc3\xa9.e30.sig".to_vec(),
        [b"Authorization: Bearer ".as_slice(), &[0xff, 0xfe, 0x80], b".e30.sig"].concat(),
        [b"Authorization: Bearer ".as_slice(), signed.as_bytes(), b"\x01"].concat(),
        [b"Authorization: Bearer ".as_slice(), &signed.as_bytes()[..100], b" ", &signed.as_bytes()[100..]]
            .concat(),
    ];
    for header in &raw {
        let r = request_raw(addr, "GET", "/me", &[header]).await;
        assert!(matches!(r.status, 400 | 401), "{:?}: {}", String::from_utf8_lossy(header), r.status);
    }
    // Many Authorization headers.
    let many: Vec<Vec<u8>> =
        (0..50).map(|_| format!("Authorization: Bearer {signed}").into_bytes()).collect();
    let refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    assert_eq!(request_raw(addr, "GET", "/me", &refs).await.status, 400);
    // A huge header is refused by the HTTP layer or by us, never let through.
    let huge = format!("Authorization: Bearer {}", "a".repeat(60_000));
    let r = request_raw(addr, "GET", "/me", &[huge.as_bytes()]).await;
    // (0: the HTTP layer closed the connection.)
    assert!(matches!(r.status, 0 | 400 | 401 | 431), "{}", r.status);

    assert_eq!(fake.get_user_calls(), 0);
    // The genuine token still works: nothing above poisoned anything.
    assert_eq!(get_with_token(addr, "/me", &signed).await.status, 200);
    assert_eq!(fake.get_user_calls(), 1);
}

#[actix_web::test]
async fn an_outage_answers_503_within_the_timeout_then_recovers_without_restart() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = builder(&fake)
        .attempt_timeout(Duration::from_millis(300))
        .operation_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    assert_eq!(verifier.hydrate().await, Ok(1));
    let addr = serve(verifier);
    let cached = fake_token("cached", 3600);
    assert_eq!(get_with_token(addr, "/me", &cached).await.status, 200);

    fake.set_behaviour(Behaviour::Hang);
    let started = Instant::now();
    let r = get_with_token(addr, "/me", &fake_token("new", 3600)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    // A token with a fresh cache entry keeps working through the outage.
    assert_eq!(get_with_token(addr, "/me", &cached).await.status, 200);

    fake.set_behaviour(Behaviour::Error(503, "ServiceUnavailable".into()));
    assert_eq!(get_with_token(addr, "/me", &fake_token("new", 3600)).await.status, 503);
    fake.set_behaviour(Behaviour::Error(400, "TooManyRequestsException".into()));
    assert_eq!(get_with_token(addr, "/me", &fake_token("new", 3600)).await.status, 503);

    fake.set_behaviour(Behaviour::User { username: "alice".into(), attributes: vec![] });
    assert_eq!(get_with_token(addr, "/me", &fake_token("new", 3600)).await.status, 200);
}

#[actix_web::test]
async fn the_in_flight_cap_answers_503_and_is_never_exceeded() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    fake.set_latency(Duration::from_millis(300));
    let verifier = builder(&fake).max_get_user_in_flight(4).build().unwrap();
    assert_eq!(verifier.hydrate().await, Ok(1));
    let addr = serve(verifier);
    let tokens: Vec<String> = (0..40).map(|i| fake_token(&format!("burst-{i}"), 3600)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for t in tokens.clone() {
        tasks.spawn(async move { get_with_token(addr, "/me", &t).await });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        if r.status == 503 {
            assert!(r.header("retry-after").is_some());
        }
        statuses.push(r.status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + limited, 40, "{statuses:?}");
    assert!(ok >= 4 && limited > 0, "{ok} ok, {limited} limited");
    assert!(fake.max_in_flight() <= 4, "{} in flight", fake.max_in_flight());
    assert_eq!(fake.get_user_calls() as usize, ok);
}

#[actix_web::test]
async fn the_rate_cap_answers_503_never_401() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier = builder(&fake).max_get_user_per_second(5).build().unwrap();
    assert_eq!(verifier.hydrate().await, Ok(1));
    let addr = serve(verifier);
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(get_with_token(addr, "/me", &fake_token(&format!("rate-{i}"), 3600)).await.status);
    }
    assert!(statuses.iter().all(|s| matches!(s, 200 | 503)), "{statuses:?}");
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // A burst of 5, then 5 a second: the 20 requests take well under the 3 s they would need.
    assert!((5..=10).contains(&ok), "{statuses:?}");
    assert_eq!(fake.get_user_calls() as usize, ok);
}

#[tokio::test]
async fn memory_stays_bounded_under_a_flood_of_distinct_bad_tokens() {
    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    fake.set_behaviour(Behaviour::Error(400, "NotAuthorizedException".into()));
    let verifier = builder(&fake).negative_capacity(500).build().unwrap();
    let signer = TestSigner::default();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (v, signer) = (verifier.clone(), signer.clone());
        tasks.spawn(async move {
            for i in 0..250 {
                let t = signer.sign(&access_claims(FAKE_POOL, FAKE_CLIENT, &format!("{w}-{i}"), 3600));
                assert!(v.verify(&t).await.unwrap_err().rejection().is_some());
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // Garbage costs nothing to remember: it is never cached.
    for i in 0..5_000 {
        let _ = verifier.verify(&format!("garbage-{i}")).await;
    }
    verifier.run_pending_tasks().await;
    let stats = verifier.stats();
    assert!(stats.negative_entries <= 500, "{}", stats.negative_entries);
    assert_eq!(stats.entries, 0);
    assert_eq!(fake.get_user_calls(), 2000);
}
