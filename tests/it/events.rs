//! Revocations made elsewhere: Cognito's CloudTrail events through EventBridge and SQS, all on
//! moto (Cognito, EventBridge and SQS in one server).
#![cfg(feature = "events")]

use std::time::{Duration, Instant};

use actix_cognito::Verifier;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use crate::common;
use common::example::start;
use common::http::get_with_token;
use common::{Revoke, PASSWORD};

/// The app's AWS configuration on moto: region, endpoint, and (for SQS) credentials.
fn shared_config() -> aws_types::SdkConfig {
    let credentials = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests");
    aws_types::SdkConfig::builder()
        .region(aws_types::region::Region::new("us-east-1"))
        .endpoint_url(common::Kind::Moto.endpoint())
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(credentials))
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .build()
}

/// A queue fed by an EventBridge rule with the README's pattern, for one pool.
struct Feed {
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
    queue_url: String,
    pool_id: String,
}

impl Feed {
    async fn new(name: &str, pool_id: &str) -> Feed {
        // Named after the pool too: moto's server outlives a test run, and a long poll that a
        // finished run left behind would take the messages of a queue of the same name.
        let name = &unique(name, pool_id);
        let config = shared_config();
        let sqs = aws_sdk_sqs::Client::new(&config);
        let events = aws_sdk_eventbridge::Client::new(&config);
        let queue_url = sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let arn = attributes.attributes.unwrap()[&QueueAttributeName::QueueArn].clone();
        let pattern = json!({
            "source": ["aws.cognito-idp"],
            "detail-type": ["AWS API Call via CloudTrail"],
            "detail": {
                "eventSource": ["cognito-idp.amazonaws.com"],
                "eventName": ["AdminDisableUser", "AdminDeleteUser", "DeleteUser", "AdminUserGlobalSignOut",
                    "GlobalSignOut", "RevokeToken", "AdminResetUserPassword", "AdminSetUserPassword",
                    "ChangePassword", "AdminRemoveUserFromGroup"],
                "requestParameters": {"userPoolId": [pool_id]},
            },
        });
        events.put_rule().name(name).event_pattern(pattern.to_string()).send().await.unwrap();
        let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(arn).build().unwrap();
        events.put_targets().rule(name).targets(target).send().await.unwrap();
        Feed { sqs, events, queue_url, pool_id: pool_id.to_owned() }
    }

    /// What CloudTrail records for `call` on `sub`: an event's `detail`.
    fn detail(&self, call: &str, sub: &str, event_id: &str) -> serde_json::Value {
        json!({
            "eventVersion": "1.08",
            "eventSource": "cognito-idp.amazonaws.com",
            "eventName": call,
            "awsRegion": "us-east-1",
            "requestParameters": {"userPoolId": self.pool_id, "username": "HIDDEN_DUE_TO_SECURITY_REASONS"},
            "additionalEventData": {"sub": sub},
            "eventID": event_id,
            "eventType": "AwsApiCall",
        })
    }

    /// Puts the record of `call` on `sub` on EventBridge, whose rule delivers it to the queue.
    async fn publish(&self, call: &str, sub: &str, event_id: &str) {
        let detail = self.detail(call, sub, event_id);
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source("aws.cognito-idp")
            .detail_type("AWS API Call via CloudTrail")
            .detail(detail.to_string())
            .build();
        let out = self.events.put_events().entries(entry).send().await.unwrap();
        assert_eq!(out.failed_entry_count, 0);
    }

    /// Sends a message as EventBridge delivers `call` on `sub` to another queue, as a second
    /// delivery of the same event would arrive there.
    #[cfg(feature = "redis")]
    async fn deliver_to(&self, queue_url: &str, call: &str, sub: &str, event_id: &str) {
        let body = json!({
            "version": "0",
            "id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.cognito-idp",
            "account": "123456789012",
            "region": "us-east-1",
            "resources": [],
            "detail": self.detail(call, sub, event_id),
        });
        self.sqs.send_message().queue_url(queue_url).message_body(body.to_string()).send().await.unwrap();
    }

