//! The client history, and its linearizability check.
//!
//! A history is the list of every operation's invocation and answer, in
//! real (virtual) time. It is *linearizable* if there is one order of all
//! operations in which each one takes effect at a single instant between
//! its invocation and its answer, and every `get` returns the value of the
//! latest `set` before it. That is what Raft promises clients (§8).
//!
//! The search for such an order is done by stateright's
//! `LinearizabilityTester` with `Register` semantics. Its search is a plain
//! depth-first search, exponential in the worst case: when a history is *not*
//! linearizable it tries every order of every group of concurrent
//! operations before giving up. So before the search we make the problem
//! small, in two ways that cannot change the verdict:
//!
//! 1. **Leave out what cannot matter.** A `get` with no answer has no effect.
//!    A `set` with no answer whose value no `get` returned can sit, in any
//!    linearization that includes it, just before the next `set` where
//!    nothing sees it; so it may as well be left out.
//! 2. **Cut the history into segments** at moments when nothing is in flight
//!    and the register's value is certain. If every operation before a cut
//!    answered before every operation after it was invoked, the two sides are
//!    ordered by real time, and only the value at the cut links them. That
//!    value is certain when the part before the cut holds a `get` that began
//!    after every `set` of that part had finished (and no `set` began after
//!    it): in every linearization that `get` follows all those `set`s, so the
//!    value at the cut is what it read. Each segment is then checked on its
//!    own, starting from that value.

use super::clients::Op;
use super::{trace, Failure, FailureKind};
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use std::collections::{BTreeMap, BTreeSet};

/// One line of the history.
#[derive(Clone, Debug)]
enum Record {
    Invoke {
        thread: u64,
        op: Op,
    },
    Return {
        thread: u64,
        ret: RegisterRet<String>,
    },
    /// The operation in flight on `thread` has an unknown outcome: it stays
    /// in flight for ever.
    Unknown {
        thread: u64,
    },
}

/// Every operation of every client, in time order.
#[derive(Default)]
pub struct History {
    records: Vec<(u64, Record)>,
}

/// How the check went, for reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckStats {
    pub operations: usize,
    pub segments: usize,
    /// Operations in the largest segment.
    pub largest_segment: usize,
}

impl History {
    pub fn invoke(&mut self, at: u64, thread: u64, op: Op) {
        self.records.push((at, Record::Invoke { thread, op }));
    }

    pub fn answer(&mut self, at: u64, thread: u64, ret: RegisterRet<String>) {
        self.records.push((at, Record::Return { thread, ret }));
    }

    pub fn unknown(&mut self, at: u64, thread: u64) {
        self.records.push((at, Record::Unknown { thread }));
    }

    /// How many operations were invoked.
    pub fn invoked(&self) -> usize {
        self.records
            .iter()
            .filter(|(_, r)| matches!(r, Record::Invoke { .. }))
            .count()
    }

    /// For each invocation (by position), the position of its answer.
    fn answers(&self) -> BTreeMap<usize, usize> {
        let mut open = BTreeMap::new();
        let mut answers = BTreeMap::new();
        for (position, (_, record)) in self.records.iter().enumerate() {
            match record {
                Record::Invoke { thread, .. } => {
                    open.insert(*thread, position);
                }
                Record::Return { thread, .. } => {
                    if let Some(invoked) = open.remove(thread) {
                        answers.insert(invoked, position);
                    }
                }
                Record::Unknown { .. } => {}
            }
        }
        answers
    }

    /// Values of `set`s that were acknowledged.
    pub fn acknowledged_writes(&self) -> Vec<String> {
        let answers = self.answers();
        self.records
            .iter()
            .enumerate()
            .filter_map(|(position, (_, record))| match record {
                Record::Invoke {
                    op: Op::Set(value), ..
                } if answers.contains_key(&position) => Some(value.clone()),
                _ => None,
            })
            .collect()
    }

