//! Machines that lose their disks: a fault outside Raft's model (Figure 2
//! assumes stable storage keeps what a node acknowledged), modelled here.
//!
//! Two kinds of loss:
//!
//! - **An empty directory** (`Cluster::lose_disk_for`): the machine comes
//!   back with nothing, under a new incarnation. Its term, its votes and its
//!   log are gone. The protections: a vote counts only from the incarnation
//!   the membership records (so the new directory cannot vote a second time
//!   in a term, nor help elect a leader that lacks committed entries), and
//!   the leader makes it a learner until it has caught up, then a voter
//!   again. Injected in random runs once every other machine's disk records
//!   the lost directory's incarnation; before that, in the first moments of
//!   a cluster, the loss looks like a fresh start to everyone and nothing
//!   can tell (the one case left open).
//! - **A log cut back** (`Cluster::cut_log_for`) past what the machine
//!   acknowledged, with the same incarnation (a disk that lied about fsync,
//!   a directory restored from a backup): the leader detects it, reports it
//!   and brings the machine back, but its votes are not protected. A
//!   committed entry that was on a bare majority may now be on a minority,
//!   and Leader Completeness and State Machine Safety can break; so this
//!   variant is only in scripted scenarios, one of which shows the break.
//!
//! With an empty directory, every check of the checker still holds: Election
//! Safety, Leader Append-Only, Log Matching, Leader Completeness, State
//! Machine Safety, linearizability, no acknowledged write lost, and one vote
//! per term per *data directory* (a new directory may vote again in a term;
//! that vote must not count).

use crate::simulator::cluster::{Cluster, ClusterConfig};
use crate::simulator::network::NetworkConfig;
use crate::simulator::random::{self, RandomRun};
use crate::simulator::{self, Failure, FailureKind};
use raft::core::{BugSwitches, RoleKind};

/// Seeds of each random run with disk loss.
const DISK_LOSS_SEEDS: u64 = 300;

fn disk_loss_run(size: usize, bugs: BugSwitches) -> RandomRun {
    RandomRun {
        size: Some(size),
        bugs,
        disk_loss: true,
        ..RandomRun::default()
    }
}

fn random_faults_with_disk_loss(test: &str, size: usize) {
    let run = disk_loss_run(size, BugSwitches::default());
    let (mut lost, mut reported, mut runs_with_loss) = (0, 0, 0);
    let seeds = simulator::seeds(DISK_LOSS_SEEDS);
    for &seed in &seeds {
        match simulator::catch_panic(|| random::run(&run, seed)) {
            Ok(report) => {
                lost += report.disks_lost;
                reported += report.losses_reported;
                runs_with_loss += u64::from(report.disks_lost > 0);
            }
            Err(failure) => simulator::fail(test, seed, &failure),
        }
    }
    println!(
        "{test}: {} seeds, {runs_with_loss} with a lost disk, {lost} disks lost, \
         {reported} losses reported by leaders",
        seeds.len()
    );
    assert!(
        runs_with_loss * 4 >= seeds.len() as u64,
        "{test}: too few runs lost a disk ({runs_with_loss} of {})",
        seeds.len()
    );
}

#[test]
fn random_faults_with_disk_loss_3_nodes() {
    random_faults_with_disk_loss("disk_loss::random_faults_with_disk_loss_3_nodes", 3);
}

#[test]
fn random_faults_with_disk_loss_5_nodes() {
    random_faults_with_disk_loss("disk_loss::random_faults_with_disk_loss_5_nodes", 5);
}

/// Waits until `node`'s loss would be covered (every other disk records its
/// incarnation).
fn wait_until_covered(c: &mut Cluster, node: usize) -> Result<(), Failure> {
    let covered = c.run_until(100, |c| c.disk_loss_is_covered(node))?;
    c.require(covered, || {
        format!("n{}'s incarnation was never recorded everywhere", node + 1)
    })
}

