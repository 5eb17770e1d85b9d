//! Messages a member could forge: a property test of the pure core.
//!
//! Every frame between nodes is authenticated, so only a holder of the
//! cluster key can speak; but a member with the key that is buggy or
//! compromised can send any well-formed message, including ones honest Raft
//! never produces (a second leader in a term, an entry that contradicts a
//! committed one, an acknowledgement of entries never sent). Raft is not
//! Byzantine-tolerant: such a member can break the cluster's guarantees.
//! What it must never do is crash a node, not even a debug build.
//!
//! The test runs a small cluster of cores in memory (ticks, proposals,
//! compaction, partitions, restarts), and now and then hands one node a
//! message "from" a member: any body of `MessageBody`, with terms and
//! indexes drawn around that node's own (its term, its snapshot, commit and
//! last index, and the highest index the transport lets through), entries
//! of any term and membership, snapshots whose content disagrees with their
//! header. It checks that nothing panics, and three things more, whatever
//! the nodes are told:
//!
//! - an entry it knows is committed never changes (State Machine Safety,
//!   from where the node stands);
//! - a leader does not give way to a message claiming to lead its own term
//!   (Election Safety: there is one leader per term, and it is this one);
//! - no two nodes answer each other without end.
//!
//! The targeted tests at the end replay, one message each, every path the
//! property test found.

