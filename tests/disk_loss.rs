//! A member that lost what it had on disk: rule tests on the pure core, in
//! logical time.
//!
//! Raft assumes stable storage keeps what a node acknowledged (Figure 2:
//! "updated on stable storage before responding to RPCs"). When a disk breaks
//! that promise (a deleted or replaced data directory, a disk that lied about
//! fsync, a directory restored from a backup), the leader must (1) not answer
//! the follower's refusals at full speed, (2) notice and say so, and
//! forget what the follower acknowledged, and (3) not let the follower's
//! votes count until it has caught up, since it may have lost the record of
//! its votes too. These tests pin each of those down.

mod core_harness;

use core_harness::*;
use raft::core::{BugSwitches, Event, Raft, Ready, RoleKind};
use raft::message::{
    Conflict, Entry, EntryData, HardState, Incarnation, Index, Membership, Message, MessageBody,
    Term,
};

/// The incarnation of node `n` in these tests (`100 + n`).
fn incarnation(n: u8) -> Incarnation {
    100 + n as Incarnation
}

/// The `seq` of the latest AppendEntries to `peer` in `ready`.
fn seq_to(ready: &Ready, peer: u8) -> u64 {
    ready
        .messages
        .iter()
        .rev()
        .find_map(|m| match &m.body {
            MessageBody::AppendEntries { seq, .. } if m.to == id(peer) => Some(*seq),
            _ => None,
        })
        .expect("no AppendEntries to that peer")
}

/// `peer` accepts the request numbered `seq`, holding entries up to `match_index`.
fn ok(peer: u8, term: Term, match_index: Index, seq: u64, inc: Incarnation) -> Message {
    let body = MessageBody::AppendEntriesResponse {
        success: true,
        match_index,
        conflict: None,
        read_seq: 0,
        seq,
        incarnation: inc,
    };
    message(peer, 1, term, body)
}

/// `peer` refuses the request numbered `seq`: its log is too short, it ends
/// just before `next`.
fn too_short(peer: u8, term: Term, next: Index, seq: u64, inc: Incarnation) -> Message {
    let body = MessageBody::AppendEntriesResponse {
        success: false,
        match_index: 0,
        conflict: Some(Conflict {
            term: None,
            index: next,
        }),
        read_seq: 0,
        seq,
        incarnation: inc,
    };
    message(peer, 1, term, body)
}

fn granted(peer: u8, term: Term, inc: Incarnation) -> Message {
    let body = MessageBody::RequestVoteResponse {
        vote_granted: true,
        incarnation: inc,
    };
    message(peer, 1, term, body)
}

/// The messages of `ready` addressed to `peer`.
fn to(ready: &Ready, peer: u8) -> Vec<Message> {
    ready
        .messages
        .iter()
        .filter(|m| m.to == id(peer))
        .cloned()
        .collect()
}

