//! Raft's safety properties, checked after every step of the simulation.
//!
//! Figure 3 of the paper lists the properties Raft guarantees at all times:
//! Election Safety, Leader Append-Only, Log Matching, Leader Completeness
//! and State Machine Safety. We add the facts they rest on: terms never go
//! down (not even across a crash, since `current_term` is persistent), a
//! running node's commit index never goes down, a node grants at most one
//! vote per term (across crashes, checked on the votes actually *sent*), and
//! a read is never answered before the state machine has reached its index.
//!
//! Only one node changes in a step, so each check looks at that node and at
//! the global records the checker keeps. Everything is incremental: a
//! node's log is compared with the copy taken at its previous step, and only
//! the entries that changed are examined, so checking after every step stays
//! cheap.

use super::{Failure, FailureKind};
use raft::core::{Raft, RoleKind};
use raft::message::{Entry, EntryData, Index, Message, MessageBody, NodeId, Term};
use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;

use super::trace::entry as show;

/// The first time an `(index, term)` pair was seen in any log.
struct SeenEntry {
    data: EntryData,
    /// The term of the entry before it in that log.
    prev_term: Term,
    node: NodeId,
}

/// An entry known to be committed.
struct CommittedEntry {
    entry: Entry,
    /// The lowest term in which a node was seen to commit it. The entry was
    /// committed in this term or earlier, so every leader of a later term
    /// must hold it (Leader Completeness).
    term: Term,
    node: NodeId,
}

/// What the checker remembers about one node.
struct NodeRecord {
    id: NodeId,
    /// The highest term the node has had, over all incarnations.
    highest_term: Term,
    /// Its commit index in the current incarnation (it is volatile state:
    /// a restarted node starts again from 0 and learns it anew).
    commit_index: Index,
    /// The last index it applied in the current incarnation.
    applied: Index,
    /// A copy of its log as of its previous step.
    log: Vec<Entry>,
    /// The term it leads in, if it is leader.
    leading: Option<Term>,
    /// While leading: how many entries of `Checker::committed` have been
    /// checked against its log for Leader Completeness.
    completeness_checked: usize,
}

/// The global records the properties are checked against.
pub struct Checker {
    /// Election Safety: the leader of each term, once seen.
    leader_of_term: BTreeMap<Term, NodeId>,
    /// Every vote granted on the wire: `(voter, term) -> candidate`.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// Log Matching: every `(index, term)` ever seen in a log.
    seen: BTreeMap<(Index, Term), SeenEntry>,
    /// The committed log as far as any node has known it; entry `i` is at
    /// position `i - 1`.
    committed: Vec<CommittedEntry>,
    /// State Machine Safety: the entry applied at each index, by whoever
    /// applied it first.
    applied: Vec<(Entry, NodeId)>,
    nodes: Vec<NodeRecord>,
    /// Whether a restarted node's term is compared with the term it had
    /// before the crash. Only a test that wants to watch what a lost term
    /// leads to turns this off.
    pub check_term_across_restarts: bool,
}

fn fail<T>(kind: FailureKind, now: u64, message: String) -> Result<T, Failure> {
    Err(Failure::new(kind, now, message))
}

impl Checker {
    pub fn new(ids: &[NodeId]) -> Checker {
        Checker {
            leader_of_term: BTreeMap::new(),
            votes: BTreeMap::new(),
            seen: BTreeMap::new(),
            committed: Vec::new(),
            applied: Vec::new(),
            nodes: ids
                .iter()
                .map(|id| NodeRecord {
                    id: id.clone(),
                    highest_term: 0,
                    commit_index: 0,
                    applied: 0,
                    log: Vec::new(),
                    leading: None,
                    completeness_checked: 0,
                })
                .collect(),
            check_term_across_restarts: true,
        }
    }

    /// The committed log as the checker knows it.
    pub fn committed_entries(&self) -> impl Iterator<Item = &Entry> {
        self.committed.iter().map(|c| &c.entry)
    }

