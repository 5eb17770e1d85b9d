//! Helpers shared by the single-core rule tests (`tests/paper.rs` and
//! `tests/extensions.rs`): building a node, driving it as a driver would, and
//! writing the messages of its peers.
//!
//! The node under test is always `n1`; its peers `n2`, `n3`, ... exist only as
//! the messages a test writes on their behalf.

// Each test crate that includes this module uses only some of the helpers.
#![allow(dead_code)]

use raft::core::{BugSwitches, Config, Raft, Ready, RoleKind};
use raft::message::{
    Conflict, Entry, EntryData, HardState, Index, Message, MessageBody, NodeId, Term,
};

// ===========================================================================
// Helpers: building a node, driving it, writing messages for its peers
// ===========================================================================

/// Every node in these tests times out after exactly this many ticks, so a
/// test can count to the moment an election starts. (One test checks the
/// randomised range on its own.)
pub const ELECTION_TICKS: u64 = 10;
/// A leader sends a heartbeat after this many idle ticks.
pub const HEARTBEAT_TICKS: u64 = 3;
/// The seed of every node's random number generator, so that every run of a
/// test is the same run.
pub const SEED: u64 = 7;

/// The name of node `n`. The node under test is always `n1`.
pub fn id(n: u8) -> NodeId {
    NodeId::new(format!("n{n}"))
}

/// Entries with the given terms, numbered from `first`. Each carries a
/// command naming its term and index, so entries of different terms differ.
pub fn entries(first: Index, terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .zip(first..)
        .map(|(&term, index)| Entry {
            term,
            index,
            data: EntryData::Command(format!("{term}.{index}")),
        })
        .collect()
}

/// The no-op entry a new leader appends (§8).
pub fn noop(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        data: EntryData::Noop,
    }
}

/// The configuration of node `n1` in the cluster `n1..=n{size}`.
pub fn config(size: u8, bugs: BugSwitches) -> Config {
    let mut config = Config::new(id(1), (1..=size).map(id).collect());
    config.election_timeout_ticks = (ELECTION_TICKS, ELECTION_TICKS);
    config.heartbeat_ticks = HEARTBEAT_TICKS;
    // Figure 2 as the paper states it: the dissertation's extensions, which
    // change when elections start and which vote requests count, have their
    // own tests in tests/extensions.rs.
    config.pre_vote = false;
    config.check_quorum = false;
    config.bugs = bugs;
    config
}

/// Node `n1` of the cluster `n1..=n{size}`, started from stable storage that
/// holds `term` (with no vote) and a log whose entries have `log_terms`.
pub fn node_with_bugs(size: u8, term: Term, log_terms: &[Term], bugs: BugSwitches) -> Raft {
    let hard_state = HardState {
        current_term: term,
        voted_for: None,
    };
    Raft::new(config(size, bugs), hard_state, entries(1, log_terms), SEED)
}

/// [`node_with_bugs`] with every rule intact.
pub fn node(size: u8, term: Term, log_terms: &[Term]) -> Raft {
    node_with_bugs(size, term, log_terms, BugSwitches::default())
}

/// The terms of the node's log, index 1 first.
pub fn log_terms(r: &Raft) -> Vec<Term> {
    (1..=r.log().last_index())
        .map(|index| r.log().term_at(index).unwrap())
        .collect()
}

pub fn ticks(r: &mut Raft, n: u64) {
    for _ in 0..n {
        r.tick();
    }
}

/// Does what a driver does with a `Ready`: makes it durable, tells the core
/// so, and (here) returns it for the test to look at.
///
/// The `seq` numbering of AppendEntries is cleared, so that tests can
/// compare messages with `append(...)`; the tests about it use
/// [`persist_numbered`].
pub fn persist(r: &mut Raft) -> Ready {
    let mut ready = persist_numbered(r);
    for msg in &mut ready.messages {
        if let MessageBody::AppendEntries { seq, .. } = &mut msg.body {
            *seq = 0;
        }
    }
    ready
}

/// Like [`persist`], keeping each AppendEntries' `seq`.
pub fn persist_numbered(r: &mut Raft) -> Ready {
    let ready = r.ready();
    r.advance(&ready);
    ready
}

/// Lets the node's election timer run out; returns the candidate's Ready.
pub fn campaign(r: &mut Raft) -> Ready {
    ticks(r, ELECTION_TICKS);
    assert_eq!(r.role(), RoleKind::Candidate);
    persist(r)
}

/// Makes the node a candidate, then grants it votes from `n2`, `n3`, ...
/// until it leads. Leaves the winning Ready untaken.
pub fn win_election(r: &mut Raft) {
    campaign(r);
    let term = r.current_term();
    let size = r.config().voters.len() as u8;
    for peer in 2..=size {
        if r.role() == RoleKind::Leader {
            break;
        }
        r.step(vote(peer, 1, term, true));
    }
    assert_eq!(r.role(), RoleKind::Leader);
}

