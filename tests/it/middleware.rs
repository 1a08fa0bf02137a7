//! The middleware and extractor over real HTTP, against the emulator and a fake upstream.

use crate::common;

use std::net::SocketAddr;

use actix_cognito::testing::{Behaviour, FakeCognito};
use actix_cognito::{CognitoAuth, CognitoUser, Verifier};
use actix_web::dev::{Service, Transform};
use actix_web::{web, App, HttpResponse};
use common::http::{get, get_with_token, request_raw};
use common::{fake_token, seeded, spawn, FAKE_CLIENT, FAKE_POOL, PASSWORD};

async fn me(user: CognitoUser) -> HttpResponse {
    // `Names` is an iterator and has `.iter()`, as a list would.
    let groups: Vec<&str> = user.groups().iter().collect();
    assert_eq!(groups.len(), user.groups().len());
    HttpResponse::Ok().json(serde_json::json!({
        "username": user.username(),
        "email": user.email(),
        "groups": user.groups(),
    }))
}

async fn maybe(user: Option<CognitoUser>) -> HttpResponse {
    HttpResponse::Ok().body(user.map_or_else(|| "anonymous".to_owned(), |u| u.username().to_owned()))
}

/// A verifier against a fake upstream that accepts any token as alice, and the fake.
async fn fake_verifier() -> (FakeCognito, Verifier) {
    let fake = FakeCognito::user("alice", &[("email", "alice@example.com")]).await.unwrap();
    let v =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap();
    (fake, v)
}

