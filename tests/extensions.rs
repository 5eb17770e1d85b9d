//! The dissertation's extensions to Raft that the core implements, one test
//! per rule, against a single core: PreVote (§9.6), CheckQuorum (§6.2),
//! leader stickiness (§4.2.3) and leadership transfer (§3.10), including the
//! hand-over of a leader that removes itself (§4.2.2).
//!
//! The shape is that of `tests/paper.rs`: each test builds one node, `n1`,
//! gives it ticks and messages through the public API, and checks what comes
//! back in its `Ready` and the state it is left in. The other members (`n2`,
//! `n3`, ...) exist only as the messages a test writes on their behalf.
//!
//! Two things differ from `tests/paper.rs`:
//!
//! - Every test says which extensions its node runs with: `pre_vote` and
//!   `check_quorum` are both spelled out, never left to `Config::new`.
//! - The election timeout is a real range, `ELECTION_MIN..=ELECTION_MAX`,
//!   because these rules tell its two ends apart: leases and CheckQuorum run
//!   on the minimum, a leadership transfer gives up after the maximum. A
//!   follower draws its timeout from the seeded RNG, so no test counts to a
//!   follower's timeout; it ticks until the timer fires (`time_out`). Leaders
//!   keep no random timer, so counting their ticks is exact.
//!
//! The sections: PreVote; the same node with
//! PreVote off (the "PreVote off" switch: term inflation becomes visible);
//! CheckQuorum, and the leader that believes it leads forever without it;
//! leader stickiness; leadership transfer.
//!
//! Quotations are from Ongaro's dissertation, "Consensus: Bridging Theory
//! and Practice" (2014).

mod core_harness;

use core_harness::{
    acknowledge, append, append_ok, append_refused, entries, heartbeat, id, message, noop, persist,
    request_vote, ticks, vote, with_read_seq, HEARTBEAT_TICKS, SEED,
};
use raft::core::{
    Config, Event, NotLeader, Raft, ReadOutcome, Ready, RoleKind, StepDownReason, TransferError,
};
use raft::message::{Entry, EntryData, HardState, Index, Message, MessageBody, Term, MAX_TERM};

// ===========================================================================
// Helpers
// ===========================================================================

/// The shortest election timeout a node may draw. A follower that heard from
/// its leader less than this long ago still trusts it (§4.2.3), and a leader
/// checks its quorum this often (§6.2).
const ELECTION_MIN: u64 = 10;
/// The longest election timeout a node may draw. A leadership transfer that
/// has not finished after this long is abandoned (§3.10).
const ELECTION_MAX: u64 = 20;

/// Which of the dissertation's extensions a node runs with.
#[derive(Clone, Copy, Debug)]
struct Extensions {
    pre_vote: bool,
    check_quorum: bool,
}

/// The configuration of `n1` in the cluster `n1..=n{size}`.
fn config(size: u8, ext: Extensions) -> Config {
    let mut config = Config::new(id(1), (1..=size).map(id).collect());
    config.election_timeout_ticks = (ELECTION_MIN, ELECTION_MAX);
    config.heartbeat_ticks = HEARTBEAT_TICKS;
    config.pre_vote = ext.pre_vote;
    config.check_quorum = ext.check_quorum;
    config
}

/// `n1` of `n1..=n{size}`, started from stable storage that holds
/// `hard_state` and a log whose entries have `log_terms`.
fn restarted(size: u8, hard_state: HardState, log_terms: &[Term], ext: Extensions) -> Raft {
    Raft::new(config(size, ext), hard_state, entries(1, log_terms), SEED)
}

/// [`restarted`] in `term`, with no vote.
fn node(size: u8, term: Term, log_terms: &[Term], ext: Extensions) -> Raft {
    let hard_state = HardState {
        current_term: term,
        voted_for: None,
    };
    restarted(size, hard_state, log_terms, ext)
}

/// Ticks a node that does not lead until its election timer fires (within
/// `ELECTION_MAX` ticks); returns what the timeout produced, persisted.
fn time_out(r: &mut Raft) -> Ready {
    ticks_to_time_out(r);
    persist(r)
}

/// Ticks a node that does not lead until its election timer fires, and
/// returns how many ticks that took. The Ready is left to the caller.
fn ticks_to_time_out(r: &mut Raft) -> u64 {
    assert!(
        !r.has_ready(),
        "take the Ready before waiting for a timeout"
    );
    assert_ne!(r.role(), RoleKind::Leader);
    for waited in 1..=ELECTION_MAX {
        r.tick();
        if r.has_ready() {
            return waited;
        }
    }
    panic!("no election timeout within {ELECTION_MAX} ticks");
}

/// Makes the node leader the ordinary way: its timer fires, every peer
/// grants its pre-vote (if it runs PreVote), then its vote. Returns the new
/// leader's Ready, persisted; its AppendEntries are not answered.
fn lead(r: &mut Raft) -> Ready {
    time_out(r);
    let size = r.config().voters.len() as u8;
    let proposed = r.current_term() + 1;
    for peer in 2..=size {
        if r.role() != RoleKind::PreCandidate {
            break;
        }
        r.step(pre_vote_response(peer, 1, proposed, true));
    }
    let term = r.current_term();
    for peer in 2..=size {
        if r.role() != RoleKind::Candidate {
            break;
        }
        r.step(vote(peer, 1, term, true));
    }
    assert_eq!(r.role(), RoleKind::Leader);
    persist(r)
}

/// Lets `n` ticks pass at a leader. The followers in `answering` are
/// reachable and answer every AppendEntries at once, echoing its read
/// sequence, as healthy followers would; the others are cut off. Returns
/// everything the leader handed out, gathered in one `Ready`.
fn run_leader(r: &mut Raft, n: u64, answering: &[u8]) -> Ready {
    let mut all = Ready::default();
    for _ in 0..n {
        r.tick();
        let mut ready = persist(r);
        loop {
            let answers: Vec<Message> = ready
                .messages
                .iter()
                .filter(|m| answering.iter().any(|&peer| m.to == id(peer)))
                .filter_map(answer_append)
                .collect();
            all.messages.append(&mut ready.messages);
            all.events.append(&mut ready.events);
            all.reads.append(&mut ready.reads);
            all.committed.append(&mut ready.committed);
            if answers.is_empty() {
                break;
            }
            for answer in answers {
                r.step(answer);
            }
            ready = persist(r);
        }
    }
    all
}

