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
//! [`run`] (here) opens the storage, restores the core and starts the
//! threads; then the state-machine thread owns a `Node` and nothing else
//! touches it. Its jobs, one file each:
//!
//! - `event_loop.rs`: the loop, where **persist, then send, then apply**
//!   happens; one fsync per turn (group commit).
//! - `requests.rs`: client requests, from arrival to answer (a `set`
//!   waiting for its commit, a `get` for its ReadIndex round, ...).
//! - `connections.rs`: writers and the listener kept in step with the
//!   membership.
//! - `join.rs`: `--join`, asking a running cluster to add this node.
//! - `narration.rs`: what the node says on its console by itself.
//! - `prompt.rs`: the commands typed at its prompt.

mod connections;
mod event_loop;
mod join;
mod narration;
mod prompt;
mod requests;

pub use connections::MAX_STRANGER_WRITERS;
pub use join::{JOIN_RETRY_INTERVAL, JOIN_TIMEOUT};
pub use requests::{MAX_PENDING_REQUESTS, MAX_PENDING_WRITE_BYTES};

use join::{ask_to_join, join_seeds};
use narration::{heard_ago, human_bytes, list, Watch};
use requests::{PendingWrites, Waiter};

use crate::client;
use crate::config::NodeOptions;
use crate::console;
use crate::core::{
    CompactError, Config, Event, MembershipError, NotLeader, Raft, ReadOutcome, Ready, RoleKind,
    StepDownReason, TransferError, MAX_COMMAND_BYTES,
};
use crate::driver;
use crate::message::{
    ClientCommand, ClientRequest, ClientResponse, ClientResult, EntryData, Incarnation, Index,
    LogRow, Membership, Message, MessageBody, NodeId, Status, Term,
};
use crate::metrics::Metrics;
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

/// How long a follower waits for the leader when forwarding a `set`.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a node until Ctrl+C (or, with `--stop-when-stdin-closes`, the end
/// of stdin). Errors are for a person: what went wrong and what to do.
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
        stop_when_stdin_closes: opts.stop_when_stdin_closes,
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
    /// `--stop-when-stdin-closes`: the end of stdin stops the node.
    stop_when_stdin_closes: bool,
}
