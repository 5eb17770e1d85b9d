//! Client request bookkeeping: who waits for what, and the answer each
//! gets. A `set` waits for its entry to commit (and be applied), a `get`
//! for its ReadIndex round, a membership change for its entry, a
//! `transfer` for leadership to move; `status` is answered once the turn's
//! changes are durable; `log` and `metrics` at once. Every wait is bounded
//! ([`MAX_PENDING_REQUESTS`], [`MAX_PENDING_WRITE_BYTES`]), and a leader
//! that steps down answers every write it can no longer vouch for.

use super::*;
use crate::message::Entry;

/// Most client requests waiting for a commit or a read at once; more are
/// refused with an error rather than queued without bound.
pub const MAX_PENDING_REQUESTS: usize = 16_384;

/// Most bytes of values proposed here and not yet committed. With large
/// values the request count alone would let the leader's log (and what it
/// sends) grow by gigabytes while a majority is slow; past this, writes are
/// refused with an error until commits catch up.
pub const MAX_PENDING_WRITE_BYTES: usize = 64 * 1024 * 1024;

/// Writes (and membership changes) proposed here, waiting for their entry
/// to commit, by log index; and how many bytes of values they hold.
#[derive(Default)]
pub(super) struct PendingWrites {
    by_index: BTreeMap<Index, PendingWrite>,
    bytes: usize,
}

struct PendingWrite {
    /// The term the entry was proposed in: if an entry of another term
    /// commits at its index, the write was lost.
    term: Term,
    bytes: usize,
    waiter: Waiter,
}

impl PendingWrites {
    fn len(&self) -> usize {
        self.by_index.len()
    }

    fn insert(&mut self, index: Index, term: Term, bytes: usize, waiter: Waiter) {
        self.bytes += bytes;
        let write = PendingWrite {
            term,
            bytes,
            waiter,
        };
        if let Some(replaced) = self.by_index.insert(index, write) {
            // An index is proposed here once per term; a leader of a later
            // term reusing it means the old write was lost.
            self.bytes -= replaced.bytes;
            answer(
                replaced.waiter,
                error("leadership changed and the write was overwritten; retry"),
            );
        }
    }

    /// The write waiting on `index`, if any: its term and who waits.
    fn remove(&mut self, index: Index) -> Option<(Term, Waiter)> {
        let write = self.by_index.remove(&index)?;
        self.bytes -= write.bytes;
        Some((write.term, write.waiter))
    }

    fn take_all(&mut self) -> Vec<Waiter> {
        self.bytes = 0;
        std::mem::take(&mut self.by_index)
            .into_values()
            .map(|w| w.waiter)
            .collect()
    }
}

/// Who is waiting for an answer.
pub(super) enum Waiter {
    /// A client connection (`raft client`, or another node forwarding).
    Client { id: u64, reply: Reply },
    /// A person at this node's prompt.
    Prompt,
}

impl Node {
    pub(super) fn on_client_request(&mut self, request: ClientRequest, reply: Reply) {
        let waiter = Waiter::Client {
            id: request.id,
            reply,
        };
        match request.command {
            ClientCommand::Set { value } => self.propose(value, waiter),
            ClientCommand::Get => self.read(waiter),
            ClientCommand::Status => self.pending_status.push(waiter),
            ClientCommand::Transfer { to } => self.transfer(to, waiter),
            ClientCommand::AddMember { address } => self.add_member(&address, waiter),
            ClientCommand::RemoveMember { id } => self.remove_member(id, waiter),
            ClientCommand::Log { count } => {
                let count = count.min(MAX_LOG_ROWS);
                answer(
                    waiter,
                    ClientResult::Log {
                        entries: self.log_rows(count),
                    },
                )
            }
            ClientCommand::Metrics => answer(waiter, ClientResult::Metrics(self.metrics())),
        }
    }

    /// Starts a write here, if this node leads.
    pub(super) fn propose(&mut self, value: String, waiter: Waiter) {
        let too_many = self.pending_writes.len() >= MAX_PENDING_REQUESTS
            || self.pending_writes.bytes + value.len() > MAX_PENDING_WRITE_BYTES;
        if too_many {
            answer(waiter, overloaded());
            return;
        }
        if value.len() > MAX_COMMAND_BYTES {
            let message = format!(
                "the value is {} bytes; the most a value may have is {MAX_COMMAND_BYTES}",
                value.len()
            );
            answer(waiter, error(&message));
            return;
        }
        match self.raft.propose(value.clone()) {
            Ok(index) => {
                say!("Leader {} setting value to: {}", self.raft.id(), value);
                let term = self.raft.current_term();
                self.pending_writes.insert(index, term, value.len(), waiter);
            }
            Err(not_leader) => answer(waiter, self.not_leader(not_leader)),
        }
    }

