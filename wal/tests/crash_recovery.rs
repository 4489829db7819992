//! Crashes (torn writes) and corruption: what recovery keeps, cuts, refuses.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use rand::{Rng, SeedableRng};
use settled_wal::{CorruptionKind, Wal, WalError, RECORD_HEADER_BYTES};

/// Byte range of the last record in `segment` (header + payload), given
/// that its payload is `payload_bytes` long.
fn last_record_range(segment: &Path, payload_bytes: usize) -> (u64, u64) {
    let file_bytes = fs::metadata(segment).expect("metadata").len();
    (
        file_bytes - RECORD_HEADER_BYTES as u64 - payload_bytes as u64,
        file_bytes,
    )
}

fn set_file_bytes(path: &Path, bytes: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open")
        .set_len(bytes)
        .expect("set_len");
}

#[test]
fn crash_at_every_byte_of_the_last_record_keeps_earlier_records_and_appends_again() {
    let config = small_config();
    let count = 30;
    let dir = build_wal(&config, count);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let (record_start, record_end) = last_record_range(&last_segment, payload(count).len());
    for cut_at in record_start..record_end {
        let copy = copy_dir(dir.path());
        let segment = copy.path().join(last_segment.file_name().expect("name"));
        set_file_bytes(&segment, cut_at);
        let wal = Wal::open(copy.path(), config.clone()).expect("torn tail recovers");
        assert_eq!(wal.durable_lsn(), count - 1, "cut at {cut_at}");
        let torn = wal.recovery_report().torn_tail.clone();
        assert_eq!(
            torn.is_some(),
            cut_at > record_start,
            "cut at {cut_at}: {torn:?}"
        );
        assert_eq!(
            fs::metadata(&segment).expect("metadata").len(),
            record_start,
            "file cut back"
        );
        assert_records_are_payloads(&replay_all(&wal, 0).expect("replay"), 1);
        assert_eq!(wal.append(&payload(count)).expect("append"), count);
        wal.close().expect("close");
        let wal = Wal::open(copy.path(), config.clone()).expect("reopen after append");
        let records = replay_all(&wal, 0).expect("replay");
        assert_eq!(records.len() as u64, count);
        assert_records_are_payloads(&records, 1);
    }
}

#[test]
fn zero_fill_or_garbage_after_the_last_record_is_a_torn_tail() {
    let config = small_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let garbage: Vec<u8> = (0..300).map(|_| rng.random()).collect();
    for tail in [vec![0u8; 4096], vec![0u8; 3], garbage] {
        let copy = copy_dir(dir.path());
        let segment = copy.path().join(last_segment.file_name().expect("name"));
        let bytes_before = fs::metadata(&segment).expect("metadata").len();
        let mut content = fs::read(&segment).expect("read");
        content.extend_from_slice(&tail);
        fs::write(&segment, &content).expect("write");
        let wal = Wal::open(copy.path(), config.clone()).expect("recovers");
        let torn = wal
            .recovery_report()
            .torn_tail
            .clone()
            .expect("torn tail reported");
        assert_eq!(
            (torn.offset, torn.lsn, torn.bytes_dropped),
            (bytes_before, 21, tail.len() as u64)
        );
        assert_eq!(
            fs::metadata(&segment).expect("metadata").len(),
            bytes_before
        );
        assert_eq!(replay_all(&wal, 0).expect("replay").len(), 20);
    }
}

/// Flips one bit of `path` at `offset`.
fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut content = fs::read(path).expect("read");
    content[offset as usize] ^= 1 << bit;
    fs::write(path, &content).expect("write");
}

