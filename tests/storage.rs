//! Tests of the durable log: round trips, torn writes at every byte, damage
//! that must stop the node, foreign files, snapshots and compaction, a crash
//! (and a power loss) after every step of `save_snapshot`, and a
//! model-based property test with crashes. The on-disk format is the one in
//! `src/storage/mod.rs`.

use proptest::prelude::*;
use raft::message::{Entry, EntryData, HardState, Index, Membership, NodeId, Snapshot, Term};
use raft::storage::{
    DiskStep, Metadata, Recovered, Storage, StorageBugSwitches, StorageError, LOG_FILE,
    LOG_TEMP_FILE, MAX_RECORD_BYTES, MAX_SNAPSHOT_BYTES, META_FILE, PREALLOCATE_BYTES,
    SNAPSHOT_FILE, SNAPSHOT_TEMP_FILE,
};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

fn node(id: &str) -> NodeId {
    NodeId::new(id)
}

fn meta(id: &str) -> Metadata {
    Metadata {
        id: node(id),
        members: vec![node("8000"), node("8001"), node("8002")],
    }
}

fn entry(index: Index, term: Term, command: &str) -> Entry {
    Entry {
        term,
        index,
        data: EntryData::Command(command.to_string()),
    }
}

fn hard_state(current_term: Term, voted_for: Option<&str>) -> HardState {
    HardState {
        current_term,
        voted_for: voted_for.map(node),
    }
}

/// What opening a new directory recovers: nothing, but the incarnation it
/// was given (a random number, never 0).
fn nothing_recovered(recovered: &Recovered) -> Recovered {
    assert_ne!(
        recovered.incarnation, 0,
        "a new directory has an incarnation"
    );
    Recovered {
        incarnation: recovered.incarnation,
        ..Recovered::default()
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

fn membership() -> Membership {
    Membership {
        voters: ["8000", "8001", "8002"]
            .into_iter()
            .map(|id| (node(id), format!("127.0.0.1:{id}")))
            .collect(),
        learners: BTreeMap::new(),
        incarnations: BTreeMap::new(),
    }
}

fn snapshot(last_included_index: Index, last_included_term: Term, data: &str) -> Snapshot {
    Snapshot {
        last_included_index,
        last_included_term,
        membership: membership(),
        data: data.to_string(),
    }
}

/// `n` entries from index `first` on, all of term `term`.
fn entries(first: Index, n: u64, term: Term) -> Vec<Entry> {
    (first..first + n)
        .map(|i| entry(i, term, &format!("v{i}")))
        .collect()
}

/// The sizes of the log (its records) and snapshot files, as `disk_bytes`
/// should count.
fn files_len(dir: &Path) -> u64 {
    let snapshot = fs::metadata(snapshot_path(dir)).map_or(0, |m| m.len());
    log_records(dir).len() as u64 + snapshot
}

/// Where the log's records end.
fn log_len(dir: &Path) -> u64 {
    log_records(dir).len() as u64
}

/// The log file without the zeros that `sync` reserves after the last
/// record. A record never ends with a zero byte (its payload is JSON), and
/// the header is kept whole.
fn log_records(dir: &Path) -> Vec<u8> {
    let mut bytes = fs::read(log_path(dir)).expect("log file");
    let end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1)
        .max(raw_header(1).len().min(bytes.len()));
    bytes.truncate(end);
    bytes
}

fn open(dir: &Path) -> (Storage, Recovered) {
    match Storage::open(dir, &meta("8000")) {
        Ok(opened) => opened,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn open_err(dir: &Path) -> StorageError {
    match Storage::open(dir, &meta("8000")) {
        Ok((_, recovered)) => panic!("open succeeded, recovering {recovered:?}"),
        Err(e) => e,
    }
}

/// What the storage should hold: the test's own model of it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The entries after the snapshot.
    entries: Vec<Entry>,
}

impl Model {
    fn of(recovered: &Recovered) -> Model {
        Model {
            hard_state: recovered.hard_state.clone(),
            snapshot: recovered.snapshot.clone(),
            entries: recovered.entries.clone(),
        }
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.last_included_index)
    }

    fn last_index(&self) -> Index {
        self.snapshot_index() + self.entries.len() as Index
    }

    fn term_of(&self, index: Index) -> Option<Term> {
        match &self.snapshot {
            Some(s) if s.last_included_index == index => Some(s.last_included_term),
            _ => {
                let offset = index.checked_sub(self.snapshot_index() + 1)?;
                self.entries.get(offset as usize).map(|e| e.term)
            }
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            self.truncate_from(first.index);
            self.entries.extend_from_slice(entries);
        }
    }

    fn truncate_from(&mut self, index: Index) {
        let keep = index.saturating_sub(self.snapshot_index() + 1);
        self.entries.truncate(keep as usize);
    }

    /// Figure 13, InstallSnapshot receiver rules 6 and 7, written
    /// independently of `src/storage/mod.rs`.
    fn save_snapshot(&mut self, snapshot: &Snapshot) {
        let index = snapshot.last_included_index;
        if index <= self.snapshot_index() {
            return;
        }
        if self.term_of(index) == Some(snapshot.last_included_term) {
            self.entries.retain(|e| e.index > index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snapshot.clone());
    }
}

/// Writes three records, one per sync, and returns the model after each and
/// the file length after each (the first length is the header alone).
fn three_records(dir: &Path) -> (Vec<Model>, Vec<u64>) {
    let (mut storage, _) = open(dir);
    let mut model = Model::default();
    let mut models = vec![model.clone()];
    let mut lens = vec![log_len(dir)];
    let mut record = |storage: &mut Storage, model: &Model| {
        storage.sync().expect("sync");
        models.push(model.clone());
        lens.push(log_len(dir));
    };

    let batch = [entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")];
    storage
        .save_hard_state(&hard_state(1, Some("8000")))
        .unwrap();
    storage.append(&batch).unwrap();
    model.hard_state = hard_state(1, Some("8000"));
    model.append(&batch);
    record(&mut storage, &model);

    let batch = [entry(4, 1, "d"), entry(5, 1, "e")];
    storage.append(&batch).unwrap();
    model.append(&batch);
    record(&mut storage, &model);

    // A new leader in term 2 overwrites entry 5, and this node voted for it.
    let batch = [entry(5, 2, "E"), entry(6, 2, "F")];
    storage
        .save_hard_state(&hard_state(2, Some("8001")))
        .unwrap();
    storage.append(&batch).unwrap();
    model.hard_state = hard_state(2, Some("8001"));
    model.append(&batch);
    record(&mut storage, &model);
    (models, lens)
}

/// Builds a record by hand, following the documented format.
fn raw_record(payload: &str) -> Vec<u8> {
    let mut record = Vec::new();
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload.as_bytes()).to_le_bytes());
    record.extend_from_slice(payload.as_bytes());
    record
}

fn raw_header(version: u32) -> Vec<u8> {
    let mut header = b"RAFT-LOG".to_vec();
    header.extend_from_slice(&version.to_le_bytes());
    header
}

/// A data directory whose log holds exactly `records` (built by hand).
fn dir_with_records(records: &[&str]) -> TempDir {
    let tmp = TempDir::new().unwrap();
    drop(open(tmp.path()));
    let mut bytes = raw_header(1);
    for payload in records {
        bytes.extend(raw_record(payload));
    }
    fs::write(log_path(tmp.path()), bytes).unwrap();
    tmp
}

fn flip_bit(dir: &Path, full: &[u8], offset: usize) {
    let mut bytes = full.to_vec();
    bytes[offset] ^= 1 << (offset % 8);
    fs::write(log_path(dir), bytes).unwrap();
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trip_of_appends_truncations_and_hard_states() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, recovered) = open(tmp.path());
    assert_eq!(recovered, nothing_recovered(&recovered));
    let mut model = Model::default();

    let batch: Vec<Entry> = (1..=10).map(|i| entry(i, 1, &format!("v{i}"))).collect();
    storage.append(&batch).unwrap();
    model.append(&batch);
    storage.save_hard_state(&hard_state(1, None)).unwrap();
    storage
        .save_hard_state(&hard_state(2, Some("8002")))
        .unwrap();
    model.hard_state = hard_state(2, Some("8002"));
    storage.sync().unwrap();

    storage.truncate_from(8).unwrap();
    model.truncate_from(8);
    let overwrite = [entry(6, 2, "x"), entry(7, 2, "y")];
    storage.append(&overwrite).unwrap();
    model.append(&overwrite);
    let noop = Entry {
        term: 3,
        index: 8,
        data: EntryData::Noop,
    };
    storage.append(std::slice::from_ref(&noop)).unwrap();
    model.append(&[noop]);
    storage.save_hard_state(&hard_state(3, None)).unwrap();
    model.hard_state = hard_state(3, None);
    storage.sync().unwrap();
    assert_eq!(storage.last_index(), 8);
    assert_eq!(storage.dir(), tmp.path());
    drop(storage);

    let (storage, recovered) = open(tmp.path());
    assert_eq!(Model::of(&recovered), model);
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(storage.last_index(), 8);
}

#[test]
fn commands_with_any_characters_survive() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let odd = [
        "",
        "\0",
        "line\nbreak",
        "\"quoted\"",
        "ünïcødé ✓",
        "\u{7f}\u{1}",
    ];
    let batch: Vec<Entry> = (1..).zip(odd).map(|(i, s)| entry(i, 1, s)).collect();
    storage.append(&batch).unwrap();
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(open(tmp.path()).1.entries, batch);
}

