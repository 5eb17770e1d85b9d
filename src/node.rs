//! The driver: the one state-machine thread that runs a node.
//!
//! ```text
//!   stdin thread ──────────┐
//!   listener → readers ────┤ crossbeam channels
//!   tick (timer) ──────────┤
//!   Ctrl+C ────────────────┘
//!                          ▼
//!        state-machine thread: select! → feed the core → persist → send → apply
//!                          ▼
//!        sockets: written directly when they have room; else the peer's
//!        writer thread (connect, reconnect, send) or the client's reader
//! ```
//!
//! Each turn of the loop waits for one input, drains what else is already
//! queued (bounded), and then handles the core's output in the order that
//! keeps Raft safe across crashes: **persist, then send, then apply**. One
//! fsync covers everything a turn produced (group commit).

use crate::client;
use crate::config::NodeOptions;
use crate::console;
use crate::core::{
    CompactError, Config, Event, MembershipError, NotLeader, Raft, ReadOutcome, Ready, RoleKind,
    StepDownReason, TransferError, MAX_COMMAND_BYTES,
};
use crate::message::{
    ClientCommand, ClientRequest, ClientResponse, ClientResult, EntryData, Incarnation, Index,
    LogRow, Membership, Message, MessageBody, NodeId, Status, Term,
};
use crate::partition::Partition;
use crate::prompt::{
    log_table, parse_prompt, print_result, spawn_stdin_reader, ForwardQueue, PromptCommand, HELP,
    MAX_LOG_ROWS,
};
use crate::say;
use crate::state_machine::{StateMachine, Value};
use crate::storage::{Metadata, Storage};
use crate::transport::{self, auth, ClusterKey, Credentials, Inbound, Members, Peers, Reply};
use crossbeam_channel::{bounded, select, tick, Receiver};
use log::{debug, warn};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The longest a tick may be; shorter if the heartbeat is shorter.
pub const MAX_TICK_MS: u64 = 10;
/// Inputs queued for the state-machine thread before readers wait.
pub const INBOUND_QUEUE_LEN: usize = 4096;
/// Most inputs handled in one turn of the loop (one fsync covers them all).
pub const MAX_BATCH: usize = 1024;
/// Most client requests waiting for a commit or a read at once; more are
/// refused with an error rather than queued without bound.
pub const MAX_PENDING_REQUESTS: usize = 16_384;
/// Most bytes of values proposed here and not yet committed. With large
/// values the request count alone would let the leader's log (and what it
/// sends) grow by gigabytes while a majority is slow; past this, writes are
/// refused with an error until commits catch up.
pub const MAX_PENDING_WRITE_BYTES: usize = 64 * 1024 * 1024;
/// The most writers (a thread and a queue each) a node keeps for nodes
/// outside its membership: a leader it has not learned of yet, a removed
/// node still asking for votes. Beyond this the oldest is stopped, so
/// messages claiming to come from many invented nodes cost a bounded number
/// of threads. (Such a writer also stops at the next membership change.)
pub const MAX_STRANGER_WRITERS: usize = 4;
/// How long a follower waits for the leader when forwarding a `set`.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `--join` keeps asking (no leader yet, another membership
/// change in progress, ...).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause between two attempts to join.
pub const JOIN_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Writes (and membership changes) proposed here, waiting for their entry
/// to commit, by log index; and how many bytes of values they hold.
#[derive(Default)]
struct PendingWrites {
    by_index: BTreeMap<Index, PendingWrite>,
    bytes: usize,
}

struct PendingWrite {
    /// The term the entry was proposed in: if an entry of another term
    /// commits at its index, the write was lost.
    term: Term,
    bytes: usize,
    waiter: Waiter,
}

impl PendingWrites {
    fn len(&self) -> usize {
        self.by_index.len()
    }

    fn insert(&mut self, index: Index, term: Term, bytes: usize, waiter: Waiter) {
        self.bytes += bytes;
        let write = PendingWrite {
            term,
            bytes,
            waiter,
        };
        if let Some(replaced) = self.by_index.insert(index, write) {
            // An index is proposed here once per term; a leader of a later
            // term reusing it means the old write was lost.
            self.bytes -= replaced.bytes;
            answer(
                replaced.waiter,
                error("leadership changed and the write was overwritten; retry"),
            );
        }
    }

    /// The write waiting on `index`, if any: its term and who waits.
    fn remove(&mut self, index: Index) -> Option<(Term, Waiter)> {
        let write = self.by_index.remove(&index)?;
        self.bytes -= write.bytes;
        Some((write.term, write.waiter))
    }

    fn take_all(&mut self) -> Vec<Waiter> {
        self.bytes = 0;
        std::mem::take(&mut self.by_index)
            .into_values()
            .map(|w| w.waiter)
            .collect()
    }
}

/// Who is waiting for an answer.
enum Waiter {
    /// A client connection (`raft client`, or another node forwarding).
    Client { id: u64, reply: Reply },
    /// A person at this node's prompt.
    Prompt,
}