/// A follower's acceptance of the AppendEntries `msg` (None for any other
/// message): it holds everything up to the last entry `msg` carried.
fn answer_append(msg: &Message) -> Option<Message> {
    let MessageBody::AppendEntries {
        prev_log_index,
        entries,
        read_seq,
        ..
    } = &msg.body
    else {
        return None;
    };
    let follower = msg.to.as_str()[1..].parse().expect("peers are named nN");
    let match_index = prev_log_index + entries.len() as Index;
    Some(with_read_seq(
        append_ok(follower, 1, msg.term, match_index),
        *read_seq,
    ))
}

/// `n1` of three, in term 2 with log [1, 2], that has just had a heartbeat
/// from `n2`, the leader of term 2.
fn follower_of_n2(ext: Extensions) -> Raft {
    let mut r = node(3, 2, &[1, 2], ext);
    r.step(heartbeat(2, 1, 2).prev_log(2, 2).leader_commit(0));
    assert_eq!(persist(&mut r).messages, vec![append_ok(1, 2, 2, 2)]);
    assert_eq!(r.leader(), Some(&id(2)));
    r
}

/// `n1` as leader of three in term 2, log [1, 2] (its no-op at 2), which
/// both followers have acknowledged, so it is committed.
fn leader_of_three(ext: Extensions) -> Raft {
    let mut r = node(3, 1, &[1], ext);
    lead(&mut r);
    acknowledge(&mut r, &[2, 3]);
    assert_eq!((r.current_term(), r.commit_index()), (2, 2));
    r
}

/// A command entry, as a client's `set` would create it.
fn command(index: Index, term: Term, value: &str) -> Entry {
    Entry {
        term,
        index,
        data: EntryData::Command(value.to_string()),
    }
}

/// PreVote: `term` is the term the sender would stand in.
fn pre_vote(from: u8, to: u8, term: Term, last_log_index: Index, last_log_term: Term) -> Message {
    let body = MessageBody::PreVote {
        last_log_index,
        last_log_term,
    };
    message(from, to, term, body)
}

/// The answer to a PreVote: if granted, `term` is the term asked about; if
/// refused, the refuser's own term.
fn pre_vote_response(from: u8, to: u8, term: Term, vote_granted: bool) -> Message {
    message(
        from,
        to,
        term,
        MessageBody::PreVoteResponse {
            vote_granted,
            incarnation: 0,
        },
    )
}

/// RequestVote of an election that a leadership transfer started.
fn transfer_vote(
    from: u8,
    to: u8,
    term: Term,
    last_log_index: Index,
    last_log_term: Term,
) -> Message {
    let mut msg = request_vote(from, to, term, last_log_index, last_log_term);
    if let MessageBody::RequestVote {
        leadership_transfer,
        ..
    } = &mut msg.body
    {
        *leadership_transfer = true;
    }
    msg
}

fn timeout_now(from: u8, to: u8, term: Term) -> Message {
    message(from, to, term, MessageBody::TimeoutNow)
}

fn is_timeout_now(msg: &Message) -> bool {
    msg.body == MessageBody::TimeoutNow
}

// ===========================================================================
// PreVote (§9.6)
// ===========================================================================

/// Reference: dissertation §9.6, PreVote: a server whose election timer
/// fires first asks whether it could win, without changing anything. It
/// becomes a pre-candidate and sends every other server a PreVote for the
/// term it would stand in (its term + 1), with its last log index and term.
/// Its own term and vote stay as they were, so the Ready holds nothing to
/// persist and no election is announced.
#[test]
fn an_election_timeout_makes_a_pre_candidate_that_keeps_its_term_and_vote() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let voted = HardState {
        current_term: 2,
        voted_for: Some(id(3)),
    };
    let mut r = restarted(5, voted.clone(), &[1, 2, 2], ext);

    let ready = time_out(&mut r);

    assert_eq!(r.role(), RoleKind::PreCandidate);
    assert_eq!(r.hard_state(), voted);
    assert_eq!(
        ready.hard_state, None,
        "nothing changed that must be durable"
    );
    assert!(ready.entries.is_empty());
    assert!(ready.events.is_empty(), "no election has started");
    let asks: Vec<Message> = (2..=5).map(|peer| pre_vote(1, peer, 3, 3, 2)).collect();
    assert_eq!(ready.messages, asks);
}

/// Reference: dissertation §9.6: only once a majority of the cluster (itself
/// included) says it would vote for it does a pre-candidate raise its term
/// and start a normal election. In a cluster of five that is itself and two
/// others; the same server granting twice is still one. Then everything
/// a new candidate does happens (Figure 2): term + 1, a vote for itself to
/// persist, RequestVote to everyone, and the election is announced.
#[test]
fn a_majority_of_granted_pre_votes_starts_a_real_election() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(5, 2, &[1, 2, 2], ext);
    time_out(&mut r);

    r.step(pre_vote_response(2, 1, 3, true));
    r.step(pre_vote_response(2, 1, 3, true));
    assert_eq!(r.role(), RoleKind::PreCandidate, "two of five");
    assert!(!r.has_ready());

    r.step(pre_vote_response(3, 1, 3, true));

    assert_eq!(r.role(), RoleKind::Candidate);
    assert_eq!(r.current_term(), 3);
    let ready = persist(&mut r);
    let voted = HardState {
        current_term: 3,
        voted_for: Some(id(1)),
    };
    assert_eq!(ready.hard_state, Some(voted));
    let requests: Vec<Message> = (2..=5).map(|peer| request_vote(1, peer, 3, 3, 2)).collect();
    assert_eq!(ready.messages, requests);
    assert_eq!(ready.events, vec![Event::ElectionStarted { term: 3 }]);
}