#[test]
fn a_new_directory_is_created_with_its_parents() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("a").join("b").join("node-8000");
    let (storage, recovered) = open(&dir);
    assert_eq!(recovered, nothing_recovered(&recovered));
    assert_eq!(storage.last_index(), 0);
    assert!(dir.join(META_FILE).is_file());
    assert!(log_path(&dir).is_file());
}

#[test]
fn unsynced_changes_are_lost_in_a_crash() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage.append(&[entry(1, 1, "kept")]).unwrap();
    storage.sync().unwrap();
    storage.append(&[entry(2, 1, "lost")]).unwrap();
    storage.save_hard_state(&hard_state(5, None)).unwrap();
    assert_eq!(storage.last_index(), 2);
    drop(storage); // a crash: no sync

    let (storage, recovered) = open(tmp.path());
    assert_eq!(recovered.entries, vec![entry(1, 1, "kept")]);
    assert_eq!(recovered.hard_state, HardState::default());
    assert_eq!(storage.last_index(), 1);
}

#[test]
fn one_fsync_per_sync_and_none_when_nothing_is_pending() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let before = storage.fsync_count();
    storage.sync().unwrap();
    assert_eq!(
        storage.fsync_count(),
        before,
        "an empty sync must not fsync"
    );

    for i in 1..=100 {
        storage.append(&[entry(i, 1, "x")]).unwrap();
        storage.save_hard_state(&hard_state(i, None)).unwrap();
    }
    storage.sync().unwrap();
    assert_eq!(storage.fsync_count(), before + 1, "group commit: one fsync");

    // Saving the same hard state again, or truncating past the end, or
    // appending nothing, leaves nothing to sync.
    storage.save_hard_state(&hard_state(100, None)).unwrap();
    storage.truncate_from(101).unwrap();
    storage.append(&[]).unwrap();
    storage.sync().unwrap();
    assert_eq!(storage.fsync_count(), before + 1);
}

#[test]
fn a_batch_over_the_record_limit_is_split_and_round_trips() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let big = "x".repeat(MAX_RECORD_BYTES / 3);
    let batch: Vec<Entry> = (1..=3).map(|i| entry(i, 1, &big)).collect();
    let before = storage.fsync_count();
    storage.append(&batch).unwrap();
    storage.sync().unwrap();
    // Two records (two entries fit in one), each made durable before the
    // next is written.
    assert_eq!(storage.fsync_count(), before + 2);
    drop(storage);
    assert_eq!(open(tmp.path()).1.entries, batch);
}

#[test]
fn a_torn_sync_of_several_records_keeps_a_prefix_of_them() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage.append(&[entry(1, 1, "small")]).unwrap();
    storage.sync().unwrap();
    let start = log_len(tmp.path()) as usize;
    let big = "x".repeat(MAX_RECORD_BYTES / 3);
    let batch: Vec<Entry> = (2..=4).map(|i| entry(i, 1, &big)).collect();
    storage.append(&batch).unwrap();
    storage.sync().unwrap(); // two records: entries 2 and 3, then entry 4
    drop(storage);

    let full = log_records(tmp.path());
    let first_len = u32::from_le_bytes(full[start..start + 4].try_into().unwrap());
    let boundary = start + 8 + first_len as usize;
    let end = full.len();
    // (cut the file here, entries recovered, torn?)
    let cases = [
        (start + 1, 1, true),
        (boundary - 1, 1, true),
        (boundary, 3, false),
        (boundary + 1, 3, true),
        (end - 1, 3, true),
        (end, 4, false),
    ];
    for (cut, entries, torn) in cases {
        fs::write(log_path(tmp.path()), &full[..cut]).unwrap();
        let recovered = open(tmp.path()).1;
        assert_eq!(recovered.entries.len(), entries, "cut at {cut}");
        assert_eq!(recovered.warnings.len(), usize::from(torn), "cut at {cut}");
        assert_eq!(recovered.entries[0], entry(1, 1, "small"));
        assert_eq!(recovered.entries[1..], batch[..entries - 1]);
    }
}

// ---------------------------------------------------------------- refused requests

#[test]
fn impossible_appends_are_refused_and_change_nothing() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage
        .append(&[entry(1, 1, "a"), entry(2, 1, "b")])
        .unwrap();
    storage.sync().unwrap();
    let fsyncs = storage.fsync_count();

    let gap = storage.append(&[entry(4, 1, "gap")]).unwrap_err();
    assert!(matches!(gap, StorageError::InvalidRequest { .. }), "{gap}");
    assert!(gap.to_string().contains("1..=3"), "{gap}");
    let zero = storage.append(&[entry(0, 1, "zero")]).unwrap_err();
    assert!(
        matches!(zero, StorageError::InvalidRequest { .. }),
        "{zero}"
    );
    let holes = storage
        .append(&[entry(3, 1, "c"), entry(5, 1, "e")])
        .unwrap_err();
    assert!(
        matches!(holes, StorageError::InvalidRequest { .. }),
        "{holes}"
    );

    assert_eq!(storage.last_index(), 2);
    storage.sync().unwrap();
    assert_eq!(storage.fsync_count(), fsyncs, "nothing was buffered");
    drop(storage);
    assert_eq!(open(tmp.path()).1.entries.len(), 2);
}

#[test]
fn a_term_going_down_or_a_second_vote_is_refused() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage
        .save_hard_state(&hard_state(3, Some("8001")))
        .unwrap();
    let down = storage.save_hard_state(&hard_state(2, None)).unwrap_err();
    assert!(down.to_string().contains("from 3 to 2"), "{down}");
    let revote = storage
        .save_hard_state(&hard_state(3, Some("8002")))
        .unwrap_err();
    assert!(
        matches!(revote, StorageError::InvalidRequest { .. }),
        "{revote}"
    );
    // A new term may bring a new vote.
    storage
        .save_hard_state(&hard_state(4, Some("8002")))
        .unwrap();
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(open(tmp.path()).1.hard_state, hard_state(4, Some("8002")));
}

#[test]
fn an_entry_over_the_limit_is_refused_and_undoes_its_whole_append() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let mut model = Model::default();
    // Leave a big record open, so that the next append seals it before it
    // fails: the undo must reopen it.
    let first = [entry(1, 1, &"a".repeat(MAX_RECORD_BYTES / 2))];
    storage.append(&first).unwrap();
    model.append(&first);

    let fits = entry(2, 1, &"b".repeat(MAX_RECORD_BYTES / 2));
    let too_big = entry(3, 1, &"c".repeat(MAX_RECORD_BYTES));
    let err = storage.append(&[fits, too_big]).unwrap_err();
    assert!(err.to_string().contains("MAX_RECORD_BYTES"), "{err}");
    assert_eq!(storage.last_index(), 1);

    let after = [entry(2, 1, "small")];
    storage.append(&after).unwrap();
    model.append(&after);
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(Model::of(&open(tmp.path()).1), model);
}

// ---------------------------------------------------------------- torn writes

#[test]
fn a_torn_last_record_is_cut_off_at_every_byte_offset() {
    let tmp = TempDir::new().unwrap();
    let (models, lens) = three_records(tmp.path());
    let full = fs::read(log_path(tmp.path())).unwrap();
    let (start, end) = (lens[2] as usize, lens[3] as usize);

    for cut in start..end {
        fs::write(log_path(tmp.path()), &full[..cut]).unwrap();
        let (storage, recovered) = open(tmp.path());
        assert_eq!(Model::of(&recovered), models[2], "cut at {cut}");
        assert_eq!(storage.last_index(), 5);
        if cut == start {
            assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
        } else {
            assert_eq!(recovered.warnings.len(), 1, "cut at {cut}");
            let warning = &recovered.warnings[0];
            assert!(warning.contains(&log_path(tmp.path()).display().to_string()));
            assert!(warning.contains(&format!("offset {start}")), "{warning}");
        }
        drop(storage);
        // The torn bytes are gone for good: the next open is clean.
        assert_eq!(log_len(tmp.path()), lens[2], "cut at {cut}");
        assert!(open(tmp.path()).1.warnings.is_empty());
    }
}

#[test]
fn after_cutting_a_torn_record_the_log_grows_again() {
    let tmp = TempDir::new().unwrap();
    let (models, lens) = three_records(tmp.path());
    let file = fs::OpenOptions::new()
        .write(true)
        .open(log_path(tmp.path()))
        .unwrap();
    file.set_len(lens[3] - 3).unwrap();
    drop(file);

    let (mut storage, recovered) = open(tmp.path());
    assert_eq!(recovered.warnings.len(), 1);
    let mut model = models[2].clone();
    let batch = [entry(6, 3, "after")];
    storage.append(&batch).unwrap();
    model.append(&batch);
    storage.sync().unwrap();
    drop(storage);
    let recovered = open(tmp.path()).1;
    assert_eq!(Model::of(&recovered), model);
    assert!(recovered.warnings.is_empty());
}

#[test]
fn a_flipped_bit_anywhere_in_the_last_record_is_cut_off_with_a_warning() {
    let tmp = TempDir::new().unwrap();
    let (models, lens) = three_records(tmp.path());
    let full = fs::read(log_path(tmp.path())).unwrap();
    for offset in lens[2] as usize..lens[3] as usize {
        flip_bit(tmp.path(), &full, offset);
        let recovered = open(tmp.path()).1;
        assert_eq!(Model::of(&recovered), models[2], "flip at {offset}");
        assert_eq!(recovered.warnings.len(), 1, "flip at {offset}");
        assert!(recovered.warnings[0].contains(&format!("offset {}", lens[2])));
    }
}

