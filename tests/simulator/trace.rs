//! The event trace: one readable line per thing that happens.
//!
//! A trace is only built when someone wants it: printed (`RAFT_SIM_TRACE=1`)
//! or hashed (the test that checks a seed replays identically). Otherwise
//! the `trace!` macro does not even format its arguments, which keeps the
//! default runs fast.

use super::TICK;
use raft::message::{Entry, EntryData, Message, MessageBody};
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

/// One entry, short: `7@t3 "v12"` or `8@t4 noop`.
pub fn entry(entry: &Entry) -> String {
    match &entry.data {
        EntryData::Noop => format!("{}@t{} noop", entry.index, entry.term),
        EntryData::Command(command) => format!("{}@t{} {command:?}", entry.index, entry.term),
        EntryData::Config(membership) => format!(
            "{}@t{} config voters {:?} learners {:?}",
            entry.index,
            entry.term,
            membership.voters.keys().collect::<Vec<_>>(),
            membership.learners.keys().collect::<Vec<_>>()
        ),
    }
}

/// A list of entries, shortened if long.
pub fn entries(list: &[Entry]) -> String {
    match list {
        [] => "[]".to_string(),
        [one] => format!("[{}]", entry(one)),
        [first, .., last] if list.len() > 4 => {
            format!(
                "[{} .. {}] ({} entries)",
                entry(first),
                entry(last),
                list.len()
            )
        }
        _ => {
            let parts: Vec<String> = list.iter().map(entry).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// A message as a person would say it.
pub fn message(msg: &Message) -> String {
    let head = format!("{} -> {} term {}", msg.from, msg.to, msg.term);
    match &msg.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => format!(
            "{head} RequestVote(last log {last_log_index}@t{last_log_term}{})",
            if *leadership_transfer { ", transfer" } else { "" }
        ),
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => format!("{head} PreVote(last log {last_log_index}@t{last_log_term})"),
        MessageBody::PreVoteResponse { vote_granted, .. } => {
            let answer = if *vote_granted { "granted" } else { "refused" };
            format!("{head} pre-vote {answer}")
        }
        MessageBody::TimeoutNow => format!("{head} TimeoutNow"),
        MessageBody::InstallSnapshot {
            last_included_index,
            last_included_term,
            offset,
            data,
            done,
        } => format!(
            "{head} InstallSnapshot(up to {last_included_index}@t{last_included_term}, bytes {offset}..{}{})",
            *offset as usize + data.len(),
            if *done { ", done" } else { "" }
        ),
        MessageBody::InstallSnapshotResponse {
            last_included_index,
            next_offset,
            done,
            ..
        } => format!(
            "{head} snapshot {last_included_index} {}",
            if *done { "installed".to_string() } else { format!("wants byte {next_offset}") }
        ),
        MessageBody::RequestVoteResponse { vote_granted, .. } => {
            let answer = if *vote_granted { "granted" } else { "refused" };
            format!("{head} vote {answer}")
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries: list,
            leader_commit,
            read_seq,
            ..
        } => format!(
            "{head} AppendEntries(prev {prev_log_index}@t{prev_log_term}, {}, commit {leader_commit}, read_seq {read_seq})",
            entries(list)
        ),
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            conflict,
            read_seq,
            ..
        } => match (success, conflict) {
            (true, _) => format!("{head} append ok (match {match_index}, read_seq {read_seq})"),
            (false, Some(c)) => format!(
                "{head} append refused (conflict term {:?} from index {}, read_seq {read_seq})",
                c.term, c.index
            ),
            (false, None) => format!("{head} append refused (stale term, read_seq {read_seq})"),
        },
    }
}
