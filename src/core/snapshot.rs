//! Log compaction with snapshots, and InstallSnapshot (§7, Figure 13).
//!
//! Once the state machine has applied entries, they can be replaced by a
//! snapshot of its state; the log then starts after the snapshot. A follower
//! that needs entries the leader no longer holds receives the snapshot
//! instead, in chunks, and resumes normal replication after it.
//!
//! The driver asks for a snapshot every `--snapshot-entries` applied entries
//! (`Node 8000 snapshot at index 10000 (3 KiB)`), takes it through the
//! `StateMachine` trait, writes it durably and drops the covered log prefix
//! from memory and disk. A follower that installs a snapshot keeps the log
//! entries that follow it and discards a log that conflicts with it (Figure 13,
//! receiver rules 6 and 7).

use super::{Raft, Role};
use crate::message::{Incarnation, Index, MessageBody, NodeId, Snapshot, Term};

/// Most bytes of snapshot in one InstallSnapshot message.
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;
/// The largest snapshot a follower accepts; more is refused rather than
/// buffered without bound.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// The latest snapshot, and its JSON form, which is what is sent.
#[derive(Clone, Debug)]
pub(super) struct HeldSnapshot {
    pub snapshot: Snapshot,
    pub json: String,
}

impl HeldSnapshot {
    pub fn new(snapshot: Snapshot) -> HeldSnapshot {
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_string(&snapshot).unwrap_or_default();
        HeldSnapshot { snapshot, json }
    }
}

/// A snapshot arriving in chunks (Figure 13, receiver rules 2 to 4).
#[derive(Clone, Debug)]
pub(super) struct IncomingSnapshot {
    last_included_index: Index,
    last_included_term: Term,
    json: String,
}

/// One InstallSnapshot message's fields.
pub(super) struct Chunk {
    pub last_included_index: Index,
    pub last_included_term: Term,
    pub offset: u64,
    pub data: String,
    pub done: bool,
}

/// Why a snapshot cannot be taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// Only applied entries can be replaced by the state machine's state.
    NotApplied { index: Index, last_applied: Index },
    /// A snapshot already covers this index.
    AlreadyCompacted { index: Index, snapshot_index: Index },
    /// This node joined a running cluster (it started with no voters) and
    /// does not know the membership as of this index: the entries up to it
    /// hold no membership entry, and the one the cluster started with was
    /// never sent to it. It knows once it applies the entry that added it
    /// (or installs the leader's snapshot); compact again then.
    MembershipUnknown { index: Index },
}

impl std::fmt::Display for CompactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompactError::NotApplied {
                index,
                last_applied,
            } => write!(
                f,
                "cannot snapshot at {index}: only {last_applied} entries are applied"
            ),
            CompactError::AlreadyCompacted {
                index,
                snapshot_index,
            } => write!(
                f,
                "cannot snapshot at {index}: a snapshot already covers up to {snapshot_index}"
            ),
            CompactError::MembershipUnknown { index } => write!(
                f,
                "cannot snapshot at {index}: this node joined later and does not know the \
                 membership as of that index yet"
            ),
        }
    }
}

impl Raft {
    /// §7: the state machine's state as of `index` (already applied) is
    /// `data`; replace the log up to `index` with it. Returns the snapshot,
    /// which the caller must make durable (`Storage::save_snapshot`).
    pub fn compact(&mut self, index: Index, data: String) -> Result<Snapshot, CompactError> {
        if index > self.last_applied {
            return Err(CompactError::NotApplied {
                index,
                last_applied: self.last_applied,
            });
        }
        if index <= self.log.snapshot_index() {
            return Err(CompactError::AlreadyCompacted {
                index,
                snapshot_index: self.log.snapshot_index(),
            });
        }
        // A snapshot must hold the membership as of its last entry (§7), and
        // installing it replaces the receiver's. A node that joined later
        // finds none in its log before the entry that added it, and would
        // record its own empty starting membership instead, and a leader
        // that joined could send that snapshot to a new follower (found by
        // the simulator; regression test
        // `membership::joined_node_snapshots_only_a_known_membership`).
        let membership = match self.known_membership_at(index) {
            Some(membership) => membership,
            None => return Err(CompactError::MembershipUnknown { index }),
        };
        let term = self.log.term_at(index).unwrap_or_default();
        let snapshot = Snapshot {
            last_included_index: index,
            last_included_term: term,
            membership,
            data,
        };
        self.log.compact(index, term);
        self.snapshot = Some(HeldSnapshot::new(snapshot.clone()));
        Ok(snapshot)
    }

    /// The index the latest snapshot covers (0 if none).
    pub fn snapshot_index(&self) -> Index {
        self.log.snapshot_index()
    }

    /// Sends `peer` the next chunk of the snapshot, from `offset`.
    pub(super) fn send_snapshot_chunk(&mut self, peer: &NodeId, offset: u64) {
        let Some(held) = &self.snapshot else {
            debug_assert!(false, "a compacted log without a snapshot");
            return;
        };
        let start = floor_char_boundary(&held.json, offset as usize);
        let end = floor_char_boundary(&held.json, start + MAX_SNAPSHOT_CHUNK_BYTES);
        let body = MessageBody::InstallSnapshot {
            last_included_index: held.snapshot.last_included_index,
            last_included_term: held.snapshot.last_included_term,
            offset: start as u64,
            data: held.json[start..end].to_string(),
            done: end == held.json.len(),
        };
        self.send(peer.clone(), body);
    }

