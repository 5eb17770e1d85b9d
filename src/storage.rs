//! Durable storage: the hard state and the log, in one append-only file,
//! and the latest snapshot beside it.
//!
//! Raft's safety rests on one promise (Figure 2, "Persistent state on all
//! servers"): before a node answers any message, `current_term`, `voted_for`
//! and `log[]` are on stable storage. This module keeps that promise, and
//! nothing else: it does not know about roles, commit indexes or peers.
//! With log compaction (§7) a snapshot of the state machine stands in for
//! the committed start of the log, and must be just as durable.
//!
//! # On-disk format
//!
//! A node keeps everything it must not forget in one directory, `DIR`:
//!
//! ```text
//! DIR/meta.json   which node this directory belongs to (written once)
//! DIR/log         current_term, voted_for and the log entries after the
//!                 snapshot (append-only; replaced whole by compaction)
//! DIR/snapshot    the latest snapshot, if the node has taken one
//! ```
//!
//! `DIR/snapshot.tmp` and `DIR/log.tmp` exist only while a snapshot is
//! being saved; see "Snapshots and compaction".
//!
//! ## `DIR/meta.json`
//!
//! ```text
//! {
//!   "id": "8000",
//!   "members": [
//!     "8000",
//!     "8001",
//!     "8002"
//!   ]
//! }
//! ```
//!
//! The node id and the sorted member list (which includes the node itself).
//! Starting a node with a different id or member list than the directory was
//! created with is refused: it usually means the wrong `DIR` or the wrong
//! peers were given, and mixing one node's log with another's identity breaks
//! Raft. It is written to `meta.json.tmp`, fsynced, renamed into place, and
//! the directory is fsynced, so it is either absent or complete.
//!
//! ## `DIR/log`
//!
//! A 12-byte header, then records back to back, then zeros up to the end of
//! the file (space reserved for the next records, see "Space ahead of the
//! log"). All integers are little-endian.
//!
//! ```text
//! header   0..8    magic: the ASCII bytes "RAFT-LOG"
//!          8..12   format version, u32: 1, or 2 for a compacted log
//!
//! record   0..4    payload length N, u32, 1 <= N <= MAX_RECORD_BYTES (8 MiB)
//!          4..8    CRC-32 (IEEE, as crc32fast computes it) of the payload, u32
//!          8..8+N  payload: a JSON array of operations, applied in order
//! ```
//!
//! The operations:
//!
//! ```text
//! {"hard_state":{"current_term":3,"voted_for":"8001"}}   current_term and voted_for are now these
//! {"entry":{"term":3,"index":7,"data":{"command":"foo"}}} append entry 7 (must be last index + 1)
//! {"entry":{"term":3,"index":8,"data":"noop"}}            append entry 8
//! {"truncate_from":5}                                     drop every entry with index >= 5
//! {"compacted":{"last_included_index":9,"last_included_term":2}}
//!                                  the log starts after entry 9, of term 2, which DIR/snapshot holds
//! ```
//!
//! A new log is written in version 1, which has no `compacted` operation,
//! so that a node that never took a snapshot can still be run by a build
//! older than snapshots. Compaction writes version 2: the same records,
//! where the first record holds the hard state, then `compacted`, then the
//! entries after the snapshot. An older build refuses version 2 ("unsupported
//! format version") instead of misreading it. `compacted` anywhere else, or
//! in a version 1 log, is corruption.
//!
//! The log of a new node 8000 that has voted for 8001 in term 1, and done
//! nothing else yet (`xxd DIR/log`): the header, then one record of 54
//! (0x36) bytes.
//!
//! ```text
//! 00000000: 5241 4654 2d4c 4f47 0100 0000 3600 0000  RAFT-LOG....6...
//! 00000010: 16fb 47f6 5b7b 2268 6172 645f 7374 6174  ..G.[{"hard_stat
//! 00000020: 6522 3a7b 2263 7572 7265 6e74 5f74 6572  e":{"current_ter
//! 00000030: 6d22 3a31 2c22 766f 7465 645f 666f 7222  m":1,"voted_for"
//! 00000040: 3a22 3830 3031 227d 7d5d                 :"8001"}}]
//! ```
//!
//! **One record per sync.** Operations are buffered in memory and written by
//! `sync` as one record with one `fsync` (group commit). So a record is only
//! ever started after every record before it was fsynced, and a crash can
//! damage only the last record, however the file system orders the blocks of
//! an unfinished write. (A batch larger than `MAX_RECORD_BYTES` is split into
//! several records, each fsynced before the next is written, which keeps this
//! true.)
//!
//! **Space ahead of the log.** When a record would not fit in the file,
//! `sync` first extends the file with `set_len` to [`PREALLOCATE_BYTES`]
//! (1 MiB) past that record's end, and then writes records into that zeroed
//! space, at the end of the last record rather than at the end of the file.
//! So most syncs overwrite bytes inside the file instead of growing it, and
//! `sync_data` has no new file size to make durable: on this project's test
//! machine that took an fsync from about 130 to about 90 µs, and the fsync
//! of a follower is on the path of every write (README, Performance). Reading
//! the log back, eight zero bytes where a record header should be, with only
//! zeros after them, are the end of the log. (A header of all zeros is never
//! a record: a length of 0 is invalid.)
//!
//! **Truncation is a record, not a rewrite.** When a leader overwrites a
//! conflicting suffix, the log gets a `truncate_from` operation; the file is
//! never cut in place to drop entries. Cutting the file would also cut any
//! hard-state record written after those entries, and a forgotten vote lets a
//! node vote twice in one term: two leaders. Replay applies the operations in
//! order, so the later hard state survives.
//!
//! ## `DIR/snapshot`
//!
//! A 20-byte header, then the snapshot as JSON. Integers are little-endian.
//!
//! ```text
//! 0..8     magic: the ASCII bytes "RAFT-SNP"
//! 8..12    format version, u32 (this is version 1)
//! 12..16   payload length N, u32, 1 <= N <= MAX_SNAPSHOT_BYTES (64 MiB)
//! 16..20   CRC-32 of the payload, u32 (as for log records)
//! 20..20+N payload: the JSON of a `Snapshot`; the file ends there
//! ```
//!
//! For example, a snapshot up to entry 2 of term 2, with the state machine's
//! value `b` (the payload, 157 bytes, so a file of 177):
//!
//! ```text
//! {"last_included_index":2,"last_included_term":2,"membership":{"voters":
//! {"8000":"127.0.0.1:8000","8001":"127.0.0.1:8001","8002":"127.0.0.1:8002"}},"data":"b"}
//! ```
//!
//! (on one line). If the log held entries 1 to 3 then, the compacted log
//! beside it is the version 2 header and one record:
//!
//! ```text
//! [{"hard_state":{"current_term":2,"voted_for":"8001"}},
//!  {"compacted":{"last_included_index":2,"last_included_term":2}},
//!  {"entry":{"term":2,"index":3,"data":{"command":"c"}}}]
//! ```
//!
//! ## Snapshots and compaction
//!
//! `Storage::save_snapshot` first syncs whatever is buffered (so the log on
//! disk is the whole truth, and what the caller buffered before is durable
//! when it returns). Then, each step durable before the next:
//!
//! ```text
//! 1. write DIR/snapshot.tmp, fsync it, rename it to DIR/snapshot, fsync DIR
//! 2. write DIR/log.tmp (header 2, then hard state, compacted, kept entries),
//!    fsync it (after locking it), rename it to DIR/log, fsync DIR
//! ```
//!
//! The kept entries follow Figure 13, InstallSnapshot receiver rules 6 and 7:
//! if the log holds the snapshot's last entry with the same term, the entries
//! after it are kept; otherwise the whole log goes, since it conflicts with
//! committed state. The hard state is always kept. Rewriting the log, rather
//! than recording the cut, is what bounds disk use: the disk holds the
//! snapshot and the entries after it, and nothing older.
//!
//! Why this order, and every fsync in it:
//!
//! - The rename of step 1 is the moment the snapshot takes effect. Before
//!   it, the old snapshot and log are untouched; after it, recovery can
//!   finish step 2 from the snapshot and the old log. A crash anywhere gives
//!   the state before the call or the state after it.
//! - A temporary file is fsynced before its rename, or a power loss could
//!   leave a torn file under the final name.
//! - `DIR` is fsynced after the snapshot's rename, or a power loss could
//!   keep step 2's rename but undo step 1's: a log starting after entries
//!   that no file holds.
//! - `DIR` is fsynced after the log's rename, or a power loss could bring
//!   the old log back after later syncs were acknowledged from the new one.
//! - The new log is locked before it is renamed into place, so `DIR/log` is
//!   locked at every moment.
//!
//! ## Recovery (what `Storage::open` does)
//!
//! With the log locked, `open` deletes a leftover `DIR/snapshot.tmp` or
//! `DIR/log.tmp` with a warning: a temporary file is renamed into place only
//! once complete, so one still there is what a crash left, and was never
//! part of the durable state. It then loads `DIR/snapshot`, if there is one.
//! Any damage to it stops the node with an error naming the file and
//! offset: it was fsynced before it was renamed into place, so damage is not
//! a torn write, and the entries it replaced are no longer anywhere else.
//!
//! Replay then reads the log's records in order and rebuilds the hard state
//! and the log.
//!
//! - Zeros from the end of the last record to the end of the file are the
//!   space reserved ahead of the log: no damage, nothing to report.
//! - A damaged **last** record (a short header, a short payload, a length of
//!   0 or above the limit, a bad CRC) with no valid record after it is taken
//!   for a torn write: the node stopped while writing it, before `sync`
//!   returned, so it was never acknowledged. The file is cut back to the end
//!   of the last good record and fsynced, a warning names the file and
//!   offset, and the node starts.
//! - Damage **before** the end refuses to start, with an error naming the file
//!   and offset. "Before the end" means: scanning forward byte by byte from
//!   the damage finds a position where a whole record starts, with a length
//!   in range, a matching CRC and a payload that decodes. Such a record was
//!   written after the damaged one was fsynced, so the damaged one held
//!   durable, possibly acknowledged data; dropping it silently would break
//!   the promise Raft makes. (A payload is JSON text and never contains a
//!   zero byte, while every valid length has a zero high byte, so no fake
//!   record can be found inside a torn payload.)
//! - A record with a correct CRC that does not make sense (an entry whose
//!   index is not last index + 1, a `truncate_from` outside the log, an
//!   undecodable payload) is corruption too, wherever it is.
//! - An empty file (0 bytes), or a file shorter than the header whose bytes
//!   are the start of the header, is a crash while creating the file: it is
//!   treated as new (with a warning if it was not empty).
//! - A full header with another magic: "not a raft log". Another version:
//!   "unsupported format version".
//!
//! Last, the log is checked against the snapshot:
//!
//! - The log starts where the snapshot ends (`compacted` names the same index
//!   and term, or neither exists): the usual case.
//! - The log starts before the snapshot ends: the node stopped between the
//!   two renames. `open` finishes the compaction: it drops the entries up to
//!   the snapshot's index, and applies rules 6 and 7 to the rest (if the
//!   log's entry at that index has another term, the entries after it go
//!   too), rewrites the log as step 2 would, and warns.
//! - The log starts after the snapshot ends (or there is no snapshot), or
//!   at the same index with another term: entries that no file holds, so an
//!   error. So is an empty log, or a torn header, beside a snapshot: the log
//!   was complete once, and the hard state is lost.
//!
//! Limits worth knowing:
//!
//! - Damage to the last record cannot be told apart from a torn write, so a
//!   bit flipped on disk inside the newest record, after it was synced, loses
//!   that newest batch with only a warning.
//! - Replay reads the whole file into memory, and so does `save_snapshot`
//!   to copy the entries it keeps. Compaction bounds the file to the
//!   entries since the last snapshot (plus any overwritten or truncated
//!   since), so this is one snapshot interval of log.
//! - A snapshot is held in memory whole, and limited to
//!   `MAX_SNAPSHOT_BYTES`; `save_snapshot` refuses a larger one.
//!
//! While a `Storage` has the log open, the file is locked (an advisory lock,
//! `flock` on Unix, released when the process dies), so a second node started
//! on the same directory is refused instead of interleaving its writes.
//! Compaction locks the new log before renaming it into place, and `open`
//! checks that the file it locked is still `DIR/log`, so no moment is left
//! where a second node could slip in.
//!
//! # Failures
//!
//! A failed write or fsync in `sync` returns [`StorageError::SyncFailed`],
//! and the node must stop: after such a failure it cannot know what reached
//! the disk (and retrying an fsync can report success for data the kernel has
//! already dropped). Every later call on the same `Storage` returns
//! [`StorageError::Poisoned`]. Restarting replays the log, which cuts off any
//! torn record.
//!
//! In `save_snapshot`, a failure while writing `snapshot.tmp` changes
//! nothing else: the file is removed, [`StorageError::Io`] is returned, and
//! the node may go on with its uncompacted log. A failure from the first
//! rename on returns [`StorageError::CompactionFailed`] and poisons the
//! `Storage` the same way; restarting recovers the state before or after the
//! snapshot, as after a crash.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::message::{Entry, HardState, Index, NodeId, Snapshot, Term, MAX_INDEX, MAX_TERM};

