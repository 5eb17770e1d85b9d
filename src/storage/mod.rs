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
//! These docs are the one description of the on-disk format; `cargo doc
//! --open` renders them.
//!
//! # Persist before you answer
//!
//! In each turn of the driver's loop (`src/node/event_loop.rs`,
//! `Node::handle_ready`), new entries and a changed term or vote are buffered here
//! and made durable by one [`Storage::sync`] before any message that depends
//! on them is sent: a granted vote, an AppendEntries acknowledgement, and, on
//! the leader, before it counts its own copy of an entry towards a majority
//! ([`Raft::advance`](crate::core::Raft::advance)). One fsync covers every
//! entry and state change of a turn (group commit), never one per entry. A
//! failed write or fsync stops the node: it can no longer know what is on
//! disk (see [Failures](#failures)).
//!
//! # Where the code is
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | The API: [`Storage`], [`Storage::open`] as four named steps (lock, load the snapshot, replay, reconcile), the limits. |
//! | `record.rs` | The log's header and records: framing, the operations, encoding them in `sync`'s buffer, reading one back. |
//! | `replay.rs` | Replay and repair: the log read back, a torn tail cut off, the log reconciled with the snapshot. |
//! | `snapshot.rs` | The snapshot file, and compaction's two durable steps. |
//! | `meta.rs` | `meta.json`: whose directory this is. |
//! | `files.rs` | Creating the directory durably, fsyncing a directory, locking the log, reserving space. |
//! | `error.rs` | [`StorageError`] and the message a person reads for each. |
//! | `crash.rs` | The crash tests' hooks: [`DiskStep`], [`StorageBugSwitches`]. |
//!
//! # On-disk format
//!
//! A node keeps everything it must not forget in one directory, `DIR`
//! (`--data-dir`, by default `raft-data/<id>`), and says what it recovered
//! from it when it starts:
//!
//! ```text
//! Node 8000 recovered term 7, vote 8001, 1234 entries (last index 1234) from raft-data/8000
//! ```
//!
//! ```text
//! DIR/meta.json   which node this directory belongs to, and its incarnation
//! DIR/log         current_term, voted_for and the log entries after the
//!                 snapshot (append-only; replaced whole by compaction)
//! DIR/snapshot    the latest snapshot, if the node has taken one
//! ```
//!
//! `DIR/snapshot.tmp` and `DIR/log.tmp` exist only while a snapshot is
//! being saved; see [Snapshots and compaction](#snapshots-and-compaction).
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
//!   ],
//!   "incarnation": 7245385937722213871
//! }
//! ```
//!
//! The node id and the sorted member list (which includes the node itself),
//! and the directory's incarnation: a random number drawn when the directory
//! is created, so that the cluster can tell a node that came back with a new
//! directory (and so without its votes) from the one it knew (see
//! [`core::membership`](crate::core::membership)). A directory written
//! before incarnations existed gets one the first time it is opened; builds
//! that do not know the field ignore it.
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
//! log" below). All integers are little-endian.
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
//! nothing else yet (`xxd DIR/log | head -5`): the header, then one record
//! of 54 (0x36) bytes, then zeros.
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
//! `sync` as one record with one `fsync` (group commit: one fsync per turn
//! of the driver's loop, not per entry). So a record is only ever started
//! after every record before it was fsynced, and a crash can damage only the
//! last record, however the file system orders the blocks of an unfinished
//! write. (A batch larger than `MAX_RECORD_BYTES` is split into several
//! records, each fsynced before the next is written, which keeps this true.)
//!
//! **Space ahead of the log.** When a record would not fit in the file,
//! `sync` first extends the file with `set_len` to [`PREALLOCATE_BYTES`]
//! (1 MiB) past that record's end, and then writes records into that zeroed
//! space, at the end of the last record rather than at the end of the file.
//! So most syncs overwrite bytes inside the file instead of growing it, and
//! `sync_data` has no new file size to make durable: on the development
//! machine that took a small record's fsync from about 130 to about 90 µs,
//! and the fsync of a follower is on the path of every write (see the
//! measurements in `src/bench/mod.rs`). Reading the log back, eight
//! zero bytes where a record header should be, with only zeros after them,
//! are the end of the log. (A header of all zeros is never a record: a
//! length of 0 is invalid.)
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
//! when it returns). A snapshot at or below the stored one's index is then
//! ignored. Otherwise, each step durable before the next:
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
//! `tests/storage.rs` checks this by stopping `save_snapshot` after each
//! step ([`DiskStep`]) and opening every directory a power loss could leave
//! at that point (each rename not yet followed by a directory fsync undone
//! or not, each unsynced file whole, halved or empty). The four
//! [`StorageBugSwitches`] each break one of the rules above, and the check
//! catches every one.
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
//! - **Zeros after the last record**, up to the end of the file, are the
//!   space reserved ahead of the log: nothing to repair or report. Zeros
//!   followed by an intact record are damage (see below).
//! - **A damaged last record** (a short header, a short payload, a length of
//!   0 or above the limit, a bad CRC) with no valid record after it is taken
//!   for a torn write: the node stopped while writing it, before `sync`
//!   returned, so it was never acknowledged. The file is cut back to the end
//!   of the last good record and fsynced, a warning names the file and
//!   offset, and the node starts.
//! - **Damage before the end** refuses to start, with an error naming the
//!   file and offset. "Before the end" means: scanning forward byte by byte
//!   from the damage finds a position where a whole record starts, with a
//!   length in range, a matching CRC and a payload that decodes. Such a
//!   record was written after the damaged one was fsynced, so the damaged one
//!   held durable, possibly acknowledged data; dropping it silently would
//!   break the promise Raft makes. The error says what to do: restore the
//!   directory from a backup of this node, or remove the node from the
//!   cluster, delete the directory and add the node back empty. (A payload
//!   is JSON text and never contains a zero byte, while every valid length
//!   has a zero high byte, so no fake record can be found inside a torn
//!   payload.)
//! - **A record with a correct CRC that does not make sense** (an entry
//!   whose index is not last index + 1, a `truncate_from` outside the log, an
//!   undecodable payload) is corruption too, wherever it is.
//! - **An empty file (0 bytes), or a file shorter than the header whose
//!   bytes are the start of the header,** is a crash while creating the
//!   file: it is treated as new (with a warning if it was not empty).
//! - **A full header with another magic**: "not a raft log". **Another
//!   version**: "unsupported format version".
//!
//! Last, the log is reconciled with the snapshot:
//!
//! - **The log starts where the snapshot ends** (`compacted` names the same
//!   index and term, or neither exists): the usual case.
//! - **The log starts before the snapshot ends**: the node stopped between
//!   the two renames. `open` finishes the compaction: it drops the entries up
//!   to the snapshot's index, and applies rules 6 and 7 to the rest (if the
//!   log's entry at that index has another term, the entries after it go
//!   too), rewrites the log as step 2 would, and warns.
//! - **The log starts after the snapshot ends** (or there is no snapshot),
//!   or at the same index with another term: entries that no file holds, so
//!   an error. So is an empty log, or a torn header, beside a snapshot: the
//!   log was complete once, and the hard state is lost.
//!
//! Limits worth knowing:
//!
//! - Damage to the last record cannot be told apart from a torn write, so a
//!   bit flipped on disk inside the newest record, after it was synced, loses
//!   that newest batch with only a warning.
//! - Replay reads the whole file into memory, and so does `save_snapshot`
//!   to copy the entries it keeps. Compaction bounds the file to the
//!   entries since the last snapshot (plus any overwritten or truncated
//!   since), so this is one snapshot interval of log (how long recovery
//!   takes is measured in `src/bench/mod.rs`).
//! - A snapshot is held in memory whole, and limited to
//!   [`MAX_SNAPSHOT_BYTES`]; `save_snapshot` refuses a larger one.
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
//!
//! Every other problem is an error naming the file, never a panic: an
//! unreadable or unwritable directory, a full disk, a file that is not ours,
//! a directory belonging to another node. Each [`StorageError`] says what to
//! do about it.

