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
            .max_get_user_per_user_per_second(u32::MAX)
            // The benchmarks run longer than the default TTL: every hit stays a hit.
            .cache_ttl(std::time::Duration::from_secs(3600))
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
    // The same hits from 1 and 2 threads at once, one token: the time per hit on each thread.
    // With nothing shared written on a hit, two threads take what one takes.
    for threads in [1, 2] {
        c.bench_function(&format!("cache hit from {threads} thread(s) at once, per hit"), |b| {
            b.iter_custom(|iters| {
                let barrier = std::sync::Barrier::new(threads);
                std::thread::scope(|s| {
                    let workers: Vec<_> = (0..threads)
                        .map(|_| {
                            s.spawn(|| {
                                let rt = tokio::runtime::Builder::new_current_thread()
                                    .enable_all()
                                    .build()
                                    .unwrap();
                                rt.block_on(async {
                                    // Fill this thread's front before timing.
                                    verifier.verify_bytes(token.as_bytes()).await.unwrap();
                                    barrier.wait();
                                    let started = std::time::Instant::now();
                                    for _ in 0..iters {
                                        black_box(
                                            verifier.verify_bytes(black_box(token.as_bytes())).await.unwrap(),
                                        );
                                    }
                                    started.elapsed()
                                })
                            })
                        })
                        .collect();
                    workers.into_iter().map(|w| w.join().unwrap()).max().unwrap()
                })
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

    // The miss path's remote call, on loopback against the in-process fake: through the AWS SDK
    // (what a miss costs besides the checks), and the same request through a bare hyper client,
    // for the share of the SDK's own machinery (request building, interceptors, retry and
    // timeout layers, parsing).
    // Every iteration calls for the same user: no per-user call rate.
    let uncached = Verifier::builder("eu-west-1_Fuzz")
        .client_id("fuzzclient")
        .endpoint_url(fake.endpoint())
        .max_get_user_per_user_per_second(u32::MAX)
        .cache_ttl(std::time::Duration::ZERO)
        .signature_check(false)
        .build()
        .unwrap();
    c.bench_function("a miss: checks + GetUser through the AWS SDK (loopback fake)", |b| {
        b.to_async(&rt).iter(|| async { uncached.verify(black_box(&token)).await.unwrap() })
    });
    let bare = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let body = bytes::Bytes::from(format!(r#"{{"AccessToken":"{token}"}}"#));
    let endpoint = fake.endpoint();
    c.bench_function("the same GetUser request through a bare hyper client", |b| {
        b.to_async(&rt).iter(|| async {
            let request = http::Request::post(&endpoint)
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amz-target", "AWSCognitoIdentityProviderService.GetUser")
                .body(http_body_util::Full::new(body.clone()))
                .unwrap();
            let response = bare.request(request).await.unwrap();
            let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