/// The log file's name inside the data directory.
pub const LOG_FILE: &str = "log";

/// Where a compacted log is written before it is renamed over `log`.
pub const LOG_TEMP_FILE: &str = "log.tmp";

/// The snapshot file's name inside the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot";

/// Where a snapshot is written before it is renamed into place.
pub const SNAPSHOT_TEMP_FILE: &str = "snapshot.tmp";

/// The metadata file's name inside the data directory.
pub const META_FILE: &str = "meta.json";

/// Where `meta.json` is written before it is renamed into place.
const META_TEMP_FILE: &str = "meta.json.tmp";

/// The largest payload one record may have. A length above it is corruption.
/// A single entry must encode to less than this; the driver should keep
/// client commands well below it.
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

// Every valid length then has a zero high byte, which JSON text never
// contains: no record can be mistaken to start inside a payload.
const _: () = assert!(MAX_RECORD_BYTES < 1 << 24);

/// The largest snapshot payload (its JSON encoding). `save_snapshot` refuses
/// a larger one, and recovery takes a larger length for damage. The whole
/// snapshot is held in memory and sent to followers, so a state machine that
/// outgrows this needs a snapshot format streamed in pieces, not a bigger
/// limit.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

// The snapshot's length field is a u32.
const _: () = assert!(MAX_SNAPSHOT_BYTES <= u32::MAX as usize);

/// The first bytes of every log file.
const MAGIC: [u8; 8] = *b"RAFT-LOG";

/// The log format of a log that was never compacted. New logs are still
/// written in it, so that a directory without a snapshot stays readable by
/// builds older than snapshots.
const FORMAT_VERSION: u32 = 1;

/// The log format of a log rewritten by compaction: version 1 plus the
/// `compacted` operation at its start. An older build refuses it with
/// "unsupported format version" instead of misreading it.
const COMPACTED_FORMAT_VERSION: u32 = 2;

/// Magic plus version.
const HEADER_LEN: usize = MAGIC.len() + 4;

/// Payload length plus CRC in front of every record.
const FRAME_LEN: usize = 8;

/// The first bytes of every snapshot file.
const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFT-SNP";

/// The version of the snapshot file format described in the module docs.
const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Magic, version, payload length and CRC: where a snapshot's JSON starts.
const SNAPSHOT_HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 4 + FRAME_LEN;

/// How far ahead of its last record the log file is extended, in one
/// `set_len`, when a record would not fit: see "Space ahead of the log" in
/// the module docs.
pub const PREALLOCATE_BYTES: u64 = 1024 * 1024;

/// How much buffer capacity `sync` keeps for the next batch; a larger
/// buffer, left by an unusually big batch, is given back.
const RETAINED_BUFFER_BYTES: usize = 1024 * 1024;

/// Who a data directory belongs to: `DIR/meta.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// This node.
    pub id: NodeId,
    /// Every member of the cluster, sorted, including `id`.
    pub members: Vec<NodeId>,
}

impl Metadata {
    /// Sorts and deduplicates `members`, so that order does not count as a
    /// different member list; `None` if `id` is not a member.
    fn normalized(&self) -> Option<Metadata> {
        let mut members = self.members.clone();
        members.sort();
        members.dedup();
        members.binary_search(&self.id).ok()?;
        Some(Metadata {
            id: self.id.clone(),
            members,
        })
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<&str> = self.members.iter().map(NodeId::as_str).collect();
        write!(f, "node {} with members [{}]", self.id, members.join(", "))
    }
}

/// What was durable when the node last stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// `current_term` and `voted_for` as last synced.
    pub hard_state: HardState,
    /// The log after the snapshot: contiguous, from the snapshot's
    /// `last_included_index + 1` (from 1 without a snapshot).
    pub entries: Vec<Entry>,
    /// What replay repaired (a torn last record cut off, a torn header
    /// rewritten, a compaction finished, a temporary file deleted): worth
    /// logging, not worth stopping for.
    pub warnings: Vec<String>,
    /// The latest snapshot saved, which replaces the log up to its
    /// `last_included_index`; `None` if there is none.
    pub snapshot: Option<Snapshot>,
}

