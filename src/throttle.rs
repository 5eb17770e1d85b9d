//! At most one line a second for a warning that someone else can trigger.
//!
//! A node logs what a remote party did wrong (a refused connection, a
//! message from a stranger, a line too long), because that is how an
//! operator finds a misconfigured peer. But a remote party can do it a
//! thousand times a second, and a log that grows at that rate is a way to
//! fill a disk and bury everything else. So each kind of such warning goes
//! through its own [`Throttle`]: the first occurrence is logged at once,
//! further ones within [`THROTTLE_INTERVAL`] are only counted, and the next
//! line that gets through says how many were left out.
//!
//! ```
//! use raft::throttle::Throttle;
//! static REFUSED: Throttle = Throttle::new();
//! if let Some(note) = REFUSED.allow() {
//!     log::warn!("refusing a connection: all slots are taken{note}");
//! }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two lines of one kind.
pub const THROTTLE_INTERVAL: Duration = Duration::from_secs(1);

/// A limiter for one kind of warning (usually a `static` at the place that
/// logs it). Thread-safe; costs one uncontended lock per occurrence.
#[derive(Debug)]
pub struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
    interval: Duration,
}

/// What to append to a line that got through: empty, or how many lines of
/// its kind were left out since the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            1 => write!(f, " (1 more like this in the last second not shown)"),
            n => write!(
                f,
                " ({n} more like this since the last such line not shown)"
            ),
        }
    }
}

impl Throttle {
    /// A limiter allowing one line per [`THROTTLE_INTERVAL`].
    pub const fn new() -> Throttle {
        Throttle::every(THROTTLE_INTERVAL)
    }

    /// A limiter allowing one line per `interval`.
    pub const fn every(interval: Duration) -> Throttle {
        Throttle {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
            interval,
        }
    }

    /// `Some` if a line may be logged now (with the count of those left
    /// out before it, to print), `None` if this one is to be left out.
    pub fn allow(&self) -> Option<Suppressed> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<Suppressed> {
        let Ok(mut last) = self.last.lock() else {
            return None;
        };
        let due = last.is_none_or(|t| now.saturating_duration_since(t) >= self.interval);
        if !due {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(Suppressed(self.suppressed.swap(0, Ordering::Relaxed)))
    }
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_one_counts_the_rest() {
        let throttle = Throttle::new();
        let start = Instant::now();
        assert_eq!(throttle.allow_at(start), Some(Suppressed(0)));
        for ms in 1..=999 {
            assert_eq!(throttle.allow_at(start + Duration::from_millis(ms)), None);
        }
        let later = start + THROTTLE_INTERVAL;
        assert_eq!(throttle.allow_at(later), Some(Suppressed(999)));
        assert_eq!(throttle.allow_at(later), None);
        assert_eq!(
            throttle.allow_at(later + THROTTLE_INTERVAL),
            Some(Suppressed(1))
        );
    }

    #[test]
    fn the_note_says_how_many_were_left_out() {
        assert_eq!(Suppressed(0).to_string(), "");
        assert!(Suppressed(12_294).to_string().contains("12294 more"));
    }
}
