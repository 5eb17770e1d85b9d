//! Leader election (§5.2), the election restriction (§5.4.1), and the
//! dissertation's guards against disruptive servers: PreVote (§9.6),
//! CheckQuorum and leader stickiness (§4.2.3, §6.2), and leadership transfer
//! (§3.10).
//!
//! A follower that hears nothing from a leader for a randomised election
//! timeout first asks, without changing its term, whether it could win
//! (PreVote). Only if a majority says yes does it become a candidate, vote
//! for itself and ask every other node for a vote. A node grants at most one
//! vote per term, and only to a candidate whose log is at least as
//! up-to-date as its own. A candidate with votes from a majority becomes
//! leader.
//!
//! A leader that has not heard from a majority for an election timeout steps
//! down (CheckQuorum: `Leader 8000 stepping down: no word from a majority
//! ...`). Leadership transfer (`transfer <id>`, and Ctrl+C at a leader) goes
//! only to an up-to-date follower that answered within the last election
//! timeout; with no such follower the leader just stops.

use super::read::ReadQueue;
use super::replication::Progress;
use super::{Event, LeaderState, Raft, Role, StepDownReason};
use crate::message::{EntryData, Incarnation, Index, Message, MessageBody, NodeId, Term, MAX_TERM};
use std::collections::BTreeSet;

/// The term after `term`, or `None` past [`MAX_TERM`]: a node never
/// campaigns in a term it would refuse from anyone else. Terms reach the
/// core only after the transport checked them against the same bound, so a
/// real cluster never gets here (see `MAX_TERM`).
fn next_term(term: Term) -> Option<Term> {
    term.checked_add(1).filter(|&next| next <= MAX_TERM)
}

/// A leadership transfer in progress (dissertation §3.10).
#[derive(Clone, Debug)]
pub struct Transfer {
    /// The follower that is to take over.
    pub target: NodeId,
    /// Ticks since the transfer began; it is abandoned after an election
    /// timeout, so a target that cannot win does not stall the cluster.
    pub elapsed_ticks: u64,
    /// Whether TimeoutNow has been sent.
    pub timeout_now_sent: bool,
}

/// Why a leadership transfer cannot start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can hand over leadership.
    NotLeader(super::NotLeader),
    /// The target is not another voting member.
    UnknownTarget(NodeId),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::NotLeader(_) => f.write_str("only the leader can transfer leadership"),
            TransferError::UnknownTarget(id) => {
                write!(f, "{id} is not another voting member of this cluster")
            }
        }
    }
}

impl Raft {
    /// Figure 2, Rules for Servers, Followers: "If election timeout elapses
    /// without receiving AppendEntries RPC from current leader or granting
    /// vote to candidate: convert to candidate." Candidates: "If election
    /// timeout elapses: start new election." With PreVote, the node first
    /// checks that it could win.
    pub(super) fn on_election_timeout(&mut self) {
        if self.config.pre_vote {
            self.start_pre_vote();
        } else {
            self.start_election(false);
        }
    }