/// Everything that can go wrong. Each message names the file (and the byte
/// offset where there is one) and says what to do.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O call failed while opening the directory, or while
    /// `save_snapshot` prepared the snapshot (reading the log back, writing
    /// `snapshot.tmp`): then nothing else changed, and the `Storage` is
    /// still usable.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// A write or fsync in `sync` failed: the node must stop.
    SyncFailed { path: PathBuf, source: io::Error },
    /// A step of `save_snapshot` (or of the compaction `open` finishes)
    /// failed once the disk had begun to change: the node must stop, and a
    /// restart recovers the state before the snapshot or after it.
    CompactionFailed {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// An earlier `sync` failed; this `Storage` can no longer be used.
    Poisoned { path: PathBuf },
    /// Another process (or another `Storage`) has the log open.
    Locked { path: PathBuf },
    /// The log file has a full header that is not ours.
    NotARaftLog { path: PathBuf },
    /// The log or snapshot file is ours, in a format this build does not
    /// read.
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        /// The versions this build reads, for the message.
        readable: &'static str,
    },
    /// Damage that is not a torn last record: durable data would be lost.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The snapshot file is damaged. It is only renamed into place once
    /// complete and fsynced, so this is never a crash while writing it.
    CorruptSnapshot {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// `meta.json` names another node or another member list.
    MetadataMismatch {
        path: PathBuf,
        stored: Metadata,
        given: Metadata,
    },
    /// `meta.json` cannot be read as metadata.
    BadMetadata { path: PathBuf, reason: String },
    /// A non-empty log without `meta.json`: whose log is it?
    MissingMetadata { path: PathBuf },
    /// The caller asked for something impossible (a gap in the log, a term
    /// going down, an entry above the size limit). Nothing was changed.
    InvalidRequest { path: PathBuf, reason: String },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io {
                path,
                action,
                source,
            } => write!(
                f,
                "{}: {action} failed: {source}. {}",
                path.display(),
                io_advice(source, path)
            ),
            StorageError::SyncFailed { path, source } => write!(
                f,
                "{}: writing or fsyncing the log failed: {source}. The node must stop now: \
                 after a failed write or fsync it cannot know what reached the disk. {} \
                 Restarting replays the log and cuts off any torn record.",
                path.display(),
                io_advice(source, path)
            ),
            StorageError::CompactionFailed {
                path,
                action,
                source,
            } => write!(
                f,
                "{}: {action} failed while saving a snapshot: {source}. The node must stop now: \
                 what reached the disk is unknown. {} Restarting recovers either the state \
                 before the snapshot or the state after it (finishing the compaction if the \
                 snapshot is in place).",
                path.display(),
                io_advice(source, path)
            ),
            StorageError::Poisoned { path } => write!(
                f,
                "{}: an earlier write or fsync failed, so what is on disk is unknown; \
                 stop the node and restart it.",
                path.display()
            ),
            StorageError::Locked { path } => write!(
                f,
                "{}: the log is in use by another raft process (or another Storage in this \
                 one). Two nodes writing one log would corrupt it: stop the other node, or \
                 give this one its own data directory.",
                path.display()
            ),
            StorageError::NotARaftLog { path } => write!(
                f,
                "{}: not a raft log (it does not start with the {:?} header). \
                 Point the node at its own data directory, or move this file away.",
                path.display(),
                String::from_utf8_lossy(&MAGIC)
            ),
            StorageError::UnsupportedVersion {
                path,
                version,
                readable,
            } => write!(
                f,
                "{}: written in format version {version}, but this build reads only \
                 {readable}. Run the raft build that wrote it.",
                path.display()
            ),
            StorageError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "{}: the log is damaged at byte offset {offset}: {reason}. Records that were \
                 already durable (and maybe acknowledged) would be lost, so the node will not \
                 start. Do not edit the file by hand: restore the data directory from a backup \
                 of this node, or remove this node from the cluster (`remove <id>` at the \
                 leader), delete the directory and add it back as an empty node (`add`).",
                path.display()
            ),
            StorageError::CorruptSnapshot {
                path,
                offset,
                reason,
            } => write!(
                f,
                "{}: the snapshot is damaged at byte offset {offset}: {reason}. A snapshot is \
                 fsynced before it is renamed into place, so this is damage on disk, not a \
                 crash while writing it; the log entries it replaced are gone, so the node \
                 will not start. Do not edit the file by hand: restore the data directory \
                 from a backup of this node, or remove this node from the cluster (`remove \
                 <id>` at the leader), delete the directory and add it back as an empty node \
                 (`add`).",
                path.display()
            ),
            StorageError::MetadataMismatch {
                path,
                stored,
                given,
            } => write!(
                f,
                "{}: this data directory belongs to {stored}, but the node was started as \
                 {given}. Start it with the id and peers it was created with, or give it its \
                 own data directory.",
                path.display()
            ),
            StorageError::BadMetadata { path, reason } => write!(
                f,
                "{}: not valid node metadata: {reason}. Restore the file from a backup, or \
                 give the node its own data directory.",
                path.display()
            ),
            StorageError::MissingMetadata { path } => write!(
                f,
                "{}: the log exists but {META_FILE} beside it is missing, so there is no \
                 telling which node it belongs to. Restore {META_FILE}, or give the node its \
                 own data directory.",
                path.display()
            ),
            StorageError::InvalidRequest { path, reason } => write!(
                f,
                "{}: refused: {reason}. Nothing was written; this is a bug in the caller.",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. }
            | StorageError::SyncFailed { source, .. }
            | StorageError::CompactionFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What a person can do about an I/O error of this kind.
fn io_advice(error: &io::Error, path: &Path) -> String {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "The disk is full: free some space, then restart the node.".to_string()
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => format!(
            "Check that the node may read and write {} (and that the disk is not read-only).",
            path.display()
        ),
        io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
            "Check the data directory path given to the node.".to_string()
        }
        _ => "Check the disk and the data directory path.".to_string(),
    }
}

/// One operation inside a record. `Cow` lets `append` encode borrowed
/// entries without cloning them, and replay decode owned ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op<'a> {
    /// `current_term` and `voted_for` are now these.
    HardState(Cow<'a, HardState>),
    /// Append this entry; its index is last index + 1.
    Entry(Cow<'a, Entry>),
    /// Drop every entry with index >= this.
    TruncateFrom(Index),
    /// The log starts after this entry, which a snapshot holds (§7). Only
    /// valid at the start of a version 2 log, before any entry.
    Compacted(Compacted),
}

/// The last entry a snapshot replaced, as the `compacted` operation names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Compacted {
    last_included_index: Index,
    last_included_term: Term,
}