mod crash;
mod error;
mod files;
mod meta;
mod record;
mod replay;
mod snapshot;

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::message::{Entry, HardState, Incarnation, Index, Snapshot};

#[cfg(feature = "bug-switches")]
use crash::CrashHook;
pub use crash::{DiskStep, StorageBugSwitches};
pub use error::StorageError;
use files::{create_dir_durably, open_log_file, reserve};
use meta::check_or_create_metadata;
pub use meta::Metadata;
use record::{Compacted, Op};
use replay::entries_after_snapshot;
use snapshot::encode_snapshot;

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

/// How far ahead of its last record the log file is extended, in one
/// `set_len`, when a record would not fit: see "Space ahead of the log" in
/// the module docs.
pub const PREALLOCATE_BYTES: u64 = 1024 * 1024;

/// How much buffer capacity `sync` keeps for the next batch; a larger
/// buffer, left by an unusually big batch, is given back.
const RETAINED_BUFFER_BYTES: usize = 1024 * 1024;

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
    /// This data directory's incarnation (see `message::Incarnation`).
    pub incarnation: Incarnation,
}

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

impl Storage {
    /// Opens (creating if missing, with an fsync of the parent directory)
    /// `dir` and returns what was durable, in four steps, each in the file
    /// that knows its part of the format:
    ///
    /// 1. **lock**: create the directory if needed, check or create
    ///    `dir/meta.json`, open and lock the log (`fs.rs`, `meta.rs`);
    /// 2. **load the snapshot**, if there is one, after deleting what a crash
    ///    in the middle of [`Storage::save_snapshot`] left (`snapshot.rs`);
    /// 3. **replay** the log, cutting off a torn last record (`replay.rs`);
    /// 4. **reconcile** the log with the snapshot: if the node stopped
    ///    between the two renames of a compaction, finish it, so the files
    ///    are back in their usual shape before the node goes on
    ///    (`replay.rs`, then the log is rewritten as compaction would).
    ///
    /// See "Recovery" in the module docs for what each step accepts, repairs
    /// or refuses.
    ///
    /// `meta.members` may come in any order but must include `meta.id`; a
    /// directory created with another id or member list is refused.
    pub fn open(dir: &Path, meta: &Metadata) -> Result<(Storage, Recovered), StorageError> {
        let mut opening = Opening::new(dir);
        let (file, created, incarnation) = opening.lock(meta)?;
        let snapshot = opening.load_snapshot()?;
        let snapshot_bytes = snapshot.as_ref().map_or(0, |(_, len)| *len);
        let snapshot = snapshot.map(|(snapshot, _)| snapshot);
        let mut log = opening.replay(file, created, snapshot.as_ref())?;
        let base = snapshot
            .as_ref()
            .map_or(Compacted::default(), Compacted::of);
        let finish_compaction = opening.reconcile(&mut log.replayed, base)?;

        let Opening {
            log_path,
            fsyncs,
            warnings,
            ..
        } = opening;
        let replayed = log.replayed;
        let mut storage = Storage {
            dir: dir.to_path_buf(),
            log_path,
            file: log.file,
            last_index: replayed.last_index(),
            snapshot: base,
            log_bytes: replayed.valid_len as u64,
            snapshot_bytes,
            file_len: log.file_len,
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
            let encoded = storage.encode_log(base, &replayed.entries)?;
            storage.replace_log(&encoded, true)?;
        }
        let recovered = Recovered {
            hard_state: replayed.hard_state,
            entries: replayed.entries,
            warnings,
            snapshot,
            incarnation,
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
}

/// What [`Storage::open`] carries from one step to the next: the paths, the
/// fsyncs done so far and the warnings for the caller.
struct Opening<'a> {
    dir: &'a Path,
    log_path: PathBuf,
    snapshot_path: PathBuf,
    fsyncs: u64,
    warnings: Vec<String>,
}

impl<'a> Opening<'a> {
    fn new(dir: &'a Path) -> Opening<'a> {
        Opening {
            dir,
            log_path: dir.join(LOG_FILE),
            snapshot_path: dir.join(SNAPSHOT_FILE),
            fsyncs: 0,
            warnings: Vec::new(),
        }
    }

    /// Step 1 of `open`: makes sure the directory exists and belongs to this
    /// node, then opens and locks the log. Returns the log, `true` if it was
    /// just created, and the directory's incarnation. Everything after this
    /// runs with the lock held.
    fn lock(&mut self, meta: &Metadata) -> Result<(File, bool, Incarnation), StorageError> {
        let meta = meta
            .normalized()
            .ok_or_else(|| StorageError::InvalidRequest {
                path: self.dir.join(META_FILE),
                reason: format!(
                    "the member list of {meta} does not include the node itself; \
                     pass every member, this node included"
                ),
            })?;
        create_dir_durably(self.dir, &mut self.fsyncs)?;
        let incarnation =
            check_or_create_metadata(self.dir, &meta, &self.log_path, &mut self.fsyncs)?;
        let (file, created) = open_log_file(&self.log_path)?;
        Ok((file, created, incarnation))
    }
}
