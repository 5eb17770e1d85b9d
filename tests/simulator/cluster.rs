//! The simulated cluster: nodes, network and clients on one virtual clock.
//!
//! Everything that happens is an event in one queue, ordered by virtual time
//! and then by the order it was scheduled, so a run is a pure function of
//! its seed. Handling an event is one *step*: a node ticks or receives a
//! message or a client request, the driver handles the resulting `Ready`s,
//! and then the checker checks every safety property.
//!
//! Scenarios script a situation with the methods at the bottom (crash,
//! restart, propose, add and remove machines) and those in `controls.rs`
//! (cut links, find the leader, wait for agreement).

use super::checker::Checker;
use super::clients::{self, ClientConfig, Clients, Op, Reply, Tag};
use super::network::{Network, NetworkConfig};
use super::node::SimNode;
use super::trace::{self, trace, Trace};
use super::{node_id, Failure, FailureKind, TICK};
use raft::core::{
    BugSwitches, Config, Event as CoreEvent, MembershipError, NotLeader, Raft, TransferError,
};
use raft::message::{EntryData, Incarnation, Index, Message, MessageBody, NodeId, Snapshot};
use raft::state_machine::StateMachine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub size: usize,
    pub seed: u64,
    pub network: NetworkConfig,
    /// Each node's tick period is `TICK` plus or minus up to this much.
    pub max_clock_skew: u64,
    pub election_timeout_ticks: (u64, u64),
    /// Nodes that use their own election timeout instead.
    pub election_timeout_overrides: Vec<(usize, (u64, u64))>,
    pub heartbeat_ticks: u64,
    /// PreVote and CheckQuorum (with leader stickiness), on by default as in
    /// the core; a scenario turns one off to show what it prevents.
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Deliberate bugs in the core.
    pub bugs: BugSwitches,
    /// Whether data directories have incarnations (on by default, as in
    /// the binary). Off, the cluster runs as a program embedding the core
    /// without them would: no membership entries recording them.
    pub incarnations: bool,
    /// A deliberate bug in the simulated driver: send messages before
    /// persisting (the write happens at the node's next step instead).
    pub reply_before_persist: bool,
    /// A deliberate bug in the simulated driver: it never loads a
    /// snapshot's state into the state machine (neither the leader's, nor
    /// its own at a restart), yet goes on from the snapshot's index.
    pub ignore_snapshot_state: bool,
    /// Chance that a node crashes right after a step, just after its
    /// messages went out: the moment a lost write would hurt most.
    pub crash_after_step_rate: f64,
    pub clients: ClientConfig,
    /// When nodes compact their logs into snapshots.
    pub compaction: Compaction,
    /// Print the trace as it happens.
    pub print_trace: bool,
    /// Hash the trace (for the replay check).
    pub hash_trace: bool,
}

impl ClusterConfig {
    /// A reliable network, no clients, the core's default timeouts.
    pub fn new(size: usize, seed: u64) -> ClusterConfig {
        let defaults = Config::new(node_id(0), vec![node_id(0)]);
        ClusterConfig {
            size,
            seed,
            network: NetworkConfig::reliable(),
            max_clock_skew: TICK / 10,
            election_timeout_ticks: defaults.election_timeout_ticks,
            election_timeout_overrides: Vec::new(),
            heartbeat_ticks: defaults.heartbeat_ticks,
            pre_vote: defaults.pre_vote,
            check_quorum: defaults.check_quorum,
            bugs: BugSwitches::default(),
            incarnations: true,
            reply_before_persist: false,
            ignore_snapshot_state: false,
            crash_after_step_rate: 0.0,
            clients: ClientConfig::none(),
            compaction: Compaction::Off,
            print_trace: super::trace_wanted(),
            hash_trace: false,
        }
    }
}

/// When nodes compact their logs (§7). A node only ever compacts what it
/// has applied, at `compact(last_applied, state)`, between two steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compaction {
    /// Never: logs keep every entry.
    Off,
    /// Once this many entries were applied since the last snapshot, as the
    /// real node does with `--snapshot-entries`.
    EveryEntries(u64),
    /// After any step, with this probability, if anything was applied
    /// since the last snapshot: snapshots at random points, so that every
    /// situation sooner or later meets one.
    Random(f64),
}

