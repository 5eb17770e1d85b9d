//! The event trace: one readable line per thing that happens.
//!
//! A trace is only built when someone wants it: printed (`RAFT_SIM_TRACE=1`)
//! or hashed (the test that checks a seed replays identically). Otherwise
//! the `trace!` macro does not even format its arguments, which keeps the
//! default runs fast.

use super::TICK;
use raft::message::{Entry, Message, ShowEntries};
use std::fmt;

/// Where trace lines go.
pub struct Trace {
    print: bool,
    /// FNV-1a over every line, if hashing was asked for.
    hash: Option<u64>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

impl Trace {
    pub fn new(print: bool, hash: bool) -> Trace {
        Trace {
            print,
            hash: hash.then_some(FNV_OFFSET),
        }
    }

    /// True if lines are wanted at all.
    pub fn is_on(&self) -> bool {
        self.print || self.hash.is_some()
    }

    /// Records one line. Call through `trace!`, which skips the formatting
    /// when the trace is off.
    pub fn record(&mut self, now: u64, what: fmt::Arguments<'_>) {
        let line = format!("{:>9}  {what}", time(now));
        if let Some(hash) = &mut self.hash {
            for byte in line.bytes().chain([b'\n']) {
                *hash = (*hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
            }
        }
        if self.print {
            println!("{line}");
        }
    }

    /// The hash of every line so far, if hashing was asked for.
    pub fn hash(&self) -> Option<u64> {
        self.hash
    }
}

/// `trace!(trace, now, "format", args...)`: records a line if the trace is on.
macro_rules! trace {
    ($trace:expr, $now:expr, $($arg:tt)*) => {
        if $trace.is_on() {
            $trace.record($now, format_args!($($arg)*));
        }
    };
}
pub(crate) use trace;

/// Virtual time as ticks with two decimals: `t=12.34`.
pub fn time(now: u64) -> String {
    format!("t={}.{:02}", now / TICK, (now % TICK) * 100 / TICK)
}

/// One entry, in the crate's notation: `7@3 "v12"` or `8@4 noop`.
pub fn entry(entry: &Entry) -> String {
    entry.to_string()
}

/// A list of entries, shortened if long.
pub fn entries(list: &[Entry]) -> String {
    ShowEntries(list).to_string()
}

/// A message as the crate prints it (`Display for Message`).
pub fn message(msg: &Message) -> String {
    msg.to_string()
}
