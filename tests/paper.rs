//! The rules of the Raft paper, one test per rule, against a single core.
//!
//! Each test builds one node, `n1`, gives it a tick or a message through the
//! public API, and checks what comes back in its `Ready` and the state it is
//! left in. The other members of the cluster (`n2`, `n3`, ...) exist only as
//! the messages a test writes on their behalf, so every message the node sees
//! is spelled out in the test.
//!
//! The order is that of Figure 2: its State box, the AppendEntries and
//! RequestVote receivers, then the rules for all servers, followers,
//! candidates and leaders. After Figure 2 come the pieces it leaves out: the conflict hint
//! (end of §5.3), ReadIndex reads (§8 and the dissertation, §6.4), and the
//! order in which a driver must persist and send. The last section turns on
//! each deliberate bug of `Config::bugs` and shows that the test for the
//! rule it breaks notices.
//!
//! Quotations are from "In Search of an Understandable Consensus Algorithm
//! (Extended Version)" by Ongaro and Ousterhout, and from Ongaro's
//! dissertation, "Consensus: Bridging Theory and Practice".

mod core_harness;

use core_harness::*;
use raft::core::{
    BugSwitches, Event, NotLeader, Raft, ReadOutcome, Ready, RoleKind, StepDownReason,
};
use raft::message::{Conflict, Entry, EntryData, HardState, Index, Message, MessageBody, Term};
use std::collections::BTreeSet;

// ===========================================================================
// Figure 2, State
// ===========================================================================

/// Reference: Figure 2, "Persistent state on all servers": currentTerm,
/// votedFor and log[] survive a restart. A node rebuilt from them is still
/// in its term, still holds its vote for n2 (so it cannot vote for n3 in the
/// same term), and starts as a follower with nothing committed or applied
/// ("Volatile state ... initialized to 0").
#[test]
fn a_restarted_node_keeps_its_term_vote_and_log() {
    let hard_state = HardState {
        current_term: 4,
        voted_for: Some(id(2)),
    };
    let config = config(3, BugSwitches::default());
    let mut r = Raft::new(config, hard_state, entries(1, &[1, 4]), 7);
    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.current_term(), 4);
    assert_eq!(log_terms(&r), vec![1, 4]);
    assert_eq!((r.commit_index(), r.last_applied()), (0, 0));

    r.step(request_vote(3, 1, 4, 2, 4));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 3, 4, false)]);
    r.step(request_vote(2, 1, 4, 2, 4));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 4, true)]);
}

// ===========================================================================
// Figure 2, AppendEntries RPC, receiver implementation
// ===========================================================================

/// Reference: Figure 2, AppendEntries receiver, rule 1 (§5.1): "Reply false
/// if term < currentTerm." The refusal carries our term so that the deposed
/// leader learns it is out of date; our log, commit index and idea of who
/// leads do not change.
#[test]
fn append_entries_from_an_older_term_is_refused() {
    let mut r = node(3, 3, &[1, 2]);

    r.step(
        append(2, 1, 2)
            .prev_log(2, 2)
            .entries(entries(3, &[2]))
            .leader_commit(3),
    );

    let ready = persist(&mut r);
    assert_eq!(ready.messages, vec![append_refused(1, 2, 3, None)]);
    assert_eq!(log_terms(&r), vec![1, 2]);
    assert_eq!(r.commit_index(), 0);
    assert_eq!(r.current_term(), 3);
    assert_eq!(r.leader(), None);
}

/// Reference: Figure 2, AppendEntries receiver, rule 2 (§5.3): "Reply false
/// if log doesn't contain an entry at prevLogIndex whose term matches
/// prevLogTerm." Here the log is too short to hold prevLogIndex at all; the
/// conflict hint says where our log ends (last index + 1), so the leader can
/// jump straight there.
#[test]
fn append_entries_is_refused_when_the_previous_entry_is_missing() {
    let mut r = node(3, 2, &[1, 1, 2]);

    r.step(
        append(2, 1, 2)
            .prev_log(5, 2)
            .entries(entries(6, &[2]))
            .leader_commit(0),
    );

    let ready = persist(&mut r);
    assert_eq!(
        ready.messages,
        vec![append_refused(1, 2, 2, conflict(None, 4))]
    );
    assert_eq!(log_terms(&r), vec![1, 1, 2]);
    assert!(ready.entries.is_empty());
}

/// Reference: Figure 2, AppendEntries receiver, rule 2 (§5.3), with the
/// conflict hint of §5.3: the entry at prevLogIndex has another term, so the
/// follower refuses and names "the term of the conflicting entry and the
/// first index it stores for that term".
#[test]
fn append_entries_is_refused_when_the_previous_entry_has_another_term() {
    let mut r = node(3, 3, &[1, 1, 2, 2, 2]);

    r.step(
        append(2, 1, 3)
            .prev_log(5, 3)
            .entries(entries(6, &[3]))
            .leader_commit(0),
    );

    let ready = persist(&mut r);
    assert_eq!(
        ready.messages,
        vec![append_refused(1, 2, 3, conflict(Some(2), 3))]
    );
    assert_eq!(log_terms(&r), vec![1, 1, 2, 2, 2]);
}

/// The setup of the next test, shared with the `keep_conflicting_suffix` bug
/// test: a follower holding entries 3..=5 of term 2, which the leader of term
/// 3 replaces with one entry of term 3 at index 3.
fn overwrite_a_conflicting_entry(bugs: BugSwitches) -> (Raft, Ready) {
    let mut r = node_with_bugs(3, 3, &[1, 1, 2, 2, 2], bugs);
    r.step(
        append(2, 1, 3)
            .prev_log(2, 1)
            .entries(entries(3, &[3]))
            .leader_commit(0),
    );
    let ready = persist(&mut r);
    (r, ready)
}

/// Reference: Figure 2, AppendEntries receiver, rule 3 (§5.3): "If an
/// existing entry conflicts with a new one (same index but different terms),
/// delete the existing entry and all that follow it." Entries 4 and 5 came
/// after the conflicting entry 3 and go with it, and the Ready tells the
/// driver to rewrite the stored log from index 3.
#[test]
fn append_entries_deletes_a_conflicting_entry_and_all_that_follow_it() {
    let (r, ready) = overwrite_a_conflicting_entry(BugSwitches::default());

    assert_eq!(log_terms(&r), vec![1, 1, 3]);
    assert_eq!(ready.entries, entries(3, &[3]));
    assert_eq!(ready.messages, vec![append_ok(1, 2, 3, 3)]);
}

/// Reference: Figure 2, AppendEntries receiver, rule 3 (§5.3), read
/// carefully: only a *conflicting* entry is deleted with what follows it. A
/// request that arrives late, carrying a prefix of what we already hold, must
/// not cut off the later entries, which we may already have acknowledged to
/// the leader (and which it may have counted towards a commit). The answer
/// only vouches for the entries the request covered.
#[test]
fn a_delayed_shorter_append_entries_does_not_delete_matching_entries() {
    let mut r = node(3, 2, &[]);
    r.step(
        append(2, 1, 2)
            .prev_log(0, 0)
            .entries(entries(1, &[1, 2, 2]))
            .leader_commit(0),
    );
    persist(&mut r);

    // An earlier request from the same leader, overtaken on the network.
    r.step(
        append(2, 1, 2)
            .prev_log(0, 0)
            .entries(entries(1, &[1, 2]))
            .leader_commit(0),
    );

    let ready = persist(&mut r);
    assert_eq!(log_terms(&r), vec![1, 2, 2]);
    assert!(ready.entries.is_empty(), "nothing changed on disk");
    assert_eq!(ready.messages, vec![append_ok(1, 2, 2, 2)]);
}