use core_harness::{
    acknowledge, append, append_ok, append_refused, elect, entries, heartbeat, log_terms,
    match_index_of, message, node, persist, ticks, HEARTBEAT_TICKS,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use raft::core::{Claim, Config, Event, Raft, Ready, RoleKind, StepDownReason};
use raft::driver::{handle_ready, Host};
use raft::message::{
    Conflict, Entry, EntryData, HardState, Index, Membership, Message, MessageBody, NodeId,
    Snapshot, Term, MAX_INDEX, MAX_TERM,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod core_harness;

/// Nodes in the cluster; a forged message may also come from `n4`, who is
/// not a member (a leader's messages are taken from anyone: §4.1).
const SIZE: usize = 3;
/// The most messages delivered in one tick of a run. An honest cluster of
/// this size sends a few dozen at most; more means two nodes answer each
/// other without end (the third thing checked).
const MAX_DELIVERIES_PER_TICK: usize = 2_000;
/// Cases per run: about two seconds in a debug build.
const CASES: u32 = 512;
/// The seed of the property test, so that every run is the same run; set
/// `PROPTEST_RNG_SEED` (and `PROPTEST_CASES`) to explore others.
const SEED: u64 = 1;

fn id(n: usize) -> NodeId {
    NodeId::new(format!("n{}", n + 1))
}

// ===========================================================================
// A cluster in memory
// ===========================================================================

/// One node: its core, and the disk and state machine a driver gives it.
struct Machine {
    config: Config,
    raft: Raft,
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The stored log: the entries after the snapshot, in order.
    log: Vec<Entry>,
    /// Commands applied, in order (reset by a snapshot).
    applied: Vec<String>,
    outbox: Vec<Message>,
}

impl Host for Machine {
    type Error = String;

    fn raft(&mut self) -> &mut Raft {
        &mut self.raft
    }

    fn persist(&mut self, ready: &Ready) -> Result<(), String> {
        if let Some(snapshot) = &ready.snapshot {
            self.store_snapshot(snapshot.clone());
        }
        if let Some(hard_state) = &ready.hard_state {
            self.hard_state = hard_state.clone();
        }
        if let Some(first) = ready.entries.first() {
            self.log.retain(|e| e.index < first.index);
            self.log.extend_from_slice(&ready.entries);
        }
        Ok(())
    }

    fn send(&mut self, msg: Message) {
        self.outbox.push(msg);
    }

    fn apply(&mut self, ready: Ready) -> Result<(), String> {
        if let Some(snapshot) = &ready.snapshot {
            self.applied = vec![snapshot.data.clone()];
        }
        for entry in ready.committed {
            if let EntryData::Command(command) = entry.data {
                self.applied.push(command);
            }
        }
        Ok(())
    }
}

impl Machine {
    fn new(n: usize, pre_vote: bool) -> Machine {
        let mut config = Config::new(id(n), (0..SIZE).map(id).collect());
        config.incarnation = n as u64 + 1;
        config.election_timeout_ticks = (10, 20);
        config.heartbeat_ticks = 3;
        config.pre_vote = pre_vote;
        config.check_quorum = pre_vote;
        let raft = Raft::new(config.clone(), HardState::default(), vec![], n as u64);
        Machine {
            config,
            raft,
            hard_state: HardState::default(),
            snapshot: None,
            log: Vec::new(),
            applied: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Stores a snapshot as `Storage::save_snapshot` does: the log keeps the
    /// entries after it only if it holds the snapshot's last entry.
    fn store_snapshot(&mut self, snapshot: Snapshot) {
        let (index, term) = (snapshot.last_included_index, snapshot.last_included_term);
        let matches = self.log.iter().any(|e| e.index == index && e.term == term);
        if matches {
            self.log.retain(|e| e.index > index);
        } else {
            self.log.clear();
        }
        self.snapshot = Some(snapshot);
    }

    /// A crash and a restart from what is on disk.
    fn restart(&mut self, seed: u64) {
        self.outbox.clear();
        self.raft = Raft::restore(
            self.config.clone(),
            self.hard_state.clone(),
            self.snapshot.clone(),
            self.log.clone(),
            seed,
        );
        self.applied = self.snapshot.iter().map(|s| s.data.clone()).collect();
    }

    fn handle(&mut self) {
        handle_ready(self).expect("the in-memory disk does not fail");
    }
}

/// The cluster, its network, and what the checks remember.
struct Cluster {
    machines: Vec<Machine>,
    in_flight: VecDeque<Message>,
    /// Nodes cut off from everyone.
    isolated: BTreeSet<usize>,
    /// For each node, the term of each entry it has known as committed.
    committed: Vec<BTreeMap<Index, Term>>,
    restarts: u64,
    proposals: u64,
}

impl Cluster {
    fn new(pre_vote: bool) -> Cluster {
        Cluster {
            machines: (0..SIZE).map(|n| Machine::new(n, pre_vote)).collect(),
            in_flight: VecDeque::new(),
            isolated: BTreeSet::new(),
            committed: vec![BTreeMap::new(); SIZE],
            restarts: 0,
            proposals: 0,
        }
    }

    fn collect(&mut self, n: usize) {
        self.machines[n].handle();
        let out = std::mem::take(&mut self.machines[n].outbox);
        self.in_flight.extend(out);
    }

    fn tick(&mut self) {
        for n in 0..SIZE {
            self.machines[n].raft.tick();
            self.collect(n);
        }
        let mut delivered = 0;
        while let Some(msg) = self.in_flight.pop_front() {
            delivered += 1;
            assert!(
                delivered < MAX_DELIVERIES_PER_TICK,
                "over {MAX_DELIVERIES_PER_TICK} messages in one tick: an endless exchange"
            );
            let Some(to) = (0..SIZE).find(|&n| id(n) == msg.to) else {
                continue;
            };
            let from = (0..SIZE).find(|&n| id(n) == msg.from);
            if self.isolated.contains(&to) || from.is_some_and(|f| self.isolated.contains(&f)) {
                continue;
            }
            self.machines[to].raft.step(msg);
            self.collect(to);
        }
    }

    fn act(&mut self, action: &Action) {
        match action {
            Action::Run { ticks } => {
                for _ in 0..*ticks {
                    self.tick();
                }
            }
            Action::Propose { node } => {
                self.proposals += 1;
                let command = format!("w{}", self.proposals);
                if self.machines[*node].raft.propose(command).is_ok() {
                    self.collect(*node);
                }
            }
            Action::Compact { node } => {
                let m = &mut self.machines[*node];
                let index = m.raft.last_applied();
                let data = format!("{} commands", m.applied.len());
                if let Ok(snapshot) = m.raft.compact(index, data) {
                    m.store_snapshot(snapshot);
                }
            }
            Action::Isolate { node } => {
                self.isolated.insert(*node);
            }
            Action::Heal => self.isolated.clear(),
            Action::Restart { node } => {
                self.restarts += 1;
                self.machines[*node].restart(self.restarts);
                // A restarted node knows only its snapshot to be committed.
                self.committed[*node].clear();
                self.collect(*node);
            }
            Action::Forge {
                target,
                from,
                term,
                body,
            } => self.forge(*target, *from, *term, body),
        }
        self.check_committed_entries_stay();
    }

    /// Hands `target` a message made from `forged`, as if `from` had sent
    /// it; checks that a leader does not give way to a claim on its term.
    fn forge(&mut self, target: usize, from: usize, term: i64, forged: &Forged) {
        let raft = &self.machines[target].raft;
        let term = relative_term(raft.current_term(), term);
        let msg = Message {
            from: id(from),
            to: id(target),
            term,
            body: forged.body(raft, term),
        };
        if msg.check_numbers().is_err() {
            return; // the transport refuses it before the core sees it
        }
        let claims_to_lead = msg.body.is_from_leader() && msg.term == raft.current_term();
        let led = raft.role() == RoleKind::Leader;
        let term_before = raft.current_term();
        self.machines[target].raft.step(msg);
        self.collect(target);
        if led && claims_to_lead {
            let raft = &self.machines[target].raft;
            assert_eq!(
                (raft.role(), raft.current_term()),
                (RoleKind::Leader, term_before),
                "a leader gave way to a forged leader of its own term"
            );
        }
    }

    /// Every entry a node has known as committed since it started keeps its
    /// term for as long as the node's log holds it (a snapshot may replace
    /// it).
    fn check_committed_entries_stay(&mut self) {
        for n in 0..SIZE {
            let raft = &self.machines[n].raft;
            let log = raft.log();
            let known = &mut self.committed[n];
            known.retain(|&index, _| index > log.snapshot_index());
            for (&index, &term) in known.iter() {
                if let Some(now) = log.term_at(index) {
                    assert_eq!(
                        now,
                        term,
                        "{}: committed entry {index} changed term from {term} to {now}",
                        id(n)
                    );
                }
            }
            for index in log.first_index()..=raft.commit_index() {
                if let Some(term) = log.term_at(index) {
                    known.insert(index, term);
                }
            }
        }
    }
}

fn relative_term(base: Term, delta: i64) -> Term {
    (base as i64 + delta).clamp(0, MAX_TERM as i64) as Term
}

// ===========================================================================
// What the test draws
// ===========================================================================

/// One step of a case.
#[derive(Clone, Debug)]
enum Action {
    Run {
        ticks: u8,
    },
    Propose {
        node: usize,
    },
    Compact {
        node: usize,
    },
    Isolate {
        node: usize,
    },
    Heal,
    Restart {
        node: usize,
    },
    /// A message to `target` "from" node `from` (`n4` is no member), its
    /// term `term` away from the target's.
    Forge {
        target: usize,
        from: usize,
        term: i64,
        body: Forged,
    },
}

/// An index, named by where it sits in the target's log.
#[derive(Clone, Copy, Debug)]
struct At {
    base: Base,
    delta: i64,
}

#[derive(Clone, Copy, Debug)]
enum Base {
    Zero,
    Snapshot,
    Commit,
    Last,
    /// The highest index the transport lets through.
    Top,
}

impl At {
    fn resolve(self, raft: &Raft) -> Index {
        let base = match self.base {
            Base::Zero => 0,
            Base::Snapshot => raft.log().snapshot_index(),
            Base::Commit => raft.commit_index(),
            Base::Last => raft.log().last_index(),
            Base::Top => MAX_INDEX,
        };
        (base as i128 + self.delta as i128).clamp(0, MAX_INDEX as i128) as Index
    }
}

/// The body of a forged message, with indexes relative to the target's log
/// and terms relative to the message's term.
#[derive(Clone, Debug)]
enum Forged {
    Append {
        prev: At,
        prev_term: i64,
        /// Terms (relative) and what each entry carries.
        entries: Vec<(i64, Carries)>,
        commit: At,
        read_seq: u64,
        /// Whether to sort the terms into what the core's well-formedness
        /// check accepts (most cases), or leave them as drawn.
        tidy: bool,
    },
    AppendAnswer {
        success: bool,
        match_index: At,
        conflict: Option<(Option<i64>, At)>,
        read_seq: u64,
        seq: u64,
        incarnation: u64,
    },
    Vote {
        last: At,
        last_term: i64,
        transfer: bool,
    },
    VoteAnswer {
        granted: bool,
        incarnation: u64,
    },
    PreVote {
        last: At,
        last_term: i64,
    },
    PreVoteAnswer {
        granted: bool,
        incarnation: u64,
    },
    TimeoutNow,
    Snapshot {
        index: At,
        term: i64,
        /// The index written inside the snapshot, if not the header's.
        inner_index: Option<At>,
        members: Members,
        offset: u64,
        garbled: bool,
        done: bool,
    },
    SnapshotAnswer {
        index: At,
        next_offset: u64,
        done: bool,
        incarnation: u64,
    },
}

/// What a forged entry carries.
#[derive(Clone, Debug)]
enum Carries {
    Noop,
    Command,
    Config(Members),
}

/// A membership, as two sets of `n1..=n4` (bit i: node i).
#[derive(Clone, Copy, Debug)]
struct Members {
    voters: u8,
    learners: u8,
}

impl Members {
    fn membership(self) -> Membership {
        let pick = |bits: u8| {
            (0..=SIZE)
                .filter(|n| bits & (1 << n) != 0)
                .map(|n| (id(n), format!("127.0.0.1:{}", 8000 + n)))
                .collect()
        };
        Membership {
            voters: pick(self.voters),
            learners: pick(self.learners & !self.voters),
            incarnations: BTreeMap::new(),
        }
    }
}

impl Forged {
    fn body(&self, raft: &Raft, term: Term) -> MessageBody {
        let rel = |delta: i64| relative_term(term, delta);
        match self {
            Forged::Append {
                prev,
                prev_term,
                entries,
                commit,
                read_seq,
                tidy,
            } => {
                let prev_log_index = prev.resolve(raft);
                let mut prev_log_term = rel(*prev_term);
                let mut terms: Vec<Term> = entries.iter().map(|(t, _)| rel(*t)).collect();
                if *tidy {
                    prev_log_term = prev_log_term.min(term);
                    terms.sort_unstable();
                    for t in &mut terms {
                        *t = (*t).clamp(prev_log_term, term);
                    }
                }
                let entries = entries
                    .iter()
                    .zip(terms)
                    .zip(prev_log_index + 1..)
                    .map(|(((_, carries), term), index)| Entry {
                        term,
                        index,
                        data: match carries {
                            Carries::Noop => EntryData::Noop,
                            Carries::Command => EntryData::Command(format!("forged {index}")),
                            Carries::Config(members) => EntryData::Config(members.membership()),
                        },
                    })
                    .collect();
                MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit: commit.resolve(raft),
                    read_seq: *read_seq,
                    seq: 0,
                }
            }
            Forged::AppendAnswer {
                success,
                match_index,
                conflict,
                read_seq,
                seq,
                incarnation,
            } => MessageBody::AppendEntriesResponse {
                success: *success,
                match_index: match_index.resolve(raft),
                conflict: conflict.map(|(term, index)| Conflict {
                    term: term.map(rel),
                    index: index.resolve(raft),
                }),
                read_seq: *read_seq,
                seq: *seq,
                incarnation: *incarnation,
            },
            Forged::Vote {
                last,
                last_term,
                transfer,
            } => MessageBody::RequestVote {
                last_log_index: last.resolve(raft),
                last_log_term: rel(*last_term),
                leadership_transfer: *transfer,
            },
            Forged::VoteAnswer {
                granted,
                incarnation,
            } => MessageBody::RequestVoteResponse {
                vote_granted: *granted,
                incarnation: *incarnation,
            },
            Forged::PreVote { last, last_term } => MessageBody::PreVote {
                last_log_index: last.resolve(raft),
                last_log_term: rel(*last_term),
            },
            Forged::PreVoteAnswer {
                granted,
                incarnation,
            } => MessageBody::PreVoteResponse {
                vote_granted: *granted,
                incarnation: *incarnation,
            },
            Forged::TimeoutNow => MessageBody::TimeoutNow,
            Forged::Snapshot {
                index,
                term: snapshot_term,
                inner_index,
                members,
                offset,
                garbled,
                done,
            } => {
                let last_included_index = index.resolve(raft);
                let last_included_term = rel(*snapshot_term);
                let snapshot = Snapshot {
                    last_included_index: inner_index
                        .map_or(last_included_index, |at| at.resolve(raft)),
                    last_included_term,
                    membership: members.membership(),
                    data: "forged state".to_string(),
                };
                let json = serde_json::to_string(&snapshot).expect("a snapshot serialises");
                let data = if *garbled {
                    json[..json.len() / 2].to_string()
                } else {
                    json
                };
                MessageBody::InstallSnapshot {
                    last_included_index,
                    last_included_term,
                    offset: *offset,
                    data,
                    done: *done,
                }
            }
            Forged::SnapshotAnswer {
                index,
                next_offset,
                done,
                incarnation,
            } => MessageBody::InstallSnapshotResponse {
                last_included_index: index.resolve(raft),
                next_offset: *next_offset,
                done: *done,
                incarnation: *incarnation,
            },
        }
    }
}

fn any_node() -> impl Strategy<Value = usize> {
    0..SIZE
}

fn at() -> impl Strategy<Value = At> {
    let base = prop_oneof![
        Just(Base::Zero),
        Just(Base::Snapshot),
        Just(Base::Commit),
        Just(Base::Last),
        Just(Base::Top),
    ];
    (base, -3i64..=3).prop_map(|(base, delta)| At { base, delta })
}

/// A term relative to another: mostly at or a little below it.
fn term_delta() -> impl Strategy<Value = i64> {
    -3i64..=1
}

/// Incarnations: unknown (0), a member's real one (1 to 3), or another.
fn incarnation() -> impl Strategy<Value = u64> {
    0u64..=5
}

/// Sequence numbers: small ones, and the very largest.
fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, Just(u64::MAX)]
}

fn members() -> impl Strategy<Value = Members> {
    (0u8..16, 0u8..16).prop_map(|(voters, learners)| Members { voters, learners })
}

fn carries() -> impl Strategy<Value = Carries> {
    prop_oneof![
        3 => Just(Carries::Noop),
        3 => Just(Carries::Command),
        1 => members().prop_map(Carries::Config),
    ]
}

fn forged() -> impl Strategy<Value = Forged> {
    prop_oneof![
        6 => (
            at(),
            term_delta(),
            prop::collection::vec((term_delta(), carries()), 0..5),
            at(),
            seq(),
            prop::bool::weighted(0.9),
        )
            .prop_map(|(prev, prev_term, entries, commit, read_seq, tidy)| Forged::Append {
                prev,
                prev_term,
                entries,
                commit,
                read_seq,
                tidy,
            }),
        3 => (
            any::<bool>(),
            at(),
            prop::option::of((prop::option::of(term_delta()), at())),
            seq(),
            seq(),
            incarnation(),
        )
            .prop_map(|(success, match_index, conflict, read_seq, seq, incarnation)| {
                Forged::AppendAnswer {
                    success,
                    match_index,
                    conflict,
                    read_seq,
                    seq,
                    incarnation,
                }
            }),
        1 => (at(), term_delta(), any::<bool>()).prop_map(|(last, last_term, transfer)| {
            Forged::Vote {
                last,
                last_term,
                transfer,
            }
        }),
        1 => (any::<bool>(), incarnation())
            .prop_map(|(granted, incarnation)| Forged::VoteAnswer {
                granted,
                incarnation
            }),
        1 => (at(), term_delta()).prop_map(|(last, last_term)| Forged::PreVote { last, last_term }),
        1 => (any::<bool>(), incarnation())
            .prop_map(|(granted, incarnation)| Forged::PreVoteAnswer {
                granted,
                incarnation
            }),
        1 => Just(Forged::TimeoutNow),
        3 => (
            at(),
            term_delta(),
            prop::option::weighted(0.2, at()),
            members(),
            prop_oneof![4 => Just(0u64), 1 => 1u64..64],
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(index, term, inner_index, members, offset, garbled, done)| {
                Forged::Snapshot {
                    index,
                    term,
                    inner_index,
                    members,
                    offset,
                    garbled,
                    done,
                }
            }),
        2 => (at(), 0u64..400, any::<bool>(), incarnation()).prop_map(
            |(index, next_offset, done, incarnation)| Forged::SnapshotAnswer {
                index,
                next_offset,
                done,
                incarnation,
            }
        ),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (1u8..25).prop_map(|ticks| Action::Run { ticks }),
        4 => any_node().prop_map(|node| Action::Propose { node }),
        1 => any_node().prop_map(|node| Action::Compact { node }),
        1 => any_node().prop_map(|node| Action::Isolate { node }),
        1 => Just(Action::Heal),
        1 => any_node().prop_map(|node| Action::Restart { node }),
        6 => (any_node(), 0..=SIZE, -1i64..=1, forged()).prop_map(|(target, from, term, body)| {
            Action::Forge {
                target,
                from,
                term,
                body,
            }
        }),
    ]
}

/// The property test's settings: [`CASES`] cases from [`SEED`], unless
/// `PROPTEST_CASES` or `PROPTEST_RNG_SEED` say otherwise.
fn settings() -> ProptestConfig {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    ProptestConfig {
        cases: env("PROPTEST_CASES").map_or(CASES, |cases| cases as u32),
        rng_seed: RngSeed::Fixed(env("PROPTEST_RNG_SEED").unwrap_or(SEED)),
        // The seed replays a failure; no regression file is needed.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(settings())]

    /// No message a member could send makes a node panic, give up an entry
    /// it knows is committed, or give way to a second leader of its own
    /// term, nor sets two nodes answering each other without end.
    #[test]
    fn no_forged_message_crashes_a_node_or_changes_what_it_committed(
        pre_vote in any::<bool>(),
        actions in prop::collection::vec(action(), 1..60),
    ) {
        let mut cluster = Cluster::new(pre_vote);
        // Elect a leader and commit a little first, so that most messages
        // meet a node with a log, a commit index and a role to defend.
        cluster.act(&Action::Run { ticks: 30 });
        cluster.act(&Action::Propose { node: 0 });
        for action in &actions {
            cluster.act(action);
        }
    }
}

// ===========================================================================
// One message each: the paths the property test found
// ===========================================================================
//
// Node `n1` of `n1..=n3`, built with the helpers of `core_harness`. Each
// test hands it one message that honest Raft never sends, and checks that
// it is ignored (no rule acts on it, nothing is answered) and reported.

/// The one event a message that Raft rules out leaves.
fn ignored(from: u8, term: Term, claim: Claim) -> Vec<Event> {
    vec![Event::ImpossibleMessage {
        from: core_harness::id(from),
        term,
        claim,
    }]
}

/// A follower in term 1 with the log `[1, 1, 1]`, which knows that its
/// first two entries are committed (its leader `n2` said so).
fn follower_with_two_committed() -> Raft {
    let mut r = node(3, 1, &[1, 1, 1]);
    r.step(heartbeat(2, 1, 1).prev_log(3, 1).leader_commit(2));
    persist(&mut r);
    assert_eq!(
        (r.commit_index(), r.leader()),
        (2, Some(&core_harness::id(2)))
    );
    r
}

fn install_snapshot(from: u8, term: Term, index: Index, snapshot_term: Term) -> Message {
    let body = MessageBody::InstallSnapshot {
        last_included_index: index,
        last_included_term: snapshot_term,
        offset: 0,
        data: String::new(),
        done: true,
    };
    message(from, 1, term, body)
}

fn snapshot_answer(from: u8, term: Term, index: Index, next_offset: u64, done: bool) -> Message {
    let body = MessageBody::InstallSnapshotResponse {
        last_included_index: index,
        next_offset,
        done,
        incarnation: 0,
    };
    message(from, 1, term, body)
}

/// Figure 3, Election Safety. Found by the property test as a panic ("two
/// leaders in one term"). A leader receives AppendEntries of its own term
/// from `n2`: it keeps leading, keeps its log, and answers nothing.
#[test]
fn a_leader_ignores_append_entries_from_a_second_leader_of_its_term() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    let term = r.current_term();

    r.step(
        append(2, 1, term)
            .prev_log(1, 1)
            .entries(entries(2, &[term]))
            .leader_commit(2),
    );

    let ready = persist(&mut r);
    assert_eq!((r.role(), r.current_term()), (RoleKind::Leader, term));
    assert_eq!(log_terms(&r), vec![1, term], "its own no-op stays");
    assert_eq!(r.commit_index(), 0);
    assert!(ready.messages.is_empty());
    let claim = Claim::SecondLeader {
        term,
        leader: core_harness::id(1),
    };
    assert_eq!(ready.events, ignored(2, term, claim));
}

/// Figure 3, Election Safety. Found by the property test: a leader used to
/// step down to InstallSnapshot of its own term (reporting "saw a higher
/// term"). Now it keeps leading and answers nothing.
#[test]
fn a_leader_ignores_install_snapshot_from_a_second_leader_of_its_term() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    let term = r.current_term();

    r.step(install_snapshot(3, term, 5, term));

    let ready = persist(&mut r);
    assert_eq!((r.role(), r.current_term()), (RoleKind::Leader, term));
    assert!(ready.messages.is_empty() && ready.snapshot.is_none());
    let claim = Claim::SecondLeader {
        term,
        leader: core_harness::id(1),
    };
    assert_eq!(ready.events, ignored(3, term, claim));
}