/// The membership entries in `ready`.
fn memberships(ready: &Ready) -> Vec<Membership> {
    ready
        .entries
        .iter()
        .filter_map(|e| match &e.data {
            EntryData::Config(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// A membership of `voters` and `learners` with the given incarnations.
fn membership(voters: &[u8], learners: &[u8], incs: &[(u8, Incarnation)]) -> Membership {
    let ids = |list: &[u8]| list.iter().map(|&n| (id(n), String::new())).collect();
    Membership {
        voters: ids(voters),
        learners: ids(learners),
        incarnations: incs.iter().map(|&(n, i)| (id(n), i)).collect(),
    }
}

/// Node `n1` (incarnation `inc`) of `n1..n3`, whose log is one membership
/// entry recording `incs`, in term 1.
fn recorded_node(inc: Incarnation, incs: &[(u8, Incarnation)], bugs: BugSwitches) -> Raft {
    let mut config = config(3, bugs);
    config.incarnation = inc;
    let entry = Entry {
        term: 1,
        index: 1,
        data: EntryData::Config(membership(&[1, 2, 3], &[], incs)),
    };
    let hard_state = HardState {
        current_term: 1,
        voted_for: None,
    };
    Raft::new(config, hard_state, vec![entry], SEED)
}

/// A leader of term 2 over `n1..n3` with a log of three entries of term 1
/// and its no-op at 4; `n2` acknowledged it all (answering as `inc2`), so
/// the no-op is committed. Incarnation 0 means "unknown": nothing recorded.
fn leader_acknowledged_by_n2(inc1: Incarnation, inc2: Incarnation) -> Raft {
    let mut config = config(3, BugSwitches::default());
    config.incarnation = inc1;
    let hard_state = HardState {
        current_term: 1,
        voted_for: None,
    };
    let mut r = Raft::new(config, hard_state, entries(1, &[1, 1, 1]), SEED);
    win_election(&mut r);
    let ready = persist_numbered(&mut r);
    r.step(ok(2, 2, 4, seq_to(&ready, 2), inc2));
    assert_eq!(r.commit_index(), 4);
    r
}

/// No storm: a refusal that does not move `next_index` back is not answered
/// with another request; the next heartbeat carries the next probe. (Before,
/// every refusal was answered at once, and a follower that lost its log
/// exchanged refusals with the leader as fast as the network allowed.)
#[test]
fn a_refusal_that_moves_nothing_back_waits_for_the_heartbeat() {
    let mut r = leader_acknowledged_by_n2(0, 0);
    persist(&mut r);
    r.propose("a".to_string()).unwrap();
    let ready = persist(&mut r);
    assert_eq!(to(&ready, 2).len(), 1, "entry 5 streamed to n2");

    // A late refusal (numbered before n2's acknowledgement) whose hint says
    // "from 5": next_index steps back from 6 to 5, so a probe goes at once.
    r.step(too_short(2, 2, 5, 0, 0));
    let ready = persist(&mut r);
    assert_eq!(
        to(&ready, 2),
        vec![append(1, 2, 2)
            .prev_log(4, 2)
            .entries(vec![command_at(5, 2, "a")])
            .leader_commit(4)]
    );

    // The same refusal again teaches nothing: nothing is sent...
    for _ in 0..10 {
        r.step(too_short(2, 2, 5, 0, 0));
        let ready = persist(&mut r);
        assert!(to(&ready, 2).is_empty(), "answered a useless refusal");
    }
    // ...until the heartbeat.
    ticks(&mut r, HEARTBEAT_TICKS);
    let ready = persist(&mut r);
    assert_eq!(to(&ready, 2).len(), 1);
}

fn command_at(index: Index, term: Term, value: &str) -> Entry {
    Entry {
        term,
        index,
        data: EntryData::Command(value.to_string()),
    }
}

/// A late refusal, answering a request sent before the follower's
/// acknowledgement, says nothing about a loss: no event, `match_index` kept.
#[test]
fn a_late_refusal_is_not_taken_for_a_loss() {
    let mut r = leader_acknowledged_by_n2(0, 0);
    persist(&mut r);
    r.step(too_short(2, 2, 1, 1, 0));
    let ready = persist(&mut r);
    assert!(ready.events.is_empty(), "{:?}", ready.events);
    assert_eq!(match_index_of(&r, 2), 4);
}

/// Detection: a follower refuses a request sent after it acknowledged
/// entries up to 4, saying its log is empty. The leader reports it once,
/// forgets the acknowledgement, sends the whole log at once, and makes the
/// follower a learner until it has caught up; then promotes it again.
#[test]
fn a_follower_that_lost_acknowledged_entries_is_reported_once_and_brought_back() {
    let mut r = leader_acknowledged_by_n2(0, 0);
    persist(&mut r);
    ticks(&mut r, HEARTBEAT_TICKS);
    let ready = persist_numbered(&mut r);
    let fresh = seq_to(&ready, 2);

    r.step(too_short(2, 2, 1, fresh, 0));
    let ready = persist_numbered(&mut r);
    assert_eq!(
        ready.events,
        vec![
            Event::LostEntries {
                id: id(2),
                acknowledged: 4,
                last_index: 0,
                incarnations: None,
            },
            Event::MemberDemoted { id: id(2) },
        ]
    );
    assert_eq!(match_index_of(&r, 2), 0);
    assert_eq!(memberships(&ready), vec![membership(&[1, 3], &[2], &[])]);
    // The step back from 5 to 1 is answered at once, with the log from 1.
    let probe = to(&ready, 2);
    let MessageBody::AppendEntries {
        prev_log_index: 0,
        entries,
        seq,
        ..
    } = &probe[0].body
    else {
        panic!("expected the log from index 1, got {probe:?}");
    };
    assert_eq!(entries.len(), 5);

    // The same refusal again: no second report, nothing sent.
    r.step(too_short(2, 2, 1, fresh, 0));
    let again = persist(&mut r);
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert!(to(&again, 2).is_empty());

    // n2 takes the log; once n3 commits the demotion, n2 is a voter again.
    r.step(ok(2, 2, 5, *seq, 0));
    persist(&mut r);
    r.step(ok(3, 2, 5, 0, 0));
    let ready = persist(&mut r);
    assert_eq!(r.commit_index(), 5);
    assert!(ready.events.is_empty());
    r.step(ok(2, 2, 5, 0, 0));
    let ready = persist(&mut r);
    assert_eq!(ready.events, vec![Event::LearnerPromoted { id: id(2) }]);
    assert_eq!(memberships(&ready), vec![membership(&[1, 2, 3], &[], &[])]);
}

/// Once the no-op of its term is committed, a leader records the
/// incarnations it has learned, its own included, without changing who
/// votes.
#[test]
fn a_leader_records_the_incarnations_it_learns() {
    let mut r = leader_acknowledged_by_n2(incarnation(1), incarnation(2));
    let ready = persist(&mut r);
    assert_eq!(
        memberships(&ready),
        vec![membership(
            &[1, 2, 3],
            &[],
            &[(1, incarnation(1)), (2, incarnation(2))]
        )]
    );
    assert!(ready.events.is_empty());
}

/// A voter answering from another data directory than the one recorded lost
/// its disk: the leader reports it, makes it a learner recording the new
/// incarnation, ignores late answers from the old directory, and promotes
/// the new one once it has caught up.
#[test]
fn a_voter_back_with_a_new_directory_rejoins_as_a_learner() {
    let incs = [
        (1, incarnation(1)),
        (2, incarnation(2)),
        (3, incarnation(3)),
    ];
    let mut r = recorded_node(incarnation(1), &incs, BugSwitches::default());
    campaign(&mut r);
    r.step(granted(2, 2, incarnation(2)));
    assert_eq!(r.role(), RoleKind::Leader);
    let ready = persist_numbered(&mut r);
    let (seq2, seq3) = (seq_to(&ready, 2), seq_to(&ready, 3));
    r.step(ok(2, 2, 2, seq2, incarnation(2)));
    r.step(ok(3, 2, 2, seq3, incarnation(3)));
    let ready = persist(&mut r);
    assert_eq!(r.commit_index(), 2);
    assert!(memberships(&ready).is_empty(), "all were recorded already");

    let new_n2 = 202;
    r.step(too_short(2, 2, 1, 0, new_n2));
    let ready = persist_numbered(&mut r);
    assert_eq!(
        ready.events,
        vec![
            Event::LostEntries {
                id: id(2),
                acknowledged: 2,
                last_index: 0,
                incarnations: Some((incarnation(2), new_n2)),
            },
            Event::MemberDemoted { id: id(2) },
        ]
    );
    let demoted = membership(
        &[1, 3],
        &[2],
        &[(1, incarnation(1)), (2, new_n2), (3, incarnation(3))],
    );
    assert_eq!(memberships(&ready), vec![demoted]);
    assert_eq!(match_index_of(&r, 2), 0);

    // A late acknowledgement from the old directory is ignored.
    r.step(ok(2, 2, 2, seq2, incarnation(2)));
    let late = persist(&mut r);
    assert_eq!(match_index_of(&r, 2), 0);
    assert!(late.events.is_empty() && memberships(&late).is_empty());

    // The new directory catches up; n3 commits the demotion; promotion.
    r.step(ok(2, 2, 3, 0, new_n2));
    r.step(ok(3, 2, 3, 0, incarnation(3)));
    r.step(ok(2, 2, 3, 0, new_n2));
    let ready = persist(&mut r);
    assert_eq!(ready.events, vec![Event::LearnerPromoted { id: id(2) }]);
    let promoted = membership(
        &[1, 2, 3],
        &[],
        &[(1, incarnation(1)), (2, new_n2), (3, incarnation(3))],
    );
    assert_eq!(memberships(&ready), vec![promoted]);
}

/// A vote counts only from the recorded incarnation: a voter that lost its
/// disk may grant a second vote in a term it already voted in.
#[test]
fn a_vote_from_an_unrecorded_directory_does_not_count() {
    let incs = [
        (1, incarnation(1)),
        (2, incarnation(2)),
        (3, incarnation(3)),
    ];
    let mut r = recorded_node(incarnation(1), &incs, BugSwitches::default());
    campaign(&mut r);
    r.step(granted(2, 2, 202));
    assert_eq!(
        r.role(),
        RoleKind::Candidate,
        "counted a vote from a new directory"
    );
    r.step(granted(3, 2, incarnation(3)));
    assert_eq!(r.role(), RoleKind::Leader);
}

/// The same with the protection switched off: the vote counts.
#[test]
fn the_bug_switch_counts_votes_from_any_incarnation() {
    let incs = [
        (1, incarnation(1)),
        (2, incarnation(2)),
        (3, incarnation(3)),
    ];
    let bugs = BugSwitches {
        count_votes_from_any_incarnation: true,
        ..BugSwitches::default()
    };
    let mut r = recorded_node(incarnation(1), &incs, bugs);
    campaign(&mut r);
    r.step(granted(2, 2, 202));
    assert_eq!(r.role(), RoleKind::Leader);
}

/// A candidate whose own directory is not the recorded one does not count
/// its own vote either.
#[test]
fn a_candidate_with_a_new_directory_does_not_count_itself() {
    let incs = [
        (1, incarnation(1)),
        (2, incarnation(2)),
        (3, incarnation(3)),
    ];
    let mut r = recorded_node(301, &incs, BugSwitches::default());
    campaign(&mut r);
    r.step(granted(2, 2, incarnation(2)));
    assert_eq!(r.role(), RoleKind::Candidate);
    r.step(granted(3, 2, incarnation(3)));
    assert_eq!(r.role(), RoleKind::Leader);
}

/// Pre-votes are counted by the same rule, so a member that lost its disk
/// cannot help a pre-candidate raise the term and disrupt a leader.
#[test]
fn a_pre_vote_from_an_unrecorded_directory_does_not_count() {
    let incs = [
        (1, incarnation(1)),
        (2, incarnation(2)),
        (3, incarnation(3)),
    ];
    let mut r = recorded_node(incarnation(1), &incs, BugSwitches::default());
    let mut config = r.config().clone();
    config.pre_vote = true;
    r = Raft::new(config, r.hard_state(), r.log().slice(1, 1).to_vec(), SEED);
    ticks(&mut r, ELECTION_TICKS);
    assert_eq!(r.role(), RoleKind::PreCandidate);
    let body = |inc| MessageBody::PreVoteResponse {
        vote_granted: true,
        incarnation: inc,
    };
    r.step(message(2, 1, 2, body(202)));
    assert_eq!(r.role(), RoleKind::PreCandidate);
    r.step(message(3, 1, 2, body(incarnation(3))));
    assert_eq!(r.role(), RoleKind::Candidate);
}

/// The bound stated in `src/core/replication.rs`, idle: a leader sends each follower one
/// AppendEntries per heartbeat interval and nothing else, whatever the
/// follower answers.
#[test]
fn an_idle_leader_sends_one_message_per_heartbeat_to_each_follower() {
    let mut r = leader_acknowledged_by_n2(0, 0);
    persist(&mut r);
    let mut sent = 0;
    for _ in 0..(HEARTBEAT_TICKS * 100) {
        r.tick();
        let ready = persist_numbered(&mut r);
        for msg in to(&ready, 2) {
            sent += 1;
            let MessageBody::AppendEntries { seq, .. } = msg.body else {
                panic!("unexpected {msg:?}");
            };
            r.step(ok(2, 2, 4, seq, 0));
        }
        let answered = persist(&mut r);
        assert!(to(&answered, 2).is_empty(), "answered an acknowledgement");
    }
    assert_eq!(sent, 100);
}

/// An entry that only records incarnations keeps the same voters, so a
/// membership change may follow it before it commits; a change of voters
/// still waits for the one before it.
#[test]
fn recording_incarnations_does_not_hold_up_a_membership_change() {
    let mut r = leader_acknowledged_by_n2(incarnation(1), incarnation(2));
    let ready = persist(&mut r);
    assert_eq!(memberships(&ready).len(), 1, "the record is pending");
    assert!(r.add_learner(id(4), "127.0.0.1:4".to_string()).is_ok());
    persist(&mut r);
    assert_eq!(
        r.remove_member(id(4)),
        Err(raft::core::MembershipError::ChangeInProgress)
    );
}