/// Reference: Figure 2, AppendEntries receiver, rule 4 (§5.3): "Append any
/// new entries not already in the log." Entry 2 is already there and is
/// kept; entries 3 and 4 are new, and only they need to be written.
#[test]
fn append_entries_appends_entries_not_already_in_the_log() {
    let mut r = node(3, 2, &[1, 1]);

    r.step(
        append(2, 1, 2)
            .prev_log(1, 1)
            .entries(entries(2, &[1, 2, 2]))
            .leader_commit(0),
    );

    let ready = persist(&mut r);
    assert_eq!(log_terms(&r), vec![1, 1, 2, 2]);
    assert_eq!(ready.entries, entries(3, &[2, 2]));
    assert_eq!(ready.messages, vec![append_ok(1, 2, 2, 4)]);
}

/// Reference: Figure 2, AppendEntries receiver, rule 5 (§5.3): "If
/// leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of
/// last new entry)." Both sides of the `min` matter: we cannot commit past
/// what the leader has committed, nor past what this request showed to match
/// the leader's log. Entries after that (here 3..=5, of term 2, left by an
/// older leader) may not be in the leader's log at all.
#[test]
fn append_entries_commits_up_to_leader_commit_but_not_past_the_last_new_entry() {
    let mut r = node(3, 1, &[]);
    r.step(
        append(2, 1, 1)
            .prev_log(0, 0)
            .entries(entries(1, &[1, 1, 1]))
            .leader_commit(2),
    );
    assert_eq!(r.commit_index(), 2, "limited by leaderCommit");
    r.step(heartbeat(2, 1, 1).prev_log(3, 1).leader_commit(5));
    assert_eq!(r.commit_index(), 3, "limited by the last entry we hold");

    let mut r = node(3, 3, &[1, 1, 2, 2, 2]);
    r.step(
        append(2, 1, 3)
            .prev_log(1, 1)
            .entries(entries(2, &[1]))
            .leader_commit(4),
    );
    assert_eq!(log_terms(&r), vec![1, 1, 2, 2, 2]);
    assert_eq!(
        r.commit_index(),
        2,
        "entries 3 and 4 were not vouched for by this request"
    );
}

// ===========================================================================
// Figure 2, RequestVote RPC, receiver implementation
// ===========================================================================

/// Reference: Figure 2, RequestVote receiver, rule 1 (§5.1): "Reply false if
/// term < currentTerm." The refusal carries our term; no vote is recorded.
#[test]
fn request_vote_from_an_older_term_is_refused() {
    let mut r = node(3, 3, &[]);

    r.step(request_vote(2, 1, 2, 0, 0));

    let ready = persist(&mut r);
    assert_eq!(ready.messages, vec![vote(1, 2, 3, false)]);
    assert_eq!(ready.hard_state, None);
    assert_eq!(r.voted_for(), None);
    assert_eq!(r.current_term(), 3);
}

/// Reference: Figure 2, RequestVote receiver, rule 2 (§5.2): "If votedFor is
/// null or candidateId ... grant vote." "Each server will vote for at most
/// one candidate in a given term, on a first-come-first-served basis." A
/// second candidate of the same term is refused; the first one asking again
/// (its request or our answer was lost) gets the same answer as before.
#[test]
fn request_vote_grants_one_vote_per_term() {
    let mut r = node(3, 0, &[]);

    r.step(request_vote(2, 1, 1, 0, 0));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 1, true)]);
    assert_eq!(r.voted_for(), Some(&id(2)));

    r.step(request_vote(3, 1, 1, 0, 0));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 3, 1, false)]);
    assert_eq!(r.voted_for(), Some(&id(2)));

    r.step(request_vote(2, 1, 1, 0, 0));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 1, true)]);
    assert_eq!(r.voted_for(), Some(&id(2)));
}

/// A voter with log terms [1, 1, 2, 2] in term 2 hears from n2, candidate
/// for term 3, whose log ends at (`last_log_index`, `last_log_term`). Returns
/// the voter's answer.
fn ask_for_vote(bugs: BugSwitches, last_log_index: Index, last_log_term: Term) -> Message {
    let mut r = node_with_bugs(3, 2, &[1, 1, 2, 2], bugs);
    r.step(request_vote(2, 1, 3, last_log_index, last_log_term));
    let mut messages = persist(&mut r).messages;
    assert_eq!(messages.len(), 1);
    let answer = messages.remove(0);
    let granted = matches!(
        answer.body,
        MessageBody::RequestVoteResponse {
            vote_granted: true,
            ..
        }
    );
    assert_eq!(r.voted_for() == Some(&id(2)), granted);
    answer
}

/// Reference: Figure 2, RequestVote receiver, rule 2 and §5.4.1: grant the
/// vote only if the "candidate's log is at least as up-to-date as receiver's
/// log". "If the logs have last entries with different terms, then the log
/// with the later term is more up-to-date. If the logs end with the same
/// term, then whichever log is longer is more up-to-date." The voter's log
/// ends at index 4, term 2.
#[test]
fn request_vote_is_granted_to_a_candidate_at_least_as_up_to_date() {
    for (case, last_log_index, last_log_term) in [
        ("a later last term wins, even with a shorter log", 2, 3),
        ("the same last term and a longer log wins", 5, 2),
        ("the same last term and the same length is enough", 4, 2),
    ] {
        let answer = ask_for_vote(BugSwitches::default(), last_log_index, last_log_term);
        assert_eq!(answer, vote(1, 2, 3, true), "{case}");
    }
}

/// Reference: Figure 2, RequestVote receiver, rule 2 and §5.4.1, the other
/// way round: a candidate whose log is behind the voter's is refused, which
/// is what keeps a server that lacks committed entries from being elected
/// (the Election Restriction).
#[test]
fn request_vote_is_refused_to_a_candidate_whose_log_is_behind() {
    for (case, last_log_index, last_log_term) in [
        ("the same last term and a shorter log loses", 3, 2),
        ("an earlier last term loses, even with a longer log", 9, 1),
        ("an empty log loses", 0, 0),
    ] {
        let answer = ask_for_vote(BugSwitches::default(), last_log_index, last_log_term);
        assert_eq!(answer, vote(1, 2, 3, false), "{case}");
    }
}

// ===========================================================================
// Figure 2, Rules for Servers, All Servers
// ===========================================================================

/// Reference: Figure 2, All Servers (§5.3): "If commitIndex > lastApplied:
/// increment lastApplied, apply log[lastApplied] to state machine." The core
/// hands each committed entry out exactly once, in index order, and
/// `last_applied` follows.
#[test]
fn committed_entries_are_handed_out_once_and_in_order() {
    let mut r = node(3, 1, &[]);
    r.step(
        append(2, 1, 1)
            .prev_log(0, 0)
            .entries(entries(1, &[1, 1, 1]))
            .leader_commit(2),
    );
    let ready = persist(&mut r);
    assert_eq!(ready.committed, entries(1, &[1, 1]));
    assert_eq!(r.last_applied(), 2);

    r.step(heartbeat(2, 1, 1).prev_log(3, 1).leader_commit(3));
    let ready = persist(&mut r);
    assert_eq!(ready.committed, entries(3, &[1]));
    assert_eq!(r.last_applied(), 3);

    assert!(
        persist(&mut r).committed.is_empty(),
        "nothing is applied twice"
    );
}

/// The three roles a node can be in when a newer term turns up, all in term
/// 2 with log [1]: a follower that voted for n3, a candidate, a leader.
fn node_in_each_role() -> Vec<(RoleKind, Raft)> {
    let mut follower = node(3, 1, &[1]);
    follower.step(request_vote(3, 1, 2, 1, 1));
    persist(&mut follower);
    assert_eq!(follower.voted_for(), Some(&id(3)));

    let mut candidate = node(3, 1, &[1]);
    campaign(&mut candidate);

    let mut leader = node(3, 1, &[1]);
    elect(&mut leader);

    vec![
        (RoleKind::Follower, follower),
        (RoleKind::Candidate, candidate),
        (RoleKind::Leader, leader),
    ]
}

