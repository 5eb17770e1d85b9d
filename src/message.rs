//! Wire types: what travels between nodes and between a client and a node.
//!
//! Every frame is one line of JSON (see `transport`). A person can read the
//! traffic with `nc` or `tcpdump`, which is the point in a teaching project.
//!
//! Messages between peers are one-way: a response is a message too, sent on
//! the responder's own connection. So the core never waits on a socket.
//!
//! # The messages, as they travel
//!
//! Peer messages (`{"peer": ...}`), with the paper's fields (one
//! line each on the wire; the MAC that follows each line is left out here):
//!
//! ```text
//! {"peer":{"from":"8000","to":"8001","term":2,"body":{"type":"pre_vote","last_log_index":4,"last_log_term":1}}}
//! {"peer":{"from":"8001","to":"8000","term":2,"body":{"type":"pre_vote_response","vote_granted":true,"incarnation":1964309452876514530}}}
//! {"peer":{"from":"8000","to":"8001","term":2,"body":{"type":"request_vote","last_log_index":4,"last_log_term":1}}}
//! {"peer":{"from":"8001","to":"8000","term":2,"body":{"type":"request_vote_response","vote_granted":true,"incarnation":1964309452876514530}}}
//! {"peer":{"from":"8000","to":"8001","term":2,"body":{"type":"append_entries","prev_log_index":4,"prev_log_term":1,"entries":[{"term":2,"index":5,"data":"noop"},{"term":2,"index":6,"data":{"command":"foo"}}],"leader_commit":4,"read_seq":0,"seq":7}}}
//! {"peer":{"from":"8001","to":"8000","term":2,"body":{"type":"append_entries_response","success":true,"match_index":6,"read_seq":0,"seq":7,"incarnation":1964309452876514530}}}
//! {"peer":{"from":"8002","to":"8000","term":2,"body":{"type":"append_entries_response","success":false,"match_index":0,"conflict":{"term":1,"index":3},"read_seq":0,"seq":8,"incarnation":4398046511104}}}
//! {"peer":{"from":"8000","to":"8001","term":2,"body":{"type":"timeout_now"}}}
//! {"peer":{"from":"8000","to":"8003","term":2,"body":{"type":"install_snapshot","last_included_index":10000,"last_included_term":2,"offset":0,"data":"{\"last_included_index\":10000,...","done":true}}}
//! {"peer":{"from":"8003","to":"8000","term":2,"body":{"type":"install_snapshot_response","last_included_index":10000,"next_offset":180,"done":true,"incarnation":77}}}
//! ```
//!
//! A membership change is a log entry like any other:
//! `{"term":2,"index":7,"data":{"config":{"voters":{"8000":"127.0.0.1:8000","8001":"127.0.0.1:8001","8002":"127.0.0.1:8002"},"learners":{"8003":"127.0.0.1:8003"},"incarnations":{"8000":41,"8001":1964309452876514530,"8002":4398046511104}}}}`.
//! `incarnations` records the data directory of each member whose incarnation a
//! leader has learned (see [`core::membership`](crate::core::membership)).
//!
//! | type | meaning |
//! | --- | --- |
//! | `pre_vote` | "Would you vote for me in term `term`?" (§9.6). Changes nobody's term or vote. |
//! | `pre_vote_response` | The answer; if granted, `term` is the term asked about, otherwise the responder's own term. |
//! | `request_vote` | Figure 2's RequestVote. `leadership_transfer: true` (only when set) marks an election the old leader asked for, which voters must not ignore. |
//! | `request_vote_response` | `vote_granted`, and the voter's `incarnation`: the vote counts only if that is the one the membership records. Sent only after the vote is on disk. |
//! | `append_entries` | Figure 2's AppendEntries; with no entries, a heartbeat. `read_seq` numbers the leader's heartbeat rounds for ReadIndex reads; `seq` numbers the leader's AppendEntries in its term. |
//! | `append_entries_response` | `success` and, if so, `match_index` (the last index known to match the leader). On failure, `conflict`: the follower's term at `prev_log_index` and the first index of that term, or no term and one past its last index, so the leader can skip a whole term. Echoes `read_seq` and `seq`, and carries the follower's `incarnation`. |
//! | `timeout_now` | Leadership transfer: "start an election now" (§3.10). |
//! | `install_snapshot` | Figure 13's InstallSnapshot: a chunk (at most 256 KiB) of the snapshot's JSON, starting at byte `offset`; `done` on the last. |
//! | `install_snapshot_response` | The byte offset the follower expects next (0 to start over), or `done` once installed. |
//!
//! Client requests and responses (`{"request": ...}` and `{"response": ...}`,
//! matched by `id`, on the client's connection):
//!
//! ```text
//! {"request":{"id":42,"command":{"op":"set","value":"foo"}}}
//! {"request":{"id":43,"command":{"op":"get"}}}
//! {"request":{"id":44,"command":{"op":"status"}}}
//! {"request":{"id":45,"command":{"op":"transfer","to":"8001"}}}
//! {"request":{"id":46,"command":{"op":"add_member","address":"127.0.0.1:8003"}}}
//! {"request":{"id":47,"command":{"op":"remove_member","id":"8003"}}}
//! {"request":{"id":48,"command":{"op":"metrics"}}}
//! {"response":{"id":42,"result":{"status":"written","index":2}}}
//! {"response":{"id":43,"result":{"status":"value","value":"foo"}}}
//! {"response":{"id":44,"result":{"status":"status","id":"8000","role":"leader","term":1,"leader":"8000","commit_index":2,"last_applied":2,"last_log_index":2,"value":"foo","members":["8000","8001","8002"],"learners":[],"snapshot_index":0,"last_heard_ms":{"8001":12,"8002":null}}}}
//! {"response":{"id":48,"result":{"status":"metrics","fsyncs":9,"bytes_sent":1234,"messages_sent":21,"longest_sync_us":180}}}
//! {"response":{"id":45,"result":{"status":"done"}}}
//! {"response":{"id":42,"result":{"status":"not_leader","leader":"127.0.0.1:8001"}}}
//! {"response":{"id":42,"result":{"status":"error","message":"..."}}}
//! ```
//!
//! In `status`, `last_heard_ms` says how long ago the node last received a
//! message from each other member (`null`: never since it started; here 8002
//! is down). A leader hears from every member about once a heartbeat, so a
//! member silent for longer than an election timeout is down or cut off; a
//! follower hears from its leader only.
//!
//! In `metrics`, `fsyncs`, `bytes_sent` and `messages_sent` count since the node
//! started (what `raft bench` turns into per-entry figures), and
//! `longest_sync_us` is the longest one sync (writes and fsync) held up the
//! node's state-machine thread since it started; a reader treats a missing
//! field as 0.

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A term number (§5.1). Terms only ever increase on a node.
pub type Term = u64;

