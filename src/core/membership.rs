//! Membership changes, one server at a time (dissertation chapter 4).
//!
//! The cluster's membership is itself a log entry. Every node uses the
//! latest membership in its log as soon as it appends it, committed or not
//! (§4.1); so if a leader changes membership by at most one server at a
//! time, any majority of the old membership overlaps any majority of the
//! new one, and two leaders can never be elected in one term.
//!
//! Three rules keep this safe and live:
//! - a leader starts a change only after the previous one has committed,
//!   and only once it has committed an entry of its own term (the flaw
//!   Ongaro described on raft-dev in 2015: without this, a change proposed
//!   by a leader of an older term can be lost and a second one made on top
//!   of it, and two disjoint majorities can result);
//! - a new server joins as a learner, which receives the log but does not
//!   vote, and is promoted to voter only once it has caught up (§4.2.1), so
//!   adding it does not stall commits while it copies the log;
//! - a leader that removes itself keeps leading until the change commits,
//!   not counting itself, and then steps down (§4.2.2).
//!
//! A leader that removes itself, as it goes, tells its most up-to-date voter to
//! stand at once (TimeoutNow), so the cluster is without a leader for about a
//! millisecond, not an election timeout. A removed node misses the entry that
//! removes it (once the leader has appended the change it sends that node
//! nothing more, §4.2.3), so it times out and asks for votes (PreVote keeps
//! that harmless); the leader answers with the entries it lacks, and the node
//! prints `Node 8003 was removed from the cluster; it can be stopped` and
//! stands for election no more. Each remaining node says once on stderr that a
//! removed node still runs. The membership is in the log and the snapshot, so
//! it survives restarts.
//!
//! # A member that lost its disk
//!
//! A node whose data directory was deleted, restored from an old backup, or
//! kept by a disk that lied about fsync comes back with fewer entries than it
//! acknowledged and, if its directory is new, without its term and its votes.
//! How the leader notices and catches it up is in
//! [`replication`](super::replication); this is how it rejoins safely.
//!
//! The danger is the vote. A node that lost its directory
//! lost `voted_for` too, and §5.2's "each server will vote for at most one
//! candidate in a given term" no longer holds: B votes for A in term 5, loses
//! its directory, and a delayed term-5 RequestVote from C reaches the new B,
//! which grants it; A and C both lead term 5. And the election restriction
//! (§5.4.1) only keeps committed entries because every majority contains a
//! voter that holds them (§5.4.3): if B was one of a bare majority holding an
//! entry, the new B, holding nothing, can vote with a lagging C for a leader
//! that lacks it, and a committed entry is lost. No rule local to B can help: a
//! node started for the first time and a node whose directory was deleted look
//! the same on their own disks. Records kept by each peer do not help either (C
//! may never have heard from B). So the cluster keeps the record, in the log:
//!
//! - every data directory draws a random **incarnation** when it is created
//!   (`meta.json`), and every answer (votes, pre-votes, AppendEntries and
//!   InstallSnapshot answers) carries it;
//! - the **membership** (the configuration entry in the log and in snapshots,
//!   dissertation §4.1) records each member's incarnation: a leader that learns
//!   an incarnation not yet recorded appends a configuration entry that records
//!   it, with the same voters (so the same majorities);
//! - a candidate **counts a vote only from the recorded incarnation** (or if
//!   none is recorded), its own included (`election.rs`, `vote_counts`);
//! - a voter that answers from another incarnation, or that lost entries it
//!   acknowledged, is **made a learner** with a single-server change that
//!   records its new incarnation, and once caught up it is **promoted** again
//!   by the automatic promotion of learners (dissertation §4.2.1), which is a
//!   second single-server change. Replacing the old directory by the new one as
//!   a voter in one step would be two changes at once: the majorities {A, B-old}
//!   and {C, B-new} do not overlap, which §4.1 forbids without joint consensus
//!   (§4.3).
//!
//! So "I deleted one node's directory and restarted it" ends, with no hand
//! work, in a three-voter cluster again; `tests/disk_loss_process.rs` does
//! exactly that with real processes while writes go on.
//!
//! **What it costs.** While the node catches up the cluster has one voter fewer
//! (and, until it is demoted, a voter whose vote does not count): a three-node
//! cluster then tolerates no further failure. If a second node loses its disk
//! in that window, or the leader fails before the demotion commits and the
//! remaining voters cannot form a counted majority, the cluster waits until the
//! failed nodes come back, rather than risk a second vote. Each incarnation
//! learned costs one configuration entry, and each message a few bytes.
//!
//! **What is not covered.** A directory lost before its incarnation reached the
//! log of every node that could stand for election (the first moments of a new
//! cluster, or a node that has been down since then) looks like a fresh start
//! to that node: its vote still counts there. A disk that lost the end of its
//! log but kept its directory (fsync that lied, a directory restored from a
//! backup) keeps its incarnation: the leader detects the loss (the line shown in
//! [`replication`](super::replication), with "its disk lost the end of its
//! log"), makes the node a learner and
//! catches it up, but votes it gave in the meantime are not protected; the
//! simulator shows such a node helping elect a leader that lacks a committed
//! entry (`a_cut_log_keeps_its_vote_and_can_lose_a_committed_entry`). To
//! restore a directory from a backup safely, delete the `incarnation` field of
//! its `meta.json` first: the node then draws a new one and rejoins as above.