/// Reference: Figure 2, All Servers (§5.1): "If RPC request or response
/// contains term T > currentTerm: set currentTerm = T, convert to follower."
/// Whatever the role and whatever the message, the node adopts the term, has
/// voted for nobody in it, and hands that hard state out to be persisted. (The
/// RequestVote here comes from a candidate with an empty log, so the vote
/// stays free; a deposed leader also reports that it stepped down.)
#[test]
fn a_newer_term_in_any_message_makes_any_node_a_follower() {
    let newer: [(&str, Message); 4] = [
        ("RequestVote", request_vote(2, 1, 5, 0, 0)),
        ("RequestVoteResponse", vote(2, 1, 5, false)),
        (
            "AppendEntries",
            heartbeat(2, 1, 5).prev_log(0, 0).leader_commit(0),
        ),
        ("AppendEntriesResponse", append_refused(2, 1, 5, None)),
    ];
    for (kind, msg) in newer {
        for (role, mut r) in node_in_each_role() {
            r.step(msg.clone());
            let ready = persist(&mut r);
            let case = format!("{role} receiving {kind}");
            assert_eq!(r.role(), RoleKind::Follower, "{case}");
            assert_eq!(r.current_term(), 5, "{case}");
            assert_eq!(r.voted_for(), None, "{case}");
            let expected = HardState {
                current_term: 5,
                voted_for: None,
            };
            assert_eq!(ready.hard_state, Some(expected), "{case}");
            let stepped_down = ready.events.contains(&Event::SteppedDown {
                term: 5,
                reason: StepDownReason::HigherTerm,
            });
            assert_eq!(stepped_down, role == RoleKind::Leader, "{case}");
        }
    }
}

/// Reference: Figure 2, receiver rule 1 of both RPCs, for every role (§5.1):
/// "If a server receives a request with a stale term number, it rejects the
/// request." The refusal carries the receiver's term; its role, term and
/// vote stay as they were.
#[test]
fn a_request_from_an_older_term_is_refused_whatever_the_role() {
    for (role, mut r) in node_in_each_role() {
        let vote_before = r.voted_for().cloned();
        r.step(request_vote(2, 1, 1, 9, 9));
        r.step(heartbeat(2, 1, 1).prev_log(0, 0).leader_commit(0));
        let ready = persist(&mut r);
        assert_eq!(
            ready.messages,
            vec![vote(1, 2, 2, false), append_refused(1, 2, 2, None)],
            "{role}"
        );
        assert_eq!(r.role(), role);
        assert_eq!(r.current_term(), 2);
        assert_eq!(r.voted_for().cloned(), vote_before);
    }
}

/// Reference: §5.1: terms act as a logical clock, and anything from an older
/// term is out of date. A response from an older term answers a request of
/// an election or a leadership that is over: it must not count as a vote,
/// nor as an acknowledgement.
#[test]
fn a_response_from_an_older_term_is_ignored() {
    // A candidate of a five-node cluster needs itself and two more votes.
    let mut r = node(5, 1, &[1]);
    campaign(&mut r);
    r.step(vote(2, 1, 1, true));
    r.step(vote(3, 1, 1, true));
    assert_eq!(
        r.role(),
        RoleKind::Candidate,
        "votes from term 1 count for nothing"
    );
    r.step(vote(2, 1, 2, true));
    r.step(vote(3, 1, 2, true));
    assert_eq!(r.role(), RoleKind::Leader);

    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    r.step(append_ok(2, 1, 1, 2));
    assert_eq!(match_index_of(&r, 2), 0);
    assert_eq!(r.commit_index(), 0);
    assert!(persist(&mut r).messages.is_empty());
}

// ===========================================================================
// Figure 2, Rules for Servers, Followers (§5.2)
// ===========================================================================

/// Reference: Figure 2, Followers (§5.2): "If election timeout elapses
/// without receiving AppendEntries RPC from current leader or granting vote
/// to candidate: convert to candidate."
#[test]
fn a_follower_that_hears_nothing_becomes_a_candidate() {
    let mut r = node(3, 0, &[]);

    ticks(&mut r, ELECTION_TICKS - 1);
    assert_eq!(r.role(), RoleKind::Follower);
    assert!(!r.has_ready(), "nothing happens before the timeout");

    r.tick();
    assert_eq!(r.role(), RoleKind::Candidate);
    assert_eq!(r.current_term(), 1);
}

/// Reference: Figure 2, Followers (§5.2): an AppendEntries from the current
/// leader restarts the election timeout ("A server remains in follower state
/// as long as it receives valid RPCs from a leader or candidate").
#[test]
fn append_entries_from_the_leader_resets_the_election_timer() {
    let mut r = node(3, 1, &[]);

    ticks(&mut r, ELECTION_TICKS - 1);
    r.step(heartbeat(2, 1, 1).prev_log(0, 0).leader_commit(0));
    ticks(&mut r, ELECTION_TICKS - 1);
    assert_eq!(r.role(), RoleKind::Follower);

    r.tick();
    assert_eq!(r.role(), RoleKind::Candidate);
}

/// Reference: Figure 2, Followers (§5.2): granting a vote restarts the
/// election timeout, so the follower gives the candidate it voted for time
/// to win instead of competing with it.
#[test]
fn granting_a_vote_resets_the_election_timer() {
    let mut r = node(3, 1, &[]);

    ticks(&mut r, ELECTION_TICKS - 1);
    r.step(request_vote(2, 1, 1, 0, 0));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 1, true)]);
    ticks(&mut r, ELECTION_TICKS - 1);
    assert_eq!(r.role(), RoleKind::Follower);

    r.tick();
    assert_eq!(r.role(), RoleKind::Candidate);
}

/// Reference: Figure 2, Followers (§5.2), the other side of the rule: a
/// *refused* vote does not reset the timer. Otherwise a candidate that can
/// never win (its log is behind) could keep an up-to-date follower from ever
/// standing. (The request is of the follower's own term, so no term change
/// is involved.)
#[test]
fn refusing_a_vote_does_not_reset_the_election_timer() {
    let mut r = node(3, 1, &[1]);

    ticks(&mut r, ELECTION_TICKS - 1);
    r.step(request_vote(2, 1, 1, 0, 0));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 1, false)]);

    r.tick();
    assert_eq!(r.role(), RoleKind::Candidate);
}

/// Reference: Figure 2, Followers (§5.2), as the previous test, but the
/// refused candidate has a newer term. The follower adopts the term (All
/// Servers, rule 2), yet it neither heard from a leader nor granted a vote,
/// so by Figure 2 its timer keeps running. Resetting it here lets a
/// candidate whose log is behind, and that can never win, push back the
/// elections of the servers that could.
#[test]
fn refusing_a_vote_of_a_newer_term_does_not_reset_the_election_timer() {
    let mut r = node(3, 1, &[1]);

    ticks(&mut r, ELECTION_TICKS - 1);
    r.step(request_vote(2, 1, 2, 0, 0));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 2, false)]);
    assert_eq!(r.current_term(), 2);

    r.tick();
    assert_eq!(r.role(), RoleKind::Candidate);
}

/// Reference: Figure 2, Followers (§5.2): only the *current* leader's
/// AppendEntries counts. One from a deposed leader is refused (receiver rule
/// 1) and does not keep the follower from standing for election.
#[test]
fn append_entries_from_a_deposed_leader_does_not_reset_the_election_timer() {
    let mut r = node(3, 2, &[]);

    ticks(&mut r, ELECTION_TICKS - 1);
    r.step(heartbeat(2, 1, 1).prev_log(0, 0).leader_commit(0));

    r.tick();
    assert_eq!(r.role(), RoleKind::Candidate);
}

