//! [`DurationHistogram`]: a histogram of durations whose observations are atomic adds.
//!
//! prometheus-client's `Histogram` takes a write lock on every observation. The histograms
//! here sit on paths that run once per request or connection on every worker thread, so
//! they keep one atomic counter per bucket instead: an observation is a short scan of the
//! bucket bounds and two atomic adds, with no lock and no allocation. The exposition is the
//! same as prometheus-client's (`_sum`, `_count`, cumulative `_bucket{le}` with `+Inf`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of `dualcast_connection_establishment_seconds`: 0.5 ms doubling to
/// 8.192 s (15 buckets, then `+Inf`).
pub(super) const ESTABLISHMENT_BOUNDS: [u64; 15] = doubling(500_000);

/// Upper bounds of `dualcast_http_request_duration_seconds`: 0.1 ms doubling to
/// 13.1072 s (18 buckets, then `+Inf`).
pub(super) const REQUEST_DURATION_BOUNDS: [u64; 18] = doubling(100_000);

/// `N` upper bounds in nanoseconds, the first `first_nanos`, each twice the one before.
const fn doubling<const N: usize>(first_nanos: u64) -> [u64; N] {
    let mut bounds = [0; N];
    let mut bucket = 0;
    let mut bound = first_nanos;
    while bucket < N {
        bounds[bucket] = bound;
        bound *= 2;
        bucket += 1;
    }
    bounds
}

/// A histogram of durations over fixed bucket bounds, cheap to clone (one `Arc`): clones
/// observe into the same buckets.
#[derive(Clone)]
pub(super) struct DurationHistogram {
    inner: Arc<Inner>,
}

struct Inner {
    /// Upper bounds in nanoseconds, ascending.
    bounds: &'static [u64],
    /// One count per bound, then one for `+Inf`: `bounds.len() + 1` counts, not cumulative.
    counts: Box<[AtomicU64]>,
    /// The sum of every observation, in nanoseconds (it wraps after 584 years of it).
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// A histogram with the upper `bounds` (nanoseconds, ascending) and `+Inf`.
    pub(super) fn new(bounds: &'static [u64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(Inner {
                bounds,
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// A histogram of connection establishment times ([`ESTABLISHMENT_BOUNDS`]).
    pub(super) fn establishment() -> Self {
        Self::new(&ESTABLISHMENT_BOUNDS)
    }

    /// A histogram of HTTP request durations ([`REQUEST_DURATION_BOUNDS`]).
    pub(super) fn request_duration() -> Self {
        Self::new(&REQUEST_DURATION_BOUNDS)
    }

    /// Counts one observation of `duration`: two relaxed atomic adds.
    pub(super) fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self
            .inner
            .bounds
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(self.inner.bounds.len());
        if let Some(count) = self.inner.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations were counted (the sum of every bucket).
    pub(super) fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum of every observation.
    pub(super) fn sum(&self) -> Duration {
        Duration::from_nanos(self.inner.sum_nanos.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for DurationHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurationHistogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish_non_exhaustive()
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // The bucket counts are read one by one while observations go on: `_count` is
        // computed from the same reads, so it always equals the `+Inf` bucket.
        let mut buckets = Vec::with_capacity(self.inner.counts.len());
        let mut count = 0;
        for (bucket, observed) in self.inner.counts.iter().enumerate() {
            let observed = observed.load(Ordering::Relaxed);
            count += observed;
            // prometheus-client writes the bound `f64::MAX` as `+Inf`.
            let upper_bound = self
                .inner
                .bounds
                .get(bucket)
                .map_or(f64::MAX, |&nanos| nanos as f64 / 1e9);
            buckets.push((upper_bound, observed));
        }
        let sum = self.sum().as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
