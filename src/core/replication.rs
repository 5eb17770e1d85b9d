//! Log replication (§5.3) and the commit rule (§5.4.2).
//!
//! The leader sends each follower the entries from that follower's
//! `next_index` on, preceded by the index and term of the entry before them.
//! A follower accepts only if its log holds that previous entry (the
//! consistency check); otherwise it refuses with a hint, and the leader
//! backs `next_index` up and tries again. Once a majority holds an entry of
//! the leader's current term, that entry and all before it are committed.
//!
//! Up to `MAX_ENTRIES_PER_APPEND` entries go in one message. How many may be
//! on their way to one follower depends on its [`Replication`] state: one
//! probe at a time until the logs are known to match (`Probe`), then a stream
//! of up to `MAX_INFLIGHT_ENTRIES` (`Replicate`), or the snapshot, chunk by
//! chunk, when what it needs was compacted away (`Snapshot`). A follower
//! deletes a conflicting suffix only, never entries that match. A refusal carries a conflict hint (the follower's term at
//! `prev_log_index` and the first index of that term), so a lagging follower
//! catches up a term per round trip, not an entry per round trip.
//!
//! # A follower that lost its disk
//!
//! Raft assumes that what a node has acknowledged stays on its disk (Figure 2,
//! "Persistent state on all servers ... updated on stable storage before
//! responding to RPCs"). Deleting a node's directory (`rm -rf raft-data/8001`,
//! perhaps after reading "delete raft-data/ to start a fresh cluster"),
//! restoring it from an old backup, or a disk that lied about fsync break that
//! promise. The node comes back with fewer entries than it acknowledged and, if
//! its directory is new, without its term and its votes. What the leader does
//! then is here; how the cluster keeps such a node from voting twice is in
//! [`membership`](super::membership).
//!
//! **No storm.** A leader answers a follower's refusal with a new request at
//! once only if the refusal moved that follower's `next_index` back (each such
//! step skips at least one entry, usually a whole term). A refusal that teaches
//! it nothing waits for the next heartbeat; the same holds for snapshot chunks
//! (the next chunk goes at once only if the follower took the last one). So, to
//! one follower, a leader sends at most one AppendEntries per heartbeat
//! interval, plus one per step back, plus the messages that carry new entries
//! (each carries at least one entry, and at most `MAX_INFLIGHT_ENTRIES` are in
//! flight); a follower answers each message with exactly one. **Bound: with
//! nothing new to send, at most one message per heartbeat interval (20 a second
//! with the default `--heartbeat-ms 50`) to each follower, whatever it answers;
//! with writes, at most one more per entry sent and one per step back.**
//!
//! Measured in a functional run of `raft bench --clients 64` against three
//! nodes, with a follower killed, wiped and restarted in the middle (the
//! machine was shared, so only the counts matter): each follower sent 1,300–1,900 messages a second while the
//! cluster committed about 23,000 entries a second (under 0.1 message per
//! entry), the same before and after the wipe, and the wiped follower caught up
//! (by InstallSnapshot) within a second. Before this rule a wiped follower and
//! its leader exchanged refusals at about 100,000 messages a second each way.
//! `tests/disk_loss.rs`, `no_storm_after_a_disk_loss` in the simulator and the
//! process test check the bound.
//!
//! **Detection, said once.** A follower's answer shows a loss in two ways. Its
//! refusal of a request sent after it had acknowledged `match_index` says it
//! lacks entries up to there (each AppendEntries carries a `seq` number the
//! answer echoes, so a late answer to an older request is not mistaken for a
//! loss); or its answer comes from another data directory than the one on
//! record (each answer carries the directory's incarnation). The leader then
//! prints one line, forgets what the follower acknowledged (`match_index` back
//! to 0, `next_index` from its hint) and sends it what it lacks, by
//! AppendEntries or InstallSnapshot:
//!
//! ```text
//! Leader 8000: node 8001 lost entries it had acknowledged: it acknowledged up to index 57 and now has up to 0 (its data directory was replaced: incarnation 648c6e51f2c7a0e1, now 1b44e8d0a13c92f7). It catches up as a learner and becomes a voter again by itself: nothing to do, unless nobody deleted or restored its data directory; then check the disk of 8001
//! Leader 8000 making node 8001 a learner until it catches up: its votes from before the disk loss do not count
//! Leader 8000 promoting node 8001 to voter: it has caught up
//! ```