/// Reference: §5.2: "Raft uses randomized election timeouts to ensure that
/// split votes are rare ... election timeouts are chosen randomly from a
/// fixed interval (e.g., 150–300ms)." Over many seeds the wait before the
/// first election covers the whole configured range and never leaves it;
/// and one node draws afresh each time its timer is reset.
#[test]
fn the_election_timeout_is_drawn_at_random_from_the_configured_range() {
    let (min, max) = (10, 20);
    let random_node = |seed| {
        let mut config = config(3, BugSwitches::default());
        config.election_timeout_ticks = (min, max);
        Raft::new(config, HardState::default(), Vec::new(), seed)
    };
    // Ticks until the node starts its next election.
    let wait_for_election = |r: &mut Raft| {
        let term = r.current_term();
        let mut waited = 0;
        while r.current_term() == term {
            r.tick();
            waited += 1;
            assert!(waited <= max, "waited {waited} ticks, more than {max}");
        }
        assert!(waited >= min, "waited {waited} ticks, fewer than {min}");
        waited
    };

    let mut seen = BTreeSet::new();
    for seed in 0..500 {
        seen.insert(wait_for_election(&mut random_node(seed)));
    }
    assert_eq!(seen, (min..=max).collect::<BTreeSet<u64>>());

    let mut r = random_node(1);
    let redrawn: BTreeSet<u64> = (0..100).map(|_| wait_for_election(&mut r)).collect();
    assert_eq!(redrawn, (min..=max).collect::<BTreeSet<u64>>());
}

// ===========================================================================
// Figure 2, Rules for Servers, Candidates (§5.2)
// ===========================================================================

/// Reference: Figure 2, Candidates (§5.2): "On conversion to candidate,
/// start election: increment currentTerm, vote for self, reset election
/// timer, send RequestVote RPCs to all other servers." Each request carries
/// the index and term of the candidate's last log entry (for §5.4.1), and
/// the new term and self-vote are handed out to be persisted with them.
#[test]
fn a_new_candidate_increments_its_term_votes_for_itself_and_asks_everyone() {
    let mut r = node(5, 2, &[1, 2, 2]);

    ticks(&mut r, ELECTION_TICKS);

    let ready = persist(&mut r);
    assert_eq!(r.role(), RoleKind::Candidate);
    assert_eq!(r.current_term(), 3);
    assert_eq!(r.voted_for(), Some(&id(1)));
    let expected = HardState {
        current_term: 3,
        voted_for: Some(id(1)),
    };
    assert_eq!(ready.hard_state, Some(expected));
    let requests: Vec<Message> = (2..=5).map(|peer| request_vote(1, peer, 3, 3, 2)).collect();
    assert_eq!(ready.messages, requests);
    assert_eq!(ready.events, vec![Event::ElectionStarted { term: 3 }]);
}

/// Reference: Figure 2, Candidates (§5.2): "If votes received from majority
/// of servers: become leader." In a cluster of five that is three votes,
/// its own included; a refusal or a repeated vote from the same server does
/// not count.
#[test]
fn a_candidate_with_votes_from_a_majority_becomes_leader() {
    let mut r = node(5, 0, &[]);
    campaign(&mut r);

    r.step(vote(2, 1, 1, true));
    r.step(vote(2, 1, 1, true));
    r.step(vote(3, 1, 1, false));
    assert_eq!(r.role(), RoleKind::Candidate);

    r.step(vote(4, 1, 1, true));
    assert_eq!(r.role(), RoleKind::Leader);
    let ready = persist(&mut r);
    assert!(ready.events.contains(&Event::BecameLeader { term: 1 }));
}

/// Reference: Figure 2, Candidates (§5.2): "If AppendEntries RPC received
/// from new leader: convert to follower." ("If the leader's term ... is at
/// least as large as the candidate's current term, then the candidate
/// recognizes the leader as legitimate.") The term is the same, so the
/// candidate's vote for itself stands.
#[test]
fn a_candidate_hearing_from_a_leader_of_its_term_becomes_a_follower() {
    let mut r = node(3, 0, &[]);
    campaign(&mut r);

    r.step(heartbeat(2, 1, 1).prev_log(0, 0).leader_commit(0));

    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.leader(), Some(&id(2)));
    assert_eq!(r.current_term(), 1);
    assert_eq!(r.voted_for(), Some(&id(1)));
    assert_eq!(persist(&mut r).messages, vec![append_ok(1, 2, 1, 0)]);
}

/// Reference: Figure 2, Candidates (§5.2): "If election timeout elapses:
/// start new election." (A split vote: "each candidate will time out and
/// start a new election by incrementing its term".)
#[test]
fn a_candidate_whose_election_times_out_starts_another_in_the_next_term() {
    let mut r = node(3, 0, &[]);
    campaign(&mut r);
    r.step(vote(2, 1, 1, false));

    ticks(&mut r, ELECTION_TICKS - 1);
    assert_eq!(r.current_term(), 1);
    r.tick();

    assert_eq!(r.role(), RoleKind::Candidate);
    assert_eq!(r.current_term(), 2);
    let ready = persist(&mut r);
    let expected = HardState {
        current_term: 2,
        voted_for: Some(id(1)),
    };
    assert_eq!(ready.hard_state, Some(expected));
    assert_eq!(
        ready.messages,
        vec![request_vote(1, 2, 2, 0, 0), request_vote(1, 3, 2, 0, 0)]
    );
}

/// Reference: Figure 2, Candidates (§5.2), in a cluster of one: its own
/// vote is a majority, so the node leads as soon as it stands, and commits
/// its no-op as soon as it has written it.
#[test]
fn a_single_node_elects_itself_and_commits_alone() {
    let mut r = node(1, 0, &[]);

    ticks(&mut r, ELECTION_TICKS);
    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.current_term(), 1);

    let ready = r.ready();
    assert_eq!(ready.entries, vec![noop(1, 1)]);
    assert!(ready.messages.is_empty());
    assert_eq!(r.commit_index(), 0, "not durable yet");
    r.advance(&ready);
    assert_eq!(r.commit_index(), 1);
    assert_eq!(persist(&mut r).committed, vec![noop(1, 1)]);
}

// ===========================================================================
// Figure 2, Rules for Servers, Leaders (§5.2, §5.3, §5.4, §8)
// ===========================================================================

/// Reference: Figure 2, Leaders (§5.2): "Upon election: send initial empty
/// AppendEntries RPCs (heartbeat) to each server", and §8: "each leader
/// commit[s] a blank no-op entry into the log at the start of its term". The
/// Ready of the winning vote holds the no-op, in the new term, and an
/// AppendEntries for every follower (empty or carrying the no-op), right
/// after the entry before the no-op. Sending it at once tells the other
/// servers there is a leader before their own timers run out.
#[test]
fn a_new_leader_appends_a_noop_and_sends_append_entries_to_everyone() {
    let mut r = node(3, 1, &[1]);

    let ready = elect(&mut r);

    assert_eq!(ready.entries, vec![noop(2, 2)]);
    assert_eq!(log_terms(&r), vec![1, 2]);
    for peer in [2, 3] {
        let to_peer = sent_to(&ready, peer);
        let expected = [
            heartbeat(1, peer, 2).prev_log(1, 1).leader_commit(0),
            append(1, peer, 2)
                .prev_log(1, 1)
                .entries(vec![noop(2, 2)])
                .leader_commit(0),
        ];
        assert!(
            to_peer.len() == 1 && expected.contains(to_peer[0]),
            "expected one AppendEntries to n{peer}, got {to_peer:?}"
        );
    }
}

/// Reference: Figure 2, Leaders (§5.2): "repeat during idle periods to
/// prevent election timeouts." With nothing to send, the leader sends an
/// empty AppendEntries to every follower each `heartbeat_ticks`, carrying
/// its commit index.
#[test]
fn an_idle_leader_sends_a_heartbeat_every_heartbeat_interval() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    acknowledge(&mut r, &[2, 3]);

    for _ in 0..3 {
        ticks(&mut r, HEARTBEAT_TICKS - 1);
        assert!(persist(&mut r).messages.is_empty());
        r.tick();
        assert_eq!(
            persist(&mut r).messages,
            vec![
                heartbeat(1, 2, 2).prev_log(2, 2).leader_commit(2),
                heartbeat(1, 3, 2).prev_log(2, 2).leader_commit(2)
            ]
        );
    }
}