/// A log index. The first entry of the log has index 1; index 0 means "before
/// the first entry" and always has term 0.
pub type Index = u64;

/// The highest term a node accepts from the wire or from disk, and the
/// highest it ever reaches itself. A term only grows by one per election,
/// so a real cluster never comes near it (at a thousand elections a second
/// it takes over a hundred million years); a term above it can only be
/// forged or corrupt, and is refused as malformed. The margin up to
/// `u64::MAX` means `term + 1` can never wrap, and a node at `MAX_TERM`
/// stops campaigning rather than wrap.
pub const MAX_TERM: Term = 1 << 62;

/// The highest log index (or byte offset, or count) a node accepts from the
/// wire or from disk: far beyond any real log, far enough below `u64::MAX`
/// that `index + 1`, and an index plus a snapshot interval, never wrap.
pub const MAX_INDEX: Index = 1 << 62;

/// How a node is named. A node listening on 127.0.0.1 is known by its port
/// (`8000`), as in the original Python project; any other node by `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn new(name: impl Into<String>) -> NodeId {
        NodeId(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the replicated log (Figure 2, "log[]").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term in which a leader created this entry.
    pub term: Term,
    /// Its position in the log.
    pub index: Index,
    /// What it carries.
    pub data: EntryData,
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryData {
    /// Appended by every new leader (§8): committing it commits everything
    /// before it, and lets the leader learn the commit index of its term.
    Noop,
    /// A command for the state machine, opaque to Raft.
    Command(String),
    /// A new cluster membership (dissertation §4.1). Each node uses the
    /// latest membership in its log, committed or not.
    Config(Membership),
}

/// Who is in the cluster, and where to reach them (dissertation ch. 4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members that vote and count towards majorities: id -> `HOST:PORT`.
    pub voters: BTreeMap<NodeId, String>,
    /// Members that receive the log but do not vote yet: a new server
    /// catches up as a learner before it can affect majorities (§4.2.1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub learners: BTreeMap<NodeId, String>,
    /// The incarnation of each member's data directory, once a leader has
    /// learned it (see [`Incarnation`]). A vote counts only from the
    /// incarnation recorded here, so a member that lost its disk (and with
    /// it the record of its votes) cannot vote twice in a term.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub incarnations: BTreeMap<NodeId, Incarnation>,
}