/// Something that will happen at a given virtual time.
#[derive(Debug)]
enum Event {
    /// A node's clock ticks. Each incarnation has its own chain of ticks,
    /// which ends when it crashes.
    Tick {
        node: usize,
        incarnation: u32,
    },
    /// A Raft message arrives.
    Deliver {
        from: usize,
        to: usize,
        msg: Message,
    },
    /// A client's request arrives at a node.
    Request {
        node: usize,
        tag: Tag,
        op: Op,
    },
    /// A node's answer arrives at a client.
    Reply {
        tag: Tag,
        reply: Reply,
    },
    ClientWake(usize),
    ClientTimeout(Tag),
    /// A node that crashed by itself comes back.
    Restart(usize),
}

/// An event in the queue. Ordered by time, then by scheduling order.
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Counts of messages sent between nodes.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub request_vote: u64,
    pub vote_response: u64,
    pub append_entries: u64,
    pub append_response: u64,
    /// AppendEntries refused because of a log mismatch.
    pub append_refused: u64,
    /// PreVote, TimeoutNow and InstallSnapshot messages and their answers.
    pub other: u64,
    /// InstallSnapshot chunks delivered to a running node.
    pub snapshot_chunks_delivered: u64,
    /// Snapshots installed from a leader, and taken by compaction.
    pub snapshots_installed: u64,
    pub snapshots_taken: u64,
    /// Steps taken (events handled by a running node).
    pub steps: u64,
    pub crashes: u64,
    /// Data directories created, and disks lost (emptied or cut back).
    pub directories: u64,
    pub disks_lost: u64,
    /// Losses leaders reported (`Event::LostEntries`).
    pub losses_reported: u64,
    /// Messages refused as ones Raft rules out (`Event::ImpossibleMessage`):
    /// correct nodes never send them, so a run with no bug switch and no
    /// disk loss has none.
    pub impossible_messages: u64,
    /// Messages sent on each directed link `(from, to)`.
    pub link_messages: std::collections::BTreeMap<(usize, usize), u64>,
}

impl Stats {
    pub fn messages(&self) -> u64 {
        self.request_vote
            + self.vote_response
            + self.append_entries
            + self.append_response
            + self.other
    }
}

/// What a step is about.
enum Input {
    Tick,
    Message(Message),
    Request { tag: Tag, op: Op },
    Propose(String),
}

/// Most `Ready`s one step may produce; more means the core is looping.
const MAX_READY_ROUNDS: usize = 16;

