//! What scenarios use to steer and watch a [`Cluster`]: cut and restore
//! links, see who leads, wait for a leader, propose and wait until enough
//! nodes agree. (Crashing, restarting and proposing are in `cluster.rs`,
//! next to the stepping they rely on.)

use super::cluster::Cluster;
use super::trace::trace;
use super::{Failure, FailureKind, TICK};
use raft::core::RoleKind;
use raft::message::{Entry, EntryData, Index, Membership, NodeId, Term};

impl Cluster {
    // ----- the network --------------------------------------------------

    /// Cuts every link to and from `node`.
    pub fn isolate(&mut self, node: usize) {
        self.network.isolate(node);
        trace!(self.trace, self.now, "network: {} isolated", self.ids[node]);
    }

    pub fn reconnect(&mut self, node: usize) {
        self.network.reconnect(node);
        trace!(
            self.trace,
            self.now,
            "network: {} reconnected",
            self.ids[node]
        );
    }

    pub fn heal(&mut self) {
        self.network.heal();
        trace!(self.trace, self.now, "network: healed");
    }

    /// Nodes in different groups cannot talk.
    pub fn split(&mut self, groups: &[Vec<usize>]) {
        self.network.split(groups);
        trace!(
            self.trace,
            self.now,
            "network: cut links {}",
            self.network.describe_cuts()
        );
    }

    // ----- looking at the cluster ---------------------------------------

    /// A `Scenario` failure unless `condition` holds.
    pub fn require(
        &self,
        condition: bool,
        message: impl FnOnce() -> String,
    ) -> Result<(), Failure> {
        if condition {
            Ok(())
        } else {
            Err(Failure::new(FailureKind::Scenario, self.now, message()))
        }
    }

    pub fn is_up(&self, node: usize) -> bool {
        self.nodes[node].is_up()
    }

    pub fn role(&self, node: usize) -> Option<RoleKind> {
        self.nodes[node].raft.as_ref().map(|r| r.role())
    }

    pub fn term(&self, node: usize) -> Term {
        self.nodes[node]
            .raft
            .as_ref()
            .map_or(0, |r| r.current_term())
    }

    pub fn commit_index(&self, node: usize) -> Index {
        self.nodes[node]
            .raft
            .as_ref()
            .map_or(0, |r| r.commit_index())
    }

    pub fn voted_for(&self, node: usize) -> Option<NodeId> {
        self.nodes[node]
            .raft
            .as_ref()
            .and_then(|r| r.voted_for().cloned())
    }

    pub fn last_index(&self, node: usize) -> Index {
        self.nodes[node]
            .raft
            .as_ref()
            .map_or(0, |r| r.log().last_index())
    }

    /// Nodes that are up and leading, with their terms.
    pub fn leaders(&self) -> Vec<(usize, Term)> {
        (0..self.nodes.len())
            .filter(|&n| self.role(n) == Some(RoleKind::Leader))
            .map(|n| (n, self.term(n)))
            .collect()
    }

    /// The index of the node called `id`.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.ids.iter().position(|other| other == id)
    }

    /// The membership `node` uses now (voters and learners), if it is up.
    pub fn membership(&self, node: usize) -> Option<&Membership> {
        self.nodes[node].raft.as_ref().map(|r| r.membership())
    }

    /// The nodes `node`'s membership names, voters and learners.
    pub fn members_of(&self, node: usize) -> Vec<usize> {
        self.membership(node).map_or(Vec::new(), |m| {
            m.voters
                .keys()
                .chain(m.learners.keys())
                .filter_map(|id| self.index_of(id))
                .collect()
        })
    }

    /// The voters in `node`'s membership.
    pub fn voters_of(&self, node: usize) -> Vec<usize> {
        self.membership(node).map_or(Vec::new(), |m| {
            m.voters.keys().filter_map(|id| self.index_of(id)).collect()
        })
    }

    /// A leader that a majority of the voters in its membership (itself
    /// included, if it votes) follow in its term, over links that work both
    /// ways: the cluster has a working leader. (A leader cut off from the
    /// others may still believe it leads, and its followers may not have
    /// noticed yet; neither counts.)
    pub fn working_leader(&self) -> Option<usize> {
        self.leaders().into_iter().map(|(n, _)| n).find(|&leader| {
            let term = self.term(leader);
            let voters = self.voters_of(leader);
            let followers = voters
                .iter()
                .filter(|&&n| {
                    n == leader
                        || (self.network.connected(leader, n)
                            && self.network.connected(n, leader)
                            && self.nodes[n].raft.as_ref().is_some_and(|r| {
                                r.current_term() == term && r.leader() == Some(&self.ids[leader])
                            }))
                })
                .count();
            followers > voters.len() / 2
        })
    }

    /// A leader that *every* member up (voter or learner, in its
    /// membership) follows, in the term every one of them has. Machines
    /// that are not members (removed, or not yet added) do not count.
    pub fn settled_leader(&self) -> Option<usize> {
        let leader = self.working_leader()?;
        let term = self.term(leader);
        let settled = self.members_of(leader).into_iter().all(|n| {
            self.nodes[n]
                .raft
                .as_ref()
                .is_none_or(|r| r.current_term() == term && r.leader() == Some(&self.ids[leader]))
        });
        settled.then_some(leader)
    }

    /// Runs until some node is a working leader; fails after `ticks`.
    pub fn wait_for_leader(&mut self, ticks: u64) -> Result<usize, Failure> {
        if self.run_until(ticks, |c| c.working_leader().is_some())? {
            return Ok(self.working_leader().expect("just seen"));
        }
        Err(Failure::new(
            FailureKind::Liveness,
            self.now,
            format!("no leader within {ticks} ticks; terms {:?}", self.terms()),
        ))
    }

    /// Each node's term (0 if down).
    pub fn terms(&self) -> Vec<Term> {
        (0..self.nodes.len()).map(|n| self.term(n)).collect()
    }

    /// How many nodes have committed `command` at `index` (and whether any
    /// committed something else there: the checker would have failed). A
    /// node that compacted the entry away holds what the checker's committed
    /// log holds there.
    pub fn committed_count(&self, index: Index, command: &str) -> usize {
        let is_command = |e: &Entry| matches!(&e.data, EntryData::Command(c) if c == command);
        let compacted_is_command = self.checker.committed_entry(index).is_some_and(is_command);
        self.nodes
            .iter()
            .filter_map(|n| n.raft.as_ref())
            .filter(|r| {
                r.commit_index() >= index
                    && match r.log().get(index) {
                        Some(entry) => is_command(entry),
                        None => index <= r.snapshot_index() && compacted_is_command,
                    }
            })
            .count()
    }

    /// Proposes `command` at whichever node leads, and waits until at least
    /// `expected` nodes have committed it. Retries on other leaders for up
    /// to `ticks`. Returns the index it committed at.
    pub fn agree(&mut self, command: &str, expected: usize, ticks: u64) -> Result<Index, Failure> {
        let deadline = self.now + ticks * TICK;
        while self.now < deadline {
            let leader = self.leaders().into_iter().max_by_key(|&(_, term)| term);
            if let Some((leader, _)) = leader {
                if let Ok(index) = self.propose(leader, command)? {
                    let remaining = ((deadline - self.now) / TICK).clamp(1, 20);
                    if self
                        .run_until(remaining, |c| c.committed_count(index, command) >= expected)?
                    {
                        return Ok(index);
                    }
                    continue;
                }
            }
            self.run_for(1)?;
        }
        Err(Failure::new(
            FailureKind::Liveness,
            self.now,
            format!("{command:?} was not committed on {expected} nodes within {ticks} ticks"),
        ))
    }
}