/// One change `save_snapshot` makes to the disk, in the order it makes
/// them. Test builds (the `bug-switches` feature) report each one to a
/// crash hook, which can stop the node right after it: that is how
/// `tests/storage.rs` checks that a crash at every step recovers the state
/// before the snapshot or the state after it. Names are file names inside
/// the data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskStep {
    /// A temporary file was written in full, not yet fsynced: after a power
    /// loss any part of it may be missing.
    Wrote(&'static str),
    /// A file was fsynced: its contents are durable.
    Synced(&'static str),
    /// `from` was renamed to `to`. Until the directory is fsynced, a power
    /// loss may undo the rename.
    Renamed {
        from: &'static str,
        to: &'static str,
    },
    /// The data directory was fsynced: every rename before it is durable.
    SyncedDir,
}

/// Deliberate mistakes in `save_snapshot`, one per rule of its crash
/// safety, so that the crash tests can show they catch each one. They can
/// only be turned on through `Storage::set_bugs`, which exists only with the
/// `bug-switches` feature; in a release build every switch reads as off.
#[derive(Clone, Copy, Debug, Default)]
pub struct StorageBugSwitches {
    /// Rewrite the log before the snapshot is in place: a crash in between
    /// leaves a log that starts after entries no file holds.
    pub compact_log_before_snapshot: bool,
    /// Do not fsync the directory after renaming the snapshot into place: a
    /// power loss can then keep the log's rename but undo the snapshot's.
    pub skip_dir_fsync_after_snapshot: bool,
    /// Do not fsync the directory after renaming the new log into place: a
    /// power loss can undo the rename after later syncs went to the new
    /// file, losing acknowledged entries.
    pub skip_dir_fsync_after_log: bool,
    /// Rename the temporary files without fsyncing them first: a power loss
    /// can leave a torn file under the final name.
    pub skip_fsync_before_rename: bool,
}

/// Stops `save_snapshot` after a step when it returns true (test builds).
#[cfg(feature = "bug-switches")]
type CrashHook = Box<dyn FnMut(DiskStep) -> bool + Send>;

/// The durable state of one node: its hard state and its log.
///
/// Changes are buffered in memory until [`Storage::sync`], which writes them
/// as one record and makes them durable with one fsync. The driver calls
/// `sync` once per loop iteration, before it sends any message or answers any
/// client ("persist before you answer").
///
/// [`Storage::save_snapshot`] makes a snapshot durable and compacts the log
/// to the entries after it, so that disk use and restart time stay bounded.
///
/// The log file is locked (an advisory lock, released when the `Storage` is
/// dropped or the process dies) so that two nodes cannot share a directory.
pub struct Storage {
    dir: PathBuf,
    log_path: PathBuf,
    /// The log, opened for reading and writing; records are written at
    /// `log_bytes`, not at the end of the file.
    file: File,
    /// The last entry's index, counting buffered changes; the snapshot's
    /// index if the log after it is empty.
    last_index: Index,
    /// The last entry the stored snapshot replaced (0, 0 without one). The
    /// log on disk starts right after it.
    snapshot: Compacted,
    /// The sizes of the log (as far as synced: where the next record goes)
    /// and snapshot files.
    log_bytes: u64,
    snapshot_bytes: u64,
    /// The log file's length: `log_bytes` plus the zeros ahead of it.
    file_len: u64,
    /// The latest hard state, counting buffered changes.
    hard_state: HardState,
    /// Encoded records waiting for `sync`. Sealed records end at
    /// `record_ends`; the last one may still be open (its frame not yet
    /// filled in, its JSON array not yet closed).
    pending: Vec<u8>,
    record_ends: Vec<usize>,
    /// Where the open record starts in `pending`, if there is one.
    open_record: Option<usize>,
    /// Reused to encode one operation at a time.
    scratch: Vec<u8>,
    fsyncs: u64,
    /// The longest a `sync` took, writes and fsyncs together: how long the
    /// disk held up the driver's loop at worst.
    longest_sync: std::time::Duration,
    /// Set when a write or fsync failed: see the module docs.
    poisoned: bool,
    #[cfg(feature = "bug-switches")]
    bugs: StorageBugSwitches,
    #[cfg(feature = "bug-switches")]
    crash_hook: Option<CrashHook>,
}

impl fmt::Debug for Storage {
    /// Leaves out the pending bytes, which may be megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("log_path", &self.log_path)
            .field("last_index", &self.last_index)
            .field("snapshot_index", &self.snapshot.last_included_index)
            .field("hard_state", &self.hard_state)
            .field("pending_bytes", &self.pending.len())
            .field("fsyncs", &self.fsyncs)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// Where `pending` was before an `append`, to undo it if it fails halfway.
struct Mark {
    pending_len: usize,
    records: usize,
    open_record: Option<usize>,
    last_index: Index,
}

impl Storage {
    /// Opens (creating if missing, with an fsync of the parent directory)
    /// `dir`, checks or creates `dir/meta.json`, loads the snapshot if there
    /// is one, replays the log file and returns what was durable.
    ///
    /// If the node stopped in the middle of [`Storage::save_snapshot`], this
    /// deletes its temporary files and, if the snapshot was already in place,
    /// finishes the compaction, so the files are back in their usual shape
    /// before the node goes on (see "Recovery" in the module docs).
    ///
    /// `meta.members` may come in any order but must include `meta.id`; a
    /// directory created with another id or member list is refused.
    pub fn open(dir: &Path, meta: &Metadata) -> Result<(Storage, Recovered), StorageError> {
        let meta = meta
            .normalized()
            .ok_or_else(|| StorageError::InvalidRequest {
                path: dir.join(META_FILE),
                reason: format!(
                    "the member list of {meta} does not include the node itself; \
                     pass every member, this node included"
                ),
            })?;
        let mut fsyncs = 0;
        create_dir_durably(dir, &mut fsyncs)?;
        let log_path = dir.join(LOG_FILE);
        check_or_create_metadata(dir, &meta, &log_path, &mut fsyncs)?;
        let (mut file, created) = open_log_file(&log_path)?;
        let mut warnings = Vec::new();
        // Only now, with the lock held: no other node can be in the middle of
        // a compaction here, so a temporary file is what a crash left.
        remove_leftover_temp_files(dir, &mut warnings)?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (snapshot, snapshot_bytes) = match read_snapshot(&snapshot_path)? {
            Some((snapshot, len)) => (Some(snapshot), len),
            None => (None, 0),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| io_error(&log_path, "reading the log", source))?;

        let version = if created {
            None
        } else {
            log_version(&log_path, &bytes)?
        };
        let version = match version {
            Some(version) => version,
            None => {
                if let Some(snapshot) = &snapshot {
                    // Once a snapshot exists, the log is only ever replaced
                    // by a complete, fsynced one: this is not a crash.
                    return Err(StorageError::Corrupt {
                        path: log_path,
                        offset: 0,
                        reason: format!(
                            "the log is empty or has no complete header, but {} holds a \
                             snapshot up to index {}, so the log was complete once; \
                             current_term and voted_for are lost",
                            snapshot_path.display(),
                            snapshot.last_included_index
                        ),
                    });
                }
                if !bytes.is_empty() {
                    warnings.push(format!(
                        "{}: the header was torn ({} of {HEADER_LEN} bytes; the node stopped \
                         while creating the file); started a new, empty log",
                        log_path.display(),
                        bytes.len()
                    ));
                }
                write_header(&mut file, dir, &log_path, &mut fsyncs)?;
                bytes = header(FORMAT_VERSION).to_vec();
                FORMAT_VERSION
            }
        };

        let replayed = replay(&log_path, &bytes, version)?;
        let mut file_len = bytes.len() as u64;
        if let Some(torn) = &replayed.torn {
            file_len = replayed.valid_len as u64;
            cut_torn_tail(&file, &log_path, replayed.valid_len, &mut fsyncs)?;
            warnings.push(format!(
                "{}: cut off a torn record at byte offset {} ({} bytes up to the end of the \
                 file: {}); the node most likely stopped while writing it, before it was \
                 durable, so it was never acknowledged",
                log_path.display(),
                replayed.valid_len,
                bytes.len() - replayed.valid_len,
                torn
            ));
        }
        drop(bytes);

        let base = snapshot
            .as_ref()
            .map_or(Compacted::default(), Compacted::of);
        check_log_start(&log_path, &snapshot_path, &replayed, base)?;
        // The log starts before the snapshot's end only if the node stopped
        // between renaming the snapshot into place and replacing the log.
        let finish_compaction = replayed.start != base;
        let entries = if finish_compaction {
            let last_index = replayed.last_index();
            let conflict = replayed.term_of(base.last_included_index);
            let kept = entries_after_snapshot(replayed.start, replayed.entries, base);
            warnings.push(finished_compaction_warning(
                &snapshot_path,
                base,
                last_index,
                conflict,
                kept.len(),
            ));
            kept
        } else {
            replayed.entries
        };

        let mut storage = Storage {
            dir: dir.to_path_buf(),
            log_path,
            file,
            last_index: base.last_included_index + entries.len() as Index,
            snapshot: base,
            log_bytes: replayed.valid_len as u64,
            snapshot_bytes,
            file_len,
            hard_state: replayed.hard_state.clone(),
            pending: Vec::new(),
            record_ends: Vec::new(),
            open_record: None,
            scratch: Vec::new(),
            fsyncs,
            longest_sync: std::time::Duration::ZERO,
            poisoned: false,
            #[cfg(feature = "bug-switches")]
            bugs: StorageBugSwitches::default(),
            #[cfg(feature = "bug-switches")]
            crash_hook: None,
        };
        if finish_compaction {
            // Until the log is rewritten it still holds entries before the
            // snapshot (and maybe conflicting ones after it), so appending to
            // it would give a log that replays to something else.
            let encoded = storage.encode_log(base, &entries)?;
            storage.replace_log(&encoded, true)?;
        }
        let recovered = Recovered {
            hard_state: replayed.hard_state,
            entries,
            warnings,
            snapshot,
        };
        Ok((storage, recovered))
    }

    /// Buffers a hard-state change (not durable until `sync`).
    ///
    /// Saving the hard state already saved is a no-op, so the driver may save
    /// it every iteration without costing an fsync. As a last line of
    /// defence, a `current_term` that goes down, or a second, different vote
    /// in the same term, is refused: either would let this node vote twice in
    /// one term (§5.2).
    pub fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        if *hs == self.hard_state {
            return Ok(());
        }
        self.check_hard_state(hs)?;
        self.push_op(&Op::HardState(Cow::Borrowed(hs)))?;
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Appends entries. If `entries[0].index <= last_index()`, the stored
    /// suffix from that index on is first dropped (a conflicting suffix the
    /// leader overwrites, Figure 2, AppendEntries receiver rule 3).
    ///
    /// `entries` must be contiguous and start at an index in
    /// `snapshot_index() + 1..=last_index() + 1`; otherwise an error, and
    /// nothing changes. (Entries the snapshot holds are committed, and
    /// committed entries are never overwritten, so a caller that offers them
    /// again must leave them out.)
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        if entries.is_empty() {
            return Ok(());
        }
        self.check_append(entries)?;
        let mark = self.mark();
        let result = self.push_entries(entries);
        if result.is_err() {
            self.rollback(mark);
        }
        result
    }

    /// Drops every stored entry with index >= `index` (index 0 counts as 1:
    /// there is no entry 0). Nothing to drop is a no-op.
    ///
    /// An `index` at or below `snapshot_index()` is refused: the snapshot
    /// holds only committed entries, and Raft never removes a committed
    /// entry (§5.4), so such a call is a bug in the caller. Cutting into the
    /// snapshot cannot be done anyway, and clamping would hide the bug.
    pub fn truncate_from(&mut self, index: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        let index = index.max(1);
        let snapshot_index = self.snapshot.last_included_index;
        if index <= snapshot_index {
            return Err(self.invalid(format!(
                "cannot truncate from index {index}: entries up to {snapshot_index} are in the \
                 snapshot, and committed entries are never removed"
            )));
        }
        if index > self.last_index {
            return Ok(());
        }
        self.push_op(&Op::TruncateFrom(index))?;
        self.last_index = index - 1;
        Ok(())
    }

    /// Writes everything buffered and makes it durable with one `sync_data`
    /// (group commit). A no-op, with no fsync, if nothing is pending.
    ///
    /// A failed write or fsync returns [`StorageError::SyncFailed`] and the
    /// node must stop: the caller exits, because it cannot know what is on
    /// disk. This `Storage` is poisoned from then on.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.seal();
        if self.record_ends.is_empty() {
            return Ok(()); // nothing pending: no write, no fsync
        }
        let started = std::time::Instant::now();
        let mut start = 0;
        for &end in &self.record_ends {
            // One record, one fsync: a record must be durable before the next
            // one starts, or recovery could mistake a torn write for damage.
            let written = reserve(
                &self.file,
                &mut self.file_len,
                self.log_bytes + (end - start) as u64,
            )
            .and_then(|()| self.file.seek(SeekFrom::Start(self.log_bytes)))
            .and_then(|_| self.file.write_all(&self.pending[start..end]))
            .and_then(|()| self.file.sync_data());
            if let Err(source) = written {
                self.poisoned = true;
                return Err(StorageError::SyncFailed {
                    path: self.log_path.clone(),
                    source,
                });
            }
            self.fsyncs += 1;
            self.log_bytes += (end - start) as u64;
            start = end;
        }
        self.pending.clear();
        self.pending.shrink_to(RETAINED_BUFFER_BYTES);
        self.record_ends.clear();
        self.longest_sync = self.longest_sync.max(started.elapsed());
        Ok(())
    }

    /// The index of the last entry, counting entries not yet synced; if the
    /// log after the snapshot is empty, the snapshot's index (0 if there is
    /// none either).
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Makes `snapshot` durable and compacts the log (§7).
    ///
    /// Everything buffered is synced first, into the current log, as if by
    /// [`Storage::sync`]: so whatever the caller buffered before this call is
    /// durable when it returns, and the log the compaction copies from is
    /// the whole truth. (Folding the buffer into the rewritten log instead
    /// would save one fsync per snapshot, once every few thousand entries,
    /// and make the order of changes harder to reason about.)
    ///
    /// A snapshot at or below the stored one's index is ignored (after that
    /// sync): an InstallSnapshot can arrive late, and going back would lose
    /// entries.
    ///
    /// Otherwise, in this order, each step made durable before the next:
    ///
    /// 1. the snapshot is written to `DIR/snapshot.tmp` and fsynced, renamed
    ///    to `DIR/snapshot`, and `DIR` is fsynced;
    /// 2. the log is rewritten to `DIR/log.tmp` (header, then one record
    ///    with the hard state, a `compacted` operation and the kept entries;
    ///    more records only if they are over `MAX_RECORD_BYTES`), fsynced,
    ///    renamed over `DIR/log`, and `DIR` is fsynced.
    ///
    /// The kept entries follow Figure 13, InstallSnapshot receiver rules 6
    /// and 7: if the log holds the snapshot's last entry with the same term,
    /// the entries after it are kept; otherwise the whole log is discarded,
    /// because it conflicts with the snapshot. The hard state is kept.
    ///
    /// A crash at any point recovers either the state before the call or the
    /// state after it: before step 1's rename, the old files are untouched;
    /// after it, the snapshot is durable and `open` finishes step 2 itself.
    /// The log is rewritten rather than cut, so the disk holds the snapshot
    /// and the entries after it, and no more.
    ///
    /// Errors: a snapshot over [`MAX_SNAPSHOT_BYTES`] is refused
    /// ([`StorageError::InvalidRequest`]), as is one the log cannot be
    /// rewritten around, and nothing changes. An I/O failure while writing
    /// `snapshot.tmp` returns [`StorageError::Io`]; nothing else changed and
    /// the `Storage` can go on. Any later failure returns
    /// [`StorageError::CompactionFailed`] and poisons the `Storage`.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.check_usable()?;
        self.sync()?;
        let new = Compacted::of(snapshot);
        if new.last_included_index <= self.snapshot.last_included_index {
            return Ok(());
        }
        let encoded_snapshot =
            encode_snapshot(snapshot).map_err(|reason| StorageError::InvalidRequest {
                path: self.dir.join(SNAPSHOT_FILE),
                reason,
            })?;
        let on_disk = self.read_back()?;
        let kept = entries_after_snapshot(on_disk.start, on_disk.entries, new);
        let encoded_log = self.encode_log(new, &kept)?;
        if self.bugs().compact_log_before_snapshot {
            self.replace_log(&encoded_log, true)?;
            self.replace_snapshot(&encoded_snapshot, true)?;
        } else {
            self.replace_snapshot(&encoded_snapshot, false)?;
            self.replace_log(&encoded_log, true)?;
        }
        self.snapshot = new;
        self.snapshot_bytes = encoded_snapshot.len() as u64;
        self.last_index = new.last_included_index + kept.len() as Index;
        Ok(())
    }

    /// The index of the stored snapshot's last entry (0 if none): the log
    /// holds only the entries after it.
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.last_included_index
    }

    /// Bytes used by the log and snapshot files, as far as synced (for
    /// reports; `meta.json` is not counted).
    pub fn disk_bytes(&self) -> u64 {
        self.log_bytes + self.snapshot_bytes
    }

    /// How many fsyncs (of files and directories, including those made by
    /// `open`) this `Storage` has done: for benchmarks and reports.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs
    }

    /// The longest one [`Storage::sync`] took so far (zero before the
    /// first that wrote anything): for reports.
    pub fn longest_sync(&self) -> std::time::Duration {
        self.longest_sync
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if self.poisoned {
            return Err(StorageError::Poisoned {
                path: self.log_path.clone(),
            });
        }
        Ok(())
    }

    fn invalid(&self, reason: String) -> StorageError {
        StorageError::InvalidRequest {
            path: self.log_path.clone(),
            reason,
        }
    }

    /// §5.1: terms only increase; §5.2: at most one vote per term.
    fn check_hard_state(&self, hs: &HardState) -> Result<(), StorageError> {
        let old = &self.hard_state;
        if hs.current_term < old.current_term {
            return Err(self.invalid(format!(
                "current_term would go down from {} to {}",
                old.current_term, hs.current_term
            )));
        }
        if hs.current_term == old.current_term && old.voted_for.is_some() {
            return Err(self.invalid(format!(
                "voted_for would change from {:?} to {:?} within term {}",
                old.voted_for, hs.voted_for, hs.current_term
            )));
        }
        Ok(())
    }

    /// The entries must be contiguous, leave no gap after the log and not
    /// reach into the snapshot.
    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        let lowest = self.snapshot.last_included_index + 1;
        if first < lowest || first > self.last_index + 1 {
            let snapshot = match lowest - 1 {
                0 => String::new(),
                index => format!(" (entries up to {index} are in the snapshot)"),
            };
            return Err(self.invalid(format!(
                "cannot append entries starting at index {first}: the log ends at index {}, \
                 so the first new entry must be in {lowest}..={}{snapshot}",
                self.last_index,
                self.last_index + 1
            )));
        }
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(self.invalid(format!(
                    "entries to append are not contiguous: index {} follows index {}",
                    pair[1].index, pair[0].index
                )));
            }
        }
        Ok(())
    }

    fn push_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        if first <= self.last_index {
            self.push_op(&Op::TruncateFrom(first))?;
        }
        for entry in entries {
            self.push_op(&Op::Entry(Cow::Borrowed(entry)))?;
        }
        self.last_index = first + entries.len() as Index - 1;
        Ok(())
    }

    /// The log as it is on disk, all of it synced: what compaction copies
    /// the kept entries from. The `Storage` does not keep entries in memory
    /// (the core does), and reading back one snapshot interval of log is
    /// cheap next to the fsyncs a snapshot costs.
    fn read_back(&self) -> Result<Replayed, StorageError> {
        let path = &self.log_path;
        let bytes = fs::read(path)
            .map_err(|source| io_error(path, "reading the log back to compact it", source))?;
        let replayed = match log_version(path, &bytes)? {
            Some(version) => replay(path, &bytes, version)?,
            None => Replayed::new(bytes.len()),
        };
        let expected = (self.snapshot.last_included_index + 1, self.last_index);
        let found = (
            replayed.start.last_included_index + 1,
            replayed.last_index(),
        );
        if replayed.torn.is_some()
            || replayed.valid_len as u64 != self.log_bytes
            || found != expected
        {
            return Err(StorageError::Corrupt {
                path: path.clone(),
                offset: replayed.valid_len as u64,
                reason: format!(
                    "read back to be compacted, the log holds entries {}..={} in {} bytes, \
                     but this node wrote entries {}..={} in {} bytes: another program changed \
                     the file",
                    found.0, found.1, replayed.valid_len, expected.0, expected.1, self.log_bytes
                ),
            });
        }
        Ok(replayed)
    }

    /// A whole log file as compaction writes it: the version 2 header, then
    /// the hard state, the `compacted` operation and `entries`, in one record
    /// unless they are over `MAX_RECORD_BYTES`. The records are built with
    /// the same code as `sync`'s, in `pending`, which is empty after a sync.
    fn encode_log(&mut self, start: Compacted, entries: &[Entry]) -> Result<Vec<u8>, StorageError> {
        debug_assert!(self.pending.is_empty() && self.open_record.is_none());
        let hard_state = Op::HardState(Cow::Owned(self.hard_state.clone()));
        let mut encoded = self
            .push_op(&hard_state)
            .and_then(|()| self.push_op(&Op::Compacted(start)));
        for entry in entries {
            if encoded.is_err() {
                break;
            }
            encoded = self.push_op(&Op::Entry(Cow::Borrowed(entry)));
        }
        self.seal();
        let body = std::mem::take(&mut self.pending);
        self.record_ends.clear();
        encoded?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(&header(COMPACTED_FORMAT_VERSION));
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Step 1 of `save_snapshot`: `DIR/snapshot.tmp`, fsync, rename over
    /// `DIR/snapshot`, fsync of `DIR`. `committed` says whether the disk
    /// already changed before this step (it did not, unless a bug switch
    /// reorders the steps).
    fn replace_snapshot(&mut self, bytes: &[u8], committed: bool) -> Result<(), StorageError> {
        let temp = self.dir.join(SNAPSHOT_TEMP_FILE);
        let file = match File::create(&temp).and_then(|mut f| f.write_all(bytes).map(|()| f)) {
            Ok(file) => file,
            Err(source) => {
                return Err(self.compaction_failed(
                    &temp,
                    "writing the snapshot",
                    source,
                    committed,
                ))
            }
        };
        self.reached(DiskStep::Wrote(SNAPSHOT_TEMP_FILE))?;
        if !self.bugs().skip_fsync_before_rename {
            if let Err(source) = file.sync_all() {
                return Err(self.compaction_failed(
                    &temp,
                    "fsyncing the snapshot",
                    source,
                    committed,
                ));
            }
            self.fsyncs += 1;
            self.reached(DiskStep::Synced(SNAPSHOT_TEMP_FILE))?;
        }
        drop(file);
        let sync_dir = !self.bugs().skip_dir_fsync_after_snapshot;
        self.rename_durably(SNAPSHOT_TEMP_FILE, SNAPSHOT_FILE, sync_dir)
    }

    /// Step 2 of `save_snapshot` (and the step `open` finishes after a
    /// crash): `DIR/log.tmp`, fsync, rename over `DIR/log`, fsync of `DIR`;
    /// from then on `sync` appends to the new file.
    fn replace_log(&mut self, bytes: &[u8], committed: bool) -> Result<(), StorageError> {
        let temp = self.dir.join(LOG_TEMP_FILE);
        // Locked before it is renamed into place, so `DIR/log` is never
        // unlocked: a second node opening the directory meanwhile is still
        // refused. (The lock belongs to the file, not to its name.)
        let written = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Emptied below, once locked.
            .truncate(false)
            .open(&temp)
            .and_then(|mut file| {
                file.try_lock().map_err(|e| match e {
                    TryLockError::WouldBlock => {
                        io::Error::other("another process holds a lock on it")
                    }
                    TryLockError::Error(e) => e,
                })?;
                file.set_len(0)?;
                file.write_all(bytes)?;
                Ok(file)
            });
        let file = match written {
            Ok(file) => file,
            Err(source) => {
                return Err(self.compaction_failed(
                    &temp,
                    "writing the compacted log",
                    source,
                    committed,
                ))
            }
        };
        self.reached(DiskStep::Wrote(LOG_TEMP_FILE))?;
        if !self.bugs().skip_fsync_before_rename {
            if let Err(source) = file.sync_all() {
                return Err(self.compaction_failed(
                    &temp,
                    "fsyncing the compacted log",
                    source,
                    committed,
                ));
            }
            self.fsyncs += 1;
            self.reached(DiskStep::Synced(LOG_TEMP_FILE))?;
        }
        let sync_dir = !self.bugs().skip_dir_fsync_after_log;
        self.rename_durably(LOG_TEMP_FILE, LOG_FILE, sync_dir)?;
        // Dropping the old file releases its lock; the new one holds it.
        self.file = file;
        self.log_bytes = bytes.len() as u64;
        self.file_len = self.log_bytes;
        Ok(())
    }

    /// Renames `from` to `to` inside `DIR`, then fsyncs `DIR` so that the
    /// rename survives a power loss before anything that depends on it is
    /// done. From the rename on, the disk has changed: a failure poisons.
    fn rename_durably(
        &mut self,
        from: &'static str,
        to: &'static str,
        sync_dir: bool,
    ) -> Result<(), StorageError> {
        let to_path = self.dir.join(to);
        if let Err(source) = fs::rename(self.dir.join(from), &to_path) {
            return Err(self.compaction_failed(&to_path, "renaming into place", source, true));
        }
        self.reached(DiskStep::Renamed { from, to })?;
        if sync_dir {
            let dir = self.dir.clone();
            if let Err(source) = fsync_dir(&dir) {
                return Err(self.compaction_failed(&dir, "fsyncing the directory", source, true));
            }
            self.fsyncs += 1;
            self.reached(DiskStep::SyncedDir)?;
        }
        Ok(())
    }

    /// The error for a failed step of a compaction. Until the disk has
    /// changed (`committed`), the old state is intact: the temporary file is
    /// removed and the `Storage` stays usable. After that the node must stop,
    /// because memory and disk may disagree.
    fn compaction_failed(
        &mut self,
        path: &Path,
        action: &'static str,
        source: io::Error,
        committed: bool,
    ) -> StorageError {
        if committed {
            self.poisoned = true;
            return StorageError::CompactionFailed {
                path: path.to_path_buf(),
                action,
                source,
            };
        }
        // Best effort: a leftover is deleted by the next `open` anyway.
        let _ = fs::remove_file(path);
        io_error(path, action, source)
    }

    /// Called after each step of a compaction; in test builds, the crash
    /// hook may stop the node right there, as a crash would.
    fn reached(&mut self, step: DiskStep) -> Result<(), StorageError> {
        #[cfg(feature = "bug-switches")]
        if let Some(hook) = self.crash_hook.as_mut() {
            if hook(step) {
                self.poisoned = true;
                return Err(StorageError::Poisoned {
                    path: self.log_path.clone(),
                });
            }
        }
        let _ = step;
        Ok(())
    }

    /// The deliberate bugs switched on (none, outside test builds).
    fn bugs(&self) -> StorageBugSwitches {
        #[cfg(feature = "bug-switches")]
        {
            self.bugs
        }
        #[cfg(not(feature = "bug-switches"))]
        {
            StorageBugSwitches::default()
        }
    }

    /// Encodes one operation into the open record, sealing it first and
    /// opening a new one if it would grow past `MAX_RECORD_BYTES`.
    fn push_op(&mut self, op: &Op<'_>) -> Result<(), StorageError> {
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, op)
            .map_err(|e| self.invalid(format!("cannot encode {op:?}: {e}")))?;
        // An operation alone in a record still needs the brackets around it.
        if self.scratch.len() + 2 > MAX_RECORD_BYTES {
            return Err(self.invalid(format!(
                "an operation encodes to {} bytes, over the record limit of \
                 MAX_RECORD_BYTES = {MAX_RECORD_BYTES} bytes (keep commands smaller)",
                self.scratch.len()
            )));
        }
        if let Some(start) = self.open_record {
            let payload_len = self.pending.len() - start - FRAME_LEN;
            // A comma before the operation and the closing bracket after it.
            if payload_len + 1 + self.scratch.len() + 1 > MAX_RECORD_BYTES {
                self.seal();
            }
        }
        if self.open_record.is_some() {
            self.pending.push(b',');
        } else {
            self.open_record = Some(self.pending.len());
            self.pending.extend_from_slice(&[0; FRAME_LEN]);
            self.pending.push(b'[');
        }
        self.pending.extend_from_slice(&self.scratch);
        Ok(())
    }

    /// Closes the open record, if any: ends its JSON array and fills in its
    /// length and CRC.
    fn seal(&mut self) {
        let Some(start) = self.open_record.take() else {
            return;
        };
        self.pending.push(b']');
        let payload = &self.pending[start + FRAME_LEN..];
        let frame = frame(payload);
        self.pending[start..start + FRAME_LEN].copy_from_slice(&frame);
        self.record_ends.push(self.pending.len());
    }

    fn mark(&self) -> Mark {
        Mark {
            pending_len: self.pending.len(),
            records: self.record_ends.len(),
            open_record: self.open_record,
            last_index: self.last_index,
        }
    }

    /// Undoes everything pushed since `mark`. A record sealed since then
    /// becomes open again: its closing bracket is cut off, and its frame is
    /// written anew when it is sealed.
    fn rollback(&mut self, mark: Mark) {
        self.pending.truncate(mark.pending_len);
        self.record_ends.truncate(mark.records);
        self.open_record = mark.open_record;
        self.last_index = mark.last_index;
    }
}