    /// The leader of each term seen so far.
    pub fn leaders(&self) -> &BTreeMap<Term, NodeId> {
        &self.leader_of_term
    }

    /// A node crashed: it leads nothing any more.
    pub fn on_crash(&mut self, node: usize) {
        self.nodes[node].leading = None;
    }

    /// A node restarted from its disk. Its volatile state starts over; its
    /// persistent state (term, vote, log) must be what it had promised.
    pub fn on_restart(&mut self, node: usize, raft: &Raft, now: u64) -> Result<(), Failure> {
        let record = &mut self.nodes[node];
        record.commit_index = 0;
        record.applied = 0;
        record.leading = None;
        if !self.check_term_across_restarts {
            record.highest_term = raft.current_term();
        }
        if raft.current_term() < record.highest_term {
            return fail(
                FailureKind::TermDecreased,
                now,
                format!(
                    "{} restarted in term {} but had reached term {} before it crashed: \
                     its term was not on disk when it acted on it",
                    record.id,
                    raft.current_term(),
                    record.highest_term
                ),
            );
        }
        self.after_step(node, raft, now)
    }

    /// Votes are checked on the wire: a node may grant its vote in a term
    /// to one candidate only, even if it crashes and restarts in between.
    pub fn on_messages_sent(&mut self, messages: &[Message], now: u64) -> Result<(), Failure> {
        for msg in messages {
            let MessageBody::RequestVoteResponse { vote_granted: true } = msg.body else {
                continue;
            };
            match self.votes.entry((msg.from.clone(), msg.term)) {
                MapEntry::Vacant(slot) => {
                    slot.insert(msg.to.clone());
                }
                MapEntry::Occupied(slot) if *slot.get() != msg.to => {
                    return fail(
                        FailureKind::DoubleVote,
                        now,
                        format!(
                            "{} granted its vote in term {} to {} and then to {} \
                             (a vote must be on disk before it is sent)",
                            msg.from,
                            msg.term,
                            slot.get(),
                            msg.to
                        ),
                    );
                }
                MapEntry::Occupied(_) => {}
            }
        }
        Ok(())
    }

    /// State Machine Safety on what was actually applied: every node applies
    /// the same entry at each index, in order.
    pub fn on_applied(&mut self, node: usize, entries: &[Entry], now: u64) -> Result<(), Failure> {
        let record = &mut self.nodes[node];
        for entry in entries {
            if entry.index != record.applied + 1 {
                return fail(
                    FailureKind::Driver,
                    now,
                    format!(
                        "{} was handed entry {} to apply after entry {}",
                        record.id, entry.index, record.applied
                    ),
                );
            }
            record.applied = entry.index;
            match self.applied.get((entry.index - 1) as usize) {
                Some((first, first_node)) if first != entry => {
                    return fail(
                        FailureKind::StateMachineSafety,
                        now,
                        format!(
                            "{} applied {} but {} had applied {} at that index",
                            record.id,
                            show(entry),
                            first_node,
                            show(first)
                        ),
                    );
                }
                Some(_) => {}
                None => self.applied.push((entry.clone(), record.id.clone())),
            }
        }
        Ok(())
    }

    /// A read may only be answered once the state machine has reached the
    /// read's index; the core promises that after the driver applies
    /// `Ready::committed`.
    pub fn on_read_answered(
        &self,
        node: usize,
        read_index: Index,
        applied: Index,
        now: u64,
    ) -> Result<(), Failure> {
        if read_index > applied {
            return fail(
                FailureKind::ReadAheadOfApplied,
                now,
                format!(
                    "{} answered a read with index {read_index} with only {applied} entries applied",
                    self.nodes[node].id
                ),
            );
        }
        Ok(())
    }