/// `/me` behind `auth`.
fn protected(auth: CognitoAuth) -> SocketAddr {
    spawn(move || App::new().service(web::scope("").wrap(auth.clone()).route("/me", web::get().to(me))))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[actix_web::test]
async fn no_token_gets_401_with_a_bare_challenge() {
    let (fake, v) = fake_verifier().await;
    let addr = protected(CognitoAuth::new(v).realm("shop"));
    let r = get(addr, "/me", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="shop""#));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "unauthorized");
    // Another scheme is no bearer token at all.
    let r = get(addr, "/me", &[("Authorization", "Basic YWxpY2U6c2VjcmV0")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="shop""#));
    assert_eq!(fake.get_user_calls(), 0);
}

#[actix_web::test]
async fn a_valid_token_reaches_the_handler_as_a_cognito_user() {
    let s = seeded("mw-valid").await;
    let addr = protected(CognitoAuth::new(s.verifier().build().unwrap()));
    let r = get_with_token(addr, "/me", &s.tokens.access).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["username"], "alice");
    assert_eq!(r.json()["email"], "alice@example.com");
    // The scheme is case-insensitive.
    let r = get(addr, "/me", &[("Authorization", &format!("bEaReR {}", s.tokens.access))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.proxy.get_user_calls(), 1);
}

#[actix_web::test]
async fn a_bad_token_gets_401_invalid_token_without_leaking_it() {
    let s = seeded("mw-bad").await;
    let addr = protected(CognitoAuth::new(s.verifier().build().unwrap()));
    let cases = [
        bearer(&s.tokens.id),
        bearer("garbage"),
        "Bearer ".to_owned(),
        format!("Bearer {} extra", s.tokens.access),
        format!("Bearer  {}", s.tokens.access),
    ];
    for value in &cases {
        let r = get(addr, "/me", &[("Authorization", value)]).await;
        assert_eq!(r.status, 401, "{value}");
        let challenge = r.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with(r#"Bearer realm="api", error="invalid_token", error_description=""#),
            "{challenge}"
        );
        assert_eq!(r.json()["error"], "invalid_token");
        assert!(!r.body.contains(&s.tokens.access[10..40]) && !challenge.contains("eyJ"));
    }
    assert_eq!(s.proxy.get_user_calls(), 0);
}

#[actix_web::test]
async fn a_revoked_token_gets_401_invalid_token() {
    let s = seeded("mw-revoked").await;
    let addr = protected(CognitoAuth::new(s.verifier().build().unwrap()));
    s.revoke(common::Revoke::GlobalSignOut).await;
    let r = get_with_token(addr, "/me", &s.tokens.access).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains(r#"error="invalid_token""#));
}

#[actix_web::test]
async fn two_authorization_headers_get_400_invalid_request() {
    let (fake, v) = fake_verifier().await;
    let addr = protected(CognitoAuth::new(v));
    let token = fake_token("s1", 3600);
    let r = get(addr, "/me", &[("Authorization", &bearer(&token)), ("Authorization", &bearer(&token))]).await;
    assert_eq!(r.status, 400);
    assert!(r.header("www-authenticate").unwrap().contains(r#"error="invalid_request""#));
    assert_eq!(fake.get_user_calls(), 0);
}

#[actix_web::test]
async fn cognito_unavailable_gets_503_with_retry_after() {
    let (fake, v) = fake_verifier().await;
    let addr = protected(CognitoAuth::new(v));
    for (status, code) in [(400, "TooManyRequestsException"), (500, "InternalErrorException")] {
        fake.set_behaviour(Behaviour::Error(status, code.into()));
        let r = get_with_token(addr, "/me", &fake_token(code, 3600)).await;
        assert_eq!(r.status, 503, "{code}");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("www-authenticate"), None);
        assert_eq!(r.json()["error"], "temporarily_unavailable");
    }
}

#[actix_web::test]
async fn group_requirements_answer_403_insufficient_scope() {
    let s = seeded("mw-groups").await;
    s.pool.add_to_group("alice", "staff").await.unwrap();
    let tokens = s.pool.sign_in(&s.pool.client_id, "alice", PASSWORD).await.unwrap();
    let v = s.verifier().build().unwrap();
    let cases = [
        (CognitoAuth::new(v.clone()).require_any_group(["admin", "staff"]), 200),
        (CognitoAuth::new(v.clone()).require_any_group(["admin"]), 403),
        (CognitoAuth::new(v.clone()).require_all_groups(["staff"]), 200),
        (CognitoAuth::new(v.clone()).require_all_groups(["admin", "staff"]), 403),
    ];
    for (auth, want) in cases {
        let debug = format!("{auth:?}");
        let r = get_with_token(protected(auth), "/me", &tokens.access).await;
        assert_eq!(r.status, want, "{debug}");
        if want == 403 {
            let challenge = r.header("www-authenticate").unwrap();
            assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
            assert_eq!(r.json()["error"], "insufficient_scope");
        }
    }
    // All four shared one cache: one GetUser call.
    assert_eq!(s.proxy.get_user_calls(), 1);
}

#[actix_web::test]
async fn scope_requirements_name_the_scopes_in_the_challenge() {
    let (_fake, v) = fake_verifier().await;
    let token = fake_token("s1", 3600);
    let ok = protected(CognitoAuth::new(v.clone()).require_any_scope(["aws.cognito.signin.user.admin", "x"]));
    assert_eq!(get_with_token(ok, "/me", &token).await.status, 200);
    let all =
        protected(CognitoAuth::new(v).require_all_scopes(["aws.cognito.signin.user.admin", "orders/write"]));
    let r = get_with_token(all, "/me", &token).await;
    assert_eq!(r.status, 403);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains(r#"scope="aws.cognito.signin.user.admin orders/write""#));
}

#[actix_web::test]
async fn optional_mode_lets_anonymous_requests_through_but_not_bad_tokens() {
    let (_fake, v) = fake_verifier().await;
    let auth = CognitoAuth::new(v).optional();
    let addr = spawn(move || {
        App::new().service(
            web::scope("")
                .wrap(auth.clone())
                .route("/maybe", web::get().to(maybe))
                .route("/me", web::get().to(me)),
        )
    });
    let anonymous = get(addr, "/maybe", &[]).await;
    assert_eq!((anonymous.status, anonymous.body.as_str()), (200, "anonymous"));
    let known = get_with_token(addr, "/maybe", &fake_token("s1", 3600)).await;
    assert_eq!((known.status, known.body.as_str()), (200, "alice"));
    assert_eq!(get_with_token(addr, "/maybe", "garbage").await.status, 401);
    // A handler that insists on a user still gets 401 for an anonymous request.
    let r = get(addr, "/me", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="api""#));
}

#[actix_web::test]
async fn two_scopes_share_one_cache() {
    let (fake, v) = fake_verifier().await;
    let (a, b) = (CognitoAuth::new(v.clone()), CognitoAuth::new(v).require_any_group(["nobody"]).optional());
    let addr = spawn(move || {
        App::new()
            .service(web::scope("/a").wrap(a.clone()).route("/me", web::get().to(me)))
            .service(web::scope("/b").wrap(CognitoAuth::clone(&b)).route("/me", web::get().to(me)))
    });
    let token = fake_token("s1", 3600);
    assert_eq!(get_with_token(addr, "/a/me", &token).await.status, 200);
    assert_eq!(get_with_token(addr, "/b/me", &token).await.status, 403);
    assert_eq!(fake.get_user_calls(), 1);
}

#[actix_web::test]
async fn the_extractor_without_the_middleware_answers_500_naming_the_mistake() {
    let addr = spawn(|| App::new().route("/me", web::get().to(me)));
    let r = get(addr, "/me", &[]).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "server_error");
    assert!(r.json()["message"].as_str().unwrap().contains("not configured"));
}

#[actix_web::test]
async fn cors_outside_auth_still_decorates_a_401() {
    let (_fake, v) = fake_verifier().await;
    let auth = CognitoAuth::new(v);
    let addr = spawn(move || {
        App::new()
            .wrap(actix_cors::Cors::permissive())
            .service(web::scope("").wrap(auth.clone()).route("/me", web::get().to(me)))
    });
    let r = get(addr, "/me", &[("Origin", "https://app.example.com")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert!(r.header("www-authenticate").is_some());
}

#[actix_web::test]
async fn an_error_handler_replaces_the_body_and_keeps_the_headers() {
    let (fake, v) = fake_verifier().await;
    let auth = CognitoAuth::new(v).error_handler(|err, _req| {
        // The status without importing actix's `ResponseError`.
        HttpResponse::build(err.status()).body(format!("nope: {}", err.code()))
    });
    let addr = protected(auth);
    let r = get(addr, "/me", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (401, "nope: unauthorized"));
    assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="api""#));
    fake.set_behaviour(Behaviour::Error(500, "InternalErrorException".into()));
    let r = get_with_token(addr, "/me", &fake_token("s1", 3600)).await;
    assert_eq!((r.status, r.body.as_str()), (503, "nope: temporarily_unavailable"));
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[actix_web::test]
async fn tokens_can_come_from_a_cookie_or_a_header_when_configured() {
    let (_fake, v) = fake_verifier().await;
    let token = fake_token("s1", 3600);
    let addr = protected(
        CognitoAuth::new(v.clone()).token_from_cookie("access_token").token_from_header("x-access-token"),
    );
    assert_eq!(
        get(addr, "/me", &[("Cookie", &format!("theme=dark; access_token={token}"))]).await.status,
        200
    );
    assert_eq!(get(addr, "/me", &[("X-Access-Token", &token)]).await.status, 200);
    // Not configured: ignored.
    let plain = protected(CognitoAuth::new(v));
    assert_eq!(get(plain, "/me", &[("Cookie", &format!("access_token={token}"))]).await.status, 401);
}

#[actix_web::test]
async fn non_utf8_and_oversized_authorization_values_get_401_without_a_call() {
    let (fake, v) = fake_verifier().await;
    let addr = protected(CognitoAuth::new(v));
    let r = request_raw(addr, "GET", "/me", &[b"Authorization: Bearer \xff\xfe\x80abc.def.ghi"]).await;
    assert_eq!(r.status, 401);
    let mut raw = b"Authorization: Bearer eyJ".to_vec();
    raw.extend_from_slice(&[0xff, 0xc3, 0x28]);
    raw.extend_from_slice(b".eyJ.sig");
    assert_eq!(request_raw(addr, "GET", "/me", &[&raw]).await.status, 401);
    let big = format!("Authorization: Bearer {}", "a".repeat(12_000));
    assert_eq!(request_raw(addr, "GET", "/me", &[big.as_bytes()]).await.status, 401);
    assert_eq!(fake.get_user_calls(), 0);
}

/// A middleware built by a test case.
pub(crate) type Build<'a> = Box<dyn FnOnce() -> CognitoAuth + 'a>;

/// What a builder call that panics says: the message the panic hook prints, with or without a
/// log subscriber.
pub(crate) fn panic_message(build: impl FnOnce() -> CognitoAuth) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build))
        .map(|auth| format!("no panic: {auth:?}"))
        .unwrap_or_else(|p| p.downcast_ref::<String>().cloned().unwrap_or_default());
    payload
}

#[actix_web::test]
async fn a_misconfigured_middleware_panics_at_the_call_naming_the_setting_and_the_fix() {
    let (_fake, v) = fake_verifier().await;
    let cases: [(&str, Build<'_>); 5] = [
        (
            "realm \"a\\\"b\" must be non-empty printable ASCII",
            Box::new(|| CognitoAuth::new(v.clone()).realm("a\"b")),
        ),
        (
            "require_*_groups: give at least one non-empty name",
            Box::new(|| CognitoAuth::new(v.clone()).require_any_group(Vec::<String>::new())),
        ),
        (
            "require_*_scopes was called twice",
            Box::new(|| CognitoAuth::new(v.clone()).require_any_scope(["a"]).require_all_scopes(["b"])),
        ),
        (
            "token_from_header: \"bad header\" is not a usable header name",
            Box::new(|| CognitoAuth::new(v.clone()).token_from_header("bad header")),
        ),
        (
            "resource_metadata \"/relative\" must be an absolute http(s) URL",
            Box::new(|| CognitoAuth::new(v.clone()).resource_metadata("/relative")),
        ),
    ];
    for (want, build) in cases {
        let message = panic_message(build);
        assert!(message.starts_with("CognitoAuth is misconfigured: ") && message.contains(want), "{message}");
    }
    let service = actix_web::dev::fn_service(|req: actix_web::dev::ServiceRequest| async move {
        Ok::<_, actix_web::Error>(req.into_response(HttpResponse::Ok().finish()))
    });
    let ok = CognitoAuth::new(v).realm("shop").require_any_group(["a"]);
    let svc = ok.new_transform(service).await.unwrap();
    // The well-configured one starts, and answers a request without a token with a 401.
    let answer = svc.call(actix_web::test::TestRequest::default().to_srv_request()).await.unwrap();
    assert_eq!(answer.status(), 401);
}

/// A token with a claim of every JSON type, as a pre-token-generation trigger adds them.
fn token_with_custom_claims() -> String {
    let mut claims = common::access_claims(FAKE_POOL, FAKE_CLIENT, "custom", 3600);
    claims["tenant_tier"] = "gold".into();
    claims["seats"] = 42.into();
    claims["ratio"] = 0.25.into();
    claims["beta"] = true.into();
    claims["regions"] = serde_json::json!(["eu-west-1", "us-east-1"]);
    claims["limits"] = serde_json::json!({ "rps": 10, "burst": 20 });
    claims["nothing"] = serde_json::Value::Null;
    actix_cognito::testing::TestSigner::default().sign(&claims)
}

#[actix_web::test]
async fn every_claim_of_the_token_reaches_the_handler_in_its_json_type() {
    let (_fake, v) = fake_verifier().await;
    let token = token_with_custom_claims();
    let user = v.verify(&token).await.unwrap();
    assert_eq!(user.claim::<String>("tenant_tier").as_deref(), Some("gold"));
    assert_eq!(user.claim::<u32>("seats"), Some(42));
    assert_eq!(user.claim::<f64>("ratio"), Some(0.25));
    assert_eq!(user.claim::<bool>("beta"), Some(true));
    assert_eq!(user.claim::<Vec<String>>("regions").unwrap(), ["eu-west-1", "us-east-1"]);
    let limits: std::collections::HashMap<String, u32> = user.claim("limits").unwrap();
    assert_eq!((limits["rps"], limits["burst"]), (10, 20));
    assert_eq!(user.claim::<Option<String>>("nothing"), Some(None));
    // Absent, or not of the type asked for.
    assert_eq!(user.claim::<String>("absent"), None);
    assert_eq!(user.claim::<u32>("tenant_tier"), None);
    // Every claim, each with its value: the standard ones too, however they are kept. The
    // username is the one `GetUser` answered (this fake answers every token as alice).
    let all = user.claims();
    let mut expected = common::claims_of(&token);
    expected["username"] = "alice".into();
    assert_eq!(all, expected);

    // The user serializes straight to the JSON that the accessors give, claims included.
    let json = serde_json::to_value(&user).unwrap();
    assert_eq!(json["claims"], all);
    assert_eq!(json["username"], user.username());
    assert_eq!(json["sub"], user.sub());
    assert_eq!(json["pool"], user.pool_id());
    assert_eq!(json["scopes"], serde_json::json!(user.scopes().collect::<Vec<_>>()));
    assert_eq!(json["groups"], serde_json::json!(user.groups().collect::<Vec<_>>()));
    assert_eq!(
        json["attributes"],
        serde_json::json!(user.attributes().collect::<std::collections::BTreeMap<_, _>>())
    );
    assert_eq!(json.as_object().unwrap().len(), 7);
}

#[actix_web::test]
async fn a_route_can_require_any_predicate_over_the_principal() {
    let (fake, v) = fake_verifier().await;
    let gold =
        CognitoAuth::new(v.clone()).require(|p| p.claim::<String>("tenant_tier").as_deref() == Some("gold"));
    let beta_and_seats = CognitoAuth::new(v)
        .require(|p| p.claim::<bool>("beta") == Some(true))
        .require(|p| p.claim::<u32>("seats").is_some_and(|n| n > 100));
    let (gold, beta_and_seats) = (protected(gold), protected(beta_and_seats));
    let custom = token_with_custom_claims();
    assert_eq!(get_with_token(gold, "/me", &custom).await.status, 200);
    let plain = get_with_token(gold, "/me", &fake_token("plain", 3600)).await;
    assert_eq!(plain.status, 403);
    assert!(plain.header("www-authenticate").unwrap().contains(r#"error="insufficient_scope""#));
    // Every predicate must hold: 42 seats are not enough.
    assert_eq!(get_with_token(beta_and_seats, "/me", &custom).await.status, 403);
    assert_eq!(fake.get_user_calls(), 2);
}

#[actix_web::test]
async fn handlers_get_the_verified_token_which_debug_never_shows() {
    async fn echo(token: actix_cognito::BearerToken) -> HttpResponse {
        let debug = format!("{token:?}");
        HttpResponse::Ok().json(serde_json::json!({ "token": token.as_str(), "debug": debug }))
    }
    let (_fake, v) = fake_verifier().await;
    let cookie_auth = CognitoAuth::new(v.clone()).token_from_cookie("session");
    let addr = spawn(move || {
        App::new()
            .service(web::scope("/cookie").wrap(cookie_auth.clone()).route("", web::get().to(echo)))
            .service(web::scope("/bare").route("", web::get().to(echo)))
    });
    let token = fake_token("echo", 3600);
    let r = get(addr, "/cookie", &[("Authorization", &bearer(&token))]).await;
    assert_eq!(r.json()["token"], token.as_str());
    assert_eq!(r.json()["debug"], "BearerToken([redacted])");
    let r = get(addr, "/cookie", &[("Cookie", &format!("session={token}"))]).await;
    assert_eq!(r.json()["token"], token.as_str());
    // Without the middleware there is no verified token to give.
    assert_eq!(get(addr, "/bare", &[("Authorization", &bearer(&token))]).await.status, 500);
}

/// With two pools, `admin` in either pool meets `require_any_group(["admin"])`; a requirement
/// that names its pool is met only by that pool's group, and naming a pool the verifier lacks
/// panics at the call.
#[actix_web::test]
async fn a_group_requirement_can_name_its_pool() {
    const OTHER: &str = "us-east-1_OtherPool2";
    let fake = FakeCognito::start(Behaviour::Claims { attributes: vec![] }).await.unwrap();
    let v = Verifier::builder(FAKE_POOL)
        .pool(OTHER)
        .client_id(FAKE_CLIENT)
        .endpoint_url(fake.endpoint())
        .build()
        .unwrap();
    let admin_of = |pool: &str, sub: &str| {
        let mut claims = actix_cognito::testing::access_claims(pool, FAKE_CLIENT, sub, 3600);
        claims["cognito:groups"] = serde_json::json!(["admin"]);
        actix_cognito::testing::TestSigner::default().sign(&claims)
    };
    let (any, scoped) = (
        CognitoAuth::new(v.clone()).require_any_group(["admin"]),
        CognitoAuth::new(v.clone()).require_any_group_in(FAKE_POOL, ["admin"]),
    );
    let addr = spawn(move || {
        App::new()
            .service(web::scope("/any").wrap(any.clone()).route("", web::get().to(maybe)))
            .service(web::scope("/scoped").wrap(scoped.clone()).route("", web::get().to(maybe)))
    });
    let (ours, theirs) = (admin_of(FAKE_POOL, "ours"), admin_of(OTHER, "theirs"));
    assert_eq!(get_with_token(addr, "/any", &ours).await.status, 200);
    assert_eq!(get_with_token(addr, "/any", &theirs).await.status, 200);
    assert_eq!(get_with_token(addr, "/scoped", &ours).await.status, 200);
    assert_eq!(get_with_token(addr, "/scoped", &theirs).await.status, 403);
    let message = crate::middleware::panic_message(|| {
        CognitoAuth::new(v).require_any_group_in("eu-west-1_Nope", ["admin"])
    });
    assert!(message.contains("\"eu-west-1_Nope\" is not one of the verifier's pools"), "{message}");
}
