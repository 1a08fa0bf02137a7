//! Wall-clock time, as tokens and Redis records count it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: the unit of `exp`, `iat` and `auth_time`.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
