//! One simulated machine: a Raft core, its disk, its state machine, and the
//! driver that connects them.
//!
//! The driver does for the simulator what `node.rs` does for the real
//! binary: it takes each `Ready` from the core and does the work in the
//! order the core's docs demand:
//!
//! 1. persist the snapshot from the leader, if any, then the hard state and
//!    the entries (the "disk" here is the [`Disk`] struct: whatever is in it
//!    survives a crash);
//! 2. tell the core they are durable (`advance`);
//! 3. send the messages (returned to the cluster, which puts them on the
//!    network);
//! 4. reset the state machine from the leader's snapshot, if any, then
//!    apply the committed entries to it and answer reads.
//!
//! Between steps the cluster may also ask a node to compact its log
//! ([`SimNode::compact`]), as the real driver does every
//! `--snapshot-entries` entries.
//!
//! With the simulator's `reply_before_persist` bug switch on, step 1 is
//! postponed to the start of the node's next step, after the messages have
//! gone out. A crash in between loses what was already promised to others.

use super::clients::{Op, Reply, Tag};
use raft::core::{CompactError, Config, Event as CoreEvent, Raft, ReadOutcome, Ready};
use raft::message::{Entry, EntryData, HardState, Incarnation, Index, Snapshot, Term};
use raft::state_machine::{StateMachine, Value};
use std::collections::BTreeMap;

/// What a node has on stable storage: the hard state, the latest snapshot
/// and the log after it, as of the last persisted `Ready` (or compaction).
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    /// The latest snapshot saved; it replaces the log up to and including
    /// its `last_included_index`.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot (from index 1 if there is none).
    pub log: Vec<Entry>,
    /// The data directory's incarnation, drawn when it was created (as
    /// `meta.json` keeps it); a disk lost and replaced gets a new one.
    pub incarnation: Incarnation,
}

impl Disk {
    /// The index the snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.last_included_index)
    }

    /// The index of the last entry stored (or of the snapshot).
    pub fn last_index(&self) -> Index {
        self.snapshot_index() + self.log.len() as Index
    }

    /// The term of the stored entry at `index`, the snapshot's at its own
    /// index, `None` if neither holds it.
    fn term_at(&self, index: Index) -> Option<Term> {
        let base = self.snapshot_index();
        if index == base {
            return Some(self.snapshot.as_ref().map_or(0, |s| s.last_included_term));
        }
        let position = index.checked_sub(base + 1)?;
        self.log.get(position as usize).map(|e| e.term)
    }

    /// Writes what a `Ready` asked to persist. The storage contract
    /// (`Storage::append`): entries must start in `snapshot_index() + 1 ..=
    /// last_index() + 1`; those at or below the last stored index replace
    /// the stored suffix from that index on (a conflicting suffix, §5.3).
    fn write(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), String> {
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let base = self.snapshot_index();
        if first.index <= base || first.index > self.last_index() + 1 {
            return Err(format!(
                "entries to persist start at index {} but the disk holds a snapshot up to {base} \
                 and entries up to {}",
                first.index,
                self.last_index()
            ));
        }
        self.log.truncate((first.index - base - 1) as usize);
        self.log.extend_from_slice(entries);
        Ok(())
    }

    /// Saves a snapshot as `Storage::save_snapshot` does: one at or below
    /// the stored snapshot's index is ignored; otherwise the entries after
    /// it are kept if the stored entry at its index has its term (Figure 13,
    /// InstallSnapshot receiver rule 6), and the whole log is dropped if not
    /// (rule 7). The disk follows the rules even when the core is told to
    /// break them (`keep_log_conflicting_with_snapshot`), as the real
    /// storage would.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) {
        let index = snapshot.last_included_index;
        let base = self.snapshot_index();
        if index <= base {
            return;
        }
        if self.term_at(index) == Some(snapshot.last_included_term) {
            self.log.drain(..(index - base) as usize);
        } else {
            self.log.clear();
        }
        self.snapshot = Some(snapshot.clone());
    }
}

/// One `Ready`'s worth of writes that the buggy driver postponed.
struct Unwritten {
    snapshot: Option<Snapshot>,
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
}

/// A `set` waiting for its entry to be applied.
struct PendingWrite {
    tag: Tag,
    /// The term the entry was proposed in; if a different entry turns up at
    /// its index, ours was overwritten.
    term: Term,
}

/// One simulated machine.
pub struct SimNode {
    /// The running core; `None` while the machine is down.
    pub raft: Option<Raft>,
    /// How many times this machine has been started.
    pub incarnation: u32,
    /// How many bytes of a snapshot arriving in chunks this node holds, as
    /// its latest InstallSnapshot answer told the leader (0 once installed,
    /// or after a crash): lets a scenario crash it mid-transfer.
    pub snapshot_bytes_held: u64,
    /// A deliberate bug in this driver (the cluster's
    /// `ignore_snapshot_state`): snapshots never reach the state machine.
    pub ignore_snapshot_state: bool,
    /// Taken out of service for good (it was removed from the cluster):
    /// it stays down, and nothing restarts it.
    pub retired: bool,
    pub disk: Disk,
    /// Only with `reply_before_persist`: what the buggy driver has not yet
    /// written, oldest first.
    unwritten: Vec<Unwritten>,
    /// The replicated state: restored from the snapshot on disk at every
    /// restart (or from a leader's snapshot), then rebuilt by re-applying
    /// the log after it.
    pub state: Value,
    /// The last index applied to `state` in this incarnation.
    pub applied: Index,
    /// Virtual time between two of this node's ticks: `TICK` plus or minus
    /// its clock skew.
    pub tick_period: u64,
    writes: BTreeMap<Index, PendingWrite>,
    reads: BTreeMap<u64, Tag>,
    next_read_id: u64,
}

