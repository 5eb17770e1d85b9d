//! What the core hands its driver: the work of a [`Ready`], the events a
//! person would want to hear of, and the answer to a request sent to a node
//! that does not lead.

use super::{Claim, ReadOutcome};
use crate::message::{Entry, HardState, Incarnation, Index, Message, NodeId, Snapshot, Term};

/// Something a person watching the node would want to know; the driver
/// prints these as the user-facing lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// "Node 8000 starting election for term 1".
    ElectionStarted { term: Term },
    /// "Node 8000 elected as leader for term 1".
    BecameLeader { term: Term },
    /// A leader became a follower.
    SteppedDown { term: Term, reason: StepDownReason },
    /// "Leader 8000 transferring leadership to 8001".
    TransferStarted { term: Term, target: NodeId },
    /// The target did not take over within an election timeout; the leader
    /// takes writes again.
    TransferAborted { term: Term, target: NodeId },
    /// "Leader 8000 adding node 8003 as learner".
    LearnerAdded { id: NodeId },
    /// "Leader 8000 promoting node 8003 to voter": the learner caught up.
    LearnerPromoted { id: NodeId },
    /// "Leader 8000 removing node 8002".
    MemberRemoved { id: NodeId },
    /// A follower's answer shows it has fewer entries than it acknowledged
    /// to this leader, or comes from a new data directory: it lost its disk
    /// (or part of it). `acknowledged` is the `match_index` the leader held,
    /// `last_index` what the follower says it holds now; `incarnations` is
    /// `(recorded, now)` when the directory itself was replaced.
    LostEntries {
        id: NodeId,
        acknowledged: Index,
        last_index: Index,
        incarnations: Option<(Incarnation, Incarnation)>,
    },
    /// "Leader 8000 making node 8001 a learner until it catches up": a
    /// voter that lost its disk may have lost its votes too.
    MemberDemoted { id: NodeId },
    /// A message from `from`, of term `term`, made a claim that Raft rules
    /// out, and was ignored: `from` has a bug, or its cluster key is in the
    /// wrong hands (see [`impossible`](super::impossible)).
    ImpossibleMessage {
        from: NodeId,
        term: Term,
        claim: Claim,
    },
}

/// Why a leader stopped leading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepDownReason {
    /// It saw a message from a newer term (Figure 2, All Servers, rule 2).
    HigherTerm,
    /// CheckQuorum: it heard from no majority for an election timeout.
    LostQuorum,
    /// A membership without it committed (dissertation §4.2.2).
    Removed,
}

impl std::fmt::Display for Event {
    /// In the words a person watching would use: `became leader in term 2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::ElectionStarted { term } => write!(f, "started an election for term {term}"),
            Event::BecameLeader { term } => write!(f, "became leader in term {term}"),
            Event::SteppedDown { term, reason } => {
                write!(f, "stepped down in term {term} ({reason})")
            }
            Event::TransferStarted { term, target } => {
                write!(f, "transferring leadership to {target} in term {term}")
            }
            Event::TransferAborted { term, target } => {
                write!(
                    f,
                    "gave up transferring leadership to {target} in term {term}"
                )
            }
            Event::LearnerAdded { id } => write!(f, "added {id} as a learner"),
            Event::LearnerPromoted { id } => write!(f, "promoted learner {id} to voter"),
            Event::MemberRemoved { id } => write!(f, "removed {id}"),
            Event::LostEntries {
                id,
                acknowledged,
                last_index,
                incarnations,
            } => {
                write!(
                    f,
                    "learned that {id} lost entries: it had acknowledged {acknowledged}, now holds up to {last_index}"
                )?;
                match incarnations {
                    Some((recorded, now)) => {
                        write!(f, " (new data directory: incarnation {recorded} → {now})")
                    }
                    None => Ok(()),
                }
            }
            Event::MemberDemoted { id } => {
                write!(f, "made {id} a learner until it catches up")
            }
            Event::ImpossibleMessage { from, term, claim } => {
                write!(
                    f,
                    "ignored a message of term {term} from {from} that Raft rules out: {claim}"
                )
            }
        }
    }
}

impl std::fmt::Display for StepDownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepDownReason::HigherTerm => "saw a higher term",
            StepDownReason::LostQuorum => "heard from no majority",
            StepDownReason::Removed => "removed from the cluster",
        })
    }
}

/// Why a request cannot be served here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLeader {
    /// The leader this node knows of, if any: try there.
    pub leader: Option<NodeId>,
}

/// The work the core hands to its driver. See the module docs for the order
/// in which it must be done.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// Term and vote to make durable, if they changed.
    pub hard_state: Option<HardState>,
    /// Entries to make durable. If the first one's index is at or below the
    /// last stored index, the stored entries from that index on must be
    /// dropped first (a conflicting suffix, §5.3).
    pub entries: Vec<Entry>,
    /// Messages to send, after persisting; except that those for which
    /// [`MessageBody::may_precede_persist`](crate::message::MessageBody::may_precede_persist) is true may be sent before.
    pub messages: Vec<Message>,
    /// Newly committed entries to apply, in order.
    pub committed: Vec<Entry>,
    /// Reads whose index is now known (or that failed), to answer after
    /// applying `committed`.
    pub reads: Vec<(u64, ReadOutcome)>,
    /// Things worth telling a person.
    pub events: Vec<Event>,
    /// A snapshot from the leader to make durable (compacting the stored log
    /// as `Storage::save_snapshot` does) and then to restore the state
    /// machine from, before applying `committed`.
    pub snapshot: Option<Snapshot>,
}

impl Ready {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.events.is_empty()
            && self.snapshot.is_none()
    }
}