use super::replication::Progress;
use super::{Event, Raft, Role, StepDownReason, MAX_APPEND_BYTES, MAX_ENTRIES_PER_APPEND};
use crate::message::{EntryData, Index, Membership, Message, MessageBody, NodeId};
use std::collections::BTreeSet;

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipError {
    /// Only the leader changes membership.
    NotLeader(super::NotLeader),
    /// A change is already under way (or this leader has not yet committed
    /// an entry of its term); try again once it commits.
    ChangeInProgress,
    /// The server is already a member.
    AlreadyMember(NodeId),
    /// The server is not a member.
    NotMember(NodeId),
    /// Removing the last voter would leave nobody to decide anything.
    LastVoter(NodeId),
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipError::NotLeader(_) => f.write_str("only the leader can change membership"),
            MembershipError::ChangeInProgress => f.write_str(
                "a membership change is still in progress (or the leader is new); retry in a moment",
            ),
            MembershipError::AlreadyMember(id) => write!(f, "{id} is already a member"),
            MembershipError::NotMember(id) => write!(f, "{id} is not a member"),
            MembershipError::LastVoter(id) => {
                write!(f, "{id} is the last voter; a cluster needs at least one")
            }
        }
    }
}

impl Raft {
    /// The membership this node uses now.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// True if this node votes (and so may stand for election).
    pub fn is_voter(&self) -> bool {
        self.membership.voters.contains_key(&self.config.id)
    }

    /// True if this node should start elections when its timer runs out:
    /// if it votes, and also if a membership that removes it is not yet
    /// committed as far as it knows. Dissertation §4.2.2: "a server that is
    /// not part of its own latest configuration should still start new
    /// elections, as it might still be needed until the Cnew entry is
    /// committed"; it asks the voters of its latest membership and does not
    /// count its own vote (`is_quorum` counts voters only). Without this, a
    /// leader that removed itself and lost its quorum before the removal
    /// committed holds the only copy of the removal; the voters left, who
    /// still need its vote, cannot out-vote its newer log, and nobody ever
    /// leads again (found by the simulator; regression test
    /// `membership::removed_leader_stands_until_its_removal_commits`).
    pub(super) fn may_stand_for_election(&self) -> bool {
        self.is_voter()
            || self
                .known_membership_at(self.commit_index)
                .is_some_and(|committed| committed.voters.contains_key(&self.config.id))
    }

    /// True if the voters in `ids` make a majority of the current voters.
    pub(super) fn is_quorum(&self, ids: &BTreeSet<NodeId>) -> bool {
        let votes = ids
            .iter()
            .filter(|id| self.membership.voters.contains_key(*id))
            .count();
        votes >= self.quorum()
    }

    /// Messages are taken only from members. A node that is not a member of
    /// its own membership (one that is joining and has not yet received the
    /// entry that adds it) takes them from anyone: it has nothing to protect
    /// and must hear the leader to learn that it was added.
    ///
    /// A leader's AppendEntries and InstallSnapshot are taken from anyone
    /// too (dissertation §4.1: servers accept AppendEntries from a leader
    /// that is not in their latest configuration). Our membership may be
    /// stale: a member that missed the entry that added a new server does
    /// not know it, and once that server leads, only it can send the entry.
    /// Refusing it left such a member behind for good (found by the
    /// simulator; regression test
    /// `membership::stale_member_follows_a_leader_it_does_not_know`). The
    /// term rules still apply, so a removed leader of an old term is
    /// refused as stale.
    pub(super) fn accepts(&self, msg: &Message) -> bool {
        let from_leader = msg.body.is_from_leader();
        // A leader that removed itself hands over as it goes (see
        // `on_membership_committed`): its TimeoutNow comes from a node that
        // is no longer a member, but is the leader this node follows.
        let handover = msg.body == MessageBody::TimeoutNow
            && msg.term == self.current_term
            && self.leader() == Some(&msg.from);
        msg.from != self.config.id
            && (from_leader
                || handover
                || self.membership.contains(&msg.from)
                || !self.membership.contains(&self.config.id))
    }

