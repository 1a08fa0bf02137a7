//! The quota-aware TTL: the shortest cache TTL that keeps the `GetUser` calls of the active
//! token population under a budget.
//!
//! A token requested at least once per TTL costs one call per TTL, so `n` active tokens cost
//! about `n / ttl` calls a second: the TTL that fits a budget of `b` calls a second is `n / b`.
//! The population `n` is the number of distinct *verified* tokens requested in the last 5 to
//! 10 s, counted with a linear-counting bitmap (a bit per token hash: O(1) and allocation-free
//! on the hot path, a few hundred KiB at most). It does not depend on the TTL, so the TTL follows
//! the population without feedback and cannot oscillate: it rises as soon as the population
//! does, and falls within 10 s of it shrinking.
//!
//! A fixed TTL would make every token loaded in the same second expire in the same second, a
//! burst of `n` calls each period. So when the TTL is above its floor, each entry expires at the
//! next point of a grid of period `ttl` shifted by the token's own hash: the reloads of `n`
//! tokens spread evenly over the period, and each token costs one call per period after its
//! first.
//!
//! Only tokens that passed (a cache hit or a positive verdict) are counted: garbage, forged or
//! revoked tokens cannot stretch the TTL, that is the revocation delay of everyone else.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use metrics::Gauge;
use tokio::time::Instant;

use crate::token::TokenKey;

/// How long one counting window lasts; the population is counted over the last two.
const EPOCH: Duration = Duration::from_secs(5);
/// How often, at most, the TTL is worked out again (on the miss path).
const EVALUATE_EVERY: Duration = Duration::from_millis(250);
/// The share of the budget aimed at, leaving room for tokens counted late and for first loads.
const HEADROOM: f64 = 0.85;
/// After the TTL moves by more than a quarter, how long verdicts keep the floor TTL: entries
/// made on a grid about to change would reload early, off the new grid, a second time.
const SETTLE: Duration = Duration::from_secs(1);

/// The settings of a call budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BudgetSettings {
    /// `GetUser` calls a second the active tokens may cost.
    pub(crate) per_second: u32,
    /// The longest TTL the budget may pick.
    pub(crate) max_ttl: Duration,
    /// Fleet mode: the population is counted fleet-wide, through Redis.
    pub(crate) fleet: bool,
}

/// The most tokens handed to the fleet's count per flush.
pub(crate) const MAX_SHARED_PER_FLUSH: usize = 64 * 1024;
/// How long the fleet's count is trusted without a fresher one.
const SHARED_COUNT_LIFE: Duration = Duration::from_secs(3);

/// Fleet mode: the tokens first seen here since the last flush, and the fleet's latest count.
#[derive(Default)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct SharedCount {
    pending: std::sync::Mutex<Vec<u64>>,
    count: AtomicU64,
    /// When `count` was read, ms since `population.started` (0: never).
    at_ms: AtomicU64,
    started: std::sync::atomic::AtomicBool,
}

/// Distinct tokens seen over the last two windows, by linear counting: three bitmaps in turn
/// (the current window's, the previous one's, and the next one's, cleared in advance).
struct Population {
    maps: [Box<[AtomicU64]>; 3],
    /// Bits per map, a power of two.
    bits: u64,
    /// The window the current map belongs to.
    epoch: AtomicU64,
    started: Instant,
}

impl Population {
    fn new(bits: u64) -> Self {
        let map = || (0..bits / 64).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Population { maps: [map(), map(), map()], bits, epoch: AtomicU64::new(0), started: Instant::now() }
    }

    /// Milliseconds since the count started.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The window at `now_ms`, its map cleared on the way in.
    fn current(&self, now_ms: u64) -> u64 {
        let now = now_ms / EPOCH.as_millis() as u64;
        let seen = self.epoch.load(Relaxed);
        if now > seen && self.epoch.compare_exchange(seen, now, Relaxed, Relaxed).is_ok() {
            // The next window's map held the one before the previous: clear it for later. After
            // a gap of two windows or more, every map is out of date.
            let stale: &[u64] = if now - seen >= 2 { &[0, 1, 2] } else { &[(now + 1) % 3] };
            for &i in stale {
                self.maps[i as usize].iter().for_each(|w| w.store(0, Relaxed));
            }
        }
        now.max(seen)
    }

