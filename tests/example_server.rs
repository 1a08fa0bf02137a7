//! The example server, run as its own process against the emulator and driven over HTTP.

mod common;

use common::example::{command, start};
use common::http::{get, get_with_token};
use common::{seeded, PASSWORD};

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

    let anonymous = get(addr, "/me", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some(r#"Bearer realm="api""#));

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
}