/// Figure 3, Election Safety, from a follower: it follows `n2` in term 1,
/// so `n3` claiming to lead term 1 is ignored; it still follows `n2`.
#[test]
fn a_follower_ignores_a_second_leader_of_the_term_it_follows() {
    let mut r = follower_with_two_committed();

    r.step(
        append(3, 1, 1)
            .prev_log(3, 1)
            .entries(entries(4, &[1]))
            .leader_commit(3),
    );

    let ready = persist(&mut r);
    assert_eq!(r.leader(), Some(&core_harness::id(2)));
    assert_eq!((log_terms(&r), r.commit_index()), (vec![1, 1, 1], 2));
    assert!(ready.messages.is_empty());
    let claim = Claim::SecondLeader {
        term: 1,
        leader: core_harness::id(2),
    };
    assert_eq!(ready.events, ignored(3, 1, claim));
}

/// Figure 3, Leader Completeness and State Machine Safety. Found by the
/// property test as a panic ("truncating a committed entry"). An entry 2@2
/// would replace the committed 2@1: the message is ignored whole, its
/// newer term included, and the log is untouched.
#[test]
fn a_committed_entry_is_never_replaced() {
    let mut r = follower_with_two_committed();

    r.step(
        append(2, 1, 2)
            .prev_log(1, 1)
            .entries(entries(2, &[2]))
            .leader_commit(2),
    );

    let ready = persist(&mut r);
    assert_eq!(log_terms(&r), vec![1, 1, 1]);
    assert_eq!(r.current_term(), 1, "not even the term is taken from it");
    assert!(ready.messages.is_empty() && ready.hard_state.is_none());
    let claim = Claim::ContradictsCommitted {
        index: 2,
        committed_term: 1,
        claimed_term: 2,
    };
    assert_eq!(ready.events, ignored(2, 2, claim));

    // Past the commit index, a conflicting entry is replaced as Figure 2
    // says (AppendEntries receiver, rule 3).
    r.step(
        append(2, 1, 2)
            .prev_log(2, 1)
            .entries(entries(3, &[2]))
            .leader_commit(2),
    );
    persist(&mut r);
    assert_eq!(log_terms(&r), vec![1, 1, 2]);
}