/// Reference: Figure 2, Leaders (§5.3): "If command received from client:
/// append entry to local log", and "If last log index ≥ nextIndex for a
/// follower: send AppendEntries RPC with log entries starting at nextIndex."
/// The entry gets the leader's term and the next index; it is handed out to
/// be persisted and sent to both (caught-up) followers at once.
#[test]
fn a_leader_appends_a_proposal_and_sends_it_to_the_followers() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    acknowledge(&mut r, &[2, 3]);

    assert_eq!(r.propose("x".to_string()), Ok(3));

    let entry = Entry {
        term: 2,
        index: 3,
        data: EntryData::Command("x".to_string()),
    };
    assert_eq!(r.log().get(3), Some(&entry));
    let ready = persist(&mut r);
    assert_eq!(ready.entries, vec![entry.clone()]);
    assert_eq!(
        ready.messages,
        vec![
            append(1, 2, 2)
                .prev_log(2, 2)
                .entries(vec![entry.clone()])
                .leader_commit(2),
            append(1, 3, 2)
                .prev_log(2, 2)
                .entries(vec![entry])
                .leader_commit(2),
        ]
    );
}

/// Reference: Figure 2, Leaders (§5.3): "If successful: update nextIndex and
/// matchIndex for follower." `matchIndex` is read from the accessor,
/// `nextIndex` from where the next AppendEntries starts. Answers can arrive
/// out of order: a late one does not move `matchIndex` back ("increases
/// monotonically", Figure 2, State).
#[test]
fn a_leader_advances_match_and_next_index_on_success() {
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    acknowledge(&mut r, &[2, 3]);
    assert_eq!(match_index_of(&r, 2), 2);

    r.propose("x".to_string()).unwrap();
    let ready = persist(&mut r);
    let to_n2 = sent_to(&ready, 2);
    assert!(
        matches!(
            to_n2[0].body,
            MessageBody::AppendEntries {
                prev_log_index: 2,
                ..
            }
        ),
        "nextIndex for n2 was 3: {to_n2:?}"
    );

    r.step(append_ok(2, 1, 2, 3));
    assert_eq!(match_index_of(&r, 2), 3);
    r.step(append_ok(2, 1, 2, 2));
    assert_eq!(match_index_of(&r, 2), 3, "a late answer moves nothing back");

    ticks(&mut r, HEARTBEAT_TICKS);
    let ready = persist(&mut r);
    assert_eq!(
        sent_to(&ready, 2),
        vec![&heartbeat(1, 2, 2).prev_log(3, 2).leader_commit(3)]
    );
}

/// Reference: Figure 2, Leaders (§5.3, §5.4): "If there exists an N such
/// that N > commitIndex, a majority of matchIndex[i] ≥ N, and log[N].term ==
/// currentTerm: set commitIndex = N." In a cluster of five, the leader and
/// one follower are not enough; a second follower makes three.
#[test]
fn a_leader_commits_once_a_majority_holds_an_entry_of_its_term() {
    let mut r = node(5, 1, &[1]);
    elect(&mut r);

    r.step(append_ok(2, 1, 2, 2));
    assert_eq!(r.commit_index(), 0);

    r.step(append_ok(3, 1, 2, 2));
    assert_eq!(r.commit_index(), 2);
    let ready = persist(&mut r);
    assert_eq!(
        ready.committed,
        vec![entries(1, &[1])[0].clone(), noop(2, 2)]
    );
}

/// The setup of the next test, shared with the `commit_earlier_term` bug
/// test: the leader of term 3 has log terms [1, 2, 3], entry 3 being its
/// no-op. n2 reports that it holds the log up to index 2 (an answer to a
/// request that carried entry 2 but not yet the no-op), so with the leader's
/// own copy, entry 2, of term 2, is on a majority of three.
fn old_term_entry_on_a_majority(bugs: BugSwitches) -> Raft {
    let mut r = node_with_bugs(3, 2, &[1, 2], bugs);
    elect(&mut r);
    assert_eq!(log_terms(&r), vec![1, 2, 3]);
    r.step(append_ok(2, 1, 3, 2));
    r
}

/// Reference: §5.4.2: "Raft never commits log entries from previous terms by
/// counting replicas. Only log entries from the leader's current term are
/// committed by counting replicas; once an entry from the current term has
/// been committed in this way, then all prior entries are committed
/// indirectly." (Figure 8 shows an old entry on a majority being erased.)
#[test]
fn an_entry_from_an_earlier_term_is_not_committed_by_counting_replicas() {
    let mut r = old_term_entry_on_a_majority(BugSwitches::default());
    assert_eq!(
        r.commit_index(),
        0,
        "entry 2 is on a majority but of term 2"
    );

    r.step(append_ok(2, 1, 3, 3));
    assert_eq!(r.commit_index(), 3);
    let ready = persist(&mut r);
    let mut committed = entries(1, &[1, 2]);
    committed.push(noop(3, 3));
    assert_eq!(ready.committed, committed, "entries 1 and 2 commit with 3");
}

/// Reference: Figure 2: persistent state is "updated on stable storage
/// before responding to RPCs", and a committed entry must be durable on a
/// majority (§5.4). So the leader counts its own copy of an entry only after
/// the driver says it is written (`advance`). Here n2 holds the no-op but the
/// leader's write is still pending: one copy of three commits nothing.
#[test]
fn a_leader_counts_its_own_copy_only_once_it_is_persisted() {
    let mut r = node(3, 1, &[1]);
    win_election(&mut r);
    let being_written = r.ready();
    assert_eq!(being_written.entries, vec![noop(2, 2)]);

    r.step(append_ok(2, 1, 2, 2));
    assert_eq!(r.commit_index(), 0);

    r.advance(&being_written);
    assert_eq!(r.commit_index(), 2);
}

/// Reference: §5.1: "The leader handles all client requests (if a client
/// contacts a follower, the follower redirects it to the leader)." A
/// follower refuses a proposal and names the leader it knows of, if any; a
/// candidate knows of none.
#[test]
fn a_proposal_at_a_non_leader_is_refused_with_the_known_leader() {
    let mut r = node(3, 0, &[]);
    let refused = NotLeader { leader: None };
    assert_eq!(r.propose("x".to_string()), Err(refused));

    r.step(heartbeat(2, 1, 1).prev_log(0, 0).leader_commit(0));
    let refused = NotLeader {
        leader: Some(id(2)),
    };
    assert_eq!(r.propose("x".to_string()), Err(refused));
    assert_eq!(r.log().last_index(), 0);

    let mut r = node(3, 0, &[]);
    campaign(&mut r);
    let refused = NotLeader { leader: None };
    assert_eq!(r.propose("x".to_string()), Err(refused));
}

// ===========================================================================
// The conflict hint (end of §5.3)
// ===========================================================================

/// A leader started from `leader_log` in term `term`, elected for `term + 1`
/// (so its no-op follows `leader_log`), that has sent n2 its first
/// AppendEntries and gets `refusal` back. Returns the AppendEntries it sends
/// n2 next.
fn leader_after_refusal(term: Term, leader_log: &[Term], refusal: Option<Conflict>) -> Message {
    let mut r = node(3, term, leader_log);
    elect(&mut r);
    ticks(&mut r, HEARTBEAT_TICKS);
    let first = persist(&mut r);
    let last = leader_log.len() as Index;
    let sent = [append(1, 2, term + 1)
        .prev_log(last, *leader_log.last().unwrap())
        .entries(vec![noop(last + 1, term + 1)])
        .leader_commit(0)];
    assert_eq!(sent_to(&first, 2), sent.iter().collect::<Vec<_>>());

    r.step(append_refused(2, 1, term + 1, refusal));
    let mut next = persist(&mut r).messages;
    assert_eq!(next.len(), 1, "{next:?}");
    next.remove(0)
}