impl Membership {
    /// True if `id` votes or learns.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.voters.contains_key(id) || self.learners.contains_key(id)
    }

    /// The address of a member, if it is one.
    pub fn address(&self, id: &NodeId) -> Option<&str> {
        self.voters
            .get(id)
            .or_else(|| self.learners.get(id))
            .map(String::as_str)
    }
}

/// A random number drawn when a node's data directory is created and kept
/// in it for good. A node that lost its directory comes back with another
/// one, which is how the others can tell that it forgot its votes and its
/// log. `0` means "not known" (a message or a directory from before
/// incarnations existed) and is never recorded.
pub type Incarnation = u64;

/// A snapshot of the state machine, replacing the log up to and including
/// `last_included_index` (§7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last entry the snapshot replaces.
    pub last_included_index: Index,
    /// The term of that entry, for the consistency check of the next one.
    pub last_included_term: Term,
    /// The membership as of `last_included_index`.
    pub membership: Membership,
    /// The state machine's own serialisation of its state.
    pub data: String,
}

/// The state a node must keep on stable storage before it answers any
/// message (Figure 2, "Persistent state on all servers"); the log is kept
/// beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub current_term: Term,
    /// The candidate that received this node's vote in `current_term`.
    pub voted_for: Option<NodeId>,
}

/// A message between two Raft nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's current term; every rule about terms looks at this.
    pub term: Term,
    pub body: MessageBody,
}

/// The RPCs of Figure 2, each split into a request and a response message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageBody {
    /// Figure 2, RequestVote RPC: sent by candidates to gather votes.
    RequestVote {
        last_log_index: Index,
        last_log_term: Term,
        /// Set when the election was started by a leadership transfer: the
        /// old leader asked for it, so voters must not ignore it on the
        /// grounds that they heard from a leader recently (dissertation
        /// §4.2.3 and §3.10).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        leadership_transfer: bool,
    },
    /// The answer to `RequestVote`, with the voter's incarnation: the
    /// candidate counts the vote only if it is the recorded one.
    RequestVoteResponse {
        vote_granted: bool,
        #[serde(default)]
        incarnation: Incarnation,
    },
    /// PreVote (dissertation §9.6): "could I win an election?" `term` is
    /// the term the sender would campaign in; nobody changes term or vote
    /// because of it.
    PreVote {
        last_log_index: Index,
        last_log_term: Term,
    },
    /// The answer to `PreVote`. If granted, `term` is the term asked about;
    /// if not, the responder's own term.
    PreVoteResponse {
        vote_granted: bool,
        #[serde(default)]
        incarnation: Incarnation,
    },
    /// Leadership transfer (dissertation §3.10): the leader tells an
    /// up-to-date follower to start an election now.
    TimeoutNow,
    /// Figure 13, InstallSnapshot RPC: the leader sends a follower that is
    /// too far behind its snapshot, in chunks. `data` is a piece of the
    /// snapshot's JSON, starting at byte `offset`.
    InstallSnapshot {
        last_included_index: Index,
        last_included_term: Term,
        offset: u64,
        data: String,
        done: bool,
    },
    /// The answer to `InstallSnapshot`: the byte offset the follower
    /// expects next (0 if it must start again), or, once installed, `done`.
    InstallSnapshotResponse {
        last_included_index: Index,
        next_offset: u64,
        done: bool,
        /// The responder's incarnation.
        #[serde(default)]
        incarnation: Incarnation,
    },
    /// Figure 2, AppendEntries RPC: sent by the leader to replicate entries
    /// and, with no entries, as a heartbeat.
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        /// Echoed back by the follower: the leader uses it to confirm it
        /// still leads before serving reads (ReadIndex, dissertation §6.4).
        #[serde(default)]
        read_seq: u64,
        /// Numbers the leader's AppendEntries in its term, echoed in the
        /// answer: a refusal of a request sent after the leader learned a
        /// `match_index` can be told from a late answer to an older one.
        #[serde(default)]
        seq: u64,
    },
    /// The answer to `AppendEntries`.
    AppendEntriesResponse {
        success: bool,
        /// On success, the index of the last entry the follower now holds
        /// that matches the leader's log.
        match_index: Index,
        /// On failure, a hint so the leader can skip a whole term at a time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conflict: Option<Conflict>,
        /// The `read_seq` of the request this answers.
        #[serde(default)]
        read_seq: u64,
        /// The `seq` of the request this answers.
        #[serde(default)]
        seq: u64,
        /// The responder's incarnation.
        #[serde(default)]
        incarnation: Incarnation,
    },
}