#[test]
fn a_flipped_bit_anywhere_in_a_middle_record_stops_the_node() {
    let tmp = TempDir::new().unwrap();
    let (_, lens) = three_records(tmp.path());
    let full = fs::read(log_path(tmp.path())).unwrap();
    for offset in lens[1] as usize..lens[2] as usize {
        flip_bit(tmp.path(), &full, offset);
        match open_err(tmp.path()) {
            StorageError::Corrupt {
                path, offset: at, ..
            } => {
                assert_eq!(path, log_path(tmp.path()));
                assert_eq!(at, lens[1], "flip at {offset}");
            }
            other => panic!("flip at {offset}: expected Corrupt, got {other}"),
        }
    }
    let message = open_err(tmp.path()).to_string();
    assert!(message.contains(&log_path(tmp.path()).display().to_string()));
    assert!(
        message.contains(&format!("offset {}", lens[1])),
        "{message}"
    );
    assert!(message.contains("restore"), "{message}");
}

#[test]
fn unwritten_blocks_inside_the_last_record_are_a_torn_write() {
    // A file system may persist the end of an unfinished write but not its
    // start; here the start of the last record reads as zeros.
    let tmp = TempDir::new().unwrap();
    let (models, lens) = three_records(tmp.path());
    let mut bytes = fs::read(log_path(tmp.path())).unwrap();
    bytes[lens[2] as usize..lens[2] as usize + 12].fill(0);
    fs::write(log_path(tmp.path()), bytes).unwrap();
    let recovered = open(tmp.path()).1;
    assert_eq!(Model::of(&recovered), models[2]);
    assert!(recovered.warnings[0].contains("length of 0"));
}

#[test]
fn sync_reserves_zeroed_space_ahead_of_the_log() {
    let tmp = TempDir::new().unwrap();
    let (_, lens) = three_records(tmp.path());
    let file = fs::read(log_path(tmp.path())).unwrap();
    // Reserved by the first sync, which found the file too short.
    assert_eq!(file.len() as u64, lens[1] + PREALLOCATE_BYTES);
    assert!(file[lens[3] as usize..].iter().all(|&b| b == 0));
}

#[test]
fn zeros_after_the_last_record_are_reserved_space_not_damage() {
    let tmp = TempDir::new().unwrap();
    let (models, lens) = three_records(tmp.path());
    let mut bytes = log_records(tmp.path());
    bytes.extend([0; 4096]);
    fs::write(log_path(tmp.path()), bytes).unwrap();
    let (mut storage, recovered) = open(tmp.path());
    assert_eq!(Model::of(&recovered), models[3]);
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    // The next record goes right after the last one, not after the zeros.
    let mut model = models[3].clone();
    storage.append(&[entry(7, 2, "g")]).unwrap();
    model.append(&[entry(7, 2, "g")]);
    storage.sync().unwrap();
    drop(storage);
    let recovered = open(tmp.path()).1;
    assert_eq!(Model::of(&recovered), model);
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert!(log_len(tmp.path()) > lens[3]);
}

#[test]
fn a_torn_record_inside_the_reserved_space_is_cut_off() {
    let tmp = TempDir::new().unwrap();
    let (models, lens) = three_records(tmp.path());
    let full = fs::read(log_path(tmp.path())).unwrap();
    let (start, end) = (lens[2] as usize, lens[3] as usize);
    for cut in start + 1..end {
        let mut bytes = full.clone();
        bytes[cut..end].fill(0);
        fs::write(log_path(tmp.path()), bytes).unwrap();
        let recovered = open(tmp.path()).1;
        assert_eq!(Model::of(&recovered), models[2], "cut at {cut}");
        assert_eq!(recovered.warnings.len(), 1, "cut at {cut}");
        assert!(recovered.warnings[0].contains(&format!("offset {start}")));
    }
}

#[test]
fn zeros_followed_by_a_record_are_damage_not_reserved_space() {
    // A whole record read back as zeros (a lost write), with a later record
    // intact: the zeros are not the end of the log.
    let tmp = TempDir::new().unwrap();
    let (_, lens) = three_records(tmp.path());
    let mut bytes = log_records(tmp.path());
    bytes[lens[1] as usize..lens[2] as usize].fill(0);
    fs::write(log_path(tmp.path()), bytes).unwrap();
    match open_err(tmp.path()) {
        StorageError::Corrupt { offset, .. } => assert_eq!(offset, lens[1]),
        other => panic!("expected Corrupt, got {other}"),
    }
}

// ---------------------------------------------------------------- the header

#[test]
fn an_empty_log_file_is_a_new_log() {
    let tmp = TempDir::new().unwrap();
    let (_, lens) = three_records(tmp.path());
    fs::write(log_path(tmp.path()), b"").unwrap();
    let (mut storage, recovered) = open(tmp.path());
    assert_eq!(recovered, nothing_recovered(&recovered));
    assert_eq!(log_len(tmp.path()), lens[0], "the header was written");
    storage.append(&[entry(1, 1, "new")]).unwrap();
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(open(tmp.path()).1.entries, vec![entry(1, 1, "new")]);
}

#[test]
fn a_torn_header_is_a_new_log_with_a_warning() {
    let tmp = TempDir::new().unwrap();
    let (_, lens) = three_records(tmp.path());
    let header = raw_header(1);
    assert_eq!(lens[0], header.len() as u64);
    for cut in 1..header.len() {
        fs::write(log_path(tmp.path()), &header[..cut]).unwrap();
        let recovered = open(tmp.path()).1;
        assert_eq!(Model::of(&recovered), Model::default());
        assert_eq!(recovered.warnings.len(), 1, "cut at {cut}");
        assert_eq!(log_len(tmp.path()), lens[0]);
    }
}