/// [`win_election`], then persists and returns the new leader's Ready.
pub fn elect(r: &mut Raft) -> Ready {
    win_election(r);
    persist(r)
}

/// The followers `peers` report holding the leader's whole log.
pub fn acknowledge(r: &mut Raft, peers: &[u8]) -> Ready {
    let (term, last) = (r.current_term(), r.log().last_index());
    for &peer in peers {
        r.step(append_ok(peer, 1, term, last));
    }
    persist(r)
}

pub fn message(from: u8, to: u8, term: Term, body: MessageBody) -> Message {
    Message {
        from: id(from),
        to: id(to),
        term,
        body,
    }
}

pub fn request_vote(
    from: u8,
    to: u8,
    term: Term,
    last_log_index: Index,
    last_log_term: Term,
) -> Message {
    let body = MessageBody::RequestVote {
        last_log_index,
        last_log_term,
        leadership_transfer: false,
    };
    message(from, to, term, body)
}

pub fn vote(from: u8, to: u8, term: Term, vote_granted: bool) -> Message {
    message(
        from,
        to,
        term,
        MessageBody::RequestVoteResponse {
            vote_granted,
            incarnation: 0,
        },
    )
}

/// AppendEntries from `from` to `to` in `term`, its other arguments named
/// as in Figure 2:
/// `append(2, 1, 3).prev_log(2, 1).entries(list).leader_commit(0)`.
/// `leader_commit` comes last and finishes the message.
pub fn append(from: u8, to: u8, term: Term) -> AppendBuilder {
    AppendBuilder {
        from,
        to,
        term,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new(),
    }
}

/// An AppendEntries being written (see [`append`]).
pub struct AppendBuilder {
    from: u8,
    to: u8,
    term: Term,
    prev_log_index: Index,
    prev_log_term: Term,
    entries: Vec<Entry>,
}

impl AppendBuilder {
    /// prevLogIndex and prevLogTerm: the entry the new ones follow.
    pub fn prev_log(mut self, index: Index, term: Term) -> AppendBuilder {
        self.prev_log_index = index;
        self.prev_log_term = term;
        self
    }

    /// The entries to store (none for a heartbeat).
    pub fn entries(mut self, entries: Vec<Entry>) -> AppendBuilder {
        self.entries = entries;
        self
    }

    /// leaderCommit: the leader's commit index. Finishes the message.
    pub fn leader_commit(self, leader_commit: Index) -> Message {
        let body = MessageBody::AppendEntries {
            prev_log_index: self.prev_log_index,
            prev_log_term: self.prev_log_term,
            entries: self.entries,
            leader_commit,
            read_seq: 0,
            seq: 0,
        };
        message(self.from, self.to, self.term, body)
    }
}

/// AppendEntries with no entries, named as in [`append`]:
/// `heartbeat(2, 1, 3).prev_log(2, 1).leader_commit(2)`.
pub fn heartbeat(from: u8, to: u8, term: Term) -> AppendBuilder {
    append(from, to, term)
}

pub fn append_ok(from: u8, to: u8, term: Term, match_index: Index) -> Message {
    let body = MessageBody::AppendEntriesResponse {
        success: true,
        match_index,
        conflict: None,
        read_seq: 0,
        seq: 0,
        incarnation: 0,
    };
    message(from, to, term, body)
}

pub fn append_refused(from: u8, to: u8, term: Term, conflict: Option<Conflict>) -> Message {
    let body = MessageBody::AppendEntriesResponse {
        success: false,
        match_index: 0,
        conflict,
        read_seq: 0,
        seq: 0,
        incarnation: 0,
    };
    message(from, to, term, body)
}

pub fn conflict(term: Option<Term>, index: Index) -> Option<Conflict> {
    Some(Conflict { term, index })
}

/// The same AppendEntries (or answer) carrying `seq` as its read sequence.
pub fn with_read_seq(mut msg: Message, seq: u64) -> Message {
    match &mut msg.body {
        MessageBody::AppendEntries { read_seq, .. }
        | MessageBody::AppendEntriesResponse { read_seq, .. } => *read_seq = seq,
        other => panic!("no read_seq in {other:?}"),
    }
    msg
}

/// The messages in `ready` addressed to `peer`.
pub fn sent_to(ready: &Ready, peer: u8) -> Vec<&Message> {
    ready.messages.iter().filter(|m| m.to == id(peer)).collect()
}

pub fn match_index_of(r: &Raft, peer: u8) -> Index {
    r.match_indexes().expect("not a leader")[&id(peer)]
}
