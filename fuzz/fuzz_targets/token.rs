//! The bearer token parser and claim checks on arbitrary `Authorization` values: no panic, and
//! anything accepted keeps the invariants the verifier relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actix_cognito::fuzzing::check(data);
});
