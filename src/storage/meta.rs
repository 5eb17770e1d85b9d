//! `DIR/meta.json`: which node a data directory belongs to, checked on
//! every start and written once (see "`DIR/meta.json`" in the module docs).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::error::io_error;
use super::files::sync_dir;
use super::{StorageError, META_FILE};
use crate::message::NodeId;

/// Where `meta.json` is written before it is renamed into place.
const META_TEMP_FILE: &str = "meta.json.tmp";

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
    pub(super) fn normalized(&self) -> Option<Metadata> {
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

/// Checks that `dir/meta.json` describes this node, or writes it if absent.
pub(super) fn check_or_create_metadata(
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