/// Reference: dissertation §9.6: only granted pre-votes count towards the
/// majority. A refusal carries the refuser's own term. One no newer than the
/// pre-candidate's (here its own term, and an older one) teaches nothing: the
/// node stays a pre-candidate in its term; in a cluster of three a single
/// counted answer would have made it a candidate. One that carries exactly
/// the term asked about means the refuser is already in that term: the
/// pre-candidate follows it there as a follower, and does not stand.
#[test]
fn refused_pre_votes_do_not_count() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(3, 2, &[1, 2, 2], ext);
    time_out(&mut r);

    r.step(pre_vote_response(2, 1, 2, false));
    r.step(pre_vote_response(3, 1, 1, false));

    assert_eq!(r.role(), RoleKind::PreCandidate);
    assert_eq!(r.current_term(), 2);
    assert!(persist(&mut r).is_empty());
    r.step(pre_vote_response(3, 1, 3, true));
    assert_eq!(
        r.role(),
        RoleKind::Candidate,
        "one grant makes two of three"
    );

    let mut r = node(3, 2, &[1, 2, 2], ext);
    time_out(&mut r);
    r.step(pre_vote_response(2, 1, 3, false));
    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.current_term(), 3);
    assert_eq!(r.voted_for(), None);
}

/// Reference: dissertation §9.6: a pre-vote is a promise about one term, the
/// one after the pre-candidate's current term. A grant for any other term
/// (a late answer to a pre-vote of an earlier round, or one for a term we
/// never asked about) does not count, and a grant never changes our term.
#[test]
fn a_pre_vote_granted_for_another_term_does_not_count() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(3, 2, &[1, 2, 2], ext);
    time_out(&mut r);

    r.step(pre_vote_response(2, 1, 2, true));
    r.step(pre_vote_response(3, 1, 4, true));

    assert_eq!(r.role(), RoleKind::PreCandidate);
    assert_eq!(r.current_term(), 2);
    assert!(persist(&mut r).is_empty());

    r.step(pre_vote_response(2, 1, 3, true));
    assert_eq!(r.role(), RoleKind::Candidate);
    assert_eq!(r.current_term(), 3);
}

/// Reference: dissertation §9.6 with Figure 2, All Servers, rule 2: a
/// refusal carries the refuser's own term. If that term is newer than the
/// pre-candidate's, the pre-candidate adopts it (with no vote, persisted)
/// and becomes a follower: it was behind and could not have won. Grants
/// that arrive afterwards count for nothing.
#[test]
fn a_pre_vote_refused_with_a_newer_term_makes_the_pre_candidate_a_follower_in_it() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(3, 2, &[1, 2, 2], ext);
    time_out(&mut r);

    r.step(pre_vote_response(2, 1, 5, false));

    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.current_term(), 5);
    assert_eq!(r.voted_for(), None);
    let ready = persist(&mut r);
    let adopted = HardState {
        current_term: 5,
        voted_for: None,
    };
    assert_eq!(ready.hard_state, Some(adopted));
    assert!(ready.messages.is_empty());

    r.step(pre_vote_response(3, 1, 3, true));
    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.current_term(), 5);
}

/// A voter in term 2 with log [1, 2, 2], which voted for n3 in term 2 and
/// has heard from no leader, gets a PreVote from n2 for `proposed_term` with
/// the log position given. Checks that answering changed nothing about the
/// voter, and returns the answer.
fn ask_for_pre_vote(proposed_term: Term, last_log_index: Index, last_log_term: Term) -> Message {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let voted = HardState {
        current_term: 2,
        voted_for: Some(id(3)),
    };
    let mut r = restarted(3, voted.clone(), &[1, 2, 2], ext);

    r.step(pre_vote(2, 1, proposed_term, last_log_index, last_log_term));

    let mut ready = persist(&mut r);
    assert_eq!(ready.hard_state, None, "a pre-vote is never persisted");
    assert_eq!(r.hard_state(), voted, "term and vote are untouched");
    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(ready.messages.len(), 1, "{:?}", ready.messages);
    ready.messages.remove(0)
}

/// Reference: dissertation §9.6: a server grants a pre-vote if it would
/// grant the vote in a real election of that term: the proposed term is
/// newer than its own and the pre-candidate's log is at least as up-to-date
/// as its own (§5.4.1). Its vote in its current term is no obstacle, since
/// the proposal is for a later term. A grant carries the proposed term; a
/// refusal carries the voter's own term.
#[test]
fn a_pre_vote_is_granted_only_for_a_newer_term_and_an_up_to_date_log() {
    for (case, term, last_log_index, last_log_term) in [
        ("the next term, the same log", 3, 3, 2),
        ("the same last term and a longer log", 3, 4, 2),
        ("a later last term, even with a shorter log", 3, 2, 3),
        ("a term far ahead", 9, 3, 2),
    ] {
        let answer = ask_for_pre_vote(term, last_log_index, last_log_term);
        assert_eq!(answer, pre_vote_response(1, 2, term, true), "{case}");
    }
    for (case, term, last_log_index, last_log_term) in [
        ("the voter's own term is not newer", 2, 3, 2),
        ("an older term", 1, 3, 2),
        ("the same last term and a shorter log", 3, 2, 2),
        ("an earlier last term, even with a longer log", 3, 9, 1),
    ] {
        let answer = ask_for_pre_vote(term, last_log_index, last_log_term);
        assert_eq!(answer, pre_vote_response(1, 2, 2, false), "{case}");
    }
}

/// Reference: dissertation §9.6: granting a pre-vote is not granting a vote
/// (Figure 2, Followers), so it does not restart the voter's election timer:
/// the voter times out at the very tick an identical node that never saw the
/// PreVote does. (A pre-candidate that can win needs no help; one that
/// cannot must not hold back servers that could.)
#[test]
fn granting_a_pre_vote_does_not_reset_the_election_timer() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let twin = || node(3, 2, &[1, 2, 2], ext);
    let fires_after = ticks_to_time_out(&mut twin());

    let mut r = twin();
    ticks(&mut r, fires_after - 1);
    r.step(pre_vote(2, 1, 3, 3, 2));
    assert_eq!(
        persist(&mut r).messages,
        vec![pre_vote_response(1, 2, 3, true)]
    );

    r.tick();
    assert_eq!(r.role(), RoleKind::PreCandidate, "the timer ran on");
}

