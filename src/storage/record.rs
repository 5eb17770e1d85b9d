//! The log file's records: the header, the frame (length and CRC) in front
//! of each payload, the operations a payload holds, and how `sync`'s buffer
//! is filled with them (see "`DIR/log`" in the module docs). Reading a record
//! back, and telling a torn one from an intact one, is here too; what replay
//! does with the records is in `replay.rs`.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use super::{Storage, StorageError, MAX_RECORD_BYTES};
use crate::message::{Entry, HardState, Index, Snapshot, Term};

/// The first bytes of every log file.
pub(super) const MAGIC: [u8; 8] = *b"RAFT-LOG";

/// The log format of a log that was never compacted. New logs are still
/// written in it, so that a directory without a snapshot stays readable by
/// builds older than snapshots.
pub(super) const FORMAT_VERSION: u32 = 1;

/// The log format of a log rewritten by compaction: version 1 plus the
/// `compacted` operation at its start. An older build refuses it with
/// "unsupported format version" instead of misreading it.
pub(super) const COMPACTED_FORMAT_VERSION: u32 = 2;

/// Magic plus version.
pub(super) const HEADER_LEN: usize = MAGIC.len() + 4;

/// Payload length plus CRC in front of every record.
pub(super) const FRAME_LEN: usize = 8;

/// One operation inside a record. `Cow` lets `append` encode borrowed
/// entries without cloning them, and replay decode owned ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Op<'a> {
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
pub(super) struct Compacted {
    pub(super) last_included_index: Index,
    pub(super) last_included_term: Term,
}

impl Compacted {
    pub(super) fn of(snapshot: &Snapshot) -> Compacted {
        Compacted {
            last_included_index: snapshot.last_included_index,
            last_included_term: snapshot.last_included_term,
        }
    }
}

/// Where `pending` was before an `append`, to undo it if it fails halfway.
pub(super) struct Mark {
    pending_len: usize,
    records: usize,
    open_record: Option<usize>,
    last_index: Index,
}

impl Storage {
    pub(super) fn push_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
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
    pub(super) fn push_op(&mut self, op: &Op<'_>) -> Result<(), StorageError> {
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
    pub(super) fn seal(&mut self) {
        let Some(start) = self.open_record.take() else {
            return;
        };
        self.pending.push(b']');
        let payload = &self.pending[start + FRAME_LEN..];
        let frame = frame(payload);
        self.pending[start..start + FRAME_LEN].copy_from_slice(&frame);
        self.record_ends.push(self.pending.len());
    }

    pub(super) fn mark(&self) -> Mark {
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
    pub(super) fn rollback(&mut self, mark: Mark) {
        self.pending.truncate(mark.pending_len);
        self.record_ends.truncate(mark.records);
        self.open_record = mark.open_record;
        self.last_index = mark.last_index;
    }
}

/// The 8 bytes in front of a payload: its length and its CRC.
pub(super) fn frame(payload: &[u8]) -> [u8; FRAME_LEN] {
    let mut frame = [0; FRAME_LEN];
    // Payloads are at most MAX_RECORD_BYTES (or, for a snapshot,
    // MAX_SNAPSHOT_BYTES), so the length fits in a u32.
    frame[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    frame
}

pub(super) fn header(version: u32) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(&MAGIC);
    header[MAGIC.len()..].copy_from_slice(&version.to_le_bytes());
    header
}

/// `Ok(Some(version))` for a good header, `Ok(None)` for none or a torn one
/// (the file is shorter than a header and holds its first bytes; only a new
/// log, version 1, is ever written in place), else an error.
pub(super) fn log_version(path: &Path, bytes: &[u8]) -> Result<Option<u32>, StorageError> {
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

/// Why the bytes at some offset are not a whole, intact record.
#[derive(Debug)]
pub(super) enum Damage {
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
pub(super) fn read_record(bytes: &[u8], at: usize) -> Result<(&[u8], usize), Damage> {
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

pub(super) fn decode(payload: &[u8]) -> Result<Vec<Op<'static>>, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// The first offset after `from` where an intact record with a decodable
/// payload starts, if any: evidence that damage before it is not a torn
/// write at the end of the file.
pub(super) fn find_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len())
        .find(|&at| read_record(bytes, at).is_ok_and(|(payload, _)| decode(payload).is_ok()))
}