/// Reference: §5.3: "when rejecting an AppendEntries request, the follower
/// can include the term of the conflicting entry and the first index it
/// stores for that term. With this information, the leader can decrement
/// nextIndex to bypass all of the conflicting entries in that term; one
/// AppendEntries RPC will be required for each term with conflicting
/// entries, rather than one RPC per entry."
///
/// Leader log [1, 1, 4, 4, 4] + no-op of term 6; the follower holds term 2
/// from index 3 on. The leader has no entry of term 2, so it starts again
/// at index 3: one step back over three entries, not three steps of one.
#[test]
fn a_leader_skips_a_whole_conflicting_term_it_does_not_have() {
    let next = leader_after_refusal(5, &[1, 1, 4, 4, 4], conflict(Some(2), 3));

    let mut expected = entries(3, &[4, 4, 4]);
    expected.push(noop(6, 6));
    assert_eq!(
        next,
        append(1, 2, 6)
            .prev_log(2, 1)
            .entries(expected)
            .leader_commit(0)
    );
}

/// Reference: §5.3, the conflict hint, when the leader also holds entries of
/// the conflicting term. Leader log [1, 1, 2, 2, 4, 4] + no-op of term 5;
/// the follower holds term 2 from index 3 to beyond index 6. The leader's
/// entries of term 2 end at index 4, so those (3 and 4) agree and it resumes
/// just after them, at 5.
#[test]
fn a_leader_resumes_after_its_own_last_entry_of_the_conflicting_term() {
    let next = leader_after_refusal(4, &[1, 1, 2, 2, 4, 4], conflict(Some(2), 3));

    let mut expected = entries(5, &[4, 4]);
    expected.push(noop(7, 5));
    assert_eq!(
        next,
        append(1, 2, 5)
            .prev_log(4, 2)
            .entries(expected)
            .leader_commit(0)
    );
}

/// Reference: §5.3, the conflict hint, when the follower's log is simply
/// shorter: it answers with its last index + 1 and the leader goes straight
/// there instead of walking back one entry per round trip.
#[test]
fn a_leader_jumps_to_the_end_of_a_short_follower_log() {
    let next = leader_after_refusal(1, &[1, 1, 1, 1, 1], conflict(None, 3));

    let mut expected = entries(3, &[1, 1, 1]);
    expected.push(noop(6, 2));
    assert_eq!(
        next,
        append(1, 2, 2)
            .prev_log(2, 1)
            .entries(expected)
            .leader_commit(0)
    );
}

// ===========================================================================
// Beyond Figure 2: how the leader sends to each follower (Probe, Replicate,
// Snapshot), within a bounded window
// ===========================================================================

/// Proposes `value` `n` times at leader `r` and returns how many
/// AppendEntries carrying entries went to n2 meanwhile.
fn stream_to_n2(r: &mut Raft, value: &str, n: usize) -> usize {
    let mut sent = 0;
    for _ in 0..n {
        r.propose(value.to_string()).expect("leader");
        let ready = persist(r);
        sent += sent_to(&ready, 2)
            .iter()
            .filter(|m| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty()))
            .count();
    }
    sent
}

/// Figure 2 sends AppendEntries one at a time; like every fast
/// implementation, the core instead streams new entries to a follower that
/// has accepted, without waiting for answers, but only so far: at most
/// `MAX_INFLIGHT_ENTRIES` entries unacknowledged. Then it waits, and an
/// answer opens the window again.
#[test]
fn a_leader_stops_streaming_to_a_follower_that_has_too_many_entries_in_flight() {
    let mut r = leader_with_committed_noop(3);
    let window = raft::core::MAX_INFLIGHT_ENTRIES as usize;
    // One entry per AppendEntries, each sent at once, up to the window.
    assert_eq!(stream_to_n2(&mut r, "x", window), window);
    assert_eq!(stream_to_n2(&mut r, "x", 10), 0, "the window is full");
    // n2 acknowledges everything sent so far: the window opens again, and
    // the entries that waited go out.
    r.step(append_ok(2, 1, 2, 2 + window as Index));
    let ready = persist(&mut r);
    assert!(!sent_to(&ready, 2).is_empty());
    assert_eq!(stream_to_n2(&mut r, "x", 1), 1);
}

/// The same window counted in bytes: with large values the entry count
/// alone would let gigabytes pile up for a slow follower, so the leader
/// also stops once about `MAX_INFLIGHT_BYTES` of entries are in flight.
#[test]
fn a_leader_stops_streaming_to_a_follower_that_has_too_many_bytes_in_flight() {
    let mut r = leader_with_committed_noop(3);
    let value = "v".repeat(raft::core::MAX_COMMAND_BYTES);
    let fit = raft::core::MAX_INFLIGHT_BYTES / value.len();
    assert_eq!(stream_to_n2(&mut r, &value, fit), fit);
    assert_eq!(stream_to_n2(&mut r, &value, 3), 0, "the window is full");
    r.step(append_ok(2, 1, 2, 2 + fit as Index));
    let ready = persist(&mut r);
    assert!(!sent_to(&ready, 2).is_empty(), "an answer opens it again");
}

/// The AppendEntries in `ready` to `peer`, each as its `prev_log_index` and
/// the indexes of the entries it carries.
fn appends_to(ready: &Ready, peer: u8) -> Vec<(Index, Vec<Index>)> {
    sent_to(ready, peer)
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                entries,
                ..
            } => Some((*prev_log_index, entries.iter().map(|e| e.index).collect())),
            _ => None,
        })
        .collect()
}

/// The offsets of the InstallSnapshot chunks in `ready` to `peer`.
fn chunks_to(ready: &Ready, peer: u8) -> Vec<u64> {
    sent_to(ready, peer)
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect()
}

/// `Probe` → `Replicate`. A new leader does not know where each follower's
/// log matches its own, so it probes: one AppendEntries, then nothing more
/// until the answer (a new entry waits). Once the follower accepts, the
/// leader streams: the waiting entry goes at once, and each new one as it
/// is proposed, without waiting for answers.
#[test]
fn a_leader_probes_a_follower_until_it_accepts_and_then_streams_to_it() {
    let mut r = node(3, 1, &[1]);
    let ready = elect(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(1, vec![2])], "the probe");
    r.propose("a".to_string()).expect("leader");
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![], "a probe is out");

    r.step(append_ok(2, 1, 2, 2));
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(2, vec![3])]);
    r.propose("b".to_string()).expect("leader");
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(3, vec![4])], "streamed");
}

/// `Replicate` → `Probe`. Figure 2: "If AppendEntries fails because of log
/// inconsistency: decrement nextIndex and retry". A refusal shows the leader
/// assumed too much: it retries at once from where the follower's log ends,
/// and probes again, one message at a time, until the follower accepts.
#[test]
fn a_refusal_makes_the_leader_probe_a_follower_it_was_streaming_to() {
    let mut r = leader_with_committed_noop(3);
    r.propose("a".to_string()).expect("leader");
    r.propose("b".to_string()).expect("leader");
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(2, vec![3, 4])]);

    // n2 missed that message and the next one reached it first.
    r.step(append_refused(2, 1, 2, conflict(None, 3)));
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(2, vec![3, 4])], "retried");
    r.propose("c".to_string()).expect("leader");
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![], "probing: c waits");

    r.step(append_ok(2, 1, 2, 4));
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(4, vec![5])], "streaming again");
}