/// Hooks for the crash tests; they exist only with the `bug-switches`
/// feature, never in a release build.
#[cfg(feature = "bug-switches")]
impl Storage {
    /// Turns deliberate mistakes in `save_snapshot` on or off.
    pub fn set_bugs(&mut self, bugs: StorageBugSwitches) {
        self.bugs = bugs;
    }

    /// Calls `hook` after each step of `save_snapshot`; when it returns
    /// true, the node "crashes" there: the call returns
    /// [`StorageError::Poisoned`] and nothing more is written.
    pub fn set_crash_hook(&mut self, hook: impl FnMut(DiskStep) -> bool + Send + 'static) {
        self.crash_hook = Some(Box::new(hook));
    }
}

/// The 8 bytes in front of a payload: its length and its CRC.
fn frame(payload: &[u8]) -> [u8; FRAME_LEN] {
    let mut frame = [0; FRAME_LEN];
    // Payloads are at most MAX_RECORD_BYTES (or, for a snapshot,
    // MAX_SNAPSHOT_BYTES), so the length fits in a u32.
    frame[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame
}

fn header(version: u32) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()..].copy_from_slice(&version.to_le_bytes());
    header
}

fn io_error(path: &Path, action: &'static str, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Makes a new directory entry durable: fsyncs the directory holding it.
fn sync_dir(dir: &Path, fsyncs: &mut u64) -> Result<(), StorageError> {
    fsync_dir(dir).map_err(|source| io_error(dir, "fsyncing the directory", source))?;
    *fsyncs += 1;
    Ok(())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing the parent of each one
/// created, so the directory survives a crash right after `open`.
fn create_dir_durably(dir: &Path, fsyncs: &mut u64) -> Result<(), StorageError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            let source = io::Error::other("it exists but is not a directory");
            return Err(io_error(dir, "opening the data directory", source));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(dir, "opening the data directory", source)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent, fsyncs)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Someone else created it meanwhile; it is there, which is all we need.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io_error(dir, "creating the data directory", source)),
    }
    sync_dir(dir.parent().unwrap_or(Path::new(".")), fsyncs)
}