/// Until `node` holds the leader's whole committed log and votes again.
fn caught_up_and_voting(c: &Cluster, node: usize) -> bool {
    c.settled_leader().is_some_and(|leader| {
        c.voters_of(leader).contains(&node)
            && c.commit_index(node) == c.commit_index(leader)
            && c.membership(node) == c.membership(leader)
    })
}

/// The common case: a follower's directory is deleted and it is started
/// again. The leader reports it once, the follower catches up as a learner
/// and is a voter again, with no hand work.
#[test]
fn a_wiped_follower_catches_up_and_votes_again() {
    let config = ClusterConfig::new(3, simulator::scenario_seed(11));
    simulator::run_scenario(
        "disk_loss::a_wiped_follower_catches_up_and_votes_again",
        config,
        |c| {
            let leader = c.wait_for_leader(60)?;
            c.agree("a", 3, 50)?;
            let follower = (leader + 1) % 3;
            wait_until_covered(c, follower)?;
            c.lose_disk_for(follower, 5);
            c.agree("b", 2, 50)?;
            let back = c.run_until(200, |c| caught_up_and_voting(c, follower))?;
            c.require(back, || "the wiped follower did not come back".into())?;
            c.agree("c", 3, 50)?;
            c.require(c.stats.losses_reported == 1, || {
                format!("{} losses reported, not 1", c.stats.losses_reported)
            })
        },
    );
}

/// A follower's log is cut back past what it acknowledged, with the same
/// incarnation: the leader sees a refusal showing fewer entries than were
/// acknowledged, reports it once, and brings the follower back.
#[test]
fn a_follower_with_a_cut_log_is_detected_and_caught_up() {
    let config = ClusterConfig::new(3, simulator::scenario_seed(12));
    simulator::run_scenario(
        "disk_loss::a_follower_with_a_cut_log_is_detected_and_caught_up",
        config,
        |c| {
            let leader = c.wait_for_leader(60)?;
            for i in 0..5 {
                c.agree(&format!("a{i}"), 3, 50)?;
            }
            let follower = (leader + 1) % 3;
            c.cut_log_for(follower, 2, 3);
            c.agree("b", 2, 50)?;
            let back = c.run_until(200, |c| caught_up_and_voting(c, follower))?;
            c.require(back, || "the follower was not caught up".into())?;
            c.require(c.stats.losses_reported == 1, || {
                format!("{} losses reported, not 1", c.stats.losses_reported)
            })
        },
    );
}

/// How the lagging node's helper lost its disk.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    EmptyDirectory,
    CutLog,
}

/// The loss that can elect a leader without committed entries: the leader L
/// commits "b" with B alone while C is cut off; L goes down; B loses its
/// disk and comes back; C returns. C, which lacks "b", asks B for its vote,
/// and B, which holds nothing, grants it. If that vote counts, C leads
/// without a committed entry. Then L comes back and the cluster must end
/// with one log and three voters.
fn careless_rejoin_schedule(seed: u64, bugs: BugSwitches, loss: Loss) -> Result<(), Failure> {
    let mut config = ClusterConfig::new(3, seed);
    config.bugs = bugs;
    let mut c = Cluster::new(config)?;
    let l = c.wait_for_leader(60)?;
    let (b, lagging) = ((l + 1) % 3, (l + 2) % 3);
    c.agree("a", 3, 50)?;
    for node in 0..3 {
        wait_until_covered(&mut c, node)?;
    }
    c.isolate(lagging);
    let b_index = c.agree("b", 2, 50)?;
    c.crash(l);
    match loss {
        Loss::EmptyDirectory => c.lose_disk_for(b, 1),
        Loss::CutLog => c.cut_log_for(b, 0, 1),
    }
    c.reconnect(lagging);
    c.run_for(150)?;
    c.restart(l)?;
    let settled = c.run_until(300, |c| {
        (0..3).all(|n| caught_up_and_voting(c, n)) && c.committed_count(b_index, "b") == 3
    })?;
    c.require(settled, || {
        format!(
            "no working three-voter cluster after the loss; terms {:?}",
            c.terms()
        )
    })
}

