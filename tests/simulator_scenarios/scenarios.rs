//! Scripted scenarios, one situation each, modelled on the tests of the MIT
//! 6.5840 Raft lab (written afresh for this simulator).
//!
//! Each runs on a fixed seed (override with `RAFT_SIM_SEED`) with the
//! invariant checker watching every step, so besides its own expectations a
//! scenario fails if any safety property breaks along the way.

use crate::simulator::cluster::{Cluster, ClusterConfig};
use crate::simulator::network::NetworkConfig;
use crate::simulator::random::{self, Faults, RandomRun};
use crate::simulator::{self, Failure, TICK};
use raft::core::RoleKind;
use raft::message::{EntryData, Index};
use rand::Rng;

/// A cluster of `size` on a reliable network, seeded with `RAFT_SIM_SEED`
/// or `seed`.
fn config(size: usize, seed: u64) -> ClusterConfig {
    ClusterConfig::new(size, simulator::scenario_seed(seed))
}

/// The working leader, which a scenario expects to exist right now.
fn leader(c: &Cluster) -> Result<usize, Failure> {
    let leader = c.working_leader();
    c.require(leader.is_some(), || {
        format!("expected a leader; terms {:?}", c.terms())
    })?;
    Ok(leader.expect("checked"))
}

#[test]
fn initial_election() {
    simulator::run_scenario("scenarios::initial_election", config(3, 1), |c| {
        let first = c.wait_for_leader(60)?;
        let term = c.term(first);
        // With nothing going wrong, the leader's heartbeats (every 5 ticks)
        // always beat the election timeout (15-30 ticks): no new election.
        c.run_for(300)?;
        c.require(
            c.working_leader() == Some(first) && c.term(first) == term,
            || {
                format!(
                    "leadership changed on a quiet network: terms {:?}",
                    c.terms()
                )
            },
        )
    });
}

#[test]
fn re_election() {
    simulator::run_scenario("scenarios::re_election", config(3, 2), |c| {
        let first = c.wait_for_leader(60)?;
        // The leader is cut off: the other two elect a new one.
        c.isolate(first);
        let second = c.wait_for_leader(60)?;
        c.require(second != first, || {
            "the cut-off leader still counts as leader".into()
        })?;
        // The old leader comes back: it hears the newer term and follows.
        c.reconnect(first);
        c.run_for(20)?;
        c.require(c.leaders().len() == 1, || {
            format!("two leaders after rejoining: {:?}", c.leaders())
        })?;
        // Two of three cut off: no majority, so no leader can be elected.
        let third = c.wait_for_leader(60)?;
        let other = (third + 1) % 3;
        c.isolate(third);
        c.isolate(other);
        c.run_for(100)?;
        c.require(c.working_leader().is_none(), || {
            "a leader without a majority".into()
        })?;
        // A majority again: a leader again.
        c.reconnect(other);
        c.wait_for_leader(60)?;
        c.reconnect(third);
        c.wait_for_leader(60)?;
        Ok(())
    });
}

#[test]
fn many_elections() {
    simulator::run_scenario("scenarios::many_elections", config(7, 3), |c| {
        c.wait_for_leader(60)?;
        for _ in 0..10 {
            // Cut off three random nodes; the other four are a majority of
            // seven and must (re-)elect a leader among themselves.
            let mut cut = Vec::new();
            while cut.len() < 3 {
                let node = c.rng.random_range(0..7);
                if !cut.contains(&node) {
                    cut.push(node);
                }
            }
            for &node in &cut {
                c.isolate(node);
            }
            let leader = c.wait_for_leader(100)?;
            c.require(!cut.contains(&leader), || "a cut-off node leads".into())?;
            for &node in &cut {
                c.reconnect(node);
            }
        }
        c.wait_for_leader(100)?;
        Ok(())
    });
}