    /// The membership as of `index`: the latest membership entry at or
    /// before it, else the snapshot's, else the starting one. Stored in a
    /// snapshot taken at `index`. `None` if all this node has to go on is an
    /// empty starting membership: it joined a running cluster, and the
    /// membership before the entry that added it was never sent to it.
    pub(super) fn known_membership_at(&self, index: Index) -> Option<Membership> {
        let (from_index, membership) = self.find_membership(index);
        let unknown = from_index == 0 && self.config.voters.is_empty();
        (!unknown).then_some(membership)
    }

    fn find_membership(&self, index: Index) -> (Index, Membership) {
        let upto = index.min(self.log.last_index());
        let in_log = self
            .log
            .slice(self.log.first_index(), upto)
            .iter()
            .rev()
            .find_map(|entry| match &entry.data {
                EntryData::Config(membership) => Some((entry.index, membership.clone())),
                EntryData::Noop | EntryData::Command(_) => None,
            });
        if let Some(found) = in_log {
            return found;
        }
        match &self.snapshot {
            Some(held) => (
                held.snapshot.last_included_index,
                held.snapshot.membership.clone(),
            ),
            None => (0, self.starting_membership()),
        }
    }

    fn starting_membership(&self) -> Membership {
        let voters = self
            .config
            .voters
            .iter()
            .map(|id| {
                let address = self.config.addresses.get(id).cloned().unwrap_or_default();
                (id.clone(), address)
            })
            .collect();
        Membership {
            voters,
            learners: Default::default(),
            incarnations: Default::default(),
        }
    }

    /// Recomputes the membership from the log (after it was truncated, or a
    /// snapshot replaced it, or at start).
    pub(super) fn refresh_membership(&mut self) {
        let (index, membership) = self.find_membership(self.log.last_index());
        self.membership = membership;
        self.membership_index = index;
        self.sync_progress();
    }

    /// The log changed from `index` on: if that could have dropped or added
    /// a membership entry, find the one in force again. Appends are checked
    /// entry by entry, so the usual case costs nothing.
    pub(super) fn note_log_changed(&mut self, from: Index) {
        if from <= self.membership_index {
            self.refresh_membership();
            return;
        }
        let newest = self
            .log
            .slice(from, self.log.last_index())
            .iter()
            .rev()
            .find_map(|entry| match &entry.data {
                EntryData::Config(membership) => Some((entry.index, membership.clone())),
                EntryData::Noop | EntryData::Command(_) => None,
            });
        if let Some((index, membership)) = newest {
            self.membership = membership;
            self.membership_index = index;
            self.sync_progress();
        }
    }

