//! Deterministic simulation of whole Raft clusters (see `tests/sim/mod.rs`).

mod sim;

use sim::random::{self, RandomRun};

#[test]
fn random_faults() {
    let start = std::time::Instant::now();
    let seeds = sim::seeds(20);
    let mut steps = 0;
    for &seed in &seeds {
        match random::run(&RandomRun::default(), seed) {
            Ok(report) => {
                steps += report.steps;
                println!("seed {seed}: {report:?}");
            }
            Err(failure) => sim::fail("random_faults", seed, &failure),
        }
    }
    println!("{} seeds, {steps} steps in {:?}", seeds.len(), start.elapsed());
}

fn search(name: &str, run: RandomRun, limit: u64) {
    let start = std::time::Instant::now();
    for seed in 0..limit {
        if let Err(failure) = random::run(&run, seed) {
            println!("{name}: caught at seed {seed} after {:?}: {failure}", start.elapsed());
            return;
        }
    }
    println!("{name}: NOT caught in {limit} seeds ({:?})", start.elapsed());
}

#[test]
fn explore_bugs() {
    use raft::core::BugSwitches;
    let b = BugSwitches::default();
    search("vote_without_log_check", RandomRun { bugs: BugSwitches { vote_without_log_check: true, ..b }, ..Default::default() }, 300);
    search("keep_conflicting_suffix", RandomRun { bugs: BugSwitches { keep_conflicting_suffix: true, ..b }, ..Default::default() }, 300);
    search("read_without_quorum", RandomRun { bugs: BugSwitches { read_without_quorum: true, ..b }, ..Default::default() }, 300);
    search("commit_earlier_term", RandomRun { bugs: BugSwitches { commit_earlier_term: true, ..b }, ..Default::default() }, 300);
    search("reply_before_persist", RandomRun { reply_before_persist: true, ..Default::default() }, 300);
}

#[test]
fn explore_one() {
    use raft::core::BugSwitches;
    let seed = sim::scenario_seed(1);
    let r = random::run(&RandomRun { bugs: BugSwitches { read_without_quorum: true, ..BugSwitches::default() }, ..Default::default() }, seed);
    if let Err(f) = r { println!("{f}"); }
}