/// The same claim made by `prev_log_index` and `prev_log_term`: a leader
/// whose entry 2 has term 2 contradicts the committed 2@1.
#[test]
fn a_previous_entry_that_contradicts_a_committed_one_is_ignored() {
    let mut r = follower_with_two_committed();

    r.step(
        append(2, 1, 2)
            .prev_log(2, 2)
            .entries(entries(3, &[2]))
            .leader_commit(2),
    );

    let ready = persist(&mut r);
    assert_eq!((log_terms(&r), r.current_term()), (vec![1, 1, 1], 1));
    assert!(ready.messages.is_empty());
    let claim = Claim::ContradictsCommitted {
        index: 2,
        committed_term: 1,
        claimed_term: 2,
    };
    assert_eq!(ready.events, ignored(2, 2, claim));
}

/// The same claim made by a snapshot's last entry. Found by the property
/// test as an endless exchange: a follower whose committed entry 5 had
/// come from a forged snapshot answered the real leader's snapshot up to 5
/// with "installed", then refused the entries after it; the leader sent
/// the snapshot again at once, and so on without end. Now it answers
/// nothing, and the leader tries again at its next heartbeat.
#[test]
fn a_snapshot_whose_last_entry_contradicts_a_committed_one_is_ignored() {
    let mut r = follower_with_two_committed();

    r.step(install_snapshot(2, 1, 2, 2));

    let ready = persist(&mut r);
    assert!(ready.messages.is_empty() && ready.snapshot.is_none());
    assert_eq!((log_terms(&r), r.commit_index()), (vec![1, 1, 1], 2));
    let claim = Claim::ContradictsCommitted {
        index: 2,
        committed_term: 1,
        claimed_term: 2,
    };
    assert_eq!(ready.events, ignored(2, 1, claim));
}

