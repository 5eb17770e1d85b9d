//! Replay and repair: reading the log back into the hard state and the
//! entries, telling a torn last record (cut off, with a warning) from damage
//! before the end (an error), and reconciling the log with the snapshot
//! beside it, finishing a compaction a crash interrupted (see "Recovery" in
//! the module docs). Steps 3 and 4 of `Storage::open`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::error::io_error;
use super::files::sync_dir;
use super::record::{
    decode, find_record_after, header, log_version, read_record, Compacted, Damage, Op,
    COMPACTED_FORMAT_VERSION, FORMAT_VERSION, HEADER_LEN,
};
use super::{Opening, StorageError};
use crate::message::{Entry, HardState, Index, Snapshot, Term, MAX_INDEX, MAX_TERM};

/// The log as step 3 of `open` leaves it: the file, replayed, with a torn
/// last record cut off.
pub(super) struct ReplayedLog {
    pub(super) file: File,
    pub(super) replayed: Replayed,
    /// The file's length: the records, then the zeros reserved ahead.
    pub(super) file_len: u64,
}

impl Opening<'_> {
    /// Step 3 of `open`: reads the whole log and replays it. A new log, or
    /// one whose header was torn while it was being created, is started
    /// anew; a torn last record is cut off, with a warning; damage anywhere
    /// else is an error.
    pub(super) fn replay(
        &mut self,
        mut file: File,
        created: bool,
        snapshot: Option<&Snapshot>,
    ) -> Result<ReplayedLog, StorageError> {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| io_error(&self.log_path, "reading the log", source))?;
        let version = if created {
            None
        } else {
            log_version(&self.log_path, &bytes)?
        };
        let version = match version {
            Some(version) => version,
            None => {
                self.start_new_log(&mut file, bytes.len(), snapshot)?;
                bytes = header(FORMAT_VERSION).to_vec();
                FORMAT_VERSION
            }
        };

        let replayed = replay(&self.log_path, &bytes, version)?;
        let mut file_len = bytes.len() as u64;
        if let Some(torn) = &replayed.torn {
            file_len = replayed.valid_len as u64;
            cut_torn_tail(&file, &self.log_path, replayed.valid_len, &mut self.fsyncs)?;
            self.warnings.push(format!(
                "{}: cut off a torn record at byte offset {} ({} bytes up to the end of the \
                 file: {}); the node most likely stopped while writing it, before it was \
                 durable, so it was never acknowledged",
                self.log_path.display(),
                replayed.valid_len,
                bytes.len() - replayed.valid_len,
                torn
            ));
        }
        Ok(ReplayedLog {
            file,
            replayed,
            file_len,
        })
    }

    /// A log with no complete header (`torn_len` bytes of one, 0 for a new
    /// file): a crash while creating it, so it starts anew; unless a
    /// snapshot exists, since the log beside a snapshot is only ever
    /// replaced by a complete, fsynced one.
    fn start_new_log(
        &mut self,
        file: &mut File,
        torn_len: usize,
        snapshot: Option<&Snapshot>,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = snapshot {
            return Err(StorageError::Corrupt {
                path: self.log_path.clone(),
                offset: 0,
                reason: format!(
                    "the log is empty or has no complete header, but {} holds a \
                     snapshot up to index {}, so the log was complete once; \
                     current_term and voted_for are lost",
                    self.snapshot_path.display(),
                    snapshot.last_included_index
                ),
            });
        }
        if torn_len > 0 {
            self.warnings.push(format!(
                "{}: the header was torn ({torn_len} of {HEADER_LEN} bytes; the node stopped \
                 while creating the file); started a new, empty log",
                self.log_path.display(),
            ));
        }
        write_header(file, self.dir, &self.log_path, &mut self.fsyncs)
    }

    /// Step 4 of `open`: checks that the log belongs with the snapshot
    /// (whose last entry is `base`), and if the node stopped between
    /// renaming the snapshot into place and replacing the log, drops what
    /// the snapshot replaced (Figure 13, InstallSnapshot receiver rules 6
    /// and 7), with a warning. Afterwards `replayed` starts at `base`;
    /// returns whether the log on disk must be rewritten to match.
    pub(super) fn reconcile(
        &mut self,
        replayed: &mut Replayed,
        base: Compacted,
    ) -> Result<bool, StorageError> {
        check_log_start(&self.log_path, &self.snapshot_path, replayed, base)?;
        // The log starts before the snapshot's end only if the node stopped
        // between renaming the snapshot into place and replacing the log.
        if replayed.start == base {
            return Ok(false);
        }
        let last_index = replayed.last_index();
        let conflict = replayed.term_of(base.last_included_index);
        let entries = std::mem::take(&mut replayed.entries);
        replayed.entries = entries_after_snapshot(replayed.start, entries, base);
        replayed.start = base;
        self.warnings.push(finished_compaction_warning(
            &self.snapshot_path,
            base,
            last_index,
            conflict,
            replayed.entries.len(),
        ));
        Ok(true)
    }
}

/// The result of reading a log file from start to end.
pub(super) struct Replayed {
    pub(super) hard_state: HardState,
    /// The entry the log starts after (from its `compacted` operation; 0, 0
    /// if it has none), and the offset of the record that says so.
    pub(super) start: Compacted,
    pub(super) start_offset: usize,
    /// The entries from `start.last_included_index + 1` on.
    pub(super) entries: Vec<Entry>,
    /// Whether an entry or truncation was replayed: `compacted` must come
    /// before any.
    pub(super) saw_log_ops: bool,
    /// Where the last good record ends.
    pub(super) valid_len: usize,
    /// Why the bytes after `valid_len` are a torn record, if there are any.
    pub(super) torn: Option<Damage>,
}

/// Reads every record after the header and rebuilds the hard state and log.
pub(super) fn replay(path: &Path, bytes: &[u8], version: u32) -> Result<Replayed, StorageError> {
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
    pub(super) fn new(valid_len: usize) -> Replayed {
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

    pub(super) fn last_index(&self) -> Index {
        self.start.last_included_index + self.entries.len() as Index
    }

    pub(super) fn term_of(&self, index: Index) -> Option<Term> {
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
pub(super) fn check_position(index: Index, term: Term) -> Result<(), String> {
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
pub(super) fn entries_after_snapshot(
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