/// Runs a node until Ctrl+C. Errors are for a person: what went wrong and
/// what to do.
pub fn run(opts: NodeOptions) -> Result<(), String> {
    let listener = transport::bind(&opts.listen_addr)?;
    // The members the cluster starts with. A node that joins an existing
    // cluster starts with none but itself, and learns the rest from the log.
    let mut addresses = opts.peers.clone();
    addresses.insert(opts.id.clone(), opts.listen_addr.clone());
    let meta = Metadata {
        id: opts.id.clone(),
        members: addresses.keys().cloned().collect(),
    };
    let (storage, recovered) = Storage::open(&opts.data_dir, &meta).map_err(|e| e.to_string())?;
    let creds = credentials(&opts)?;
    for warning in &recovered.warnings {
        warn!("{warning}");
    }
    print_recovered(&opts, &recovered);

    let tick_ms = opts.heartbeat_ms.clamp(1, MAX_TICK_MS);
    let mut config = core_config(&opts, &addresses, tick_ms)?;
    config.incarnation = recovered.incarnation;
    let mut state_machine = Value::default();
    if let Some(snapshot) = &recovered.snapshot {
        state_machine.restore(&snapshot.data).map_err(|e| {
            format!(
                "the snapshot in {} cannot be loaded: {e}",
                opts.data_dir.display()
            )
        })?;
    }
    let raft = Raft::restore(
        config,
        recovered.hard_state,
        recovered.snapshot,
        recovered.entries,
        rand::random(),
    );

    let (inbound_tx, inbound_rx) = bounded(INBOUND_QUEUE_LEN);
    let members = Members::default();
    if let Some(warning) = transport::open_files_warning(&opts.limits) {
        warn!("{warning}");
    }
    members.set_term(raft.current_term());
    transport::spawn_listener_with(
        listener,
        opts.id.clone(),
        members.clone(),
        inbound_tx,
        creds.clone(),
        opts.limits.clone(),
    )
    .map_err(|e| format!("cannot start the listener on {}: {e}", opts.listen_addr))?;
    console::enable_prompt();
    let stdin_rx = spawn_stdin_reader();
    let (shutdown_tx, shutdown_rx) = bounded(1);
    ctrlc::set_handler(move || {
        let _ = shutdown_tx.try_send(());
    })
    .map_err(|e| format!("cannot install the Ctrl+C handler: {e}"))?;

    let mut node = Node {
        raft,
        storage,
        state_machine,
        peers: Peers::start(
            opts.id.clone(),
            creds.clone(),
            &join_seeds(opts.join.as_deref()),
        ),
        members,
        addresses,
        membership: Membership::default(),
        snapshot_entries: opts.snapshot_entries,
        pending_writes: PendingWrites::default(),
        pending_reads: BTreeMap::new(),
        next_read_id: 0,
        pending_transfer: None,
        pending_status: Vec::new(),
        strangers: VecDeque::new(),
        forwards: ForwardQueue::new(creds.clone()),
        partition: Partition::default(),
        tick_ms,
        ticker: tick(Duration::from_millis(tick_ms)),
        slow_factor: 1,
        election_timeout: (
            Duration::from_millis(opts.election_timeout_ms.0),
            Duration::from_millis(opts.election_timeout_ms.1),
        ),
        watch: Watch::new(),
    };
    node.sync_membership();
    if let Some(cluster) = &opts.join {
        ask_to_join(
            creds,
            opts.id.clone(),
            opts.listen_addr.clone(),
            cluster.clone(),
        );
    }
    console::show_prompt();
    node.run_loop(&inbound_rx, &stdin_rx, &shutdown_rx)?;
    say!("Shutting down node {}", node.raft.id());
    let handover = Duration::from_millis(opts.election_timeout_ms.1);
    node.hand_over_leadership(&inbound_rx, handover)?;
    Ok(())
}

/// The cluster key: `--cluster-key` (which must exist), or the key file
/// beside the data directory, created by the first node that finds none;
/// checked against the cluster the data directory belongs to (see
/// `auth::check_cluster_id`). Call once the data directory is accepted.
fn credentials(opts: &NodeOptions) -> Result<Credentials, String> {
    #[cfg(feature = "bug-switches")]
    if !opts.authenticate {
        warn!("--insecure-no-auth: this node accepts anything from anyone (a test-only switch)");
        return Ok(Credentials::insecure());
    }
    let key = if opts.cluster_key_given {
        ClusterKey::load(&opts.cluster_key)?
    } else {
        let (key, created) = ClusterKey::load_or_create(&opts.cluster_key)?;
        if created {
            say!(
                "Node {} created the cluster key {} for a new cluster {}; nodes started from this directory share it, nodes on other hosts need a copy (--cluster-key)",
                opts.id,
                opts.cluster_key.display(),
                key.cluster_id()
            );
        }
        key
    };
    auth::check_cluster_id(&opts.data_dir, &key, &opts.cluster_key)?;
    Ok(Credentials::new(key))
}

/// "Node 8000 recovered term 7, vote 8001, 1234 entries (last index 1234)
/// from raft-data/8000".
fn print_recovered(opts: &NodeOptions, recovered: &crate::storage::Recovered) {
    let snapshot_index = recovered
        .snapshot
        .as_ref()
        .map_or(0, |s| s.last_included_index);
    let last_index = recovered.entries.last().map_or(snapshot_index, |e| e.index);
    let snapshot = if snapshot_index > 0 {
        format!(", a snapshot up to index {snapshot_index}")
    } else {
        String::new()
    };
    say!(
        "Node {} recovered term {}, vote {}{}, {} entries (last index {}) from {}",
        opts.id,
        recovered.hard_state.current_term,
        recovered
            .hard_state
            .voted_for
            .as_ref()
            .map_or("none".to_string(), |v| v.to_string()),
        snapshot,
        recovered.entries.len(),
        last_index,
        opts.data_dir.display()
    );
}

/// The core's configuration: the starting members and the timeouts in
/// ticks.
fn core_config(
    opts: &NodeOptions,
    addresses: &BTreeMap<NodeId, String>,
    tick_ms: u64,
) -> Result<Config, String> {
    let to_ticks = |ms: u64| ms.div_ceil(tick_ms).max(1);
    let voters = match opts.join {
        Some(_) => Vec::new(),
        None => addresses.keys().cloned().collect(),
    };
    let mut config = Config::new(opts.id.clone(), voters);
    config.addresses = addresses.clone();
    config.election_timeout_ticks = (
        to_ticks(opts.election_timeout_ms.0),
        to_ticks(opts.election_timeout_ms.1),
    );
    config.heartbeat_ticks = to_ticks(opts.heartbeat_ms);
    if config.election_timeout_ticks.0 <= config.heartbeat_ticks {
        return Err(format!(
            "the election timeout ({} ms) must be longer than the heartbeat ({} ms)",
            opts.election_timeout_ms.0, opts.heartbeat_ms
        ));
    }
    Ok(config)
}

/// A joining node knows no members until the leader's log (or snapshot)
/// reaches it, yet it must answer the leader before that. The nodes it was
/// told to join are members, and their ids follow from their addresses, so
/// it starts with writers to those.
fn join_seeds(join: Option<&[String]>) -> BTreeMap<NodeId, String> {
    join.unwrap_or_default()
        .iter()
        .filter_map(|address| crate::config::parse_address(address).ok())
        .collect()
}