use std::collections::VecDeque;

use super::log::{entry_size, Log};
use super::{
    Event, Raft, Role, MAX_APPEND_BYTES, MAX_ENTRIES_PER_APPEND, MAX_INFLIGHT_BYTES,
    MAX_INFLIGHT_ENTRIES, MAX_RETIRED_INCARNATIONS,
};
use crate::message::{Conflict, Entry, EntryData, Incarnation, Index, MessageBody, NodeId, Term};

/// What the leader knows about one follower (Figure 2, "Volatile state on
/// leaders"), and how it is sending to it.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Index of the next log entry to send to that server.
    pub next_index: Index,
    /// Index of the highest log entry known to be replicated on that server.
    pub match_index: Index,
    /// How the leader sends to this follower now: see [`Replication`].
    pub state: Replication,
    /// `match_index` at the previous heartbeat; if it has not moved while
    /// entries are in flight, they were probably lost and are sent again.
    pub match_at_last_heartbeat: Index,
    /// The highest `read_seq` this follower has echoed in the current term.
    pub read_seq_acked: u64,
    /// Whether the follower has answered since the last CheckQuorum.
    pub recent_active: bool,
    /// The leader's `append_seq` when `match_index` last rose: a refusal
    /// of a request numbered above it was sent when the follower had
    /// already acknowledged `match_index`, so it cannot be a late answer.
    pub match_seq: u64,
    /// The incarnation the follower last answered from, in this term.
    pub incarnation: Option<Incarnation>,
    /// The follower lost entries it had acknowledged; as a voter it is to
    /// be made a learner until it catches up.
    pub lost_entries: bool,
}

/// How the leader sends to one follower. Figure 2 has one rule, "If last log
/// index ≥ nextIndex for a follower: send AppendEntries RPC with log entries
/// starting at nextIndex"; a leader that sends fast and forgets old entries
/// needs three ways of keeping it (etcd's raft and raft-rs name the same
/// three):
///
/// | From | Event | To | Where |
/// |------|-------|----|-------|
/// | (a new leader, a new member) | | `Probe` | [`Progress::new`] |
/// | `Probe`, `Snapshot` | the follower accepts an AppendEntries | `Replicate` | [`Progress::accepted`] |
/// | `Replicate` | a refusal, so `next_index` steps back (`Probe` and `Snapshot` stay) | `Probe` | [`Progress::refused`] |
/// | `Replicate` | a heartbeat interval with entries in flight and none acknowledged | `Probe` | [`Progress::on_heartbeat`] |
/// | any | `next_index` falls within the leader's snapshot | `Snapshot` | [`Progress::snapshot_chunk_to_send`] |
/// | `Snapshot` | the follower installed the snapshot | `Probe` | [`Progress::snapshot_installed`] |
/// | any | the follower lost entries it had acknowledged | `Probe` | [`Progress::reset_after_loss`] |
#[derive(Clone, Debug)]
pub enum Replication {
    /// The leader does not know where the follower's log stops matching its
    /// own, so it sends one AppendEntries at a time, and the next only when
    /// the answer comes (or at the next heartbeat): each refusal moves
    /// `next_index` back (Figure 2: "If AppendEntries fails because of log
    /// inconsistency: decrement nextIndex and retry").
    Probe,
    /// The logs match up to `match_index`: the leader streams new entries
    /// without waiting for answers, moving `next_index` on as it sends,
    /// within `MAX_INFLIGHT_ENTRIES` entries and about `MAX_INFLIGHT_BYTES`
    /// of them ahead of `match_index`.
    Replicate(InFlight),
    /// §7: the entries the follower needs next were compacted away, so the
    /// leader sends its snapshot, one chunk at a time; `offset` is the byte
    /// offset of the chunk the follower expects next.
    Snapshot { offset: u64 },
}