    /// Checks the history for linearizability (see the module docs).
    pub fn check_linearizable(&self, now: u64) -> Result<CheckStats, Failure> {
        // Positions below are indexes into `self.records`.
        let answers = self.answers();
        // Where each value was last read: an unanswered `set` of that value
        // took effect (if at all) before then.
        let mut last_read_of: BTreeMap<&str, usize> = BTreeMap::new();
        for (position, (_, record)) in self.records.iter().enumerate() {
            if let Record::Return {
                ret: RegisterRet::ReadOk(value),
                ..
            } = record
            {
                last_read_of.insert(value.as_str(), position);
            }
        }
        // Which invocations take part, and where each one stops being in
        // flight: its answer, or for an unanswered `set` that someone read,
        // the last such read.
        let mut closes_at: BTreeMap<usize, usize> = BTreeMap::new();
        for (position, (_, record)) in self.records.iter().enumerate() {
            let Record::Invoke { op, .. } = record else {
                continue;
            };
            if let Some(&answer) = answers.get(&position) {
                closes_at.insert(position, answer);
            } else if let Op::Set(value) = op {
                if let Some(&read) = last_read_of.get(value.as_str()) {
                    // (A read before the invocation is a violation the
                    // tester will report; keep the counting sane.)
                    closes_at.insert(position, read.max(position));
                }
            }
        }

        let mut stats = CheckStats {
            operations: closes_at.len(),
            ..CheckStats::default()
        };
        let mut segment: Vec<usize> = Vec::new(); // positions of its records
        let mut previous: Vec<usize> = Vec::new(); // the segment before it
        let mut initial = String::new();
        let mut in_flight = 0usize;
        let mut sets_in_flight = 0usize;
        // `get`s invoked with no `set` in flight and none invoked since.
        let mut clean_gets: BTreeSet<u64> = BTreeSet::new();
        // The register's value if the segment were cut now.
        let mut certain: Option<String> = None;
        let mut closing: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (&invoked, &closed) in &closes_at {
            closing.entry(closed).or_default().push(invoked);
        }

        for (position, (_, record)) in self.records.iter().enumerate() {
            match record {
                Record::Invoke { thread, op } if closes_at.contains_key(&position) => {
                    segment.push(position);
                    in_flight += 1;
                    match op {
                        Op::Set(_) => {
                            sets_in_flight += 1;
                            clean_gets.clear();
                            certain = None;
                        }
                        Op::Get if sets_in_flight == 0 => {
                            clean_gets.insert(*thread);
                        }
                        Op::Get => {}
                    }
                }
                Record::Return { thread, ret } if closing.contains_key(&position) => {
                    segment.push(position);
                    if let RegisterRet::ReadOk(value) = ret {
                        if clean_gets.remove(thread) {
                            certain = Some(value.clone());
                        }
                    }
                }
                _ => {}
            }
            // Operations that stop being in flight here.
            for invoked in closing.get(&position).into_iter().flatten() {
                in_flight -= 1;
                if let (_, Record::Invoke { op: Op::Set(_), .. }) = &self.records[*invoked] {
                    sets_in_flight -= 1;
                }
            }
            if in_flight == 0 {
                if let Some(value) = certain.take() {
                    self.check_segment(&segment, &previous, &initial, &closes_at, now, &mut stats)?;
                    previous = std::mem::take(&mut segment);
                    clean_gets.clear();
                    initial = value;
                }
            }
        }
        self.check_segment(&segment, &previous, &initial, &closes_at, now, &mut stats)?;
        Ok(stats)
    }

    /// Runs stateright's tester on one segment. (`previous` is only for
    /// the failure message.)
    fn check_segment(
        &self,
        segment: &[usize],
        previous: &[usize],
        initial: &str,
        closes_at: &BTreeMap<usize, usize>,
        now: u64,
        stats: &mut CheckStats,
    ) -> Result<(), Failure> {
        if segment.is_empty() {
            return Ok(());
        }
        let operations = segment.iter().filter(|p| closes_at.contains_key(p)).count();
        stats.segments += 1;
        stats.largest_segment = stats.largest_segment.max(operations);
        let mut tester = LinearizabilityTester::new(Register(initial.to_string()));
        for &position in segment {
            let result = match &self.records[position].1 {
                Record::Invoke { thread, op } => {
                    let op = match op {
                        Op::Set(value) => RegisterOp::Write(value.clone()),
                        Op::Get => RegisterOp::Read,
                    };
                    tester.on_invoke(*thread, op).map(|_| ())
                }
                Record::Return { thread, ret } => {
                    tester.on_return(*thread, ret.clone()).map(|_| ())
                }
                Record::Unknown { .. } => Ok(()),
            };
            if let Err(error) = result {
                return Err(Failure::new(
                    FailureKind::Driver,
                    now,
                    format!("malformed client history: {error}"),
                ));
            }
        }
        if tester.serialized_history().is_some() {
            return Ok(());
        }
        let context = &previous[previous.len().saturating_sub(6)..];
        Err(Failure::new(
            FailureKind::Linearizability,
            now,
            format!(
                "no linearization for these client operations (from the value {initial:?}, \
                 which the last get before them had to read):\n{}\n  ...\n{}",
                self.describe(context),
                self.describe(segment)
            ),
        ))
    }

    /// Records, one per line, for a failure message.
    fn describe(&self, positions: &[usize]) -> String {
        let lines: Vec<String> = positions
            .iter()
            .map(|&position| {
                let (at, record) = &self.records[position];
                let what = match record {
                    Record::Invoke { thread, op } => format!("thread {thread} invokes {op:?}"),
                    Record::Return { thread, ret } => format!("thread {thread} answered {ret:?}"),
                    Record::Unknown { thread } => format!("thread {thread}: outcome unknown"),
                };
                format!("    {:>9}  {what}", trace::time(*at))
            })
            .collect();
        lines.join("\n")
    }
}
