//! Hooks for the crash tests: the steps `save_snapshot` takes on disk, a
//! hook that can stop the node after any of them, and deliberate mistakes
//! in the order of those steps. The hook and the switches can only be set
//! with the `bug-switches` feature; in a release build every switch reads as
//! off and no hook is ever called.

use super::{Storage, StorageError};

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
pub(super) type CrashHook = Box<dyn FnMut(DiskStep) -> bool + Send>;

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

impl Storage {
    /// Called after each step of a compaction; in test builds, the crash
    /// hook may stop the node right there, as a crash would.
    pub(super) fn reached(&mut self, step: DiskStep) -> Result<(), StorageError> {
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
    pub(super) fn bugs(&self) -> StorageBugSwitches {
        #[cfg(feature = "bug-switches")]
        {
            self.bugs
        }
        #[cfg(not(feature = "bug-switches"))]
        {
            StorageBugSwitches::default()
        }
    }
}
