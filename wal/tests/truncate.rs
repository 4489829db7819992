//! Truncation below a checkpoint, crash-safety, and reopening after it.

mod common;

use std::fs;
use std::sync::Arc;

use common::*;
use settled_wal::fault::FaultyStorage;
use settled_wal::{Wal, WalError, SEGMENT_HEADER_BYTES};

/// Found by the engine's simulation: a directory sync that failed after a segment was
/// removed made every retry fail on the missing file, so checkpoints failed until a
/// restart.
#[test]
fn a_truncation_retried_after_a_failed_directory_sync_goes_through() {
    let config = small_config();
    let dir = build_wal(&config, 100);
    let storage = FaultyStorage::new();
    let wal = Wal::open_with_storage(dir.path(), config.clone(), Arc::new(storage.clone()))
        .expect("open");
    let segments_before = segment_files(dir.path()).len();
    storage.fail_dir_sync_once();
    assert!(matches!(wal.truncate_before(50), Err(WalError::Io { .. })));
    // The first segment's file is gone, its removal not yet durable.
    assert_eq!(segment_files(dir.path()).len(), segments_before - 1);
    let removed = wal.truncate_before(50).expect("the retry truncates");
    assert!(removed > 0);
    let lsn_first_retained = wal.lsn_first_retained();
    assert!(lsn_first_retained <= 50 && lsn_first_retained > 1);
    assert_eq!(
        segment_files(dir.path()).len(),
        segments_before - removed as usize
    );
    wal.close().expect("close");
    let wal = Wal::open(dir.path(), config).expect("reopen");
    assert_eq!(wal.lsn_first_retained(), lsn_first_retained);
    assert_records_are_payloads(
        &replay_all(&wal, lsn_first_retained - 1).expect("replay"),
        lsn_first_retained,
    );
}

#[test]
fn truncate_before_removes_covered_segments_and_reopen_works() {
    let config = small_config();
    let dir = build_wal(&config, 100);
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    let segments_before = segment_files(dir.path()).len();
    let removed = wal.truncate_before(50).expect("truncate");
    assert!(removed > 0);
    assert_eq!(
        segment_files(dir.path()).len(),
        segments_before - removed as usize
    );
    let lsn_first_retained = wal.lsn_first_retained();
    assert!(lsn_first_retained <= 50 && lsn_first_retained > 1);
    assert_eq!(wal.stats().segments_removed, removed);
    assert_records_are_payloads(&replay_all(&wal, 49).expect("replay"), 50);
    assert!(matches!(
        wal.replay_after(0),
        Err(WalError::RecordsMissing { after_lsn: 0, .. })
    ));
    append_durable(&wal, 101, 5);
    wal.close().expect("close");

    let wal = Wal::open(dir.path(), config).expect("reopen after truncation");
    assert_eq!(wal.lsn_first_retained(), lsn_first_retained);
    assert_eq!(wal.lsn_next(), 106);
    let records = replay_all(&wal, lsn_first_retained - 1).expect("replay");
    assert_eq!(records.len() as u64, 106 - lsn_first_retained);
    assert_records_are_payloads(&records, lsn_first_retained);
    match wal.replay_after(lsn_first_retained - 2) {
        Err(WalError::RecordsMissing {
            lsn_first_retained: first,
            ..
        }) => assert_eq!(first, lsn_first_retained),
        other => panic!("expected RecordsMissing, got {:?}", other.err()),
    }
}

#[test]
fn truncation_keeps_the_active_segment_so_the_next_lsn_survives() {
    let config = small_config();
    let dir = build_wal(&config, 60);
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    wal.truncate_before(u64::MAX).expect("truncate everything");
    assert_eq!(segment_files(dir.path()).len(), 1);
    wal.close().expect("close");
    let wal = Wal::open(dir.path(), config).expect("reopen");
    assert_eq!(wal.lsn_next(), 61);
    assert_eq!(wal.append(b"next").expect("append"), 61);
}