    /// Starts adding the node at `address` as a learner (dissertation
    /// §4.2.1); answered once the change commits.
    pub(super) fn add_member(&mut self, address: &str, waiter: Waiter) {
        let (id, address) = match crate::config::parse_address(address) {
            Ok(parsed) => parsed,
            Err(e) => return answer(waiter, error(&e.to_string())),
        };
        let outcome = self.raft.add_learner(id, address);
        self.await_change(outcome, waiter);
    }

    /// Starts removing member `id` (dissertation §4.2.2).
    pub(super) fn remove_member(&mut self, id: NodeId, waiter: Waiter) {
        let outcome = self.raft.remove_member(id);
        self.await_change(outcome, waiter);
    }

    fn await_change(&mut self, outcome: Result<Index, MembershipError>, waiter: Waiter) {
        match outcome {
            Ok(index) => {
                let term = self.raft.current_term();
                self.pending_writes.insert(index, term, 0, waiter);
            }
            Err(MembershipError::NotLeader(not_leader)) => {
                answer(waiter, self.not_leader(not_leader))
            }
            Err(e) => answer(waiter, error(&e.to_string())),
        }
    }

    /// Starts a linearizable read here, if this node leads.
    pub(super) fn read(&mut self, waiter: Waiter) {
        if self.pending_reads.len() >= MAX_PENDING_REQUESTS {
            answer(waiter, overloaded());
            return;
        }
        self.next_read_id += 1;
        let id = self.next_read_id;
        match self.raft.read_index(id) {
            Ok(()) => {
                self.pending_reads.insert(id, waiter);
            }
            Err(not_leader) => answer(waiter, self.not_leader(not_leader)),
        }
    }

    /// Starts a leadership transfer (dissertation §3.10).
    pub(super) fn transfer(&mut self, target: NodeId, waiter: Waiter) {
        match self.raft.transfer_leadership(target) {
            Ok(()) => {
                if let Some(previous) = self.pending_transfer.replace(waiter) {
                    answer(previous, error("superseded by a newer transfer request"));
                }
            }
            Err(TransferError::NotLeader(not_leader)) => {
                answer(waiter, self.not_leader(not_leader))
            }
            Err(e) => answer(waiter, error(&e.to_string())),
        }
    }

    /// Answers the `status` requests waiting for this turn's changes to be
    /// durable (`handle_ready` has made them so).
    pub(super) fn answer_status_requests(&mut self) {
        if self.pending_status.is_empty() {
            return;
        }
        let status = self.status();
        for waiter in std::mem::take(&mut self.pending_status) {
            answer(waiter, ClientResult::Status(status.clone()));
        }
    }

    /// Answers the requests an event of the core decides: a leader that
    /// stepped down can no longer vouch for the writes waiting on it, and a
    /// transfer ends one way or the other.
    pub(super) fn settle_requests(&mut self, event: &Event) {
        match event {
            Event::SteppedDown { .. } => {
                if let Some(waiter) = self.pending_transfer.take() {
                    answer(waiter, ClientResult::Done);
                }
                // Writes proposed here may still commit under the new
                // leader, or may be lost; this node can no longer tell.
                for waiter in self.pending_writes.take_all() {
                    answer(
                        waiter,
                        error("leadership changed before the write committed; it may or may not have been applied, so retry"),
                    );
                }
            }
            Event::TransferAborted { .. } => {
                if let Some(waiter) = self.pending_transfer.take() {
                    answer(
                        waiter,
                        error("the target did not take over within an election timeout"),
                    );
                }
            }
            _ => {}
        }
    }

    /// Answers the write waiting on `entry`, now committed and applied: its
    /// index, or, if another leader's entry took that place, that it was
    /// lost.
    pub(super) fn answer_write(&mut self, entry: &Entry) {
        if let Some((term, waiter)) = self.pending_writes.remove(entry.index) {
            let result = if term == entry.term {
                ClientResult::Written { index: entry.index }
            } else {
                error("leadership changed and the write was overwritten; retry")
            };
            answer(waiter, result);
        }
    }

    fn not_leader(&self, not_leader: NotLeader) -> ClientResult {
        ClientResult::NotLeader {
            leader: not_leader
                .leader
                .and_then(|id| self.addresses.get(&id).cloned()),
        }
    }

