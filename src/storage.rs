//! Durable storage: the hard state and the log, in one append-only file.
//!
//! Raft's safety rests on one promise (Figure 2, "Persistent state on all
//! servers"): before a node answers any message, `current_term`, `voted_for`
//! and `log[]` are on stable storage. This module keeps that promise, and
//! nothing else: it does not know about roles, commit indexes or peers.
//!
//! # On-disk format
//!
//! A node keeps everything it must not forget in one directory, `DIR`:
//!
//! ```text
//! DIR/meta.json   which node this directory belongs to (written once)
//! DIR/log         current_term, voted_for and the log entries (append-only)
//! ```
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
//! A 12-byte header, then records back to back up to the end of the file.
//! All integers are little-endian.
//!
//! ```text
//! header   0..8    magic: the ASCII bytes "RAFT-LOG"
//!          8..12   format version, u32 (this is version 1)
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
//! ```
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
//! **Truncation is a record, not a rewrite.** When a leader overwrites a
//! conflicting suffix, the log gets a `truncate_from` operation; the file is
//! never cut in place to drop entries. Cutting the file would also cut any
//! hard-state record written after those entries, and a forgotten vote lets a
//! node vote twice in one term: two leaders. Replay applies the operations in
//! order, so the later hard state survives.
//!
//! ## Recovery (what `Storage::open` does)
//!
//! Replay reads the records in order and rebuilds the hard state and the log.
//!
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
//! Limits worth knowing:
//!
//! - Damage to the last record cannot be told apart from a torn write, so a
//!   bit flipped on disk inside the newest record, after it was synced, loses
//!   that newest batch with only a warning.
//! - Replay reads the whole file into memory. Compaction, which comes with
//!   snapshots, will bound it; until then the file grows with the log.
//!
//! While a `Storage` has the log open, the file is locked (an advisory lock,
//! `flock` on Unix, released when the process dies), so a second node started
//! on the same directory is refused instead of interleaving its writes.
//!
//! # Failures
//!
//! A failed write or fsync in `sync` returns [`StorageError::SyncFailed`],
//! and the node must stop: after such a failure it cannot know what reached
//! the disk (and retrying an fsync can report success for data the kernel has
//! already dropped). Every later call on the same `Storage` returns
//! [`StorageError::Poisoned`]. Restarting replays the log, which cuts off any
//! torn record.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::message::{Entry, HardState, Index, NodeId};

/// The log file's name inside the data directory.
pub const LOG_FILE: &str = "log";

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

/// The first bytes of every log file.
const MAGIC: [u8; 8] = *b"RAFT-LOG";

/// The version of the record format described in the module docs.
const FORMAT_VERSION: u32 = 1;

/// Magic plus version.
const HEADER_LEN: usize = MAGIC.len() + 4;

/// Payload length plus CRC in front of every record.
const FRAME_LEN: usize = 8;

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
    /// The log, from index 1, contiguous.
    pub entries: Vec<Entry>,
    /// What replay repaired (a torn last record cut off, a torn header
    /// rewritten): worth logging, not worth stopping for.
    pub warnings: Vec<String>,
}

