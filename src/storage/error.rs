//! What can go wrong with storage, and what a person can do about it: every
//! message names the file (and the byte offset where there is one).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::record::MAGIC;
use super::{Metadata, META_FILE};

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

pub(super) fn io_error(path: &Path, action: &'static str, source: io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}
