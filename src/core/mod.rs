//! The pure Raft core: every rule of the protocol, and nothing else.
//!
//! [`Raft`] does no I/O, reads no clock and starts no thread. Time enters as
//! [`Raft::tick`], messages as [`Raft::step`], requests as [`Raft::propose`]
//! and [`Raft::read_index`]. What the core wants done comes back from
//! [`Raft::ready`] as data (a [`Ready`]): state to make durable, messages to
//! send, committed entries to apply, reads that may be answered. The caller
//! (the driver in `node/`, or the simulator in `tests/`) must handle a
//! `Ready` in this order:
//!
//! 1. **persist** `hard_state` and `entries`, with one fsync;
//! 2. call [`Raft::advance`] to tell the core they are durable;
//! 3. **send** `messages` (only now: a vote or an acknowledgement sent before
//!    the fsync could elect two leaders or lose a committed entry after a
//!    crash);
//! 4. **apply** `committed` entries in order, then answer `reads`.
//!
//! Because of this shape the same core runs in the real binary, in the
//! deterministic simulator, and in any program that embeds the library.
//!
//! The rules live in the submodules, each citing the paper:
//! [`election`] (RequestVote, timers, PreVote, CheckQuorum, leadership
//! transfer), [`replication`] (AppendEntries, the
//! commit rule), [`read`] (ReadIndex reads), [`log`] (the log itself),
//! [`snapshot`] (compaction, InstallSnapshot), [`membership`]; what the core
//! hands out is in [`ready`], how it is configured in [`config`]; the
//! messages Raft rules out, refused before any rule sees them, in
//! [`impossible`].

// The deliberate bugs of `BugSwitches` stay out of the lines that state a
// rule. A rule's condition is written as the paper says it, inside
// `rule!(self, condition, broken_by switch)`; a bug that takes another path
// is a separate `if bug!(self, switch)` before the rule. Without the
// `bug-switches` feature both come down to the rule alone.

/// `rule!(self, condition, broken_by switch)`: `condition`, a rule of the
/// paper, except that it always holds while the deliberate bug `switch` is
/// on (test builds only).
macro_rules! rule {
    ($raft:expr, $condition:expr, broken_by $switch:ident) => {
        $condition || bug!($raft, $switch)
    };
}

/// `bug!(self, switch)`: whether the deliberate bug `switch` is on; the
/// constant `false` without the `bug-switches` feature.
macro_rules! bug {
    ($raft:expr, $switch:ident) => {{
        #[cfg(feature = "bug-switches")]
        let on = $raft.config.bugs.$switch;
        #[cfg(not(feature = "bug-switches"))]
        let on = false;
        on
    }};
}

pub mod config;
pub mod election;
pub mod impossible;
pub mod log;
pub mod membership;
pub mod read;
pub mod ready;
pub mod replication;
pub mod snapshot;