    /// Messages in a queue, visible or being handled.
    async fn pending_at(&self, queue_url: &str) -> u64 {
        let names = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ];
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .unwrap();
        let attributes = out.attributes.unwrap();
        names.iter().map(|n| attributes[n].parse::<u64>().unwrap()).sum()
    }

    async fn drained(&self, within: Duration) {
        self.drained_at(&self.queue_url.clone(), within).await;
    }

    async fn drained_at(&self, queue_url: &str, within: Duration) {
        let started = Instant::now();
        while self.pending_at(queue_url).await > 0 {
            assert!(
                started.elapsed() < within,
                "{} messages still in the queue",
                self.pending_at(queue_url).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `name`, made unique by the pool id's own part.
fn unique(name: &str, pool_id: &str) -> String {
    format!("{name}-{}", pool_id.rsplit_once('_').map_or(pool_id, |(_, id)| id))
}

fn sub_of(token: &str) -> String {
    common::claims_of(token)["sub"].as_str().unwrap().to_owned()
}

/// A verifier with a 300 s TTL that consumes the feed's queue.
async fn verifier(s: &common::Seeded, feed: &Feed) -> Verifier {
    let verifier = s
        .verifier()
        .sdk_config(&shared_config())
        .endpoint_url(s.proxy.endpoint())
        .cache_ttl(Duration::from_secs(300))
        .events_queue(&feed.queue_url)
        .build()
        .unwrap();
    verifier.hydrate().await.unwrap();
    verifier
}

/// Polls until the token is refused; how long that took.
async fn refused_within(verifier: &Verifier, token: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while verifier.verify(token).await.is_ok() {
        assert!(started.elapsed() < limit, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_disable_event_refuses_the_users_cached_token_within_2_s_despite_a_300_s_ttl() {
    let s = common::seeded("events-disable").await;
    s.pool.create_user("bob", PASSWORD, &[]).await.unwrap();
    let bob = s.pool.sign_in(&s.pool.client_id, "bob", PASSWORD).await.unwrap().access;
    let feed = Feed::new("events-disable", &s.pool.pool_id).await;
    let verifier = verifier(&s, &feed).await;
    verifier.verify(&s.tokens.access).await.unwrap();
    verifier.verify(&bob).await.unwrap();
    s.revoke(Revoke::AdminDisableUser).await;
    // Without the event, the cache would keep alice for 300 s.
    verifier.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 2);

    feed.publish("AdminDisableUser", &sub_of(&s.tokens.access), "ct-disable-1").await;
    let took = refused_within(&verifier, &s.tokens.access, Duration::from_secs(2)).await;
    eprintln!("refused {took:?} after the event");
    // Bob's verdict was not touched.
    let calls = s.proxy.get_user_calls();
    verifier.verify(&bob).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), calls);
    feed.drained(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_spoofed_event_costs_one_call_and_refuses_nobody_and_duplicates_cost_nothing() {
    let s = common::seeded("events-spoofed").await;
    let feed = Feed::new("events-spoofed", &s.pool.pool_id).await;
    let verifier = verifier(&s, &feed).await;
    verifier.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 1);

    // Nothing happened to alice in Cognito: the event only makes her token verified again.
    let sub = sub_of(&s.tokens.access);
    feed.publish("AdminUserGlobalSignOut", &sub, "ct-spoof-1").await;
    feed.drained(Duration::from_secs(2)).await;
    verifier.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 2);

    // The same event delivered again is skipped.
    feed.publish("AdminUserGlobalSignOut", &sub, "ct-spoof-1").await;
    feed.drained(Duration::from_secs(2)).await;
    verifier.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 2);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn in_fleet_mode_an_event_another_instance_handled_costs_nothing_when_delivered_again() {
    let s = common::seeded("events-fleet").await;
    let redis = crate::fleet::Redis::start().await;
    let feed = Feed::new("events-fleet", &s.pool.pool_id).await;
    // Another instance's queue, which a second delivery of the event reaches later.
    let name = unique("events-fleet-late", &s.pool.pool_id);
    let late = feed.sqs.create_queue().queue_name(name).send().await.unwrap().queue_url.unwrap();
    let instance = |queue: String| {
        s.verifier()
            .sdk_config(&shared_config())
            .endpoint_url(s.proxy.endpoint())
            .cache_ttl(Duration::from_secs(300))
            .redis(redis.url())
            .events_queue(queue)
            .build()
            .unwrap()
    };
    let (a, b) = (instance(feed.queue_url.clone()), instance(late.clone()));
    a.hydrate().await.unwrap();
    b.hydrate().await.unwrap();
    a.verify(&s.tokens.access).await.unwrap();
    b.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 1, "the second instance reads the first one's verdict");

    let sub = sub_of(&s.tokens.access);
    feed.publish("AdminUserGlobalSignOut", &sub, "ct-fleet-1").await;
    feed.drained(Duration::from_secs(2)).await;
    a.verify(&s.tokens.access).await.unwrap();
    b.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 2, "verified again once, for the fleet");

    // The same event reaches the other instance: the fleet has handled it.
    feed.deliver_to(&late, "AdminUserGlobalSignOut", &sub, "ct-fleet-1").await;
    feed.drained_at(&late, Duration::from_secs(2)).await;
    a.verify(&s.tokens.access).await.unwrap();
    b.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 2);

    // A new event still works through that instance.
    feed.deliver_to(&late, "AdminUserGlobalSignOut", &sub, "ct-fleet-2").await;
    feed.drained_at(&late, Duration::from_secs(2)).await;
    a.verify(&s.tokens.access).await.unwrap();
    assert_eq!(s.proxy.get_user_calls(), 3);
}