/// What handling one `Ready` produced, for the cluster to act on and the
/// checker to inspect.
pub struct Handled {
    /// The `Ready` itself (its messages are still to be sent).
    pub ready: Ready,
    /// Answers to clients.
    pub replies: Vec<(Tag, Reply)>,
    /// For each read answered: its index and the applied index at the time.
    pub reads_answered: Vec<(Index, Index)>,
}

impl SimNode {
    pub fn new(tick_period: u64) -> SimNode {
        SimNode {
            raft: None,
            incarnation: 0,
            snapshot_bytes_held: 0,
            ignore_snapshot_state: false,
            retired: false,
            disk: Disk::default(),
            unwritten: Vec::new(),
            state: Value::default(),
            applied: 0,
            tick_period,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_id: 1,
        }
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Starts (or restarts) the machine from what is on its disk, as the
    /// real node does: the state machine is restored from the snapshot (or
    /// starts empty), the core is rebuilt with `Raft::restore` from the
    /// snapshot and the log after it, and the entries after the snapshot are
    /// applied again as the core hands them out.
    pub fn start(&mut self, mut config: Config, seed: u64) -> Result<(), String> {
        debug_assert!(self.raft.is_none());
        config.incarnation = self.disk.incarnation;
        self.incarnation += 1;
        let disk = &self.disk;
        self.state = Value::default();
        if let Some(snapshot) = disk
            .snapshot
            .as_ref()
            .filter(|_| !self.ignore_snapshot_state)
        {
            self.state
                .restore(&snapshot.data)
                .map_err(|e| format!("the snapshot on disk cannot be loaded: {e}"))?;
        }
        self.applied = disk.snapshot_index();
        self.raft = Some(Raft::restore(
            config,
            disk.hard_state.clone(),
            disk.snapshot.clone(),
            disk.log.clone(),
            seed,
        ));
        Ok(())
    }

    /// The machine stops: everything in memory is gone, including writes
    /// the buggy driver had postponed. Clients waiting on it never hear back.
    pub fn crash(&mut self) {
        self.raft = None;
        self.snapshot_bytes_held = 0;
        self.unwritten.clear();
        self.writes.clear();
        self.reads.clear();
    }

    /// The disk is lost: the machine will start with an empty data
    /// directory, of incarnation `incarnation`.
    pub fn lose_disk(&mut self, incarnation: Incarnation) {
        debug_assert!(self.raft.is_none(), "lose the disk of a stopped machine");
        self.disk = Disk {
            incarnation,
            ..Disk::default()
        };
    }

    /// The disk loses the end of its log (it lied about fsync, or an older
    /// copy was restored): only entries up to `keep` remain; the hard state,
    /// the snapshot and the incarnation are kept.
    pub fn cut_log(&mut self, keep: Index) {
        debug_assert!(self.raft.is_none(), "cut the log of a stopped machine");
        let base = self.disk.snapshot_index();
        let kept = keep.saturating_sub(base) as usize;
        self.disk.log.truncate(kept);
    }

    /// With `reply_before_persist`, the writes postponed from the previous
    /// step happen now, at the start of the next one.
    pub fn write_postponed(&mut self) -> Result<(), String> {
        for unwritten in std::mem::take(&mut self.unwritten) {
            if let Some(snapshot) = &unwritten.snapshot {
                self.disk.save_snapshot(snapshot);
            }
            self.disk
                .write(unwritten.hard_state.as_ref(), &unwritten.entries)?;
        }
        Ok(())
    }

    /// §7: replaces the log up to the last applied entry with a snapshot of
    /// the state machine, and makes it durable, as the real driver does
    /// after applying (`compact(last_applied, state)`, then
    /// `Storage::save_snapshot`). Returns the snapshot, or `None` if nothing
    /// was applied since the last one.
    pub fn compact(&mut self) -> Result<Option<Snapshot>, String> {
        // `save_snapshot` makes everything written before it durable first;
        // the buggy driver's postponed writes land now too.
        self.write_postponed()?;
        let Some(raft) = self.raft.as_mut() else {
            return Ok(None);
        };
        let index = raft.last_applied();
        if index != self.applied {
            return Err(format!(
                "the core says {index} entries are applied, the driver applied {}",
                self.applied
            ));
        }
        match raft.compact(index, self.state.snapshot()) {
            Ok(snapshot) => {
                self.disk.save_snapshot(&snapshot);
                Ok(Some(snapshot))
            }
            // Nothing new applied, or (a node that joined) the membership
            // to record is not known yet: as the real driver, try later.
            Err(CompactError::AlreadyCompacted { .. } | CompactError::MembershipUnknown { .. }) => {
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// A client request arrives. Returns the answers that can be given at
    /// once (a redirect); the others come later, when the entry is applied
    /// or the read confirmed. A request to a machine that is down is lost.
    pub fn client_request(&mut self, tag: Tag, op: &Op) -> Vec<(Tag, Reply)> {
        let Some(raft) = self.raft.as_mut() else {
            return Vec::new();
        };
        match op {
            Op::Set(value) => match raft.propose(value.clone()) {
                Ok(index) => {
                    let term = raft.current_term();
                    match self.writes.insert(index, PendingWrite { tag, term }) {
                        // Unreachable while step-downs fail pending writes;
                        // kept so a superseded proposal is never silent.
                        Some(old) => vec![(old.tag, Reply::Unknown("index reused"))],
                        None => Vec::new(),
                    }
                }
                Err(not_leader) => vec![(tag, Reply::NotLeader(not_leader.leader))],
            },
            Op::Get => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match raft.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(id, tag);
                        Vec::new()
                    }
                    Err(not_leader) => vec![(tag, Reply::NotLeader(not_leader.leader))],
                }
            }
        }
    }

    /// Handles one `Ready`: persist, advance, (messages go back to the
    /// caller to send), apply, answer reads.
    pub fn handle_ready(
        &mut self,
        ready: Ready,
        reply_before_persist: bool,
    ) -> Result<Handled, String> {
        // 1. Persist first. "Persist before you answer" is the whole of
        //    Raft's crash safety: a vote or an acknowledgement sent before
        //    the write can elect two leaders or lose a committed entry.
        //    The snapshot goes first, as in the real driver: the entries of
        //    the same `Ready` follow it.
        if reply_before_persist {
            self.unwritten.push(Unwritten {
                snapshot: ready.snapshot.clone(),
                hard_state: ready.hard_state.clone(),
                entries: ready.entries.clone(),
            });
        } else {
            if let Some(snapshot) = &ready.snapshot {
                self.disk.save_snapshot(snapshot);
            }
            self.disk.write(ready.hard_state.as_ref(), &ready.entries)?;
        }
        // 2. Tell the core its entries are durable.
        let raft = self
            .raft
            .as_mut()
            .expect("handle_ready on a node that is down");
        raft.advance(&ready);

        // 3. The messages are sent by the caller once this returns.

        // 4. A snapshot from the leader replaces the state machine (Figure
        //    13, receiver rule 8) before the entries after it are applied.
        let mut replies = Vec::new();
        if let Some(snapshot) = &ready.snapshot {
            let index = snapshot.last_included_index;
            if index < self.applied {
                return Err(format!(
                    "asked to install a snapshot up to {index} after applying entry {}",
                    self.applied
                ));
            }
            if !self.ignore_snapshot_state {
                self.state
                    .restore(&snapshot.data)
                    .map_err(|e| format!("cannot load the snapshot from the leader: {e}"))?;
            }
            self.applied = index;
            // A write waiting on an index the snapshot covers will never be
            // handed out to apply: whether it was our entry that committed
            // there, the snapshot cannot say.
            let covered: Vec<Index> = self.writes.range(..=index).map(|(i, _)| *i).collect();
            for i in covered {
                if let Some(write) = self.writes.remove(&i) {
                    replies.push((write.tag, Reply::Unknown("covered by a snapshot")));
                }
            }
        }
        // ...then apply committed entries in order, answering their writers.
        for entry in &ready.committed {
            if entry.index != self.applied + 1 {
                return Err(format!(
                    "asked to apply entry {} after entry {}",
                    entry.index, self.applied
                ));
            }
            if let EntryData::Command(command) = &entry.data {
                self.state.apply(entry.index, command);
            }
            self.applied = entry.index;
            if let Some(write) = self.writes.remove(&entry.index) {
                let reply = if write.term == entry.term {
                    Reply::Written
                } else {
                    Reply::Unknown("entry overwritten")
                };
                replies.push((write.tag, reply));
            }
        }
        // ...then reads: the core guarantees their index is applied by now.
        let mut reads_answered = Vec::new();
        for (id, outcome) in &ready.reads {
            let Some(tag) = self.reads.remove(id) else {
                continue;
            };
            match outcome {
                ReadOutcome::Ready { index } => {
                    reads_answered.push((*index, self.applied));
                    replies.push((tag, Reply::Value(self.state.read())));
                }
                ReadOutcome::Failed => replies.push((tag, Reply::ReadFailed)),
            }
        }
        // A leader that stepped down cannot tell whether its pending writes
        // will commit (a later leader may or may not keep them): the honest
        // answer is "unknown".
        if ready
            .events
            .iter()
            .any(|event| matches!(event, CoreEvent::SteppedDown { .. }))
        {
            for (_, write) in std::mem::take(&mut self.writes) {
                replies.push((write.tag, Reply::Unknown("leader stepped down")));
            }
        }
        Ok(Handled {
            ready,
            replies,
            reads_answered,
        })
    }
}