/// With the protection, the schedule is safe and ends with three voters.
#[test]
fn careless_rejoin_schedule_is_safe() {
    for seed in simulator::seeds(5) {
        let run = || careless_rejoin_schedule(seed, BugSwitches::default(), Loss::EmptyDirectory);
        if let Err(failure) = simulator::catch_panic(run) {
            simulator::fail(
                "disk_loss::careless_rejoin_schedule_is_safe",
                seed,
                &failure,
            );
        }
    }
}

/// Counting votes from any incarnation lets the wiped B elect C, which lacks
/// a committed entry: the checker sees Leader Completeness broken. Caught
/// within 5 seeds (when written: at seed 0, and by all of the first 10
/// seeds).
#[test]
fn bug_count_votes_from_any_incarnation_is_caught() {
    simulator::first_failing_seed(
        "disk_loss::bug_count_votes_from_any_incarnation_is_caught",
        5,
        &[
            FailureKind::LeaderCompleteness,
            FailureKind::StateMachineSafety,
        ],
        |seed| {
            let bugs = BugSwitches {
                count_votes_from_any_incarnation: true,
                ..BugSwitches::default()
            };
            careless_rejoin_schedule(seed, bugs, Loss::EmptyDirectory)
        },
    );
}

/// The double vote: A (n1) is elected with B's (n2) vote; B loses its disk
/// at once and comes back; C (n3), which cannot hear A, then asks the new
/// B for a vote in the same term, and B, remembering nothing, grants it. If
/// that vote counts, A and C both lead that term. Timeouts are set so that
/// A stands first, then C, and B never. Ends with the network healed and
/// every node a caught-up voter.
fn double_vote_schedule(seed: u64, bugs: BugSwitches) -> Result<(), Failure> {
    let (a, b, c_node) = (0, 1, 2);
    let mut config = ClusterConfig::new(3, seed);
    config.bugs = bugs;
    config.election_timeout_overrides = vec![(a, (10, 13)), (b, (40, 60)), (c_node, (16, 20))];
    let mut c = Cluster::new(config)?;
    c.wait_for_leader(60)?;
    c.agree("a", 3, 50)?;
    for node in 0..3 {
        wait_until_covered(&mut c, node)?;
    }
    // Everyone restarts; A and C cannot hear each other.
    let term_before = c.term(b);
    for node in 0..3 {
        c.crash(node);
    }
    c.run_for(3)?; // what was on its way is lost
    c.network.cut_one_way(&[a], &[c_node]);
    c.network.cut_one_way(&[c_node], &[a]);
    for node in 0..3 {
        c.restart(node)?;
    }
    let voted = c.run_until(100, |c| {
        c.term(b) > term_before && c.voted_for(b) == Some(simulator::node_id(a))
    })?;
    c.require(voted, || "B never voted for A".into())?;
    // B loses its disk right after voting; A's messages no longer reach it.
    c.network.cut_one_way(&[a], &[b]);
    c.lose_disk_for(b, 0);
    c.run_for(1)?;
    c.restart(b)?;
    c.run_for(100)?;
    c.heal();
    let settled = c.run_until(300, |c| (0..3).all(|n| caught_up_and_voting(c, n)))?;
    c.require(settled, || {
        format!("no working three-voter cluster; terms {:?}", c.terms())
    })
}

#[test]
fn double_vote_schedule_is_safe() {
    for seed in simulator::seeds(5) {
        let run = || double_vote_schedule(seed, BugSwitches::default());
        if let Err(failure) = simulator::catch_panic(run) {
            simulator::fail("disk_loss::double_vote_schedule_is_safe", seed, &failure);
        }
    }
}

/// Counting votes from any incarnation: two leaders in one term (Election
/// Safety). Caught within 5 seeds (when written: at seed 0, and by all of
/// the first 10 seeds).
#[test]
fn bug_count_votes_from_any_incarnation_elects_two_leaders() {
    simulator::first_failing_seed(
        "disk_loss::bug_count_votes_from_any_incarnation_elects_two_leaders",
        5,
        &[FailureKind::ElectionSafety],
        |seed| {
            let bugs = BugSwitches {
                count_votes_from_any_incarnation: true,
                ..BugSwitches::default()
            };
            double_vote_schedule(seed, bugs)
        },
    );
}