    pub(super) fn answer_reads(&mut self, ready: &Ready) {
        for (id, outcome) in &ready.reads {
            let Some(waiter) = self.pending_reads.remove(id) else {
                continue;
            };
            let result = match outcome {
                ReadOutcome::Ready { index } => {
                    debug_assert!(*index <= self.raft.last_applied());
                    ClientResult::Value {
                        value: self.state_machine.read(),
                    }
                }
                ReadOutcome::Failed => self.not_leader(NotLeader {
                    leader: self.raft.leader().cloned(),
                }),
            };
            answer(waiter, result);
        }
    }

    pub(super) fn status(&self) -> Status {
        Status {
            id: self.raft.id().clone(),
            role: self.raft.role().to_string(),
            term: self.raft.current_term(),
            leader: self.raft.leader().cloned(),
            commit_index: self.raft.commit_index(),
            last_applied: self.raft.last_applied(),
            last_log_index: self.raft.log().last_index(),
            value: self.state_machine.read(),
            members: self.raft.membership().voters.keys().cloned().collect(),
            learners: self.raft.membership().learners.keys().cloned().collect(),
            snapshot_index: self.raft.snapshot_index(),
            last_heard_ms: self.watch.last_heard_ms(self.other_members()),
        }
    }

    /// Every member but this node: voters, then learners.
    fn other_members(&self) -> impl Iterator<Item = &NodeId> {
        let membership = self.raft.membership();
        let id = self.raft.id();
        membership
            .voters
            .keys()
            .chain(membership.learners.keys())
            .filter(move |m| *m != id)
    }

    /// This node's counters, for `metrics` (see [`crate::metrics`]).
    pub(super) fn metrics(&self) -> Metrics {
        Metrics {
            fsyncs: self.storage.fsync_count(),
            bytes_sent: self.peers.bytes_sent(),
            messages_sent: self.peers.messages_sent(),
            longest_sync_us: u64::try_from(self.storage.longest_sync().as_micros())
                .unwrap_or(u64::MAX),
        }
    }

    /// The last `count` entries, oldest first.
    pub(super) fn log_rows(&self, count: usize) -> Vec<LogRow> {
        let log = self.raft.log();
        let last = log.last_index();
        let first = log.first_index().max(last.saturating_sub(count as u64) + 1);
        if last == 0 || first > last {
            return Vec::new();
        }
        log.slice(first, last + 1)
            .iter()
            .map(|entry| {
                let (kind, data) = match &entry.data {
                    EntryData::Command(value) => ("command", Some(value.clone())),
                    EntryData::Noop => ("noop", None),
                    EntryData::Config(m) => (
                        "membership",
                        Some(format!(
                            "voters {}; learners {}",
                            list(m.voters.keys()),
                            list(m.learners.keys())
                        )),
                    ),
                };
                LogRow {
                    index: entry.index,
                    term: entry.term,
                    kind: kind.to_string(),
                    data,
                    committed: entry.index <= self.raft.commit_index(),
                    applied: entry.index <= self.raft.last_applied(),
                }
            })
            .collect()
    }
}

/// Sends a client's or the prompt's answer. A client that has gone away is
/// not an error.
pub(super) fn answer(waiter: Waiter, result: ClientResult) {
    match waiter {
        Waiter::Client { id, reply } => {
            reply.send(ClientResponse { id, result });
        }
        Waiter::Prompt => print_result(&result),
    }
}

fn error(message: &str) -> ClientResult {
    ClientResult::Error {
        message: message.to_string(),
    }
}

fn overloaded() -> ClientResult {
    error("too many requests are waiting on this node; retry shortly")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_writes_count_the_bytes_they_hold() {
        let mut pending = PendingWrites::default();
        pending.insert(5, 2, 100, Waiter::Prompt);
        pending.insert(6, 2, 30, Waiter::Prompt);
        assert_eq!((pending.len(), pending.bytes), (2, 130));
        assert!(matches!(pending.remove(5), Some((2, Waiter::Prompt))));
        assert_eq!(pending.bytes, 30);
        assert!(pending.remove(5).is_none());
        // A later term reuses index 6: the old write is answered and its
        // bytes no longer count.
        pending.insert(6, 3, 7, Waiter::Prompt);
        assert_eq!((pending.len(), pending.bytes), (1, 7));
        assert_eq!(pending.take_all().len(), 1);
        assert_eq!((pending.len(), pending.bytes), (0, 0));
    }
}
