//! Tests of the durable log: round trips, torn writes at every byte, damage
//! that must stop the node, foreign files, and a model-based property test
//! with crashes. The on-disk format is the one in `src/storage.rs`.

use proptest::prelude::*;
use raft::message::{Entry, EntryData, HardState, Index, NodeId, Term};
use raft::storage::{
    Metadata, Recovered, Storage, StorageError, LOG_FILE, MAX_RECORD_BYTES, META_FILE,
};
use std::fs;
use std::path::{Path, PathBuf};
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

fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

fn log_len(dir: &Path) -> u64 {
    fs::metadata(log_path(dir)).expect("log file").len()
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
    entries: Vec<Entry>,
}

impl Model {
    fn of(recovered: &Recovered) -> Model {
        Model {
            hard_state: recovered.hard_state.clone(),
            entries: recovered.entries.clone(),
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            self.truncate_from(first.index);
            self.entries.extend_from_slice(entries);
        }
    }

    fn truncate_from(&mut self, index: Index) {
        self.entries.truncate(index.saturating_sub(1) as usize);
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
    assert_eq!(recovered, Recovered::default());
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
    assert_eq!(recovered, Recovered::default());
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

    let full = fs::read(log_path(tmp.path())).unwrap();
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
fn zeros_after_the_last_record_are_cut_off() {
    let tmp = TempDir::new().unwrap();
    let (models, lens) = three_records(tmp.path());
    let mut bytes = fs::read(log_path(tmp.path())).unwrap();
    bytes.extend([0; 4096]);
    fs::write(log_path(tmp.path()), bytes).unwrap();
    let recovered = open(tmp.path()).1;
    assert_eq!(Model::of(&recovered), models[3]);
    assert_eq!(recovered.warnings.len(), 1);
    assert_eq!(log_len(tmp.path()), lens[3]);
}

// ---------------------------------------------------------------- the header

#[test]
fn an_empty_log_file_is_a_new_log() {
    let tmp = TempDir::new().unwrap();
    let (_, lens) = three_records(tmp.path());
    fs::write(log_path(tmp.path()), b"").unwrap();
    let (mut storage, recovered) = open(tmp.path());
    assert_eq!(recovered, Recovered::default());
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
    fs::write(log_path(tmp.path()), raw_header(2)).unwrap();
    let err = open_err(tmp.path());
    assert!(
        matches!(err, StorageError::UnsupportedVersion { version: 2, .. }),
        "{err}"
    );
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
    let bytes = fs::read(log_path(tmp.path())).unwrap();
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
                let first = (self.current.entries.len() as u64 + 1)
                    .saturating_sub(*back)
                    .max(1);
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
                let index = (self.current.entries.len() as u64 + 1).saturating_sub(*back);
                self.storage().truncate_from(index).unwrap();
                self.current.truncate_from(index);
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
        }
        prop_assert_eq!(
            self.storage().last_index(),
            self.current.entries.len() as u64
        );
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
        let file = fs::OpenOptions::new()
            .write(true)
            .open(log_path(self.dir.path()))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);

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