    /// Checks everything that can change when `node` takes a step.
    pub fn after_step(&mut self, node: usize, raft: &Raft, now: u64) -> Result<(), Failure> {
        self.check_term_and_commit(node, raft, now)?;
        self.check_log_changes(node, raft, now)?;
        self.check_election_safety(node, raft, now)?;
        let newly_committed = self.record_commits(node, raft, now)?;
        if newly_committed || self.nodes[node].leading.is_some() {
            self.check_leader_completeness(now)?;
        }
        Ok(())
    }

    /// Terms never go down; a running node's commit index never goes down
    /// and stays within its log.
    fn check_term_and_commit(&mut self, node: usize, raft: &Raft, now: u64) -> Result<(), Failure> {
        let record = &mut self.nodes[node];
        let term = raft.current_term();
        if term < record.highest_term {
            return fail(
                FailureKind::TermDecreased,
                now,
                format!(
                    "{}'s term went down from {} to {term}",
                    record.id, record.highest_term
                ),
            );
        }
        record.highest_term = term;
        let commit = raft.commit_index();
        if commit < record.commit_index {
            return fail(
                FailureKind::CommitDecreased,
                now,
                format!(
                    "{}'s commit index went down from {} to {commit}",
                    record.id, record.commit_index
                ),
            );
        }
        if commit > raft.log().last_index() || raft.last_applied() > commit {
            return fail(
                FailureKind::Driver,
                now,
                format!(
                    "{} has last_applied {} / commit_index {commit} / last log index {}",
                    record.id,
                    raft.last_applied(),
                    raft.log().last_index()
                ),
            );
        }
        Ok(())
    }

    /// Compares the node's log with its copy from the previous step.
    /// Leader Append-Only: a leader only ever adds at the end. No node may
    /// change an entry it knows is committed. Log Matching: every new entry
    /// agrees with every other log that has the same index and term.
    fn check_log_changes(&mut self, node: usize, raft: &Raft, now: u64) -> Result<(), Failure> {
        let record = &mut self.nodes[node];
        let log = raft.log().entries_from(1, usize::MAX);
        let unchanged = record
            .log
            .iter()
            .zip(log)
            .take_while(|(before, after)| before == after)
            .count();
        if unchanged == record.log.len() && unchanged == log.len() {
            return Ok(()); // nothing changed
        }
        let still_leading =
            record.leading == Some(raft.current_term()) && raft.role() == RoleKind::Leader;
        if still_leading && unchanged < record.log.len() {
            return fail(
                FailureKind::LeaderAppendOnly,
                now,
                format!(
                    "leader {} of term {} replaced {} with {}",
                    record.id,
                    raft.current_term(),
                    show(&record.log[unchanged]),
                    log.get(unchanged).map_or("nothing".to_string(), show)
                ),
            );
        }
        if (unchanged as Index) < record.commit_index {
            return fail(
                FailureKind::StateMachineSafety,
                now,
                format!(
                    "{} replaced entry {} after it knew entries up to {} were committed",
                    record.id,
                    show(&record.log[unchanged]),
                    record.commit_index
                ),
            );
        }
        for position in unchanged..log.len() {
            let entry = &log[position];
            let prev_term = if position == 0 {
                0
            } else {
                log[position - 1].term
            };
            if entry.term < prev_term {
                return fail(
                    FailureKind::LogMatching,
                    now,
                    format!(
                        "{}'s log goes down in term: {} follows an entry of term {prev_term}",
                        record.id,
                        show(entry)
                    ),
                );
            }
            match self.seen.entry((entry.index, entry.term)) {
                MapEntry::Vacant(slot) => {
                    slot.insert(SeenEntry {
                        data: entry.data.clone(),
                        prev_term,
                        node: record.id.clone(),
                    });
                }
                MapEntry::Occupied(slot) => {
                    let first = slot.get();
                    if first.data != entry.data || first.prev_term != prev_term {
                        return fail(
                            FailureKind::LogMatching,
                            now,
                            format!(
                                "{} holds {} after an entry of term {prev_term}, but {} held index {} \
                                 term {} as {:?} after an entry of term {}",
                                record.id,
                                show(entry),
                                first.node,
                                entry.index,
                                entry.term,
                                first.data,
                                first.prev_term
                            ),
                        );
                    }
                }
            }
        }
        record.log.truncate(unchanged);
        record.log.extend_from_slice(&log[unchanged..]);
        Ok(())
    }

