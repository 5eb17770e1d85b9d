//! A randomised run: faults for a while, then calm, then the end-of-run
//! checks.
//!
//! 1. **Faults.** Clients run while, every few ticks, something goes wrong:
//!    a node or the leader crashes (and reboots from its disk some ticks
//!    later), the network splits (symmetric, one-way, or around a bridge
//!    node), the leader is cut off, or the network heals. How lossy the
//!    network is, and whether nodes also crash right after steps, is drawn
//!    per seed.
//! 2. **Calm.** Every node is restarted, the network heals and becomes
//!    reliable. Liveness: a leader that every node follows must appear
//!    within `LEADER_BOUND_TICKS`, and every client operation must be
//!    answered within `CLIENTS_BOUND_TICKS`; no request sent after the calm
//!    began may go unanswered.
//! 3. **End.** The client history must be linearizable, and every
//!    acknowledged write must be in the committed log.
//!
//! Options add snapshots (nodes compact their logs at points drawn from the
//! seed, so followers that fall behind catch up by InstallSnapshot) and
//! membership changes (a plan of additions and removals carried out during
//! the faults, see `membership.rs`).

use super::clients::ClientConfig;
use super::cluster::{Cluster, ClusterConfig, Compaction};
use super::history::CheckStats;
use super::membership::{self, Plan};
use super::network::NetworkConfig;
use super::trace::trace;
use super::{Failure, FailureKind, TICK};
use raft::core::BugSwitches;
use raft::message::EntryData;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// After the calm begins, a leader every node follows must exist within
/// this many ticks. (The election timeout is 15–30 ticks; a node cut off
/// for long returns with a high term and forces one more election.)
pub const LEADER_BOUND_TICKS: u64 = 100;

/// After the calm begins, every client operation must be answered within
/// this many ticks (clients give up on an attempt after 40 ticks).
pub const CLIENTS_BOUND_TICKS: u64 = 150;

/// With disk loss on, the chance that a fault is followed by a machine
/// losing its disk (if that is a loss the protections cover).
pub const DISK_LOSS_RATE: f64 = 0.15;

/// How long the faulty phase lasts.
pub const FAULT_TICKS: u64 = 400;

/// Which faults the faulty phase injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// Crashes and every kind of partition.
    All,
    /// Only nodes crashing and being cut off alone ("churn").
    Churn,
}

/// A disturbance of a test's own, added to the faulty phase.
pub type ExtraFault = fn(&mut Cluster) -> Result<(), Failure>;
/// Whether nodes compact their logs during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshots {
    /// Never: the run is exactly what it was before snapshots existed.
    Off,
    /// Always, with a policy drawn from the seed.
    On,
    /// In about half of the seeds, with a policy drawn from the seed.
    Drawn,
}