#[test]
fn basic_agree() {
    simulator::run_scenario("scenarios::basic_agree", config(5, 4), |c| {
        c.wait_for_leader(60)?;
        let mut previous: Index = 0;
        for i in 1..=3 {
            let command = format!("basic {i}");
            c.require(c.committed_count(previous + 1, &command) == 0, || {
                "committed before proposed".into()
            })?;
            let index = c.agree(&command, 5, 50)?;
            // The leader's no-op takes index 1; commands follow in order,
            // with at most a membership entry between them (the leader
            // recording its members' incarnations).
            let between_are_memberships = (previous + 1..index).all(|i| {
                c.checker
                    .committed_entry(i)
                    .is_some_and(|e| matches!(e.data, EntryData::Config(_)))
            });
            c.require(
                previous == 0 || (index > previous && between_are_memberships),
                || format!("command {i} got index {index} after {previous}"),
            )?;
            previous = index;
        }
        Ok(())
    });
}

#[test]
fn fail_agree() {
    simulator::run_scenario("scenarios::fail_agree", config(3, 5), |c| {
        c.wait_for_leader(60)?;
        c.agree("101", 3, 50)?;
        // A follower is cut off: the other two still agree.
        let follower = (leader(c)? + 1) % 3;
        c.isolate(follower);
        c.agree("102", 2, 50)?;
        c.agree("103", 2, 50)?;
        c.run_for(30)?;
        c.agree("104", 2, 50)?;
        c.agree("105", 2, 50)?;
        // It comes back and catches up on everything it missed.
        c.reconnect(follower);
        c.agree("106", 3, 50)?;
        c.run_for(30)?;
        c.agree("107", 3, 50)?;
        Ok(())
    });
}

#[test]
fn fail_no_agree() {
    simulator::run_scenario("scenarios::fail_no_agree", config(5, 6), |c| {
        c.wait_for_leader(60)?;
        c.agree("10", 5, 50)?;
        // Three of five followers cut off: the leader cannot commit.
        let first = leader(c)?;
        for i in 1..=3 {
            c.isolate((first + i) % 5);
        }
        let index = match c.propose(first, "20")? {
            Ok(index) => index,
            Err(_) => return c.require(false, || "the leader refused a proposal".into()),
        };
        c.run_for(50)?;
        c.require(c.commit_index(first) < index, || {
            "committed without a majority".into()
        })?;
        c.require(c.committed_count(index, "20") == 0, || {
            "committed without a majority".into()
        })?;
        // Everyone back: a leader (maybe a new one) commits again.
        for i in 1..=3 {
            c.reconnect((first + i) % 5);
        }
        c.wait_for_leader(100)?;
        c.agree("30", 5, 100)?;
        Ok(())
    });
}

#[test]
fn concurrent_starts() {
    simulator::run_scenario("scenarios::concurrent_starts", config(3, 7), |c| {
        let first = c.wait_for_leader(60)?;
        let term = c.term(first);
        // Five proposals at the same instant get five consecutive indexes...
        let mut indexes = Vec::new();
        for i in 0..5 {
            match c.propose(first, &format!("concurrent {i}"))? {
                Ok(index) => indexes.push(index),
                Err(_) => return c.require(false, || "the leader refused a proposal".into()),
            }
        }
        let consecutive = indexes.windows(2).all(|pair| pair[1] == pair[0] + 1);
        c.require(consecutive, || {
            format!("indexes {indexes:?} are not consecutive")
        })?;
        // ...and all commit on all three nodes.
        let all = c.run_until(50, |c| {
            indexes
                .iter()
                .enumerate()
                .all(|(i, &index)| c.committed_count(index, &format!("concurrent {i}")) == 3)
        })?;
        c.require(all && c.term(first) == term, || {
            "concurrent proposals did not all commit".into()
        })
    });
}

#[test]
fn rejoin() {
    simulator::run_scenario("scenarios::rejoin", config(3, 8), |c| {
        c.wait_for_leader(60)?;
        c.agree("101", 3, 50)?;
        // The leader is cut off and keeps accepting proposals it can never
        // commit.
        let old = leader(c)?;
        c.isolate(old);
        for command in ["102", "103", "104"] {
            c.propose(old, command)?.ok();
        }
        // The other two elect a leader and commit something else.
        c.wait_for_leader(100)?;
        c.agree("103b", 2, 50)?;
        // That leader is cut off in turn and the old one rejoins: it lacks
        // 103b, so only the remaining follower can win, and the old leader's
        // uncommitted entries are replaced.
        let new = leader(c)?;
        c.isolate(new);
        c.reconnect(old);
        c.agree("104b", 2, 100)?;
        c.reconnect(new);
        c.agree("105", 3, 100)?;
        let stale = c.checker.committed_entries().any(|e| {
            matches!(&e.data, raft::message::EntryData::Command(command) if ["102", "103", "104"].contains(&command.as_str()))
        });
        c.require(!stale, || {
            "an entry of the cut-off leader was committed".into()
        })
    });
}

