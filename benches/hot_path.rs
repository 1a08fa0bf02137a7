//! The cached path in isolation: bearer parsing, the keyed hash and the cache hit; and the claim checks
//! that a miss runs before any remote call.
//!
//! ```text
//! cargo bench --all-features --bench hot_path
//! ```

use std::hint::black_box;

use actix_cognito::fuzzing;
use actix_cognito::testing::{access_claims, FakeCognito, TestSigner};
use actix_cognito::Verifier;
use criterion::{criterion_group, criterion_main, Criterion};

fn claims() -> serde_json::Value {
    let mut claims =
        access_claims("eu-west-1_Fuzz", "fuzzclient", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", 3600);
    claims["username"] = "alice".into();
    claims["jti"] = "11111111-2222-4333-8444-555555555555".into();
    claims["origin_jti"] = "66666666-7777-4888-8999-000000000000".into();
    claims["cognito:groups"] = serde_json::json!(["staff"]);
    claims
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let token = TestSigner::default().sign(&claims());
    let header = format!("Bearer {token}");
    let fake = rt.block_on(FakeCognito::user("alice", &[("email", "alice@example.com")])).unwrap();
    let build = || {
        let verifier = Verifier::builder("eu-west-1_Fuzz")
            .client_id("fuzzclient")
            .endpoint_url(fake.endpoint())
            .build()
            .unwrap();
        rt.block_on(verifier.verify(&token)).unwrap();
        verifier
    };
    // Without a metrics recorder (the handles are no-ops), then with Prometheus's.
    let verifier = build();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metered = metrics::with_local_recorder(&recorder, build);

    for (name, verifier) in
        [("bearer + fast key + cache hit", &verifier), ("... with Prometheus metrics", &metered)]
    {
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let raw = fuzzing::strip_bearer(black_box(header.as_bytes())).unwrap();
                verifier.verify_bytes(raw).await.unwrap()
            })
        });
    }
    let seed = foldhash::quality::RandomState::default();
    c.bench_function("keyed fast hash of the token (foldhash)", |b| {
        use std::hash::BuildHasher;
        b.iter(|| seed.hash_one(black_box(token.as_bytes())))
    });
    c.bench_function("sha256 of the token (a miss only)", |b| {
        b.iter(|| fuzzing::key(black_box(token.as_bytes())))
    });
    c.bench_function("sha256 of the token (sha2 crate)", |b| {
        use sha2::Digest;
        b.iter(|| sha2::Sha256::digest(black_box(token.as_bytes())))
    });
    c.bench_function("bearer + sha256 + claim checks (a miss, before any remote call)", |b| {
        b.iter(|| fuzzing::check(black_box(header.as_bytes())))
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
