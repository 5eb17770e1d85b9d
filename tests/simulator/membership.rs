//! Membership changes during a randomised run: a [`Plan`] of additions and
//! removals, carried out one at a time at whichever node leads, while the
//! faults go on and the clients keep writing.
//!
//! Each step is driven the way an operator would drive it: ask the leader
//! (`add`, `remove`), and if the request is refused (no leader, a change
//! still in progress) or its entry is lost (the leader crashed before it
//! committed), ask again later, until the change shows in the *committed*
//! log. An added machine starts empty, with no voters (`--join`), joins as
//! a learner and is promoted by the leader once it has caught up; a
//! removed machine keeps running for a while (it may still campaign, and
//! must not disturb anyone) and is then retired for good.
//!
//! The checker watches every step as usual: in particular Election Safety
//! (never two leaders in one term), which is what a membership change done
//! wrong breaks first.

use super::cluster::Cluster;
use super::random::{self, Faults, LEADER_BOUND_TICKS};
use super::trace::trace;
use super::{Failure, FailureKind, TICK};
use raft::message::{EntryData, Membership};
use rand::seq::IndexedRandom;
use rand::Rng;

/// One membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new machine is switched on and added: learner first, then voter.
    Add,
    /// A voter is removed; it is retired a little later.
    Remove(Pick),
    /// A follower dies for good (it is retired at once, still a member):
    /// the machine that the following steps replace.
    Kill,
    /// `Add` while there are at most 3 voters, `Remove` (of any voter,
    /// the leader included) while there are 5 or more, either in between.
    AddOrRemove,
}

/// Which voter a `Remove` takes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The node leading when the step begins: a leader removing itself
    /// leads until the change commits, then steps down (§4.2.2).
    Leader,
    /// A voter other than the leader.
    Follower,
    /// The machine the last `Kill` took down.
    Dead,
}

/// The membership changes of a run, in order.
#[derive(Clone, Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// How many voters the committed membership must have at the end.
    pub final_voters: Option<usize>,
    /// An impatient operator: asks for the next change as soon as the
    /// leader has appended the previous one, without waiting for it to
    /// commit. The core must refuse (one change at a time); with the
    /// `overlapping_membership_changes` bug switch it does not.
    pub impatient: bool,
}

impl Plan {
    /// The steps, one at a time, each waiting for the previous one to commit.
    pub fn new(steps: Vec<Step>, final_voters: Option<usize>) -> Plan {
        Plan {
            steps,
            final_voters,
            impatient: false,
        }
    }
}

/// The step under way, with its machine chosen.
#[derive(Clone, Copy, Debug)]
enum Current {
    Add(usize),
    Remove(usize),
}

/// Where a plan stands.
pub struct Progress {
    plan: Plan,
    /// The index of the next step to begin.
    next: usize,
    /// Steps begun and not yet committed (more than one only for an
    /// impatient plan), oldest first.
    pending: Vec<Current>,
    /// The machine the last `Kill` took down.
    dead: Option<usize>,
    /// Removed machines, still running, to retire at the next turn.
    to_retire: Vec<usize>,
    committed: usize,
    /// Removals whose entry was appended by the removed node itself, as
    /// leader.
    pub leaders_removed_themselves: usize,
}

/// After the calm begins, the plan must finish within this many ticks.
pub const FINISH_BOUND_TICKS: u64 = 300;

impl Progress {
    pub fn new(plan: &Plan) -> Progress {
        Progress {
            plan: plan.clone(),
            next: 0,
            pending: Vec::new(),
            dead: None,
            to_retire: Vec::new(),
            committed: 0,
            leaders_removed_themselves: 0,
        }
    }

    /// True once every step has committed.
    pub fn done(&self) -> bool {
        self.pending.is_empty() && self.next == self.plan.steps.len()
    }

    /// Changes committed so far.
    pub fn committed_changes(&self) -> usize {
        self.committed
    }

    /// The faulty phase of a run with membership changes: a fault, then a
    /// turn of the plan, over and over, for `ticks` and then for as long as
    /// the plan is unfinished (up to four times as long). Clients keep
    /// writing throughout.
    pub fn run_under_faults(
        &mut self,
        cluster: &mut Cluster,
        ticks: u64,
        kinds: Faults,
    ) -> Result<(), Failure> {
        let end = cluster.now + ticks * TICK;
        let limit = cluster.now + 4 * ticks * TICK;
        while cluster.now < end || (!self.done() && cluster.now < limit) {
            // One fault (the faulty phase's loop does one per 5-40 ticks).
            random::faults(cluster, 1, kinds, None, false)?;
            self.turn(cluster)?;
            if cluster.clients.all_done() && cluster.now < limit {
                let actions = cluster.clients.add_ops(2, cluster.now);
                cluster.schedule_actions(actions);
            }
        }
        Ok(())
    }