impl Message {
    /// Checks every number in the message against [`MAX_TERM`] and
    /// [`MAX_INDEX`]. A message that fails was forged or garbled (no node
    /// produces one) and must not reach the core, where `term + 1` or
    /// `index + 1` would have no room. The error names the field.
    pub fn check_numbers(&self) -> Result<(), String> {
        let term = |name: &str, value: Term| {
            if value > MAX_TERM {
                Err(format!(
                    "{name} {value} is above the highest term {MAX_TERM}"
                ))
            } else {
                Ok(())
            }
        };
        let index = |name: &str, value: u64| {
            if value > MAX_INDEX {
                Err(format!(
                    "{name} {value} is above the highest index {MAX_INDEX}"
                ))
            } else {
                Ok(())
            }
        };
        term("term", self.term)?;
        match &self.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            }
            | MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                index("last_log_index", *last_log_index)?;
                term("last_log_term", *last_log_term)
            }
            MessageBody::RequestVoteResponse { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::TimeoutNow => Ok(()),
            MessageBody::InstallSnapshot {
                last_included_index,
                last_included_term,
                offset,
                ..
            } => {
                index("last_included_index", *last_included_index)?;
                term("last_included_term", *last_included_term)?;
                index("offset", *offset)
            }
            MessageBody::InstallSnapshotResponse {
                last_included_index,
                next_offset,
                ..
            } => {
                index("last_included_index", *last_included_index)?;
                index("next_offset", *next_offset)
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => {
                index("prev_log_index", *prev_log_index)?;
                term("prev_log_term", *prev_log_term)?;
                index("leader_commit", *leader_commit)?;
                entries.iter().try_for_each(|e| {
                    index("entry index", e.index)?;
                    term("entry term", e.term)
                })
            }
            MessageBody::AppendEntriesResponse {
                match_index,
                conflict,
                ..
            } => {
                index("match_index", *match_index)?;
                if let Some(conflict) = conflict {
                    index("conflict index", conflict.index)?;
                    term("conflict term", conflict.term.unwrap_or(0))?;
                }
                Ok(())
            }
        }
    }
}

impl MessageBody {
    /// True for the messages by which a leader sends its log: AppendEntries
    /// (Figure 2) and InstallSnapshot (§7). Only a leader sends them, so
    /// one of the current term names the leader, even a leader this node
    /// does not know as a member yet (dissertation §4.1).
    pub fn is_from_leader(&self) -> bool {
        matches!(
            self,
            MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. }
        )
    }

    /// True for messages that promise nothing about the sender's stable
    /// storage, so a driver may send them before persisting the Ready they
    /// came in: a leader's AppendEntries and InstallSnapshot (the leader
    /// counts its own copy of an entry only once it is durable, so sending
    /// it early is safe: dissertation §10.2.1), TimeoutNow, and PreVote. A
    /// vote, an acknowledgement or a RequestVote (which relies on the
    /// candidate's own vote being durable) must wait.
    pub fn may_precede_persist(&self) -> bool {
        match self {
            MessageBody::AppendEntries { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow
            | MessageBody::PreVote { .. } => true,
            MessageBody::RequestVote { .. }
            | MessageBody::RequestVoteResponse { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::AppendEntriesResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. } => false,
        }
    }
}