pub struct Cluster {
    pub config: ClusterConfig,
    /// Virtual time.
    pub now: u64,
    /// The run's one source of randomness.
    pub rng: StdRng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    pub nodes: Vec<SimNode>,
    pub ids: Vec<NodeId>,
    pub network: Network,
    pub checker: Checker,
    pub clients: Clients,
    pub trace: Trace,
    pub stats: Stats,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Result<Cluster, Failure> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let ids: Vec<NodeId> = (0..config.size).map(node_id).collect();
        let nodes = ids
            .iter()
            .map(|_| {
                let skew = rng.random_range(0..=2 * config.max_clock_skew);
                SimNode::new(TICK - config.max_clock_skew + skew)
            })
            .collect();
        let clients = Clients::new(config.clients.clone(), config.size, &mut rng);
        let mut cluster = Cluster {
            now: 0,
            queue: BinaryHeap::new(),
            next_seq: 0,
            nodes,
            network: Network::new(config.size, config.network.clone()),
            checker: Checker::new(&ids),
            ids,
            clients,
            trace: Trace::new(config.print_trace, config.hash_trace),
            stats: Stats::default(),
            rng,
            config,
        };
        trace!(
            cluster.trace,
            0,
            "cluster of {} (seed {}), tick periods {:?}",
            cluster.config.size,
            cluster.config.seed,
            cluster
                .nodes
                .iter()
                .map(|n| n.tick_period)
                .collect::<Vec<_>>()
        );
        for node in 0..cluster.config.size {
            cluster.nodes[node].disk.incarnation = cluster.new_incarnation();
            cluster.start_node(node)?;
        }
        let actions = cluster.clients.start(0, &mut cluster.rng);
        cluster.schedule_actions(actions);
        Ok(cluster)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse(Scheduled { at, seq, event }));
    }

    fn raft_config(&self, node: usize) -> Config {
        // The machines the cluster started with know each other; one added
        // later starts with no voters at all and learns the membership from
        // the leader (`Config::voters` is empty for a joining node).
        let voters = if node < self.config.size {
            self.ids[..self.config.size].to_vec()
        } else {
            Vec::new()
        };
        let mut config = Config::new(self.ids[node].clone(), voters);
        config.election_timeout_ticks = self
            .config
            .election_timeout_overrides
            .iter()
            .find(|(n, _)| *n == node)
            .map_or(self.config.election_timeout_ticks, |&(_, timeout)| timeout);
        config.heartbeat_ticks = self.config.heartbeat_ticks;
        config.pre_vote = self.config.pre_vote;
        config.check_quorum = self.config.check_quorum;
        config.bugs = self.config.bugs;
        config
    }

    /// Boots a node from its disk, with a fresh seed drawn from the run's
    /// RNG, and starts its clock at a random phase.
    fn start_node(&mut self, node: usize) -> Result<(), Failure> {
        let seed = self.rng.random();
        let config = self.raft_config(node);
        let now = self.now;
        self.nodes[node].ignore_snapshot_state = self.config.ignore_snapshot_state;
        self.nodes[node].start(config, seed).map_err(|e| {
            Failure::new(FailureKind::Driver, now, format!("{}: {e}", self.ids[node]))
        })?;
        let sim = &self.nodes[node];
        let raft = sim.raft.as_ref().expect("just started");
        trace!(
            self.trace,
            self.now,
            "{} starts (incarnation {}): term {}, voted for {:?}, {} log entries{}",
            self.ids[node],
            sim.incarnation,
            raft.current_term(),
            raft.voted_for().map(|v| v.as_str()),
            raft.log().last_index(),
            match raft.snapshot_index() {
                0 => String::new(),
                index => format!(" (a snapshot up to {index})"),
            }
        );
        self.checker.on_restart(node, raft, now)?;
        self.checker
            .check_state(node, sim.applied, &sim.state.read(), now)?;
        let first_tick = self.now + self.rng.random_range(1..=self.nodes[node].tick_period);
        let incarnation = self.nodes[node].incarnation;
        self.schedule(first_tick, Event::Tick { node, incarnation });
        Ok(())
    }

    // ----- running ------------------------------------------------------

    /// Handles every event up to and including virtual time `until`.
    pub fn run_until_time(&mut self, until: u64) -> Result<(), Failure> {
        while self.queue.peek().is_some_and(|next| next.0.at <= until) {
            self.step_once()?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs for `ticks` nominal ticks.
    pub fn run_for(&mut self, ticks: u64) -> Result<(), Failure> {
        self.run_until_time(self.now + ticks * TICK)
    }

    /// Runs until `done` holds (checked after every step) or `ticks` pass.
    /// Returns whether `done` held.
    pub fn run_until(
        &mut self,
        ticks: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Result<bool, Failure> {
        let deadline = self.now + ticks * TICK;
        if done(self) {
            return Ok(true);
        }
        while self.queue.peek().is_some_and(|next| next.0.at <= deadline) {
            self.step_once()?;
            if done(self) {
                return Ok(true);
            }
        }
        self.now = self.now.max(deadline);
        Ok(false)
    }

    fn step_once(&mut self) -> Result<(), Failure> {
        let Some(Reverse(next)) = self.queue.pop() else {
            return Ok(());
        };
        self.now = next.at;
        match next.event {
            Event::Tick { node, incarnation } => {
                let sim = &self.nodes[node];
                if sim.is_up() && sim.incarnation == incarnation {
                    self.schedule(
                        self.now + sim.tick_period,
                        Event::Tick { node, incarnation },
                    );
                    self.step_node(node, Input::Tick)?;
                }
            }
            Event::Deliver { from, to, msg } => {
                if !self.nodes[to].is_up() {
                    trace!(
                        self.trace,
                        self.now,
                        "lost (receiver down): {}",
                        trace::message(&msg)
                    );
                } else if !self.network.connected(from, to) {
                    trace!(
                        self.trace,
                        self.now,
                        "lost (link cut): {}",
                        trace::message(&msg)
                    );
                } else {
                    trace!(self.trace, self.now, "{}", trace::message(&msg));
                    if matches!(msg.body, MessageBody::InstallSnapshot { .. }) {
                        self.stats.snapshot_chunks_delivered += 1;
                    }
                    self.step_node(to, Input::Message(msg))?;
                }
            }
            Event::Request { node, tag, op } => {
                let lost = if self.nodes[node].is_up() {
                    ""
                } else {
                    " (lost: node down)"
                };
                trace!(
                    self.trace,
                    self.now,
                    "client {} -> {}: {:?}{lost}",
                    tag.client,
                    self.ids[node],
                    op
                );
                self.step_node(node, Input::Request { tag, op })?;
            }
            Event::Reply { tag, reply } => {
                trace!(self.trace, self.now, "client {} <- {:?}", tag.client, reply);
                let actions = self.clients.on_reply(tag, reply, self.now, &mut self.rng);
                self.schedule_actions(actions);
            }
            Event::ClientWake(client) => {
                let actions = self.clients.wake(client, self.now, &mut self.rng);
                self.schedule_actions(actions);
            }
            Event::ClientTimeout(tag) => {
                let actions = self.clients.on_timeout(tag, self.now, &mut self.rng);
                if !actions.is_empty() {
                    trace!(self.trace, self.now, "client {} timed out", tag.client);
                }
                self.schedule_actions(actions);
            }
            Event::Restart(node) => {
                if !self.nodes[node].is_up() && !self.nodes[node].retired {
                    self.start_node(node)?;
                }
            }
        }
        Ok(())
    }

    pub fn schedule_actions(&mut self, actions: Vec<clients::Action>) {
        for action in actions {
            match action {
                clients::Action::Send { node, tag, op } => {
                    let delay = self.client_delay();
                    self.schedule(self.now + delay, Event::Request { node, tag, op });
                }
                clients::Action::Wake { client, at } => {
                    self.schedule(at, Event::ClientWake(client))
                }
                clients::Action::Timeout { tag, at } => {
                    self.schedule(at, Event::ClientTimeout(tag))
                }
            }
        }
    }

    /// Clients talk to nodes over a plain network: delayed, never lost (a
    /// request to a node that is down is lost, though).
    fn client_delay(&mut self) -> u64 {
        self.rng.random_range(TICK / 10..=TICK)
    }

    /// One step of one node: the input, then every `Ready` it produces,
    /// then the safety checks.
    fn step_node(
        &mut self,
        node: usize,
        input: Input,
    ) -> Result<Option<Result<Index, NotLeader>>, Failure> {
        if !self.nodes[node].is_up() {
            return Ok(None);
        }
        self.stats.steps += 1;
        let now = self.now;
        // With `reply_before_persist`, the previous step's writes land now.
        self.nodes[node]
            .write_postponed()
            .map_err(|e| Failure::new(FailureKind::Driver, now, e))?;
        let sim = &mut self.nodes[node];
        let raft = sim.raft.as_mut().expect("up");
        let mut proposed = None;
        let mut replies = Vec::new();
        match input {
            Input::Tick => raft.tick(),
            Input::Message(msg) => raft.step(msg),
            Input::Request { tag, op } => replies = sim.client_request(tag, &op),
            Input::Propose(command) => proposed = Some(raft.propose(command)),
        }
        self.send_replies(replies);
        self.drain_ready(node)?;
        self.maybe_compact(node)?;
        let raft = self.nodes[node].raft.as_ref().expect("up");
        self.checker.after_step(node, raft, now)?;
        if self.config.crash_after_step_rate > 0.0
            && self.rng.random_bool(self.config.crash_after_step_rate)
        {
            let downtime = self.rng.random_range(5..=50);
            self.crash_for(node, downtime);
        }
        Ok(proposed)
    }

    /// Hands every `Ready` to the node's driver, then sends what it says.
    fn drain_ready(&mut self, node: usize) -> Result<(), Failure> {
        let now = self.now;
        for _ in 0..MAX_READY_ROUNDS {
            let sim = &mut self.nodes[node];
            if !sim.raft.as_ref().expect("up").has_ready() {
                return Ok(());
            }
            let handled = sim
                .handle_ready(self.config.reply_before_persist)
                .map_err(|e| {
                    Failure::new(FailureKind::Driver, now, format!("{}: {e}", self.ids[node]))
                })?;
            let ready = &handled.ready;
            self.trace_ready(node, ready);
            self.checker.on_messages_sent(&ready.messages, now)?;
            if let Some(snapshot) = &ready.snapshot {
                self.stats.snapshots_installed += 1;
                self.checker.on_snapshot(node, snapshot, true, now)?;
            }
            self.checker.on_applied(node, &ready.committed, now)?;
            if ready.snapshot.is_some() || !ready.committed.is_empty() {
                let sim = &self.nodes[node];
                self.checker
                    .check_state(node, sim.applied, &sim.state.read(), now)?;
            }
            for &(read_index, applied) in &handled.reads_answered {
                self.checker
                    .on_read_answered(node, read_index, applied, now)?;
            }
            for msg in handled.ready.messages {
                self.send(node, msg);
            }
            self.send_replies(handled.replies);
        }
        Err(Failure::new(
            FailureKind::Driver,
            now,
            format!(
                "{} still has work after {MAX_READY_ROUNDS} Readys in one step",
                self.ids[node]
            ),
        ))
    }

    fn trace_ready(&mut self, node: usize, ready: &raft::core::Ready) {
        self.stats.losses_reported += ready
            .events
            .iter()
            .filter(|e| matches!(e, CoreEvent::LostEntries { .. }))
            .count() as u64;
        self.stats.impossible_messages += ready
            .events
            .iter()
            .filter(|e| matches!(e, CoreEvent::ImpossibleMessage { .. }))
            .count() as u64;
        if !self.trace.is_on() {
            return;
        }
        let id = &self.ids[node];
        for event in &ready.events {
            let line = match event {
                CoreEvent::ElectionStarted { term } => {
                    format!("{id} starts an election for term {term}")
                }
                CoreEvent::BecameLeader { term } => format!("{id} is leader of term {term}"),
                CoreEvent::SteppedDown { term, reason } => {
                    format!("{id} steps down (term {term}, {reason:?})")
                }
                other => format!("{id}: {other:?}"),
            };
            trace!(self.trace, self.now, "{line}");
        }
        if let Some(snapshot) = &ready.snapshot {
            trace!(
                self.trace,
                self.now,
                "{id} installs the leader's snapshot up to {}@t{} ({} bytes of state); its log \
                 now holds {}..={}",
                snapshot.last_included_index,
                snapshot.last_included_term,
                snapshot.data.len(),
                snapshot.last_included_index + 1,
                self.nodes[node]
                    .raft
                    .as_ref()
                    .map_or(0, |r| r.log().last_index())
            );
        }
        if let Some(hard_state) = &ready.hard_state {
            trace!(
                self.trace,
                self.now,
                "{id} persists term {} vote {:?}",
                hard_state.current_term,
                hard_state.voted_for.as_ref().map(|v| v.as_str())
            );
        }
        if !ready.entries.is_empty() {
            trace!(
                self.trace,
                self.now,
                "{id} persists entries {}",
                trace::entries(&ready.entries)
            );
        }
        if let Some(last) = ready.committed.last() {
            trace!(
                self.trace,
                self.now,
                "{id} applies up to {}",
                trace::entry(last)
            );
        }
    }

    /// Puts a message on the network.
    fn send(&mut self, from: usize, msg: Message) {
        match &msg.body {
            MessageBody::RequestVote { .. } => self.stats.request_vote += 1,
            MessageBody::RequestVoteResponse { .. } => self.stats.vote_response += 1,
            MessageBody::AppendEntries { .. } => self.stats.append_entries += 1,
            MessageBody::AppendEntriesResponse {
                success, conflict, ..
            } => {
                self.stats.append_response += 1;
                if !success && conflict.is_some() {
                    self.stats.append_refused += 1;
                }
            }
            MessageBody::PreVote { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::InstallSnapshot { .. } => self.stats.other += 1,
            MessageBody::InstallSnapshotResponse {
                next_offset, done, ..
            } => {
                self.stats.other += 1;
                self.nodes[from].snapshot_bytes_held = if *done { 0 } else { *next_offset };
            }
        }
        let Some(to) = self.ids.iter().position(|id| *id == msg.to) else {
            return;
        };
        *self.stats.link_messages.entry((from, to)).or_default() += 1;
        if !self.network.connected(from, to) {
            trace!(
                self.trace,
                self.now,
                "lost (link cut): {}",
                trace::message(&msg)
            );
            return;
        }
        let delays = self.network.arrival_delays(&mut self.rng);
        match delays.len() {
            0 => trace!(
                self.trace,
                self.now,
                "lost (dropped): {}",
                trace::message(&msg)
            ),
            2 => trace!(self.trace, self.now, "duplicated: {}", trace::message(&msg)),
            _ => {}
        }
        for delay in delays {
            self.schedule(
                self.now + delay,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn send_replies(&mut self, replies: Vec<(Tag, Reply)>) {
        for (tag, reply) in replies {
            let delay = self.client_delay();
            self.schedule(self.now + delay, Event::Reply { tag, reply });
        }
    }

    // ----- controls for scenarios --------------------------------------

    /// The node is down from now on: its memory is gone, its disk stays.
    /// Messages already on their way from it may still arrive.
    pub fn crash(&mut self, node: usize) {
        if self.nodes[node].is_up() {
            trace!(self.trace, self.now, "{} crashes", self.ids[node]);
            self.stats.crashes += 1;
            self.nodes[node].crash();
            self.checker.on_crash(node);
        }
    }

    /// Crashes `node` and reboots it `ticks` later (unless something else
    /// restarts it first).
    pub fn crash_for(&mut self, node: usize, ticks: u64) {
        self.crash(node);
        self.schedule(self.now + ticks * TICK, Event::Restart(node));
    }

    /// A new data directory's incarnation. Counted rather than drawn, so
    /// the run's RNG draws what it drew before incarnations existed.
    fn new_incarnation(&mut self) -> Incarnation {
        self.stats.directories += 1;
        if !self.config.incarnations {
            return 0;
        }
        1000 + self.stats.directories
    }

    /// The node goes down and loses its disk; it comes back `ticks` later
    /// with an empty data directory of a new incarnation, as after `rm -rf`
    /// of its directory and a restart.
    pub fn lose_disk_for(&mut self, node: usize, ticks: u64) {
        self.crash(node);
        let incarnation = self.new_incarnation();
        trace!(
            self.trace,
            self.now,
            "{} loses its disk (new directory, incarnation {incarnation})",
            self.ids[node]
        );
        self.stats.disks_lost += 1;
        self.nodes[node].lose_disk(incarnation);
        self.checker.on_disk_lost(node);
        self.schedule(self.now + ticks * TICK, Event::Restart(node));
    }

    /// The node goes down and its disk loses the end of its log: only
    /// entries up to `keep` remain (a disk that lied about fsync, or a
    /// directory restored from a backup). It comes back `ticks` later.
    pub fn cut_log_for(&mut self, node: usize, keep: Index, ticks: u64) {
        self.crash(node);
        trace!(
            self.trace,
            self.now,
            "{}'s disk loses its log after index {keep}",
            self.ids[node]
        );
        self.stats.disks_lost += 1;
        self.nodes[node].cut_log(keep);
        self.checker.on_disk_lost(node);
        self.schedule(self.now + ticks * TICK, Event::Restart(node));
    }

    /// Whether `node` may lose its disk now without falling into a case no
    /// protection covers. Every machine's disk must hold a membership in
    /// which every machine in service is a voter with its current
    /// incarnation recorded:
    ///
    /// - the lost directory's own incarnation must be known to every
    ///   possible candidate, or a candidate that never heard of the old
    ///   directory counts the new one's vote (a disk lost in the first
    ///   moments of a cluster looks like a fresh start to everyone);
    /// - and no other machine may still be catching up after a loss of its
    ///   own: that would be two machines lost at once, more than a cluster
    ///   of three tolerates (with three voters of which two lost their
    ///   disks, no vote count reaches a majority until a leader has
    ///   re-recorded them, and no leader can be elected to do it).
    pub fn disk_loss_is_covered(&self, node: usize) -> bool {
        let in_service: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| !self.nodes[n].retired)
            .collect();
        !self.nodes[node].retired
            && in_service.iter().all(|&holder| {
                let disk = &self.nodes[holder].disk;
                let latest = disk
                    .log
                    .iter()
                    .rev()
                    .find_map(|e| match &e.data {
                        EntryData::Config(m) => Some(m),
                        EntryData::Noop | EntryData::Command(_) => None,
                    })
                    .or(disk.snapshot.as_ref().map(|s| &s.membership));
                latest.is_some_and(|m| {
                    in_service.iter().all(|&n| {
                        let id = &self.ids[n];
                        m.voters.contains_key(id)
                            && m.incarnations.get(id) == Some(&self.nodes[n].disk.incarnation)
                    })
                })
            })
    }

    /// Boots a crashed node from its disk (a retired one stays down).
    pub fn restart(&mut self, node: usize) -> Result<(), Failure> {
        if self.nodes[node].is_up() || self.nodes[node].retired {
            return Ok(());
        }
        self.start_node(node)
    }

    /// Proposes `command` at `node` (as a client of that node would).
    pub fn propose(
        &mut self,
        node: usize,
        command: &str,
    ) -> Result<Result<Index, NotLeader>, Failure> {
        trace!(
            self.trace,
            self.now,
            "propose {command:?} at {}",
            self.ids[node]
        );
        match self.step_node(node, Input::Propose(command.to_string()))? {
            Some(result) => Ok(result),
            None => Ok(Err(NotLeader { leader: None })),
        }
    }

    /// Asks `node` to hand leadership to `target` (dissertation §3.10), as
    /// `transfer <id>` at a leader's prompt does. Like a step: the node's
    /// `Ready`s are handled and the safety checks run.
    pub fn transfer_leadership(
        &mut self,
        node: usize,
        target: usize,
    ) -> Result<Result<(), TransferError>, Failure> {
        trace!(
            self.trace,
            self.now,
            "transfer leadership at {} to {}",
            self.ids[node],
            self.ids[target]
        );
        let now = self.now;
        if !self.nodes[node].is_up() {
            return Ok(Err(TransferError::NotLeader(NotLeader { leader: None })));
        }
        self.nodes[node]
            .write_postponed()
            .map_err(|e| Failure::new(FailureKind::Driver, now, e))?;
        let target_id = self.ids[target].clone();
        let raft = self.nodes[node].raft.as_mut().expect("up");
        let result = raft.transfer_leadership(target_id);
        self.drain_ready(node)?;
        let raft = self.nodes[node].raft.as_ref().expect("up");
        self.checker.after_step(node, raft, now)?;
        Ok(result)
    }
}

// ----- snapshots and membership --------------------------------------------

impl Cluster {
    /// Compacts `node`'s log if the compaction policy says it is time.
    fn maybe_compact(&mut self, node: usize) -> Result<(), Failure> {
        let Some(raft) = self.nodes[node].raft.as_ref() else {
            return Ok(());
        };
        let (applied, base) = (raft.last_applied(), raft.snapshot_index());
        let due = match self.config.compaction {
            Compaction::Off => false,
            Compaction::EveryEntries(entries) => applied >= base + entries,
            Compaction::Random(rate) => applied > base && self.rng.random_bool(rate),
        };
        if due {
            self.compact_now(node)?;
        }
        Ok(())
    }

    /// The node snapshots its state machine at its last applied entry and
    /// drops the log up to there; the checker compares the snapshot with
    /// the applied history.
    fn compact_now(&mut self, node: usize) -> Result<Option<Snapshot>, Failure> {
        let now = self.now;
        let snapshot = self.nodes[node].compact().map_err(|e| {
            Failure::new(FailureKind::Driver, now, format!("{}: {e}", self.ids[node]))
        })?;
        if let Some(snapshot) = &snapshot {
            self.stats.snapshots_taken += 1;
            trace!(
                self.trace,
                now,
                "{} compacts its log: a snapshot up to {}@t{} ({} bytes of state)",
                self.ids[node],
                snapshot.last_included_index,
                snapshot.last_included_term,
                snapshot.data.len()
            );
            self.checker.on_snapshot(node, snapshot, false, now)?;
        }
        Ok(snapshot)
    }

    /// Compacts `node`'s log now, whatever the policy (a scenario's own
    /// snapshot). `None` if it is down or applied nothing new.
    pub fn compact(&mut self, node: usize) -> Result<Option<Snapshot>, Failure> {
        if !self.nodes[node].is_up() {
            return Ok(None);
        }
        let snapshot = self.compact_now(node)?;
        let raft = self.nodes[node].raft.as_ref().expect("up");
        self.checker.after_step(node, raft, self.now)?;
        Ok(snapshot)
    }

    /// Something done to a running node's core from outside (a command at
    /// its prompt, say `transfer`), handled like a step: its `Ready`s are
    /// handled and the safety checks run. `None` if the node is down.
    pub fn act<T>(
        &mut self,
        node: usize,
        what: impl FnOnce(&mut Raft) -> T,
    ) -> Result<Option<T>, Failure> {
        if !self.nodes[node].is_up() {
            return Ok(None);
        }
        let now = self.now;
        self.nodes[node]
            .write_postponed()
            .map_err(|e| Failure::new(FailureKind::Driver, now, e))?;
        let result = what(self.nodes[node].raft.as_mut().expect("up"));
        self.drain_ready(node)?;
        self.maybe_compact(node)?;
        let raft = self.nodes[node].raft.as_ref().expect("up");
        self.checker.after_step(node, raft, now)?;
        Ok(Some(result))
    }

    /// A new, empty machine is switched on: the next id, an empty disk, a
    /// clock of its own, links to every node. It starts with no voters
    /// (`Config::voters` empty, as `raft PORT --join` does), so it only
    /// answers whoever leads; the cluster learns of it through
    /// [`Cluster::add_learner`]. Returns its index.
    pub fn add_node(&mut self) -> Result<usize, Failure> {
        let node = self.nodes.len();
        let skew = self.rng.random_range(0..=2 * self.config.max_clock_skew);
        self.nodes
            .push(SimNode::new(TICK - self.config.max_clock_skew + skew));
        self.ids.push(node_id(node));
        self.network.add_node();
        self.checker.add_node(node_id(node));
        self.nodes[node].disk.incarnation = self.new_incarnation();
        self.update_client_targets();
        trace!(self.trace, self.now, "{} is a new machine", self.ids[node]);
        self.start_node(node)?;
        Ok(node)
    }

    /// Takes a machine out of service for good (after it was removed from
    /// the cluster, or to replace it): it goes down and stays down.
    pub fn retire(&mut self, node: usize) {
        self.crash(node);
        self.nodes[node].retired = true;
        trace!(self.trace, self.now, "{} is retired", self.ids[node]);
        self.update_client_targets();
    }

    /// Clients send only to machines in service.
    fn update_client_targets(&mut self) {
        let targets = (0..self.nodes.len())
            .filter(|&n| !self.nodes[n].retired)
            .collect();
        self.clients.set_targets(targets);
    }

    /// Asks `leader` to add `node` as a learner (`add HOST:PORT` at the
    /// leader's prompt); the leader promotes it once it has caught up.
    pub fn add_learner(
        &mut self,
        leader: usize,
        node: usize,
    ) -> Result<Result<Index, MembershipError>, Failure> {
        let id = self.ids[node].clone();
        trace!(
            self.trace,
            self.now,
            "ask {} to add {id} as a learner",
            self.ids[leader]
        );
        let address = format!("sim:{id}");
        let result = self.act(leader, |raft| raft.add_learner(id, address))?;
        Ok(result.unwrap_or(Err(MembershipError::NotLeader(NotLeader { leader: None }))))
    }

    /// Asks `leader` to remove `node` from the cluster (`remove ID`).
    pub fn remove_member(
        &mut self,
        leader: usize,
        node: usize,
    ) -> Result<Result<Index, MembershipError>, Failure> {
        let id = self.ids[node].clone();
        trace!(
            self.trace,
            self.now,
            "ask {} to remove {id}",
            self.ids[leader]
        );
        let result = self.act(leader, |raft| raft.remove_member(id))?;
        Ok(result.unwrap_or(Err(MembershipError::NotLeader(NotLeader { leader: None }))))
    }
}