    /// A leader keeps one `Progress` per member, no more, no fewer.
    fn sync_progress(&mut self) {
        let members = self.peers();
        let next_index = self.log.last_index() + 1;
        if let Role::Leader(leader) = &mut self.role {
            leader.progress.retain(|id, _| members.contains(id));
            for id in members {
                leader
                    .progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next_index));
            }
        }
    }

    /// Adds a server as a learner (dissertation §4.2.1). It is promoted to
    /// voter by the leader once it has caught up.
    pub fn add_learner(&mut self, id: NodeId, address: String) -> Result<Index, MembershipError> {
        self.check_can_change()?;
        if self.membership.contains(&id) {
            return Err(MembershipError::AlreadyMember(id));
        }
        let mut next = self.membership.clone();
        next.learners.insert(id.clone(), address);
        self.events.push(Event::LearnerAdded { id });
        Ok(self.append_as_leader(EntryData::Config(next)))
    }

    /// Removes a voter or a learner (dissertation §4.2.2).
    pub fn remove_member(&mut self, id: NodeId) -> Result<Index, MembershipError> {
        self.check_can_change()?;
        if !self.membership.contains(&id) {
            return Err(MembershipError::NotMember(id));
        }
        let mut next = self.membership.clone();
        next.learners.remove(&id);
        if next.voters.remove(&id).is_some() && next.voters.is_empty() {
            return Err(MembershipError::LastVoter(id));
        }
        self.events.push(Event::MemberRemoved { id });
        Ok(self.append_as_leader(EntryData::Config(next)))
    }

    /// One change at a time, and only once this leader has committed an
    /// entry of its own term.
    fn check_can_change(&self) -> Result<(), MembershipError> {
        if !matches!(self.role, Role::Leader(_)) {
            return Err(MembershipError::NotLeader(self.not_leader()));
        }
        let committed_in_term = self.log.term_at(self.commit_index) == Some(self.current_term);
        let busy = self.members_change_pending() || !committed_in_term;
        let one_at_a_time = rule!(self, !busy, broken_by overlapping_membership_changes);
        if !one_at_a_time {
            return Err(MembershipError::ChangeInProgress);
        }
        Ok(())
    }

    /// True if a membership entry that changes who votes or learns is not
    /// committed yet. An entry that only records incarnations keeps the
    /// same voters, hence the same majorities, so another change may follow
    /// it at once: every two memberships in use still differ by at most one
    /// server (dissertation §4.1).
    fn members_change_pending(&self) -> bool {
        if self.membership_index <= self.commit_index {
            return false;
        }
        self.known_membership_at(self.commit_index)
            .is_none_or(|committed| {
                committed.voters != self.membership.voters
                    || committed.learners != self.membership.learners
            })
    }

    /// Promotes a learner that has caught up with the leader's commit index
    /// (dissertation §4.2.1), if no other change is under way.
    pub(super) fn maybe_promote(&mut self, id: &NodeId) {
        let caught_up = match &self.role {
            Role::Leader(leader) => leader
                .progress
                .get(id)
                .is_some_and(|p| p.match_index >= self.commit_index),
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => false,
        };
        if !caught_up || !self.membership.learners.contains_key(id) {
            return;
        }
        if self.check_can_change().is_err() {
            return;
        }
        let incarnation = match &self.role {
            Role::Leader(leader) => leader.progress.get(id).and_then(|p| p.incarnation),
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => None,
        };
        let mut next = self.membership.clone();
        if let Some(address) = next.learners.remove(id) {
            next.voters.insert(id.clone(), address);
        }
        // The new voter's votes count from the directory that caught up.
        if let Some(incarnation) = incarnation.filter(|i| *i != 0) {
            next.incarnations.insert(id.clone(), incarnation);
        }
        self.events.push(Event::LearnerPromoted { id: id.clone() });
        self.append_as_leader(EntryData::Config(next));
    }

    /// Writes what this leader learned about its members' data directories
    /// into the membership, one entry at a time (like any membership change,
    /// only once the previous one committed):
    ///
    /// - a member whose incarnation is not recorded yet gets it recorded
    ///   (the leader's own too); the voters stay the same, so majorities do
    ///   not change;
    /// - a voter that lost entries it acknowledged, or that answers from a
    ///   new directory, becomes a learner, with the new incarnation recorded.
    ///   One voter at a time: that is a single-server change (dissertation
    ///   §4.1, §4.2.1). It becomes a voter again by the usual promotion once
    ///   caught up (`maybe_promote`). Replacing the old directory by the new
    ///   one as a voter in one step would be two changes at once: the
    ///   majorities with the old directory and with the new one need not
    ///   overlap;
    /// - a learner that answers from a new directory gets it recorded.
    pub(super) fn maybe_record_incarnations(&mut self) {
        let Role::Leader(leader) = &self.role else {
            return;
        };
        if !self.incarnations_to_record(leader) {
            return; // the usual case, on every answer: nothing to write
        }
        let mut next = self.membership.clone();
        let me = &self.config.id;
        if self.config.incarnation != 0 && next.contains(me) && !next.incarnations.contains_key(me)
        {
            next.incarnations
                .insert(me.clone(), self.config.incarnation);
        }
        let mut demoted = None;
        for (id, progress) in &leader.progress {
            if !next.contains(id) {
                continue;
            }
            let incarnation = progress.incarnation.filter(|i| *i != 0);
            let recorded = next.incarnations.get(id).copied();
            let replaced = incarnation.is_some_and(|i| recorded.is_some_and(|r| r != i));
            let demote = (replaced || progress.lost_entries) && next.voters.contains_key(id);
            if demote && demoted.is_some() {
                continue; // one voter at a time
            }
            if demote {
                if let Some(address) = next.voters.remove(id) {
                    next.learners.insert(id.clone(), address);
                }
                demoted = Some(id.clone());
            }
            if let Some(incarnation) = incarnation {
                next.incarnations.insert(id.clone(), incarnation);
            }
        }
        if next == self.membership || self.check_can_change().is_err() {
            return;
        }
        if let Role::Leader(leader) = &mut self.role {
            // A voter that lost entries but waits for its turn keeps the flag.
            for (id, progress) in leader.progress.iter_mut() {
                if !next.voters.contains_key(id) {
                    progress.lost_entries = false;
                }
            }
        }
        if let Some(id) = demoted {
            self.events.push(Event::MemberDemoted { id });
        }
        self.append_as_leader(EntryData::Config(next));
    }

    /// Whether `maybe_record_incarnations` has anything to write: an
    /// incarnation known but not recorded (the leader's own included), or a
    /// voter that lost entries.
    fn incarnations_to_record(&self, leader: &super::LeaderState) -> bool {
        let recorded = &self.membership.incarnations;
        let me = &self.config.id;
        let own_missing = self.config.incarnation != 0
            && self.membership.contains(me)
            && !recorded.contains_key(me);
        own_missing
            || leader.progress.iter().any(|(id, progress)| {
                let known = progress.incarnation.filter(|i| *i != 0);
                let unrecorded = known.is_some() && recorded.get(id) != known.as_ref();
                self.membership.contains(id)
                    && (unrecorded
                        || (progress.lost_entries && self.membership.voters.contains_key(id)))
            })
    }

    /// Dissertation §4.2.2: once a membership without the leader commits,
    /// the leader steps down. It first hands over (§3.10): TimeoutNow to the
    /// voter with the most of its log, so the others need not wait an
    /// election timeout to notice it is gone.
    pub(super) fn on_membership_committed(&mut self) {
        let removed = matches!(self.role, Role::Leader(_))
            && self.membership_index <= self.commit_index
            && !self.is_voter();
        if removed {
            if let Some(successor) = self.most_up_to_date_voter(|_| true) {
                self.send(successor, MessageBody::TimeoutNow);
            }
            self.step_down(self.current_term, StepDownReason::Removed);
        }
    }

    /// Dissertation §4.2.3: once the leader has appended a membership
    /// without a server, it sends that server nothing more, so a removed
    /// server never learns it was removed and goes on asking for votes (which
    /// PreVote and stickiness keep harmless). When such a request reaches a
    /// leader, it sends the server the entries it lacks, from where its
    /// request says its log ends, with the commit index: the server then
    /// holds the membership without itself, committed, and stops standing
    /// for election. Only for a server that was a voter where its log ends;
    /// anyone else asking is a stranger and gets nothing.
    pub(super) fn catch_up_removed_server(&mut self, msg: &Message) {
        let (last_log_index, last_log_term) = match msg.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            }
            | MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => (last_log_index, last_log_term),
            _ => return,
        };
        let removed = matches!(self.role, Role::Leader(_))
            && !self.membership.contains(&msg.from)
            && msg.from != self.config.id
            && self
                .find_membership(last_log_index)
                .1
                .voters
                .contains_key(&msg.from);
        let log_matches = last_log_index < self.log.last_index()
            && self.log.term_at(last_log_index) == Some(last_log_term);
        if !removed || !log_matches {
            return;
        }
        let entries = self
            .log
            .batch_from(last_log_index + 1, MAX_ENTRIES_PER_APPEND, MAX_APPEND_BYTES)
            .to_vec();
        let body = MessageBody::AppendEntries {
            prev_log_index: last_log_index,
            prev_log_term: last_log_term,
            entries,
            leader_commit: self.commit_index,
            read_seq: 0,
            seq: 0,
        };
        self.send(msg.from.clone(), body);
    }

    /// For a leader: the voter (not itself) with the highest `match_index`
    /// among those `eligible` accepts; among equals, the first in id order.
    /// Who to hand leadership to (§3.10), here when the leader is removed
    /// and in the driver when it shuts down.
    pub fn most_up_to_date_voter(&self, eligible: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        let Role::Leader(leader) = &self.role else {
            return None;
        };
        let mut best: Option<(&NodeId, Index)> = None;
        for (id, progress) in &leader.progress {
            let candidate =
                self.membership.voters.contains_key(id) && *id != self.config.id && eligible(id);
            if candidate && best.is_none_or(|(_, m)| progress.match_index > m) {
                best = Some((id, progress.match_index));
            }
        }
        best.map(|(id, _)| id.clone())
    }
}