/// Everything that can go wrong. Each message names the file (and the byte
/// offset where there is one) and says what to do.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O call failed while opening the directory.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// A write or fsync in `sync` failed: the node must stop.
    SyncFailed { path: PathBuf, source: io::Error },
    /// An earlier `sync` failed; this `Storage` can no longer be used.
    Poisoned { path: PathBuf },
    /// Another process (or another `Storage`) has the log open.
    Locked { path: PathBuf },
    /// The log file has a full header that is not ours.
    NotARaftLog { path: PathBuf },
    /// The log file is ours, in a format this build does not read.
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// Damage that is not a torn last record: durable data would be lost.
    Corrupt {
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
            StorageError::UnsupportedVersion { path, version } => write!(
                f,
                "{}: written in log format version {version}, but this build reads only \
                 version {FORMAT_VERSION}. Run the raft build that wrote it.",
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
                 of this node, or (once membership changes exist) remove this node from the \
                 cluster, delete the directory and add it back as an empty node.",
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
            StorageError::Io { source, .. } | StorageError::SyncFailed { source, .. } => {
                Some(source)
            }
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
}

/// The durable state of one node: its hard state and its log.
///
/// Changes are buffered in memory until [`Storage::sync`], which writes them
/// as one record and makes them durable with one fsync. The driver calls
/// `sync` once per loop iteration, before it sends any message or answers any
/// client ("persist before you answer").
///
/// The log file is locked (an advisory lock, released when the `Storage` is
/// dropped or the process dies) so that two nodes cannot share a directory.
pub struct Storage {
    dir: PathBuf,
    log_path: PathBuf,
    /// The log, opened for appending.
    file: File,
    /// The last entry's index, counting buffered changes.
    last_index: Index,
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
    /// Set when a write or fsync failed: see the module docs.
    poisoned: bool,
}

impl fmt::Debug for Storage {
    /// Leaves out the pending bytes, which may be megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("log_path", &self.log_path)
            .field("last_index", &self.last_index)
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
    /// `dir`, checks or creates `dir/meta.json`, replays the log file and
    /// returns what was durable.
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
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| io_error(&log_path, "reading the log", source))?;

        let mut warnings = Vec::new();
        if created || !has_full_header(&log_path, &bytes)? {
            if !bytes.is_empty() {
                warnings.push(format!(
                    "{}: the header was torn ({} of {HEADER_LEN} bytes; the node stopped while \
                     creating the file); started a new, empty log",
                    log_path.display(),
                    bytes.len()
                ));
            }
            write_header(&mut file, dir, &log_path, &mut fsyncs)?;
            bytes = header().to_vec();
        }

        let replayed = replay(&log_path, &bytes)?;
        if let Some(torn) = &replayed.torn {
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

        let storage = Storage {
            dir: dir.to_path_buf(),
            log_path,
            file,
            last_index: replayed.entries.len() as Index,
            hard_state: replayed.hard_state.clone(),
            pending: Vec::new(),
            record_ends: Vec::new(),
            open_record: None,
            scratch: Vec::new(),
            fsyncs,
            poisoned: false,
        };
        let recovered = Recovered {
            hard_state: replayed.hard_state,
            entries: replayed.entries,
            warnings,
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
    /// `1..=last_index() + 1`; otherwise an error, and nothing changes.
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
    pub fn truncate_from(&mut self, index: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        let index = index.max(1);
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
        let mut start = 0;
        for &end in &self.record_ends {
            // One record, one fsync: a record must be durable before the next
            // one starts, or recovery could mistake a torn write for damage.
            let written = self
                .file
                .write_all(&self.pending[start..end])
                .and_then(|()| self.file.sync_data());
            if let Err(source) = written {
                self.poisoned = true;
                return Err(StorageError::SyncFailed {
                    path: self.log_path.clone(),
                    source,
                });
            }
            self.fsyncs += 1;
            start = end;
        }
        self.pending.clear();
        self.pending.shrink_to(RETAINED_BUFFER_BYTES);
        self.record_ends.clear();
        Ok(())
    }

    /// The index of the last entry, counting entries not yet synced; 0 if
    /// the log is empty.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// How many fsyncs (of files and directories, including those made by
    /// `open`) this `Storage` has done: for benchmarks and reports.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs
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

    /// The entries must be contiguous and leave no gap after the log.
    fn check_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        if first == 0 || first > self.last_index + 1 {
            return Err(self.invalid(format!(
                "cannot append entries starting at index {first}: the log ends at index {}, \
                 so the first new entry must be in 1..={}",
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

/// The 8 bytes in front of a payload: its length and its CRC.
fn frame(payload: &[u8]) -> [u8; FRAME_LEN] {
    let mut frame = [0; FRAME_LEN];
    // Payloads are at most MAX_RECORD_BYTES, so the length fits in a u32.
    frame[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame
}

fn header() -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
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
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_error(dir, "fsyncing the directory", source))?;
    *fsyncs += 1;
    Ok(())
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

/// Opens and locks the log for reading and appending; `true` if it was
/// just created.
fn open_log_file(path: &Path) -> Result<(File, bool), StorageError> {
    let mut options = OpenOptions::new();
    options.read(true).append(true);
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
        Ok(()) => Ok((file, created)),
        Err(TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: path.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(io_error(path, "locking the log", source)),
    }
}

/// `Ok(true)` for a good header, `Ok(false)` for none or a torn one (the
/// file is shorter than a header and holds its first bytes), else an error.
fn has_full_header(path: &Path, bytes: &[u8]) -> Result<bool, StorageError> {
    let not_ours = || StorageError::NotARaftLog {
        path: path.to_path_buf(),
    };
    let Some(found) = bytes.get(..HEADER_LEN) else {
        return if header().starts_with(bytes) {
            Ok(false)
        } else {
            Err(not_ours())
        };
    };
    let (magic, version) = found.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(not_ours());
    }
    let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(true)
}

/// Starts the log anew: header, fsync of the file and of its directory.
fn write_header(
    file: &mut File,
    dir: &Path,
    path: &Path,
    fsyncs: &mut u64,
) -> Result<(), StorageError> {
    file.set_len(0)
        .and_then(|()| file.write_all(&header()))
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, "writing the log header", source))?;
    *fsyncs += 1;
    sync_dir(dir, fsyncs)
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
    entries: Vec<Entry>,
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
fn replay(path: &Path, bytes: &[u8]) -> Result<Replayed, StorageError> {
    let mut state = Replayed {
        hard_state: HardState::default(),
        entries: Vec::new(),
        valid_len: HEADER_LEN,
        torn: None,
    };
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
                    state.apply(op).map_err(|reason| corrupt(at, reason))?;
                }
                state.valid_len = next;
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
    /// Applies one operation, checking that the log stays contiguous.
    fn apply(&mut self, op: Op<'static>) -> Result<(), String> {
        let last_index = self.entries.len() as Index;
        match op {
            Op::HardState(hs) => self.hard_state = hs.into_owned(),
            Op::Entry(entry) => {
                if entry.index != last_index + 1 {
                    return Err(format!(
                        "entry {} does not follow the last entry {last_index}",
                        entry.index
                    ));
                }
                self.entries.push(entry.into_owned());
            }
            Op::TruncateFrom(index) => {
                if index == 0 || index > last_index {
                    return Err(format!(
                        "truncate_from {index} is outside the log, which ends at {last_index}"
                    ));
                }
                self.entries.truncate(index as usize - 1);
            }
        }
        Ok(())
    }
}
