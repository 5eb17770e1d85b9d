//! A checker that cannot fail is worth nothing. Each test here turns on one
//! deliberate bug and shows that the simulator catches it within a stated
//! number of seeds (and which check catches it). Each is also a lesson in
//! why the rule it breaks exists.
//!
//! The core's switches live in `Config::bugs` (test builds only); the
//! simulator's own `reply_before_persist` breaks the driver instead.

use crate::simulator::cluster::{Cluster, ClusterConfig};
use crate::simulator::random::{self, RandomRun};
use crate::simulator::{self, Failure, FailureKind};
use raft::core::{BugSwitches, RoleKind};

/// Runs seeds `0..limit` (or just `RAFT_SIM_SEED`) until one fails.
/// Panics if none does, or if the failure is not of an expected kind.
fn first_failing_seed(
    test: &str,
    limit: u64,
    expected: &[FailureKind],
    run: impl Fn(u64) -> Result<(), Failure>,
) -> (u64, Failure) {
    for seed in simulator::seeds(limit) {
        if let Err(failure) = simulator::catch_panic(|| run(seed)) {
            assert!(
                expected.contains(&failure.kind),
                "{test}: seed {seed} failed in an unexpected way: {failure}\nreplay: {}",
                simulator::replay_command(test, seed)
            );
            println!(
                "{test}: caught at seed {seed} ({} seeds): {failure}\nreplay: {}",
                seed + 1,
                simulator::replay_command(test, seed)
            );
            return (seed, failure);
        }
    }
    panic!("{test}: the bug was not caught within {limit} seeds");
}

fn random_run_with(bugs: BugSwitches) -> RandomRun {
    RandomRun {
        bugs,
        ..RandomRun::default()
    }
}

/// §5.4.1: a node that grants votes without comparing logs can elect a
/// leader that lacks committed entries, which then overwrites them.
/// Caught within 50 seeds (when written: at seed 0; 240 of the first 300
/// seeds catch it).
#[test]
fn bug_vote_without_log_check_is_caught() {
    let run = random_run_with(BugSwitches {
        vote_without_log_check: true,
        ..BugSwitches::default()
    });
    first_failing_seed(
        "bug_switches::bug_vote_without_log_check_is_caught",
        50,
        &[
            FailureKind::LeaderCompleteness,
            FailureKind::StateMachineSafety,
            FailureKind::LostWrite,
            FailureKind::Linearizability,
        ],
        |seed| random::run(&run, seed).map(|_| ()),
    );
}

/// Figure 2, AppendEntries receiver rule 3: a follower that overwrites a
/// conflicting entry but keeps what follows it ends up with entries no
/// leader ever had in that order. Caught within 50 seeds (when written: at
/// seed 4; 66 of the first 300 seeds catch it).
#[test]
fn bug_keep_conflicting_suffix_is_caught() {
    let run = random_run_with(BugSwitches {
        keep_conflicting_suffix: true,
        ..BugSwitches::default()
    });
    first_failing_seed(
        "bug_switches::bug_keep_conflicting_suffix_is_caught",
        50,
        &[FailureKind::LogMatching, FailureKind::StateMachineSafety],
        |seed| random::run(&run, seed).map(|_| ()),
    );
}

/// §6.4 of the dissertation: a leader that answers a `get` from its own
/// state without checking it still leads may have been deposed, and
/// returns a stale value. Only the linearizability check can see this.
/// Caught within 50 seeds with PreVote and CheckQuorum on (the defaults):
/// at seed 0 when last measured, and by 80 of the first 300 seeds (96 when
/// first written). CheckQuorum only narrows the window for stale reads; see
/// `partitions.rs`.
#[test]
fn bug_read_without_quorum_is_caught() {
    let run = random_run_with(BugSwitches {
        read_without_quorum: true,
        ..BugSwitches::default()
    });
    first_failing_seed(
        "bug_switches::bug_read_without_quorum_is_caught",
        50,
        &[FailureKind::Linearizability],
        |seed| random::run(&run, seed).map(|_| ()),
    );
}

/// The driver sends before it persists: a crash in between loses the term,
/// vote and entries it already announced. Caught within 50 seeds (when
/// written: at seed 0; 36 of the first 300 seeds catch it), usually first
/// as a term that went down across a restart;
/// sometimes as a lost committed entry (Leader Completeness), or as a
/// follower that can never be repaired because the leader trusts an
/// acknowledgement for entries the follower then lost (Liveness).
#[test]
fn bug_reply_before_persist_is_caught() {
    let run = RandomRun {
        reply_before_persist: true,
        ..RandomRun::default()
    };
    first_failing_seed(
        "bug_switches::bug_reply_before_persist_is_caught",
        50,
        &[
            FailureKind::TermDecreased,
            FailureKind::DoubleVote,
            FailureKind::ElectionSafety,
            FailureKind::StateMachineSafety,
            FailureKind::LeaderCompleteness,
            FailureKind::LostWrite,
            FailureKind::Liveness,
        ],
        |seed| random::run(&run, seed).map(|_| ()),
    );
}