/// The AppendEntries messages streamed to a follower and not yet
/// acknowledged, oldest first: the bytes of entries in flight are counted
/// as they are sent and freed as they are acknowledged.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    /// For each message, the index of its last entry and the bytes of its
    /// entries. Each carries at least one entry, so there are at most
    /// `MAX_INFLIGHT_ENTRIES`.
    messages: VecDeque<(Index, usize)>,
    /// The sum of the bytes in `messages`.
    bytes: usize,
}

impl InFlight {
    /// Entries up to `last_index`, `bytes` of them, went out.
    fn sent(&mut self, last_index: Index, bytes: usize) {
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// The follower holds everything up to `match_index`.
    fn acknowledged(&mut self, match_index: Index) {
        while let Some(&(last_index, bytes)) = self.messages.front() {
            if last_index > match_index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }
}

impl Progress {
    /// Figure 2: "nextIndex: initialized to leader last log index + 1;
    /// matchIndex: initialized to 0".
    pub fn new(next_index: Index) -> Progress {
        Progress {
            next_index,
            match_index: 0,
            state: Replication::Probe,
            match_at_last_heartbeat: 0,
            read_seq_acked: 0,
            recent_active: false,
            match_seq: 0,
            incarnation: None,
            lost_entries: false,
        }
    }

    /// The follower accepted an AppendEntries, so its log matches up to
    /// `match_index`: stream to it (`Replicate`), or, if streaming already,
    /// free what it acknowledged.
    fn accepted(&mut self, log: &Log) {
        if let Replication::Replicate(in_flight) = &mut self.state {
            in_flight.acknowledged(self.match_index);
            return;
        }
        // A late answer can leave entries between `match_index` and
        // `next_index` that may still be on their way: count them in
        // flight too.
        let mut in_flight = InFlight::default();
        let unconfirmed = log.slice(self.match_index + 1, self.next_index - 1);
        if let Some(last) = unconfirmed.last() {
            in_flight.sent(last.index, unconfirmed.iter().map(entry_size).sum());
        }
        self.state = Replication::Replicate(in_flight);
    }

    /// The follower refused: its log does not match at `next_index - 1`,
    /// which steps back to `next_index`. `Replicate` ends: probe from there.
    /// A snapshot transfer in progress goes on where it was (a late refusal
    /// must not restart it); while `next_index` is past the snapshot, the
    /// leader probes meanwhile.
    fn refused(&mut self, next_index: Index) {
        self.next_index = next_index;
        if let Replication::Replicate(_) = self.state {
            self.state = Replication::Probe;
        }
    }

    /// The heartbeat timer fired. `Replicate`: entries in flight since the
    /// last heartbeat and none acknowledged; assume they were lost, and
    /// probe again from the first one the follower is not known to hold.
    fn on_heartbeat(&mut self) {
        let stalled = matches!(self.state, Replication::Replicate(_))
            && self.match_index == self.match_at_last_heartbeat
            && self.next_index > self.match_index + 1;
        if stalled {
            self.next_index = self.match_index + 1;
            self.state = Replication::Probe;
        }
        self.match_at_last_heartbeat = self.match_index;
    }

    /// `next_index` is within the leader's snapshot: the offset of the
    /// chunk to send, starting the transfer (`Snapshot`) if it has not
    /// started. `None` if a chunk is already out and nothing calls for a
    /// resend.
    fn snapshot_chunk_to_send(&mut self, trigger: Trigger) -> Option<u64> {
        match self.state {
            Replication::Snapshot { offset } => (trigger != Trigger::NewEntry).then_some(offset),
            Replication::Probe | Replication::Replicate(_) => {
                self.state = Replication::Snapshot { offset: 0 };
                Some(0)
            }
        }
    }

    /// `Snapshot`: the follower answered a chunk, and expects `next_offset`
    /// next (of the leader's current snapshot if `current`, else of an
    /// older one: start again). Returns whether it took the chunk, so the
    /// next may go at once.
    pub(super) fn chunk_answered(&mut self, next_offset: u64, current: bool) -> bool {
        let Replication::Snapshot { offset } = &mut self.state else {
            return false;
        };
        let moved_on = current && next_offset > *offset;
        *offset = if current { next_offset } else { 0 };
        moved_on
    }

    /// `Snapshot`: the follower installed it and holds everything up to
    /// `last_included_index`; probe from just after it.
    pub(super) fn snapshot_installed(&mut self, last_included_index: Index, append_seq: u64) {
        if last_included_index > self.match_index {
            self.match_index = last_included_index;
            self.match_seq = append_seq;
        }
        self.next_index = self.next_index.max(last_included_index + 1);
        self.state = Replication::Probe;
    }

    /// Forgets what the follower acknowledged: it lost it. It is probed
    /// again from scratch; a wrong `match_index` would count entries it no
    /// longer holds towards a majority.
    fn reset_after_loss(&mut self) {
        self.match_index = 0;
        self.match_at_last_heartbeat = 0;
        self.state = Replication::Probe;
        self.lost_entries = true;
    }

    /// `Probe`: the entries for the next probe, `None` to send nothing now.
    /// One probe at a time: a new entry waits for the answer. A probe
    /// carries entries only while the stretch the follower may lack, from
    /// `match_index` to `next_index`, is within the in-flight limits; a
    /// follower far behind first gets an empty probe, which costs a few
    /// bytes if refused, not a megabyte.
    fn entries_to_probe(&self, log: &Log, trigger: Trigger) -> Option<Vec<Entry>> {
        let carry = self.next_index <= log.last_index()
            && (self.next_index - 1).saturating_sub(self.match_index) < MAX_INFLIGHT_ENTRIES
            && log
                .slice(self.match_index + 1, self.next_index - 1)
                .iter()
                .map(entry_size)
                .sum::<usize>()
                < MAX_INFLIGHT_BYTES;
        match trigger {
            Trigger::NewEntry => None,
            Trigger::Answer if !carry => None,
            Trigger::Answer | Trigger::Heartbeat => Some(batch(log, self.next_index, carry)),
        }
    }

    /// `Replicate`: the entries to stream now, `None` to send nothing.
    /// They are counted in flight, and `next_index` moves past them on the
    /// assumption that they arrive. A heartbeat goes even when the window
    /// is full (empty then).
    fn entries_to_stream(&mut self, log: &Log, trigger: Trigger) -> Option<Vec<Entry>> {
        let Replication::Replicate(in_flight) = &mut self.state else {
            return None;
        };
        let window_open = self.next_index <= log.last_index()
            && (self.next_index - 1).saturating_sub(self.match_index) < MAX_INFLIGHT_ENTRIES
            && in_flight.bytes < MAX_INFLIGHT_BYTES;
        if trigger != Trigger::Heartbeat && !window_open {
            return None;
        }
        let entries = batch(log, self.next_index, window_open);
        if let Some(last) = entries.last() {
            in_flight.sent(last.index, entries.iter().map(entry_size).sum());
            self.next_index += entries.len() as Index;
        }
        Some(entries)
    }
}

impl std::fmt::Display for Progress {
    /// `Replicate, next_index 7, match_index 6`: what the leader knows of
    /// one follower and how it sends to it, as traces and `status` show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            Replication::Probe => f.write_str("Probe")?,
            Replication::Replicate(in_flight) => match in_flight.messages.len() {
                0 => f.write_str("Replicate")?,
                n => write!(f, "Replicate ({n} in flight)")?,
            },
            Replication::Snapshot { offset } => write!(f, "Snapshot (at byte {offset})")?,
        }
        write!(
            f,
            ", next_index {}, match_index {}",
            self.next_index, self.match_index
        )
    }
}