#[test]
fn a_crash_part_way_through_truncation_still_recovers() {
    let config = small_config();
    let dir = build_wal(&config, 100);
    // Truncation deletes oldest first; a crash after the first deletion
    // leaves a contiguous suffix of segments.
    let files = segment_files(dir.path());
    fs::remove_file(&files[0]).expect("remove oldest");
    let wal = Wal::open(dir.path(), config).expect("recovers");
    let lsn_first_retained = wal.lsn_first_retained();
    assert!(lsn_first_retained > 1);
    let records = replay_all(&wal, lsn_first_retained - 1).expect("replay");
    assert_records_are_payloads(&records, lsn_first_retained);
    assert_eq!(records.last().map(|record| record.lsn), Some(100));
}

#[test]
fn truncation_below_the_first_segment_removes_nothing() {
    let config = small_config();
    let dir = build_wal(&config, 100);
    let wal = Wal::open(dir.path(), config).expect("open");
    let files = segment_files(dir.path());
    assert_eq!(wal.truncate_before(1).expect("truncate"), 0);
    assert_eq!(
        wal.truncate_before(2).expect("truncate"),
        0,
        "segment 1 still holds LSN 1"
    );
    assert_eq!(segment_files(dir.path()), files);
}

#[test]
fn a_close_covered_by_the_checkpoint_leaves_one_empty_segment() {
    let config = small_config();
    let dir = build_wal(&config, 100);
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    assert!(segment_files(dir.path()).len() > 1);
    assert!(wal.close_covered(100).expect("close covered"));
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    // A header and nothing else: the next open has no record to read.
    let bytes = fs::read(&files[0]).expect("read the empty segment");
    assert_eq!(bytes.len() as u64, u64::from(SEGMENT_HEADER_BYTES));

    let wal = Wal::open(dir.path(), config.clone()).expect("reopen");
    assert_eq!(wal.lsn_next(), 101);
    assert_eq!(wal.lsn_first_retained(), 101);
    assert_eq!(wal.recovery_report().records_verified, 0);
    assert!(replay_all(&wal, 100).expect("replay").is_empty());
    assert_eq!(wal.append(b"next").expect("append"), 101);
    // Already empty up to the next record: nothing more to do.
    wal.wait_durable(101).expect("durable");
    assert!(!wal
        .close_covered(100)
        .expect("close with a record after the checkpoint"));
    let wal = Wal::open(dir.path(), config).expect("reopen");
    assert_eq!(replay_all(&wal, 100).expect("replay").len(), 1);
}

#[test]
fn a_close_not_covered_by_the_checkpoint_keeps_every_record() {
    let config = small_config();
    let dir = build_wal(&config, 100);
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    let files = segment_files(dir.path());
    assert!(!wal.close_covered(99).expect("close"));
    assert_eq!(segment_files(dir.path()), files);
    let wal = Wal::open(dir.path(), config).expect("reopen");
    assert_records_are_payloads(&replay_all(&wal, 0).expect("replay"), 1);
}

#[test]
fn a_crash_between_the_empty_segment_and_the_removals_still_recovers() {
    let config = small_config();
    let dir = build_wal(&config, 100);
    let files = segment_files(dir.path());
    // What close_covered leaves if the process dies right after creating the empty
    // segment: every old segment plus an empty one that continues them.
    let keep = tempfile::tempdir().expect("tempdir");
    {
        let wal = Wal::open(dir.path(), config.clone()).expect("open");
        assert!(wal.close_covered(100).expect("close covered"));
    }
    let empty = segment_files(dir.path()).pop().expect("the empty segment");
    let kept = keep.path().join("empty");
    fs::copy(&empty, &kept).expect("keep it");
    drop(dir);
    let dir = build_wal(&config, 100);
    assert_eq!(segment_files(dir.path()).len(), files.len());
    fs::copy(&kept, dir.path().join(empty.file_name().expect("name"))).expect("put it back");
    let wal = Wal::open(dir.path(), config).expect("recovers");
    assert_eq!(wal.lsn_next(), 101);
    assert_records_are_payloads(&replay_all(&wal, 0).expect("replay"), 1);
}
