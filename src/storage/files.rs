//! Filesystem helpers: creating the data directory durably, fsyncing a
//! directory so that a new name in it survives a power loss, opening and
//! locking the log, and reserving space ahead of it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

use super::error::io_error;
use super::{StorageError, PREALLOCATE_BYTES};

/// Makes a new directory entry durable: fsyncs the directory holding it.
pub(super) fn sync_dir(dir: &Path, fsyncs: &mut u64) -> Result<(), StorageError> {
    fsync_dir(dir).map_err(|source| io_error(dir, "fsyncing the directory", source))?;
    *fsyncs += 1;
    Ok(())
}

pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing the parent of each one
/// created, so the directory survives a crash right after `open`.
pub(super) fn create_dir_durably(dir: &Path, fsyncs: &mut u64) -> Result<(), StorageError> {
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

/// Opens and locks the log for reading and writing; `true` if it was
/// just created.
pub(super) fn open_log_file(path: &Path) -> Result<(File, bool), StorageError> {
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

/// Makes the log file (now `file_len` bytes) at least `end` bytes long,
/// extending it by [`PREALLOCATE_BYTES`] beyond `end` when it is shorter, so
/// that most syncs overwrite zeros instead of growing the file.
pub(super) fn reserve(file: &File, file_len: &mut u64, end: u64) -> io::Result<()> {
    if end <= *file_len {
        return Ok(());
    }
    let len = end + PREALLOCATE_BYTES;
    file.set_len(len)?;
    *file_len = len;
    Ok(())
}