/// Checks that `dir/meta.json` describes this node, or writes it if absent.
fn check_or_create_metadata(
    dir: &Path,
    meta: &Metadata,
    log_path: &Path,
    fsyncs: &mut u64,
) -> Result<(), StorageError> {
    let path = dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let stored = parse_metadata(&path, &bytes)?;
            if stored != *meta {
                return Err(StorageError::MetadataMismatch {
                    path,
                    stored,
                    given: meta.clone(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // meta.json is made durable before the log is created, so a
            // non-empty log without it was not left by a crash.
            if fs::metadata(log_path).is_ok_and(|m| m.len() > 0) {
                return Err(StorageError::MissingMetadata {
                    path: log_path.to_path_buf(),
                });
            }
            write_metadata(dir, &path, meta, fsyncs)
        }
        Err(source) => Err(io_error(&path, "reading", source)),
    }
}

fn parse_metadata(path: &Path, bytes: &[u8]) -> Result<Metadata, StorageError> {
    let bad = |reason: String| StorageError::BadMetadata {
        path: path.to_path_buf(),
        reason,
    };
    let stored: Metadata = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    stored.normalized().ok_or_else(|| {
        bad(format!(
            "{stored} does not list the node itself as a member"
        ))
    })
}

/// Temp file, fsync, rename, fsync of the directory: `meta.json` is either
/// absent or complete, never half written.
fn write_metadata(
    dir: &Path,
    path: &Path,
    meta: &Metadata,
    fsyncs: &mut u64,
) -> Result<(), StorageError> {
    let temp = dir.join(META_TEMP_FILE);
    let mut text = serde_json::to_vec_pretty(meta).map_err(|e| StorageError::BadMetadata {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    File::create(&temp)
        .and_then(|mut f| {
            f.write_all(&text)?;
            f.sync_all()
        })
        .map_err(|source| io_error(&temp, "writing", source))?;
    *fsyncs += 1;
    fs::rename(&temp, path).map_err(|source| io_error(path, "renaming into place", source))?;
    sync_dir(dir, fsyncs)
}

/// Opens and locks the log for reading and writing; `true` if it was
/// just created.
fn open_log_file(path: &Path) -> Result<(File, bool), StorageError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    let (file, created) = match options.clone().create_new(true).open(path) {
        Ok(file) => (file, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = options
                .open(path)
                .map_err(|source| io_error(path, "opening the log", source))?;
            (file, false)
        }
        Err(source) => return Err(io_error(path, "creating the log", source)),
    };
    match file.try_lock() {
        Ok(()) if still_at(&file, path) => Ok((file, created)),
        // Another node compacted the log between our open and our lock: we
        // hold the lock of a file that is no longer `DIR/log`, while that
        // node still runs on the new one.
        Ok(()) => Err(StorageError::Locked {
            path: path.to_path_buf(),
        }),
        Err(TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: path.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(io_error(path, "locking the log", source)),
    }
}

/// Whether `file` is still the file at `path`: compaction renames a new
/// log over the old one, so the file a name leads to can change.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> bool {
    true
}

/// `Ok(Some(version))` for a good header, `Ok(None)` for none or a torn one
/// (the file is shorter than a header and holds its first bytes; only a new
/// log, version 1, is ever written in place), else an error.
fn log_version(path: &Path, bytes: &[u8]) -> Result<Option<u32>, StorageError> {
    let not_ours = || StorageError::NotARaftLog {
        path: path.to_path_buf(),
    };
    let Some(found) = bytes.get(..HEADER_LEN) else {
        return if header(FORMAT_VERSION).starts_with(bytes) {
            Ok(None)
        } else {
            Err(not_ours())
        };
    };
    let (magic, version) = found.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(not_ours());
    }
    let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
    if version != FORMAT_VERSION && version != COMPACTED_FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            readable: "log format versions 1 and 2",
        });
    }
    Ok(Some(version))
}