/// Reference: dissertation §9.6 with §4.2.3: PreVote alone does not stop a
/// server with a good log from disrupting a healthy leader, so a server that
/// has heard from a leader within the minimum election timeout does not
/// grant pre-votes. The core ignores such a PreVote (no answer, nothing
/// changes), with or without CheckQuorum. Once the minimum election timeout
/// has passed without the leader, the same PreVote is granted.
#[test]
fn a_follower_that_heard_from_a_leader_recently_ignores_pre_votes() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: false,
    };
    let mut r = follower_of_n2(ext);

    ticks(&mut r, ELECTION_MIN - 1);
    r.step(pre_vote(3, 1, 3, 2, 2));
    assert!(persist(&mut r).is_empty(), "ignored: no answer");
    assert_eq!(r.current_term(), 2);

    r.tick();
    assert_eq!(
        r.leader(),
        Some(&id(2)),
        "precondition: this seed draws a timeout above the minimum"
    );
    r.step(pre_vote(3, 1, 3, 2, 2));
    assert_eq!(
        persist(&mut r).messages,
        vec![pre_vote_response(1, 3, 3, true)]
    );
}

/// Reference: dissertation §9.6 with §4.2.3, at the leader: a leader is the
/// surest sign of a live leader, so it ignores pre-votes for the next term
/// (CheckQuorum, not a pre-vote, is what makes it step down).
#[test]
fn a_leader_ignores_pre_votes() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: false,
    };
    let mut r = leader_of_three(ext);

    r.step(pre_vote(2, 1, 3, 2, 2));

    assert!(persist(&mut r).is_empty());
    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.current_term(), 2);
}

/// Reference: dissertation §9.6: a pre-candidate has not left its term, so
/// the leader of that term is still a leader it must follow: an
/// AppendEntries of its term makes it a follower again (Figure 2,
/// Candidates, rule 3), with nothing to persist, and pre-votes that arrive
/// afterwards count for nothing.
#[test]
fn a_pre_candidate_that_hears_from_the_leader_of_its_term_follows_it() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(3, 2, &[1, 2], ext);
    time_out(&mut r);
    assert_eq!(r.role(), RoleKind::PreCandidate);

    r.step(heartbeat(2, 1, 2).prev_log(2, 2).leader_commit(0));

    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.leader(), Some(&id(2)));
    let ready = persist(&mut r);
    assert_eq!(ready.hard_state, None);
    assert_eq!(ready.messages, vec![append_ok(1, 2, 2, 2)]);

    r.step(pre_vote_response(3, 1, 3, true));
    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.current_term(), 2);
}

/// Reference: dissertation §9.6 with Figure 2, Followers: a pre-candidate
/// has not left its term; it is a follower asking a question. If it grants
/// a real vote in that term, it owes the candidate what any follower that
/// grants a vote owes it: not to stand itself until a whole election timeout
/// passes without hearing from a leader or granting a vote. So a late grant
/// for the pre-vote round it began before voting must not make it a
/// candidate there and then, against the candidate it has just voted for.
#[test]
fn a_pre_candidate_that_grants_a_vote_does_not_stand_against_that_candidate() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(3, 2, &[1, 2], ext);
    time_out(&mut r);
    assert_eq!(r.role(), RoleKind::PreCandidate);

    // n2 stands in term 2, in which n1 has not voted, with a log like n1's.
    r.step(request_vote(2, 1, 2, 2, 2));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 2, true)]);

    // n3's answer to the pre-vote n1 sent before it voted.
    r.step(pre_vote_response(3, 1, 3, true));

    assert_ne!(r.role(), RoleKind::Candidate);
    assert_eq!(
        r.current_term(),
        2,
        "n1 stood against the candidate it voted for"
    );
    assert_eq!(r.voted_for(), Some(&id(2)));
    assert!(persist(&mut r).messages.is_empty());
}

/// Reference: dissertation §9.6 and Figure 2, Candidates: a cluster of one
/// is its own majority at every step, so with PreVote it still elects itself
/// when its timer fires: pre-vote won, election started and won in one go.
/// With CheckQuorum it keeps leading, since it always hears from itself.
#[test]
fn a_single_node_with_pre_vote_elects_itself() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(1, 0, &[], ext);

    let ready = time_out(&mut r);

    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.current_term(), 1);
    let voted = HardState {
        current_term: 1,
        voted_for: Some(id(1)),
    };
    assert_eq!(ready.hard_state, Some(voted));
    assert_eq!(ready.entries, vec![noop(1, 1)]);
    assert!(ready.messages.is_empty());
    assert_eq!(
        ready.events,
        vec![
            Event::ElectionStarted { term: 1 },
            Event::BecameLeader { term: 1 }
        ]
    );

    let run = run_leader(&mut r, 10 * ELECTION_MAX, &[]);
    assert!(run.events.is_empty(), "{:?}", run.events);
    assert_eq!(r.role(), RoleKind::Leader);
}

// ===========================================================================
// The "PreVote off" switch: what PreVote prevents (§9.6)
// ===========================================================================

/// `n1` of three, in term 2 with log [1, 2], cut off from the others, whose
/// election timer fires `timeouts` times. Each round restarts the timer with
/// a fresh timeout from the configured range (§5.2), whether the round was a
/// PreVote or an election. Returns the node and the Ready of each timeout.
fn isolated(pre_vote: bool, timeouts: usize) -> (Raft, Vec<Ready>) {
    let ext = Extensions {
        pre_vote,
        check_quorum: true,
    };
    let mut r = node(3, 2, &[1, 2], ext);
    let rounds = (0..timeouts)
        .map(|_| {
            let waited = ticks_to_time_out(&mut r);
            assert!(
                (ELECTION_MIN..=ELECTION_MAX).contains(&waited),
                "waited {waited} ticks for a timeout"
            );
            persist(&mut r)
        })
        .collect();
    (r, rounds)
}

/// Reference: dissertation §9.6, with PreVote off (Figure 2 as written):
/// every timeout of a node that cannot reach anyone is a real election, so
/// its term grows by one per timeout, each time persisted with a vote for
/// itself: five timeouts take it from term 2 to term 7. When the partition
/// heals, its answer to the healthy leader of term 2 carries term 7, which
/// (All Servers, rule 2) makes that leader step down for nothing.
#[test]
fn without_pre_vote_an_isolated_node_raises_its_term_at_every_timeout() {
    let (mut r, rounds) = isolated(false, 5);

    for (term, ready) in (3..).zip(&rounds) {
        let voted = HardState {
            current_term: term,
            voted_for: Some(id(1)),
        };
        assert_eq!(ready.hard_state, Some(voted));
        assert_eq!(
            ready.messages,
            vec![
                request_vote(1, 2, term, 2, 2),
                request_vote(1, 3, term, 2, 2)
            ]
        );
    }
    assert_eq!(r.current_term(), 7);

    r.step(heartbeat(2, 1, 2).prev_log(2, 2).leader_commit(2));
    assert_eq!(
        persist(&mut r).messages,
        vec![append_refused(1, 2, 7, None)]
    );
}

