//! A deterministic simulator for the Raft core.
//!
//! The core in `src/core` is a pure state machine: no clock, no sockets, no
//! threads. That lets us run a whole cluster of them inside one test thread,
//! with a virtual clock and a virtual network that we control completely:
//!
//! - [`network`]: a seeded network that delays, reorders, duplicates and
//!   drops messages, and can be partitioned (symmetric, one-way, bridge).
//! - [`node`]: one simulated machine: a `Raft`, its disk (what survived the
//!   last persist), its state machine, and the driver loop that handles each
//!   `Ready` in the order the core's docs demand.
//! - [`cluster`]: the event loop and virtual clock that ties nodes, network
//!   and clients together, and crashes and restarts nodes.
//! - [`controls`]: what scenarios use to steer and watch a cluster
//!   (partition, find the leader, propose and wait for agreement).
//! - [`checker`]: Raft's safety properties (Figure 3 of the paper and a few
//!   more), checked after every single step.
//! - [`clients`]: simulated clients doing `set`/`get` and recording what
//!   they asked and heard back.
//! - [`history`]: that record, and its linearizability check (stateright's
//!   `LinearizabilityTester`).
//! - [`random`]: a full randomised run: faults for a while, then healing,
//!   then liveness and end-of-run checks; optionally with snapshots taken at
//!   points drawn from the seed.
//! - [`membership`]: membership changes (machines added and removed) carried
//!   out during a randomised run.
//! - [`trace`]: the readable event trace, and its hash for replay checks.
//!
//! Everything random comes from one seed, so a failing run can be replayed
//! exactly: the failure message prints the command to do so.

pub mod checker;
pub mod clients;
pub mod cluster;
pub mod controls;
pub mod history;
pub mod membership;
pub mod network;
pub mod node;
pub mod random;
pub mod trace;

use raft::message::NodeId;
use std::fmt;

/// Virtual time units in one nominal tick. Each node's own tick period is
/// this plus or minus its clock skew; message delays are in the same units.
pub const TICK: u64 = 100;

/// The name of node `index` (`n1`, `n2`, ...).
pub fn node_id(index: usize) -> NodeId {
    NodeId::new(format!("n{}", index + 1))
}

/// Which check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// §5.2, Figure 3: at most one leader per term.
    ElectionSafety,
    /// Figure 3: a leader never overwrites or deletes entries in its log.
    LeaderAppendOnly,
    /// §5.3, Figure 3: same index and term means the same entry and the
    /// same log before it.
    LogMatching,
    /// §5.4, Figure 3: an entry committed in a term is in the log of every
    /// leader of a later term.
    LeaderCompleteness,
    /// §5.4.3, Figure 3: no two nodes commit or apply different entries at
    /// one index, and no node drops an entry it knows is committed.
    StateMachineSafety,
    /// `current_term` is persistent state: it never goes down, even across a
    /// crash.
    TermDecreased,
    /// `commit_index` never goes down while a node runs.
    CommitDecreased,
    /// A node granted its vote for one term to two candidates.
    DoubleVote,
    /// A read was handed back before the state machine reached its index.
    ReadAheadOfApplied,
    /// The client history has no linearization.
    Linearizability,
    /// An acknowledged write is missing from the final committed log.
    LostWrite,
    /// The cluster did not recover in the stated number of ticks.
    Liveness,
    /// A scenario's own expectation did not hold.
    Scenario,
    /// The core broke its contract with the driver (e.g. a gap in the
    /// entries to persist).
    Driver,
    /// Something panicked: most likely one of the core's own
    /// `debug_assert!`s (its message is printed just above).
    Panic,
}

/// A failed check, with enough words to understand it without the trace.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// Virtual time of the failure.
    pub at: u64,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, at: u64, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            at,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} violated at {}: {}",
            self.kind,
            trace::time(self.at),
            self.message
        )
    }
}

/// Runs a scripted scenario on a new cluster. On failure, panics with the
/// seed and the command that replays it.
pub fn run_scenario(
    test: &str,
    config: cluster::ClusterConfig,
    script: impl FnOnce(&mut cluster::Cluster) -> Result<(), Failure>,
) {
    let seed = config.seed;
    let result = catch_panic(|| cluster::Cluster::new(config).and_then(|mut c| script(&mut c)));
    if let Err(failure) = result {
        fail(test, seed, &failure);
    }
}

/// Runs `run`, turning a panic (say, a `debug_assert!` in the core) into a
/// `Failure`, so that it too is reported with its seed and replay command.
pub fn catch_panic<T>(run: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Failure::new(FailureKind::Panic, 0, message))
    })
}

// ----- seeds, replay and the environment variables ------------------------
//
// RAFT_SIM_SEED=N     run only seed N (replays a failure)
// RAFT_SIM_SEEDS=N    run N seeds instead of the default number (soaks)
// RAFT_SIM_FIRST_SEED=N  with RAFT_SIM_SEEDS: start at seed N instead of 0
// RAFT_SIM_TRACE=1    print every event of the run

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(number) => Some(number),
        Err(_) => panic!("{name} must be a number, got {value:?}"),
    }
}

/// The seeds a randomised test runs: `RAFT_SIM_SEED` alone if set, else
/// `RAFT_SIM_SEEDS` of them (from `RAFT_SIM_FIRST_SEED`), else `default`.
pub fn seeds(default: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("RAFT_SIM_SEED") {
        return vec![seed];
    }
    let first = env_u64("RAFT_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("RAFT_SIM_SEEDS").unwrap_or(default);
    (first..first + count).collect()
}

/// The seed of a scripted scenario: `RAFT_SIM_SEED` if set, else `default`.
pub fn scenario_seed(default: u64) -> u64 {
    env_u64("RAFT_SIM_SEED").unwrap_or(default)
}

/// True if the run should print its trace.
pub fn trace_wanted() -> bool {
    std::env::var("RAFT_SIM_TRACE").is_ok_and(|v| v != "0" && !v.is_empty())
}

/// The command that replays `seed` of `test` with a readable trace.
pub fn replay_command(test: &str, seed: u64) -> String {
    format!(
        "RAFT_SIM_SEED={seed} RAFT_SIM_TRACE=1 cargo test --test simulation {test} -- --exact --nocapture"
    )
}

/// Fails the test with the seed and the command that replays it.
pub fn fail(test: &str, seed: u64, failure: &Failure) -> ! {
    panic!(
        "\nsimulation failed (seed {seed}): {failure}\nreplay with a trace:\n    {}\n",
        replay_command(test, seed)
    )
}

/// For the bug-switch tests: runs seeds `0..limit` (or just `RAFT_SIM_SEED`)
/// until one fails, and returns it with its failure. Panics if none fails
/// (the check missed the bug), or if the failure is not of an expected
/// kind.
pub fn first_failing_seed(
    test: &str,
    limit: u64,
    expected: &[FailureKind],
    run: impl Fn(u64) -> Result<(), Failure>,
) -> (u64, Failure) {
    for seed in seeds(limit) {
        if let Err(failure) = catch_panic(|| run(seed)) {
            assert!(
                expected.contains(&failure.kind),
                "{test}: seed {seed} failed in an unexpected way: {failure}\nreplay: {}",
                replay_command(test, seed)
            );
            println!(
                "{test}: caught at seed {seed} ({} seeds): {failure}\nreplay: {}",
                seed + 1,
                replay_command(test, seed)
            );
            return (seed, failure);
        }
    }
    panic!("{test}: the bug was not caught within {limit} seeds");
}
