//! What the node says on its console by itself, so a person can follow
//! the cluster: elections, leaders, membership changes, whom it waits for,
//! when it cannot elect a leader. (What it says in answer to a command
//! typed at the prompt is in `prompt.rs`.)

use super::*;
use crate::core::Claim;
use crate::message::Term;
use crate::throttle::Throttle;

/// What the node has seen of its peers and leaders, for the lines that tell
/// a person what is happening ("following leader", "waiting for", "cannot
/// elect a leader").
pub(super) struct Watch {
    /// When each peer's last message arrived.
    pub(super) heard: BTreeMap<NodeId, Instant>,
    /// The leader last announced on the console.
    leader: Option<NodeId>,
    /// Since when no leader is known.
    leaderless_since: Option<Instant>,
    /// Whether a leader was heard since this node started: until then, a
    /// restarted node does not know which of its entries are committed.
    pub(super) met_a_leader: bool,
    /// The peers "waiting for" named, not heard from since.
    waiting_for: BTreeSet<NodeId>,
    said_waiting: bool,
    said_no_majority: bool,
}

impl Watch {
    pub(super) fn new() -> Watch {
        Watch {
            heard: BTreeMap::new(),
            leader: None,
            leaderless_since: Some(Instant::now()),
            met_a_leader: false,
            waiting_for: BTreeSet::new(),
            said_waiting: false,
            said_no_majority: false,
        }
    }

    pub(super) fn heard_within(&self, peer: &NodeId, window: Duration) -> bool {
        self.heard.get(peer).is_some_and(|t| t.elapsed() <= window)
    }

    /// How long ago each of `members` was last heard from, in milliseconds
    /// (`None`: not since this node started), for `status`.
    pub(super) fn last_heard_ms<'a>(
        &self,
        members: impl Iterator<Item = &'a NodeId>,
    ) -> BTreeMap<NodeId, Option<u64>> {
        members
            .map(|m| {
                let ago = self
                    .heard
                    .get(m)
                    .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
                (m.clone(), ago)
            })
            .collect()
    }
}

impl Node {
    /// "Node 8001 following leader 8000 in term 1", once per new leader.
    pub(super) fn notice_leader(&mut self) {
        let leader = self.raft.leader().cloned();
        if leader == self.watch.leader {
            return;
        }
        let id = self.raft.id().clone();
        match &leader {
            Some(l) => {
                self.watch.met_a_leader = true;
                self.watch.leaderless_since = None;
                self.watch.said_no_majority = false;
                if *l != id {
                    say!(
                        "Node {id} following leader {l} in term {}",
                        self.raft.current_term()
                    );
                }
            }
            None => self.watch.leaderless_since = Some(Instant::now()),
        }
        self.watch.leader = leader;
    }

    /// Says once whom this node waits for, and once per leaderless spell
    /// that it cannot reach a majority, with the numbers.
    pub(super) fn watch_peers(&mut self) {
        if self.watch.said_waiting && self.watch.said_no_majority {
            return;
        }
        let leader_or_leaderless =
            self.raft.role() == RoleKind::Leader || self.raft.leader().is_none();
        if !leader_or_leaderless {
            // A follower hears from its leader only, not from the other
            // followers: silence from them means nothing.
            return;
        }
        let window = self.election_timeout.1 * 2 * self.clock_factor();
        let id = self.raft.id().clone();
        let voters: Vec<NodeId> = self.raft.membership().voters.keys().cloned().collect();
        let unheard: BTreeSet<NodeId> = voters
            .iter()
            .filter(|v| **v != id && !self.watch.heard_within(v, window))
            .cloned()
            .collect();
        let quiet_for = self.watch.leaderless_since.map(|t| t.elapsed());
        if !self.watch.said_waiting
            && !unheard.is_empty()
            && quiet_for.is_some_and(|q| q >= window / 2)
        {
            self.watch.said_waiting = true;
            say!("Node {id} waiting for {}", list(unheard.iter()));
            self.watch.waiting_for = unheard.clone();
        }
        let reachable = voters.len() - unheard.len();
        let majority = voters.len() / 2 + 1;
        let is_voter = voters.contains(&id);
        if is_voter
            && !self.watch.said_no_majority
            && quiet_for.is_some_and(|q| q >= window)
            && reachable < majority
        {
            self.watch.said_no_majority = true;
            say!(
                "Node {id} cannot elect a leader: {reachable} of {} members reachable; a majority needs {majority}",
                voters.len()
            );
        }
    }

    pub(super) fn heard_from(&mut self, peer: &NodeId) {
        // Members only, so the map stays as small as the cluster.
        if !self.addresses.contains_key(peer) {
            return;
        }
        self.watch.heard.insert(peer.clone(), Instant::now());
        if self.watch.waiting_for.remove(peer) {
            say!("Node {} in touch with {peer}", self.raft.id());
        }
    }