    /// After the calm: the plan finishes within `FINISH_BOUND_TICKS`, the
    /// cluster settles again, and the committed membership is what the
    /// plan promised, and what every member uses.
    pub fn finish(&mut self, cluster: &mut Cluster) -> Result<(), Failure> {
        let deadline = cluster.now + FINISH_BOUND_TICKS * TICK;
        while !self.done() && cluster.now < deadline {
            cluster.run_for(2)?;
            self.turn(cluster)?;
        }
        if !self.done() {
            return Err(Failure::new(
                FailureKind::Liveness,
                cluster.now,
                format!(
                    "membership step {} of {:?} ({:?}) not committed {FINISH_BOUND_TICKS} ticks \
                     into the calm; committed voters {:?}",
                    self.next,
                    self.plan.steps,
                    self.pending,
                    committed_membership(cluster)
                        .voters
                        .keys()
                        .collect::<Vec<_>>()
                ),
            ));
        }
        for node in std::mem::take(&mut self.to_retire) {
            cluster.retire(node);
        }
        let committed = committed_membership(cluster);
        let settled = cluster.run_until(LEADER_BOUND_TICKS, |c| {
            c.settled_leader().is_some_and(|leader| {
                let commit = c.commit_index(leader);
                commit == c.last_index(leader)
                    && c.members_of(leader).into_iter().all(|n| {
                        c.nodes[n].raft.as_ref().is_none_or(|r| {
                            c.nodes[n].applied == commit && *r.membership() == committed
                        })
                    })
            })
        })?;
        if !settled {
            return Err(Failure::new(
                FailureKind::Liveness,
                cluster.now,
                format!(
                    "the members did not settle on the committed membership {:?}",
                    committed.voters.keys().collect::<Vec<_>>()
                ),
            ));
        }
        if let Some(expected) = self.plan.final_voters {
            cluster.require(committed.voters.len() == expected, || {
                format!(
                    "the plan should end with {expected} voters, not {:?}",
                    committed.voters.keys().collect::<Vec<_>>()
                )
            })?;
        }
        let retired_member = committed
            .voters
            .keys()
            .chain(committed.learners.keys())
            .find(|id| {
                cluster
                    .index_of(id)
                    .is_some_and(|n| cluster.nodes[n].retired)
            });
        cluster.require(retired_member.is_none(), || {
            format!("{retired_member:?} was retired but is still a member")
        })
    }

    /// One turn: retire what was removed, note what committed, begin the
    /// next step if it is time, and push the steps under way along.
    fn turn(&mut self, cluster: &mut Cluster) -> Result<(), Failure> {
        for node in std::mem::take(&mut self.to_retire) {
            cluster.retire(node);
        }
        let committed = committed_membership(cluster);
        let id = |node: usize| cluster.ids[node].clone();
        let (done, pending): (Vec<Current>, Vec<Current>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|current| match *current {
                Current::Add(node) => committed.voters.contains_key(&id(node)),
                Current::Remove(node) => !committed.contains(&id(node)),
            });
        self.pending = pending;
        for current in done {
            self.on_committed(cluster, current);
        }
        let leader = leader(cluster);
        let uses = leader
            .and_then(|l| cluster.membership(l).cloned())
            .unwrap_or_default();
        let asked = |current: &Current| match *current {
            Current::Add(node) => uses.contains(&cluster.ids[node]),
            Current::Remove(node) => !uses.contains(&cluster.ids[node]),
        };
        let time_for_next = match self.pending.last() {
            None => true,
            Some(last) => self.plan.impatient && asked(last),
        };
        if time_for_next {
            self.begin_step(cluster)?;
        }
        let Some(leader) = leader else {
            return Ok(());
        };
        for current in self.pending.clone() {
            let uses = cluster.membership(leader).cloned().unwrap_or_default();
            match current {
                // Added and not yet promoted: the leader promotes it once it
                // has caught up, nothing to ask.
                Current::Add(node) if !uses.contains(&cluster.ids[node]) => {
                    cluster.add_learner(leader, node)?.ok();
                }
                Current::Remove(node) if uses.contains(&cluster.ids[node]) => {
                    cluster.remove_member(leader, node)?.ok();
                }
                // Asked for; waiting for it to commit.
                Current::Add(_) | Current::Remove(_) => {}
            }
        }
        Ok(())
    }

