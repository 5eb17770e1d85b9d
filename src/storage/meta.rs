//! `DIR/meta.json`: which node a data directory belongs to, and its
//! incarnation; checked on every start, written when the directory is created
//! (or, for a directory older than incarnations, the first time it is
//! opened). See "`DIR/meta.json`" in the module docs.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::error::io_error;
use super::files::sync_dir;
use super::{StorageError, META_FILE};
use crate::message::{Incarnation, NodeId};

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

/// `meta.json` as written: the metadata and the directory's incarnation, a
/// random number drawn when the directory is created (a directory from a
/// build without incarnations gets one the first time it is opened). Builds
/// that do not know the field ignore it.
#[derive(Serialize, Deserialize)]
struct StoredMetadata {
    #[serde(flatten)]
    meta: Metadata,
    #[serde(default)]
    incarnation: Incarnation,
}

/// A new incarnation: random, never 0 (which means "unknown").
fn new_incarnation() -> Incarnation {
    rand::random_range(1..=Incarnation::MAX)
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<&str> = self.members.iter().map(NodeId::as_str).collect();
        write!(f, "node {} with members [{}]", self.id, members.join(", "))
    }
}

/// Checks that `dir/meta.json` describes this node, or writes it if absent;
/// returns the directory's incarnation.
pub(super) fn check_or_create_metadata(
    dir: &Path,
    meta: &Metadata,
    log_path: &Path,
    fsyncs: &mut u64,
) -> Result<Incarnation, StorageError> {
    let path = dir.join(META_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let (stored, incarnation) = parse_metadata(&path, &bytes)?;
            if stored != *meta {
                return Err(StorageError::MetadataMismatch {
                    path,
                    stored,
                    given: meta.clone(),
                });
            }
            if incarnation != 0 {
                return Ok(incarnation);
            }
            // Written by a build without incarnations: this directory was
            // never recorded under one, so any new one is as good.
            let incarnation = new_incarnation();
            write_metadata(dir, &path, meta, incarnation, fsyncs)?;
            Ok(incarnation)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // meta.json is made durable before the log is created, so a
            // non-empty log without it was not left by a crash.
            if fs::metadata(log_path).is_ok_and(|m| m.len() > 0) {
                return Err(StorageError::MissingMetadata {
                    path: log_path.to_path_buf(),
                });
            }
            let incarnation = new_incarnation();
            write_metadata(dir, &path, meta, incarnation, fsyncs)?;
            Ok(incarnation)
        }
        Err(source) => Err(io_error(&path, "reading", source)),
    }
}

fn parse_metadata(path: &Path, bytes: &[u8]) -> Result<(Metadata, Incarnation), StorageError> {
    let bad = |reason: String| StorageError::BadMetadata {
        path: path.to_path_buf(),
        reason,
    };
    let stored: StoredMetadata = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = stored.meta.normalized().ok_or_else(|| {
        bad(format!(
            "{} does not list the node itself as a member",
            stored.meta
        ))
    })?;
    Ok((meta, stored.incarnation))
}

/// Temp file, fsync, rename, fsync of the directory: `meta.json` is either
/// absent or complete, never half written.
fn write_metadata(
    dir: &Path,
    path: &Path,
    meta: &Metadata,
    incarnation: Incarnation,
    fsyncs: &mut u64,
) -> Result<(), StorageError> {
    let temp = dir.join(META_TEMP_FILE);
    let stored = StoredMetadata {
        meta: meta.clone(),
        incarnation,
    };
    let mut text = serde_json::to_vec_pretty(&stored).map_err(|e| StorageError::BadMetadata {
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
