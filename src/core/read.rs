//! Linearizable reads without writing to the log: ReadIndex (dissertation
//! §6.4).
//!
//! A leader cannot answer a read from its own state right away: it may have
//! been deposed without knowing it, and a newer leader may already have
//! committed a newer value. So the leader
//!
//! 1. waits until it has committed an entry of its own term (its no-op), so
//!    its `commit_index` is at least that of any earlier leader;
//! 2. records `commit_index` as the read's index;
//! 3. sends a round of heartbeats and waits for a majority to answer from its
//!    term, which proves it was still the leader after the read arrived;
//! 4. hands the read back; the driver answers it once the state machine has
//!    applied up to the read's index.
//!
//! All reads that arrive between two rounds share one round.

use super::{NotLeader, Raft, Role};
use crate::message::Index;
use std::collections::VecDeque;

/// What became of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Answer with the state machine as of (at least) `index`.
    Ready { index: Index },
    /// This node stopped leading before the read was confirmed.
    Failed,
}

/// A read with its index, waiting for a majority to echo `seq`.
#[derive(Clone, Debug)]
struct PendingRead {
    id: u64,
    index: Index,
    seq: u64,
}

/// The leader's reads, from arrival to confirmation.
#[derive(Clone, Debug, Default)]
pub struct ReadQueue {
    /// The sequence number of the latest round of heartbeats.
    latest_seq: u64,
    /// Reads that arrived before an entry of this term was committed.
    waiting_for_commit: Vec<u64>,
    /// Reads with an index that no heartbeat round has yet been sent for.
    unsent: Vec<(u64, Index)>,
    /// Reads whose round is out, oldest first.
    pending: VecDeque<PendingRead>,
}

impl ReadQueue {
    /// The `read_seq` every AppendEntries from the leader carries.
    pub fn latest_seq(&self) -> u64 {
        self.latest_seq
    }

    /// Every read still waiting fails (the node is no longer leader).
    pub fn fail_all(self) -> impl Iterator<Item = (u64, ReadOutcome)> {
        self.waiting_for_commit
            .into_iter()
            .chain(self.unsent.into_iter().map(|(id, _)| id))
            .chain(self.pending.into_iter().map(|read| read.id))
            .map(|id| (id, ReadOutcome::Failed))
    }
}

impl Raft {
    /// Asks for a linearizable read. The answer comes back later in
    /// `Ready::reads` under `id`.
    pub fn read_index(&mut self, id: u64) -> Result<(), NotLeader> {
        let commit_index = self.commit_index;
        let committed_in_term = self.log.term_at(commit_index) == Some(self.current_term);
        let answer_at_once = bug!(self, read_without_quorum);
        let Role::Leader(leader) = &mut self.role else {
            return Err(self.not_leader());
        };
        if answer_at_once {
            let index = commit_index;
            self.reads_done.push((id, ReadOutcome::Ready { index }));
            return Ok(());
        }
        if committed_in_term {
            leader.reads.unsent.push((id, commit_index));
        } else {
            leader.reads.waiting_for_commit.push(id);
        }
        Ok(())
    }

    /// Called when the leader's commit index moves: reads that waited for an
    /// entry of this term to commit can now take an index.
    pub(super) fn on_commit_advanced(&mut self) {
        let commit_index = self.commit_index;
        if let Role::Leader(leader) = &mut self.role {
            let waiting = std::mem::take(&mut leader.reads.waiting_for_commit);
            leader
                .reads
                .unsent
                .extend(waiting.into_iter().map(|id| (id, commit_index)));
        }
    }

    /// Starts one heartbeat round for every read that has none yet. Called
    /// when the driver collects a `Ready`, so that all reads of a batch share
    /// a round.
    pub(super) fn send_read_round(&mut self) {
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        if leader.reads.unsent.is_empty() {
            return;
        }
        // Every AppendEntries sent from now on carries the new sequence
        // number; an answer echoing it was sent after these reads arrived.
        leader.reads.latest_seq += 1;
        let seq = leader.reads.latest_seq;
        let unsent = std::mem::take(&mut leader.reads.unsent);
        leader
            .reads
            .pending
            .extend(
                unsent
                    .into_iter()
                    .map(|(id, index)| PendingRead { id, index, seq }),
            );
        self.broadcast_append();
        self.confirm_reads();
    }

    /// Hands back every read whose round a majority (this node included)
    /// has answered.
    pub(super) fn confirm_reads(&mut self) {
        // The leader has, of course, seen its own latest round.
        let confirmed_seq = self
            .agreed_by_majority(|p| p.read_seq_acked, u64::MAX)
            .unwrap_or(0);
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        while let Some(read) = leader.reads.pending.front() {
            if read.seq > confirmed_seq {
                break;
            }
            self.reads_done
                .push((read.id, ReadOutcome::Ready { index: read.index }));
            leader.reads.pending.pop_front();
        }
    }

    /// True if reads are waiting for a round to be sent.
    pub(super) fn has_unsent_reads(&self) -> bool {
        matches!(&self.role, Role::Leader(leader) if !leader.reads.unsent.is_empty())
    }
}