/// Reference: dissertation §9.6, with PreVote on, the same node as in the
/// test above: every timeout is only a PreVote for term 3 that nobody
/// answers, so however long it is cut off its term stays 2 and it never has
/// anything to persist. When the partition heals, it simply follows the
/// leader of term 2, which never notices it was gone.
#[test]
fn with_pre_vote_an_isolated_node_keeps_its_term_however_often_it_times_out() {
    let (mut r, rounds) = isolated(true, 5);

    for ready in &rounds {
        assert_eq!(ready.hard_state, None);
        assert_eq!(
            ready.messages,
            vec![pre_vote(1, 2, 3, 2, 2), pre_vote(1, 3, 3, 2, 2)]
        );
    }
    assert_eq!(r.current_term(), 2);

    r.step(heartbeat(2, 1, 2).prev_log(2, 2).leader_commit(2));
    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(persist(&mut r).messages, vec![append_ok(1, 2, 2, 2)]);
}

// ===========================================================================
// CheckQuorum (§6.2)
// ===========================================================================

/// `n1` as leader of five in term 2, log [1, 2], that has had a full
/// minimum election timeout of answers from n2 and n3 (so its no-op is
/// committed and it has passed one quorum check). Then read 1 is asked of
/// it.
fn leader_of_five_with_a_read(ext: Extensions) -> Raft {
    let mut r = node(5, 1, &[1], ext);
    lead(&mut r);
    let run = run_leader(&mut r, ELECTION_MIN, &[2, 3]);
    assert!(run.events.is_empty(), "{:?}", run.events);
    assert_eq!(r.commit_index(), 2);
    r.read_index(1).unwrap();
    r
}

/// Reference: dissertation §6.2 (CheckQuorum): "a leader steps down if an
/// election timeout elapses without a successful round of heartbeats to a
/// majority of its cluster". Each minimum election timeout the leader counts
/// whom it heard from since its last check; in a cluster of five, itself and
/// n2 are not a majority, so it becomes a follower in the same term, knows of
/// no leader, and says why. The read it was confirming fails (§6.4) rather
/// than being answered from a state it can no longer vouch for.
#[test]
fn a_leader_that_hears_from_no_majority_for_an_election_timeout_steps_down() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = leader_of_five_with_a_read(ext);

    let run = run_leader(&mut r, ELECTION_MIN - 1, &[2]);
    assert!(run.events.is_empty() && run.reads.is_empty());
    assert_eq!(r.role(), RoleKind::Leader);

    r.tick();

    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.leader(), None);
    assert_eq!(r.current_term(), 2);
    let ready = persist(&mut r);
    let stepped_down = Event::SteppedDown {
        term: 2,
        reason: StepDownReason::LostQuorum,
    };
    assert_eq!(ready.events, vec![stepped_down]);
    assert_eq!(ready.reads, vec![(1, ReadOutcome::Failed)]);
    assert_eq!(ready.hard_state, None, "the term did not change");
    assert_eq!(r.propose("x".to_string()), Err(NotLeader { leader: None }));
}

/// Reference: dissertation §6.2: CheckQuorum removes only leaders cut off
/// from a majority. A leader of five that hears from two followers (three
/// with itself) keeps leading through many checks, although two followers
/// are silent throughout, and still takes writes.
#[test]
fn a_leader_that_hears_from_a_majority_keeps_leading() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(5, 1, &[1], ext);
    lead(&mut r);

    let run = run_leader(&mut r, 10 * ELECTION_MAX, &[2, 3]);

    assert!(run.events.is_empty(), "{:?}", run.events);
    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.current_term(), 2);
    assert_eq!(r.propose("x".to_string()), Ok(3));
}

/// Reference: dissertation §6.2, with CheckQuorum off (the "CheckQuorum off"
/// switch): the leader of the test above, now cut off from every follower
/// for a hundred election timeouts, still believes it leads. It keeps
/// sending heartbeats nobody receives, accepts a write that can never
/// commit, and holds a read that is neither answered nor failed, so its
/// client waits forever. Nothing but CheckQuorum would tell it otherwise.
#[test]
fn without_check_quorum_a_cut_off_leader_believes_it_leads_forever() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: false,
    };
    let mut r = leader_of_five_with_a_read(ext);

    let run = run_leader(&mut r, 100 * ELECTION_MAX, &[]);

    assert!(run.events.is_empty(), "{:?}", run.events);
    assert!(run.reads.is_empty(), "{:?}", run.reads);
    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.leader(), Some(&id(1)));
    let heartbeats_to_n4 = run.messages.iter().filter(|m| m.to == id(4)).count() as u64;
    assert!(heartbeats_to_n4 >= 100 * ELECTION_MAX / HEARTBEAT_TICKS);
    assert_eq!(r.propose("x".to_string()), Ok(3));
    assert_eq!(r.commit_index(), 2);
}

// ===========================================================================
// Leader stickiness (§4.2.3)
// ===========================================================================

/// Reference: dissertation §4.2.3: "if a server receives a RequestVote
/// request within the minimum election timeout of hearing from a current
/// leader, it does not update its term or grant its vote." The core drops
/// the request: no term change, no vote, no answer, and it still follows
/// n2. This lease comes with CheckQuorum; with check_quorum off (Figure 2 as
/// written) the same request wins the follower's vote in term 3.
#[test]
fn a_follower_that_heard_from_its_leader_recently_ignores_vote_requests() {
    let ext = Extensions {
        pre_vote: false,
        check_quorum: true,
    };
    let mut r = follower_of_n2(ext);
    ticks(&mut r, ELECTION_MIN - 1);

    r.step(request_vote(3, 1, 3, 2, 2));

    assert!(persist(&mut r).is_empty(), "no answer, nothing to persist");
    assert_eq!(r.current_term(), 2);
    assert_eq!(r.voted_for(), None);
    assert_eq!(r.leader(), Some(&id(2)));

    let ext = Extensions {
        pre_vote: false,
        check_quorum: false,
    };
    let mut r = follower_of_n2(ext);
    ticks(&mut r, ELECTION_MIN - 1);
    r.step(request_vote(3, 1, 3, 2, 2));
    assert_eq!(persist(&mut r).messages, vec![vote(1, 3, 3, true)]);
}

