//! How a node is configured, and the limits every node keeps.

use crate::message::{Incarnation, NodeId};
use std::collections::BTreeMap;

/// Most entries one AppendEntries message carries.
pub const MAX_ENTRIES_PER_APPEND: usize = 512;
/// About the most bytes of entries one AppendEntries message carries (one
/// entry more if a single entry is larger), well below the wire's line
/// limit (`transport::MAX_LINE_BYTES`).
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;
/// The largest command a leader accepts: one entry must fit in one
/// AppendEntries line and one storage record with room to spare.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// Most entries the leader lets be in flight (sent, not yet acknowledged) to
/// one follower before it waits for answers.
pub const MAX_INFLIGHT_ENTRIES: u64 = 4096;
/// About the most bytes of entries in flight to one follower (one more
/// AppendEntries is sent while below it). With large values the entry count
/// alone would let gigabytes pile up in queues and socket buffers for a
/// slow follower; this keeps the leader's memory for it near 8 MiB.
pub const MAX_INFLIGHT_BYTES: usize = 8 * 1024 * 1024;
/// Most replaced incarnations a leader remembers, so that late answers from
/// a data directory that has since been replaced are recognised and
/// ignored. Only a leader's own term needs them (older answers carry an
/// older term), and each entry is a member that lost its disk in that term.
pub const MAX_RETIRED_INCARNATIONS: usize = 64;

/// How a node is configured. Times are in ticks; the driver decides how long
/// a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// The incarnation of this node's data directory (drawn when the
    /// directory was created; `0`: unknown). Sent with every answer, so a
    /// leader notices a member that came back with an empty directory.
    pub incarnation: Incarnation,
    /// The voting members the cluster started with, this node included
    /// (empty for a node that joins an existing cluster). Membership changes
    /// in the log or a snapshot replace it (dissertation ch. 4).
    pub voters: Vec<NodeId>,
    /// Where the starting voters listen, if known: carried into membership
    /// entries so every node learns every address.
    pub addresses: BTreeMap<NodeId, String>,
    /// The election timeout is drawn uniformly from this inclusive range
    /// each time the timer is reset (§5.2: randomised timeouts make split
    /// votes rare).
    pub election_timeout_ticks: (u64, u64),
    /// How often a leader sends AppendEntries when it has nothing else to
    /// say; must be well below the election timeout.
    pub heartbeat_ticks: u64,
    /// Ask "could I win?" before starting an election (dissertation §9.6).
    pub pre_vote: bool,
    /// Leaders step down when they stop hearing from a majority, and
    /// followers that hear from a leader ignore vote requests (§4.2.3, §6.2).
    pub check_quorum: bool,
    /// Switches that each break one rule on purpose, so the simulator can
    /// show that its checks catch the bug. Test builds only.
    #[cfg(feature = "bug-switches")]
    pub bugs: BugSwitches,
}

impl Config {
    /// A configuration with the defaults: with a 10 ms tick, an election
    /// timeout of 150–300 ms and a heartbeat every 50 ms.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            incarnation: 0,
            voters,
            addresses: BTreeMap::new(),
            election_timeout_ticks: (15, 30),
            heartbeat_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            #[cfg(feature = "bug-switches")]
            bugs: BugSwitches::default(),
        }
    }
}

/// Deliberate bugs, one per rule, for tests that prove the checks can fail.
/// They can only be turned on through `Config::bugs`, which exists only
/// with the `bug-switches` feature; in a release build every switch reads
/// as off.
#[derive(Clone, Copy, Debug, Default)]
pub struct BugSwitches {
    /// Break §5.4.2: commit entries of earlier terms by counting replicas.
    pub commit_earlier_term: bool,
    /// Break §5.4.1: grant votes without the up-to-date check.
    pub vote_without_log_check: bool,
    /// Break Figure 2, AppendEntries receiver, rule 3: overwrite a
    /// conflicting entry but keep the entries after it.
    pub keep_conflicting_suffix: bool,
    /// Break §6.4: answer reads from local state without confirming
    /// leadership with a round of heartbeats.
    pub read_without_quorum: bool,
    /// Break Figure 13, InstallSnapshot receiver rule 7: keep the log after
    /// a snapshot even when it conflicts with the snapshot's last entry.
    pub keep_log_conflicting_with_snapshot: bool,
    /// Break §4.1 and the raft-dev 2015 fix: start a membership change while
    /// another is uncommitted, or before the leader has committed an entry
    /// of its term.
    pub overlapping_membership_changes: bool,
    /// Count a vote whatever the incarnation of the directory it came
    /// from: a member that lost its disk may then vote twice in a term.
    pub count_votes_from_any_incarnation: bool,
}