/// One AppendEntries' worth of entries from `from` on, or none.
fn batch(log: &Log, from: Index, carry: bool) -> Vec<Entry> {
    if !carry {
        return Vec::new();
    }
    log.batch_from(from, MAX_ENTRIES_PER_APPEND, MAX_APPEND_BYTES)
        .to_vec()
}

/// Why the leader is about to send AppendEntries to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// The heartbeat timer, or a read round: always send.
    Heartbeat,
    /// The follower answered: send more if there is more.
    Answer,
    /// The leader appended an entry: stream it unless probing.
    NewEntry,
}

/// The fields of an AppendEntries request, gathered for the handler.
pub(super) struct AppendRequest {
    pub prev_log_index: Index,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: Index,
    pub read_seq: u64,
    pub seq: u64,
}

/// The fields of an AppendEntries answer, gathered for the handler.
pub(super) struct AppendAnswer {
    pub success: bool,
    pub match_index: Index,
    pub conflict: Option<Conflict>,
    pub read_seq: u64,
    pub seq: u64,
    pub incarnation: Incarnation,
}

impl AppendAnswer {
    /// The last index the follower says it holds (for a refusal, about:
    /// the hint's index is where its log stops matching).
    fn reported_last_index(&self) -> Index {
        match &self.conflict {
            Some(conflict) if !self.success => conflict.index.saturating_sub(1),
            _ => self.match_index,
        }
    }
}