/// `--join`: asks the cluster, from a thread of its own, to add this node.
/// The leader adds it as a learner; it learns everything else from the log.
fn ask_to_join(creds: Credentials, id: NodeId, address: String, cluster: Vec<String>) {
    let spawned = std::thread::Builder::new()
        .name("join".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + JOIN_TIMEOUT;
            loop {
                let command = ClientCommand::AddMember {
                    address: address.clone(),
                };
                let outcome = client::request(&creds, &cluster, command, FORWARD_TIMEOUT);
                // Anything but success (no leader yet, a change in
                // progress, leadership moving) is worth another try until
                // the deadline.
                let last_error = match &outcome {
                    Ok(ClientResult::Written { .. } | ClientResult::Done) => {
                        say!("Node {id} was added to the cluster as a learner");
                        return;
                    }
                    Ok(ClientResult::Error { message }) if message.contains("already a member") => {
                        say!("Node {id} is already a member of the cluster");
                        return;
                    }
                    Ok(ClientResult::Error { message }) => message.clone(),
                    Ok(other) => format!("unexpected answer {other:?}"),
                    Err(e) => e.to_string(),
                };
                if std::time::Instant::now() > deadline {
                    say!(
                        "Node {id} could not join the cluster at {}: {last_error}",
                        cluster.join(",")
                    );
                    return;
                }
                debug!("join attempt failed ({last_error}); retrying");
                std::thread::sleep(JOIN_RETRY_INTERVAL);
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start a thread to join the cluster: {e}");
    }
}

/// The state the state-machine thread owns. Nothing else touches it.
struct Node {
    raft: Raft,
    storage: Storage,
    state_machine: Value,
    peers: Peers,
    /// Who the connection readers take peer messages from.
    members: Members,
    /// Every member's address, this node included.
    addresses: BTreeMap<NodeId, String>,
    /// The membership the writers and readers were last set up for.
    membership: Membership,
    /// Snapshot once this many entries were applied since the last one.
    snapshot_entries: u64,
    /// `set`s proposed here, by log index: who waits, and the term the entry
    /// was proposed in (if a different entry commits at that index, the
    /// write was lost).
    pending_writes: PendingWrites,
    /// `get`s waiting for ReadIndex, by read id.
    pending_reads: BTreeMap<u64, Waiter>,
    next_read_id: u64,
    /// A `transfer` waiting to see leadership move (or give up).
    pending_transfer: Option<Waiter>,
    /// `status` requests of this turn, answered once the turn's changes are
    /// durable, so a reported term or vote is never one a crash could undo.
    /// (At most one per connection: a reader waits for each answer.)
    pending_status: Vec<Waiter>,
    /// Nodes outside the membership this node has a writer for, oldest
    /// first (see `reach_stranger`); at most [`MAX_STRANGER_WRITERS`].
    strangers: VecDeque<NodeId>,
    /// Commands typed here on their way to the leader, in order.
    forwards: ForwardQueue,
    /// Peers whose traffic is dropped (`partition` at the prompt).
    partition: Partition,
    /// The tick period in real time, before `slow`.
    tick_ms: u64,
    ticker: Receiver<Instant>,
    /// `slow`: the tick is this many times longer than `tick_ms`.
    slow_factor: u64,
    /// The configured election timeout range, in real time.
    election_timeout: (Duration, Duration),
    /// What the console has said about peers and leaders.
    watch: Watch,
}

/// What the node has seen of its peers and leaders, for the lines that tell
/// a person what is happening ("following leader", "waiting for", "cannot
/// elect a leader").
struct Watch {
    /// When each peer's last message arrived.
    heard: BTreeMap<NodeId, Instant>,
    /// The leader last announced on the console.
    leader: Option<NodeId>,
    /// Since when no leader is known.
    leaderless_since: Option<Instant>,
    /// Whether a leader was heard since this node started: until then, a
    /// restarted node does not know which of its entries are committed.
    met_a_leader: bool,
    /// The peers "waiting for" named, not heard from since.
    waiting_for: BTreeSet<NodeId>,
    said_waiting: bool,
    said_no_majority: bool,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            heard: BTreeMap::new(),
            leader: None,
            leaderless_since: Some(Instant::now()),
            met_a_leader: false,
            waiting_for: BTreeSet::new(),
            said_waiting: false,
            said_no_majority: false,
        }
    }

    fn heard_within(&self, peer: &NodeId, window: Duration) -> bool {
        self.heard.get(peer).is_some_and(|t| t.elapsed() <= window)
    }
}

impl Node {
    fn run_loop(
        &mut self,
        inbound: &Receiver<Inbound>,
        stdin: &Receiver<String>,
        shutdown: &Receiver<()>,
    ) -> Result<(), String> {
        let never = crossbeam_channel::never();
        let mut stdin_open = true;
        loop {
            // Backpressure: while the forwarding queue is full, lines wait
            // in the pipe (the tick wakes this loop to look again).
            let stdin_rx = if stdin_open && !self.forwards.is_full() {
                stdin
            } else {
                &never
            };
            let ticker = self.ticker.clone();
            select! {
                recv(inbound) -> msg => match msg {
                    Ok(msg) => self.on_inbound(msg),
                    Err(_) => return Err("the listener thread stopped".to_string()),
                },
                recv(stdin_rx) -> line => match line {
                    Ok(line) => self.on_prompt_line(&line),
                    // End of stdin does not stop the node, so
                    // `raft 8000 < /dev/null &` runs in the background.
                    Err(_) => {
                        stdin_open = false;
                        say!("Node {} stdin is closed; it goes on running until Ctrl+C", self.raft.id());
                    }
                },
                recv(ticker) -> _ => {
                    self.raft.tick();
                    self.watch_peers();
                }
                recv(shutdown) -> _ => return Ok(()),
            }
            // Group commit: take what else is already waiting, so that one
            // fsync serves the whole batch.
            for msg in inbound.try_iter().take(MAX_BATCH) {
                self.on_inbound(msg);
            }
            // Before applying, so "following leader" comes before the
            // values that leader's first message commits.
            self.notice_leader();
            self.handle_ready()?;
            self.answer_status_requests();
            self.members.set_term(self.raft.current_term());
            self.notice_leader();
        }
    }

    /// "Node 8001 following leader 8000 in term 1", once per new leader.
    fn notice_leader(&mut self) {
        let leader = self.raft.leader().cloned();
        if leader == self.watch.leader {
            return;
        }
        let id = self.raft.id().clone();
        match &leader {
            Some(l) => {
                self.watch.met_a_leader = true;
                self.watch.leaderless_since = None;
                self.watch.said_no_majority = false;
                if *l != id {
                    say!(
                        "Node {id} following leader {l} in term {}",
                        self.raft.current_term()
                    );
                }
            }
            None => self.watch.leaderless_since = Some(Instant::now()),
        }
        self.watch.leader = leader;
    }