// ----- how messages read ----------------------------------------------
//
// One notation for the simulator's trace, the committed protocol traces in
// `tests/traces/` and a node's `RUST_LOG=debug` lines, written as the paper
// writes them: an entry is `index@term`, a message is
// `8000→8001 AppendEntries(term 2, prev 4@1, entries [5@2 noop, 6@2 "foo"], commit 4)`.
// Formatting happens only when something prints, so it costs nothing on the
// hot path. Bookkeeping fields that no rule of the paper reads (a message's
// `seq`, a responder's `incarnation`) are left out.

/// Commands longer than this print shortened, with their length.
const SHOWN_COMMAND_CHARS: usize = 40;
/// Lists of more entries than this print as first .. last.
const SHOWN_ENTRIES: usize = 4;

impl fmt::Display for Entry {
    /// `5@2 noop`, `6@2 "foo"`, `7@2 config voters [8000, 8001]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} {}", self.index, self.term, self.data)
    }
}

impl fmt::Display for EntryData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryData::Noop => f.write_str("noop"),
            EntryData::Command(command) if command.chars().count() > SHOWN_COMMAND_CHARS => {
                let head: String = command.chars().take(SHOWN_COMMAND_CHARS).collect();
                write!(f, "{head:?}.. ({} bytes)", command.len())
            }
            EntryData::Command(command) => write!(f, "{command:?}"),
            EntryData::Config(membership) => write!(f, "config {membership}"),
        }
    }
}

impl fmt::Display for Membership {
    /// `voters [8000, 8001, 8002]`, then `learners [8003]` and
    /// `incarnations [8001: 7]` if there are any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "voters [{}]", Ids(self.voters.keys()))?;
        if !self.learners.is_empty() {
            write!(f, " learners [{}]", Ids(self.learners.keys()))?;
        }
        if !self.incarnations.is_empty() {
            f.write_str(" incarnations [")?;
            for (i, (id, incarnation)) in self.incarnations.iter().enumerate() {
                let comma = if i > 0 { ", " } else { "" };
                write!(f, "{comma}{id}: {incarnation}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// Node ids separated by commas.
struct Ids<'a, I: Iterator<Item = &'a NodeId> + Clone>(I);

impl<'a, I: Iterator<Item = &'a NodeId> + Clone> fmt::Display for Ids<'a, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.clone().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        Ok(())
    }
}

/// A list of entries as `[5@2 noop, 6@2 "foo"]`, or `[5@2 noop .. 90@2 "x"]
/// (86 entries)` when long.
pub struct ShowEntries<'a>(pub &'a [Entry]);

impl fmt::Display for ShowEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [first, .., last] if self.0.len() > SHOWN_ENTRIES => {
                write!(f, "[{first} .. {last}] ({} entries)", self.0.len())
            }
            list => {
                f.write_str("[")?;
                for (i, entry) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{entry}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for Message {
    /// `from→to Body(term T, ...)`: see [`MessageBody`]'s notation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{} ", self.from, self.to)?;
        let term = self.term;
        let granted = |yes: bool| if yes { "granted" } else { "refused" };
        match &self.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                leadership_transfer,
            } => {
                write!(
                    f,
                    "RequestVote(term {term}, last log {last_log_index}@{last_log_term}"
                )?;
                if *leadership_transfer {
                    f.write_str(", transfer")?;
                }
                f.write_str(")")
            }
            MessageBody::RequestVoteResponse { vote_granted, .. } => {
                write!(
                    f,
                    "RequestVoteResponse(term {term}, {})",
                    granted(*vote_granted)
                )
            }
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => write!(
                f,
                "PreVote(term {term}, last log {last_log_index}@{last_log_term})"
            ),
            MessageBody::PreVoteResponse { vote_granted, .. } => {
                write!(
                    f,
                    "PreVoteResponse(term {term}, {})",
                    granted(*vote_granted)
                )
            }
            MessageBody::TimeoutNow => write!(f, "TimeoutNow(term {term})"),
            MessageBody::InstallSnapshot {
                last_included_index,
                last_included_term,
                offset,
                data,
                done,
            } => {
                write!(
                    f,
                    "InstallSnapshot(term {term}, up to {last_included_index}@{last_included_term}, bytes {offset}..{}",
                    offset.saturating_add(data.len() as u64)
                )?;
                f.write_str(if *done { ", done)" } else { ")" })
            }
            MessageBody::InstallSnapshotResponse {
                last_included_index,
                next_offset,
                done,
                ..
            } => {
                write!(
                    f,
                    "InstallSnapshotResponse(term {term}, up to {last_included_index}, "
                )?;
                if *done {
                    f.write_str("installed)")
                } else {
                    write!(f, "next byte {next_offset})")
                }
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
                ..
            } => {
                write!(
                    f,
                    "AppendEntries(term {term}, prev {prev_log_index}@{prev_log_term}, entries {}, commit {leader_commit}",
                    ShowEntries(entries)
                )?;
                read_seq_suffix(f, *read_seq)
            }
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict,
                read_seq,
                ..
            } => {
                write!(f, "AppendEntriesResponse(term {term}, ")?;
                match (success, conflict) {
                    (true, _) => write!(f, "ok, match {match_index}")?,
                    (
                        false,
                        Some(Conflict {
                            term: Some(t),
                            index,
                        }),
                    ) => write!(f, "refused, conflict term {t} from {index}")?,
                    (false, Some(Conflict { term: None, index })) => {
                        write!(f, "refused, log ends before {index}")?
                    }
                    (false, None) => f.write_str("refused")?,
                }
                read_seq_suffix(f, *read_seq)
            }
        }
    }
}

