//! Leader election (§5.2) and the election restriction (§5.4.1).
//!
//! A follower that hears nothing from a leader for a randomised election
//! timeout becomes a candidate, votes for itself and asks every other node
//! for a vote. A node grants at most one vote per term, and only to a
//! candidate whose log is at least as up-to-date as its own. A candidate
//! with votes from a majority becomes leader.

use super::read::ReadQueue;
use super::replication::Progress;
use super::{Event, LeaderState, Raft, Role};
use crate::message::{EntryData, Index, MessageBody, NodeId, Term};
use std::collections::BTreeSet;

impl Raft {
    /// Figure 2, Rules for Servers, Followers: "If election timeout elapses
    /// without receiving AppendEntries RPC from current leader or granting
    /// vote to candidate: convert to candidate." Candidates: "If election
    /// timeout elapses: start new election."
    pub(super) fn on_election_timeout(&mut self) {
        self.start_election();
    }

    /// Figure 2, Rules for Servers, Candidates: "On conversion to candidate,
    /// start election: increment currentTerm, vote for self, reset election
    /// timer, send RequestVote RPCs to all other servers."
    fn start_election(&mut self) {
        self.current_term += 1;
        self.voted_for = Some(self.config.id.clone());
        self.hard_state_changed = true;
        self.role = Role::Candidate {
            votes: BTreeSet::from([self.config.id.clone()]),
        };
        self.reset_election_timer();
        self.events.push(Event::ElectionStarted {
            term: self.current_term,
        });
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers() {
            self.send(
                peer,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                },
            );
        }
        // A cluster of one wins at once.
        self.maybe_win_election();
    }

    /// Figure 2, RequestVote RPC, receiver implementation. Rule 1 (reply
    /// false if term < currentTerm) is applied in `step` before we get here.
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
            // Servers, Followers), so we do not compete with the candidate.
            self.reset_election_timer();
        }
        // This answer is only sent after the vote is on stable storage: the
        // driver persists a Ready before sending its messages.
        self.send(candidate, MessageBody::RequestVoteResponse { vote_granted });
    }

    /// Figure 2, RequestVote RPC, receiver rule 2: "If votedFor is null or
    /// candidateId, and candidate's log is at least as up-to-date as
    /// receiver's log, grant vote" (§5.2, §5.4.1).
    fn may_vote_for(&self, candidate: &NodeId, last_log_index: Index, last_log_term: Term) -> bool {
        let free_to_vote = match &self.voted_for {
            None => true,
            Some(voted) => voted == candidate,
        };
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term)
            || self.bugs().vote_without_log_check;
        free_to_vote && log_ok
    }

    /// Counts a vote; "If votes received from majority of servers: become
    /// leader" (Figure 2, Rules for Servers, Candidates).
    pub(super) fn on_vote_response(&mut self, voter: NodeId, vote_granted: bool) {
        if let Role::Candidate { votes } = &mut self.role {
            if vote_granted {
                votes.insert(voter);
            }
            self.maybe_win_election();
        }
    }

    fn maybe_win_election(&mut self) {
        let won = match &self.role {
            Role::Candidate { votes } => votes.len() >= self.quorum(),
            Role::Follower { .. } | Role::Leader(_) => false,
        };
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
        }));
        self.events.push(Event::BecameLeader {
            term: self.current_term,
        });
        self.append_as_leader(EntryData::Noop);
        // The initial AppendEntries, carrying the no-op. `append_as_leader`
        // alone sends nothing yet: every follower starts out probing, which
        // only sends on a heartbeat, so without this the cluster would hear
        // of its new leader only a heartbeat interval later.
        self.broadcast_append();
    }
}