    /// Says once whom this node waits for, and once per leaderless spell
    /// that it cannot reach a majority, with the numbers.
    fn watch_peers(&mut self) {
        if self.watch.said_waiting && self.watch.said_no_majority {
            return;
        }
        let leader_or_leaderless =
            self.raft.role() == RoleKind::Leader || self.raft.leader().is_none();
        if !leader_or_leaderless {
            // A follower hears from its leader only, not from the other
            // followers: silence from them means nothing.
            return;
        }
        let window = self.election_timeout.1 * 2 * self.clock_factor();
        let id = self.raft.id().clone();
        let voters: Vec<NodeId> = self.raft.membership().voters.keys().cloned().collect();
        let unheard: BTreeSet<NodeId> = voters
            .iter()
            .filter(|v| **v != id && !self.watch.heard_within(v, window))
            .cloned()
            .collect();
        let quiet_for = self.watch.leaderless_since.map(|t| t.elapsed());
        if !self.watch.said_waiting
            && !unheard.is_empty()
            && quiet_for.is_some_and(|q| q >= window / 2)
        {
            self.watch.said_waiting = true;
            say!("Node {id} waiting for {}", list(unheard.iter()));
            self.watch.waiting_for = unheard.clone();
        }
        let reachable = voters.len() - unheard.len();
        let majority = voters.len() / 2 + 1;
        let is_voter = voters.contains(&id);
        if is_voter
            && !self.watch.said_no_majority
            && quiet_for.is_some_and(|q| q >= window)
            && reachable < majority
        {
            self.watch.said_no_majority = true;
            say!(
                "Node {id} cannot elect a leader: {reachable} of {} members reachable; a majority needs {majority}",
                voters.len()
            );
        }
    }

    /// How many times slower than real time the protocol's clock runs.
    fn clock_factor(&self) -> u32 {
        u32::try_from(self.slow_factor).unwrap_or(u32::MAX)
    }

    /// `slow` / `fast`: the tick comes `factor` times less often, so every
    /// timeout (counted in ticks by the core) is `factor` times longer.
    fn set_clock(&mut self, factor: u64) {
        let id = self.raft.id().clone();
        if factor == self.slow_factor {
            say!("Node {id} clock already runs at {}", clock_name(factor));
            return;
        }
        self.slow_factor = factor;
        self.ticker = tick(Duration::from_millis(self.tick_ms * factor));
        let (min, max) = self.election_timeout;
        say!(
            "Node {id} clock now runs at {}: election timeout {}-{} ms",
            clock_name(factor),
            min.as_millis() * u128::from(factor),
            max.as_millis() * u128::from(factor)
        );
    }

    /// Ctrl+C on a leader: hand leadership to the most up-to-date follower
    /// before exiting (dissertation §3.10), so the cluster does not wait an
    /// election timeout to notice we are gone. Bounded by `limit`.
    fn hand_over_leadership(
        &mut self,
        inbound: &Receiver<Inbound>,
        limit: Duration,
    ) -> Result<(), String> {
        let ticker = self.ticker.clone();
        let Some(target) = self.most_up_to_date_follower() else {
            if self.raft.role() == RoleKind::Leader {
                say!(
                    "Leader {} hands over to nobody: no follower answered within the last election timeout",
                    self.raft.id()
                );
            }
            return Ok(());
        };
        if let Err(e) = self.raft.transfer_leadership(target) {
            debug!("no leadership transfer on shutdown: {e}");
            return Ok(());
        }
        let deadline = crossbeam_channel::after(limit);
        loop {
            self.handle_ready()?;
            self.answer_status_requests();
            let handed_over = self.raft.role() != RoleKind::Leader
                && self.raft.leader().is_some_and(|l| l != self.raft.id());
            if handed_over {
                return Ok(());
            }
            select! {
                recv(inbound) -> msg => match msg {
                    Ok(msg) => self.on_inbound(msg),
                    Err(_) => return Ok(()),
                },
                recv(ticker) -> _ => self.raft.tick(),
                recv(deadline) -> _ => return Ok(()),
            }
        }
    }

    fn most_up_to_date_follower(&self) -> Option<NodeId> {
        let mut matches = self.raft.match_indexes()?;
        // Only a voter that answered within the shortest election timeout:
        // one stopped a moment ago would take leadership and then never
        // use it, and the cluster would wait for an election.
        let window = self.election_timeout.0 * self.clock_factor();
        matches.retain(|id, _| {
            self.raft.membership().voters.contains_key(id)
                && self.watch.heard_within(id, window)
                && !self.partition.drops(id)
        });
        // Highest match index; among equals, the first in id order.
        let best = matches.values().copied().max()?;
        matches
            .into_iter()
            .find(|(_, index)| *index == best)
            .map(|(id, _)| id)
    }