    /// Counts a token; whether this is its first sighting in the window.
    #[inline]
    fn observe(&self, hash: u64, now_ms: u64) -> bool {
        let map = &self.maps[(self.current(now_ms) % 3) as usize];
        let bit = hash & (self.bits - 1);
        let (word, mask) = (&map[(bit / 64) as usize], 1u64 << (bit % 64));
        // Only the first sighting of a token in a window writes.
        word.load(Relaxed) & mask == 0 && word.fetch_or(mask, Relaxed) & mask == 0
    }

    /// Distinct tokens seen in this window and the previous one.
    fn estimate(&self) -> f64 {
        let now = self.current(self.now_ms());
        let (a, b) = (&self.maps[(now % 3) as usize], &self.maps[((now + 2) % 3) as usize]);
        let zeros: u64 = a
            .iter()
            .zip(b.iter())
            .map(|(a, b)| (!(a.load(Relaxed) | b.load(Relaxed))).count_ones() as u64)
            .sum();
        let m = self.bits as f64;
        // Saturated: more tokens than the map can tell apart; the ceiling applies anyway.
        let zeros = (zeros as f64).max(0.5);
        -m * (zeros / m).ln()
    }
}

/// Picks the cache TTL from the active population and a call budget.
pub(crate) struct Budget {
    settings: BudgetSettings,
    floor: Duration,
    population: Population,
    /// The TTL in force, in milliseconds.
    effective_ms: AtomicU64,
    /// When the TTL may be worked out again, ms since `population.started`.
    next_evaluation_ms: AtomicU64,
    /// Until when the TTL is still settling (floor TTLs), ms since `population.started`.
    settling_until_ms: AtomicU64,
    gauge: Gauge,
    shared: Option<SharedCount>,
}

impl Budget {
    pub(crate) fn new(settings: BudgetSettings, floor: Duration, gauge: Gauge) -> Self {
        // Enough bits to tell apart twice the tokens the ceiling could serve within the budget.
        let most = u64::from(settings.per_second).saturating_mul(settings.max_ttl.as_secs().max(1));
        let bits = most.saturating_mul(2).next_power_of_two().clamp(1 << 12, 1 << 23);
        gauge.set(floor.as_secs_f64());
        Budget {
            settings,
            floor,
            population: Population::new(bits),
            effective_ms: AtomicU64::new(floor.as_millis() as u64),
            next_evaluation_ms: AtomicU64::new(0),
            settling_until_ms: AtomicU64::new(0),
            gauge,
            shared: settings.fleet.then(SharedCount::default),
        }
    }

    /// Counts a verified token as active, and works the TTL out again if it is time (four
    /// times a second at most), so that it follows a population that only hits the cache.
    #[inline]
    pub(crate) fn observe(&self, key: &TokenKey) {
        let now = self.population.now_ms();
        let hash = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        if self.population.observe(hash, now) {
            if let Some(shared) = &self.shared {
                let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.len() < MAX_SHARED_PER_FLUSH {
                    pending.push(hash);
                }
            }
        }
        if now >= self.next_evaluation_ms.load(Relaxed) {
            self.evaluate();
        }
    }

    /// The TTL in force: the revocation delay tokens get now.
    pub(crate) fn effective(&self) -> Duration {
        Duration::from_millis(self.effective_ms.load(Relaxed))
    }