/// Reference: dissertation §4.2.3: the lease lasts the minimum election
/// timeout. Once that long has passed without a word from the leader, the
/// follower treats a RequestVote of a newer term as Figure 2 says: it adopts
/// the term, forgets the old leader and grants its vote (persisted), even
/// though its own election timer has not fired yet.
#[test]
fn a_follower_votes_once_a_minimum_election_timeout_passes_without_its_leader() {
    let ext = Extensions {
        pre_vote: false,
        check_quorum: true,
    };
    let mut r = follower_of_n2(ext);
    ticks(&mut r, ELECTION_MIN);
    assert_eq!(
        r.leader(),
        Some(&id(2)),
        "precondition: this seed draws a timeout above the minimum"
    );

    r.step(request_vote(3, 1, 3, 2, 2));

    let ready = persist(&mut r);
    assert_eq!(ready.messages, vec![vote(1, 3, 3, true)]);
    let voted = HardState {
        current_term: 3,
        voted_for: Some(id(3)),
    };
    assert_eq!(ready.hard_state, Some(voted));
    assert_eq!(r.leader(), None);
}

/// Reference: dissertation §4.2.3 and §3.10: the lease must not block a
/// leadership transfer, since there the leader itself asked for the
/// election; such a RequestVote says so, and voters skip the lease. A
/// follower that heard from the leader a tick ago grants it, and so does the
/// old leader, which steps down (CheckQuorum on for both).
#[test]
fn a_vote_request_of_a_leadership_transfer_is_not_ignored() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = follower_of_n2(ext);
    r.tick();

    r.step(transfer_vote(3, 1, 3, 2, 2));

    assert_eq!(persist(&mut r).messages, vec![vote(1, 3, 3, true)]);
    assert_eq!(r.current_term(), 3);
    assert_eq!(r.voted_for(), Some(&id(3)));

    let mut r = leader_of_three(ext);
    r.step(transfer_vote(2, 1, 3, 2, 2));
    assert_eq!(r.role(), RoleKind::Follower);
    let ready = persist(&mut r);
    assert_eq!(ready.messages, vec![vote(1, 2, 3, true)]);
    let stepped_down = Event::SteppedDown {
        term: 3,
        reason: StepDownReason::HigherTerm,
    };
    assert_eq!(ready.events, vec![stepped_down]);
}

/// Reference: dissertation §4.2.3 at the leader: with CheckQuorum, a leader
/// ignores RequestVote of a newer term while it leads: it keeps its term
/// and its role, and answers nothing; CheckQuorum, not a disruptive
/// candidate, decides when it stops. Without CheckQuorum, Figure 2's rule
/// applies: it adopts the term, steps down and (the log being up to date)
/// grants the vote.
#[test]
fn a_leader_ignores_vote_requests_of_a_newer_term_while_it_leads() {
    let ext = Extensions {
        pre_vote: false,
        check_quorum: true,
    };
    let mut r = leader_of_three(ext);

    r.step(request_vote(2, 1, 3, 2, 2));

    assert!(persist(&mut r).is_empty());
    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.current_term(), 2);

    let ext = Extensions {
        pre_vote: false,
        check_quorum: false,
    };
    let mut r = leader_of_three(ext);
    r.step(request_vote(2, 1, 3, 2, 2));
    assert_eq!(r.role(), RoleKind::Follower);
    assert_eq!(r.current_term(), 3);
    assert_eq!(persist(&mut r).messages, vec![vote(1, 2, 3, true)]);
}

// ===========================================================================
// Leadership transfer (§3.10)
// ===========================================================================

/// Reference: dissertation §3.10: to hand over leadership the leader makes
/// sure the target holds its whole log, then sends it TimeoutNow. If the
/// target's matchIndex is already the leader's last index, that happens at
/// once. The leader announces the transfer and keeps leading
/// until the target wins.
#[test]
fn a_transfer_to_an_up_to_date_follower_sends_timeout_now_at_once() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = leader_of_three(ext);

    assert_eq!(r.transfer_leadership(id(2)), Ok(()));

    let ready = persist(&mut r);
    let started = Event::TransferStarted {
        term: 2,
        target: id(2),
    };
    assert_eq!(ready.events, vec![started]);
    assert_eq!(ready.messages, vec![timeout_now(1, 2, 2)]);
    assert_eq!(r.role(), RoleKind::Leader);
}

/// Reference: dissertation §3.10, step 2: the leader brings the target's log
/// up to date with ordinary AppendEntries. A target that lacks entries is
/// sent them at once; an answer
/// that covers part of the log is not enough; the answer that shows it holds
/// the whole log brings TimeoutNow, once.
#[test]
fn a_transfer_to_a_lagging_follower_waits_until_it_holds_the_whole_log() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(3, 1, &[1], ext);
    lead(&mut r);
    r.propose("x".to_string()).unwrap();
    persist(&mut r);
    let x = command(3, 2, "x");

    r.transfer_leadership(id(2)).unwrap();
    let ready = persist(&mut r);
    assert_eq!(
        ready.messages,
        vec![append(1, 2, 2)
            .prev_log(1, 1)
            .entries(vec![noop(2, 2), x.clone()])
            .leader_commit(0)]
    );

    r.step(append_ok(2, 1, 2, 2));
    let ready = persist(&mut r);
    assert_eq!(
        ready.messages,
        vec![append(1, 2, 2)
            .prev_log(2, 2)
            .entries(vec![x])
            .leader_commit(2)]
    );

    r.step(append_ok(2, 1, 2, 3));
    assert_eq!(persist(&mut r).messages, vec![timeout_now(1, 2, 2)]);

    r.step(append_ok(2, 1, 2, 3));
    let ready = persist(&mut r);
    assert!(!ready.messages.iter().any(is_timeout_now), "sent only once");
}

/// Reference: dissertation §3.10, step 1: while a transfer is under way the
/// leader takes no new client requests, so the target can catch up. A
/// proposal is refused, naming the target as the leader to try, and nothing
/// is appended.
#[test]
fn proposals_are_refused_during_a_transfer_and_sent_to_the_target() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = leader_of_three(ext);
    r.transfer_leadership(id(2)).unwrap();
    persist(&mut r);

    let refused = NotLeader {
        leader: Some(id(2)),
    };
    assert_eq!(r.propose("x".to_string()), Err(refused));
    assert_eq!(r.log().last_index(), 2);
    assert!(persist(&mut r).entries.is_empty());
}