impl Raft {
    /// Appends a new entry of the current term to the leader's own log and
    /// sends it on at once.
    pub(super) fn append_as_leader(&mut self, data: EntryData) -> Index {
        debug_assert!(matches!(self.role, Role::Leader(_)));
        let index = self.log.append_new(self.current_term, data);
        self.mark_unstable(index);
        // Sent when the driver next collects a Ready, so that every entry
        // proposed in one turn of its loop travels in one message per
        // follower. A cluster of one commits once the entry is durable (see
        // `advance`).
        self.replicate_pending = true;
        index
    }

    /// Sends new entries to every follower in `Replicate` (a follower in
    /// `Probe` or `Snapshot` gets them later: see [`Replication`]).
    pub(super) fn flush_replication(&mut self) {
        if std::mem::take(&mut self.replicate_pending) {
            for peer in self.peers() {
                self.send_append(&peer, Trigger::NewEntry);
            }
        }
    }

    /// The heartbeat timer fired: send every follower what it is missing,
    /// or an empty AppendEntries if nothing (Figure 2, Rules for Servers,
    /// Leaders: "repeat during idle periods to prevent election timeouts").
    pub(super) fn on_heartbeat_timeout(&mut self) {
        if let Role::Leader(leader) = &mut self.role {
            leader.heartbeat_elapsed = 0;
            for progress in leader.progress.values_mut() {
                progress.on_heartbeat();
            }
        }
        self.broadcast_append();
    }

    /// Sends every follower one AppendEntries, even if it carries no entries.
    pub(super) fn broadcast_append(&mut self) {
        if let Role::Leader(leader) = &mut self.role {
            leader.heartbeat_elapsed = 0;
        }
        for peer in self.peers() {
            self.send_append(&peer, Trigger::Heartbeat);
        }
    }