    /// Figure 13, InstallSnapshot RPC, receiver implementation. Rule 1
    /// (reply if term < currentTerm) is applied in `check_term`. Like
    /// AppendEntries, a chunk comes from the current leader.
    pub(super) fn on_install_snapshot(&mut self, leader: NodeId, chunk: Chunk) {
        self.follow(leader.clone());
        let index = chunk.last_included_index;
        let (next_offset, done) = self.receive_chunk(chunk);
        // Sent after the snapshot is durable: the driver persists a Ready
        // before it sends the messages in it.
        self.send(
            leader,
            MessageBody::InstallSnapshotResponse {
                last_included_index: index,
                next_offset,
                done,
                incarnation: self.config.incarnation,
            },
        );
    }

    /// Rules 2 to 5: collect the chunks; returns the offset expected next
    /// and whether the snapshot is now installed.
    fn receive_chunk(&mut self, chunk: Chunk) -> (u64, bool) {
        // A snapshot of what we have already committed brings nothing new.
        if chunk.last_included_index <= self.commit_index {
            self.incoming_snapshot = None;
            return (0, true);
        }
        // Rule 2: a chunk at offset 0 starts a new snapshot, replacing any
        // partial one.
        if chunk.offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                last_included_index: chunk.last_included_index,
                last_included_term: chunk.last_included_term,
                json: String::new(),
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return (0, false);
        };
        let same_snapshot = incoming.last_included_index == chunk.last_included_index
            && incoming.last_included_term == chunk.last_included_term;
        // Out of order (a lost or repeated chunk): say where to resume.
        if !same_snapshot || chunk.offset != incoming.json.len() as u64 {
            let resume = if same_snapshot {
                incoming.json.len()
            } else {
                0
            };
            return (resume as u64, false);
        }
        // Rule 3: write the data at the given offset.
        if incoming.json.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
            self.incoming_snapshot = None;
            return (0, false);
        }
        incoming.json.push_str(&chunk.data);
        // Rule 4: wait for more chunks if this was not the last.
        if !chunk.done {
            return (incoming.json.len() as u64, false);
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return (0, false);
        };
        match serde_json::from_str::<Snapshot>(&incoming.json) {
            Ok(snapshot) if snapshot.last_included_index == incoming.last_included_index => {
                self.install_snapshot(snapshot);
                (incoming.json.len() as u64, true)
            }
            // A garbled snapshot is dropped; the leader starts over.
            _ => (0, false),
        }
    }

    /// Rules 5 to 8: keep the log after the snapshot if it holds the
    /// snapshot's last entry (rule 6), otherwise discard it all (rule 7);
    /// then the state machine is reset from the snapshot (rule 8, done by
    /// the driver with `Ready::snapshot`), with its membership.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.last_included_index;
        debug_assert!(index > self.commit_index);
        if bug!(self, keep_log_conflicting_with_snapshot) {
            self.log
                .compact_keeping_suffix(index, snapshot.last_included_term);
        } else {
            // Rules 6 and 7.
            self.log.compact(index, snapshot.last_included_term);
        }
        self.commit_index = index;
        self.last_applied = index;
        self.stable_index = self.stable_index.min(self.log.last_index());
        if let Some(from) = self.unstable_from {
            self.unstable_from = Some(from.max(index + 1));
        }
        self.snapshot = Some(HeldSnapshot::new(snapshot.clone()));
        self.snapshot_to_install = Some(snapshot);
        self.refresh_membership();
    }

    /// The leader's side of an InstallSnapshot answer.
    pub(super) fn on_install_snapshot_response(&mut self, follower: NodeId, answer: ChunkAnswer) {
        let reported = if answer.done {
            answer.last_included_index
        } else {
            0
        };
        if !self.check_incarnation(&follower, answer.incarnation, reported) {
            return;
        }
        let snapshot_index = self.log.snapshot_index();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let append_seq = leader.append_seq;
        let Some(progress) = leader.progress.get_mut(&follower) else {
            return;
        };
        progress.recent_active = true;
        if answer.done {
            progress.snapshot_installed(answer.last_included_index, append_seq);
            self.maybe_commit();
            self.maybe_record_incarnations();
            self.send_heartbeat_to(&follower);
            return;
        }
        // No storm: the next chunk goes at once only if the follower took
        // this one (its offset moved on); a chunk it refused, or an answer
        // about an older snapshot, waits for the next heartbeat.
        let current = answer.last_included_index == snapshot_index;
        let moved_on = progress.chunk_answered(answer.next_offset, current);
        self.maybe_record_incarnations();
        if moved_on {
            self.send_snapshot_chunk(&follower, answer.next_offset);
        }
    }
}

/// The fields of an InstallSnapshot answer, gathered for the handler.
pub(super) struct ChunkAnswer {
    pub last_included_index: Index,
    pub next_offset: u64,
    pub done: bool,
    pub incarnation: Incarnation,
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::floor_char_boundary;

    #[test]
    fn chunks_end_on_char_boundaries() {
        let text = "aé€b";
        assert_eq!(floor_char_boundary(text, 2), 1);
        assert_eq!(floor_char_boundary(text, 3), 3);
        assert_eq!(floor_char_boundary(text, 4), 3);
        assert_eq!(floor_char_boundary(text, 99), text.len());
    }
}