#[test]
fn a_file_that_is_not_ours_is_refused() {
    let tmp = TempDir::new().unwrap();
    drop(open(tmp.path()));
    for content in [&b"hello, this is not a raft log"[..], b"hi", b"RAFT-LOX"] {
        fs::write(log_path(tmp.path()), content).unwrap();
        let err = open_err(tmp.path());
        assert!(matches!(err, StorageError::NotARaftLog { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&log_path(tmp.path()).display().to_string()));
        assert!(message.contains("not a raft log"), "{message}");
    }
}

#[test]
fn another_format_version_is_refused() {
    let tmp = TempDir::new().unwrap();
    drop(open(tmp.path()));
    // Version 1 is a log never compacted, version 2 a compacted one.
    fs::write(log_path(tmp.path()), raw_header(3)).unwrap();
    let err = open_err(tmp.path());
    assert!(
        matches!(err, StorageError::UnsupportedVersion { version: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("versions 1 and 2"), "{err}");
}

// ---------------------------------------------------------------- the documented format

#[test]
fn a_hand_built_log_is_read_as_documented() {
    let tmp = dir_with_records(&[
        r#"[{"hard_state":{"current_term":2,"voted_for":"8001"}},{"entry":{"term":1,"index":1,"data":"noop"}}]"#,
        r#"[{"entry":{"term":2,"index":2,"data":{"command":"foo"}}},{"truncate_from":2},{"entry":{"term":2,"index":2,"data":{"command":"bar"}}}]"#,
    ]);
    let recovered = open(tmp.path()).1;
    assert_eq!(recovered.hard_state, hard_state(2, Some("8001")));
    let noop = Entry {
        term: 1,
        index: 1,
        data: EntryData::Noop,
    };
    assert_eq!(recovered.entries, vec![noop, entry(2, 2, "bar")]);
    assert!(recovered.warnings.is_empty());
}

#[test]
fn the_first_vote_of_a_new_node_is_the_documented_example() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage
        .save_hard_state(&hard_state(1, Some("8001")))
        .unwrap();
    storage.sync().unwrap();
    let mut expected = raw_header(1);
    expected.extend(raw_record(
        r#"[{"hard_state":{"current_term":1,"voted_for":"8001"}}]"#,
    ));
    let bytes = log_records(tmp.path());
    assert_eq!(bytes, expected);
    // The length and CRC shown in the `xxd` example of the docs.
    assert_eq!(bytes[12..20], [0x36, 0, 0, 0, 0x16, 0xfb, 0x47, 0xf6]);
}

#[test]
fn well_formed_records_that_make_no_sense_are_corruption_even_at_the_end() {
    let one = r#"[{"entry":{"term":1,"index":1,"data":"noop"}}]"#;
    let cases = [
        (
            r#"[{"entry":{"term":1,"index":3,"data":"noop"}}]"#,
            "does not follow",
        ),
        (r#"[{"truncate_from":2}]"#, "outside the log"),
        (r#"[{"truncate_from":0}]"#, "outside the log"),
        (r#"[{"no_such_operation":1}]"#, "does not decode"),
        (
            r#"[{"hard_state":{"current_term":18446744073709551615,"voted_for":null}}]"#,
            "above the highest term",
        ),
        (
            r#"[{"entry":{"term":4611686018427387905,"index":2,"data":"noop"}}]"#,
            "above the highest term",
        ),
        ("not json at all", "does not decode"),
    ];
    let second_record = (raw_header(1).len() + raw_record(one).len()) as u64;
    for (bad, why) in cases {
        let tmp = dir_with_records(&[one, bad]);
        let err = open_err(tmp.path());
        let message = err.to_string();
        assert!(
            matches!(err, StorageError::Corrupt { offset, .. } if offset == second_record),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
    }
}

// ---------------------------------------------------------------- meta.json

#[test]
fn a_directory_of_another_node_is_refused() {
    let tmp = TempDir::new().unwrap();
    drop(open(tmp.path()));
    let err = Storage::open(tmp.path(), &meta("8001")).unwrap_err();
    assert!(
        matches!(err, StorageError::MetadataMismatch { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&tmp.path().join(META_FILE).display().to_string()));
    assert!(
        message.contains("node 8000") && message.contains("node 8001"),
        "{message}"
    );
}

#[test]
fn a_different_member_list_is_refused_but_another_order_is_not() {
    let tmp = TempDir::new().unwrap();
    drop(open(tmp.path()));
    let mut other = meta("8000");
    other.members.push(node("8003"));
    let message = Storage::open(tmp.path(), &other).unwrap_err().to_string();
    assert!(message.contains("[8000, 8001, 8002]"), "{message}");
    assert!(message.contains("[8000, 8001, 8002, 8003]"), "{message}");

    let mut reordered = meta("8000");
    reordered.members.reverse();
    assert!(Storage::open(tmp.path(), &reordered).is_ok());
}

#[test]
fn members_must_include_the_node_itself() {
    let tmp = TempDir::new().unwrap();
    let lonely = Metadata {
        id: node("8000"),
        members: vec![node("8001")],
    };
    let err = Storage::open(tmp.path(), &lonely).unwrap_err();
    assert!(matches!(err, StorageError::InvalidRequest { .. }), "{err}");
}

/// Each data directory gets an incarnation when it is created, kept across
/// restarts; a directory created anew gets another one; a directory written
/// by a build without incarnations still opens and gets one, kept from then
/// on (and the file stays readable by such a build, which ignores it).
#[test]
fn a_directory_keeps_its_incarnation_and_a_new_one_gets_another() {
    let tmp = TempDir::new().unwrap();
    let first = Storage::open(tmp.path(), &meta("8000"))
        .unwrap()
        .1
        .incarnation;
    assert_ne!(first, 0);
    let again = Storage::open(tmp.path(), &meta("8000"))
        .unwrap()
        .1
        .incarnation;
    assert_eq!(again, first);

    fs::remove_dir_all(tmp.path()).unwrap();
    let replaced = Storage::open(tmp.path(), &meta("8000"))
        .unwrap()
        .1
        .incarnation;
    assert_ne!(replaced, first);

    let old_format = r#"{"id": "8000", "members": ["8000", "8001", "8002"]}"#;
    fs::write(tmp.path().join(META_FILE), old_format).unwrap();
    let given = Storage::open(tmp.path(), &meta("8000"))
        .unwrap()
        .1
        .incarnation;
    assert_ne!(given, 0);
    let kept = Storage::open(tmp.path(), &meta("8000"))
        .unwrap()
        .1
        .incarnation;
    assert_eq!(kept, given);
    let text = fs::read_to_string(tmp.path().join(META_FILE)).unwrap();
    let as_old: Metadata = serde_json::from_str(&text).unwrap();
    assert_eq!(as_old, meta("8000"));
}

#[test]
fn a_garbled_or_missing_meta_json_is_refused() {
    let tmp = TempDir::new().unwrap();
    let (_, _) = three_records(tmp.path());
    fs::write(tmp.path().join(META_FILE), "{ not json").unwrap();
    let err = open_err(tmp.path());
    assert!(matches!(err, StorageError::BadMetadata { .. }), "{err}");

    fs::remove_file(tmp.path().join(META_FILE)).unwrap();
    let err = open_err(tmp.path());
    assert!(matches!(err, StorageError::MissingMetadata { .. }), "{err}");
}

#[test]
fn a_directory_in_use_is_refused() {
    let tmp = TempDir::new().unwrap();
    let (first, _) = open(tmp.path());
    let err = open_err(tmp.path());
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    drop(open(tmp.path()));
}

#[test]
fn a_data_directory_that_is_a_file_is_an_error_not_a_panic() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let err = Storage::open(&file, &meta("8000")).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

// ---------------------------------------------------------------- snapshots and compaction

/// Entries 1..=10 of term 1 and 11..=20 of term 2, and a vote for 8001 in
/// term 2, all synced.
fn twenty_entries(storage: &mut Storage) -> Model {
    let batch = [entries(1, 10, 1), entries(11, 10, 2)].concat();
    storage
        .save_hard_state(&hard_state(2, Some("8001")))
        .unwrap();
    storage.append(&batch).unwrap();
    storage.sync().unwrap();
    let mut model = Model {
        hard_state: hard_state(2, Some("8001")),
        ..Model::default()
    };
    model.append(&batch);
    model
}

/// A snapshot file built by hand, following the documented format.
fn raw_snapshot(payload: &str) -> Vec<u8> {
    let mut bytes = b"RAFT-SNP".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend(raw_record(payload));
    bytes
}

fn raw_snapshot_of(snapshot: &Snapshot) -> Vec<u8> {
    raw_snapshot(&serde_json::to_string(snapshot).unwrap())
}

/// A data directory whose log (of format `version`) holds exactly
/// `records`.
fn dir_with_log(version: u32, records: &[&str]) -> TempDir {
    let tmp = TempDir::new().unwrap();
    drop(open(tmp.path()));
    let mut bytes = raw_header(version);
    for payload in records {
        bytes.extend(raw_record(payload));
    }
    fs::write(log_path(tmp.path()), bytes).unwrap();
    tmp
}

#[test]
fn a_snapshot_keeps_the_entries_after_it_and_survives_a_restart() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let mut model = twenty_entries(&mut storage);
    let uncompacted = log_len(tmp.path());
    let snap = snapshot(15, 2, "state at 15");
    storage.save_snapshot(&snap).unwrap();
    model.save_snapshot(&snap);
    assert_eq!(model.entries, entries(16, 5, 2), "rule 6 keeps 16..=20");
    assert_eq!(storage.snapshot_index(), 15);
    assert_eq!(storage.last_index(), 20);
    assert!(
        log_len(tmp.path()) < uncompacted / 2,
        "the log was rewritten"
    );
    assert_eq!(storage.disk_bytes(), files_len(tmp.path()));
    assert!(!tmp.path().join(SNAPSHOT_TEMP_FILE).exists());
    assert!(!tmp.path().join(LOG_TEMP_FILE).exists());

    // The log goes on after the snapshot, in the rewritten file.
    storage.append(&entries(21, 2, 2)).unwrap();
    storage.sync().unwrap();
    model.append(&entries(21, 2, 2));
    assert_eq!(storage.disk_bytes(), files_len(tmp.path()));
    drop(storage);

    let (storage, recovered) = open(tmp.path());
    assert_eq!(Model::of(&recovered), model);
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(storage.snapshot_index(), 15);
    assert_eq!(storage.last_index(), 22);
    assert_eq!(storage.disk_bytes(), files_len(tmp.path()));
}

#[test]
fn a_snapshot_whose_last_entry_conflicts_discards_the_whole_log() {
    // Figure 13, rule 7: this node's entry 15 has term 2, the leader's
    // snapshot says term 3, so entries 16..=20 come from a deposed leader.
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let mut model = twenty_entries(&mut storage);
    let snap = snapshot(15, 3, "the leader's state");
    storage.save_snapshot(&snap).unwrap();
    model.save_snapshot(&snap);
    assert!(model.entries.is_empty());
    assert_eq!(storage.last_index(), 15);
    storage.append(&entries(16, 1, 3)).unwrap();
    model.append(&entries(16, 1, 3));
    storage.sync().unwrap();
    drop(storage);
    let recovered = open(tmp.path()).1;
    assert_eq!(Model::of(&recovered), model);
    assert_eq!(recovered.hard_state, hard_state(2, Some("8001")));
}

#[test]
fn a_snapshot_past_the_end_of_the_log_replaces_it() {
    // A follower far behind gets the leader's snapshot (InstallSnapshot).
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let mut model = twenty_entries(&mut storage);
    let snap = snapshot(100, 4, "far ahead");
    storage.save_snapshot(&snap).unwrap();
    model.save_snapshot(&snap);
    assert!(model.entries.is_empty());
    assert_eq!(storage.last_index(), 100);
    storage.append(&entries(101, 3, 4)).unwrap();
    model.append(&entries(101, 3, 4));
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(Model::of(&open(tmp.path()).1), model);
}

#[test]
fn an_older_or_equal_snapshot_is_ignored() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    twenty_entries(&mut storage);
    storage.save_snapshot(&snapshot(15, 2, "at 15")).unwrap();
    let stored = fs::read(snapshot_path(tmp.path())).unwrap();
    let log = fs::read(log_path(tmp.path())).unwrap();
    let fsyncs = storage.fsync_count();
    for stale in [snapshot(15, 2, "again"), snapshot(10, 1, "older")] {
        storage.save_snapshot(&stale).unwrap();
        assert_eq!(storage.snapshot_index(), 15);
        assert_eq!(storage.last_index(), 20);
    }
    assert_eq!(storage.fsync_count(), fsyncs, "nothing was written");
    assert_eq!(fs::read(snapshot_path(tmp.path())).unwrap(), stored);
    assert_eq!(fs::read(log_path(tmp.path())).unwrap(), log);
    drop(storage);
    let recovered = open(tmp.path()).1;
    assert_eq!(recovered.snapshot, Some(snapshot(15, 2, "at 15")));
}

#[test]
fn save_snapshot_makes_buffered_changes_durable_first() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage.append(&entries(1, 5, 1)).unwrap();
    storage.sync().unwrap();
    // Buffered, not synced: save_snapshot must sync them before compacting.
    storage.append(&entries(6, 3, 1)).unwrap();
    storage
        .save_hard_state(&hard_state(3, Some("8002")))
        .unwrap();
    storage.save_snapshot(&snapshot(4, 1, "at 4")).unwrap();
    drop(storage); // a crash: no sync after save_snapshot

    let recovered = open(tmp.path()).1;
    assert_eq!(recovered.hard_state, hard_state(3, Some("8002")));
    assert_eq!(recovered.entries, entries(5, 4, 1));
    // And so does an ignored one.
    let (mut storage, _) = open(tmp.path());
    storage.append(&entries(9, 1, 3)).unwrap();
    storage.save_snapshot(&snapshot(2, 1, "stale")).unwrap();
    drop(storage);
    let expected = [entries(5, 4, 1), entries(9, 1, 3)].concat();
    assert_eq!(open(tmp.path()).1.entries, expected);
}

#[test]
fn entries_the_snapshot_holds_cannot_be_appended_or_truncated() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    twenty_entries(&mut storage);
    storage.save_snapshot(&snapshot(15, 2, "at 15")).unwrap();
    let fsyncs = storage.fsync_count();

    for first in [15, 10, 1, 0] {
        let err = storage.append(&entries(first, 2, 2)).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRequest { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("16..=21"), "{message}");
        assert!(message.contains("in the snapshot"), "{message}");
    }
    for index in [15, 3, 1, 0] {
        let err = storage.truncate_from(index).unwrap_err();
        assert!(matches!(err, StorageError::InvalidRequest { .. }), "{err}");
        assert!(err.to_string().contains("in the snapshot"), "{err}");
    }
    assert_eq!(storage.last_index(), 20);
    storage.sync().unwrap();
    assert_eq!(storage.fsync_count(), fsyncs, "nothing was buffered");

    // Just after the snapshot is fine: the log after it may be replaced.
    storage.truncate_from(16).unwrap();
    assert_eq!(storage.last_index(), 15);
    storage.append(&entries(16, 1, 5)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(open(tmp.path()).1.entries, entries(16, 1, 5));
}

#[test]
fn a_snapshot_over_the_limit_is_refused_and_changes_nothing() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let mut model = twenty_entries(&mut storage);
    let huge = snapshot(15, 2, &"x".repeat(MAX_SNAPSHOT_BYTES));
    let err = storage.save_snapshot(&huge).unwrap_err();
    assert!(matches!(err, StorageError::InvalidRequest { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("MAX_SNAPSHOT_BYTES"), "{message}");
    assert!(message.contains(&snapshot_path(tmp.path()).display().to_string()));
    assert!(!snapshot_path(tmp.path()).exists());
    assert!(!tmp.path().join(SNAPSHOT_TEMP_FILE).exists());
    assert_eq!(storage.snapshot_index(), 0);

    // Still usable.
    storage.append(&entries(21, 1, 2)).unwrap();
    model.append(&entries(21, 1, 2));
    storage.sync().unwrap();
    drop(storage);
    assert_eq!(Model::of(&open(tmp.path()).1), model);
}

#[test]
fn compaction_bounds_disk_use() {
    // Ten rounds of 1,000 entries, each followed by a snapshot 100 entries
    // behind the end, as a node snapshots at its applied index.
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let mut sizes = Vec::new();
    for round in 0..10u64 {
        for batch in 0..10 {
            let first = round * 1000 + batch * 100 + 1;
            storage.append(&entries(first, 100, round + 1)).unwrap();
            storage.sync().unwrap();
        }
        let last = storage.last_index();
        storage
            .save_snapshot(&snapshot(last - 100, round + 1, &format!("round {round}")))
            .unwrap();
        assert_eq!(storage.disk_bytes(), files_len(tmp.path()));
        sizes.push(storage.disk_bytes());
    }
    // Only the snapshot and the last 100 entries stay (a few bytes more as
    // the indexes get longer), against some 150 KB without compaction.
    let (smallest, largest) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(largest * 10 < smallest * 11, "disk use grows: {sizes:?}");
    drop(storage);
    let (storage, recovered) = open(tmp.path());
    assert_eq!(recovered.entries, entries(9901, 100, 10));
    assert_eq!(storage.snapshot_index(), 9900);
}

#[test]
fn save_snapshot_makes_each_step_durable_before_the_next() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    twenty_entries(&mut storage);
    let steps = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&steps);
    storage.set_crash_hook(move |step| {
        seen.lock().unwrap().push(step);
        false
    });
    let fsyncs = storage.fsync_count();
    storage.save_snapshot(&snapshot(15, 2, "at 15")).unwrap();
    assert_eq!(
        *steps.lock().unwrap(),
        [
            DiskStep::Wrote(SNAPSHOT_TEMP_FILE),
            DiskStep::Synced(SNAPSHOT_TEMP_FILE),
            DiskStep::Renamed {
                from: SNAPSHOT_TEMP_FILE,
                to: SNAPSHOT_FILE
            },
            DiskStep::SyncedDir,
            DiskStep::Wrote(LOG_TEMP_FILE),
            DiskStep::Synced(LOG_TEMP_FILE),
            DiskStep::Renamed {
                from: LOG_TEMP_FILE,
                to: LOG_FILE
            },
            DiskStep::SyncedDir,
        ]
    );
    assert_eq!(
        storage.fsync_count(),
        fsyncs + 4,
        "two files, two directory fsyncs"
    );
}

// ---------------------------------------------------------------- snapshot files: format and damage

#[test]
fn the_snapshot_and_the_compacted_log_are_as_documented() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage
        .save_hard_state(&hard_state(2, Some("8001")))
        .unwrap();
    storage
        .append(&[entry(1, 1, "a"), entry(2, 2, "b"), entry(3, 2, "c")])
        .unwrap();
    storage.save_snapshot(&snapshot(2, 2, "b")).unwrap();

    let expected_snapshot = raw_snapshot(
        r#"{"last_included_index":2,"last_included_term":2,"membership":{"voters":{"8000":"127.0.0.1:8000","8001":"127.0.0.1:8001","8002":"127.0.0.1:8002"}},"data":"b"}"#,
    );
    assert_eq!(
        fs::read(snapshot_path(tmp.path())).unwrap(),
        expected_snapshot
    );
    assert_eq!(expected_snapshot.len(), 177, "the size given in the docs");
    let mut expected_log = raw_header(2);
    expected_log.extend(raw_record(
        r#"[{"hard_state":{"current_term":2,"voted_for":"8001"}},{"compacted":{"last_included_index":2,"last_included_term":2}},{"entry":{"term":2,"index":3,"data":{"command":"c"}}}]"#,
    ));
    assert_eq!(fs::read(log_path(tmp.path())).unwrap(), expected_log);
    assert_eq!(
        storage.disk_bytes(),
        (expected_snapshot.len() + expected_log.len()) as u64
    );
}

#[test]
fn a_hand_built_snapshot_and_compacted_log_are_read_as_documented() {
    let tmp = dir_with_log(
        2,
        &[
            r#"[{"hard_state":{"current_term":4,"voted_for":null}},{"compacted":{"last_included_index":7,"last_included_term":3}},{"entry":{"term":3,"index":8,"data":"noop"}}]"#,
            r#"[{"entry":{"term":4,"index":9,"data":{"command":"x"}}},{"truncate_from":9},{"entry":{"term":4,"index":9,"data":{"command":"y"}}}]"#,
        ],
    );
    fs::write(
        snapshot_path(tmp.path()),
        raw_snapshot(r#"{"last_included_index":7,"last_included_term":3,"membership":{"voters":{"8000":"127.0.0.1:8000"}},"data":"seven"}"#),
    )
    .unwrap();
    let (storage, recovered) = open(tmp.path());
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(recovered.hard_state, hard_state(4, None));
    let snap = recovered.snapshot.unwrap();
    assert_eq!((snap.last_included_index, snap.last_included_term), (7, 3));
    assert_eq!(snap.data, "seven");
    assert_eq!(
        snap.membership.address(&node("8000")),
        Some("127.0.0.1:8000")
    );
    let noop = Entry {
        term: 3,
        index: 8,
        data: EntryData::Noop,
    };
    assert_eq!(recovered.entries, vec![noop, entry(9, 4, "y")]);
    assert_eq!((storage.snapshot_index(), storage.last_index()), (7, 9));
}

#[test]
fn compacted_operations_out_of_place_are_corruption() {
    let at_5 = r#"{"compacted":{"last_included_index":5,"last_included_term":1}}"#;
    let cases: [(u32, Vec<String>, &str); 6] = [
        (1, vec![format!("[{at_5}]")], "format version 1"),
        (
            2,
            vec![
                r#"[{"entry":{"term":1,"index":1,"data":"noop"}}]"#.to_string(),
                format!("[{at_5}]"),
            ],
            "after the start",
        ),
        (2, vec![format!("[{at_5},{at_5}]")], "after the start"),
        (
            2,
            vec![r#"[{"compacted":{"last_included_index":0,"last_included_term":0}}]"#.to_string()],
            "index 0",
        ),
        (
            2,
            vec![format!(
                r#"[{at_5},{{"entry":{{"term":1,"index":6,"data":"noop"}}}},{{"truncate_from":5}}]"#
            )],
            "starts after the snapshot's index 5",
        ),
        (
            2,
            vec![format!(
                r#"[{at_5},{{"entry":{{"term":1,"index":5,"data":"noop"}}}}]"#
            )],
            "does not follow",
        ),
    ];
    for (version, records, why) in cases {
        let records: Vec<&str> = records.iter().map(String::as_str).collect();
        let tmp = dir_with_log(version, &records);
        let err = open_err(tmp.path());
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}

#[test]
fn a_damaged_snapshot_stops_the_node_whatever_byte_is_hit() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    twenty_entries(&mut storage);
    storage.save_snapshot(&snapshot(15, 2, "at 15")).unwrap();
    drop(storage);
    let path = snapshot_path(tmp.path());
    let full = fs::read(&path).unwrap();
    let named = path.display().to_string();

    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for offset in 0..full.len() {
        let mut bytes = full.clone();
        bytes[offset] ^= 1 << (offset % 8);
        damaged.push((format!("bit flipped at {offset}"), bytes));
    }
    for cut in 0..full.len() {
        damaged.push((format!("cut at {cut}"), full[..cut].to_vec()));
    }
    let mut longer = full.clone();
    longer.extend(b"\n");
    damaged.push(("a byte appended".to_string(), longer));

    for (what, bytes) in damaged {
        fs::write(&path, &bytes).unwrap();
        match open_err(tmp.path()) {
            StorageError::CorruptSnapshot { path: at, .. } => assert_eq!(at, path, "{what}"),
            StorageError::UnsupportedVersion { path: at, .. } => {
                assert_eq!(at, path, "{what}");
                assert!(what.contains("at 8") || what.contains("at 9") || what.contains("at 1"));
            }
            other => panic!("{what}: expected a damaged snapshot, got {other}"),
        }
    }
    fs::write(&path, &full[..full.len() - 1]).unwrap();
    let message = open_err(tmp.path()).to_string();
    assert!(message.contains(&named), "{message}");
    assert!(message.contains("offset 12"), "{message}");
    assert!(message.contains("restore"), "{message}");
}

#[test]
fn a_log_that_does_not_fit_its_snapshot_stops_the_node() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    twenty_entries(&mut storage);
    storage.save_snapshot(&snapshot(10, 1, "at 10")).unwrap();
    let older = fs::read(snapshot_path(tmp.path())).unwrap();
    storage.save_snapshot(&snapshot(15, 2, "at 15")).unwrap();
    drop(storage);
    let newer = fs::read(snapshot_path(tmp.path())).unwrap();
    let log = fs::read(log_path(tmp.path())).unwrap();

    let cases = [
        (None, log.clone(), "is missing"),
        (Some(older), log.clone(), "holds entries only up to 10"),
        (
            Some(raw_snapshot_of(&snapshot(15, 3, "other"))),
            log.clone(),
            "says that entry has term 3",
        ),
        (Some(newer.clone()), Vec::new(), "voted_for are lost"),
        (
            Some(newer),
            raw_header(1)[..5].to_vec(),
            "voted_for are lost",
        ),
    ];
    for (snapshot_file, log_file, why) in cases {
        match &snapshot_file {
            Some(bytes) => fs::write(snapshot_path(tmp.path()), bytes).unwrap(),
            None => fs::remove_file(snapshot_path(tmp.path())).unwrap(),
        }
        fs::write(log_path(tmp.path()), &log_file).unwrap();
        let err = open_err(tmp.path());
        let message = err.to_string();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{message}");
        assert!(message.contains(why), "{why}: {message}");
        assert!(message.contains(&log_path(tmp.path()).display().to_string()));
    }
}

// ---------------------------------------------------------------- crashes in the middle of save_snapshot

#[test]
fn leftover_temporary_files_are_deleted_with_a_warning() {
    // The files a crash while writing them leaves: half a snapshot, half a
    // compacted log. Neither was ever in place.
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    let model = twenty_entries(&mut storage);
    drop(storage);
    let snap = raw_snapshot_of(&snapshot(15, 2, "at 15"));
    fs::write(tmp.path().join(SNAPSHOT_TEMP_FILE), &snap[..snap.len() / 2]).unwrap();
    fs::write(tmp.path().join(LOG_TEMP_FILE), &raw_header(2)[..7]).unwrap();

    let recovered = open(tmp.path()).1;
    assert_eq!(Model::of(&recovered), model);
    assert_eq!(recovered.warnings.len(), 2, "{:?}", recovered.warnings);
    assert!(recovered.warnings[0].contains(SNAPSHOT_TEMP_FILE));
    assert!(recovered.warnings[1].contains(LOG_TEMP_FILE));
    assert!(!tmp.path().join(SNAPSHOT_TEMP_FILE).exists());
    assert!(!tmp.path().join(LOG_TEMP_FILE).exists());
    assert!(open(tmp.path()).1.warnings.is_empty());
}

#[test]
fn recovery_finishes_a_compaction_cut_short_after_the_snapshot_was_in_place() {
    // The files as a crash between the snapshot's rename and the log's
    // leaves them, built by hand: the new snapshot beside the old log.
    let cases = [
        // (snapshot, entries kept, a rule 7 warning?)
        (snapshot(15, 2, "matches"), entries(16, 5, 2), false),
        (snapshot(15, 3, "conflicts"), Vec::new(), true),
        (snapshot(30, 3, "past the end"), Vec::new(), false),
        (snapshot(20, 2, "all of it"), Vec::new(), false),
    ];
    for (snap, kept, rule_7) in cases {
        let tmp = TempDir::new().unwrap();
        let (mut storage, _) = open(tmp.path());
        twenty_entries(&mut storage);
        drop(storage);
        fs::write(snapshot_path(tmp.path()), raw_snapshot_of(&snap)).unwrap();

        let (mut storage, recovered) = open(tmp.path());
        let name = &snap.data;
        assert_eq!(recovered.entries, kept, "{name}");
        assert_eq!(recovered.hard_state, hard_state(2, Some("8001")), "{name}");
        assert_eq!(recovered.snapshot.as_ref(), Some(&snap), "{name}");
        assert_eq!(recovered.warnings.len(), 1, "{name}");
        let warning = &recovered.warnings[0];
        assert!(warning.contains("finished the compaction"), "{warning}");
        assert_eq!(warning.contains("rule 7"), rule_7, "{warning}");
        // The log was rewritten, so the node can go on appending to it.
        let next = snap.last_included_index + kept.len() as Index + 1;
        storage.append(&entries(next, 1, 5)).unwrap();
        storage.sync().unwrap();
        assert_eq!(storage.disk_bytes(), files_len(tmp.path()));
        drop(storage);
        let recovered = open(tmp.path()).1;
        assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
        assert_eq!(
            recovered.entries,
            [kept, entries(next, 1, 5)].concat(),
            "{name}"
        );
    }
}

/// The files of a data directory, by name.
type Files = BTreeMap<String, Vec<u8>>;

fn read_files(dir: &Path) -> Files {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Every directory a power loss right after `steps` could leave, given the
/// files `before` the compaction and `now`: a rename not yet followed by an
/// fsync of the directory may be undone (each independently: POSIX orders
/// nothing), and a file written but not fsynced may have lost its end.
fn power_loss_states(before: &Files, now: &Files, steps: &[DiskStep]) -> Vec<(String, Files)> {
    let mut undoable = Vec::new();
    let mut unsynced: Vec<&str> = Vec::new();
    for step in steps {
        match *step {
            DiskStep::Wrote(name) => unsynced.push(name),
            DiskStep::Synced(name) => unsynced.retain(|&n| n != name),
            DiskStep::Renamed { from, to } => {
                undoable.push((from, to));
                for name in &mut unsynced {
                    if *name == from {
                        *name = to;
                    }
                }
            }
            DiskStep::SyncedDir => undoable.clear(),
        }
    }
    // What part of each unsynced file survives: (label, numerator, denominator).
    let mut tears = vec![("", 1, 1)];
    if !unsynced.is_empty() {
        tears.extend([(", torn in half", 1, 2), (", empty", 0, 1)]);
    }
    let mut states = Vec::new();
    for mask in 0..1u32 << undoable.len() {
        for &(tear, numerator, denominator) in &tears {
            let mut files = now.clone();
            for name in &unsynced {
                if let Some(bytes) = files.get_mut(*name) {
                    bytes.truncate(bytes.len() * numerator / denominator);
                }
            }
            let mut undone = Vec::new();
            for (i, (from, to)) in undoable.iter().enumerate().rev() {
                if mask & 1 << i != 0 {
                    if let Some(moved) = files.remove(*to) {
                        files.insert(from.to_string(), moved);
                    }
                    if let Some(old) = before.get(*to) {
                        files.insert(to.to_string(), old.clone());
                    }
                    undone.push(format!("{from} -> {to}"));
                }
            }
            let what = format!("renames undone: {undone:?}{tear}");
            states.push((what, files));
        }
    }
    states
}

/// A compaction to crash in: what the log holds first, and the snapshot.
struct Scenario {
    name: &'static str,
    /// Fills a new storage; returns the model of what it holds, synced.
    setup: fn(&mut Storage) -> Model,
    snapshot: Snapshot,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "rule 6: keep the entries after the snapshot",
            setup: twenty_entries,
            snapshot: snapshot(15, 2, "at 15"),
        },
        Scenario {
            name: "rule 7: the log conflicts with the snapshot",
            setup: twenty_entries,
            snapshot: snapshot(15, 3, "the leader's"),
        },
        Scenario {
            name: "a snapshot past the end of the log",
            setup: twenty_entries,
            snapshot: snapshot(40, 3, "far ahead"),
        },
        Scenario {
            name: "a second snapshot over a first",
            setup: |storage| {
                let mut model = twenty_entries(storage);
                let first = snapshot(8, 1, "at 8");
                storage.save_snapshot(&first).unwrap();
                model.save_snapshot(&first);
                model
            },
            snapshot: snapshot(18, 2, "at 18"),
        },
    ]
}

/// Crashes `save_snapshot` after each of its steps in turn (and once after
/// it returned and the node synced one more entry), and opens every
/// directory a power loss at that point could leave. Each must recover the
/// state before the snapshot or the state after it; once `save_snapshot`
/// returned, only the state after it, with the new entry. Returns how many
/// directories were checked, or the first that was wrong.
fn crash_check(bugs: StorageBugSwitches) -> Result<usize, String> {
    let mut checked = 0;
    for scenario in scenarios() {
        for crash_after in 1.. {
            let dir = TempDir::new().unwrap();
            let (mut storage, _) = open(dir.path());
            let old = (scenario.setup)(&mut storage);
            let before = read_files(dir.path());
            storage.set_bugs(bugs);
            let steps = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&steps);
            storage.set_crash_hook(move |step| {
                let mut seen = seen.lock().unwrap();
                seen.push(step);
                seen.len() == crash_after
            });
            let mut new = old.clone();
            new.save_snapshot(&scenario.snapshot);
            let (completed, expected) = match storage.save_snapshot(&scenario.snapshot) {
                Ok(()) => {
                    let next = entries(new.last_index() + 1, 1, 9);
                    storage.append(&next).unwrap();
                    storage.sync().unwrap();
                    new.append(&next);
                    (true, vec![new])
                }
                Err(StorageError::Poisoned { .. }) => (false, vec![old, new]),
                Err(e) => return Err(format!("{}: save_snapshot failed: {e}", scenario.name)),
            };
            drop(storage);
            let steps = steps.lock().unwrap().clone();
            let now = read_files(dir.path());
            for (what, files) in power_loss_states(&before, &now, &steps) {
                let copy = TempDir::new().unwrap();
                for (name, bytes) in &files {
                    fs::write(copy.path().join(name), bytes).unwrap();
                }
                let context = || {
                    format!(
                        "{}: crash after {steps:?} ({}), {what}",
                        scenario.name,
                        if completed { "completed" } else { "cut short" }
                    )
                };
                let (mut storage, recovered) = Storage::open(copy.path(), &meta("8000"))
                    .map_err(|e| format!("{}: open failed: {e}", context()))?;
                let model = Model::of(&recovered);
                if !expected.contains(&model) {
                    return Err(format!(
                        "{}: recovered {model:?}, expected one of {expected:?}",
                        context()
                    ));
                }
                // Whatever it recovered, the node can go on from there.
                let next = entries(model.last_index() + 1, 1, 10);
                storage.append(&next).unwrap();
                storage.sync().unwrap();
                drop(storage);
                let mut went_on = model;
                went_on.append(&next);
                let recovered = open(copy.path()).1;
                if Model::of(&recovered) != went_on || !recovered.warnings.is_empty() {
                    return Err(format!(
                        "{}: after going on, recovered {recovered:?}",
                        context()
                    ));
                }
                checked += 1;
            }
            if completed {
                break;
            }
        }
    }
    Ok(checked)
}

#[test]
fn a_crash_or_power_loss_at_any_step_of_save_snapshot_recovers_the_old_or_new_state() {
    match crash_check(StorageBugSwitches::default()) {
        // 4 scenarios of 15 directories: after each of the 8 steps, one per
        // rename that may be undone and per way a file may be torn, and one
        // after save_snapshot returned.
        Ok(checked) => assert!(checked >= 60, "only {checked} directories checked"),
        Err(violation) => panic!("{violation}"),
    }
}

/// Each switch breaks one rule of `save_snapshot`'s crash safety; the crash
/// check must then find a directory that recovers wrongly or not at all.
fn assert_caught(bugs: StorageBugSwitches) {
    match crash_check(bugs) {
        Ok(checked) => panic!("{bugs:?}: all {checked} directories recovered fine"),
        Err(violation) => println!("{bugs:?} caught: {violation}"),
    }
}

#[test]
fn bug_switch_compact_log_before_snapshot_is_caught() {
    assert_caught(StorageBugSwitches {
        compact_log_before_snapshot: true,
        ..StorageBugSwitches::default()
    });
}

#[test]
fn bug_switch_skip_dir_fsync_after_snapshot_is_caught() {
    assert_caught(StorageBugSwitches {
        skip_dir_fsync_after_snapshot: true,
        ..StorageBugSwitches::default()
    });
}

#[test]
fn bug_switch_skip_dir_fsync_after_log_is_caught() {
    assert_caught(StorageBugSwitches {
        skip_dir_fsync_after_log: true,
        ..StorageBugSwitches::default()
    });
}

#[test]
fn bug_switch_skip_fsync_before_rename_is_caught() {
    assert_caught(StorageBugSwitches {
        skip_fsync_before_rename: true,
        ..StorageBugSwitches::default()
    });
}

// ---------------------------------------------------------------- crashes, at random

/// One step of the property test.
#[derive(Clone, Debug)]
enum Step {
    /// Append entries starting `back` places before last index + 1.
    Append {
        back: u64,
        data: Vec<Option<String>>,
    },
    /// Truncate from `back` places before last index + 1 (may be a no-op).
    TruncateFrom {
        back: u64,
    },
    /// Move the term on by `bump` and maybe vote.
    SaveHardState {
        bump: u64,
        vote: Option<u8>,
    },
    Sync,
    /// Stop without syncing: everything buffered is lost.
    Crash,
    /// Stop in the middle of a sync: keep `keep / u16::MAX` of what it wrote.
    TornSync {
        keep: u16,
    },
    /// Save a snapshot (see `Run::snapshot_for` for `kind` and `back`), and
    /// maybe crash after step `crash_after` of it.
    Snapshot {
        kind: u8,
        back: u64,
        crash_after: Option<u8>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let data = prop::collection::vec(prop::option::of("\\PC{0,12}"), 1..5);
    prop_oneof![
        4 => (0..4u64, data).prop_map(|(back, data)| Step::Append { back, data }),
        1 => (0..6u64).prop_map(|back| Step::TruncateFrom { back }),
        2 => (0..3u64, prop::option::of(0..3u8))
            .prop_map(|(bump, vote)| Step::SaveHardState { bump, vote }),
        3 => Just(Step::Sync),
        1 => Just(Step::Crash),
        2 => any::<u16>().prop_map(|keep| Step::TornSync { keep }),
        2 => (0..5u8, 0..8u64, prop::option::of(1..9u8))
            .prop_map(|(kind, back, crash_after)| Step::Snapshot { kind, back, crash_after }),
    ]
}

/// The test's side of one run: the storage, the model of what it holds, and
/// the model of what was last synced.
struct Run {
    dir: TempDir,
    storage: Option<Storage>,
    current: Model,
    synced: Model,
}

impl Run {
    fn storage(&mut self) -> &mut Storage {
        self.storage.as_mut().expect("open")
    }

    fn reopen(&mut self) -> Recovered {
        self.storage = None;
        let (storage, recovered) = open(self.dir.path());
        self.storage = Some(storage);
        recovered
    }

    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Append { back, data } => {
                let first = (self.current.last_index() + 1)
                    .saturating_sub(*back)
                    .max(self.current.snapshot_index() + 1);
                let term = self.current.hard_state.current_term;
                let entries: Vec<Entry> = (first..)
                    .zip(data)
                    .map(|(index, data)| Entry {
                        term,
                        index,
                        data: data.clone().map_or(EntryData::Noop, EntryData::Command),
                    })
                    .collect();
                self.storage().append(&entries).unwrap();
                self.current.append(&entries);
            }
            Step::TruncateFrom { back } => {
                let index = (self.current.last_index() + 1).saturating_sub(*back);
                if index.max(1) <= self.current.snapshot_index() {
                    let err = self.storage().truncate_from(index).unwrap_err();
                    prop_assert!(
                        matches!(err, StorageError::InvalidRequest { .. }),
                        "{}",
                        err
                    );
                } else {
                    self.storage().truncate_from(index).unwrap();
                    self.current.truncate_from(index);
                }
            }
            Step::SaveHardState { bump, vote } => {
                let old = &self.current.hard_state;
                let hs = if *bump == 0 && old.voted_for.is_some() {
                    old.clone() // one vote per term: saving it again is a no-op
                } else {
                    HardState {
                        current_term: old.current_term + bump,
                        voted_for: vote.map(|v| node(&(8000 + u32::from(v)).to_string())),
                    }
                };
                self.storage().save_hard_state(&hs).unwrap();
                self.current.hard_state = hs;
            }
            Step::Sync => {
                self.storage().sync().unwrap();
                self.synced = self.current.clone();
            }
            Step::Crash => {
                let recovered = self.reopen();
                prop_assert_eq!(&Model::of(&recovered), &self.synced);
                prop_assert!(recovered.warnings.is_empty());
                self.current = self.synced.clone();
            }
            Step::TornSync { keep } => self.torn_sync(*keep)?,
            Step::Snapshot {
                kind,
                back,
                crash_after,
            } => self.snapshot(*kind, *back, *crash_after)?,
        }
        let dir = self.dir.path().to_path_buf();
        let (last_index, snapshot_index) =
            (self.current.last_index(), self.current.snapshot_index());
        let storage = self.storage();
        prop_assert_eq!(storage.last_index(), last_index);
        prop_assert_eq!(storage.snapshot_index(), snapshot_index);
        prop_assert_eq!(storage.disk_bytes(), files_len(&dir));
        Ok(())
    }

    /// The snapshot a `Step::Snapshot` saves. `kind` 0 and 1: at an index
    /// in the log after the current snapshot, `back` places from the end,
    /// with that entry's term (rule 6: the entries after it stay). 2: the
    /// same index with another term, as from a leader whose log differs
    /// (rule 7). 3: past the end of the log (a follower far behind). 4: at
    /// or below the current snapshot (ignored).
    fn snapshot_for(&self, kind: u8, back: u64) -> Snapshot {
        let model = &self.current;
        let (first, last) = (model.snapshot_index() + 1, model.last_index());
        let term = model.hard_state.current_term;
        let (index, term) = match kind {
            _ if kind <= 2 && first <= last => {
                let index = last - back % (last - first + 1);
                let entry_term = model.term_of(index).unwrap_or(0);
                (index, entry_term + u64::from(kind == 2))
            }
            4 => (model.snapshot_index().saturating_sub(back % 2), term),
            _ => (last + 1 + back % 3, term + 1),
        };
        snapshot(index, term, &format!("state at {index}"))
    }

    /// Saves a snapshot; with `crash_after`, the node stops after that
    /// step. A crash before the snapshot's rename must recover the state
    /// before it, a crash after it the state after it: the rename is the
    /// moment the snapshot takes effect.
    fn snapshot(
        &mut self,
        kind: u8,
        back: u64,
        crash_after: Option<u8>,
    ) -> Result<(), TestCaseError> {
        let snap = self.snapshot_for(kind, back);
        let steps = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&steps);
        let crash_after = crash_after.map_or(usize::MAX, usize::from);
        self.storage().set_crash_hook(move |step| {
            let mut seen = seen.lock().unwrap();
            seen.push(step);
            seen.len() == crash_after
        });
        let result = self.storage().save_snapshot(&snap);
        self.storage().set_crash_hook(|_| false);
        // Whatever happens next, save_snapshot synced what was buffered.
        self.synced = self.current.clone();
        let mut after = self.current.clone();
        after.save_snapshot(&snap);
        match result {
            Ok(()) => {
                self.current = after;
                self.synced = self.current.clone();
            }
            Err(StorageError::Poisoned { .. }) => {
                let renamed = steps.lock().unwrap().contains(&DiskStep::Renamed {
                    from: SNAPSHOT_TEMP_FILE,
                    to: SNAPSHOT_FILE,
                });
                if renamed {
                    self.current = after;
                }
                let recovered = self.reopen();
                prop_assert_eq!(
                    &Model::of(&recovered),
                    &self.current,
                    "crash after {:?}",
                    steps
                );
                self.synced = self.current.clone();
            }
            Err(e) => return Err(TestCaseError::fail(format!("save_snapshot failed: {e}"))),
        }
        Ok(())
    }

    /// Syncs, then "crashes" keeping only part of the bytes that sync wrote:
    /// the file is cut at an offset between its length at the last sync and
    /// its length now. The node must come back with the state of the last
    /// completed sync, or of this one if every byte made it.
    fn torn_sync(&mut self, keep: u16) -> Result<(), TestCaseError> {
        let before = log_len(self.dir.path());
        self.storage().sync().unwrap();
        let after = log_len(self.dir.path());
        let cut = before + (after - before) * u64::from(keep) / u64::from(u16::MAX);
        self.storage = None;
        // What the disk kept of the last record ends at `cut`. Either the
        // file's length did not survive either (odd `keep`: the file ends
        // there), or the space reserved ahead of the log did (even `keep`:
        // zeros from there on, the file as long as before).
        let path = log_path(self.dir.path());
        if keep % 2 == 1 {
            let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(cut).unwrap();
        } else {
            let mut bytes = fs::read(&path).unwrap();
            bytes[cut as usize..after as usize].fill(0);
            fs::write(&path, bytes).unwrap();
        }

        // With records below MAX_RECORD_BYTES one sync is one record, so
        // the states reachable by a prefix of its records are these two.
        let reachable = [self.synced.clone(), self.current.clone()];
        let expected = &reachable[usize::from(cut == after)];
        let recovered = self.reopen();
        prop_assert_eq!(&Model::of(&recovered), expected, "cut at {}", cut);
        let torn = cut != before && cut != after;
        prop_assert_eq!(recovered.warnings.len(), usize::from(torn));
        self.current = expected.clone();
        self.synced = expected.clone();
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn recovery_returns_what_was_synced(steps in prop::collection::vec(step(), 1..40)) {
        let dir = TempDir::new().unwrap();
        let (storage, _) = open(dir.path());
        let mut run = Run {
            dir,
            storage: Some(storage),
            current: Model::default(),
            synced: Model::default(),
        };
        for step in &steps {
            run.apply(step)?;
        }
        run.apply(&Step::Crash)?;
    }
}

