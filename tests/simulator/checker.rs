//! Raft's safety properties, checked after every step of the simulation.
//!
//! Figure 3 of the paper lists the properties Raft guarantees at all times:
//! Election Safety, Leader Append-Only, Log Matching, Leader Completeness
//! and State Machine Safety. We add the facts they rest on: terms never go
//! down (not even across a crash, since `current_term` is persistent), a
//! running node's commit index never goes down, a node grants at most one
//! vote per term and data directory (across crashes, checked on the votes
//! actually *sent*), and
//! a read is never answered before the state machine has reached its index.
//!
//! Only one node changes in a step, so each check looks at that node and at
//! the global records the checker keeps. Everything is incremental: a
//! node's log is compared with the copy taken at its previous step, and only
//! the entries that changed are examined, so checking after every step stays
//! cheap.
//!
//! Snapshots (§7) take entries out of the logs. A log is then a snapshot
//! base (the index and term of its last compacted entry) and the entries
//! after it, and the log properties compare only what each log still holds.
//! The compacted part is judged against the *applied history* (the entry
//! first applied at each index, which State Machine Safety keeps equal for
//! every node): a snapshot, taken or installed, must have the term, the
//! membership and the state machine's state that the history gives at its
//! index, and a node's state machine must always equal the history's state
//! at the index it has applied.

use super::{Failure, FailureKind};
use raft::core::{Raft, RoleKind};
use raft::message::{
    Entry, EntryData, Incarnation, Index, Membership, Message, MessageBody, NodeId, Snapshot, Term,
};
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
    /// The last index it applied in the current incarnation (a snapshot
    /// counts as applying everything it covers).
    applied: Index,
    /// Its log as of its previous step: the snapshot base (the last
    /// compacted index and its term; `(0, 0)` if none) and a copy of the
    /// entries after it.
    base: (Index, Term),
    log: Vec<Entry>,
    /// The term it leads in, if it is leader.
    leading: Option<Term>,
    /// While leading: how many entries of `Checker::committed` have been
    /// checked against its log for Leader Completeness.
    completeness_checked: usize,
}

impl NodeRecord {
    fn new(id: NodeId) -> NodeRecord {
        NodeRecord {
            id,
            highest_term: 0,
            commit_index: 0,
            applied: 0,
            base: (0, 0),
            log: Vec::new(),
            leading: None,
            completeness_checked: 0,
        }
    }

    fn last_index(&self) -> Index {
        self.base.0 + self.log.len() as Index
    }

    /// The entry the copy holds at `index` (none at or below the base).
    fn get(&self, index: Index) -> Option<&Entry> {
        let position = index.checked_sub(self.base.0 + 1)?;
        self.log.get(position as usize)
    }

    /// The term the copy knows for `index`: the base's at the base, an
    /// entry's after it, nothing below it (compacted) or past the end.
    fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base.0 {
            Some(self.base.1)
        } else {
            self.get(index).map(|e| e.term)
        }
    }
}

