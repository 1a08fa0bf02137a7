//! The verdict cache is bounded in bytes, and tokens of one user share one copy of the user.
//!
//! Heap use is counted by this binary's own allocator, so this file holds a single test.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use actix_cognito::testing::{Behaviour, FakeCognito, TestSigner};
use actix_cognito::Verifier;
use common::{access_claims, FAKE_CLIENT, FAKE_POOL};

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test]
async fn a_thousand_tokens_of_one_user_with_50_kb_of_attributes_stay_within_the_byte_budget() {
    let bio = "x".repeat(50 * 1024);
    let fake = FakeCognito::user("user-big", &[("custom:bio", &bio)]).await.unwrap();
    let budget = 4 * 1024 * 1024;
    // A thousand tokens of one user: past the per-user call rate, which is not what is measured.
    let verifier = Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(fake.endpoint())
        .max_get_user_per_user_per_second(u32::MAX)
        .signature_check(false)
        .cache_max_bytes(budget)
        .build()
        .unwrap();
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, "big", 3600);
            claims["jti"] = format!("session-{i}").into();
            TestSigner::default().sign(&claims)
        })
        .collect();
    verifier.verify(&tokens[0]).await.unwrap();
    verifier.run_pending_tasks().await;
    let before = HEAP.load(Relaxed);
    for token in &tokens {
        assert_eq!(
            verifier.verify(token).await.unwrap().attribute("custom:bio").map(str::len),
            Some(50 * 1024)
        );
    }
    verifier.run_pending_tasks().await;
    let grown = HEAP.load(Relaxed) - before;
    let stats = verifier.stats();
    assert!(stats.entry_bytes <= budget, "{} bytes weighed against a budget of {budget}", stats.entry_bytes);
    assert!(grown < budget as isize, "the heap grew by {grown} bytes for 1000 tokens of one user");
    // Shared, the user fits many times over: every token stays cached.
    assert_eq!(stats.entries, 1000);
    let calls = fake.get_user_calls();
    for token in &tokens {
        verifier.verify(token).await.unwrap();
    }
    assert_eq!(fake.get_user_calls(), calls);

    // Many users with small profiles: what the cache weighs is what the heap holds, so that
    // `cache_max_bytes` bounds the memory it says.
    let attributes = vec![("email".to_owned(), "someone@example.com".to_owned())];
    let people = FakeCognito::start(Behaviour::Claims { attributes }).await.unwrap();
    let verifier = Verifier::builder(FAKE_POOL)
        .client_id(FAKE_CLIENT)
        .endpoint_url(people.endpoint())
        .signature_check(false)
        .cache_max_bytes(64 * 1024 * 1024)
        .build()
        .unwrap();
    let tokens: Vec<String> = (0..2000)
        .map(|i| {
            let mut claims = access_claims(FAKE_POOL, FAKE_CLIENT, &format!("user-{i:05}"), 3600);
            claims["origin_jti"] = format!("session-{i:05}").into();
            TestSigner::default().sign(&claims)
        })
        .collect();
    verifier.verify(&tokens[0]).await.unwrap();
    verifier.run_pending_tasks().await;
    let (before, weighed_before) = (HEAP.load(Relaxed), verifier.stats().entry_bytes);
    for token in &tokens[1..] {
        verifier.verify(token).await.unwrap();
    }
    verifier.run_pending_tasks().await;
    let grown = (HEAP.load(Relaxed) - before) as f64;
    let weighed = (verifier.stats().entry_bytes - weighed_before) as f64;
    let ratio = weighed / grown;
    assert!(
        (0.85..=1.15).contains(&ratio),
        "weighed {weighed} bytes for 1999 principals, the heap grew by {grown} ({ratio:.2}x)"
    );
}