/// The same switch in random runs with disk loss (three nodes), where it
/// shows up as two leaders in a term, a lost committed entry, or both.
/// Caught within 100 seeds (when written: at seed 2; 6 of the first 50
/// seeds catch it, all as a leader lacking a committed entry: two leaders in
/// one term needs the timing of the scripted schedule above).
#[test]
fn bug_count_votes_from_any_incarnation_is_caught_by_random_runs() {
    let bugs = BugSwitches {
        count_votes_from_any_incarnation: true,
        ..BugSwitches::default()
    };
    let run = disk_loss_run(3, bugs);
    simulator::first_failing_seed(
        "disk_loss::bug_count_votes_from_any_incarnation_is_caught_by_random_runs",
        100,
        &[
            FailureKind::ElectionSafety,
            FailureKind::LeaderCompleteness,
            FailureKind::StateMachineSafety,
            FailureKind::LostWrite,
            FailureKind::Linearizability,
        ],
        |seed| random::run(&run, seed).map(|_| ()),
    );
}

/// The case left open, shown: a log cut back with the same incarnation
/// keeps its votes, so the same schedule elects a leader without a
/// committed entry even with every protection on. Only detection is
/// possible for this loss (it is not injected in random runs).
#[test]
fn a_cut_log_keeps_its_vote_and_can_lose_a_committed_entry() {
    simulator::first_failing_seed(
        "disk_loss::a_cut_log_keeps_its_vote_and_can_lose_a_committed_entry",
        5,
        &[
            FailureKind::LeaderCompleteness,
            FailureKind::StateMachineSafety,
        ],
        |seed| careless_rejoin_schedule(seed, BugSwitches::default(), Loss::CutLog),
    );
}

/// Most messages the leader may send one follower in any one tick in
/// `no_storm_after_a_disk_loss`: one batch of new entries (one proposal a
/// tick), one heartbeat, one answer to a step back, and the answers to
/// acknowledgements that opened the window, with room to spare.
const MAX_MESSAGES_PER_TICK: u64 = 8;

/// The storm, as a regression: a follower loses its disk while a client
/// writes every tick, on a network fast enough (a few hundredths of a tick)
/// for a message-for-message exchange to reach dozens per tick. Before, the
/// leader answered every refusal at once and never caught the follower up.
/// Now the messages to that follower stay bounded in every tick.
#[test]
fn no_storm_after_a_disk_loss() {
    let mut config = ClusterConfig::new(3, simulator::scenario_seed(13));
    config.network = NetworkConfig {
        delay: (1, 5),
        ..NetworkConfig::reliable()
    };
    simulator::run_scenario("disk_loss::no_storm_after_a_disk_loss", config, |c| {
        let leader = c.wait_for_leader(60)?;
        c.agree("a", 3, 50)?;
        let follower = (leader + 1) % 3;
        wait_until_covered(c, follower)?;
        c.lose_disk_for(follower, 2);
        let mut worst = 0;
        for i in 0..100 {
            let before = c.stats.link_messages.get(&(leader, follower)).copied();
            if c.role(leader) == Some(RoleKind::Leader) {
                c.propose(leader, &format!("w{i}"))?.ok();
            }
            c.run_for(1)?;
            let after = c.stats.link_messages.get(&(leader, follower)).copied();
            let sent = after.unwrap_or(0) - before.unwrap_or(0);
            worst = worst.max(sent);
            c.require(sent <= MAX_MESSAGES_PER_TICK, || {
                format!(
                    "the leader sent {sent} messages to n{} in one tick (tick {i})",
                    follower + 1
                )
            })?;
        }
        println!("no_storm_after_a_disk_loss: at most {worst} messages to the follower in a tick");
        let back = c.run_until(100, |c| caught_up_and_voting(c, follower))?;
        c.require(back, || "the follower did not catch up".into())
    });
}