/// Starts the log anew: header, fsync of the file and of its directory.
fn write_header(
    file: &mut File,
    dir: &Path,
    path: &Path,
    fsyncs: &mut u64,
) -> Result<(), StorageError> {
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(&header(FORMAT_VERSION)))
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, "writing the log header", source))?;
    *fsyncs += 1;
    sync_dir(dir, fsyncs)
}

/// Makes the log file (now `file_len` bytes) at least `end` bytes long,
/// extending it by [`PREALLOCATE_BYTES`] beyond `end` when it is shorter, so
/// that most syncs overwrite zeros instead of growing the file.
fn reserve(file: &File, file_len: &mut u64, end: u64) -> io::Result<()> {
    if end <= *file_len {
        return Ok(());
    }
    let len = end + PREALLOCATE_BYTES;
    file.set_len(len)?;
    *file_len = len;
    Ok(())
}

/// Cuts the file back to the end of the last good record.
fn cut_torn_tail(
    file: &File,
    path: &Path,
    valid_len: usize,
    fsyncs: &mut u64,
) -> Result<(), StorageError> {
    file.set_len(valid_len as u64)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, "cutting off the torn last record", source))?;
    *fsyncs += 1;
    Ok(())
}

/// The result of reading a log file from start to end.
struct Replayed {
    hard_state: HardState,
    /// The entry the log starts after (from its `compacted` operation; 0, 0
    /// if it has none), and the offset of the record that says so.
    start: Compacted,
    start_offset: usize,
    /// The entries from `start.last_included_index + 1` on.
    entries: Vec<Entry>,
    /// Whether an entry or truncation was replayed: `compacted` must come
    /// before any.
    saw_log_ops: bool,
    /// Where the last good record ends.
    valid_len: usize,
    /// Why the bytes after `valid_len` are a torn record, if there are any.
    torn: Option<Damage>,
}

/// Why the bytes at some offset are not a whole, intact record.
#[derive(Debug)]
enum Damage {
    ShortFrame { have: usize },
    ZeroLength,
    TooLong { len: usize },
    ShortPayload { len: usize, have: usize },
    BadCrc,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::ShortFrame { have } => {
                write!(f, "only {have} of the {FRAME_LEN} bytes of a record header")
            }
            // What a region the file system extended but never wrote looks like.
            Damage::ZeroLength => write!(f, "a record length of 0"),
            Damage::TooLong { len } => write!(
                f,
                "a record length of {len} bytes, over MAX_RECORD_BYTES = {MAX_RECORD_BYTES}"
            ),
            Damage::ShortPayload { len, have } => {
                write!(
                    f,
                    "a record of {len} bytes with only {have} bytes left in the file"
                )
            }
            Damage::BadCrc => write!(f, "a record whose CRC does not match its payload"),
        }
    }
}

/// The payload of the intact record at `at`, and where the next one starts.
fn read_record(bytes: &[u8], at: usize) -> Result<(&[u8], usize), Damage> {
    let rest = &bytes[at..];
    let Some((frame, body)) = rest.split_first_chunk::<FRAME_LEN>() else {
        return Err(Damage::ShortFrame { have: rest.len() });
    };
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if len == 0 {
        return Err(Damage::ZeroLength);
    }
    if len > MAX_RECORD_BYTES {
        return Err(Damage::TooLong { len });
    }
    let Some(payload) = body.get(..len) else {
        return Err(Damage::ShortPayload {
            len,
            have: body.len(),
        });
    };
    if crc32fast::hash(payload) != crc {
        return Err(Damage::BadCrc);
    }
    Ok((payload, at + FRAME_LEN + len))
}

fn decode(payload: &[u8]) -> Result<Vec<Op<'static>>, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// The first offset after `from` where an intact record with a decodable
/// payload starts, if any: evidence that damage before it is not a torn
/// write at the end of the file.
fn find_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len())
        .find(|&at| read_record(bytes, at).is_ok_and(|(payload, _)| decode(payload).is_ok()))
}

/// Reads every record after the header and rebuilds the hard state and log.
fn replay(path: &Path, bytes: &[u8], version: u32) -> Result<Replayed, StorageError> {
    let mut state = Replayed::new(HEADER_LEN);
    let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    while state.valid_len < bytes.len() {
        let at = state.valid_len;
        match read_record(bytes, at) {
            Ok((payload, next)) => {
                let ops = decode(payload).map_err(|e| {
                    corrupt(
                        at,
                        format!("a record with a correct CRC does not decode: {e}"),
                    )
                })?;
                for op in ops {
                    state
                        .apply(op, version, at)
                        .map_err(|reason| corrupt(at, reason))?;
                }
                state.valid_len = next;
            }
            Err(Damage::ZeroLength) if bytes[at..].iter().all(|&b| b == 0) => {
                // The space `sync` reserved ahead of the log: its end.
                break;
            }
            Err(damage) => {
                if let Some(later) = find_record_after(bytes, at + 1) {
                    return Err(corrupt(
                        at,
                        format!("{damage}, yet an intact record starts later, at offset {later}"),
                    ));
                }
                state.torn = Some(damage);
                break;
            }
        }
    }
    Ok(state)
}

impl Replayed {
    /// Nothing replayed yet, from offset `valid_len` on.
    fn new(valid_len: usize) -> Replayed {
        Replayed {
            hard_state: HardState::default(),
            start: Compacted::default(),
            start_offset: 0,
            entries: Vec::new(),
            saw_log_ops: false,
            valid_len,
            torn: None,
        }
    }

    fn last_index(&self) -> Index {
        self.start.last_included_index + self.entries.len() as Index
    }

    fn term_of(&self, index: Index) -> Option<Term> {
        term_of(self.start, &self.entries, index)
    }

    /// Applies one operation of the record at offset `at`, checking that
    /// the log stays contiguous.
    fn apply(&mut self, op: Op<'static>, version: u32, at: usize) -> Result<(), String> {
        let first_index = self.start.last_included_index + 1;
        let last_index = self.last_index();
        match op {
            Op::HardState(hs) => {
                check_position(0, hs.current_term)?;
                self.hard_state = hs.into_owned();
            }
            Op::Entry(entry) => {
                check_position(entry.index, entry.term)?;
                if entry.index != last_index + 1 {
                    return Err(format!(
                        "entry {} does not follow the last entry {last_index}",
                        entry.index
                    ));
                }
                self.entries.push(entry.into_owned());
                self.saw_log_ops = true;
            }
            Op::TruncateFrom(index) => {
                if index < first_index || index > last_index {
                    let holds = match first_index {
                        1 => String::new(),
                        _ => format!(" and starts after the snapshot's index {}", first_index - 1),
                    };
                    return Err(format!(
                        "truncate_from {index} is outside the log, which ends at {last_index}{holds}"
                    ));
                }
                self.entries.truncate((index - first_index) as usize);
                self.saw_log_ops = true;
            }
            Op::Compacted(start) => {
                if version < COMPACTED_FORMAT_VERSION {
                    return Err(format!(
                        "a compacted operation in a log of format version {version}, which \
                         has none"
                    ));
                }
                if self.saw_log_ops || self.start != Compacted::default() {
                    return Err(
                        "a compacted operation after the start of the log, where only \
                         compaction writes one"
                            .to_string(),
                    );
                }
                if start.last_included_index == 0 {
                    return Err("a compacted operation at index 0".to_string());
                }
                check_position(start.last_included_index, start.last_included_term)?;
                self.start = start;
                self.start_offset = at;
            }
        }
        Ok(())
    }
}