/// `Replicate` → `Probe`, without an answer. Entries streamed to a
/// follower that acknowledges none of them for a whole heartbeat interval
/// were probably lost (streaming moved `next_index` past them as if they
/// had arrived): the leader sends them again from the first one the
/// follower is not known to hold.
#[test]
fn entries_nobody_acknowledges_for_a_heartbeat_interval_are_sent_again() {
    let mut r = leader_with_committed_noop(3);
    r.propose("a".to_string()).expect("leader");
    r.propose("b".to_string()).expect("leader");
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(2, vec![3, 4])]);

    ticks(&mut r, HEARTBEAT_TICKS);
    let ready = persist(&mut r);
    assert_eq!(appends_to(&ready, 2), vec![(4, vec![])], "a heartbeat");
    ticks(&mut r, HEARTBEAT_TICKS);
    let ready = persist(&mut r);
    assert_eq!(
        appends_to(&ready, 2),
        vec![(2, vec![3, 4])],
        "a heartbeat interval without an acknowledgement: sent again"
    );
}

/// `Snapshot` (§7). A follower that needs entries the leader has compacted
/// away gets the snapshot instead, one chunk at a time: the next chunk goes
/// when it takes one, a new entry does not resend the chunk that is out,
/// and a late refusal does not start the transfer over. Once it has
/// installed the snapshot, the leader probes from the entry after it.
#[test]
fn a_follower_behind_the_leaders_snapshot_is_sent_it_chunk_by_chunk() {
    let chunk = raft::core::snapshot::MAX_SNAPSHOT_CHUNK_BYTES as u64;
    let mut r = node(3, 1, &[1]);
    elect(&mut r);
    acknowledge(&mut r, &[3]);
    assert_eq!(r.last_applied(), 2);
    r.compact(2, "s".repeat(3 * chunk as usize))
        .expect("applied, so it can be compacted");

    ticks(&mut r, HEARTBEAT_TICKS);
    let ready = persist(&mut r);
    assert_eq!(chunks_to(&ready, 2), vec![0]);
    r.propose("a".to_string()).expect("leader");
    let ready = persist(&mut r);
    assert!(chunks_to(&ready, 2).is_empty(), "the first chunk is out");

    let chunk_answer = |next_offset, done| {
        let body = MessageBody::InstallSnapshotResponse {
            last_included_index: 2,
            next_offset,
            done,
            incarnation: 0,
        };
        message(2, 1, 2, body)
    };
    r.step(chunk_answer(chunk, false));
    assert_eq!(chunks_to(&persist(&mut r), 2), vec![chunk], "took it");
    r.step(append_refused(2, 1, 2, conflict(None, 1)));
    assert_eq!(
        chunks_to(&persist(&mut r), 2),
        vec![chunk],
        "a late refusal: the transfer goes on where it was"
    );

    r.step(chunk_answer(0, true));
    let ready = persist(&mut r);
    assert_eq!(match_index_of(&r, 2), 2);
    assert_eq!(
        appends_to(&ready, 2),
        vec![(2, vec![3])],
        "probing after it"
    );
}

// ===========================================================================
// Reads: ReadIndex (§8; dissertation §6.4)
// ===========================================================================

/// A leader of a cluster of `size`, in term 2, whose no-op (index 2) every
/// follower holds and which is therefore committed.
fn leader_with_committed_noop(size: u8) -> Raft {
    let mut r = node(size, 1, &[1]);
    elect(&mut r);
    let followers: Vec<u8> = (2..=size).collect();
    acknowledge(&mut r, &followers);
    assert_eq!(r.commit_index(), 2);
    r
}

/// The setup of the next test, shared with the `read_without_quorum` bug
/// test: a newly elected leader of three, its no-op not yet committed, is
/// asked for read 7.
fn read_at_a_new_leader(bugs: BugSwitches) -> (Raft, Ready) {
    let mut r = node_with_bugs(3, 1, &[1], bugs);
    elect(&mut r);
    r.read_index(7).unwrap();
    let ready = persist(&mut r);
    (r, ready)
}

/// Reference: dissertation §6.4, step 1: "If the leader has not yet marked
/// an entry from its current term committed, it waits until it has done so."
/// (§8: "a leader must have the latest information on which entries are
/// committed".) The read waits for the no-op; once it commits, the read
/// takes the commit index and a heartbeat round goes out for it (step 2 and
/// 3); an answer to that round from one follower makes a majority of three.
#[test]
fn a_read_waits_until_the_leader_has_committed_an_entry_of_its_term() {
    let (mut r, ready) = read_at_a_new_leader(BugSwitches::default());
    assert!(ready.reads.is_empty());
    ticks(&mut r, HEARTBEAT_TICKS);
    let ready = persist(&mut r);
    assert!(ready.reads.is_empty());
    for msg in &ready.messages {
        assert!(
            matches!(msg.body, MessageBody::AppendEntries { read_seq: 0, .. }),
            "no round for the read yet: {msg:?}"
        );
    }

    r.step(append_ok(2, 1, 2, 2));
    assert_eq!(r.commit_index(), 2);
    let ready = persist(&mut r);
    assert!(
        ready.reads.is_empty(),
        "committed, but the round is not answered"
    );
    // n3 has not answered yet, so its part of the round still carries the no-op.
    assert_eq!(
        ready.messages,
        vec![
            with_read_seq(heartbeat(1, 2, 2).prev_log(2, 2).leader_commit(2), 1),
            with_read_seq(
                append(1, 3, 2)
                    .prev_log(1, 1)
                    .entries(vec![noop(2, 2)])
                    .leader_commit(2),
                1
            ),
        ]
    );

    r.step(with_read_seq(append_ok(3, 1, 2, 2), 1));
    let ready = persist(&mut r);
    assert_eq!(ready.reads, vec![(7, ReadOutcome::Ready { index: 2 })]);
}

/// Reference: dissertation §6.4, step 3: "the leader needs to make sure it
/// hasn't been superseded by a newer leader of which it is unaware. It
/// issues a new round of heartbeats and waits for their acknowledgments from
/// a majority of the cluster." An answer to an earlier round proves nothing
/// about the time after the read arrived; in a cluster of five the leader
/// needs two answers to the new round.
#[test]
fn a_read_completes_only_when_a_majority_answers_a_round_sent_after_it() {
    let mut r = leader_with_committed_noop(5);

    r.read_index(1).unwrap();
    let ready = persist(&mut r);
    assert!(ready.reads.is_empty());
    let round: Vec<Message> = (2..=5)
        .map(|peer| with_read_seq(heartbeat(1, peer, 2).prev_log(2, 2).leader_commit(2), 1))
        .collect();
    assert_eq!(ready.messages, round);

    r.step(with_read_seq(append_ok(2, 1, 2, 2), 0));
    r.step(with_read_seq(append_ok(3, 1, 2, 2), 0));
    assert!(
        persist(&mut r).reads.is_empty(),
        "answers to an older round"
    );

    r.step(with_read_seq(append_ok(2, 1, 2, 2), 1));
    assert!(
        persist(&mut r).reads.is_empty(),
        "two of five is not a majority"
    );

    r.step(with_read_seq(append_ok(4, 1, 2, 2), 1));
    let ready = persist(&mut r);
    assert_eq!(ready.reads, vec![(1, ReadOutcome::Ready { index: 2 })]);
}

/// Reference: dissertation §6.4: "the leader can amortize the cost of
/// confirming its leadership: it can use a single round of heartbeats for
/// any number of read-only queries that it has accumulated." Two reads
/// taken together share one round; a read that comes later needs a round of
/// its own.
#[test]
fn reads_that_arrive_together_share_one_heartbeat_round() {
    let mut r = leader_with_committed_noop(3);

    r.read_index(1).unwrap();
    r.read_index(2).unwrap();
    let ready = persist(&mut r);
    assert_eq!(ready.messages.len(), 2, "one heartbeat per follower");
    r.step(with_read_seq(append_ok(2, 1, 2, 2), 1));
    let ready = persist(&mut r);
    let done = ReadOutcome::Ready { index: 2 };
    assert_eq!(ready.reads, vec![(1, done.clone()), (2, done.clone())]);

    r.read_index(3).unwrap();
    persist(&mut r);
    r.step(with_read_seq(append_ok(3, 1, 2, 2), 1));
    assert!(
        persist(&mut r).reads.is_empty(),
        "round 1 was before read 3"
    );
    r.step(with_read_seq(append_ok(3, 1, 2, 2), 2));
    assert_eq!(persist(&mut r).reads, vec![(3, done)]);
}