/// Closes an AppendEntries or its response: `, read 3)` when the message
/// confirms leadership for ReadIndex round 3, `)` otherwise.
fn read_seq_suffix(f: &mut fmt::Formatter<'_>, read_seq: u64) -> fmt::Result {
    if read_seq == 0 {
        f.write_str(")")
    } else {
        write!(f, ", read {read_seq})")
    }
}

/// Why a follower rejected AppendEntries, so the leader can back up
/// `next_index` by a term at a time instead of an entry at a time (§5.3,
/// the optimisation described at the end of the section).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The term of the follower's entry at `prev_log_index`, if it has one.
    pub term: Option<Term>,
    /// With `term`: the first index the follower holds for that term.
    /// Without: one past the follower's last index (its log is too short).
    pub index: Index,
}

/// A request from a client (`raft client`, or a node forwarding a `set`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    pub command: ClientCommand,
}

/// What a client can ask a node to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientCommand {
    /// Replace the value; answered once the entry is committed and applied.
    Set { value: String },
    /// Read the value, linearizably.
    Get,
    /// This node's view of itself; not linearizable, answered at once.
    Status,
    /// Hand leadership to another member (dissertation §3.10).
    Transfer { to: NodeId },
    /// Add the node at `address` (`HOST:PORT`), as a learner first
    /// (dissertation §4.2.1); answered once that change commits.
    AddMember { address: String },
    /// Remove member `id`; answered once the change commits.
    RemoveMember { id: NodeId },
    /// The last `count` entries of this node's log, as it holds them now;
    /// answered at once, like `Status`.
    Log { count: usize },
    /// This node's counters (fsyncs, bytes and messages sent), for
    /// measuring it: see [`crate::metrics`]. Answered at once.
    Metrics,
}

/// A node's answer to a `ClientRequest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResponse {
    pub id: u64,
    pub result: ClientResult,
}

/// The outcome of a client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ClientResult {
    /// The `set` committed at `index`.
    Written { index: Index },
    /// The request was carried out (a leadership transfer began).
    Done,
    /// The value a `get` read.
    Value { value: String },
    /// The answer to `status`.
    Status(Status),
    /// This node does not lead; try `leader` (an address) if known.
    NotLeader { leader: Option<String> },
    /// The request failed; `message` says why.
    Error { message: String },
    /// The answer to `Log`: entries in index order.
    Log { entries: Vec<LogRow> },
    /// The answer to `Metrics`.
    Metrics(Metrics),
}

