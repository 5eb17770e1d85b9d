//! Messages that Raft rules out: refused before any rule acts on them.
//!
//! Only holders of the cluster key can speak to a node (see
//! [`transport::auth`](crate::transport::auth)), and Raft trusts its members:
//! it is not Byzantine-tolerant. But a member can be buggy, or its key can be
//! in the wrong hands, and then it can send a well-formed message that no
//! honest node ever sends. The rules of Figure 2 take what a message claims
//! on trust; acting on such a claim would break this node's own invariants
//! (the `debug_assert!`s that state them would stop a debug build). So
//! [`Raft::step`] first checks each claim below against what this node knows
//! for certain, and a message that makes one is dropped whole: no rule acts on
//! it, no term is adopted from it, nothing is answered. The node reports it
//! ([`Event::ImpossibleMessage`](super::Event::ImpossibleMessage)), and
//! prints one warning line naming the member, what it claimed, and that only a
//! bug or a compromised member sends it (at most one such line a second).
//!
//! The properties cited are those of Figure 3 of the paper.
//!
//! | The message claims | Why no honest node sends it |
//! |---|---|
//! | to lead this node's term, which this node leads, or whose leader it follows is another node | Election Safety: at most one leader per term |
//! | a log entry (one it sends, the one before them, or the last one its snapshot replaced) that contradicts one this node knows is committed | Leader Completeness: a leader of this term or a later one holds every committed entry, and Log Matching makes it the same entry; State Machine Safety forbids replacing it |
//! | to hold entries of this leader's log past its end | a follower acknowledges only entries its leader sent, and a leader's log never shrinks in its term (Leader Append-Only) |
//! | to take part in a snapshot this leader never sent | a leader sends only its own latest snapshot, and its snapshot index only grows |
//!
//! What stays out of scope: a member with the key can still lie in ways no
//! single node can see (say, lead a new term with entries of its own making),
//! and the cluster's guarantees are then lost, as the threat model says. What
//! it cannot do is crash a node, or make one give up an entry it knows is
//! committed, or stop a leader that holds its term. `tests/forged.rs`
//! checks exactly that with arbitrary messages.

use super::{Raft, Role};
use crate::message::{Index, Message, MessageBody, NodeId, Term};

/// What a message claimed that Raft rules out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// It claims to lead `term`, whose leader is `leader` (this node, or the
    /// one it follows). Figure 3, Election Safety.
    SecondLeader { term: Term, leader: NodeId },
    /// Its log holds `index@claimed_term` (an entry it sends, the entry
    /// before them, or the last entry of its snapshot), where this node
    /// knows `index@committed_term` is committed. Figure 3, Leader
    /// Completeness and State Machine Safety.
    ContradictsCommitted {
        index: Index,
        committed_term: Term,
        claimed_term: Term,
    },
    /// It acknowledges entries up to `index`, but this leader's log ends at
    /// `last_index`: it never sent them.
    AcknowledgesUnsent { index: Index, last_index: Index },
    /// It answers about a snapshot up to `index`, but this leader's latest
    /// snapshot covers up to `snapshot_index` (`None`: it holds none).
    UnknownSnapshot {
        index: Index,
        snapshot_index: Option<Index>,
    },
}

impl std::fmt::Display for Claim {
    /// What was claimed and which property rules it out, in words.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::SecondLeader { term, leader } => write!(
                f,
                "it claims to lead term {term}, whose leader is {leader} \
                 (Election Safety: one leader per term)"
            ),
            Claim::ContradictsCommitted {
                index,
                committed_term,
                claimed_term,
            } => write!(
                f,
                "it claims entry {index}@{claimed_term}, but this node committed \
                 {index}@{committed_term} (Leader Completeness: every leader holds every \
                 committed entry)"
            ),
            Claim::AcknowledgesUnsent { index, last_index } => write!(
                f,
                "it acknowledges entries up to {index}, but this leader's log ends at \
                 {last_index}"
            ),
            Claim::UnknownSnapshot {
                index,
                snapshot_index: Some(ours),
            } => write!(
                f,
                "it answers about a snapshot up to {index}, but this leader's latest \
                 snapshot ends at {ours}"
            ),
            Claim::UnknownSnapshot {
                index,
                snapshot_index: None,
            } => write!(
                f,
                "it answers about a snapshot up to {index}, but this leader holds no snapshot"
            ),
        }
    }
}