    /// Starts a leadership transfer (dissertation §3.10).
    fn transfer(&mut self, target: NodeId, waiter: Waiter) {
        match self.raft.transfer_leadership(target) {
            Ok(()) => {
                if let Some(previous) = self.pending_transfer.replace(waiter) {
                    answer(previous, error("superseded by a newer transfer request"));
                }
            }
            Err(TransferError::NotLeader(not_leader)) => {
                answer(waiter, self.not_leader(not_leader))
            }
            Err(e) => answer(waiter, error(&e.to_string())),
        }
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Peer(msg) => {
                if self.partition.drops_received(&msg.from) {
                    return;
                }
                self.heard_from(&msg.from);
                self.reach_leader(&msg);
                self.raft.step(msg)
            }
            Inbound::Client { request, reply } => self.on_client_request(request, reply),
        }
    }

    fn heard_from(&mut self, peer: &NodeId) {
        // Members only, so the map stays as small as the cluster.
        if !self.addresses.contains_key(peer) {
            return;
        }
        self.watch.heard.insert(peer.clone(), Instant::now());
        if self.watch.waiting_for.remove(peer) {
            say!("Node {} in touch with {peer}", self.raft.id());
        }
    }

    /// A node may hear from a leader it has no writer for: a joining node
    /// knows only the nodes it was told to join (see `join_seeds`) until the
    /// log entry that adds it arrives, and a member that missed the entry
    /// adding a server does not know that server when it becomes leader
    /// (dissertation §4.1). Either must answer that leader, or it never
    /// catches up. Ids follow from addresses (see `config`), so the address
    /// is known; the writer goes when the membership next changes.
    ///
    /// A stale message (of an older term) is from no leader to follow, so it
    /// gets no writer: the core's answer to it is dropped.
    fn reach_leader(&mut self, msg: &Message) {
        let from_leader = matches!(
            msg.body,
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. }
        );
        if from_leader && msg.term >= self.raft.current_term() {
            self.reach_stranger(&msg.from);
        }
    }

    /// Starts a writer to `id`, which is not a member, if it has none:
    /// keeping at most [`MAX_STRANGER_WRITERS`] such writers, stopping the
    /// oldest first. Ids follow from addresses (see `config`).
    fn reach_stranger(&mut self, id: &NodeId) {
        if self.peers.has(id) {
            return;
        }
        let address = match crate::config::parse_address(id.as_str()) {
            Ok((parsed, address)) if parsed == *id => address,
            _ => return debug!("cannot tell the address of {id}; not sending to it"),
        };
        if self.strangers.len() >= MAX_STRANGER_WRITERS {
            if let Some(oldest) = self.strangers.pop_front() {
                debug!("stopping the writer to non-member {oldest} to make room for {id}");
                self.peers.remove(&oldest);
            }
        }
        self.peers.add(id, &address);
        self.strangers.push_back(id.clone());
    }

    /// Sends a message, first starting a writer to a node this one has none
    /// for when it is a leader's AppendEntries: the core sends one to a
    /// removed server that still asks for votes, so that it learns it was
    /// removed (see `Raft::step`). Ids follow addresses (see `config`).
    fn send(&mut self, msg: Message) {
        if self.partition.drops_sent(&msg.to) {
            return;
        }
        if matches!(msg.body, MessageBody::AppendEntries { .. }) {
            self.reach_stranger(&msg.to);
        }
        self.peers.send(msg);
    }

    fn on_client_request(&mut self, request: ClientRequest, reply: Reply) {
        let waiter = Waiter::Client {
            id: request.id,
            reply,
        };
        match request.command {
            ClientCommand::Set { value } => self.propose(value, waiter),
            ClientCommand::Get => self.read(waiter),
            ClientCommand::Status => self.pending_status.push(waiter),
            ClientCommand::Transfer { to } => self.transfer(to, waiter),
            ClientCommand::AddMember { address } => self.add_member(&address, waiter),
            ClientCommand::RemoveMember { id } => self.remove_member(id, waiter),
            ClientCommand::Log { count } => {
                let count = count.min(MAX_LOG_ROWS);
                answer(
                    waiter,
                    ClientResult::Log {
                        entries: self.log_rows(count),
                    },
                )
            }
        }
    }

    /// Starts a write here, if this node leads.
    fn propose(&mut self, value: String, waiter: Waiter) {
        let too_many = self.pending_writes.len() >= MAX_PENDING_REQUESTS
            || self.pending_writes.bytes + value.len() > MAX_PENDING_WRITE_BYTES;
        if too_many {
            answer(waiter, overloaded());
            return;
        }
        if value.len() > MAX_COMMAND_BYTES {
            let message = format!(
                "the value is {} bytes; the most a value may have is {MAX_COMMAND_BYTES}",
                value.len()
            );
            answer(waiter, error(&message));
            return;
        }
        match self.raft.propose(value.clone()) {
            Ok(index) => {
                say!("Leader {} setting value to: {}", self.raft.id(), value);
                let term = self.raft.current_term();
                self.pending_writes.insert(index, term, value.len(), waiter);
            }
            Err(not_leader) => answer(waiter, self.not_leader(not_leader)),
        }
    }

    /// Starts adding the node at `address` as a learner (dissertation
    /// §4.2.1); answered once the change commits.
    fn add_member(&mut self, address: &str, waiter: Waiter) {
        let (id, address) = match crate::config::parse_address(address) {
            Ok(parsed) => parsed,
            Err(e) => return answer(waiter, error(&e.to_string())),
        };
        let outcome = self.raft.add_learner(id, address);
        self.await_change(outcome, waiter);
    }

    /// Starts removing member `id` (dissertation §4.2.2).
    fn remove_member(&mut self, id: NodeId, waiter: Waiter) {
        let outcome = self.raft.remove_member(id);
        self.await_change(outcome, waiter);
    }

    fn await_change(&mut self, outcome: Result<Index, MembershipError>, waiter: Waiter) {
        match outcome {
            Ok(index) => {
                let term = self.raft.current_term();
                self.pending_writes.insert(index, term, 0, waiter);
            }
            Err(MembershipError::NotLeader(not_leader)) => {
                answer(waiter, self.not_leader(not_leader))
            }
            Err(e) => answer(waiter, error(&e.to_string())),
        }
    }

    /// Starts a linearizable read here, if this node leads.
    fn read(&mut self, waiter: Waiter) {
        if self.pending_reads.len() >= MAX_PENDING_REQUESTS {
            answer(waiter, overloaded());
            return;
        }
        self.next_read_id += 1;
        let id = self.next_read_id;
        match self.raft.read_index(id) {
            Ok(()) => {
                self.pending_reads.insert(id, waiter);
            }
            Err(not_leader) => answer(waiter, self.not_leader(not_leader)),
        }
    }

    /// Answers the `status` requests waiting for this turn's changes to be
    /// durable (`handle_ready` has made them so).
    fn answer_status_requests(&mut self) {
        if self.pending_status.is_empty() {
            return;
        }
        let status = self.status();
        for waiter in std::mem::take(&mut self.pending_status) {
            answer(waiter, ClientResult::Status(status.clone()));
        }
    }

    fn not_leader(&self, not_leader: NotLeader) -> ClientResult {
        ClientResult::NotLeader {
            leader: not_leader
                .leader
                .and_then(|id| self.addresses.get(&id).cloned()),
        }
    }

    /// Does what the core asked, in the order that keeps it safe.
    fn handle_ready(&mut self) -> Result<(), String> {
        while self.raft.has_ready() {
            let mut ready = self.raft.ready();
            // The leader's AppendEntries go out first, so followers write
            // their copies while the leader writes its own (§10.2.1).
            let (early, late): (Vec<_>, Vec<_>) = std::mem::take(&mut ready.messages)
                .into_iter()
                .partition(|msg| ready.hard_state.is_none() && msg.body.may_precede_persist());
            for msg in early {
                self.send(msg);
            }
            self.persist(&ready)?;
            self.raft.advance(&ready);
            // Only now, with the vote and the entries on disk, may anything
            // that depends on them leave this node.
            for msg in late {
                self.send(msg);
            }
            if let Some(snapshot) = &ready.snapshot {
                // Figure 13, receiver rule 8: reset the state machine.
                self.state_machine
                    .restore(&snapshot.data)
                    .map_err(|e| format!("cannot load the snapshot from the leader: {e}"))?;
                say!(
                    "Node {} installed a snapshot up to index {} from the leader; value: {}",
                    self.raft.id(),
                    snapshot.last_included_index,
                    self.state_machine.read()
                );
            }
            self.apply(&ready);
            // After applying: a leader that stepped down in this Ready may
            // still have committed some of the writes waiting on it.
            for event in &ready.events {
                self.on_event(event);
            }
            self.sync_membership();
            self.maybe_snapshot()?;
        }
        Ok(())
    }

    /// After a membership change (which takes effect when appended, §4.1),
    /// connect to the new members and stop talking to departed ones.
    fn sync_membership(&mut self) {
        if *self.raft.membership() == self.membership {
            return;
        }
        let membership = self.raft.membership().clone();
        let id = self.raft.id().clone();
        let was_voter = self.membership.voters.contains_key(&id);
        let is_voter = membership.voters.contains_key(&id);
        let mut others: BTreeMap<NodeId, String> = membership
            .voters
            .iter()
            .chain(membership.learners.iter())
            .filter(|(member, address)| **member != id && !address.is_empty())
            .map(|(member, address)| (member.clone(), address.clone()))
            .collect();
        self.peers.update(&others);
        // `update` stopped every writer to a node outside the membership.
        self.strangers.clear();
        self.members.set(others.keys().cloned().collect());
        // No others in a membership that has voters: a cluster of one, not
        // a joining node that has yet to learn the members.
        self.members
            .set_alone(others.is_empty() && !membership.voters.is_empty());
        if let Some(own) = self.addresses.get(&id).cloned() {
            others.insert(id.clone(), own);
        }
        self.addresses = others;
        let addresses = &self.addresses;
        self.watch
            .heard
            .retain(|peer, _| addresses.contains_key(peer));
        // An entry that only records incarnations changes no member.
        let members_changed = self.membership.voters != membership.voters
            || self.membership.learners != membership.learners;
        if self.membership != Membership::default() && members_changed {
            say!(
                "Node {id} membership now: voters {}; learners {}",
                list(membership.voters.keys()),
                list(membership.learners.keys())
            );
            if is_voter && !was_voter {
                say!("Node {id} is now a voter");
            }
            let was_member = self.membership.contains(&id);
            if was_member && !membership.contains(&id) {
                say!("Node {id} was removed from the cluster; it can be stopped");
            }
        }
        self.membership = membership;
    }

    /// §7: once enough entries were applied since the last snapshot, write
    /// the state machine's state to a snapshot and compact the log.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = self.raft.last_applied();
        // Saturating: both are bounded (MAX_INDEX, MAX_SNAPSHOT_ENTRIES), so
        // this never saturates; if it did, "not yet" is the safe answer.
        if applied
            < self
                .raft
                .snapshot_index()
                .saturating_add(self.snapshot_entries)
        {
            return Ok(());
        }
        let data = self.state_machine.snapshot();
        let snapshot = match self.raft.compact(applied, data) {
            Ok(snapshot) => snapshot,
            // A node that joined learns the membership from the leader; it
            // snapshots once it has (a later call).
            Err(CompactError::MembershipUnknown { .. }) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        self.storage
            .save_snapshot(&snapshot)
            .map_err(|e| e.to_string())?;
        say!(
            "Node {} snapshot at index {} ({})",
            self.raft.id(),
            applied,
            human_bytes(self.storage.disk_bytes())
        );
        Ok(())
    }

    /// Persist before you answer: term, vote and entries reach the disk, with
    /// one fsync for the batch, before any message of this Ready is sent.
    /// A failed write or fsync stops the node: it cannot know what is on
    /// disk, and answering anyway could break the promises Raft makes.
    fn persist(&mut self, ready: &Ready) -> Result<(), String> {
        if let Some(snapshot) = &ready.snapshot {
            self.storage
                .save_snapshot(snapshot)
                .map_err(|e| e.to_string())?;
        }
        if let Some(hard_state) = &ready.hard_state {
            self.storage
                .save_hard_state(hard_state)
                .map_err(|e| e.to_string())?;
        }
        if !ready.entries.is_empty() {
            self.storage
                .append(&ready.entries)
                .map_err(|e| e.to_string())?;
        }
        self.storage.sync().map_err(|e| e.to_string())
    }

    fn on_event(&mut self, event: &Event) {
        let id = self.raft.id().clone();
        match event {
            Event::ElectionStarted { term } => {
                say!("Node {id} starting election for term {term}")
            }
            Event::BecameLeader { term } => say!("Node {id} elected as leader for term {term}"),
            Event::SteppedDown { term, reason } => {
                match reason {
                    StepDownReason::HigherTerm => {
                        say!("Leader {id} stepping down: term {term} has begun")
                    }
                    StepDownReason::LostQuorum => say!(
                        "Leader {id} stepping down: no word from a majority for an election timeout"
                    ),
                    StepDownReason::Removed => {
                        say!("Leader {id} stepping down: it is no longer a member")
                    }
                }
                if let Some(waiter) = self.pending_transfer.take() {
                    answer(waiter, ClientResult::Done);
                }
                // Writes proposed here may still commit under the new
                // leader, or may be lost; this node can no longer tell.
                for waiter in self.pending_writes.take_all() {
                    answer(
                        waiter,
                        error("leadership changed before the write committed; it may or may not have been applied, so retry"),
                    );
                }
            }
            Event::LearnerAdded { id: new } => {
                say!("Leader {id} adding node {new} as learner")
            }
            Event::LearnerPromoted { id: learner } => {
                say!("Leader {id} promoting node {learner} to voter: it has caught up")
            }
            Event::MemberRemoved { id: member } => say!("Leader {id} removing node {member}"),
            Event::LostEntries {
                id: member,
                acknowledged,
                last_index,
                incarnations,
            } => say!(
                "{}",
                lost_entries_line(&id, member, *acknowledged, *last_index, *incarnations)
            ),
            Event::MemberDemoted { id: member } => say!(
                "Leader {id} making node {member} a learner until it catches up: its votes from before the disk loss do not count"
            ),
            Event::TransferStarted { target, .. } => {
                say!("Leader {id} transferring leadership to {target}")
            }
            Event::TransferAborted { target, .. } => {
                say!("Leader {id} gave up transferring leadership to {target}: it did not take over in time");
                if let Some(waiter) = self.pending_transfer.take() {
                    answer(
                        waiter,
                        error("the target did not take over within an election timeout"),
                    );
                }
            }
        }
    }

    /// Applies committed entries in order, answers the writes that wait for
    /// them, then the reads whose index is now applied.
    fn apply(&mut self, ready: &Ready) {
        for entry in &ready.committed {
            if let EntryData::Command(value) = &entry.data {
                self.state_machine.apply(entry.index, value);
                say!("Node {} updated value to: {}", self.raft.id(), value);
            }
            if let Some((term, waiter)) = self.pending_writes.remove(entry.index) {
                let result = if term == entry.term {
                    ClientResult::Written { index: entry.index }
                } else {
                    error("leadership changed and the write was overwritten; retry")
                };
                answer(waiter, result);
            }
        }
        self.answer_reads(ready);
    }

    fn answer_reads(&mut self, ready: &Ready) {
        for (id, outcome) in &ready.reads {
            let Some(waiter) = self.pending_reads.remove(id) else {
                continue;
            };
            let result = match outcome {
                ReadOutcome::Ready { index } => {
                    debug_assert!(*index <= self.raft.last_applied());
                    ClientResult::Value {
                        value: self.state_machine.read(),
                    }
                }
                ReadOutcome::Failed => self.not_leader(NotLeader {
                    leader: self.raft.leader().cloned(),
                }),
            };
            answer(waiter, result);
        }
    }

    fn status(&self) -> Status {
        Status {
            id: self.raft.id().clone(),
            role: self.raft.role().to_string(),
            term: self.raft.current_term(),
            leader: self.raft.leader().cloned(),
            commit_index: self.raft.commit_index(),
            last_applied: self.raft.last_applied(),
            last_log_index: self.raft.log().last_index(),
            value: self.state_machine.read(),
            members: self.raft.membership().voters.keys().cloned().collect(),
            learners: self.raft.membership().learners.keys().cloned().collect(),
            snapshot_index: self.raft.snapshot_index(),
            fsyncs: self.storage.fsync_count(),
            bytes_sent: self.peers.bytes_sent(),
            messages_sent: self.peers.messages_sent(),
            longest_sync_us: u64::try_from(self.storage.longest_sync().as_micros())
                .unwrap_or(u64::MAX),
        }
    }

    // ----- the prompt ---------------------------------------------------

    fn on_prompt_line(&mut self, line: &str) {
        match parse_prompt(line) {
            PromptCommand::Set(value) => self.prompt_set(value),
            PromptCommand::Get => self.prompt_get(),
            PromptCommand::Status => self.print_status(),
            PromptCommand::Log(count) => self.print_log(count),
            PromptCommand::Transfer(target) => self.prompt_transfer(target),
            PromptCommand::Add(address) => self.add_member(&address, Waiter::Prompt),
            PromptCommand::Remove(id) => self.remove_member(id, Waiter::Prompt),
            PromptCommand::Partition(peers) => self.prompt_partition(&peers),
            PromptCommand::Heal => self.prompt_heal(),
            PromptCommand::Slow(factor) => self.set_clock(factor),
            PromptCommand::Help => HELP.iter().for_each(|line| console::say(line)),
            PromptCommand::Empty => {}
            PromptCommand::Usage(line) => say!("{line}"),
            PromptCommand::Unknown(word) => {
                say!("Unknown command '{word}'; type 'help' for the list of commands")
            }
        }
        console::show_prompt();
    }

    /// Here if this node leads and nothing typed earlier is still on its
    /// way to a leader; else through the prompt's queue, in order.
    fn prompt_set(&mut self, value: String) {
        if self.raft.role() == RoleKind::Leader && self.forwards.is_idle() {
            self.propose(value, Waiter::Prompt);
            return;
        }
        self.forward(ClientCommand::Set { value }, "set");
    }

    fn prompt_get(&mut self) {
        if self.raft.role() == RoleKind::Leader && self.forwards.is_idle() {
            self.read(Waiter::Prompt);
            return;
        }
        self.forward(ClientCommand::Get, "get");
    }

    fn forward(&mut self, command: ClientCommand, what: &str) {
        let id = self.raft.id().clone();
        let Some(leader) = self.raft.leader().cloned() else {
            say!("Node {id} knows no leader yet; {}", self.why_no_leader());
            return;
        };
        let Some(leader_address) = self.addresses.get(&leader).cloned() else {
            say!("Node {id} does not know the address of leader {leader}; try again in a moment");
            return;
        };
        if leader != id {
            say!("Node {id} is not the leader; forwarding {what} to leader {leader}");
        }
        // The leader first; the others let the request follow a new
        // leader's hint if leadership moves meanwhile.
        let mut addresses = vec![leader_address];
        addresses.extend(
            self.addresses
                .iter()
                .filter(|(member, _)| **member != leader && **member != id)
                .map(|(_, address)| address.clone()),
        );
        self.forwards.send(id, addresses, command);
    }

    /// "a leader needs 2 of the 3 members; 1 reachable now: try again in a
    /// moment" (or "start the others").
    fn why_no_leader(&self) -> String {
        let voters = self.raft.membership().voters.len();
        let majority = voters / 2 + 1;
        let window = self.election_timeout.1 * 2 * self.clock_factor();
        let id = self.raft.id();
        let reachable = self
            .raft
            .membership()
            .voters
            .keys()
            .filter(|v| *v == id || self.watch.heard_within(v, window))
            .count();
        if reachable < majority {
            let verb = if reachable == 1 { "is" } else { "are" };
            format!(
                "electing one needs {majority} of the {voters} members, and {reachable} {verb} running and in touch: start the others"
            )
        } else {
            "an election is under way; try again in a moment".to_string()
        }
    }

    fn prompt_transfer(&mut self, target: NodeId) {
        if self.raft.role() != RoleKind::Leader {
            let id = self.raft.id();
            match self.raft.leader() {
                Some(leader) => {
                    say!("Node {id} is not the leader; type transfer at leader {leader}")
                }
                None => say!("Node {id} is not the leader, and knows no leader yet"),
            }
            return;
        }
        self.transfer(target, Waiter::Prompt);
    }

    fn prompt_partition(&mut self, peers: &[NodeId]) {
        let id = self.raft.id().clone();
        if peers.contains(&id) {
            say!(
                "Node {id} cannot be partitioned from itself; name other members, or none for all"
            );
            return;
        }
        self.partition.cut(peers);
        say!(
            "Node {id} partitioned from {}: their messages to and from it are dropped until heal",
            self.partition.describe()
        );
    }

    fn prompt_heal(&mut self) {
        let id = self.raft.id().clone();
        let (sent, received) = self.partition.dropped;
        if self.partition.heal() {
            say!("Node {id} healed: talking to every peer again ({sent} messages out and {received} in were dropped)");
        } else {
            say!("Node {id} is not partitioned; nothing to heal");
        }
    }

    fn print_status(&self) {
        let s = self.status();
        let leader = s.leader.map_or("unknown".to_string(), |l| l.to_string());
        let learners = if s.learners.is_empty() {
            String::new()
        } else {
            format!("; learners {}", list(s.learners.iter()))
        };
        say!(
            "Node {}: {} in term {}, leader {leader}; members {}{learners}",
            s.id,
            s.role,
            s.term,
            list(s.members.iter()),
        );
        say!(
            "  commit index {}, last applied {}, last log index {}; value: {}",
            s.commit_index,
            s.last_applied,
            s.last_log_index,
            self.value_for_person()
        );
        if self.partition.is_cut() {
            say!(
                "  partitioned from {} (heal to end it)",
                self.partition.describe()
            );
        }
        if self.slow_factor > 1 {
            say!(
                "  clock at {} (fast to end it)",
                clock_name(self.slow_factor)
            );
        }
    }

    /// The value, or why it is not known yet: a restarted node holds
    /// entries but learns which are committed only from a leader, and until
    /// then its value is that of the last entry it knows committed.
    fn value_for_person(&self) -> String {
        let behind = self.raft.last_applied() < self.raft.log().last_index();
        if behind && !self.watch.met_a_leader && self.raft.role() != RoleKind::Leader {
            return format!(
                "not yet known (the log holds entries up to index {}; which are committed, a leader will tell)",
                self.raft.log().last_index()
            );
        }
        match self.state_machine.read() {
            value if value.is_empty() => "(empty)".to_string(),
            value => value,
        }
    }

    /// The last `count` entries, oldest first.
    fn log_rows(&self, count: usize) -> Vec<LogRow> {
        let log = self.raft.log();
        let last = log.last_index();
        let first = log.first_index().max(last.saturating_sub(count as u64) + 1);
        if last == 0 || first > last {
            return Vec::new();
        }
        log.slice(first, last + 1)
            .iter()
            .map(|entry| {
                let (kind, data) = match &entry.data {
                    EntryData::Command(value) => ("command", Some(value.clone())),
                    EntryData::Noop => ("noop", None),
                    EntryData::Config(m) => (
                        "membership",
                        Some(format!(
                            "voters {}; learners {}",
                            list(m.voters.keys()),
                            list(m.learners.keys())
                        )),
                    ),
                };
                LogRow {
                    index: entry.index,
                    term: entry.term,
                    kind: kind.to_string(),
                    data,
                    committed: entry.index <= self.raft.commit_index(),
                    applied: entry.index <= self.raft.last_applied(),
                }
            })
            .collect()
    }

    fn print_log(&self, count: usize) {
        let rows = self.log_rows(count);
        let id = self.raft.id();
        let snapshot = self.raft.snapshot_index();
        if rows.is_empty() {
            match snapshot {
                0 => say!("Node {id} log is empty"),
                s => say!("Node {id} log is empty after the snapshot up to index {s}"),
            }
            return;
        }
        for line in log_table(&rows) {
            console::say(&line);
        }
        if snapshot > 0 && rows.first().is_some_and(|r| r.index == snapshot + 1) {
            say!("  (entries up to index {snapshot} are compacted into a snapshot)");
        }
    }
}