    /// Figure 2, Rules for Servers, Leaders: "If last log index ≥ nextIndex
    /// for a follower: send AppendEntries RPC with log entries starting at
    /// nextIndex", as the follower's [`Replication`] state allows. A
    /// heartbeat goes even with nothing new.
    fn send_append(&mut self, peer: &NodeId, trigger: Trigger) {
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let read_seq = leader.reads.latest_seq();
        let seq = leader.append_seq + 1;
        let Some(progress) = leader.progress.get_mut(peer) else {
            return;
        };
        // §7: what the follower needs next was compacted away.
        if progress.next_index <= self.log.snapshot_index() {
            if let Some(offset) = progress.snapshot_chunk_to_send(trigger) {
                self.send_snapshot_chunk(peer, offset);
            }
            return;
        }
        let prev_log_index = progress.next_index - 1;
        let entries = match progress.state {
            // `Snapshot` with `next_index` past the snapshot: see `refused`.
            Replication::Probe | Replication::Snapshot { .. } => {
                progress.entries_to_probe(&self.log, trigger)
            }
            Replication::Replicate(_) => progress.entries_to_stream(&self.log, trigger),
        };
        let Some(entries) = entries else {
            return;
        };
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            debug_assert!(false, "next_index outside the leader's log");
            return;
        };
        leader.append_seq = seq;
        let leader_commit = self.commit_index;
        self.send(
            peer.clone(),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
                seq,
            },
        );
    }

    /// Figure 2, AppendEntries RPC, receiver implementation. Rule 1 (reply
    /// false if term < currentTerm) is applied in `check_term` before we get here.
    pub(super) fn on_append_entries(&mut self, leader: NodeId, request: AppendRequest) {
        // Election Safety; a message claiming otherwise never gets here
        // (`impossible`).
        debug_assert!(
            !matches!(self.role, Role::Leader(_)),
            "two leaders in one term"
        );
        // §5.2: a candidate that hears from the leader of its term steps
        // back; any follower remembers who leads and resets its timer.
        self.follow(leader.clone());
        let AppendRequest {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_seq,
            seq,
        } = self.skip_compacted(request);
        let incarnation = self.config.incarnation;

        if let Some(conflict) = self.consistency_check(prev_log_index, prev_log_term) {
            let body = MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                conflict: Some(conflict),
                read_seq,
                seq,
                incarnation,
            };
            self.send(leader, body);
            return;
        }
        self.append_from_leader(&entries);
        let last_new_index = prev_log_index + entries.len() as Index;
        self.advance_follower_commit(leader_commit, last_new_index);
        // Sent only once the entries are durable: the driver persists a
        // Ready before it sends the messages in it.
        let body = MessageBody::AppendEntriesResponse {
            success: true,
            match_index: last_new_index,
            conflict: None,
            read_seq,
            seq,
            incarnation,
        };
        self.send(leader, body);
    }

    /// Entries this node has already replaced by a snapshot are committed,
    /// so they match the leader's (Leader Completeness); drop them from the
    /// request, which then starts at the snapshot's last entry.
    fn skip_compacted(&self, mut request: AppendRequest) -> AppendRequest {
        let snapshot_index = self.log.snapshot_index();
        if request.prev_log_index >= snapshot_index {
            return request;
        }
        let covered = (snapshot_index - request.prev_log_index) as usize;
        request.entries.drain(..covered.min(request.entries.len()));
        request.prev_log_index = snapshot_index;
        request.prev_log_term = self.log.term_at(snapshot_index).unwrap_or_default();
        request
    }

    /// Figure 2, AppendEntries RPC, receiver rule 2: "Reply false if log
    /// doesn't contain an entry at prevLogIndex whose term matches
    /// prevLogTerm." The answer says where our log diverges so the leader can
    /// skip a whole term per round trip.
    fn consistency_check(&self, prev_log_index: Index, prev_log_term: Term) -> Option<Conflict> {
        match self.log.term_at(prev_log_index) {
            Some(term) if term == prev_log_term => None,
            Some(term) => Some(Conflict {
                term: Some(term),
                index: self.log.first_index_of_term_at(prev_log_index),
            }),
            None => Some(Conflict {
                term: None,
                index: self.log.last_index() + 1,
            }),
        }
    }

    /// Figure 2, AppendEntries RPC, receiver rules 3 and 4: "If an existing
    /// entry conflicts with a new one (same index but different terms),
    /// delete the existing entry and all that follow it. Append any new
    /// entries not already in the log." Entries we already hold with the same
    /// term are kept: the request may be an old, delayed one, and truncating
    /// matching entries could drop entries we already acknowledged.
    fn append_from_leader(&mut self, entries: &[Entry]) {
        if bug!(self, keep_conflicting_suffix) {
            return self.overwrite_keeping_suffix(entries);
        }
        for (position, entry) in entries.iter().enumerate() {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    // State Machine Safety; a message claiming otherwise
                    // never gets here (`impossible`).
                    debug_assert!(
                        entry.index > self.commit_index,
                        "truncating a committed entry"
                    );
                    self.log.truncate_from(entry.index);
                }
                None => {}
            }
            self.log.extend(&entries[position..]);
            self.mark_unstable(entry.index);
            return;
        }
    }

    /// The deliberate bug `keep_conflicting_suffix`: a conflicting entry is
    /// overwritten in place and the entries after it are kept.
    fn overwrite_keeping_suffix(&mut self, entries: &[Entry]) {
        for (position, entry) in entries.iter().enumerate() {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => {}
                Some(_) => {
                    self.log.replace_one(entry.clone());
                    self.mark_unstable(entry.index);
                }
                None => {
                    self.log.extend(&entries[position..]);
                    self.mark_unstable(entry.index);
                    return;
                }
            }
        }
    }

    /// Figure 2, AppendEntries RPC, receiver rule 5: "If leaderCommit >
    /// commitIndex, set commitIndex = min(leaderCommit, index of last new
    /// entry)."
    fn advance_follower_commit(&mut self, leader_commit: Index, last_new_index: Index) {
        if leader_commit > self.commit_index {
            let new_commit = leader_commit.min(last_new_index);
            self.commit_index = self.commit_index.max(new_commit);
        }
    }

    /// The leader's side of an AppendEntries answer.
    pub(super) fn on_append_response(&mut self, follower: NodeId, answer: AppendAnswer) {
        if !self.check_incarnation(&follower, answer.incarnation, answer.reported_last_index()) {
            return;
        }
        let last_index = self.log.last_index();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let append_seq = leader.append_seq;
        let Some(progress) = leader.progress.get_mut(&follower) else {
            return;
        };
        // Any answer from this term shows the follower still accepts us.
        progress.read_seq_acked = progress.read_seq_acked.max(answer.read_seq);
        progress.recent_active = true;
        let next_before = progress.next_index;
        let mut lost = None;
        if answer.success {
            // Figure 2, Rules for Servers, Leaders: "If successful: update
            // nextIndex and matchIndex for follower." Answers can arrive out
            // of order, so never move backwards.
            let matched = answer.match_index.min(last_index);
            if matched > progress.match_index {
                progress.match_index = matched;
                progress.match_seq = append_seq;
            }
            progress.next_index = progress.next_index.max(progress.match_index + 1);
            progress.accepted(&self.log);
        } else if let Some(conflict) = &answer.conflict {
            // "If AppendEntries fails because of log inconsistency: decrement
            // nextIndex and retry", a term at a time using the hint.
            let hinted = match conflict.term {
                Some(term) => match self.log.last_index_of_term(term) {
                    Some(last_of_term) => last_of_term + 1,
                    None => conflict.index,
                },
                None => conflict.index,
            };
            // The follower refused a request sent after it had acknowledged
            // `match_index`, and says it lacks entries up to there: it lost
            // them (a disk that lied about fsync, a directory restored from
            // a backup). Outside the paper, which assumes stable storage.
            let fresh = answer.seq > progress.match_seq;
            if fresh && progress.match_index > 0 && hinted <= progress.match_index {
                lost = Some(progress.match_index);
                progress.reset_after_loss();
            }
            // An answer to an old request may point below what is already
            // known to match; ignore what it says about those entries.
            let next = hinted.clamp(progress.match_index + 1, last_index + 1);
            progress.refused(next);
        }
        // No storm: a refusal is followed at once by another request only if
        // it moved `next_index` back (each such step skips at least one
        // entry, so there are at most as many as entries). A refusal that
        // teaches nothing waits for the next heartbeat.
        let progressed = answer.success || progress.next_index < next_before;
        if let Some(acknowledged) = lost {
            self.events.push(Event::LostEntries {
                id: follower.clone(),
                acknowledged,
                last_index: answer.reported_last_index(),
                incarnations: None,
            });
        }
        self.confirm_reads();
        self.maybe_commit();
        if answer.success {
            self.maybe_promote(&follower);
        }
        self.maybe_record_incarnations();
        if progressed {
            self.send_append(&follower, Trigger::Answer);
        }
        self.maybe_send_timeout_now(&follower);
    }

    /// Looks at the incarnation an answer comes from. Returns false if the
    /// answer is a late one from a data directory already replaced, to be
    /// ignored. If the follower answers from another directory than the one
    /// recorded (or seen earlier in this term), it lost its disk: the leader
    /// says so, forgets what the old directory acknowledged, and makes it a
    /// learner until it catches up (`maybe_record_incarnations`).
    pub(super) fn check_incarnation(
        &mut self,
        follower: &NodeId,
        incarnation: Incarnation,
        reported_last_index: Index,
    ) -> bool {
        if incarnation == 0 {
            return true;
        }
        let recorded = self.membership.incarnations.get(follower).copied();
        let Role::Leader(leader) = &mut self.role else {
            return true;
        };
        if leader.retired.contains(&(follower.clone(), incarnation)) {
            return false;
        }
        let Some(progress) = leader.progress.get_mut(follower) else {
            return true;
        };
        let expected = progress.incarnation.or(recorded);
        progress.incarnation = Some(incarnation);
        let Some(old) = expected.filter(|old| *old != incarnation) else {
            return true;
        };
        let acknowledged = progress.match_index;
        progress.reset_after_loss();
        if leader.retired.len() >= MAX_RETIRED_INCARNATIONS {
            leader.retired.pop_first();
        }
        leader.retired.insert((follower.clone(), old));
        self.events.push(Event::LostEntries {
            id: follower.clone(),
            acknowledged,
            last_index: reported_last_index,
            incarnations: Some((old, incarnation)),
        });
        true
    }

    /// The highest value that a majority of voters has reached, where each
    /// follower's value is `of(progress)` and the leader's own is `own`.
    /// Only voters count; the leader counts itself only while it is one (a
    /// leader removing itself manages a cluster it is not part of,
    /// dissertation §4.2.2). `None` if this node does not lead.
    pub(super) fn agreed_by_majority(&self, of: fn(&Progress) -> u64, own: u64) -> Option<u64> {
        let Role::Leader(leader) = &self.role else {
            return None;
        };
        let mut values: Vec<u64> = leader
            .progress
            .iter()
            .filter(|(id, _)| self.membership.voters.contains_key(*id))
            .map(|(_, progress)| of(progress))
            .collect();
        if self.is_voter() {
            values.push(own);
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied()
    }

    /// Sends one AppendEntries to one follower now.
    pub(super) fn send_heartbeat_to(&mut self, follower: &NodeId) {
        self.send_append(follower, Trigger::Heartbeat);
    }

    /// Figure 2, Rules for Servers, Leaders: "If there exists an N such that
    /// N > commitIndex, a majority of matchIndex\[i\] >= N, and log\[N\].term ==
    /// currentTerm: set commitIndex = N." The leader's own copy counts only
    /// once durable (`stable_index`).
    ///
    /// §5.4.2: only entries of the current term are committed by counting
    /// replicas; earlier ones are committed indirectly (Figure 8 of the paper
    /// shows how counting an old entry can commit something later erased).
    pub(super) fn maybe_commit(&mut self) {
        let Some(majority_index) = self.agreed_by_majority(|p| p.match_index, self.stable_index)
        else {
            return;
        };
        let current_term_ok = rule!(
            self,
            self.log.term_at(majority_index) == Some(self.current_term),
            broken_by commit_earlier_term
        );
        if majority_index > self.commit_index && current_term_ok {
            self.commit_index = majority_index;
            self.on_commit_advanced();
            self.on_membership_committed();
        }
    }
}