/// Refuses an index above [`MAX_INDEX`] or a term above [`MAX_TERM`]: no
/// node writes one (the transport refuses them on the wire), so on disk
/// they are damage, and letting them in would leave `+ 1` no room.
fn check_position(index: Index, term: Term) -> Result<(), String> {
    if index > MAX_INDEX {
        return Err(format!(
            "index {index} is above the highest index {MAX_INDEX}"
        ));
    }
    if term > MAX_TERM {
        return Err(format!("term {term} is above the highest term {MAX_TERM}"));
    }
    Ok(())
}

impl Compacted {
    fn of(snapshot: &Snapshot) -> Compacted {
        Compacted {
            last_included_index: snapshot.last_included_index,
            last_included_term: snapshot.last_included_term,
        }
    }
}

/// The term of entry `index` of a log that starts after `start`: the
/// snapshot's term for its last entry, `None` outside the log.
fn term_of(start: Compacted, entries: &[Entry], index: Index) -> Option<Term> {
    if index == start.last_included_index {
        return Some(start.last_included_term);
    }
    let offset = index.checked_sub(start.last_included_index + 1)?;
    entries.get(offset as usize).map(|entry| entry.term)
}

/// Figure 13, InstallSnapshot receiver rules 6 and 7: what is left of a log
/// that starts after `start` once a snapshot ending at `snapshot` replaces
/// its beginning. If the log holds the snapshot's last entry with the same
/// term, the entries after it are kept (the Log Matching Property makes
/// them a continuation of the snapshot); otherwise the whole log goes,
/// because it disagrees with committed state. Keeping the entries after a
/// conflicting one is the bug of hashicorp/raft issue 697.
fn entries_after_snapshot(
    start: Compacted,
    mut entries: Vec<Entry>,
    snapshot: Compacted,
) -> Vec<Entry> {
    let index = snapshot.last_included_index;
    if index < start.last_included_index
        || term_of(start, &entries, index) != Some(snapshot.last_included_term)
    {
        return Vec::new();
    }
    entries.split_off((index - start.last_included_index) as usize)
}

/// Checks that the log and the snapshot beside it belong together: the log
/// may start before the snapshot's end (the node stopped between renaming
/// the snapshot into place and replacing the log), or exactly at it, but
/// never after it, which would mean entries that no file holds.
fn check_log_start(
    log_path: &Path,
    snapshot_path: &Path,
    replayed: &Replayed,
    snapshot: Compacted,
) -> Result<(), StorageError> {
    let start = replayed.start;
    let problem = if start.last_included_index > snapshot.last_included_index {
        let held = match snapshot.last_included_index {
            0 => format!("{} is missing", snapshot_path.display()),
            index => format!(
                "{} holds entries only up to {index}",
                snapshot_path.display()
            ),
        };
        format!(
            "the log starts after entry {}, because the entries up to it were compacted \
             into a snapshot, but {held}: the entries in between are lost",
            start.last_included_index
        )
    } else if start.last_included_index == snapshot.last_included_index
        && start.last_included_term != snapshot.last_included_term
    {
        format!(
            "the log starts after entry {} of term {}, but {} says that entry has term {}",
            start.last_included_index,
            start.last_included_term,
            snapshot_path.display(),
            snapshot.last_included_term
        )
    } else {
        return Ok(());
    };
    Err(StorageError::Corrupt {
        path: log_path.to_path_buf(),
        offset: replayed.start_offset as u64,
        reason: problem,
    })
}

/// What `open` says when it finishes a compaction a crash interrupted.
fn finished_compaction_warning(
    snapshot_path: &Path,
    snapshot: Compacted,
    last_index: Index,
    term_in_log: Option<Term>,
    kept: usize,
) -> String {
    let index = snapshot.last_included_index;
    let mut warning = format!(
        "{}: the node stopped while compacting the log after saving this snapshot (up to \
         index {index}, term {}); finished the compaction, keeping {kept} entries after it",
        snapshot_path.display(),
        snapshot.last_included_term
    );
    if let Some(term) = term_in_log.filter(|&t| t != snapshot.last_included_term) {
        warning.push_str(&format!(
            " (the log's entry {index} has term {term}, so it and the {} entries after it \
             conflict with the snapshot and were dropped: Figure 13, InstallSnapshot rule 7)",
            last_index - index
        ));
    }
    warning
}

/// Deletes what a crash in the middle of `save_snapshot` left behind. A
/// temporary file is renamed into place only once complete and fsynced, so
/// one still here never became part of the durable state. (The deletion is
/// not fsynced: if a crash brings the file back, the next `open` deletes it
/// again.)
fn remove_leftover_temp_files(dir: &Path, warnings: &mut Vec<String>) -> Result<(), StorageError> {
    let temps = [
        (
            SNAPSHOT_TEMP_FILE,
            "an unfinished snapshot; it was never in place, so the state from before it is \
             recovered",
        ),
        (
            LOG_TEMP_FILE,
            "an unfinished compacted log; the snapshot it was for is in place, so the \
             compaction is finished from the log beside it",
        ),
    ];
    for (name, what) in temps {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => warnings.push(format!(
                "{}: deleted {what} (the node stopped while saving a snapshot)",
                path.display()
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(io_error(
                    &path,
                    "deleting a leftover temporary file",
                    source,
                ))
            }
        }
    }
    Ok(())
}

/// The snapshot file: header, length, CRC, then the JSON of `snapshot`.
fn encode_snapshot(snapshot: &Snapshot) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_LEN + snapshot.data.len() + 256);
    bytes.extend_from_slice(&SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; FRAME_LEN]);
    serde_json::to_writer(&mut bytes, snapshot)
        .map_err(|e| format!("cannot encode the snapshot: {e}"))?;
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    if payload.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "the snapshot at index {} encodes to {} bytes, over MAX_SNAPSHOT_BYTES = \
             {MAX_SNAPSHOT_BYTES} bytes",
            snapshot.last_included_index,
            payload.len()
        ));
    }
    let frame = frame(payload);
    bytes[SNAPSHOT_HEADER_LEN - FRAME_LEN..SNAPSHOT_HEADER_LEN].copy_from_slice(&frame);
    Ok(bytes)
}

/// Reads `DIR/snapshot`: the snapshot and the file's length, or `None` if
/// there is no such file. Any damage is an error, wherever it is: the file
/// was complete and fsynced before it was renamed into place.
fn read_snapshot(path: &Path) -> Result<Option<(Snapshot, u64)>, StorageError> {
    let corrupt = |offset: usize, reason: String| StorageError::CorruptSnapshot {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(path, "opening the snapshot", source)),
    };
    let len = file
        .metadata()
        .map_err(|source| io_error(path, "reading the snapshot", source))?
        .len();
    let largest = (SNAPSHOT_HEADER_LEN + MAX_SNAPSHOT_BYTES) as u64;
    if len > largest {
        return Err(corrupt(
            0,
            format!(
                "the file has {len} bytes, more than the largest snapshot file ({largest} \
                 bytes, for MAX_SNAPSHOT_BYTES = {MAX_SNAPSHOT_BYTES})"
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|source| io_error(path, "reading the snapshot", source))?;

    let Some((head, payload)) = bytes.split_first_chunk::<SNAPSHOT_HEADER_LEN>() else {
        return Err(corrupt(
            0,
            format!(
                "only {} bytes, fewer than the {SNAPSHOT_HEADER_LEN} bytes of a snapshot header",
                bytes.len()
            ),
        ));
    };
    let u32_at =
        |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    if head[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(corrupt(
            0,
            format!(
                "it does not start with {:?}, so it is not a raft snapshot",
                String::from_utf8_lossy(&SNAPSHOT_MAGIC)
            ),
        ));
    }
    let version = u32_at(8);
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            readable: "snapshot format version 1",
        });
    }
    let (len, crc) = (u32_at(12) as usize, u32_at(16));
    if len == 0 || len > MAX_SNAPSHOT_BYTES || len != payload.len() {
        return Err(corrupt(
            12,
            format!(
                "the header gives a payload of {len} bytes, but {} bytes follow it",
                payload.len()
            ),
        ));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt(
            16,
            "the CRC does not match the payload".to_string(),
        ));
    }
    let snapshot: Snapshot = serde_json::from_slice(payload).map_err(|e| {
        corrupt(
            SNAPSHOT_HEADER_LEN,
            format!("a payload with a correct CRC does not decode: {e}"),
        )
    })?;
    if snapshot.last_included_index == 0 {
        return Err(corrupt(
            SNAPSHOT_HEADER_LEN,
            "a snapshot at index 0, which no node writes".to_string(),
        ));
    }
    check_position(snapshot.last_included_index, snapshot.last_included_term)
        .map_err(|reason| corrupt(SNAPSHOT_HEADER_LEN, reason))?;
    Ok(Some((snapshot, bytes.len() as u64)))
}
