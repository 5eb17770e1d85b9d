//! A latency histogram with bounded memory and bounded error.
//!
//! A run at 30,000 writes/s for minutes would make millions of samples;
//! keeping them all to sort for percentiles costs memory that grows with the
//! load. Instead each sample goes into a bucket whose width is a fixed
//! fraction of its value (log-linear buckets, as HdrHistogram does): every
//! power of two is split into [`SUB_BUCKETS`] equal parts, so a reported
//! percentile is within 1/[`SUB_BUCKETS`] (1.6%) of the true one, and the
//! histogram never holds more than [`MAX_BUCKETS`] counters.

use std::time::Duration;

/// log2 of the number of buckets each power of two is split into.
const SUB_BUCKET_BITS: u32 = 6;

/// Buckets per power of two: the relative error of a percentile is at most
/// `1 / SUB_BUCKETS`.
pub const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// The bucket count that covers every `u64`: the last bucket's index plus one.
pub const MAX_BUCKETS: usize = bucket_of(u64::MAX) + 1;
// 30 KiB of counters at most, per histogram.
const _: () = assert!(MAX_BUCKETS < 4000);

/// The bucket a value falls in. Values below `SUB_BUCKETS` get a bucket
/// each; above, a power of two `[2^k, 2^(k+1))` is split into `SUB_BUCKETS`
/// buckets of width `2^(k - SUB_BUCKET_BITS)`.
const fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BUCKET_BITS;
    // In [SUB_BUCKETS, 2 * SUB_BUCKETS): the top SUB_BUCKET_BITS + 1 bits.
    let top = (value >> shift) as usize;
    ((shift as usize + 1) << SUB_BUCKET_BITS) + (top - SUB_BUCKETS as usize)
}

/// The largest value that falls in bucket `index`.
fn bucket_upper(index: usize) -> u64 {
    let sub = SUB_BUCKETS as usize;
    if index < sub {
        return index as u64;
    }
    let shift = (index >> SUB_BUCKET_BITS) - 1;
    let top = (index & (sub - 1)) + sub;
    // `top + 1 << shift` may be exactly 2^64 for the last bucket.
    let next = ((top as u128 + 1) << shift) - 1;
    u64::try_from(next).unwrap_or(u64::MAX)
}

/// Counts of durations, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Grown on demand up to the highest bucket used (at most `MAX_BUCKETS`).
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Histogram {
    /// Adds one sample.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = bucket_of(us);
        debug_assert!(i < MAX_BUCKETS);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest sample, exactly.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }

    /// The smallest value that at least `q` (0..=1) of the samples do not
    /// exceed, rounded up to its bucket's upper end (so never optimistic by
    /// more than a bucket, never above the true maximum). `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // The rank of the sample sought, 1-based: at least the first one.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(bucket_upper(i).min(self.max_us)));
            }
        }
        Some(self.max())
    }
}

/// The median of `samples` (sorted in place); `None` when empty. For the
/// few hundred samples of the floor measurements, exact is cheap.
pub fn median(samples: &mut [Duration]) -> Option<Duration> {
    quantile_exact(samples, 0.5)
}

/// The `q` quantile of `samples` (sorted in place), nearest rank.
pub fn quantile_exact(samples: &mut [Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n);
    Some(samples[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut previous = 0;
        for v in 0..100_000u64 {
            let b = bucket_of(v);
            assert!(b == previous || b == previous + 1, "{v}: {previous} -> {b}");
            assert!(v <= bucket_upper(b), "{v} above bucket {b}");
            previous = b;
        }
        assert_eq!(bucket_upper(MAX_BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn a_bucket_is_narrow_relative_to_its_values() {
        for v in [64u64, 100, 1_000, 12_345, 1 << 40, u64::MAX / 3] {
            let upper = bucket_upper(bucket_of(v));
            assert!(
                (upper - v) as f64 <= v as f64 / SUB_BUCKETS as f64,
                "{v} -> {upper}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 1000);
        let close = |q: f64, want: u64| {
            let got = h.quantile(q).expect("samples").as_micros() as u64;
            assert!(
                got >= want && got <= want + want / SUB_BUCKETS,
                "q{q}: {got} vs {want}"
            );
        };
        close(0.5, 500);
        close(0.9, 900);
        close(0.99, 990);
        assert_eq!(h.quantile(1.0), Some(Duration::from_micros(1000)));
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert_eq!(h.quantile(0.0), Some(Duration::from_micros(1)));
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_millis(50));
        b.record(Duration::from_millis(50));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), Duration::from_millis(50));
        assert_eq!(a.quantile(0.3), Some(Duration::from_micros(10)));
        assert!(Histogram::default().quantile(0.5).is_none());
    }

    #[test]
    fn exact_median() {
        let mut v: Vec<Duration> = [5, 1, 3]
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
        assert_eq!(median(&mut v), Some(Duration::from_millis(3)));
        assert_eq!(median(&mut []), None);
        let mut ten: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(
            quantile_exact(&mut ten, 0.99),
            Some(Duration::from_millis(10))
        );
    }
}