#[test]
fn backup() {
    // A follower far behind, with a long divergent log spread over many
    // terms, catches up in about one round trip per divergent term, thanks
    // to the conflict hint (a refusal names the first index of the term it
    // conflicts in, so the leader skips that whole term at once).
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 20;
    simulator::run_scenario("scenarios::backup", config(5, 9), |c| {
        c.wait_for_leader(60)?;
        c.agree("base", 5, 50)?;
        // Two nodes down; X (the leader among the three left) will collect
        // entries no one else gets, in several terms.
        let x = leader(c)?;
        let down: Vec<usize> = (0..5).filter(|&n| n != x).take(2).collect();
        for &node in &down {
            c.crash(node);
        }
        for round in 0..ROUNDS {
            if round > 0 {
                // X rejoins its two helpers. They cannot elect each other
                // (two votes of five), and X's log is ahead of theirs, so X
                // wins the next election. Cut it off the moment it wins,
                // before its AppendEntries go out.
                let previous = c.term(x);
                c.reconnect(x);
                let won = c.run_until(200, |c| {
                    c.role(x) == Some(RoleKind::Leader) && c.term(x) > previous
                })?;
                c.require(won, || format!("round {round}: X was not re-elected"))?;
            }
            c.isolate(x);
            for i in 0..PER_ROUND {
                c.propose(x, &format!("x{round}.{i}"))?.ok();
            }
            // Long enough for the helpers to time out and raise their terms.
            c.run_for(40)?;
        }
        let divergent_terms = ROUNDS;
        let divergent_entries = c.last_index(x) - c.commit_index(x);
        // X stays cut off; the other four commit more, in several terms,
        // so their log ends up longer than X's.
        for &node in &down {
            c.restart(node)?;
        }
        let others: Vec<usize> = (0..5).filter(|&n| n != x).collect();
        for term_round in 0..3 {
            c.wait_for_leader(100)?;
            for i in 0..50 {
                c.agree(&format!("l{term_round}.{i}"), 3, 100)?;
            }
            // Force a new term: cut the leader off, let the other three
            // elect, and bring it back.
            let old = leader(c)?;
            c.isolate(old);
            c.wait_for_leader(100)?;
            c.reconnect(old);
            c.isolate(x); // reconnect() restored X's links to `old`
        }
        c.agree("before X returns", 4, 100)?;
        let in_sync = c.run_until(50, |c| {
            let top = c.last_index(others[0]);
            others
                .iter()
                .all(|&n| c.last_index(n) == top && c.commit_index(n) == top)
        })?;
        c.require(in_sync, || "the four did not converge".into())?;
        // X returns. Count the AppendEntries it refuses until it matches.
        let refused_before = c.stats.append_refused;
        let started = c.now;
        c.reconnect(x);
        let target = c.commit_index(others[0]);
        let caught_up = c.run_until(200, |c| c.commit_index(x) >= target)?;
        let refusals = c.stats.append_refused - refused_before;
        println!(
            "backup: X had {divergent_entries} divergent entries in {divergent_terms} terms; \
             it caught up after {refusals} refusals in {} ticks",
            (c.now - started) / TICK
        );
        c.require(caught_up, || "X did not catch up".into())?;
        // Round trips: one for "your log is too short", one per divergent
        // term, one for the term X shares with the leader. A heartbeat may
        // re-send a probe whose answer is still on its way, so a probe can
        // be refused twice. Backing up one entry at a time would take more
        // than a hundred.
        let bound = 2 * (divergent_terms as u64 + 2);
        c.require(refusals <= bound, || {
            format!("{refusals} refusals to repair {divergent_terms} divergent terms (expected at most {bound})")
        })
    });
}