/// The consequence that makes `reply_before_persist` dangerous, provoked on
/// purpose: node V grants its vote, crashes before the vote is on disk,
/// restarts without it, and grants the same term's vote to a second
/// candidate. Two candidates in one term need a split vote: the two other
/// nodes cannot hear each other, so both time out (A first, then C) and ask
/// V. (The check
/// that a restarted node's term did not go down would fire first; it is
/// turned off here to watch what the lost vote leads to.) Caught within 5
/// seeds (when written: at seed 0, and by all of the first 100 seeds).
#[test]
fn bug_reply_before_persist_votes_twice() {
    first_failing_seed(
        "bug_switches::bug_reply_before_persist_votes_twice",
        5,
        &[FailureKind::DoubleVote],
        |seed| {
            let mut config = ClusterConfig::new(3, seed);
            config.reply_before_persist = true;
            // A times out first, then C; the voter V (n2) never does.
            let voter = 1;
            config.election_timeout_overrides = vec![(0, (10, 13)), (1, (40, 60)), (2, (16, 20))];
            let mut c = Cluster::new(config)?;
            c.checker.check_term_across_restarts = false;
            c.network.cut_one_way(&[0], &[2]);
            c.network.cut_one_way(&[2], &[0]);
            // Wait for V to grant a vote (the answer has just been sent; the
            // vote is not on disk yet), then crash and restart it at once.
            let voted = c.run_until(100, |c| {
                c.role(voter) == Some(RoleKind::Follower)
                    && c.voted_for(voter)
                        .is_some_and(|v| v != simulator::node_id(voter))
            })?;
            if voted {
                c.crash(voter);
                c.restart(voter)?;
                // A (now leader) must not reach V first: V would take A's
                // no-op and then refuse C for having an older log.
                c.network.cut_one_way(&[0], &[voter]);
            }
            c.run_for(100)
        },
    );
}

/// §5.4.2 and Figure 8 of the paper: a leader that commits an entry of an
/// earlier term by counting replicas can see it overwritten later.
///
/// Random faults do not catch this switch (300 seeds tried): every new leader
/// first appends a no-op of its own term and sends it together with the
/// older entries, so by the time a majority holds the old entries it also
/// holds the no-op, and counting replicas commits nothing early. Only when
/// the old entries fill a whole AppendEntries (512 entries) before the no-op
/// does a follower hold old entries without the no-op. This schedule builds
/// exactly that, as in Figure 8. Caught within 10 seeds (when written: at
/// seed 0, and by 48 of the first 50 seeds); with the switch off the same
/// schedule is safe (see `figure8_schedule_is_safe`).
#[test]
fn bug_commit_earlier_term_is_caught() {
    first_failing_seed(
        "bug_switches::bug_commit_earlier_term_is_caught",
        10,
        &[
            FailureKind::LeaderCompleteness,
            FailureKind::StateMachineSafety,
        ],
        |seed| {
            figure8_schedule(
                seed,
                BugSwitches {
                    commit_earlier_term: true,
                    ..BugSwitches::default()
                },
            )
        },
    );
}

#[test]
fn figure8_schedule_is_safe() {
    for seed in simulator::seeds(10) {
        if let Err(failure) =
            simulator::catch_panic(|| figure8_schedule(seed, BugSwitches::default()))
        {
            simulator::fail("bug_switches::figure8_schedule_is_safe", seed, &failure);
        }
    }
}

/// The situation of Figure 8, with five nodes.
fn figure8_schedule(seed: u64, bugs: BugSwitches) -> Result<(), Failure> {
    let mut config = ClusterConfig::new(5, seed);
    config.bugs = bugs;
    let mut c = Cluster::new(config)?;
    c.wait_for_leader(60)?;
    c.agree("base", 5, 50)?;
    let base = c.commit_index(c.working_leader().expect("just agreed"));

    // (a) Leader A, with follower B, is cut off from the other three and
    // appends 600 entries in its term: more than one AppendEntries holds.
    let a = c.working_leader().expect("just agreed");
    let b = (a + 1) % 5;
    let rest: Vec<usize> = (0..5).filter(|&n| n != a && n != b).collect();
    c.split(&[vec![a, b], rest.clone()]);
    for i in 0..600 {
        c.propose(a, &format!("a{i}"))?.ok();
    }
    c.run_for(5)?;

    // (b) One of the other three, E, is elected in a newer term and appends
    // its own no-op at index base+1, but is cut off before sending it.
    let elected = c.run_until(200, |c| {
        rest.iter().any(|&n| c.role(n) == Some(RoleKind::Leader))
    })?;
    c.require(elected, || "no leader among the three".into())?;
    let e = *rest
        .iter()
        .find(|&&n| c.role(n) == Some(RoleKind::Leader))
        .expect("just seen");
    c.isolate(e);
    let e_term = c.term(e);

    // (c) A and B rejoin C and D. One of A and B (they hold the 600
    // entries) wins a newer term and starts sending them to C and D, 512 at
    // a time. Counting replicas of those old-term entries is the bug; the
    // moment the leader's commit index moves, cut it and B off.
    c.heal();
    c.isolate(e);
    let won = c.run_until(300, |c| {
        [a, b]
            .iter()
            .any(|&n| c.role(n) == Some(RoleKind::Leader) && c.term(n) > e_term)
    })?;
    c.require(won, || "neither A nor B won a newer term".into())?;
    let l = if c.role(a) == Some(RoleKind::Leader) {
        a
    } else {
        b
    };
    let committed = c.run_until(100, |c| c.commit_index(l) > base)?;
    c.require(committed, || "the leader never committed".into())?;
    c.isolate(a);
    c.isolate(b);

    // (d) E comes back. Its last entry (term of (b)) is newer than the
    // old-term entries C and D hold, so if they lack the new leader's no-op
    // they elect E, and E overwrites what was "committed" in (c). With the
    // rule intact, C or D holds that no-op and E cannot win.
    c.reconnect(e);
    c.isolate(a);
    c.isolate(b);
    c.run_for(200)
}