    /// Works the TTL out again if it has not been for a while.
    fn evaluate(&self) -> Duration {
        let now = self.population.now_ms();
        let next = self.next_evaluation_ms.load(Relaxed);
        let later = now + EVALUATE_EVERY.as_millis() as u64;
        if now < next || self.next_evaluation_ms.compare_exchange(next, later, Relaxed, Relaxed).is_err() {
            return self.effective();
        }
        let mut active = self.population.estimate();
        if let Some(shared) = &self.shared {
            let at = shared.at_ms.load(Relaxed);
            if at > 0 && now.saturating_sub(at) <= SHARED_COUNT_LIFE.as_millis() as u64 {
                active = active.max(shared.count.load(Relaxed) as f64);
            }
        }
        let wanted = Duration::from_secs_f64(
            (active / (f64::from(self.settings.per_second) * HEADROOM)).min(24.0 * 3600.0),
        );
        let ttl = wanted.clamp(self.floor, self.settings.max_ttl.max(self.floor));
        let before = self.effective_ms.swap(ttl.as_millis() as u64, Relaxed);
        self.gauge.set(ttl.as_secs_f64());
        let after = ttl.as_millis() as u64;
        if after.abs_diff(before) > before / 4 {
            self.settling_until_ms.store(now + SETTLE.as_millis() as u64, Relaxed);
        }
        if after * 2 < before || after > before + before / 2 {
            tracing::info!(
                ttl_secs = ttl.as_secs_f64(),
                before_secs = before as f64 / 1000.0,
                active_tokens = active.round(),
                budget_per_second = self.settings.per_second,
                "cache TTL (the revocation delay) adapted to the active tokens and the GetUser budget"
            );
        }
        ttl
    }