/// Reference: dissertation §6.4: a read is answered only while the leader
/// is sure it leads. A leader that steps down cannot confirm anything, so
/// every read it holds fails (the client retries at the new leader): reads
/// waiting for the no-op, reads whose round is out, and reads not yet sent.
#[test]
fn a_leader_that_steps_down_fails_its_pending_reads() {
    let (mut r, _) = read_at_a_new_leader(BugSwitches::default());
    r.step(request_vote(2, 1, 3, 9, 9));
    let ready = persist(&mut r);
    assert_eq!(ready.reads, vec![(7, ReadOutcome::Failed)]);

    let mut r = leader_with_committed_noop(3);
    r.read_index(1).unwrap();
    persist(&mut r);
    r.read_index(2).unwrap();
    r.step(heartbeat(3, 1, 3).prev_log(0, 0).leader_commit(0));
    assert_eq!(r.role(), RoleKind::Follower);
    let mut reads = persist(&mut r).reads;
    reads.sort_by_key(|(id, _)| *id);
    assert_eq!(
        reads,
        vec![(1, ReadOutcome::Failed), (2, ReadOutcome::Failed)]
    );
}

/// Reference: §8: "Read-only operations can be handled without writing
/// anything into the log", but by the leader only. A follower refuses a read
/// and names the leader it knows of.
#[test]
fn a_read_at_a_follower_is_refused_with_the_known_leader() {
    let mut r = node(3, 0, &[]);
    r.step(heartbeat(2, 1, 1).prev_log(0, 0).leader_commit(0));

    let refused = NotLeader {
        leader: Some(id(2)),
    };
    assert_eq!(r.read_index(1), Err(refused));
    assert!(persist(&mut r).reads.is_empty());
}

// ===========================================================================
// Persist before send
// ===========================================================================

/// Reference: Figure 2, "Persistent state on all servers (Updated on stable
/// storage before responding to RPCs)". The core cannot write to disk, so it
/// must hand the state out no later than the answer that depends on it: the
/// vote in the same Ready as the RequestVoteResponse that grants it, and the
/// entries in the same Ready as the AppendEntriesResponse that acknowledges
/// them. A driver that persists a Ready before sending its messages is then
/// safe: a crash can never leave a granted vote or an acknowledged entry
/// forgotten.
#[test]
fn state_to_persist_comes_in_the_same_ready_as_the_answer_relying_on_it() {
    // Already in term 1, so the vote is the only change to the hard state.
    let mut r = node(3, 1, &[]);
    r.step(request_vote(2, 1, 1, 0, 0));
    let ready = r.ready();
    let voted = HardState {
        current_term: 1,
        voted_for: Some(id(2)),
    };
    assert_eq!(ready.hard_state, Some(voted));
    assert_eq!(ready.messages, vec![vote(1, 2, 1, true)]);
    r.advance(&ready);

    r.step(
        append(2, 1, 1)
            .prev_log(0, 0)
            .entries(entries(1, &[1, 1]))
            .leader_commit(0),
    );
    let ready = r.ready();
    assert_eq!(ready.entries, entries(1, &[1, 1]));
    assert_eq!(ready.messages, vec![append_ok(1, 2, 1, 2)]);
}

// ===========================================================================
// The checks can fail: each bug switch breaks one rule, and the test for
// that rule sees it
// ===========================================================================

/// `commit_earlier_term` breaks §5.4.2; the setup of
/// `an_entry_from_an_earlier_term_is_not_committed_by_counting_replicas`
/// then commits the term-2 entry by counting its replicas.
#[test]
fn bug_switch_commit_earlier_term_is_caught() {
    let bugs = BugSwitches {
        commit_earlier_term: true,
        ..BugSwitches::default()
    };
    let r = old_term_entry_on_a_majority(bugs);
    assert_eq!(r.commit_index(), 2, "the bug commits an old-term entry");
}

/// `vote_without_log_check` breaks §5.4.1; the cases of
/// `request_vote_is_refused_to_a_candidate_whose_log_is_behind` then get a
/// vote.
#[test]
fn bug_switch_vote_without_log_check_is_caught() {
    let bugs = BugSwitches {
        vote_without_log_check: true,
        ..BugSwitches::default()
    };
    for (last_log_index, last_log_term) in [(3, 2), (9, 1), (0, 0)] {
        let answer = ask_for_vote(bugs, last_log_index, last_log_term);
        assert_eq!(answer, vote(1, 2, 3, true), "the bug grants the vote");
    }
}

/// `keep_conflicting_suffix` breaks AppendEntries receiver rule 3; the setup
/// of `append_entries_deletes_a_conflicting_entry_and_all_that_follow_it`
/// then keeps entries 4 and 5 of term 2 after the new entry of term 3, a log
/// whose terms go down, which no leader ever had.
#[test]
fn bug_switch_keep_conflicting_suffix_is_caught() {
    let bugs = BugSwitches {
        keep_conflicting_suffix: true,
        ..BugSwitches::default()
    };
    let (r, _) = overwrite_a_conflicting_entry(bugs);
    assert_eq!(
        log_terms(&r),
        vec![1, 1, 3, 2, 2],
        "the bug keeps the suffix"
    );
}

/// `read_without_quorum` breaks dissertation §6.4; the setup of
/// `a_read_waits_until_the_leader_has_committed_an_entry_of_its_term` then
/// answers the read at once, with neither a committed entry of the term nor
/// a heartbeat round.
#[test]
fn bug_switch_read_without_quorum_is_caught() {
    let bugs = BugSwitches {
        read_without_quorum: true,
        ..BugSwitches::default()
    };
    let (_, ready) = read_at_a_new_leader(bugs);
    assert_eq!(ready.reads, vec![(7, ReadOutcome::Ready { index: 0 })]);
    let round_sent = ready
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::AppendEntries { read_seq, .. } if read_seq > 0));
    assert!(!round_sent, "the bug answers without asking anyone");
}

// ----- Robustness -------------------------------------------------------

/// Not a rule of the paper, but of any node that runs for real: an
/// AppendEntries whose entries do not follow `prev_log_index` one by one,
/// whose terms go down, or whose terms exceed the sender's term, can only
/// come from a buggy or hostile peer. It is dropped whole: the log, term and
/// commit index stay as they were, and nothing is answered.
#[test]
fn a_malformed_append_entries_is_dropped() {
    let malformed = [
        ("an index gap", entries(4, &[2])),
        (
            "an index repeated",
            entries(3, &[1, 1])
                .into_iter()
                .chain(entries(3, &[1]))
                .collect(),
        ),
        ("terms going down", entries(3, &[2, 1])),
        ("a term above the sender's", entries(3, &[5])),
    ];
    for (what, list) in malformed {
        let mut r = node(3, 2, &[1, 1]);
        r.step(
            append(2, 1, 2)
                .prev_log(2, 1)
                .entries(list)
                .leader_commit(3),
        );
        let ready = persist(&mut r);
        assert_eq!(log_terms(&r), vec![1, 1], "{what}: the log must not change");
        assert_eq!(
            r.commit_index(),
            0,
            "{what}: the commit index must not move"
        );
        assert!(ready.messages.is_empty(), "{what}: no answer");
        assert!(ready.entries.is_empty(), "{what}: nothing to persist");
    }
    // The same request, well formed, is taken.
    let mut r = node(3, 2, &[1, 1]);
    r.step(
        append(2, 1, 2)
            .prev_log(2, 1)
            .entries(entries(3, &[2]))
            .leader_commit(3),
    );
    assert_eq!(log_terms(&r), vec![1, 1, 2]);
}