    /// Dissertation §9.6: ask the others whether they would vote for us in
    /// the next term, without raising our term. A node cut off from the
    /// cluster keeps failing here, so when it comes back its term has not
    /// grown and it cannot force a healthy leader to step down.
    fn start_pre_vote(&mut self) {
        self.role = Role::PreCandidate {
            votes: self.own_vote(),
        };
        self.reset_election_timer();
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        let Some(next_term) = next_term(self.current_term) else {
            return;
        };
        for peer in self.voting_peers() {
            self.messages.push(Message {
                from: self.config.id.clone(),
                to: peer,
                term: next_term,
                body: MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                },
            });
        }
        self.maybe_win_pre_vote();
    }

    /// Figure 2, Rules for Servers, Candidates: "On conversion to candidate,
    /// start election: increment currentTerm, vote for self, reset election
    /// timer, send RequestVote RPCs to all other servers."
    pub(super) fn start_election(&mut self, leadership_transfer: bool) {
        let Some(next_term) = next_term(self.current_term) else {
            return;
        };
        self.current_term = next_term;
        self.voted_for = Some(self.config.id.clone());
        self.hard_state_changed = true;
        self.role = Role::Candidate {
            votes: self.own_vote(),
        };
        self.reset_election_timer();
        self.events.push(Event::ElectionStarted {
            term: self.current_term,
        });
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.voting_peers() {
            self.send(
                peer,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    leadership_transfer,
                },
            );
        }
        // A cluster of one wins at once.
        self.maybe_win_election();
    }

    /// Dissertation §4.2.3: a server that has heard from a current leader
    /// within the minimum election timeout ignores requests to vote in a
    /// newer term (it neither updates its term nor grants its vote). So a
    /// server that was removed, or that is cut off one way, cannot depose a
    /// leader that a majority still hears. A leader always believes in
    /// itself until CheckQuorum says otherwise.
    pub(super) fn in_leader_lease(&self) -> bool {
        match &self.role {
            Role::Follower { leader: Some(_) } => {
                self.election_elapsed < self.config.election_timeout_ticks.0
            }
            Role::Leader(_) => true,
            Role::Follower { leader: None }
            | Role::PreCandidate { .. }
            | Role::Candidate { .. } => false,
        }
    }

    /// Figure 2, RequestVote RPC, receiver implementation. Rule 1 (reply
    /// false if term < currentTerm) is applied in `check_term` before we get here.
    pub(super) fn on_request_vote(
        &mut self,
        candidate: NodeId,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let vote_granted = self.may_vote_for(&candidate, last_log_index, last_log_term);
        if vote_granted {
            self.voted_for = Some(candidate.clone());
            self.hard_state_changed = true;
            // Granting a vote resets the election timer (Figure 2, Rules for
            // Servers, Followers), so we do not compete with the candidate:
            // a pre-candidate also abandons its pre-vote round, or a late
            // pre-vote grant would make it stand against the candidate it
            // has just voted for.
            self.reset_election_timer();
            if matches!(self.role, Role::PreCandidate { .. }) {
                self.role = Role::Follower { leader: None };
            }
        }
        // This answer is only sent after the vote is on stable storage: the
        // driver persists a Ready before sending its messages.
        let incarnation = self.config.incarnation;
        self.send(
            candidate,
            MessageBody::RequestVoteResponse {
                vote_granted,
                incarnation,
            },
        );
    }

    /// Figure 2, RequestVote RPC, receiver rule 2: "If votedFor is null or
    /// candidateId, and candidate's log is at least as up-to-date as
    /// receiver's log, grant vote" (§5.2, §5.4.1).
    fn may_vote_for(&self, candidate: &NodeId, last_log_index: Index, last_log_term: Term) -> bool {
        let free_to_vote = match &self.voted_for {
            None => true,
            Some(voted) => voted == candidate,
        };
        let log_ok = rule!(
            self,
            self.log.is_up_to_date(last_log_index, last_log_term),
            broken_by vote_without_log_check
        );
        free_to_vote && log_ok
    }

    /// Dissertation §9.6: grant a pre-vote if the sender's proposed term is
    /// newer than ours and its log is at least as up-to-date. Nothing about
    /// us changes, so nothing needs persisting.
    pub(super) fn on_pre_vote(
        &mut self,
        candidate: NodeId,
        proposed_term: Term,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        let log_ok = rule!(
            self,
            self.log.is_up_to_date(last_log_index, last_log_term),
            broken_by vote_without_log_check
        );
        let vote_granted = proposed_term > self.current_term && log_ok;
        // A refusal carries our own term, so a pre-candidate that is behind
        // learns the current term.
        let term = if vote_granted {
            proposed_term
        } else {
            self.current_term
        };
        self.messages.push(Message {
            from: self.config.id.clone(),
            to: candidate,
            term,
            body: MessageBody::PreVoteResponse {
                vote_granted,
                incarnation: self.config.incarnation,
            },
        });
    }

    /// Counts a granted pre-vote for the term after ours, if it comes from
    /// the voter's recorded incarnation.
    pub(super) fn on_pre_vote_response(
        &mut self,
        voter: NodeId,
        term: Term,
        incarnation: Incarnation,
    ) {
        let counts = self.vote_counts(&voter, incarnation);
        if let Role::PreCandidate { votes } = &mut self.role {
            if counts && Some(term) == next_term(self.current_term) {
                votes.insert(voter);
                self.maybe_win_pre_vote();
            }
        }
    }

    fn maybe_win_pre_vote(&mut self) {
        let won = matches!(&self.role, Role::PreCandidate { votes } if self.is_quorum(votes));
        if won {
            self.start_election(false);
        }
    }

    /// Counts a vote; "If votes received from majority of servers: become
    /// leader" (Figure 2, Rules for Servers, Candidates).
    pub(super) fn on_vote_response(
        &mut self,
        voter: NodeId,
        vote_granted: bool,
        incarnation: Incarnation,
    ) {
        let counts = self.vote_counts(&voter, incarnation);
        if let Role::Candidate { votes } = &mut self.role {
            if vote_granted && counts {
                votes.insert(voter);
            }
            self.maybe_win_election();
        }
    }

    /// A vote counts only if it comes from the data directory the
    /// membership records for that voter, or if none is recorded yet. A
    /// voter that lost its directory lost the record of the votes it gave
    /// (Figure 2 keeps `votedFor` on stable storage for this reason: §5.2
    /// "each server will vote for at most one candidate in a given term");
    /// its new directory may grant a second vote in a term in which the old
    /// one already voted, and, having no log, it may vote for a candidate
    /// that misses committed entries (§5.4.1 assumes every voter still holds
    /// what it acknowledged). Such a vote is not counted until the leader
    /// records the new incarnation, which it does only after the member
    /// caught up as a learner (dissertation §4.2.1).
    pub(super) fn vote_counts(&self, voter: &NodeId, incarnation: Incarnation) -> bool {
        match self.membership.incarnations.get(voter) {
            None => true,
            Some(recorded) => rule!(
                self,
                *recorded == incarnation,
                broken_by count_votes_from_any_incarnation
            ),
        }
    }

    /// A candidate's vote for itself, if it counts (see `vote_counts`).
    fn own_vote(&self) -> BTreeSet<NodeId> {
        let mut votes = BTreeSet::new();
        if self.vote_counts(&self.config.id, self.config.incarnation) {
            votes.insert(self.config.id.clone());
        }
        votes
    }

    fn maybe_win_election(&mut self) {
        let won = matches!(&self.role, Role::Candidate { votes } if self.is_quorum(votes));
        if won {
            self.become_leader();
        }
    }

    /// Figure 2, Rules for Servers, Leaders: "Upon election: send initial
    /// empty AppendEntries RPCs (heartbeat) to each server". We also append
    /// a no-op entry of the new term (§8): committing it commits every
    /// earlier entry (§5.4.2 forbids counting replicas of older terms) and
    /// tells the leader which entries are committed, which reads need.
    fn become_leader(&mut self) {
        debug_assert!(matches!(self.role, Role::Candidate { .. }));
        let next_index = self.log.last_index() + 1;
        let progress = self
            .peers()
            .into_iter()
            .map(|peer| (peer, Progress::new(next_index)))
            .collect();
        self.role = Role::Leader(Box::new(LeaderState {
            progress,
            reads: ReadQueue::default(),
            heartbeat_elapsed: 0,
            quorum_check_elapsed: 0,
            transfer: None,
            append_seq: 0,
            retired: BTreeSet::new(),
        }));
        self.events.push(Event::BecameLeader {
            term: self.current_term,
        });
        self.append_as_leader(EntryData::Noop);
        // Every follower starts in `Probe`, so the no-op is not streamed by
        // `append_as_leader`: announce the new leader to everyone now.
        self.broadcast_append();
    }

    /// CheckQuorum (dissertation §6.2): once per minimum election timeout,
    /// a leader that has not heard from a majority steps down. A leader cut
    /// off on the minority side of a partition thus stops serving reads and
    /// taking writes instead of believing it leads forever.
    pub(super) fn check_quorum(&mut self) {
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        leader.quorum_check_elapsed = 0;
        let mut heard: BTreeSet<NodeId> = leader
            .progress
            .iter()
            .filter(|(_, p)| p.recent_active)
            .map(|(id, _)| id.clone())
            .collect();
        for progress in leader.progress.values_mut() {
            progress.recent_active = false;
        }
        heard.insert(self.config.id.clone());
        if !self.is_quorum(&heard) {
            self.step_down(self.current_term, StepDownReason::LostQuorum);
        }
    }

    /// Begins handing leadership to `target` (dissertation §3.10): stop
    /// taking new writes, bring the target up to date, then tell it to start
    /// an election at once with TimeoutNow.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if !matches!(self.role, Role::Leader(_)) {
            return Err(TransferError::NotLeader(self.not_leader()));
        }
        if target == self.config.id || !self.membership.voters.contains_key(&target) {
            return Err(TransferError::UnknownTarget(target));
        }
        if let Role::Leader(leader) = &mut self.role {
            leader.transfer = Some(Transfer {
                target: target.clone(),
                elapsed_ticks: 0,
                timeout_now_sent: false,
            });
        }
        self.events.push(Event::TransferStarted {
            term: self.current_term,
            target: target.clone(),
        });
        if !self.maybe_send_timeout_now(&target) {
            // Send it what it lacks; its answer brings us back here.
            self.send_heartbeat_to(&target);
        }
        Ok(())
    }

    /// Sends TimeoutNow if a transfer to `follower` is under way and the
    /// follower now holds the leader's whole log. Returns whether it did.
    pub(super) fn maybe_send_timeout_now(&mut self, follower: &NodeId) -> bool {
        let last_index = self.log.last_index();
        let Role::Leader(leader) = &mut self.role else {
            return false;
        };
        let Some(transfer) = leader.transfer.as_mut() else {
            return false;
        };
        let caught_up = leader
            .progress
            .get(follower)
            .is_some_and(|p| p.match_index == last_index);
        if transfer.target != *follower || transfer.timeout_now_sent || !caught_up {
            return false;
        }
        transfer.timeout_now_sent = true;
        self.send(follower.clone(), MessageBody::TimeoutNow);
        true
    }

    /// Counts down a transfer in progress; gives up after an election
    /// timeout and takes writes again.
    pub(super) fn tick_transfer(&mut self) {
        let limit = self.config.election_timeout_ticks.1;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(transfer) = leader.transfer.as_mut() else {
            return;
        };
        transfer.elapsed_ticks += 1;
        if transfer.elapsed_ticks >= limit {
            let target = transfer.target.clone();
            leader.transfer = None;
            self.events.push(Event::TransferAborted {
                term: self.current_term,
                target,
            });
        }
    }

    /// The leader told us to take over (dissertation §3.10): start an
    /// election now, skipping PreVote, flagged so that voters do not ignore
    /// it for having heard from a leader recently.
    pub(super) fn on_timeout_now(&mut self) {
        if matches!(self.role, Role::Follower { .. }) {
            self.start_election(true);
        }
    }
}