    /// Fleet mode: whether the task that shares the count is to be started now (once).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn start_sharing(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| !s.started.swap(true, Relaxed))
    }

    /// Fleet mode: the tokens first seen here since the last call, for the fleet's count.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn take_pending(&self) -> Vec<u64> {
        let Some(shared) = &self.shared else { return Vec::new() };
        std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Fleet mode: the distinct tokens the whole fleet saw in the last two windows.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fleet_count(&self, count: u64) {
        if let Some(shared) = &self.shared {
            shared.count.store(count, Relaxed);
            shared.at_ms.store(self.population.now_ms().max(1), Relaxed);
        }
    }

    /// How long a verdict for `key`, made now, is kept: the TTL in force, ending on the token's
    /// own point of the grid once the TTL is above its floor (and the floor while the TTL is
    /// settling after a move, so that the verdicts made meanwhile join the new grid). `unix_ms` dates the grid, so that
    /// every instance of a fleet puts a token at the same point.
    pub(crate) fn ttl_for(&self, key: &TokenKey, unix_ms: u64) -> Duration {
        let ttl = self.evaluate();
        if ttl <= self.floor || self.population.now_ms() < self.settling_until_ms.load(Relaxed) {
            return ttl.min(self.floor);
        }
        let period = ttl.as_millis() as u64;
        let phase = u64::from_le_bytes(key[8..16].try_into().expect("8 bytes")) % period;
        let left = period - (unix_ms.wrapping_add(phase) % period);
        Duration::from_millis(left).max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> TokenKey {
        crate::token::key(format!("token-{i}").as_bytes())
    }

    fn budget(per_second: u32, floor: u64, max: u64) -> Budget {
        let settings = BudgetSettings { per_second, max_ttl: Duration::from_secs(max), fleet: false };
        Budget::new(settings, Duration::from_secs(floor), Gauge::noop())
    }

    #[tokio::test(start_paused = true)]
    async fn the_ttl_fits_the_population_to_the_budget_and_follows_it_down() {
        let b = budget(5, 1, 300);
        for i in 0..100 {
            b.observe(&key(i));
        }
        tokio::time::advance(EVALUATE_EVERY).await;
        // The TTL moved: verdicts keep the floor until it settles.
        assert_eq!(b.ttl_for(&key(0), 0), Duration::from_secs(1));
        tokio::time::advance(SETTLE).await;
        let ttl = b.ttl_for(&key(0), 0);
        // 100 tokens at 4.25 calls a second: 23.5 s, and this token's share of the grid.
        assert!((b.effective().as_secs_f64() - 100.0 / 4.25).abs() < 1.5, "{:?}", b.effective());
        assert!(ttl <= b.effective() && ttl >= Duration::from_secs(1), "{ttl:?}");
        // Three tokens left, all cache hits: within two windows the TTL is back at its floor.
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(3)).await;
            (0..3).for_each(|i| b.observe(&key(i)));
        }
        assert_eq!(b.effective(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_ceiling_holds_and_reloads_spread_over_the_period() {
        let b = budget(1, 1, 60);
        for i in 0..10_000 {
            b.observe(&key(i));
        }
        tokio::time::advance(EVALUATE_EVERY).await;
        b.ttl_for(&key(0), 0);
        tokio::time::advance(SETTLE).await;
        let mut ends: Vec<u64> =
            (0..1000).map(|i| b.ttl_for(&key(i), 1_000_000).as_millis() as u64).collect();
        assert_eq!(b.effective(), Duration::from_secs(60));
        assert!(ends.iter().all(|&ms| (1000..=60_000).contains(&ms)), "{:?}", ends.iter().max());
        // Spread: each sixth of the period holds about a sixth of the expiries.
        ends.sort_unstable();
        for sixth in 0..6u64 {
            let n = ends.iter().filter(|&&ms| ms / 10_000 == sixth).count();
            assert!((120..=220).contains(&n), "sixth {sixth}: {n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_population_keeps_the_floor_and_a_fixed_ttl() {
        let b = budget(100, 30, 300);
        for i in 0..50 {
            b.observe(&key(i));
        }
        tokio::time::advance(EVALUATE_EVERY).await;
        assert_eq!(b.ttl_for(&key(7), 123), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn in_a_fleet_the_fleets_count_wins_while_it_is_fresh() {
        let settings = BudgetSettings { per_second: 5, max_ttl: Duration::from_secs(300), fleet: true };
        let b = Budget::new(settings, Duration::from_secs(1), Gauge::noop());
        for i in 0..50 {
            b.observe(&key(i));
            b.observe(&key(i));
        }
        // Each token once, for the fleet.
        assert_eq!(b.take_pending().len(), 50);
        assert!(b.take_pending().is_empty());
        b.fleet_count(100);
        tokio::time::advance(EVALUATE_EVERY).await;
        b.observe(&key(0));
        assert!((b.effective().as_secs_f64() - 100.0 / 4.25).abs() < 1.0, "{:?}", b.effective());
        // A count too old to trust: the local one again.
        tokio::time::advance(SHARED_COUNT_LIFE + EVALUATE_EVERY).await;
        b.observe(&key(0));
        assert!((b.effective().as_secs_f64() - 50.0 / 4.25).abs() < 1.0, "{:?}", b.effective());
    }

    /// Collects what a `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_by_more_than_half_is_logged_and_a_small_one_is_not() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let b = budget(5, 1, 300);
        let logged =
            || String::from_utf8(lines.0.lock().unwrap().clone()).unwrap().matches("adapted").count();
        b.observe(&key(0));
        assert_eq!(logged(), 0, "1 token: the floor, no move");
        for i in 0..100 {
            b.observe(&key(i));
        }
        tokio::time::advance(EVALUATE_EVERY).await;
        b.observe(&key(0));
        assert_eq!(logged(), 1);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("ttl_secs=23.") && text.contains("before_secs=1.0"), "{text}");
        // 10 % more tokens: a small move, not logged.
        for i in 100..110 {
            b.observe(&key(i));
        }
        tokio::time::advance(EVALUATE_EVERY).await;
        b.observe(&key(0));
        assert!(b.effective() > Duration::from_secs(24));
        assert_eq!(logged(), 1);
    }

    #[test]
    fn the_count_is_close_for_many_tokens() {
        let p = Population::new(1 << 20);
        for i in 0..200_000 {
            p.observe(u64::from_le_bytes(key(i)[..8].try_into().unwrap()), 0);
        }
        let n = p.estimate();
        assert!((n - 200_000.0).abs() < 4_000.0, "{n}");
    }
}
