//! Traces through OpenTelemetry (`tracing-opentelemetry`): the AWS SDK's `GetUser` span is a
//! child of the crate's `cognito_verify` span, in the same trace, with OpenTelemetry's RPC
//! attributes. A binary of its own: it installs the global subscriber.

mod common;

use std::collections::HashMap;

use actix_cognito::testing::FakeCognito;
use actix_cognito::{CognitoAuth, CognitoUser, Verifier};
use actix_web::{test, web, App, HttpResponse};
use common::{fake_token, FAKE_CLIENT, FAKE_POOL};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

#[actix_web::test]
async fn the_get_user_call_is_a_child_of_the_verification_in_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let fake = FakeCognito::user("alice", &[]).await.unwrap();
    let verifier =
        Verifier::builder(FAKE_POOL).client_id(FAKE_CLIENT).endpoint_url(fake.endpoint()).build().unwrap();
    let app = test::init_service(App::new().wrap(CognitoAuth::new(verifier)).route(
        "/me",
        web::get().to(|u: CognitoUser| async move { HttpResponse::Ok().body(u.username().to_owned()) }),
    ))
    .await;
    let request = test::TestRequest::get()
        .uri("/me")
        .insert_header(("Authorization", format!("Bearer {}", fake_token("traced", 3600))))
        .to_request();
    assert_eq!(test::call_service(&app, request).await.status(), 200);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let by_id: HashMap<_, _> = spans.iter().map(|s| (s.span_context.span_id(), s)).collect();
    let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    let verify = spans.iter().find(|s| s.name == "cognito_verify").unwrap_or_else(|| panic!("{names:?}"));
    let get_user = spans
        .iter()
        .find(|s| s.name == "Cognito Identity Provider.GetUser")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(get_user.span_context.trace_id(), verify.span_context.trace_id());
    // The SDK's span descends from the verification's.
    let mut parent = by_id.get(&get_user.parent_span_id);
    while let Some(p) = parent {
        if p.span_context.span_id() == verify.span_context.span_id() {
            break;
        }
        parent = by_id.get(&p.parent_span_id);
    }
    assert!(parent.is_some(), "GetUser's span is not under cognito_verify: {names:?}");
    assert_eq!(attribute(get_user, "rpc.system").as_deref(), Some("aws-api"));
    assert_eq!(attribute(get_user, "rpc.method").as_deref(), Some("GetUser"));
    assert_eq!(attribute(verify, "outcome").as_deref(), Some("accepted"));
    assert_eq!(attribute(verify, "cache_hit").as_deref(), Some("false"));
    // No attribute of any span carries the token.
    let token = fake_token("traced", 3600);
    let signature = token.rsplit('.').next().unwrap();
    for span in &spans {
        for kv in &span.attributes {
            assert!(!kv.value.to_string().contains(signature), "{} carries the token", span.name);
        }
    }
}