    /// Chooses the machine for the next step (or does a `Kill`).
    fn begin_step(&mut self, cluster: &mut Cluster) -> Result<(), Failure> {
        let Some(&step) = self.plan.steps.get(self.next) else {
            return Ok(());
        };
        let voters: Vec<usize> = committed_membership(cluster)
            .voters
            .keys()
            .filter_map(|id| cluster.index_of(id))
            .collect();
        // The voters once the steps under way are done (an impatient plan
        // may have several).
        let projected = self
            .pending
            .iter()
            .fold(voters.len(), |n, current| match current {
                Current::Add(_) => n + 1,
                Current::Remove(_) => n.saturating_sub(1),
            });
        let step = match step {
            Step::AddOrRemove if projected <= 3 => Step::Add,
            Step::AddOrRemove if projected >= 5 => Step::Remove(Pick::Leader),
            Step::AddOrRemove if cluster.rng.random_bool(0.5) => Step::Add,
            Step::AddOrRemove => Step::Remove(Pick::Follower),
            other => other,
        };
        let leader = leader(cluster);
        let busy: Vec<usize> = self
            .pending
            .iter()
            .map(|current| match *current {
                Current::Add(node) | Current::Remove(node) => node,
            })
            .collect();
        let followers: Vec<usize> = voters
            .iter()
            .copied()
            .filter(|&n| Some(n) != leader && !cluster.nodes[n].retired && !busy.contains(&n))
            .collect();
        match step {
            Step::Add => {
                let node = cluster.add_node()?;
                self.pending.push(Current::Add(node));
            }
            Step::Remove(Pick::Leader) => match leader {
                Some(node) if !busy.contains(&node) => self.pending.push(Current::Remove(node)),
                _ => return Ok(()), // no leader yet: next turn
            },
            Step::Remove(Pick::Follower) => match followers.choose(&mut cluster.rng) {
                Some(&node) => self.pending.push(Current::Remove(node)),
                None => return Ok(()),
            },
            Step::Remove(Pick::Dead) => {
                let dead = self.dead.expect("a Kill before Remove(Dead)");
                self.pending.push(Current::Remove(dead));
            }
            Step::Kill => {
                let Some(&node) = followers.choose(&mut cluster.rng) else {
                    return Ok(());
                };
                trace!(
                    cluster.trace,
                    cluster.now,
                    "{} dies for good",
                    cluster.ids[node]
                );
                cluster.retire(node);
                self.dead = Some(node);
            }
            Step::AddOrRemove => unreachable!("resolved above"),
        }
        trace!(
            cluster.trace,
            cluster.now,
            "membership: step {} ({step:?}) begins: {:?}",
            self.next,
            self.pending.last()
        );
        self.next += 1;
        Ok(())
    }

    fn on_committed(&mut self, cluster: &mut Cluster, current: Current) {
        trace!(
            cluster.trace,
            cluster.now,
            "membership: {current:?} committed"
        );
        self.committed += 1;
        if let Current::Remove(node) = current {
            if removed_by_itself(cluster, node) {
                self.leaders_removed_themselves += 1;
            }
            if !cluster.nodes[node].retired {
                self.to_retire.push(node);
            }
        }
    }
}

/// The node to ask: the working leader, else the leader of the newest term.
fn leader(cluster: &Cluster) -> Option<usize> {
    cluster.working_leader().or_else(|| {
        cluster
            .leaders()
            .into_iter()
            .max_by_key(|&(_, term)| term)
            .map(|(n, _)| n)
    })
}

/// The membership of the committed log: its latest membership entry, else
/// the one the cluster started with.
pub fn committed_membership(cluster: &Cluster) -> Membership {
    let latest = cluster
        .checker
        .committed_entries()
        .filter_map(|entry| match &entry.data {
            EntryData::Config(membership) => Some(membership),
            EntryData::Noop | EntryData::Command(_) => None,
        })
        .last();
    match latest {
        Some(membership) => membership.clone(),
        None => Membership {
            voters: cluster.ids[..cluster.config.size]
                .iter()
                .map(|id| (id.clone(), String::new()))
                .collect(),
            learners: Default::default(),
            incarnations: Default::default(),
        },
    }
}

/// True if the committed entry that removed `node` was appended by `node`
/// itself, as leader of that entry's term.
fn removed_by_itself(cluster: &Cluster, node: usize) -> bool {
    let id = &cluster.ids[node];
    let mut member = node < cluster.config.size;
    let mut removal = None;
    for entry in cluster.checker.committed_entries() {
        if let EntryData::Config(membership) = &entry.data {
            if member && !membership.contains(id) {
                removal = Some(entry.term);
            }
            member = membership.contains(id);
        }
    }
    removal.is_some_and(|term| cluster.checker.leaders().get(&term) == Some(id))
}