    /// Election Safety: at most one leader per term, ever.
    fn check_election_safety(&mut self, node: usize, raft: &Raft, now: u64) -> Result<(), Failure> {
        let record = &mut self.nodes[node];
        if raft.role() != RoleKind::Leader {
            record.leading = None;
            return Ok(());
        }
        let term = raft.current_term();
        match self.leader_of_term.entry(term) {
            MapEntry::Vacant(slot) => {
                slot.insert(record.id.clone());
            }
            MapEntry::Occupied(slot) if *slot.get() != record.id => {
                return fail(
                    FailureKind::ElectionSafety,
                    now,
                    format!(
                        "{} and {} were both leader in term {term}",
                        slot.get(),
                        record.id
                    ),
                );
            }
            MapEntry::Occupied(_) => {}
        }
        if record.leading != Some(term) {
            record.leading = Some(term);
            record.completeness_checked = 0;
        }
        Ok(())
    }

    /// Records entries that became committed on this node, and checks they
    /// agree with what other nodes committed at those indexes. Returns true
    /// if the global committed log grew or changed its terms.
    fn record_commits(&mut self, node: usize, raft: &Raft, now: u64) -> Result<bool, Failure> {
        let record = &mut self.nodes[node];
        let commit = raft.commit_index();
        let term = raft.current_term();
        let mut changed = false;
        let mut lowered_at = usize::MAX;
        for index in record.commit_index + 1..=commit {
            let entry = &record.log[(index - 1) as usize];
            match self.committed.get_mut((index - 1) as usize) {
                Some(known) if known.entry != *entry => {
                    return fail(
                        FailureKind::StateMachineSafety,
                        now,
                        format!(
                            "{} committed {} in term {term}, but {} had committed {} in term {}",
                            record.id,
                            show(entry),
                            known.node,
                            show(&known.entry),
                            known.term
                        ),
                    );
                }
                Some(known) => {
                    if term < known.term {
                        // Committed earlier than we knew: leaders already
                        // checked against the later term must look again.
                        known.term = term;
                        known.node = record.id.clone();
                        changed = true;
                        lowered_at = lowered_at.min((index - 1) as usize);
                    }
                }
                None => {
                    self.committed.push(CommittedEntry {
                        entry: entry.clone(),
                        term,
                        node: record.id.clone(),
                    });
                    changed = true;
                }
            }
        }
        self.nodes[node].commit_index = commit;
        for other in &mut self.nodes {
            other.completeness_checked = other.completeness_checked.min(lowered_at);
        }
        Ok(changed)
    }

    /// Leader Completeness: every entry committed in a term before a
    /// leader's term is in that leader's log. Checked incrementally: each
    /// leader remembers how far along the committed log it has been checked,
    /// and a leader's log only grows (Leader Append-Only, checked above).
    fn check_leader_completeness(&mut self, now: u64) -> Result<(), Failure> {
        for record in &mut self.nodes {
            let Some(leader_term) = record.leading else {
                continue;
            };
            while let Some(known) = self.committed.get(record.completeness_checked) {
                if known.term < leader_term
                    && record.log.get(record.completeness_checked) != Some(&known.entry)
                {
                    let has = record
                        .log
                        .get(record.completeness_checked)
                        .map_or("nothing".to_string(), show);
                    return fail(
                        FailureKind::LeaderCompleteness,
                        now,
                        format!(
                            "{} leads term {leader_term} but lacks {}, which {} committed in term {} \
                             ({} has {has} there)",
                            record.id,
                            show(&known.entry),
                            known.node,
                            known.term,
                            record.id
                        ),
                    );
                }
                record.completeness_checked += 1;
            }
        }
        Ok(())
    }
}