// ---------------------------------------------------------------- speed

/// Run with `cargo test --release --test storage -- --ignored --nocapture`.
#[test]
#[ignore = "a timing, not a check; run it by hand in release mode"]
fn recovery_of_100k_entries_is_fast() {
    const ENTRIES: u64 = 100_000;
    const BATCH: u64 = 100;
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    for first in (1..=ENTRIES).step_by(BATCH as usize) {
        let batch: Vec<Entry> = (first..first + BATCH)
            .map(|i| entry(i, 1, &format!("value {i}")))
            .collect();
        storage.append(&batch).unwrap();
        storage.sync().unwrap();
    }
    drop(storage);
    let started = Instant::now();
    let recovered = open(tmp.path()).1;
    let batched = started.elapsed();
    assert_eq!(recovered.entries.len() as u64, ENTRIES);

    // The worst case for per-record costs: one entry per record, as a driver
    // syncing after every single entry would leave it. Built by hand.
    let mut bytes = raw_header(1);
    for i in 1..=ENTRIES {
        let payload =
            format!(r#"[{{"entry":{{"term":1,"index":{i},"data":{{"command":"value {i}"}}}}}}]"#);
        bytes.extend(raw_record(&payload));
    }
    fs::write(log_path(tmp.path()), &bytes).unwrap();
    let started = Instant::now();
    let recovered = open(tmp.path()).1;
    let single = started.elapsed();
    assert_eq!(recovered.entries.len() as u64, ENTRIES);

    println!(
        "recovered {ENTRIES} entries: {batched:?} in records of {BATCH}, \
         {single:?} in records of 1 ({} bytes)",
        bytes.len()
    );
}

/// Run with `cargo test --release --test storage -- --ignored --nocapture`.
/// The default snapshot interval is 10,000 entries: a node restarts from a
/// snapshot and at most about that much log, and `save_snapshot` compacts
/// that much at a time. 100,000 entries after a snapshot is the case of a
/// node whose snapshots fell far behind.
#[test]
#[ignore = "a timing, not a check; run it by hand in release mode"]
fn recovery_and_compaction_with_a_snapshot_are_fast() {
    const INTERVAL: u64 = 10_000;
    const BATCH: u64 = 100;
    let fill = |storage: &mut Storage, first: Index, n: u64| {
        for start in (first..first + n).step_by(BATCH as usize) {
            let batch: Vec<Entry> = (start..start + BATCH)
                .map(|i| entry(i, 1, &format!("value {i}")))
                .collect();
            storage.append(&batch).unwrap();
            storage.sync().unwrap();
        }
    };
    for (state_bytes, after) in [
        (1024, INTERVAL),
        (1024, 10 * INTERVAL),
        (16 << 20, INTERVAL),
    ] {
        let tmp = TempDir::new().unwrap();
        let (mut storage, _) = open(tmp.path());
        // One interval of log, then a snapshot at its end (all of it
        // compacted away), as a node does every INTERVAL entries.
        fill(&mut storage, 1, INTERVAL);
        let data = "x".repeat(state_bytes);
        let started = Instant::now();
        storage
            .save_snapshot(&snapshot(INTERVAL - 10, 1, &data))
            .unwrap();
        let compaction = started.elapsed();
        fill(&mut storage, INTERVAL + 1, after);
        let disk = storage.disk_bytes();
        drop(storage);

        let started = Instant::now();
        let (storage, recovered) = open(tmp.path());
        let recovery = started.elapsed();
        assert_eq!(recovered.entries.len() as u64, after + 10);
        assert_eq!(storage.snapshot_index(), INTERVAL - 10);
        println!(
            "snapshot of {state_bytes} bytes + {} entries ({disk} bytes on disk): recovered in \
             {recovery:?}; the save_snapshot before (compacting {INTERVAL} entries) took \
             {compaction:?}",
            after + 10
        );
    }
}

#[test]
fn the_longest_sync_is_recorded() {
    let tmp = TempDir::new().unwrap();
    let (mut storage, _) = open(tmp.path());
    storage.sync().unwrap();
    assert_eq!(storage.longest_sync(), std::time::Duration::ZERO);
    storage.append(&[entry(1, 1, "a")]).unwrap();
    storage.sync().unwrap();
    let first = storage.longest_sync();
    assert!(first > std::time::Duration::ZERO);
    // Nothing pending: no write, and the record stands.
    storage.sync().unwrap();
    assert_eq!(storage.longest_sync(), first);
}