/// Not every conflict with a committed entry is impossible: the leader of an
/// older term may hold entries that never committed. Its message is refused
/// as stale (Figure 2, AppendEntries receiver, rule 1), as before.
#[test]
fn a_stale_leader_holding_entries_that_lost_is_refused_as_before() {
    let mut r = follower_with_two_committed();
    r.step(heartbeat(2, 1, 3).prev_log(3, 1).leader_commit(2));
    persist(&mut r);

    r.step(
        append(3, 1, 2)
            .prev_log(1, 1)
            .entries(entries(2, &[2]))
            .leader_commit(2),
    );

    let ready = persist(&mut r);
    assert_eq!(ready.messages, vec![append_refused(1, 3, 3, None)]);
    assert!(ready.events.is_empty());
    assert_eq!(log_terms(&r), vec![1, 1, 1]);
}

/// A follower acknowledges only what its leader sent. Before, an
/// acknowledgement up to 9 of a log that ends at 2 was cut to 2 and
/// counted, so it could commit an entry nobody else holds; now it is
/// ignored.
#[test]
fn a_leader_ignores_an_acknowledgement_past_the_end_of_its_log() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    let term = r.current_term();

    r.step(append_ok(2, 1, term, 9));

    let ready = persist(&mut r);
    assert_eq!((match_index_of(&r, 2), r.commit_index()), (0, 0));
    assert!(ready.messages.is_empty());
    let claim = Claim::AcknowledgesUnsent {
        index: 9,
        last_index: 2,
    };
    assert_eq!(ready.events, ignored(2, term, claim));
}

