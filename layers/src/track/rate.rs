//! The keyed connection-attempt rate limits of [`Track`](super::Track): governor's GCRA
//! over a store that holds a bounded number of keys.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

/// Every this many checks, keys whose state is back to fresh are dropped.
const SWEEP_EVERY_CHECKS: u64 = 4096;

/// The least time between two sweeps made because the store was full: a sweep visits every
/// key, and a full store under a flood of new keys must not sweep on every check.
const MIN_FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The least time between two warnings that a full store left a key untracked.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// A per-key rate of connection attempts: `per_second` attempts a second on average, in
/// bursts of up to twice that, holding at most `max_keys` keys.
pub(super) struct KeyedRateLimit<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, BoundedStore<K>, DefaultClock>,
    per_second: u32,
    max_keys: usize,
    checks: AtomicU64,
    /// When the last sweep made because the store was full ran.
    last_full_sweep: Mutex<Option<Instant>>,
    /// Whose rate this is, for the log: `"player"` or `"address"`.
    what: &'static str,
}

impl<K: Hash + Eq + Clone> KeyedRateLimit<K> {
    /// `None` when `per_second` is `0`: the limit is off.
    pub(super) fn new(per_second: u32, max_keys: usize, what: &'static str) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        let store = BoundedStore::new(max_keys, what);
        Some(Self {
            limiter: RateLimiter::new(quota, store, DefaultClock::default()),
            per_second,
            max_keys,
            checks: AtomicU64::new(0),
            last_full_sweep: Mutex::new(None),
            what,
        })
    }

    /// The average attempts a second allowed per key.
    pub(super) fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Counts one attempt of `key`: `Err` with the time until the next one would conform
    /// when it is over the rate.
    pub(super) fn check(&self, key: &K) -> Result<(), Duration> {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if checks % SWEEP_EVERY_CHECKS == 0
            || (self.limiter.len() >= self.max_keys && self.full_sweep_due())
        {
            self.sweep();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// How many keys are held.
    pub(super) fn len(&self) -> usize {
        self.limiter.len()
    }

    /// `true`, and the time noted, when no sweep for a full store ran in the last
    /// [`MIN_FULL_SWEEP_INTERVAL`].
    fn full_sweep_due(&self) -> bool {
        let now = Instant::now();
        let mut last = lock(&self.last_full_sweep);
        match *last {
            Some(at) if now.saturating_duration_since(at) < MIN_FULL_SWEEP_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    /// Drops the keys whose state is indistinguishable from a fresh one.
    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        tracing::trace!(
            limit = self.what,
            keys = self.limiter.len(),
            "rate-limit keys swept"
        );
    }
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedRateLimit<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("per_second", &self.per_second)
            .field("max_keys", &self.max_keys)
            .field("keys", &self.len())
            .finish()
    }
}

/// A keyed GCRA state store holding at most `max_keys` keys: a check of a new key when it
/// is full is answered as for a fresh key (the attempt conforms) and its state is not kept.
struct BoundedStore<K> {
    states: Mutex<HashMap<K, InMemoryState>>,
    max_keys: usize,
    last_warning: Mutex<Option<Instant>>,
    what: &'static str,
}

impl<K> BoundedStore<K> {
    fn new(max_keys: usize, what: &'static str) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            max_keys,
            last_warning: Mutex::new(None),
            what,
        }
    }

    fn states(&self) -> MutexGuard<'_, HashMap<K, InMemoryState>> {
        lock(&self.states)
    }

    /// Warns that a key went untracked, at most once a [`WARNING_INTERVAL`].
    fn warn_untracked(&self) {
        let now = Instant::now();
        let mut last = lock(&self.last_warning);
        if last.is_some_and(|at| now.saturating_duration_since(at) < WARNING_INTERVAL) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            limit = self.what,
            max_tracked_keys = self.max_keys,
            "connection-attempt rate limit tracks its most keys: attempts of new keys \
             pass unlimited until old keys expire (warned at most once a minute)"
        );
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut states = self.states();
        if let Some(state) = states.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if states.len() >= self.max_keys {
            drop(states);
            self.warn_untracked();
            // Decided as for a fresh key, and not kept: the key is not tracked.
            return f(None).map(|(outcome, _)| outcome);
        }
        states
            .entry(key.clone())
            .or_default()
            .measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.states()
            .retain(|_, state| theoretical_arrival(state) > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.states().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.states().len()
    }

    fn is_empty(&self) -> bool {
        self.states().is_empty()
    }
}

/// The GCRA state of a key: its theoretical arrival time (`0`, a fresh state, when none
/// was recorded). Read by a measurement that declines to update it.
fn theoretical_arrival(state: &InMemoryState) -> Nanos {
    match state.measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>) {
        Ok(()) | Err(None) => Nanos::new(0),
        Err(Some(tat)) => tat,
    }
}

/// Locks `mutex`; its data (times, counts and GCRA states, updated without user code) is
/// well-formed even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