use crate::message::{
    Entry, EntryData, HardState, Incarnation, Index, Membership, Message, MessageBody, NodeId,
    Snapshot, Term,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

pub use self::config::{
    BugSwitches, Config, MAX_APPEND_BYTES, MAX_COMMAND_BYTES, MAX_ENTRIES_PER_APPEND,
    MAX_INFLIGHT_BYTES, MAX_INFLIGHT_ENTRIES, MAX_RETIRED_INCARNATIONS,
};
pub use self::election::TransferError;
pub use self::impossible::Claim;
pub use self::log::Log;
pub use self::membership::MembershipError;
pub use self::read::ReadOutcome;
use self::read::ReadQueue;
pub use self::ready::{Event, NotLeader, Ready, StepDownReason};
use self::replication::Progress;
pub use self::snapshot::CompactError;

/// One Raft node's protocol state.
#[derive(Debug)]
pub struct Raft {
    config: Config,

    // Figure 2, "Persistent state on all servers".
    current_term: Term,
    voted_for: Option<NodeId>,
    log: Log,

    // Figure 2, "Volatile state on all servers".
    commit_index: Index,
    last_applied: Index,

    role: Role,
    /// Ticks since the election timer was last reset.
    election_elapsed: u64,
    /// The current randomised election timeout, in ticks.
    election_timeout: u64,
    rng: StdRng,

    /// The highest log index known to be durable on this node. A leader
    /// counts its own copy of an entry towards a majority only up to here.
    stable_index: Index,

    /// The membership in force: the latest in the log (committed or not),
    /// else the snapshot's, else the one the node started with (§4.1).
    membership: Membership,
    /// The index of the entry `membership` came from (0: not from the log).
    membership_index: Index,
    /// The latest snapshot, which a leader sends to followers that need
    /// entries it no longer holds, with its JSON form.
    snapshot: Option<snapshot::HeldSnapshot>,
    /// A snapshot arriving from the leader in chunks.
    incoming_snapshot: Option<snapshot::IncomingSnapshot>,

    // Output collected since the last `ready()`.
    hard_state_changed: bool,
    /// Lowest log index changed since the last `ready()`.
    unstable_from: Option<Index>,
    messages: Vec<Message>,
    reads_done: Vec<(u64, ReadOutcome)>,
    events: Vec<Event>,
    snapshot_to_install: Option<Snapshot>,
    /// The leader appended entries not yet offered to the followers.
    replicate_pending: bool,
}

/// What a node currently is, with the state that only that role has.
#[derive(Clone, Debug)]
pub enum Role {
    /// Passive: answers leaders and candidates (§5.1).
    Follower {
        /// The leader of `current_term`, once heard from.
        leader: Option<NodeId>,
    },
    /// Asking whether it could win, before raising its term (§9.6).
    PreCandidate {
        /// Who would vote for us in the next term, this node included.
        votes: BTreeSet<NodeId>,
    },
    /// Asking for votes (§5.2).
    Candidate {
        /// Who has granted a vote in this term, this node included.
        votes: BTreeSet<NodeId>,
    },
    /// Handles all client requests and replicates the log (§5.3).
    Leader(Box<LeaderState>),
}

/// The leader's volatile state (Figure 2, "Volatile state on leaders"),
/// which exists only while the node leads.
#[derive(Clone, Debug)]
pub struct LeaderState {
    /// `next_index` and `match_index` for each other member.
    progress: BTreeMap<NodeId, Progress>,
    /// Reads waiting for a round of heartbeats (ReadIndex).
    reads: ReadQueue,
    /// Ticks since the last heartbeat.
    heartbeat_elapsed: u64,
    /// Ticks since the last CheckQuorum.
    quorum_check_elapsed: u64,
    /// A leadership transfer in progress, if any.
    transfer: Option<election::Transfer>,
    /// Numbers each AppendEntries this leader sends (`seq`).
    append_seq: u64,
    /// Incarnations of members seen replaced in this term: late answers
    /// from them are ignored (at most `MAX_RETIRED_INCARNATIONS`).
    retired: BTreeSet<(NodeId, Incarnation)>,
}

/// The name of a role, for status lines and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl std::fmt::Display for RoleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleKind::Follower => "follower",
            RoleKind::PreCandidate => "pre-candidate",
            RoleKind::Candidate => "candidate",
            RoleKind::Leader => "leader",
        })
    }
}

/// Checks what the rules take on trust: the entries of an AppendEntries
/// follow `prev_log_index` one by one, with terms that never go down and
/// never exceed the sender's term. A message that breaks this can only come
/// from a buggy or hostile peer; it is dropped rather than let misnumber the
/// log.
fn well_formed(msg: &Message) -> bool {
    let MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        ..
    } = &msg.body
    else {
        return true;
    };
    let mut expected = (*prev_log_index, *prev_log_term);
    for entry in entries {
        // Checked: an index at the top of u64 is malformed, not a panic.
        if Some(entry.index) != expected.0.checked_add(1)
            || entry.term < expected.1
            || entry.term > msg.term
        {
            return false;
        }
        expected = (entry.index, entry.term);
    }
    *prev_log_term <= msg.term
}

impl Raft {
    /// Builds a node from what it recovered from stable storage (or nothing,
    /// for a new node). Every node starts as a follower (§5.2). `seed`
    /// drives the randomised timeouts, so a run can be replayed.
    pub fn new(config: Config, hard_state: HardState, entries: Vec<Entry>, seed: u64) -> Raft {
        Raft::restore(config, hard_state, None, entries, seed)
    }

