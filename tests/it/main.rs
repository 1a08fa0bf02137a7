//! The integration suite, one binary: the verifier against moto and cognito-local, the cache,
//! the signature pre-check, hostile input, the middleware, operations, fleet mode and the
//! example server. (`tests/logs.rs` and `tests/memory.rs` are binaries of their own: one
//! installs a global log subscriber, the other a counting allocator.)

#[path = "../common/mod.rs"]
mod common;

mod beyond;
mod cache;
mod cluster;
mod emulators;
mod events;
mod example_server;
mod fleet;
mod front;
mod hostile;
mod middleware;
mod operations;
mod prometheus;
mod replicas;
mod scale;
mod signature;
mod step_up;
mod verify;