/// Reference: dissertation §3.10: a transfer that has not completed within
/// an election timeout is abandoned, and the leader takes client requests
/// again (a target that cannot win must not stall the cluster). The core
/// waits the maximum election timeout (the target may draw that long). Here
/// the TimeoutNow is lost; both followers keep answering heartbeats, so the
/// leader keeps its majority.
/// One tick before the limit proposals are still refused; at the limit the
/// leader announces the abort and takes the write.
#[test]
fn a_transfer_that_does_not_finish_within_an_election_timeout_is_aborted() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = leader_of_three(ext);
    r.transfer_leadership(id(2)).unwrap();
    assert_eq!(persist(&mut r).messages, vec![timeout_now(1, 2, 2)]);

    let run = run_leader(&mut r, ELECTION_MAX - 1, &[2, 3]);
    assert!(run.events.is_empty(), "{:?}", run.events);
    assert!(!run.messages.iter().any(is_timeout_now));
    let refused = NotLeader {
        leader: Some(id(2)),
    };
    assert_eq!(r.propose("x".to_string()), Err(refused));

    let run = run_leader(&mut r, 1, &[2, 3]);
    let aborted = Event::TransferAborted {
        term: 2,
        target: id(2),
    };
    assert_eq!(run.events, vec![aborted]);
    assert_eq!(r.role(), RoleKind::Leader);
    assert_eq!(r.propose("x".to_string()), Ok(3));
}

/// Reference: dissertation §3.10: only the leader can hand over leadership,
/// and only to another server of the cluster. A follower refuses (naming the
/// leader it knows), and a leader refuses itself and a stranger as targets;
/// none of them starts anything, and the leader still takes writes.
#[test]
fn only_a_leader_can_transfer_and_only_to_another_member() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = follower_of_n2(ext);
    let not_leader = NotLeader {
        leader: Some(id(2)),
    };
    assert_eq!(
        r.transfer_leadership(id(3)),
        Err(TransferError::NotLeader(not_leader))
    );
    assert!(persist(&mut r).is_empty());

    let mut r = leader_of_three(ext);
    assert_eq!(
        r.transfer_leadership(id(1)),
        Err(TransferError::UnknownTarget(id(1)))
    );
    assert_eq!(
        r.transfer_leadership(id(9)),
        Err(TransferError::UnknownTarget(id(9)))
    );
    assert!(persist(&mut r).is_empty());
    assert_eq!(r.propose("x".to_string()), Ok(3));
}

/// Reference: dissertation §3.10, step 3: a follower that receives
/// TimeoutNow starts an election. It does so at once, without
/// waiting for its timer and without a PreVote round (the leader has vouched
/// for it): term + 1, a vote for itself, and RequestVote marked as a
/// leadership transfer so that voters in a lease do not ignore it.
#[test]
fn timeout_now_makes_a_follower_stand_at_once_skipping_pre_vote() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = follower_of_n2(ext);

    r.step(timeout_now(2, 1, 2));

    assert_eq!(r.role(), RoleKind::Candidate);
    assert_eq!(r.current_term(), 3);
    let ready = persist(&mut r);
    let voted = HardState {
        current_term: 3,
        voted_for: Some(id(1)),
    };
    assert_eq!(ready.hard_state, Some(voted));
    assert_eq!(
        ready.messages,
        vec![transfer_vote(1, 2, 3, 2, 2), transfer_vote(1, 3, 3, 2, 2)]
    );
    assert_eq!(ready.events, vec![Event::ElectionStarted { term: 3 }]);
}

/// Reference: dissertation §3.10: TimeoutNow is the leader telling a
/// follower of its term to take over. A leader or a candidate has nothing to
/// take over, and one from an older term comes from a deposed leader: all
/// three are ignored, with nothing changed and nothing sent.
#[test]
fn timeout_now_is_ignored_by_a_leader_a_candidate_and_from_an_old_term() {
    let ext = Extensions {
        pre_vote: false,
        check_quorum: true,
    };
    let mut leader = leader_of_three(ext);
    leader.step(timeout_now(2, 1, 2));
    assert!(persist(&mut leader).is_empty());
    assert_eq!(leader.role(), RoleKind::Leader);
    assert_eq!(leader.current_term(), 2);

    let mut candidate = node(3, 2, &[1, 2], ext);
    time_out(&mut candidate);
    assert_eq!(candidate.role(), RoleKind::Candidate);
    candidate.step(timeout_now(2, 1, 3));
    assert!(persist(&mut candidate).is_empty());
    assert_eq!(candidate.role(), RoleKind::Candidate);
    assert_eq!(candidate.current_term(), 3);

    let mut follower = follower_of_n2(ext);
    follower.step(timeout_now(3, 1, 1));
    assert!(persist(&mut follower).is_empty());
    assert_eq!(follower.role(), RoleKind::Follower);
    assert_eq!(follower.current_term(), 2);
}

// ---------------------------------------------------------------------------
// A leader that removes itself hands over as it goes
// ---------------------------------------------------------------------------

/// The membership of `voters`, as a configuration entry carries it.
fn membership_of(voters: &[u8]) -> raft::message::Membership {
    let mut membership = raft::message::Membership::default();
    for &n in voters {
        membership.voters.insert(id(n), String::new());
    }
    membership
}

/// [`follower_of_n2`] after n2 sent it entry 3, a membership of `voters`,
/// and committed it.
fn follower_after_membership(voters: &[u8], ext: Extensions) -> Raft {
    let mut r = follower_of_n2(ext);
    let change = Entry {
        term: 2,
        index: 3,
        data: EntryData::Config(membership_of(voters)),
    };
    r.step(
        append(2, 1, 2)
            .prev_log(2, 2)
            .entries(vec![change])
            .leader_commit(3),
    );
    persist(&mut r);
    r
}

