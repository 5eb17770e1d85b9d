//! One simulated machine: a Raft core, its disk, its state machine, and the
//! driver that connects them.
//!
//! The driver does for the simulator what `node.rs` does for the real
//! binary: it takes each `Ready` from the core and does the work in the
//! order the core's docs demand:
//!
//! 1. persist the hard state and the entries (the "disk" here is the
//!    [`Disk`] struct: whatever is in it survives a crash);
//! 2. tell the core they are durable (`advance`);
//! 3. send the messages (returned to the cluster, which puts them on the
//!    network);
//! 4. apply the committed entries to the state machine and answer reads.
//!
//! With the simulator's `reply_before_persist` bug switch on, step 1 is
//! postponed to the start of the node's next step, after the messages have
//! gone out. A crash in between loses what was already promised to others.

use super::clients::{Op, Reply, Tag};
use raft::core::{Config, Event as CoreEvent, Raft, ReadOutcome, Ready};
use raft::message::{Entry, EntryData, HardState, Index, Term};
use raft::state_machine::{StateMachine, Value};
use std::collections::BTreeMap;

/// What a node has on stable storage: the hard state and the log, as of the
/// last persisted `Ready`.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    pub log: Vec<Entry>,
}

impl Disk {
    /// Writes what a `Ready` asked to persist. The storage contract: entries
    /// whose first index is at or below the last stored index replace the
    /// stored suffix from that index on (a conflicting suffix, §5.3).
    fn write(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), String> {
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let keep = first.index.saturating_sub(1) as usize;
        if first.index == 0 || keep > self.log.len() {
            return Err(format!(
                "entries to persist start at index {} but the disk holds only {} entries",
                first.index,
                self.log.len()
            ));
        }
        self.log.truncate(keep);
        self.log.extend_from_slice(entries);
        Ok(())
    }
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
    pub disk: Disk,
    /// Only with `reply_before_persist`: what the buggy driver has not yet
    /// written, oldest first.
    unwritten: Vec<(Option<HardState>, Vec<Entry>)>,
    /// The replicated state; rebuilt from the log after every restart (there
    /// are no snapshots yet).
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

    /// Starts (or restarts) the machine from what is on its disk. The state
    /// machine starts empty and is rebuilt as the log is re-applied.
    pub fn start(&mut self, config: Config, seed: u64) {
        debug_assert!(self.raft.is_none());
        self.incarnation += 1;
        let hard_state = self.disk.hard_state.clone();
        self.raft = Some(Raft::new(config, hard_state, self.disk.log.clone(), seed));
        self.state = Value::default();
        self.applied = 0;
    }

    /// The machine stops: everything in memory is gone, including writes
    /// the buggy driver had postponed. Clients waiting on it never hear back.
    pub fn crash(&mut self) {
        self.raft = None;
        self.unwritten.clear();
        self.writes.clear();
        self.reads.clear();
    }

    /// With `reply_before_persist`, the writes postponed from the previous
    /// step happen now, at the start of the next one.
    pub fn write_postponed(&mut self) -> Result<(), String> {
        for (hard_state, entries) in std::mem::take(&mut self.unwritten) {
            self.disk.write(hard_state.as_ref(), &entries)?;
        }
        Ok(())
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
        if reply_before_persist {
            self.unwritten
                .push((ready.hard_state.clone(), ready.entries.clone()));
        } else {
            self.disk.write(ready.hard_state.as_ref(), &ready.entries)?;
        }
        // 2. Tell the core its entries are durable.
        let raft = self
            .raft
            .as_mut()
            .expect("handle_ready on a node that is down");
        raft.advance(&ready);

        // 3. The messages are sent by the caller once this returns.

        // 4. Apply committed entries in order, answering their writers.
        let mut replies = Vec::new();
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