/// One log entry as `log` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRow {
    pub index: Index,
    pub term: Term,
    /// `command`, `noop` or `membership`.
    pub kind: String,
    /// The value of a command; the members of a membership change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Whether this node knows the entry is committed.
    pub committed: bool,
    /// Whether this node has applied it to its state machine.
    pub applied: bool,
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub role: String,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: Index,
    pub last_applied: Index,
    pub last_log_index: Index,
    pub value: String,
    /// The voting members.
    pub members: Vec<NodeId>,
    /// Members that receive the log but do not vote yet.
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// The index the latest snapshot covers.
    #[serde(default)]
    pub snapshot_index: Index,
    /// For each other member (voters and learners): how many milliseconds
    /// ago this node last received a message from it, or `null` if none
    /// since it started. A leader hears from every member about once a
    /// heartbeat; a follower hears from its leader only. Ctrl+C at a leader
    /// hands over only to a voter heard from within the shortest election
    /// timeout.
    #[serde(default)]
    pub last_heard_ms: BTreeMap<NodeId, Option<u64>>,
}

/// One line on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Between Raft nodes.
    Peer(Message),
    /// From a client to a node.
    Request(ClientRequest),
    /// From a node back to a client, on the client's connection.
    Response(ClientResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(term: Term, prev_log_index: Index, entry_term: Term) -> Message {
        Message {
            from: NodeId::new("8000"),
            to: NodeId::new("8001"),
            term,
            body: MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term: 1,
                entries: vec![Entry {
                    term: entry_term,
                    index: prev_log_index.wrapping_add(1),
                    data: EntryData::Noop,
                }],
                leader_commit: 0,
                read_seq: 0,
                seq: 0,
            },
        }
    }

    #[test]
    fn numbers_up_to_the_bounds_are_accepted() {
        assert_eq!(
            append(MAX_TERM, MAX_INDEX - 1, MAX_TERM).check_numbers(),
            Ok(())
        );
        assert_eq!(append(2, 5, 2).check_numbers(), Ok(()));
    }

    #[test]
    fn terms_and_indexes_near_the_top_of_u64_are_refused() {
        let cases = [
            (append(u64::MAX, 5, 1), "term 18446744073709551615"),
            (append(MAX_TERM + 1, 5, 1), "term 4611686018427387905"),
            (append(2, u64::MAX, 1), "prev_log_index"),
            (append(2, 5, u64::MAX), "entry term"),
        ];
        for (msg, expect) in cases {
            let e = msg.check_numbers().expect_err(expect);
            assert!(e.contains(expect) && e.contains("above the highest"), "{e}");
        }
        let response = Message {
            from: NodeId::new("8001"),
            to: NodeId::new("8000"),
            term: 2,
            body: MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                conflict: Some(Conflict {
                    term: Some(u64::MAX),
                    index: 3,
                }),
                read_seq: 0,
                seq: 0,
                incarnation: 0,
            },
        };
        assert!(response.check_numbers().is_err());
    }

    #[test]
    fn messages_print_as_the_paper_writes_them() {
        let entry = |index, term, data| Entry { index, term, data };
        let msg = Message {
            from: NodeId::new("8000"),
            to: NodeId::new("8001"),
            term: 2,
            body: MessageBody::AppendEntries {
                prev_log_index: 4,
                prev_log_term: 1,
                entries: vec![
                    entry(5, 2, EntryData::Noop),
                    entry(6, 2, EntryData::Command("foo".into())),
                ],
                leader_commit: 4,
                read_seq: 0,
                seq: 0,
            },
        };
        assert_eq!(
            msg.to_string(),
            r#"8000→8001 AppendEntries(term 2, prev 4@1, entries [5@2 noop, 6@2 "foo"], commit 4)"#
        );
        let long = entry(7, 2, EntryData::Command("x".repeat(1000)));
        let shown = long.to_string();
        assert!(
            shown.ends_with("(1000 bytes)") && shown.len() < 70,
            "{shown}"
        );
        let many: Vec<Entry> = (1..=9).map(|i| entry(i, 1, EntryData::Noop)).collect();
        assert_eq!(
            ShowEntries(&many).to_string(),
            "[1@1 noop .. 9@1 noop] (9 entries)"
        );
    }
}