/// Reference: dissertation §4.2.2 (a leader removed from the cluster steps
/// down once the membership without it commits) with §3.10 (leadership
/// transfer): as it steps down, the leader sends TimeoutNow to the voter
/// that holds the most of its log, so the others need not wait an election
/// timeout to find it gone. Here the leader appends one more command after
/// the removal; n3 acknowledges it, n2 only the removal: n3 is told to
/// stand, though n2 comes first in id order.
#[test]
fn a_leader_whose_removal_commits_hands_over_to_its_most_up_to_date_voter() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = leader_of_three(ext);
    let removal = r
        .remove_member(id(1))
        .expect("a removal the leader may make");
    let last = r
        .propose("x".to_string())
        .expect("it leads until the removal commits");
    persist(&mut r);

    // Without n1, the new membership's majority is n2 and n3: both must
    // hold the removal before it commits.
    r.step(append_ok(3, 1, 2, last));
    assert_eq!(r.commit_index(), 2);
    assert_eq!(r.role(), RoleKind::Leader);
    assert!(!persist(&mut r).messages.iter().any(is_timeout_now));
    r.step(append_ok(2, 1, 2, removal));

    assert_eq!(r.commit_index(), removal);
    assert_eq!(r.role(), RoleKind::Follower);
    let ready = persist(&mut r);
    let handovers: Vec<&Message> = ready
        .messages
        .iter()
        .filter(|m| is_timeout_now(m))
        .collect();
    assert_eq!(handovers, vec![&timeout_now(1, 3, 2)]);
    assert!(ready.events.contains(&Event::SteppedDown {
        term: 2,
        reason: StepDownReason::Removed
    }));
}

/// Reference: dissertation §3.10 and §4.2.2: the TimeoutNow of a leader that
/// removed itself comes from a node the follower no longer counts as a
/// member (the change took effect when it was appended, §4.1). It is still
/// the leader the follower follows in this term, so the follower stands at
/// once. The same message from any other non-member is ignored.
#[test]
fn a_follower_takes_the_handover_of_the_leader_that_removed_itself() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = follower_after_membership(&[1, 3], ext);
    assert!(!r.membership().voters.contains_key(&id(2)));
    assert_eq!(r.leader(), Some(&id(2)));

    r.step(timeout_now(9, 1, 2));
    assert!(
        persist(&mut r).is_empty(),
        "a stranger cannot make it stand"
    );
    assert_eq!(r.role(), RoleKind::Follower);

    r.step(timeout_now(2, 1, 2));
    assert_eq!(r.role(), RoleKind::Candidate);
    assert_eq!(r.current_term(), 3);
    let ready = persist(&mut r);
    assert_eq!(ready.messages, vec![transfer_vote(1, 3, 3, 3, 2)]);
}

/// Reference: dissertation §4.2.3: a server removed from the cluster gets
/// nothing from the leader once the change is appended, so it never learns
/// and keeps asking for votes. When such a request reaches the leader, the
/// leader sends it the entries it lacks (from where its request says its
/// log ends) with the commit index, so it learns the membership without
/// itself. A node that was never a voter, or whose log does not match the
/// leader's where it says it ends, gets nothing.
#[test]
fn a_removed_server_that_asks_for_votes_is_sent_the_entry_that_removed_it() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = leader_of_three(ext);
    let removal = r
        .remove_member(id(3))
        .expect("a removal the leader may make");
    persist(&mut r);
    r.step(append_ok(2, 1, 2, removal));
    assert_eq!(r.commit_index(), removal);
    persist(&mut r);
    let removal_entry = r.log().get(removal).cloned().expect("in the log");

    // n3 missed the removal: its log ends at the no-op of term 2.
    r.step(pre_vote(3, 1, 3, 2, 2));
    let ready = persist(&mut r);
    assert_eq!(
        ready.messages,
        vec![append(1, 3, 2)
            .prev_log(2, 2)
            .entries(vec![removal_entry])
            .leader_commit(removal)]
    );
    assert_eq!(r.role(), RoleKind::Leader);

    for (stranger, why) in [
        (pre_vote(9, 1, 3, 2, 2), "never a voter"),
        (pre_vote(3, 1, 3, 2, 1), "a log that does not match"),
        (pre_vote(3, 1, 3, removal, 2), "nothing it lacks"),
    ] {
        r.step(stranger);
        assert!(persist(&mut r).messages.is_empty(), "{why}");
    }
}

/// The other side: the removed server takes that AppendEntries from its
/// leader, appends the membership without itself and, with the change
/// committed, no longer stands for election however long it waits.
#[test]
fn a_removed_server_that_learns_its_removal_stops_standing_for_election() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = follower_after_membership(&[2, 3], ext);
    assert_eq!(r.commit_index(), 3);
    for _ in 0..(4 * ELECTION_MAX) {
        r.tick();
    }
    let ready = persist(&mut r);
    assert!(ready.messages.is_empty(), "{:?}", ready.messages);
    assert_eq!((r.role(), r.current_term()), (RoleKind::Follower, 2));
}

// ===========================================================================
// Numbers at the edge
// ===========================================================================

/// A node whose term reached `MAX_TERM` (the highest term any node accepts)
/// does not campaign past it, with or without PreVote: no message leaves
/// with a term above the bound, and nothing wraps or panics. The transport
/// refuses higher terms before they reach the core, so only a node that
/// reached the bound itself is ever here.
#[test]
fn a_node_at_the_highest_term_never_campaigns_past_it() {
    for pre_vote in [false, true] {
        let ext = Extensions {
            pre_vote,
            check_quorum: true,
        };
        let mut r = node(3, MAX_TERM, &[1], ext);
        for _ in 0..4 {
            ticks(&mut r, ELECTION_MAX);
            let ready = persist(&mut r);
            assert!(ready.messages.iter().all(|m| m.term <= MAX_TERM));
            assert_eq!(r.current_term(), MAX_TERM, "pre_vote {pre_vote}");
        }
    }
}

/// An AppendEntries whose indexes sit at the top of `u64` is malformed:
/// dropped, without a panic on `index + 1`.
#[test]
fn an_append_entries_at_the_top_of_the_index_space_is_dropped() {
    let ext = Extensions {
        pre_vote: true,
        check_quorum: true,
    };
    let mut r = node(3, 2, &[1], ext);
    let forged = append(2, 1, 2)
        .prev_log(u64::MAX, 1)
        .entries(vec![noop(0, 2)])
        .leader_commit(u64::MAX);
    r.step(forged);
    let ready = persist(&mut r);
    assert!(ready.entries.is_empty() && ready.committed.is_empty());
    assert_eq!(r.log().last_index(), 1);
}