    /// One line for each thing the core reports (who is answered because
    /// of it is `settle_requests`' business).
    pub(super) fn say_event(&self, event: &Event) {
        let id = self.raft.id().clone();
        match event {
            Event::ElectionStarted { term } => {
                say!("Node {id} starting election for term {term}")
            }
            Event::BecameLeader { term } => say!("Node {id} elected as leader for term {term}"),
            Event::SteppedDown { term, reason } => match reason {
                StepDownReason::HigherTerm => {
                    say!("Leader {id} stepping down: term {term} has begun")
                }
                StepDownReason::LostQuorum => say!(
                    "Leader {id} stepping down: no word from a majority for an election timeout"
                ),
                StepDownReason::Removed => {
                    say!("Leader {id} stepping down: it is no longer a member")
                }
            },
            Event::LearnerAdded { id: new } => {
                say!("Leader {id} adding node {new} as learner")
            }
            Event::LearnerPromoted { id: learner } => {
                say!("Leader {id} promoting node {learner} to voter: it has caught up")
            }
            Event::MemberRemoved { id: member } => say!("Leader {id} removing node {member}"),
            Event::LostEntries {
                id: member,
                acknowledged,
                last_index,
                incarnations,
            } => say!(
                "{}",
                lost_entries_line(&id, member, *acknowledged, *last_index, *incarnations)
            ),
            Event::MemberDemoted { id: member } => say!(
                "Leader {id} making node {member} a learner until it catches up: its votes from before the disk loss do not count"
            ),
            Event::TransferStarted { target, .. } => {
                say!("Leader {id} transferring leadership to {target}")
            }
            Event::TransferAborted { target, .. } => {
                say!("Leader {id} gave up transferring leadership to {target}: it did not take over in time");
            }
            Event::ImpossibleMessage { from, term, claim } => {
                // A member can send these as fast as it likes.
                static IMPOSSIBLE: Throttle = Throttle::new();
                if let Some(note) = IMPOSSIBLE.allow() {
                    log::warn!("{}{note}", impossible_line(&id, from, *term, claim));
                }
            }
        }
    }
}

/// The warning for a message that Raft rules out: who sent it, what it
/// claimed, what that means and what to do.
fn impossible_line(id: &NodeId, from: &NodeId, term: Term, claim: &Claim) -> String {
    format!(
        "node {id} ignored a message of term {term} from member {from}: {claim}. Correct \
         nodes never send this: {from}, or a member this node heard from earlier, has a bug \
         or its cluster key is in the wrong hands. Check the version and the log of {from}; \
         if you cannot account for it, stop the cluster and make a new one with a new key"
    )
}

/// "8000, 8001" or "none".
pub(super) fn list<'a>(ids: impl Iterator<Item = &'a NodeId>) -> String {
    let names: Vec<&str> = ids.map(NodeId::as_str).collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// "12 ms ago", "4.2 s ago", "never": how long ago a peer was heard from.
pub(super) fn heard_ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".to_string(),
        Some(ms @ 0..1000) => format!("{ms} ms ago"),
        Some(ms @ 1000..100_000) => format!("{}.{} s ago", ms / 1000, ms % 1000 / 100),
        Some(ms) => format!("{} s ago", ms / 1000),
    }
}

/// "3 KiB".
pub(super) fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{} KiB", bytes / 1024),
        _ => format!("{} MiB", bytes / 1_048_576),
    }
}

/// The one line a leader prints when a follower lost entries it had
/// acknowledged: who, what it acknowledged, what it has now, and what to do.
fn lost_entries_line(
    leader: &NodeId,
    member: &NodeId,
    acknowledged: Index,
    last_index: Index,
    incarnations: Option<(Incarnation, Incarnation)>,
) -> String {
    let cause = match incarnations {
        Some((old, new)) => {
            format!("its data directory was replaced: incarnation {old:016x}, now {new:016x}")
        }
        None => "its disk lost the end of its log".to_string(),
    };
    // A leader elected after the loss never saw what the old directory
    // acknowledged (it acknowledged to an earlier leader).
    let acknowledged = match acknowledged {
        0 => "it had acknowledged entries to an earlier leader".to_string(),
        index => format!("it acknowledged up to index {index}"),
    };
    format!(
        "Leader {leader}: node {member} lost entries it had acknowledged: {acknowledged} and \
         now has up to {last_index} ({cause}). It catches up as a learner and becomes a voter \
         again by itself: nothing to do, unless nobody deleted or restored its data directory; \
         then check the disk of {member}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lost_line_says_who_what_and_what_to_do() {
        let line = lost_entries_line(
            &NodeId::new("8000"),
            &NodeId::new("8001"),
            57,
            0,
            Some((1, 2)),
        );
        for part in [
            "Leader 8000",
            "node 8001 lost",
            "up to index 57",
            "has up to 0",
            "replaced",
            "learner",
            "nothing to do",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
        let line = lost_entries_line(&NodeId::new("8000"), &NodeId::new("8001"), 57, 40, None);
        assert!(line.contains("lost the end of its log"), "{line}");
    }

    #[test]
    fn heard_ago_reads_as_a_person_would_say_it() {
        assert_eq!(heard_ago(None), "never");
        assert_eq!(heard_ago(Some(12)), "12 ms ago");
        assert_eq!(heard_ago(Some(999)), "999 ms ago");
        assert_eq!(heard_ago(Some(4_270)), "4.2 s ago");
        assert_eq!(heard_ago(Some(3_600_000)), "3600 s ago");
    }

    #[test]
    fn the_impossible_message_line_says_who_what_and_what_to_do() {
        let claim = Claim::SecondLeader {
            term: 3,
            leader: NodeId::new("8000"),
        };
        let line = impossible_line(&NodeId::new("8000"), &NodeId::new("8002"), 3, &claim);
        for part in [
            "node 8000 ignored",
            "from member 8002",
            "claims to lead term 3, whose leader is 8000",
            "Election Safety",
            "has a bug",
            "cluster key is in the wrong hands",
            "Check the version and the log of 8002",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
    }
}
