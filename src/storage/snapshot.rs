//! The snapshot file and compaction: `DIR/snapshot` written and read,
//! `save_snapshot`'s two steps (the snapshot, then the log rewritten after
//! it), each made durable before the next, and step 2 of `Storage::open`,
//! which loads the snapshot after deleting what a crash in the middle of a
//! compaction left (see "`DIR/snapshot`" and "Snapshots and compaction" in
//! the module docs).

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::Path;

use super::crash::DiskStep;
use super::error::io_error;
use super::files::fsync_dir;
use super::record::{
    frame, header, log_version, Compacted, Op, COMPACTED_FORMAT_VERSION, FRAME_LEN, HEADER_LEN,
};
use super::replay::{check_position, replay, Replayed};
use super::{
    Opening, Storage, StorageError, LOG_FILE, LOG_TEMP_FILE, MAX_SNAPSHOT_BYTES, SNAPSHOT_FILE,
    SNAPSHOT_TEMP_FILE,
};
use crate::message::{Entry, Snapshot};

/// The first bytes of every snapshot file.
const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFT-SNP";

/// The version of the snapshot file format described in the module docs.
const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Magic, version, payload length and CRC: where a snapshot's JSON starts.
const SNAPSHOT_HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 4 + FRAME_LEN;

impl Storage {
    /// The log as it is on disk, all of it synced: what compaction copies
    /// the kept entries from. The `Storage` does not keep entries in memory
    /// (the core does), and reading back one snapshot interval of log is
    /// cheap next to the fsyncs a snapshot costs.
    pub(super) fn read_back(&self) -> Result<Replayed, StorageError> {
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
    pub(super) fn encode_log(
        &mut self,
        start: Compacted,
        entries: &[Entry],
    ) -> Result<Vec<u8>, StorageError> {
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
    pub(super) fn replace_snapshot(
        &mut self,
        bytes: &[u8],
        committed: bool,
    ) -> Result<(), StorageError> {
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
    pub(super) fn replace_log(
        &mut self,
        bytes: &[u8],
        committed: bool,
    ) -> Result<(), StorageError> {
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
}

impl Opening<'_> {
    /// Step 2 of `open`: deletes what a crash in the middle of
    /// `save_snapshot` left, then loads `DIR/snapshot`: the snapshot and the
    /// file's length, or `None` if there is none. Only now, with the log
    /// locked, is a temporary file surely what a crash left: no other node
    /// can be in the middle of a compaction here.
    pub(super) fn load_snapshot(&mut self) -> Result<Option<(Snapshot, u64)>, StorageError> {
        remove_leftover_temp_files(self.dir, &mut self.warnings)?;
        read_snapshot(&self.snapshot_path)
    }
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
pub(super) fn encode_snapshot(snapshot: &Snapshot) -> Result<Vec<u8>, String> {
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