#[test]
fn count() {
    // Message counts stay small: an election, each agreement, and idling.
    simulator::run_scenario("scenarios::count", config(3, 10), |c| {
        let before = c.stats.clone();
        c.wait_for_leader(60)?;
        let election = c.stats.messages() - before.messages();
        // Two vote requests and answers, and a round of heartbeats, per
        // election; a split vote or two may add a few.
        c.require(election <= 30, || {
            format!("{election} messages to elect a leader")
        })?;

        c.run_for(10)?;
        let before = c.stats.clone();
        let started = c.now;
        const AGREEMENTS: u64 = 10;
        for i in 0..AGREEMENTS {
            c.agree(&format!("count {i}"), 3, 50)?;
        }
        let used = c.stats.messages() - before.messages();
        // Per agreement: AppendEntries to the two followers and their
        // answers. On top, the heartbeats of the elapsed time (2 requests
        // and 2 answers every 5 ticks): followers learn the commit index
        // from the next one.
        let period = c.nodes[leader(c)?].tick_period;
        // (One more round for the one already on its way when we started.)
        let heartbeats = 4 * ((c.now - started) / (5 * period) + 2);
        let bound = 4 * AGREEMENTS + heartbeats;
        println!("count: election {election} messages; {AGREEMENTS} agreements {used} messages (bound {bound})");
        c.require(used <= bound, || {
            format!("{used} messages for {AGREEMENTS} agreements (bound {bound})")
        })?;

        let before = c.stats.clone();
        c.run_for(100)?;
        let idle = c.stats.messages() - before.messages();
        c.require(idle <= 4 * (100 / 5 + 1), || {
            format!("{idle} messages in 100 idle ticks")
        })
    });
}

#[test]
fn persist1() {
    // Nodes restart from their disks and still agree.
    simulator::run_scenario("scenarios::persist1", config(3, 11), |c| {
        c.wait_for_leader(60)?;
        c.agree("11", 3, 50)?;
        for node in 0..3 {
            c.crash(node);
        }
        for node in 0..3 {
            c.restart(node)?;
        }
        c.agree("12", 3, 100)?;
        let first = leader(c)?;
        c.crash(first);
        c.restart(first)?;
        c.agree("13", 3, 100)?;
        let second = leader(c)?;
        c.crash(second);
        c.agree("14", 2, 100)?;
        c.restart(second)?;
        c.agree("15", 3, 100)?;
        let follower = (leader(c)? + 1) % 3;
        c.crash(follower);
        c.agree("16", 2, 100)?;
        c.restart(follower)?;
        c.agree("17", 3, 100)?;
        Ok(())
    });
}

#[test]
fn persist2() {
    // Majorities come and go; an entry committed by three nodes survives
    // when only one of them is up, because only it can win an election.
    simulator::run_scenario("scenarios::persist2", config(5, 12), |c| {
        c.wait_for_leader(60)?;
        for round in 0..5 {
            c.agree(&format!("r{round} all"), 5, 100)?;
            let first = leader(c)?;
            let behind = [(first + 1) % 5, (first + 2) % 5];
            for node in behind {
                c.crash(node);
            }
            c.agree(&format!("r{round} three"), 3, 100)?;
            let holders = [leader(c)?, (first + 3) % 5, (first + 4) % 5];
            // Two of the three holders go down; the two that were behind
            // come back.
            c.crash(holders[0]);
            c.crash(holders[1]);
            for node in behind {
                c.restart(node)?;
            }
            c.agree(&format!("r{round} mixed"), 3, 100)?;
            c.restart(holders[0])?;
            c.restart(holders[1])?;
        }
        c.agree("end", 5, 100)?;
        Ok(())
    });
}

#[test]
fn persist3() {
    // A leader and a follower that stored an entry crash; the leader comes
    // back with the node that never had it, and the entry survives.
    simulator::run_scenario("scenarios::persist3", config(3, 13), |c| {
        c.wait_for_leader(60)?;
        c.agree("101", 3, 50)?;
        let first = leader(c)?;
        let (with, without) = ((first + 1) % 3, (first + 2) % 3);
        c.isolate(without);
        let index = c.agree("102", 2, 50)?;
        c.crash(first);
        c.crash(with);
        c.reconnect(without);
        c.restart(first)?;
        c.agree("103", 2, 100)?;
        c.restart(with)?;
        c.agree("104", 3, 100)?;
        c.require(c.committed_count(index, "102") == 3, || {
            "entry 102 was lost".into()
        })
    });
}