/// The global records the properties are checked against.
pub struct Checker {
    /// Election Safety: the leader of each term, once seen.
    leader_of_term: BTreeMap<Term, NodeId>,
    /// Every vote granted on the wire: `(voter, term) -> candidate`.
    votes: BTreeMap<(NodeId, Incarnation, Term), NodeId>,
    /// Log Matching: every `(index, term)` ever seen in a log.
    seen: BTreeMap<(Index, Term), SeenEntry>,
    /// The committed log as far as any node has known it; entry `i` is at
    /// position `i - 1`.
    committed: Vec<CommittedEntry>,
    /// State Machine Safety: the entry applied at each index, by whoever
    /// applied it first. This is the applied history that compacted parts
    /// of logs are checked against.
    applied: Vec<(Entry, NodeId)>,
    /// For each index of `applied` (at position `index - 1`): the index of
    /// the latest command at or before it, and of the latest membership
    /// entry (0: none), so the state and membership a snapshot must hold
    /// are found at once.
    last_command: Vec<Index>,
    last_config: Vec<Index>,
    /// The membership before any membership entry: the nodes the cluster
    /// started with.
    initial_membership: Membership,
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
            last_command: Vec::new(),
            last_config: Vec::new(),
            initial_membership: Membership {
                voters: ids.iter().map(|id| (id.clone(), String::new())).collect(),
                learners: Default::default(),
                incarnations: Default::default(),
            },
            nodes: ids.iter().cloned().map(NodeRecord::new).collect(),
            check_term_across_restarts: true,
        }
    }

    /// A machine joins the simulation (a new server for a membership
    /// change); its index is the next one.
    pub fn add_node(&mut self, id: NodeId) {
        self.nodes.push(NodeRecord::new(id));
    }

    /// The committed log as the checker knows it.
    pub fn committed_entries(&self) -> impl Iterator<Item = &Entry> {
        self.committed.iter().map(|c| &c.entry)
    }

    /// The committed entry at `index`, as far as any node has known it.
    pub fn committed_entry(&self, index: Index) -> Option<&Entry> {
        let position = index.checked_sub(1)?;
        self.committed.get(position as usize).map(|c| &c.entry)
    }

    /// The leader of each term seen so far.
    pub fn leaders(&self) -> &BTreeMap<Term, NodeId> {
        &self.leader_of_term
    }

    /// A node crashed: it leads nothing any more.
    pub fn on_crash(&mut self, node: usize) {
        self.nodes[node].leading = None;
    }

    /// A node lost its disk (or the end of its log): what the checker knew
    /// of its term, log and commit index is forgotten, since the node
    /// starts again from what is left. The properties that do not rest on
    /// that node's disk keep being checked: Election Safety, Leader
    /// Completeness, State Machine Safety, Log Matching, and one vote per
    /// term per data directory.
    pub fn on_disk_lost(&mut self, node: usize) {
        let id = self.nodes[node].id.clone();
        self.nodes[node] = NodeRecord::new(id);
    }

    /// A node restarted from its disk. Its volatile state starts over; its
    /// persistent state (term, vote, log) must be what it had promised.
    pub fn on_restart(&mut self, node: usize, raft: &Raft, now: u64) -> Result<(), Failure> {
        let record = &mut self.nodes[node];
        record.commit_index = 0;
        // A node restored from a snapshot has applied what it covers (its
        // state machine was loaded from it).
        record.applied = raft.last_applied();
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
            let MessageBody::RequestVoteResponse {
                vote_granted: true,
                incarnation,
            } = msg.body
            else {
                continue;
            };
            // Per data directory: a node that lost its disk lost the record
            // of its votes, and may grant another in the same term. That
            // second vote must not count (see the election-safety check).
            match self.votes.entry((msg.from.clone(), incarnation, msg.term)) {
                MapEntry::Vacant(slot) => {
                    slot.insert(msg.to.clone());
                }
                MapEntry::Occupied(slot) if *slot.get() != msg.to => {
                    return fail(
                        FailureKind::DoubleVote,
                        now,
                        format!(
                            "{} (incarnation {incarnation}) granted its vote in term {} to {} \
                             and then to {} (a vote must be on disk before it is sent)",
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
                None => {
                    let previous = self.last_command.last().copied().unwrap_or(0);
                    let previous_config = self.last_config.last().copied().unwrap_or(0);
                    let (command, config) = match &entry.data {
                        EntryData::Command(_) => (entry.index, previous_config),
                        EntryData::Config(_) => (previous, entry.index),
                        EntryData::Noop => (previous, previous_config),
                    };
                    self.last_command.push(command);
                    self.last_config.push(config);
                    self.applied.push((entry.clone(), record.id.clone()));
                }
            }
        }
        Ok(())
    }

    /// The state machine's state (the register's value) after the history's
    /// entries up to `index`; `None` if the history does not reach it.
    fn value_at(&self, index: Index) -> Option<&str> {
        if index == 0 {
            return Some("");
        }
        let command = *self.last_command.get((index - 1) as usize)?;
        if command == 0 {
            return Some("");
        }
        match &self.applied[(command - 1) as usize].0.data {
            EntryData::Command(value) => Some(value),
            EntryData::Noop | EntryData::Config(_) => None,
        }
    }

    /// The membership in force after the history's entries up to `index`.
    fn membership_at(&self, index: Index) -> Option<&Membership> {
        if index == 0 {
            return Some(&self.initial_membership);
        }
        match *self.last_config.get((index - 1) as usize)? {
            0 => Some(&self.initial_membership),
            config => match &self.applied[(config - 1) as usize].0.data {
                EntryData::Config(membership) => Some(membership),
                EntryData::Noop | EntryData::Command(_) => None,
            },
        }
    }

    /// A snapshot was taken by `node` (`installed` false) or installed
    /// from the leader (`installed` true). What it replaces must be what
    /// the applied history holds: the term of its last entry, the
    /// membership and the state machine's state as of that entry. (Every
    /// snapshot's index was applied somewhere first: a node compacts only
    /// what it applied, and a leader sends only its own snapshots.)
    pub fn on_snapshot(
        &mut self,
        node: usize,
        snapshot: &Snapshot,
        installed: bool,
        now: u64,
    ) -> Result<(), Failure> {
        let index = snapshot.last_included_index;
        let id = &self.nodes[node].id;
        let verb = if installed { "installed" } else { "took" };
        let Some((entry, first)) = index
            .checked_sub(1)
            .and_then(|i| self.applied.get(i as usize))
        else {
            return fail(
                FailureKind::Driver,
                now,
                format!(
                    "{id} {verb} a snapshot up to {index}, but only {} entries were ever applied",
                    self.applied.len()
                ),
            );
        };
        if entry.term != snapshot.last_included_term {
            return fail(
                FailureKind::StateMachineSafety,
                now,
                format!(
                    "{id} {verb} a snapshot up to {index}@t{}, but {first} applied {} there",
                    snapshot.last_included_term,
                    show(entry)
                ),
            );
        }
        if self.value_at(index) != Some(snapshot.data.as_str()) {
            return fail(
                FailureKind::StateMachineSafety,
                now,
                format!(
                    "{id} {verb} a snapshot up to {index} whose state is {}, but the entries \
                     applied up to {index} give {}",
                    short(&snapshot.data),
                    self.value_at(index).map_or("nothing".to_string(), short)
                ),
            );
        }
        if self.membership_at(index) != Some(&snapshot.membership) {
            return fail(
                FailureKind::StateMachineSafety,
                now,
                format!(
                    "{id} {verb} a snapshot up to {index} with membership {:?}, but the entries \
                     applied up to {index} give {:?}",
                    snapshot.membership,
                    self.membership_at(index)
                ),
            );
        }
        let record = &mut self.nodes[node];
        if installed {
            if index < record.applied {
                return fail(
                    FailureKind::Driver,
                    now,
                    format!(
                        "{} installed a snapshot up to {index} after applying up to {}",
                        record.id, record.applied
                    ),
                );
            }
            record.applied = index;
        }
        Ok(())
    }

    /// The node's state machine, having applied up to `applied`, must hold
    /// what the history's entries up to there give: this checks that
    /// snapshots restore the state they were taken from, and that a
    /// restarted node rebuilds it.
    pub fn check_state(
        &self,
        node: usize,
        applied: Index,
        value: &str,
        now: u64,
    ) -> Result<(), Failure> {
        let expected = self.value_at(applied);
        if expected != Some(value) {
            return fail(
                FailureKind::StateMachineSafety,
                now,
                format!(
                    "{}'s state machine holds {} after applying up to {applied}, but the \
                     entries applied up to there give {}",
                    self.nodes[node].id,
                    short(value),
                    expected.map_or("nothing (no node applied that far)".to_string(), short)
                ),
            );
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

    /// Compares the node's log with its copy from the previous step, over
    /// the indexes both know: a snapshot base knows the term at its index,
    /// and entries below a base are compacted and compared no more.
    /// Leader Append-Only: a leader only ever adds at the end (compacting
    /// its own applied entries is not a change). No node may change an
    /// entry it knows is committed. Log Matching: every entry that is new,
    /// or that now follows a different entry (or snapshot base) than before,
    /// agrees with every other log that has the same index and term.
    fn check_log_changes(&mut self, node: usize, raft: &Raft, now: u64) -> Result<(), Failure> {
        let record = &mut self.nodes[node];
        let log = raft.log();
        let base_index = log.snapshot_index();
        let base = (base_index, log.term_at(base_index).unwrap_or_default());
        let held = log.entries_from(base_index + 1, usize::MAX);
        let last_index = base_index + held.len() as Index;
        if base_index < record.base.0 {
            return fail(
                FailureKind::Driver,
                now,
                format!(
                    "{}'s snapshot went back from index {} to {base_index}",
                    record.id, record.base.0
                ),
            );
        }
        // The first index at which the log differs from the copy: a new
        // base whose term the copy knew otherwise (InstallSnapshot replacing
        // a conflicting entry), an entry that differs or is new, or the end
        // of a log that got shorter.
        let mut first_diff = record
            .term_at(base_index)
            .is_some_and(|term| term != base.1)
            .then_some(base_index);
        if first_diff.is_none() {
            first_diff = held
                .iter()
                .find(|entry| record.get(entry.index) != Some(*entry))
                .map(|entry| entry.index);
        }
        if last_index < record.last_index() {
            first_diff = Some(first_diff.map_or(last_index + 1, |i| i.min(last_index + 1)));
        }
        let Some(first_diff) = first_diff else {
            if base != record.base {
                compact_copy(record, base);
            }
            return Ok(()); // nothing changed but (perhaps) compaction
        };
        if first_diff <= record.last_index() {
            // Something the node held before was replaced or removed.
            let still_leading =
                record.leading == Some(raft.current_term()) && raft.role() == RoleKind::Leader;
            let before = record.get(first_diff).map_or(
                format!("the snapshot base {}@t{}", record.base.0, record.base.1),
                show,
            );
            let after = log.get(first_diff).map_or(
                if first_diff == base_index {
                    format!("a snapshot base {}@t{}", base.0, base.1)
                } else {
                    "nothing".to_string()
                },
                show,
            );
            if still_leading {
                return fail(
                    FailureKind::LeaderAppendOnly,
                    now,
                    format!(
                        "leader {} of term {} replaced {before} with {after}",
                        record.id,
                        raft.current_term()
                    ),
                );
            }
            if first_diff <= record.commit_index {
                return fail(
                    FailureKind::StateMachineSafety,
                    now,
                    format!(
                        "{} replaced {before} with {after} after it knew entries up to {} were committed",
                        record.id, record.commit_index
                    ),
                );
            }
        }
        let recheck_from = first_diff.max(base_index + 1);
        for entry in log.slice(recheck_from, last_index) {
            let prev_term = if entry.index == base_index + 1 {
                base.1
            } else {
                log.term_at(entry.index - 1).unwrap_or_default()
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
        compact_copy(record, base);
        let keep = first_diff.saturating_sub(base_index + 1) as usize;
        record.log.truncate(keep);
        record.log.extend_from_slice(&held[keep.min(held.len())..]);
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
            // A compacted entry is the history's: the node's snapshot was
            // checked against it when it was taken or installed.
            let entry = match record.get(index) {
                Some(entry) => entry,
                None => match index
                    .checked_sub(1)
                    .and_then(|i| self.applied.get(i as usize))
                {
                    Some((entry, _)) if index <= record.base.0 => entry,
                    _ => {
                        return fail(
                            FailureKind::Driver,
                            now,
                            format!(
                                "{} committed index {index}, which neither its log nor the \
                                 applied history holds",
                                record.id
                            ),
                        )
                    }
                },
            };
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
                let index = known.entry.index;
                // Below its snapshot base a leader holds no entries; its
                // snapshot was checked against the applied history.
                let holds = match index.cmp(&record.base.0) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => record.base.1 == known.entry.term,
                    std::cmp::Ordering::Greater => record.get(index) == Some(&known.entry),
                };
                if known.term < leader_term && !holds {
                    let has = match record.get(index) {
                        Some(entry) => show(entry),
                        None if index == record.base.0 => {
                            format!("a snapshot base of term {}", record.base.1)
                        }
                        None => "nothing".to_string(),
                    };
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

/// Moves the copy of a node's log to a new snapshot base: the entries the
/// base now covers leave the copy.
fn compact_copy(record: &mut NodeRecord, base: (Index, Term)) {
    if base.0 > record.base.0 {
        let covered = (base.0 - record.base.0).min(record.log.len() as Index);
        record.log.drain(..covered as usize);
    }
    record.base = base;
}

/// A value for a message: long ones (the big values some scenarios write)
/// shortened.
fn short(value: &str) -> String {
    if value.len() <= 40 {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(32).collect();
        format!("{head:?}... ({} bytes)", value.len())
    }
}