/// "real time" or "1/20 speed".
fn clock_name(factor: u64) -> String {
    if factor <= 1 {
        "real time".to_string()
    } else {
        format!("1/{factor} speed")
    }
}

/// Sends a client's or the prompt's answer. A client that has gone away is
/// not an error.
fn answer(waiter: Waiter, result: ClientResult) {
    match waiter {
        Waiter::Client { id, reply } => {
            reply.send(ClientResponse { id, result });
        }
        Waiter::Prompt => print_result(&result),
    }
}

/// "8000, 8001" or "none".
fn list<'a>(ids: impl Iterator<Item = &'a NodeId>) -> String {
    let names: Vec<&str> = ids.map(NodeId::as_str).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// "3 KiB".
fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{} KiB", bytes / 1024),
        _ => format!("{} MiB", bytes / 1_048_576),
    }
}

fn error(message: &str) -> ClientResult {
    ClientResult::Error {
        message: message.to_string(),
    }
}

fn overloaded() -> ClientResult {
    error("too many requests are waiting on this node; retry shortly")
}

/// The one line a leader prints when a follower lost entries it had
/// acknowledged: who, what it acknowledged, what it has now, and what to do.
fn lost_entries_line(
    leader: &NodeId,
    member: &NodeId,
    acknowledged: Index,
    last_index: Index,
    incarnations: Option<(Incarnation, Incarnation)>,
) -> String {
    let cause = match incarnations {
        Some((old, new)) => {
            format!("its data directory was replaced: incarnation {old:016x}, now {new:016x}")
        }
        None => "its disk lost the end of its log".to_string(),
    };
    // A leader elected after the loss never saw what the old directory
    // acknowledged (it acknowledged to an earlier leader).
    let acknowledged = match acknowledged {
        0 => "it had acknowledged entries to an earlier leader".to_string(),
        index => format!("it acknowledged up to index {index}"),
    };
    format!(
        "Leader {leader}: node {member} lost entries it had acknowledged: {acknowledged} and \
         now has up to {last_index} ({cause}). It catches up as a learner and becomes a voter \
         again by itself: nothing to do, unless nobody deleted or restored its data directory; \
         then check the disk of {member}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lost_line_says_who_what_and_what_to_do() {
        let line = lost_entries_line(
            &NodeId::new("8000"),
            &NodeId::new("8001"),
            57,
            0,
            Some((1, 2)),
        );
        for part in [
            "Leader 8000",
            "node 8001 lost",
            "up to index 57",
            "has up to 0",
            "replaced",
            "learner",
            "nothing to do",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
        let line = lost_entries_line(&NodeId::new("8000"), &NodeId::new("8001"), 57, 40, None);
        assert!(line.contains("lost the end of its log"), "{line}");
    }

    #[test]
    fn pending_writes_count_the_bytes_they_hold() {
        let mut pending = PendingWrites::default();
        pending.insert(5, 2, 100, Waiter::Prompt);
        pending.insert(6, 2, 30, Waiter::Prompt);
        assert_eq!((pending.len(), pending.bytes), (2, 130));
        assert!(matches!(pending.remove(5), Some((2, Waiter::Prompt))));
        assert_eq!(pending.bytes, 30);
        assert!(pending.remove(5).is_none());
        // A later term reuses index 6: the old write is answered and its
        // bytes no longer count.
        pending.insert(6, 3, 7, Waiter::Prompt);
        assert_eq!((pending.len(), pending.bytes), (1, 7));
        assert_eq!(pending.take_all().len(), 1);
        assert_eq!((pending.len(), pending.bytes), (0, 0));
    }
}