impl Raft {
    /// The claim of `msg` that Raft rules out, if it makes one (see the
    /// module docs). Looked at before the term rules, so that such a message
    /// changes nothing here, not even the term.
    pub(super) fn impossible_claim(&self, msg: &Message) -> Option<Claim> {
        if msg.body.is_from_leader() {
            if let Some(claim) = self.second_leader(msg) {
                return Some(claim);
            }
        }
        match &msg.body {
            // An older term's leader may well hold entries that lost: its
            // message is refused as stale by `check_term`.
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } if msg.term >= self.current_term => {
                let claimed = entries.iter().map(|entry| (entry.index, entry.term));
                std::iter::once((*prev_log_index, *prev_log_term))
                    .chain(claimed)
                    .find_map(|(index, term)| self.contradicts_committed(index, term))
            }
            MessageBody::InstallSnapshot {
                last_included_index,
                last_included_term,
                ..
            } if msg.term >= self.current_term => {
                self.contradicts_committed(*last_included_index, *last_included_term)
            }
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } => self
                .answer_to_this_leader(msg)
                .then_some(*match_index)
                .filter(|index| *index > self.log.last_index())
                .map(|index| Claim::AcknowledgesUnsent {
                    index,
                    last_index: self.log.last_index(),
                }),
            MessageBody::InstallSnapshotResponse {
                last_included_index: index,
                ..
            } if self.answer_to_this_leader(msg) => {
                let ours = self.snapshot.as_ref().map(|_| self.log.snapshot_index());
                let sent = ours.is_some_and(|ours| *index <= ours);
                (!sent).then_some(Claim::UnknownSnapshot {
                    index: *index,
                    snapshot_index: ours,
                })
            }
            _ => None,
        }
    }

    /// A leader's message (AppendEntries, InstallSnapshot) of this node's
    /// own term from a node that is not the leader of that term: this node,
    /// or the leader it follows. Figure 3, Election Safety: "at most one
    /// leader can be elected in a given term".
    ///
    /// A leader could step down to the claimant (as it would to a leader of
    /// a newer term), but it knows the claim is false: it won this term's
    /// election itself. Stepping down would let any member that lies depose
    /// a healthy leader at will, and take the entries it appended, committed
    /// or not, out of its hands. So it keeps leading.
    fn second_leader(&self, msg: &Message) -> Option<Claim> {
        if msg.term != self.current_term {
            return None;
        }
        let leader = match &self.role {
            Role::Leader(_) => &self.config.id,
            Role::Follower {
                leader: Some(leader),
            } if *leader != msg.from => leader,
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => {
                return None
            }
        };
        Some(Claim::SecondLeader {
            term: msg.term,
            leader: leader.clone(),
        })
    }

    /// Whether a leader of this node's term or a later one, claiming that
    /// its log holds `index@term`, contradicts an entry this node knows is
    /// committed. Figure 3, Leader Completeness: that leader holds every
    /// committed entry, at the same index and with the same term. Entries a
    /// snapshot replaced cannot be compared (only its last one).
    ///
    /// The node could obey (Figure 2, AppendEntries receiver, rule 3, says
    /// to delete a conflicting entry), but the committed entry may already
    /// be applied here, and State Machine Safety says no server ever applies
    /// another entry at that index. The claim is the false part, so a
    /// committed entry is never truncated: the message is refused instead.
    fn contradicts_committed(&self, index: Index, term: Term) -> Option<Claim> {
        if index > self.commit_index {
            return None;
        }
        let committed_term = self.log.term_at(index)?;
        (committed_term != term).then_some(Claim::ContradictsCommitted {
            index,
            committed_term,
            claimed_term: term,
        })
    }

    /// Whether `msg` is an answer this node, as leader of its term, is
    /// waiting for: an answer of this term can only be to its own requests.
    fn answer_to_this_leader(&self, msg: &Message) -> bool {
        msg.term == self.current_term && matches!(self.role, Role::Leader(_))
    }
}