    /// Like [`Raft::new`], for a node that recovered a snapshot too: the log
    /// starts after it, and everything it covers counts as committed and
    /// applied (the driver restores its state machine from it).
    pub fn restore(
        config: Config,
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        seed: u64,
    ) -> Raft {
        assert!(
            config.election_timeout_ticks.0 > config.heartbeat_ticks
                && config.election_timeout_ticks.0 <= config.election_timeout_ticks.1
                && config.heartbeat_ticks > 0,
            "timeouts must satisfy 0 < heartbeat < election_min <= election_max"
        );
        let base = snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.last_included_index, s.last_included_term));
        let log = Log::after_snapshot(base.0, base.1, entries);
        let stable_index = log.last_index();
        let mut raft = Raft {
            config,
            current_term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            log,
            commit_index: base.0,
            last_applied: base.0,
            role: Role::Follower { leader: None },
            election_elapsed: 0,
            election_timeout: 0,
            rng: StdRng::seed_from_u64(seed),
            stable_index,
            hard_state_changed: false,
            unstable_from: None,
            messages: Vec::new(),
            reads_done: Vec::new(),
            events: Vec::new(),
            membership: Membership::default(),
            membership_index: 0,
            snapshot: snapshot.map(snapshot::HeldSnapshot::new),
            incoming_snapshot: None,
            snapshot_to_install: None,
            replicate_pending: false,
        };
        raft.refresh_membership();
        raft.reset_election_timer();
        raft
    }

    // ----- inputs -------------------------------------------------------

    /// One unit of logical time has passed.
    pub fn tick(&mut self) {
        match &mut self.role {
            Role::Leader(leader) => {
                leader.heartbeat_elapsed += 1;
                leader.quorum_check_elapsed += 1;
                let heartbeat_due = leader.heartbeat_elapsed >= self.config.heartbeat_ticks;
                let quorum_check_due = self.config.check_quorum
                    && leader.quorum_check_elapsed >= self.config.election_timeout_ticks.0;
                self.tick_transfer();
                if quorum_check_due {
                    self.check_quorum();
                }
                if heartbeat_due {
                    self.on_heartbeat_timeout();
                }
            }
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => {
                self.election_elapsed += 1;
                // Only voters stand for election; a learner, a joining node
                // or a removed one just follows (but see
                // `may_stand_for_election`).
                if self.election_elapsed >= self.election_timeout && self.may_stand_for_election() {
                    self.on_election_timeout();
                }
            }
        }
    }

    /// Handles one message from another node.
    pub fn step(&mut self, msg: Message) {
        debug_assert_eq!(
            msg.to, self.config.id,
            "message delivered to the wrong node"
        );
        if !self.accepts(&msg) {
            // Not a member: nothing from it reaches the rules. A removed
            // server asking for votes is sent the entry that removed it.
            self.catch_up_removed_server(&msg);
            return;
        }
        if !well_formed(&msg) {
            return; // malformed: it could only corrupt the log
        }
        if let Some(claim) = self.impossible_claim(&msg) {
            // Only a bug or a compromised member sends this: see
            // `impossible`. Nothing here acts on it.
            self.events.push(Event::ImpossibleMessage {
                from: msg.from,
                term: msg.term,
                claim,
            });
            return;
        }
        if self.ignore_vote_request(&msg) {
            return;
        }
        if !self.check_term(&msg) {
            return;
        }
        let before = self.invariant_snapshot();
        self.dispatch(msg);
        self.check_invariants(before);
    }

    /// The term rules of Figure 2, for every message, in one place. Returns
    /// whether the message goes on to its handler.
    ///
    /// - All Servers, rule 2: "If RPC request or response contains term T >
    ///   currentTerm: set currentTerm = T, convert to follower."
    /// - Receiver rule 1 of AppendEntries, RequestVote (and InstallSnapshot,
    ///   Figure 13): "Reply false if term < currentTerm"; the refusal
    ///   carries our term, so the stale sender learns it. A stale response
    ///   is dropped.
    ///
    /// A PreVote's term, and a granted PreVoteResponse's, is the term the
    /// sender would campaign in, not its own: neither rule applies to them
    /// (dissertation §9.6), and nobody changes term because of them.
    fn check_term(&mut self, msg: &Message) -> bool {
        let proposed_term = match msg.body {
            MessageBody::PreVote { .. } => true,
            MessageBody::PreVoteResponse { vote_granted, .. } => vote_granted,
            _ => false,
        };
        if proposed_term {
            return true;
        }
        if msg.term > self.current_term {
            match msg.body {
                // The sender leads the newer term: follow it at once.
                MessageBody::AppendEntries { .. } => {
                    self.leave_role(msg.term, StepDownReason::HigherTerm);
                    self.role = Role::Follower { leader: None };
                    self.follow(msg.from.clone());
                }
                _ => self.step_down(msg.term, StepDownReason::HigherTerm),
            }
        }
        if msg.term < self.current_term {
            self.reject_stale(msg);
            return false;
        }
        true
    }

    /// Hands a message of the current term to the handler of its RPC.
    fn dispatch(&mut self, msg: Message) {
        match msg.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                leadership_transfer: _,
            } => self.on_request_vote(msg.from, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse {
                vote_granted,
                incarnation,
            } => self.on_vote_response(msg.from, vote_granted, incarnation),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
                seq,
            } => self.on_append_entries(
                msg.from,
                replication::AppendRequest {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_seq,
                    seq,
                },
            ),
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict,
                read_seq,
                seq,
                incarnation,
            } => self.on_append_response(
                msg.from,
                replication::AppendAnswer {
                    success,
                    match_index,
                    conflict,
                    read_seq,
                    seq,
                    incarnation,
                },
            ),
            MessageBody::TimeoutNow => self.on_timeout_now(),
            MessageBody::InstallSnapshot {
                last_included_index,
                last_included_term,
                offset,
                data,
                done,
            } => self.on_install_snapshot(
                msg.from,
                snapshot::Chunk {
                    last_included_index,
                    last_included_term,
                    offset,
                    data,
                    done,
                },
            ),
            MessageBody::InstallSnapshotResponse {
                last_included_index,
                next_offset,
                done,
                incarnation,
            } => self.on_install_snapshot_response(
                msg.from,
                snapshot::ChunkAnswer {
                    last_included_index,
                    next_offset,
                    done,
                    incarnation,
                },
            ),
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.on_pre_vote(msg.from, msg.term, last_log_index, last_log_term),
            MessageBody::PreVoteResponse {
                vote_granted,
                incarnation,
            } => {
                // A refusal carries the refuser's own term, already
                // observed in `check_term`: nothing more to learn.
                if vote_granted {
                    self.on_pre_vote_response(msg.from, msg.term, incarnation);
                }
            }
        }
    }

    /// Dissertation §4.2.3: while a leader is known to be alive, requests to
    /// vote in a newer term are dropped without looking at their term, unless
    /// the old leader itself asked for the election (a transfer).
    fn ignore_vote_request(&self, msg: &Message) -> bool {
        // PreVote includes this check by definition (§9.6: grant only if no
        // leader has been heard from for an election timeout); for real
        // votes it comes with CheckQuorum.
        let disruptive = match msg.body {
            MessageBody::RequestVote {
                leadership_transfer,
                ..
            } => self.config.check_quorum && !leadership_transfer,
            MessageBody::PreVote { .. } => true,
            _ => false,
        };
        disruptive && msg.term > self.current_term && self.in_leader_lease()
    }

    /// Figure 2, Rules for Servers, Leaders: "If command received from
    /// client: append entry to local log, respond after entry applied to
    /// state machine." Returns the index the entry will have if it commits.
    /// Commands longer than [`MAX_COMMAND_BYTES`] must be refused by the
    /// caller: they would not fit in one message.
    pub fn propose(&mut self, command: String) -> Result<Index, NotLeader> {
        match &self.role {
            Role::Leader(leader) => {
                // §3.10: no new writes while handing over; point the client
                // at the node that is about to lead.
                if let Some(transfer) = &leader.transfer {
                    return Err(NotLeader {
                        leader: Some(transfer.target.clone()),
                    });
                }
            }
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => {
                return Err(self.not_leader())
            }
        }
        let index = self.append_as_leader(EntryData::Command(command));
        Ok(index)
    }

    /// The driver made everything of a `Ready` durable: entries up to the
    /// last one it held, and the hard state. A leader may now count its own
    /// copy of those entries (it must not before: §5.4 relies on a majority
    /// having the entry on stable storage).
    pub fn advance(&mut self, persisted: &Ready) {
        if let Some(last) = persisted.entries.last() {
            if self.log.term_at(last.index) == Some(last.term) {
                self.stable_index = self.stable_index.max(last.index);
            }
        }
        if let Role::Leader(_) = self.role {
            self.maybe_commit();
        }
    }

    /// Takes the work accumulated since the last call.
    pub fn ready(&mut self) -> Ready {
        self.flush_replication();
        self.send_read_round();
        let hard_state = std::mem::take(&mut self.hard_state_changed).then(|| self.hard_state());
        let entries = match self.unstable_from.take() {
            Some(from) => self.log.slice(from, self.log.last_index()).to_vec(),
            None => Vec::new(),
        };
        // Figure 2, Rules for Servers, All Servers, rule 1: "If commitIndex >
        // lastApplied: increment lastApplied, apply log[lastApplied] to state
        // machine." The driver applies what we hand out here.
        let committed = if self.commit_index > self.last_applied {
            let out = self
                .log
                .slice(self.last_applied + 1, self.commit_index)
                .to_vec();
            self.last_applied = self.commit_index;
            out
        } else {
            Vec::new()
        };
        Ready {
            hard_state,
            entries,
            messages: std::mem::take(&mut self.messages),
            committed,
            reads: std::mem::take(&mut self.reads_done),
            events: std::mem::take(&mut self.events),
            snapshot: self.snapshot_to_install.take(),
        }
    }

    /// True if `ready()` would return work.
    pub fn has_ready(&self) -> bool {
        self.hard_state_changed
            || self.unstable_from.is_some()
            || !self.messages.is_empty()
            || self.commit_index > self.last_applied
            || !self.reads_done.is_empty()
            || !self.events.is_empty()
            || self.has_unsent_reads()
            || self.snapshot_to_install.is_some()
            || self.replicate_pending
    }

    // ----- what the node looks like -------------------------------------

    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn current_term(&self) -> Term {
        self.current_term
    }

    /// The incarnation of this node's data directory.
    pub fn incarnation(&self) -> Incarnation {
        self.config.incarnation
    }

    pub fn voted_for(&self) -> Option<&NodeId> {
        self.voted_for.as_ref()
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            current_term: self.current_term,
            voted_for: self.voted_for.clone(),
        }
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn commit_index(&self) -> Index {
        self.commit_index
    }

    /// The last index handed to the driver to apply.
    pub fn last_applied(&self) -> Index {
        self.last_applied
    }

    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower { .. } => RoleKind::Follower,
            Role::PreCandidate { .. } => RoleKind::PreCandidate,
            Role::Candidate { .. } => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// The leader of the current term as far as this node knows.
    pub fn leader(&self) -> Option<&NodeId> {
        match &self.role {
            Role::Follower { leader } => leader.as_ref(),
            Role::PreCandidate { .. } | Role::Candidate { .. } => None,
            Role::Leader(_) => Some(&self.config.id),
        }
    }

    /// For a leader: each follower's `match_index`.
    pub fn match_indexes(&self) -> Option<BTreeMap<NodeId, Index>> {
        match &self.role {
            Role::Leader(leader) => Some(
                leader
                    .progress
                    .iter()
                    .map(|(id, p)| (id.clone(), p.match_index))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// For a leader: what it knows of each follower and how it sends to it
    /// (Figure 2, "Volatile state on leaders", and its [`Replication`]
    /// state).
    ///
    /// [`Replication`]: replication::Replication
    pub fn progress(&self) -> Option<&BTreeMap<NodeId, Progress>> {
        match &self.role {
            Role::Leader(leader) => Some(&leader.progress),
            _ => None,
        }
    }

    // ----- shared helpers -----------------------------------------------

    /// A request from an older term is answered with a refusal that carries
    /// our term, so the stale sender learns of it and steps down (Figure 2,
    /// receiver rule 1 of both RPCs). Stale responses are dropped.
    fn reject_stale(&mut self, msg: &Message) {
        let body = match msg.body {
            MessageBody::RequestVote { .. } => MessageBody::RequestVoteResponse {
                vote_granted: false,
                incarnation: self.config.incarnation,
            },
            MessageBody::AppendEntries { read_seq, seq, .. } => {
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: 0,
                    conflict: None,
                    read_seq,
                    seq,
                    incarnation: self.config.incarnation,
                }
            }
            MessageBody::PreVote { .. } => MessageBody::PreVoteResponse {
                vote_granted: false,
                incarnation: self.config.incarnation,
            },
            MessageBody::RequestVoteResponse { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::AppendEntriesResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. }
            | MessageBody::TimeoutNow => return,
            MessageBody::InstallSnapshot {
                last_included_index,
                ..
            } => MessageBody::InstallSnapshotResponse {
                last_included_index,
                next_offset: 0,
                done: false,
                incarnation: self.config.incarnation,
            },
        };
        self.send(msg.from.clone(), body);
    }

    /// Becomes a follower that knows no leader yet: in a newer `term`
    /// (Figure 2, All Servers, rule 2), or in its own term when a leader
    /// stops leading (CheckQuorum, its removal). `reason` says why, if this
    /// node was leading.
    fn step_down(&mut self, term: Term, reason: StepDownReason) {
        let was_leader = self.leave_role(term, reason);
        self.role = Role::Follower { leader: None };
        // Figure 2 resets a follower's election timer only when it hears
        // from the current leader or grants a vote; merely seeing a newer
        // term (say, from a candidate it refuses) does not. A former leader
        // starts a fresh timer, since it kept none while leading.
        if was_leader {
            self.reset_election_timer();
        }
    }

    /// Follows `leader`, the leader of the current term: Candidates, "If
    /// AppendEntries RPC received from new leader: convert to follower";
    /// Followers, hearing from the current leader resets the election
    /// timer.
    ///
    /// Never reached while this node leads: a leader of a newer term is
    /// followed once `check_term` has ended this node's leadership, and a
    /// message claiming to lead this node's own term is refused in `step`
    /// (Election Safety; see `impossible`).
    fn follow(&mut self, leader: NodeId) {
        debug_assert!(
            !matches!(self.role, Role::Leader(_)),
            "two leaders in one term"
        );
        self.role = Role::Follower {
            leader: Some(leader),
        };
        self.reset_election_timer();
    }

    /// What ends with the current role: a leader fails the reads waiting on
    /// it and says why it stops; a newer `term` is adopted with no vote in
    /// it yet. Returns whether this node was leading.
    fn leave_role(&mut self, term: Term, reason: StepDownReason) -> bool {
        debug_assert!(term >= self.current_term);
        let was_leader = matches!(self.role, Role::Leader(_));
        if let Role::Leader(state) = &mut self.role {
            let reads = std::mem::take(&mut state.reads);
            self.reads_done.extend(reads.fail_all());
            self.events.push(Event::SteppedDown { term, reason });
        }
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.hard_state_changed = true;
        }
        was_leader
    }

    fn reset_election_timer(&mut self) {
        let (min, max) = self.config.election_timeout_ticks;
        self.election_elapsed = 0;
        self.election_timeout = self.rng.random_range(min..=max);
    }

    fn not_leader(&self) -> NotLeader {
        NotLeader {
            leader: self.leader().cloned(),
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message {
            from: self.config.id.clone(),
            to,
            term: self.current_term,
            body,
        });
    }

    /// Every other member, voters and learners, in a fixed order: who the
    /// leader replicates to.
    fn peers(&self) -> Vec<NodeId> {
        self.membership
            .voters
            .keys()
            .chain(self.membership.learners.keys())
            .filter(|id| **id != self.config.id)
            .cloned()
            .collect()
    }

    /// The other voters: who is asked for votes.
    fn voting_peers(&self) -> Vec<NodeId> {
        self.membership
            .voters
            .keys()
            .filter(|id| **id != self.config.id)
            .cloned()
            .collect()
    }

    /// How many voters make a majority.
    fn quorum(&self) -> usize {
        self.membership.voters.len() / 2 + 1
    }

    /// Records that log entries from `index` on have changed and must be
    /// persisted.
    fn mark_unstable(&mut self, index: Index) {
        self.unstable_from = Some(self.unstable_from.map_or(index, |i| i.min(index)));
        self.stable_index = self.stable_index.min(index - 1);
        self.note_log_changed(index);
    }

    // ----- invariants (checked in debug builds after every step) --------

    fn invariant_snapshot(&self) -> (Term, Index) {
        (self.current_term, self.commit_index)
    }

    /// LogCabin-style delta checks: terms and the commit index never go
    /// down, and `last_applied <= commit_index <= last_index`.
    fn check_invariants(&self, before: (Term, Index)) {
        debug_assert!(self.current_term >= before.0, "current_term went down");
        debug_assert!(self.commit_index >= before.1, "commit_index went down");
        debug_assert!(self.last_applied <= self.commit_index);
        debug_assert!(self.commit_index <= self.log.last_index());
        debug_assert!(self.stable_index <= self.log.last_index());
    }
}