#[tokio::test]
async fn a_malformed_message_is_deleted_and_the_consumer_keeps_going() {
    let s = common::seeded("events-malformed").await;
    let feed = Feed::new("events-malformed", &s.pool.pool_id).await;
    let verifier = verifier(&s, &feed).await;
    verifier.verify(&s.tokens.access).await.unwrap();
    for body in ["not json at all", r#"{"detail": "nothing"}"#] {
        feed.sqs.send_message().queue_url(&feed.queue_url).message_body(body).send().await.unwrap();
    }
    feed.drained(Duration::from_secs(2)).await;
    s.revoke(Revoke::AdminDeleteUser).await;
    feed.publish("AdminDeleteUser", &sub_of(&s.tokens.access), "ct-malformed-1").await;
    refused_within(&verifier, &s.tokens.access, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sqs_down_leaves_requests_unaffected() {
    let s = common::seeded("events-down").await;
    let dead = aws_sdk_sqs::config::Builder::from(&shared_config())
        .endpoint_url(format!("http://127.0.0.1:{}", common::example::free_port()))
        .build();
    let verifier = s
        .verifier()
        .cache_ttl(Duration::from_secs(300))
        .events_queue_client(aws_sdk_sqs::Client::from_conf(dead), "http://127.0.0.1:9/000000000000/none")
        .build()
        .unwrap();
    verifier.hydrate().await.unwrap();
    for _ in 0..20 {
        let started = Instant::now();
        verifier.verify(&s.tokens.access).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.proxy.get_user_calls(), 1);
}

#[tokio::test]
async fn a_queue_without_credentials_to_read_it_fails_at_build_naming_the_fix() {
    let s = common::seeded("events-config").await;
    let err = s.verifier().events_queue("https://sqs.us-east-1.amazonaws.com/1/q").build().unwrap_err();
    assert!(err.to_string().contains("sdk_config"), "{err}");
    let err = s.verifier().sdk_config(&shared_config()).events_queue("not a url").build().unwrap_err();
    assert!(err.to_string().contains("events_queue"), "{err}");
}

/// The SQS client holds the app's credentials: the builder's and the verifier's `Debug` show the
/// access key id (the provider is there) and never the secrets.
#[tokio::test]
async fn the_apps_aws_credentials_never_reach_debug_output() {
    let credentials = aws_sdk_sqs::config::Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI-secret",
        Some("session-secret".into()),
        None,
        "tests",
    );
    let config = aws_types::SdkConfig::builder()
        .region(aws_types::region::Region::new("us-east-1"))
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(credentials))
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .build();
    let builder = Verifier::builder("us-east-1_AbC123xyz")
        .client_id("client")
        .sdk_config(&config)
        .events_queue("https://sqs.us-east-1.amazonaws.com/123456789012/cognito-events");
    let debug = format!("{builder:?} {:?}", builder.clone().build().unwrap());
    assert!(debug.contains("AKIDEXAMPLE"), "the credentials are not in the output at all: {debug}");
    for secret in ["wJalrXUtnFEMI-secret", "session-secret"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

/// The bar, through the example server with a 300 s TTL.
#[tokio::test]
async fn the_example_server_refuses_a_disabled_user_within_2_s_of_the_event() {
    let s = common::seeded("events-example").await;
    s.pool.create_user("bob", PASSWORD, &[]).await.unwrap();
    let bob = s.pool.sign_in(&s.pool.client_id, "bob", PASSWORD).await.unwrap().access;
    let feed = Feed::new("events-example", &s.pool.pool_id).await;
    let moto = common::Kind::Moto.endpoint();
    let server = start(&[
        ("COGNITO_USER_POOL_ID", &s.pool.pool_id),
        ("COGNITO_CLIENT_ID", &s.pool.client_id),
        ("COGNITO_CACHE_TTL_SECS", "300"),
        ("AWS_ENDPOINT_URL", &moto),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("COGNITO_EVENTS_QUEUE_URL", &feed.queue_url),
    ])
    .await;
    let addr = server.addr;
    assert_eq!(get_with_token(addr, "/me", &s.tokens.access).await.status, 200);
    assert_eq!(get_with_token(addr, "/me", &bob).await.status, 200);

    // A spoofed event for bob, who is fine: still 200.
    feed.publish("AdminDisableUser", &sub_of(&bob), "ct-example-spoof").await;
    feed.drained(Duration::from_secs(2)).await;
    assert_eq!(get_with_token(addr, "/me", &bob).await.status, 200);

    s.revoke(Revoke::AdminDisableUser).await;
    assert_eq!(get_with_token(addr, "/me", &s.tokens.access).await.status, 200, "cached for 300 s");
    feed.publish("AdminDisableUser", &sub_of(&s.tokens.access), "ct-example-disable").await;
    let published = Instant::now();
    loop {
        let status = get_with_token(addr, "/me", &s.tokens.access).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(published.elapsed() < Duration::from_secs(2), "still 200 two seconds after the event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("401 {:?} after the event", published.elapsed());
    assert_eq!(get_with_token(addr, "/me", &bob).await.status, 200);
}

/// The shutdown contract, on a verifier with every background task the crate has: the events
/// consumer (in its 20 s long poll), the Redis invalidation listener, the budget's window and the
/// key loader (its JWKS does not answer). Once `HttpServer` has stopped and the verifier is
/// dropped, none of them is left: each ends at its next await.
#[cfg(feature = "redis")]
#[actix_web::test]
async fn after_the_server_stops_and_the_verifier_is_dropped_no_task_of_the_crate_is_left() {
    use actix_web::{web, App, HttpServer};

    let s = common::seeded("shutdown").await;
    let feed = Feed::new("shutdown", &s.pool.pool_id).await;
    let redis = crate::fleet::Redis::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let before = tasks();
    let verifier = s
        .verifier()
        .sdk_config(&shared_config())
        .endpoint_url(s.proxy.endpoint())
        .jwks_url(format!("http://{closed}/jwks.json"))
        .cache_ttl(Duration::from_secs(1))
        .get_user_budget(5)
        .max_cache_ttl(Duration::from_secs(60))
        .events_queue(&feed.queue_url)
        .redis(redis.url())
        .build()
        .unwrap();
    assert!(verifier.hydrate().await.is_err(), "the keys cannot be fetched");
    let background = tasks() - before;
    assert!(background >= 4, "{background} background tasks: expected the four of the crate");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new({
        let verifier = verifier.clone();
        move || {
            App::new().app_data(web::Data::new(verifier.clone())).route(
                "/ready",
                web::get().to(|v: web::Data<Verifier>| async move { v.readiness().ready.to_string() }),
            )
        }
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    let running = actix_web::rt::spawn(server);
    assert_eq!(common::http::get(addr, "/ready", &[]).await.body, "false");
    handle.stop(true).await;
    running.await.unwrap().unwrap();
    drop(verifier);

    let stopped = Instant::now();
    while tasks() > before {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "{} of the crate's tasks still running 5 s after the verifier was dropped",
            tasks() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("{background} background tasks ended {:?} after the verifier was dropped", stopped.elapsed());
}