impl Snapshots {
    /// The compaction policy for `seed`. It is drawn from an RNG of its own,
    /// so turning snapshots on changes nothing else the seed decides (the
    /// cluster, the network, the faults): with snapshots off, a seed runs
    /// exactly as it did before they existed.
    pub fn policy(self, seed: u64) -> Compaction {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5a4e_5407_c0de_f00d);
        let on = match self {
            Snapshots::Off => false,
            Snapshots::On => true,
            Snapshots::Drawn => rng.random_bool(0.5),
        };
        if !on {
            return Compaction::Off;
        }
        // Either every few entries, as the real node does (small numbers, so
        // that a node down for a few ticks already needs a snapshot), or at
        // random steps, so snapshots land anywhere: mid-election, while a
        // follower is being repaired, just before a crash.
        if rng.random_bool(0.5) {
            Compaction::EveryEntries(rng.random_range(1..=20))
        } else {
            Compaction::Random(*[0.01, 0.05, 0.2].choose(&mut rng).expect("rates"))
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RandomRun {
    /// Cluster size; by default 3, 5 or 7 chosen by the seed.
    pub size: Option<usize>,
    pub bugs: BugSwitches,
    pub reply_before_persist: bool,
    pub fault_ticks: u64,
    /// Concurrent clients. Keep this small: the linearizability search
    /// grows steeply with concurrency (with 8 clients a single history can
    /// take seconds to check).
    pub clients: usize,
    /// Operations per client during the faults; each client does two more
    /// once the calm begins.
    pub ops_per_client: usize,
    pub faults: Faults,
    /// The network during the faults; by default drawn from the seed.
    pub network: Option<NetworkConfig>,
    pub hash_trace: bool,
    /// A scenario's own disturbance, run after each fault of the faulty
    /// phase (say, a leadership transfer). It draws from the cluster's RNG,
    /// so runs without one are unchanged.
    pub extra_fault: Option<ExtraFault>,
    /// Whether nodes compact their logs.
    pub snapshots: Snapshots,
    /// Membership changes to carry out during the faults, if any.
    pub membership: Option<Plan>,
    /// Machines also lose their disks during the faults: they come back
    /// with an empty data directory (see `maybe_lose_a_disk`).
    pub disk_loss: bool,
}

impl Default for RandomRun {
    fn default() -> RandomRun {
        RandomRun {
            size: None,
            bugs: BugSwitches::default(),
            reply_before_persist: false,
            fault_ticks: FAULT_TICKS,
            clients: 3,
            ops_per_client: 40,
            faults: Faults::All,
            network: None,
            hash_trace: false,
            extra_fault: None,
            snapshots: Snapshots::Off,
            membership: None,
            disk_loss: false,
        }
    }
}

/// What a successful run reports.
#[derive(Clone, Debug)]
pub struct Report {
    pub operations: usize,
    pub steps: u64,
    pub crashes: u64,
    /// How many terms had a leader.
    pub leaders_elected: usize,
    /// How the linearizability check went.
    pub history: CheckStats,
    /// Ticks from the start of the calm until a settled leader.
    pub leader_after: u64,
    /// Ticks from the start of the calm until every client was done.
    pub clients_done_after: u64,
    pub trace_hash: Option<u64>,
    /// Snapshots taken by compaction and installed from a leader.
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// Membership changes committed, and how many of them were a leader
    /// removing itself.
    pub membership_changes: usize,
    pub leaders_removed_themselves: usize,
    /// Disks lost, and losses the leaders reported.
    pub disks_lost: u64,
    pub losses_reported: u64,
    /// Messages refused as ones Raft rules out.
    pub impossible_messages: u64,
}

/// Fails a run of correct nodes (no bug switch, no disk loss) in which a
/// message was refused as one Raft rules out (see `raft::core::impossible`):
/// correct nodes never send one, so the refusal itself would be the bug.
pub fn only_possible_messages(report: &Report) -> Result<(), Failure> {
    if report.impossible_messages == 0 {
        return Ok(());
    }
    Err(Failure::new(
        FailureKind::Scenario,
        0,
        format!(
            "{} messages from correct nodes were refused as ones Raft rules out",
            report.impossible_messages
        ),
    ))
}

/// Runs one seed.
pub fn run(options: &RandomRun, seed: u64) -> Result<Report, Failure> {
    // Everything below is drawn from this one seed.
    let mut rng = StdRng::seed_from_u64(seed);
    let size = options
        .size
        .unwrap_or_else(|| *[3, 5, 7].choose(&mut rng).expect("sizes"));
    let mut config = ClusterConfig::new(size, rng.random());
    let drawn = NetworkConfig {
        drop_rate: *[0.0, 0.01, 0.05, 0.1].choose(&mut rng).expect("rates"),
        duplicate_rate: *[0.0, 0.02, 0.05].choose(&mut rng).expect("rates"),
        long_delay_rate: *[0.0, 0.02, 0.1].choose(&mut rng).expect("rates"),
        ..NetworkConfig::unreliable()
    };
    config.network = options.network.clone().unwrap_or(drawn);
    config.crash_after_step_rate = *[0.0, 0.0005, 0.002].choose(&mut rng).expect("rates");
    config.bugs = options.bugs;
    config.reply_before_persist = options.reply_before_persist;
    config.clients = ClientConfig::new(options.clients, options.ops_per_client);
    config.hash_trace = options.hash_trace;
    config.compaction = options.snapshots.policy(seed);
    let mut cluster = Cluster::new(config)?;
    trace!(
        cluster.trace,
        0,
        "seed {seed}: network {:?}, crash after step {}, compaction {:?}",
        cluster.config.network,
        cluster.config.crash_after_step_rate,
        cluster.config.compaction
    );

    let mut plan = options.membership.as_ref().map(membership::Progress::new);
    match &mut plan {
        None => faults(
            &mut cluster,
            options.fault_ticks,
            options.faults,
            options.extra_fault,
            options.disk_loss,
        )?,
        Some(plan) => plan.run_under_faults(&mut cluster, options.fault_ticks, options.faults)?,
    }
    let (leader_after, clients_done_after) = calm(&mut cluster)?;
    if let Some(plan) = &mut plan {
        plan.finish(&mut cluster)?;
    }
    let history = end_checks(&cluster)?;

    Ok(Report {
        operations: cluster.clients.history.invoked(),
        steps: cluster.stats.steps,
        crashes: cluster.stats.crashes,
        leaders_elected: cluster.checker.leaders().len(),
        history,
        leader_after,
        clients_done_after,
        trace_hash: cluster.trace.hash(),
        snapshots_taken: cluster.stats.snapshots_taken,
        snapshots_installed: cluster.stats.snapshots_installed,
        membership_changes: plan.as_ref().map_or(0, |p| p.committed_changes()),
        leaders_removed_themselves: plan.as_ref().map_or(0, |p| p.leaders_removed_themselves),
        disks_lost: cluster.stats.disks_lost,
        losses_reported: cluster.stats.losses_reported,
        impossible_messages: cluster.stats.impossible_messages,
    })
}

/// Phase 1: something goes wrong every 5 to 40 ticks. A crashed node
/// reboots by itself after 5 to 60 ticks, and a new partition replaces the
/// previous one, so the cluster keeps coming back to a state where it can
/// work, and then is broken again.
pub fn faults(
    cluster: &mut Cluster,
    ticks: u64,
    kinds: Faults,
    extra: Option<ExtraFault>,
    disk_loss: bool,
) -> Result<(), Failure> {
    let end = cluster.now + ticks * TICK;
    let size = cluster.nodes.len();
    while cluster.now < end {
        let pause = cluster.rng.random_range(5..=40);
        cluster.run_for(pause)?;
        let up: Vec<usize> = (0..size).filter(|&n| cluster.is_up(n)).collect();
        let leader = cluster
            .leaders()
            .into_iter()
            .max_by_key(|&(_, t)| t)
            .map(|(n, _)| n);
        let downtime = cluster.rng.random_range(5..=60);
        let mut dice = cluster.rng.random_range(0..100);
        if kinds == Faults::Churn && (30..=62).contains(&dice) {
            dice = 80; // no partitions other than a node cut off alone
        }
        match dice {
            0..=19 => {
                if let Some(&node) = up.choose(&mut cluster.rng) {
                    cluster.crash_for(node, downtime);
                }
            }
            20..=29 => {
                if let Some(node) = leader {
                    cluster.crash_for(node, downtime);
                }
            }
            30..=44 => {
                let groups = random_split(cluster, size);
                cluster.heal();
                cluster.split(&groups);
            }
            45..=54 => {
                let (from, to) = random_halves(cluster, size);
                cluster.heal();
                cluster.network.cut_one_way(&from, &to);
                trace!(
                    cluster.trace,
                    cluster.now,
                    "network: one-way cuts {}",
                    cluster.network.describe_cuts()
                );
            }
            55..=62 => {
                let (left, right) = random_halves(cluster, size);
                let bridge = cluster.rng.random_range(0..size);
                cluster.heal();
                cluster.network.bridge(&left, &right, bridge);
                trace!(
                    cluster.trace,
                    cluster.now,
                    "network: n{} bridges the halves; cut links {}",
                    bridge + 1,
                    cluster.network.describe_cuts()
                );
            }
            63..=72 => {
                if let Some(node) = leader {
                    cluster.heal();
                    cluster.isolate(node);
                }
            }
            73..=89 => cluster.heal(),
            _ => {} // a quiet spell
        }
        if let Some(extra) = extra {
            extra(cluster)?;
        }
        if disk_loss {
            maybe_lose_a_disk(cluster);
        }
    }
    Ok(())
}

/// Now and then a machine loses its disk and comes back with an empty data
/// directory, as after `rm -rf` of its directory. Only once every other
/// machine's disk records the incarnation of its directory: before that a
/// loss looks like a fresh start to everyone, the case no protection covers
/// (see `Cluster::disk_loss_is_covered`). Draws from the RNG only when on,
/// so runs without disk loss are unchanged.
fn maybe_lose_a_disk(cluster: &mut Cluster) {
    if !cluster.rng.random_bool(DISK_LOSS_RATE) {
        return;
    }
    let node = cluster.rng.random_range(0..cluster.nodes.len());
    let downtime = cluster.rng.random_range(5..=60);
    if cluster.nodes[node].retired || !cluster.disk_loss_is_covered(node) {
        return;
    }
    cluster.lose_disk_for(node, downtime);
}

/// Two or three groups, each node in one of them.
fn random_split(cluster: &mut Cluster, size: usize) -> Vec<Vec<usize>> {
    let count = cluster.rng.random_range(2..=3);
    let mut groups = vec![Vec::new(); count];
    for node in 0..size {
        let group = cluster.rng.random_range(0..count);
        groups[group].push(node);
    }
    groups
}

/// The nodes split in two random halves.
fn random_halves(cluster: &mut Cluster, size: usize) -> (Vec<usize>, Vec<usize>) {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for node in 0..size {
        if cluster.rng.random_bool(0.5) {
            left.push(node);
        } else {
            right.push(node);
        }
    }
    (left, right)
}

/// Phase 2: every fault stops. Returns the ticks until a settled leader and
/// until every client was done.
pub fn calm(cluster: &mut Cluster) -> Result<(u64, u64), Failure> {
    let calm_start = cluster.now;
    trace!(
        cluster.trace,
        calm_start,
        "faults stop: heal, restart every node, reliable network"
    );
    cluster.config.crash_after_step_rate = 0.0;
    cluster.network.config = NetworkConfig::reliable();
    cluster.heal();
    for node in 0..cluster.nodes.len() {
        cluster.restart(node)?;
    }
    cluster.clients.calm_from(calm_start);
    cluster.clients.stop_new_ops();
    let actions = cluster.clients.add_ops(2, calm_start);
    cluster.schedule_actions(actions);

    if !cluster.run_until(LEADER_BOUND_TICKS, |c| c.settled_leader().is_some())? {
        return Err(Failure::new(
            FailureKind::Liveness,
            cluster.now,
            format!(
                "no leader that every node follows within {LEADER_BOUND_TICKS} ticks of the calm; terms {:?}, leaders {:?}",
                cluster.terms(),
                cluster.leaders()
            ),
        ));
    }
    let leader_after = (cluster.now - calm_start) / TICK;
    let remaining = CLIENTS_BOUND_TICKS.saturating_sub(leader_after);
    if !cluster.run_until(remaining, |c| c.clients.all_done())? {
        return Err(Failure::new(
            FailureKind::Liveness,
            cluster.now,
            format!(
                "client operations still pending {CLIENTS_BOUND_TICKS} ticks after the calm began: {}",
                cluster.clients.describe_pending(cluster.now)
            ),
        ));
    }
    let clients_done_after = (cluster.now - calm_start) / TICK;
    if let Some(first) = cluster.clients.timeouts_after_calm.first() {
        return Err(Failure::new(
            FailureKind::Liveness,
            cluster.now,
            format!("a request sent during the calm got no answer: {first}"),
        ));
    }
    // Let every member catch up, so the end checks see the whole log.
    let settled = cluster.run_until(LEADER_BOUND_TICKS, |c| {
        c.settled_leader().is_some_and(|leader| {
            let commit = c.commit_index(leader);
            commit == c.last_index(leader)
                && c.members_of(leader)
                    .into_iter()
                    .all(|n| !c.is_up(n) || c.nodes[n].applied == commit)
        })
    })?;
    if !settled {
        return Err(Failure::new(
            FailureKind::Liveness,
            cluster.now,
            format!(
                "nodes did not converge on one committed log: commit indexes {:?}",
                (0..cluster.nodes.len())
                    .map(|n| cluster.commit_index(n))
                    .collect::<Vec<_>>()
            ),
        ));
    }
    Ok((leader_after, clients_done_after))
}

/// Phase 3: linearizability, and no acknowledged write lost.
pub fn end_checks(cluster: &Cluster) -> Result<CheckStats, Failure> {
    let leader = cluster
        .settled_leader()
        .expect("calm() ends with a settled leader");
    let raft = cluster.nodes[leader].raft.as_ref().expect("up");
    // The checker's committed log, since the leader may have compacted
    // its own.
    let committed: std::collections::BTreeSet<&str> = cluster
        .checker
        .committed_entries()
        .take(raft.commit_index() as usize)
        .filter_map(|e| match &e.data {
            EntryData::Command(value) => Some(value.as_str()),
            EntryData::Noop | EntryData::Config(_) => None,
        })
        .collect();
    for value in cluster.clients.history.acknowledged_writes() {
        if !committed.contains(value.as_str()) {
            return Err(Failure::new(
                FailureKind::LostWrite,
                cluster.now,
                format!("the write of {value:?} was acknowledged but is not in the committed log"),
            ));
        }
    }
    cluster.clients.history.check_linearizable(cluster.now)
}
