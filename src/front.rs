//! A per-thread front of the verdict cache: a repeated hit reads only memory its own thread
//! wrote, and memory every thread only reads.
//!
//! moka records every read for its eviction policy, and a verdict's principal is one `Arc` that
//! every request clones: two workers hitting the same tokens bounce those cache lines between
//! their cores, and the cost of a hit grows with the cores. The front keeps, per thread and per
//! cache, the last verdicts that thread found in moka, each with its own copy of the principal
//! (so the reference counts that requests bump are the thread's own).
//!
//! moka stays the cache of record (capacity, weight, expiry, eviction, invalidation); the front
//! only repeats, for a bounded time, what moka said. What keeps it from repeating a revoked
//! verdict is one generation number per cache, which only invalidations write:
//!
//! - every invalidation (`invalidate_*`, `revoke_user`, sessions, events, fleet broadcasts,
//!   refresh-ahead's rejections) and every watermark bumps the generation *after* it has
//!   removed the entries or recorded the mark;
//! - a thread reads the generation *before* it asks moka, and files what moka answered under
//!   that generation; a front entry is served only while the generation is unchanged;
//! - so an entry filed before an invalidation finished, or whose moka answer raced one, carries
//!   an older generation and is never served again. A bump empties every front at once, which is
//!   what invalidations are rare enough to afford.
//!
//! A front entry also ends at its verdict's own end (`until`, never past the token's `exp`) and
//! at its refresh point, where the hit goes to moka, which starts the refresh and whose renewed
//! verdict the front then repeats. Each thread holds at most [`SLOTS`] entries (direct-mapped by
//! the token's hash): with a typical principal about 150 KB per thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::time::Instant;

use crate::token::{FastKey, Tail, TokenKey};
use crate::user::Principal;

/// Entries per thread.
pub(crate) const SLOTS: usize = 256;

/// A cache's generation: bumped by every invalidation.
#[derive(Debug)]
pub(crate) struct Generation {
    /// The cache's identity in the fronts (never 0).
    id: u64,
    value: AtomicU64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for Generation {
    fn default() -> Self {
        Self::new()
    }
}

impl Generation {
    pub(crate) fn new() -> Self {
        Generation { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), value: AtomicU64::new(0) }
    }

    /// Read before moka is asked.
    #[inline]
    pub(crate) fn current(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// After an invalidation has done its work: every front entry filed before is void.
    pub(crate) fn bump(&self) {
        self.value.fetch_add(1, Ordering::AcqRel);
    }
}

/// One verdict a thread found in moka.
struct Slot {
    cache: u64,
    generation: u64,
    fast: FastKey,
    tail: Tail,
    until: Instant,
    /// The refresh point, in ms of the cache's epoch (`u64::MAX`: none).
    refresh_ms: u64,
    key: TokenKey,
    principal: Principal,
}

thread_local! {
    static FRONT: RefCell<Vec<Option<Slot>>> = RefCell::new((0..SLOTS).map(|_| None).collect());
}

/// What a front hit gives.
pub(crate) struct FrontHit {
    pub(crate) principal: Principal,
    pub(crate) key: TokenKey,
}

/// The verdict this thread filed for the token, if it may still be served.
#[inline]
pub(crate) fn get(
    gen: &Generation,
    current: u64,
    fast: FastKey,
    tail: &Tail,
    now: Instant,
    now_ms: u64,
) -> Option<FrontHit> {
    FRONT
        .try_with(|front| {
            let front = front.borrow();
            let slot = front[(fast as usize) % SLOTS].as_ref()?;
            let fresh = slot.cache == gen.id
                && slot.generation == current
                && slot.fast == fast
                && slot.tail == *tail
                && now < slot.until
                && now_ms < slot.refresh_ms;
            fresh.then(|| FrontHit { principal: slot.principal.clone(), key: slot.key })
        })
        .ok()
        .flatten()
}

/// Files what moka answered, read at generation `current`, with a copy of the principal that
/// is this thread's own.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put(
    gen: &Generation,
    current: u64,
    fast: FastKey,
    tail: Tail,
    until: Instant,
    refresh_ms: u64,
    key: TokenKey,
    principal: &Principal,
) {
    let _ = FRONT.try_with(|front| {
        let mut front = front.borrow_mut();
        let principal = principal.detached();
        front[(fast as usize) % SLOTS] =
            Some(Slot { cache: gen.id, generation: current, fast, tail, until, refresh_ms, key, principal });
    });
}

/// Counters that each thread adds to in a slot of its own (its own cache line), summed when
/// read: a hit counts without writing memory another core is using.
pub(crate) struct Striped {
    slots: Box<[Padded]>,
}

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

const STRIPES: usize = 32;

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

impl Default for Striped {
    fn default() -> Self {
        Striped { slots: (0..STRIPES).map(|_| Padded::default()).collect() }
    }
}

impl Striped {
    #[inline]
    pub(crate) fn add(&self) {
        let i = STRIPE.try_with(|s| *s).unwrap_or(0);
        self.slots[i].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl std::fmt::Debug for Striped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Striped").field(&self.sum()).finish()
    }
}
