//! Deterministic simulation of whole Raft clusters.
//!
//! The simulator itself is in `tests/simulator/` (start with
//! `tests/simulator/mod.rs`). This file holds the randomised runs and the
//! replay check; `tests/simulator_scenarios/` the rest:
//! - `scenarios.rs`: the scripted scenarios;
//! - `bug_switches.rs`: the proof that the checks catch bugs;
//! - `regressions.rs`: the core bugs the simulator found;
//! - `history_checks.rs`: tests of the linearizability check;
//! - `partitions.rs`: PreVote, CheckQuorum, leadership transfer and
//!   ReadIndex under the partitions they exist for;
//! - `compaction.rs`: the snapshot scenarios, and `membership.rs`: the
//!   membership changes under faults, each with its bug switch (and, for
//!   membership, the core bugs found);
//! - `disk_loss.rs`: machines that lose their disks, with random runs,
//!   scripted scenarios, the storm regression and its bug switch.
//!
//! Environment variables (see `tests/simulator/mod.rs`):
//! - `RAFT_SIM_SEED=N` runs only seed N, `RAFT_SIM_TRACE=1` prints its trace;
//! - `RAFT_SIM_SEEDS=N` (and `RAFT_SIM_FIRST_SEED=M`) runs N seeds, for soaks.

mod simulator;

#[path = "simulator_scenarios/bug_switches.rs"]
mod bug_switches;
#[path = "simulator_scenarios/compaction.rs"]
mod compaction;
#[path = "simulator_scenarios/disk_loss.rs"]
mod disk_loss;
#[path = "simulator_scenarios/history_checks.rs"]
mod history_checks;
#[path = "simulator_scenarios/membership.rs"]
mod membership;
#[path = "simulator_scenarios/partitions.rs"]
mod partitions;
#[path = "simulator_scenarios/regressions.rs"]
mod regressions;
#[path = "simulator_scenarios/scenarios.rs"]
mod scenarios;

use simulator::random::{self, RandomRun, Snapshots};

/// Seeds each `random_faults_*` test runs by default.
const DEFAULT_SEEDS: u64 = 2000;

/// Runs the random seeds for one cluster size and prints a summary.
fn random_faults(test: &str, size: usize) {
    // Half of the seeds (drawn from each seed) compact their logs at points
    // drawn from the seed too, so every fault mix also meets snapshots and
    // InstallSnapshot; the other half run exactly as before snapshots.
    let run = RandomRun {
        size: Some(size),
        snapshots: Snapshots::Drawn,
        ..RandomRun::default()
    };
    let seeds = simulator::seeds(DEFAULT_SEEDS);
    let (mut operations, mut checked, mut steps, mut crashes, mut leaders) = (0, 0, 0, 0, 0);
    let (mut slowest_leader, mut slowest_clients, mut largest_segment) = (0, 0, 0);
    let (mut snapshots_taken, mut snapshots_installed) = (0, 0);
    for &seed in &seeds {
        let checked_run = || {
            let report = random::run(&run, seed)?;
            random::only_possible_messages(&report)?;
            Ok(report)
        };
        match simulator::catch_panic(checked_run) {
            Ok(report) => {
                operations += report.operations;
                checked += report.history.operations;
                steps += report.steps;
                crashes += report.crashes;
                leaders += report.leaders_elected;
                slowest_leader = slowest_leader.max(report.leader_after);
                slowest_clients = slowest_clients.max(report.clients_done_after);
                largest_segment = largest_segment.max(report.history.largest_segment);
                snapshots_taken += report.snapshots_taken;
                snapshots_installed += report.snapshots_installed;
            }
            Err(failure) => simulator::fail(test, seed, &failure),
        }
    }
    println!(
        "{test}: {} seeds, {steps} steps, {operations} client operations ({checked} in the linearizability check), {crashes} crashes, \
         {leaders} leaders elected; after the calm, a leader within {slowest_leader} ticks and \
         clients done within {slowest_clients} ticks at worst; largest history segment {largest_segment} operations; \
         {snapshots_taken} snapshots taken, {snapshots_installed} installed by InstallSnapshot",
        seeds.len()
    );
}

#[test]
fn random_faults_3_nodes() {
    random_faults("random_faults_3_nodes", 3);
}

#[test]
fn random_faults_5_nodes() {
    random_faults("random_faults_5_nodes", 5);
}

#[test]
fn random_faults_7_nodes() {
    random_faults("random_faults_7_nodes", 7);
}

/// Same seed, same run: the hash of the full event trace must match, and a
/// different seed must give a different trace.
#[test]
fn same_seed_same_run() {
    let run = RandomRun {
        hash_trace: true,
        ..RandomRun::default()
    };
    let seed = simulator::scenario_seed(42);
    let hash = |seed| match simulator::catch_panic(|| random::run(&run, seed)) {
        Ok(report) => report.trace_hash.expect("hashing was asked for"),
        Err(failure) => simulator::fail("same_seed_same_run", seed, &failure),
    };
    let first = hash(seed);
    assert_eq!(first, hash(seed), "seed {seed} did not replay identically");
    assert_ne!(
        first,
        hash(seed + 1),
        "seeds {seed} and {} gave the same trace",
        seed + 1
    );
}