/// Found by the property test as a panic ("a compacted log without a
/// snapshot"): an answer to a snapshot chunk made a leader that holds no
/// snapshot send the next chunk. (Since the leader keeps a replication
/// state per follower, it sends a chunk only to a follower it is sending a
/// snapshot to; the answer is still one no follower can give.)
#[test]
fn a_leader_without_a_snapshot_ignores_an_answer_about_one() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    let term = r.current_term();

    r.step(snapshot_answer(2, term, 0, 1, false));

    let ready = persist(&mut r);
    assert!(ready.messages.is_empty());
    let claim = Claim::UnknownSnapshot {
        index: 0,
        snapshot_index: None,
    };
    assert_eq!(ready.events, ignored(2, term, claim));
}

/// Found by the property test as a panic ("next_index outside the leader's
/// log"): a follower saying it installed a snapshot past the leader's made
/// the leader look for entries it does not have at its next heartbeat.
#[test]
fn a_leader_ignores_an_answer_about_a_snapshot_past_its_own() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    let term = r.current_term();
    acknowledge(&mut r, &[2]);
    assert_eq!(r.last_applied(), 2);
    r.compact(2, "state".to_string()).expect("applied up to 2");

    r.step(snapshot_answer(2, term, 50, 0, true));
    let ready = persist(&mut r);
    let claim = Claim::UnknownSnapshot {
        index: 50,
        snapshot_index: Some(2),
    };
    assert_eq!(ready.events, ignored(2, term, claim));
    assert_eq!(match_index_of(&r, 2), 2);

    ticks(&mut r, HEARTBEAT_TICKS);
    let heartbeats = persist(&mut r);
    assert_eq!(
        heartbeats.messages.len(),
        2,
        "one heartbeat to each follower"
    );
}

/// A leader that hears from the leader of a newer term follows it, and says
/// once that it stepped down (it used to say so twice).
#[test]
fn a_leader_hearing_from_a_newer_leader_steps_down_once() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    let newer = r.current_term() + 1;

    r.step(heartbeat(2, 1, newer).prev_log(1, 1).leader_commit(1));

    let ready = persist(&mut r);
    assert_eq!(r.leader(), Some(&core_harness::id(2)));
    let stepped_down = Event::SteppedDown {
        term: newer,
        reason: StepDownReason::HigherTerm,
    };
    assert_eq!(ready.events, vec![stepped_down]);
}