#[test]
fn random_bit_flips_are_always_detected() {
    let config = small_config();
    let count = 40;
    let dir = build_wal(&config, count);
    let files = segment_files(dir.path());
    let last_segment = files.last().expect("segment").clone();
    let (last_record_start, _) = last_record_range(&last_segment, payload(count).len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x05e7_71ed);
    let (mut detected_as_corrupt, mut detected_as_torn) = (0, 0);
    for _ in 0..300 {
        let file = &files[rng.random_range(0..files.len())];
        let offset = rng.random_range(0..fs::metadata(file).expect("metadata").len());
        let copy = copy_dir(dir.path());
        let path = copy.path().join(file.file_name().expect("name"));
        flip_bit(&path, offset, rng.random_range(0..8));
        let in_last_record = *file == last_segment && offset >= last_record_start;
        match Wal::open(copy.path(), config.clone()) {
            Err(WalError::Corrupt {
                path: error_path, ..
            }) => {
                assert_eq!(
                    error_path.file_name(),
                    path.file_name(),
                    "error names the damaged file"
                );
                detected_as_corrupt += 1;
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(wal) => {
                // Only damage to the very last record may pass as a torn
                // tail, and then exactly the records before it survive.
                assert!(
                    in_last_record,
                    "flip at {file:?}:{offset} silently accepted"
                );
                assert!(wal.recovery_report().torn_tail.is_some());
                let records = replay_all(&wal, 0).expect("replay");
                assert_eq!(records.len() as u64, count - 1);
                assert_records_are_payloads(&records, 1);
                detected_as_torn += 1;
            }
        }
    }
    assert!(
        detected_as_corrupt > 200,
        "most flips are mid-log: {detected_as_corrupt}"
    );
    let _ = detected_as_torn;
}

#[test]
fn bad_crc_followed_by_valid_records_is_corruption_with_file_offset_and_lsn() {
    let config = small_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let content = fs::read(&last_segment).expect("read");
    // The first record of the last segment starts right after the header;
    // flip a bit in its payload (or CRC if empty).
    let first_lsn = u64::from_le_bytes(content[16..24].try_into().expect("8 bytes"));
    assert!(first_lsn < 20, "last segment holds several records");
    flip_bit(&last_segment, 32 + 12, 0);
    match Wal::open(dir.path(), config) {
        Err(WalError::Corrupt {
            path,
            offset,
            lsn,
            kind,
        }) => {
            assert_eq!(path, last_segment);
            assert_eq!(offset, 32);
            assert_eq!(lsn, Some(first_lsn));
            assert!(
                matches!(kind, CorruptionKind::DamagedBeforeValid { lsn_next_valid, .. } if lsn_next_valid == first_lsn + 1)
            );
        }
        other => panic!("expected Corrupt, got {:?}", other.err()),
    }
}

#[test]
fn a_valid_record_with_the_wrong_lsn_at_the_tail_is_corruption() {
    let config = small_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    // Duplicate the last record: CRC-valid, but LSN 20 where 21 belongs.
    let (start, end) = last_record_range(&last_segment, payload(20).len());
    let mut content = fs::read(&last_segment).expect("read");
    content.extend_from_within(start as usize..end as usize);
    fs::write(&last_segment, &content).expect("write");
    match Wal::open(dir.path(), config) {
        Err(WalError::Corrupt {
            offset,
            lsn: Some(21),
            kind: CorruptionKind::LsnMismatch { .. },
            ..
        }) => {
            assert_eq!(offset, end);
        }
        other => panic!("expected LsnMismatch, got {:?}", other.err()),
    }
}

#[test]
fn the_next_records_header_claiming_more_than_the_size_limit_is_corruption_not_a_torn_tail() {
    let config = small_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let end = fs::metadata(&last_segment).expect("metadata").len();
    // The header of record 21, as written, but with a length past `record_bytes_max`: a
    // torn write never makes a length larger.
    let mut header = Vec::new();
    header.extend_from_slice(&21u64.to_le_bytes());
    header.extend_from_slice(&(config.record_bytes_max + 1).to_le_bytes());
    header.extend_from_slice(&[0u8; 4]);
    let mut content = fs::read(&last_segment).expect("read");
    content.extend_from_slice(&header);
    content.extend_from_slice(&[0xAB; 64]);
    fs::write(&last_segment, &content).expect("write");
    match Wal::open(dir.path(), config.clone()) {
        Err(WalError::Corrupt {
            path,
            offset,
            lsn: Some(21),
            kind: CorruptionKind::RecordTooLarge { .. },
        }) => {
            assert_eq!((path, offset), (last_segment.clone(), end));
        }
        other => panic!("expected RecordTooLarge, got {:?}", other.err()),
    }
    // The same length behind a header that is not record 21's (garbage, another LSN) is
    // still a torn tail: it is not the record that was being written.
    let mut content = fs::read(&last_segment).expect("read");
    content[end as usize..end as usize + 8].copy_from_slice(&7777u64.to_le_bytes());
    fs::write(&last_segment, &content).expect("write");
    let wal = Wal::open(dir.path(), config).expect("a torn tail");
    assert!(wal.recovery_report().torn_tail.is_some());
    assert_eq!(wal.durable_lsn(), 20);
}

#[test]
fn damage_in_a_sealed_segment_or_its_header_is_corruption() {
    let config = small_config();
    let dir = build_wal(&config, 40);
    let first_segment = segment_files(dir.path())[0].clone();
    let first_bytes = fs::metadata(&first_segment).expect("metadata").len();
    // Cutting the last record of a sealed segment is not a torn tail.
    let copy = copy_dir(dir.path());
    set_file_bytes(
        &copy.path().join(first_segment.file_name().expect("name")),
        first_bytes - 1,
    );
    match Wal::open(copy.path(), config.clone()) {
        Err(WalError::Corrupt {
            kind: CorruptionKind::DamagedInSealedSegment { .. },
            ..
        }) => {}
        other => panic!("expected DamagedInSealedSegment, got {:?}", other.err()),
    }
    // A bad segment header names the file and offset 0.
    let copy = copy_dir(dir.path());
    let path = copy.path().join(first_segment.file_name().expect("name"));
    flip_bit(&path, 17, 3);
    match Wal::open(copy.path(), config) {
        Err(WalError::Corrupt {
            path: error_path,
            offset: 0,
            kind: CorruptionKind::SegmentHeaderCrc { .. },
            ..
        }) => {
            assert_eq!(error_path, path);
        }
        other => panic!("expected SegmentHeaderCrc, got {:?}", other.err()),
    }
}

#[test]
fn a_missing_middle_segment_is_an_lsn_gap() {
    let config = small_config();
    let dir = build_wal(&config, 60);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).expect("remove");
    match Wal::open(dir.path(), config) {
        Err(WalError::Corrupt {
            path,
            offset: 0,
            kind: CorruptionKind::SegmentLsnGap { .. },
            ..
        }) => {
            assert_eq!(path, files[2]);
        }
        other => panic!("expected SegmentLsnGap, got {:?}", other.err()),
    }
}

#[test]
fn a_half_created_segment_is_removed() {
    let config = small_config();
    let dir = build_wal(&config, 10);
    let temp = dir.path().join("wal-00000000000000000011.log.tmp");
    fs::write(&temp, b"SETL").expect("write");
    let wal = Wal::open(dir.path(), config).expect("recovers");
    assert!(!temp.exists());
    assert_eq!(wal.lsn_next(), 11);
}
