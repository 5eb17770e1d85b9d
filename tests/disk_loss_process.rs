//! A node whose data directory is deleted, with real processes: what a
//! person does after reading "delete raft-data/ to start a fresh cluster"
//! while the cluster is running.
//!
//! Three nodes take writes; a follower is killed with `kill -9`, its
//! directory deleted, and it is started again while the writes go on. It
//! must catch up within a deadline, the leader must print the "lost" line
//! once, the follower's message count must stay within the bound stated in
//! `src/core/replication.rs` (no storm of refusals), and the cluster must end with three
//! voters.

mod process_harness;

use process_harness::Cluster;
use std::time::{Duration, Instant};

/// How long anything in this test may take, on a loaded machine.
const LONG: Duration = Duration::from_secs(20);
/// The default heartbeat interval of a node (`--heartbeat-ms`).
const HEARTBEAT_MS: u64 = 50;
/// Slack in the message bound: elections and pre-votes of the restarted
/// node before it hears from the leader, the answers to a step back.
const SLACK_MESSAGES: u64 = 100;

#[test]
fn a_follower_whose_directory_was_deleted_catches_up_and_votes_again() {
    let mut c = Cluster::start(3);
    let all = c.all();
    let leader = c.wait_for_leader(&all, LONG);
    for i in 0..5 {
        c.write(&[leader], &format!("before-{i}"), LONG);
    }
    let follower = c.others(leader)[0];
    let follower_id = c.nodes[follower].id.clone();
    let since = c.mark(leader);

    c.kill9(follower);
    std::fs::remove_dir_all(&c.nodes[follower].data_dir).expect("delete the data directory");
    c.start_node(follower);
    let started = Instant::now();

    // Writes go on while the follower comes back; it must catch up and be a
    // voter again before the deadline. Its messages are counted throughout.
    let mut written = 0;
    let caught_up = loop {
        let last_index = c.write(&[leader], &format!("after-{written}"), LONG);
        written += 1;
        let leader_status = c.status(leader);
        let follower_status = c.status(follower);
        let done = match (&leader_status, &follower_status) {
            (Some(l), Some(f)) => {
                written >= 20
                    && f.commit_index >= last_index
                    && l.members.len() == 3
                    && l.learners.is_empty()
                    && f.members.len() == 3
            }
            _ => false,
        };
        if done {
            break follower_status.expect("just seen");
        }
        assert!(
            started.elapsed() < LONG,
            "node {follower_id} did not catch up and vote again within {LONG:?}: \
             leader {leader_status:#?}, follower {follower_status:#?}"
        );
    };
    let messages_sent = c
        .metrics(follower)
        .expect("the caught-up follower answers metrics")
        .messages_sent;
    let elapsed_ms = started.elapsed().as_millis() as u64;

    // No storm: the follower answers each message with one; the leader sends
    // it one per heartbeat, one per batch of new entries, and one per step
    // back. So its messages stay within twice the entries it took, plus the
    // heartbeats, plus some slack; a storm is ~100,000 a second.
    let bound = 2 * caught_up.commit_index + 2 * elapsed_ms / HEARTBEAT_MS + SLACK_MESSAGES;
    assert!(
        messages_sent <= bound,
        "node {follower_id} sent {} messages in {elapsed_ms} ms while taking {} entries \
         (bound {bound}): a storm",
        messages_sent,
        caught_up.commit_index
    );
    eprintln!(
        "(test) node {follower_id} caught up in {elapsed_ms} ms with {written} writes going on: \
         {} messages sent, {} entries, bound {bound}",
        messages_sent, caught_up.commit_index
    );

    // The leader said so once, naming the node, with the word "lost"; it
    // made the node a learner and promoted it again.
    let lines = c.lines(leader);
    let lost: Vec<&String> = lines[since..]
        .iter()
        .filter(|l| l.contains("lost") && l.contains(&format!("node {follower_id} ")))
        .collect();
    assert_eq!(lost.len(), 1, "expected one \"lost\" line, got {lost:#?}");
    assert!(lost[0].contains("acknowledged"), "{}", lost[0]);
    let learner = format!("making node {follower_id} a learner");
    let promoted = format!("promoting node {follower_id} to voter");
    assert!(
        lines[since..].iter().any(|l| l.contains(&learner)),
        "{lines:#?}"
    );
    assert!(
        lines[since..].iter().any(|l| l.contains(&promoted)),
        "{lines:#?}"
    );

    // The same value everywhere: the cluster works with three voters.
    let value = format!("after-{}", written - 1);
    c.wait_for_status(follower, "holds the last value", |s| s.value == value, LONG);
}