/// Figure 8 under crashes: leaders come and go fast, with entries
/// half-replicated, on a reliable network.
#[test]
fn figure8() {
    simulator::run_scenario("scenarios::figure8", config(5, 14), |c| {
        c.agree("start", 1, 60)?;
        for i in 0..150 {
            for (node, _) in c.leaders() {
                c.propose(node, &format!("f8 {i}"))?.ok();
            }
            let pause = if c.rng.random_range(0..10) == 0 {
                c.rng.random_range(0..=50)
            } else {
                c.rng.random_range(0..=3)
            };
            c.run_for(pause)?;
            if let Some(&(node, _)) = c.leaders().first() {
                if c.rng.random_bool(0.5) {
                    c.crash(node);
                }
            }
            let up = (0..5).filter(|&n| c.is_up(n)).count();
            if up < 3 {
                let down: Vec<usize> = (0..5).filter(|&n| !c.is_up(n)).collect();
                let node = down[c.rng.random_range(0..down.len())];
                c.restart(node)?;
            }
        }
        for node in 0..5 {
            c.restart(node)?;
        }
        c.agree("end", 5, 200)?;
        Ok(())
    });
}

#[test]
fn unreliable_agree() {
    let mut config = config(5, 15);
    config.network = NetworkConfig::unreliable();
    simulator::run_scenario("scenarios::unreliable_agree", config, |c| {
        for round in 1..=50 {
            // A few proposals at once, then one that must commit somewhere.
            if let Some((node, _)) = c.leaders().into_iter().max_by_key(|&(_, term)| term) {
                for j in 0..4 {
                    c.propose(node, &format!("u{round}.{j}"))?.ok();
                }
            }
            c.agree(&format!("u{round}"), 1, 200)?;
        }
        c.network.config = NetworkConfig::reliable();
        c.agree("final", 5, 200)?;
        Ok(())
    });
}

/// Figure 8 on a network that loses, duplicates and badly reorders
/// messages, with leaders cut off rather than crashed.
#[test]
fn figure8_unreliable() {
    let mut config = config(5, 16);
    config.network = NetworkConfig::unreliable();
    simulator::run_scenario("scenarios::figure8_unreliable", config, |c| {
        c.agree("start", 1, 200)?;
        let mut cut: Vec<usize> = Vec::new();
        for i in 0..300 {
            if i == 200 {
                // Hold a quarter of all messages back for up to 20 ticks.
                c.network.config.long_delay_rate = 0.25;
            }
            if let Some((node, _)) = c.leaders().into_iter().max_by_key(|&(_, term)| term) {
                c.propose(node, &format!("f8u {i}"))?.ok();
            }
            let pause = if c.rng.random_range(0..10) == 0 {
                c.rng.random_range(0..=30)
            } else {
                c.rng.random_range(0..=2)
            };
            c.run_for(pause)?;
            if let Some((node, _)) = c.leaders().into_iter().max_by_key(|&(_, term)| term) {
                if !cut.contains(&node) && c.rng.random_bool(0.5) {
                    c.isolate(node);
                    cut.push(node);
                }
            }
            if cut.len() > 2 {
                let node = cut.remove(c.rng.random_range(0..cut.len()));
                c.reconnect(node);
            }
        }
        c.heal();
        c.network.config = NetworkConfig::reliable();
        c.agree("end", 5, 300)?;
        Ok(())
    });
}

/// Clients keep writing and reading while nodes crash, restart and are cut
/// off; the history must be linearizable and no acknowledged write lost.
fn churn(test: &str, network: NetworkConfig, default_seeds: u64) {
    let run = RandomRun {
        faults: Faults::Churn,
        network: Some(network),
        size: Some(5),
        ..RandomRun::default()
    };
    for seed in simulator::seeds(default_seeds) {
        if let Err(failure) = simulator::catch_panic(|| random::run(&run, seed)) {
            simulator::fail(test, seed, &failure);
        }
    }
}

#[test]
fn reliable_churn() {
    churn("scenarios::reliable_churn", NetworkConfig::reliable(), 20);
}

#[test]
fn unreliable_churn() {
    churn(
        "scenarios::unreliable_churn",
        NetworkConfig::unreliable(),
        20,
    );
}
