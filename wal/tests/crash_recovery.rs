//! Crashes (torn writes) and corruption: what recovery keeps, cuts, refuses.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use rand::{Rng, SeedableRng};
use settled_wal::{
    encode_group_marker, encode_segment_header_of_version, CorruptionKind, GroupMarker, Wal,
    WalError, FORMAT_VERSION, FORMAT_VERSION_UNGROUPED, GROUP_MARKER_BYTES, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES, SEGMENT_RESERVE_BYTES,
};

/// Byte range of the last group in `segment` (marker, record header, payload), given
/// that it holds one record whose payload is `payload_bytes` long (see `build_wal`).
fn last_group_range(segment: &Path, payload_bytes: usize) -> (u64, u64) {
    let file_bytes = fs::metadata(segment).expect("metadata").len();
    (
        file_bytes
            - u64::from(GROUP_MARKER_BYTES)
            - u64::from(RECORD_HEADER_BYTES)
            - payload_bytes as u64,
        file_bytes,
    )
}

/// The groups of a segment written by `build_wal` (one record each): for each, the
/// record's bytes (header and payload) and its LSN.
fn single_record_groups(content: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let marker = GROUP_MARKER_BYTES as usize;
    let header = RECORD_HEADER_BYTES as usize;
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut groups = Vec::new();
    while offset < content.len() {
        let record = offset + marker;
        let lsn = u64::from_le_bytes(content[record..record + 8].try_into().expect("8"));
        let payload = u32::from_le_bytes(content[record + 8..record + 12].try_into().expect("4"));
        let end = record + header + payload as usize;
        groups.push((lsn, content[record..end].to_vec()));
        offset = end;
    }
    groups
}

/// The last segment of a `build_wal` log rewritten so that its last `merged` records form
/// one group (as when they were appended while the previous group synced). Returns the
/// new content and the offset of that group's marker.
fn merge_last_groups(segment: &Path, merged: usize) -> (Vec<u8>, usize) {
    let content = fs::read(segment).expect("read");
    let groups = single_record_groups(&content);
    assert!(
        groups.len() > merged,
        "the segment keeps a group before them"
    );
    let (kept, last) = groups.split_at(groups.len() - merged);
    let mut rewritten = content[..SEGMENT_HEADER_BYTES as usize].to_vec();
    for (lsn, record) in kept {
        let marker = GroupMarker {
            first_lsn: *lsn,
            bytes: record.len() as u64,
            records: 1,
        };
        rewritten.extend_from_slice(&encode_group_marker(&marker));
        rewritten.extend_from_slice(record);
    }
    let marker_offset = rewritten.len();
    let marker = GroupMarker {
        first_lsn: last[0].0,
        bytes: last.iter().map(|(_, record)| record.len() as u64).sum(),
        records: merged as u32,
    };
    rewritten.extend_from_slice(&encode_group_marker(&marker));
    for (_, record) in last {
        rewritten.extend_from_slice(record);
    }
    (rewritten, marker_offset)
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
    let (record_start, record_end) = last_group_range(&last_segment, payload(count).len());
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
    let (last_record_start, _) = last_group_range(&last_segment, payload(count).len());
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
                // Only damage to the very last group (its marker or its one record)
                // may pass as a torn tail, and then exactly the records before it
                // survive.
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
    let config = one_segment_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let content = fs::read(&last_segment).expect("read");
    // The first record of the last segment starts right after the header and its
    // group's marker; flip a bit in its CRC.
    let first_lsn = u64::from_le_bytes(content[16..24].try_into().expect("8 bytes"));
    assert!(first_lsn < 20, "last segment holds several records");
    let record_offset = u64::from(SEGMENT_HEADER_BYTES + GROUP_MARKER_BYTES);
    flip_bit(&last_segment, record_offset + 12, 0);
    match Wal::open(dir.path(), config) {
        Err(WalError::Corrupt {
            path,
            offset,
            lsn,
            kind,
        }) => {
            assert_eq!(path, last_segment);
            assert_eq!(offset, record_offset);
            assert_eq!(lsn, Some(first_lsn));
            assert!(
                matches!(kind, CorruptionKind::DamagedBeforeValid { lsn_next_valid, .. } if lsn_next_valid == first_lsn + 1)
            );
        }
        other => panic!("expected Corrupt, got {:?}", other.err()),
    }
}

/// Opens a 20-record log whose last segment ends with its last group again, less its
/// first `skipped` bytes; returns what the open gave and where the repeat starts.
fn open_with_last_group_repeated(skipped: usize) -> (Result<Wal, WalError>, u64) {
    let config = small_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let (start, end) = last_group_range(&last_segment, payload(20).len());
    let mut content = fs::read(&last_segment).expect("read");
    content.extend_from_within(start as usize + skipped..end as usize);
    fs::write(&last_segment, &content).expect("write");
    (Wal::open(dir.path(), config), end)
}

#[test]
fn a_valid_group_with_the_wrong_lsn_at_the_tail_is_corruption() {
    // Duplicate the last group: CRC-valid, but LSN 20 where 21 belongs.
    let (opened, end) = open_with_last_group_repeated(0);
    match opened {
        Err(WalError::Corrupt {
            offset,
            lsn: Some(21),
            kind:
                CorruptionKind::GroupLsnMismatch {
                    lsn_expected: 21,
                    lsn_found: 20,
                },
            ..
        }) => {
            assert_eq!(offset, end);
        }
        other => panic!("expected GroupLsnMismatch, got {:?}", other.err()),
    }
}

#[test]
fn a_valid_record_where_a_group_marker_belongs_is_corruption() {
    // The last record again, without its marker: whole and CRC-valid, which a torn
    // write never makes.
    let (opened, end) = open_with_last_group_repeated(GROUP_MARKER_BYTES as usize);
    match opened {
        Err(WalError::Corrupt {
            offset,
            lsn: Some(21),
            kind: CorruptionKind::GroupMarkerMissing { .. },
            ..
        }) => assert_eq!(offset, end),
        other => panic!("expected GroupMarkerMissing, got {:?}", other.err()),
    }
}

/// Limits under which one segment holds all the records of a test.
fn one_segment_config() -> settled_wal::WalConfig {
    settled_wal::WalConfig {
        segment_bytes: 64 * 1024,
        ..small_config()
    }
}

/// Zeros over `content[range]`: pages of a write that never reached the disk.
fn zero(content: &mut [u8], range: std::ops::Range<usize>) {
    content[range].fill(0);
}

#[test]
fn a_torn_last_group_with_a_hole_before_valid_records_is_cut_whole() {
    // Power fails while the last group syncs over reserved zeros: some of its pages
    // reached the disk, others did not, in any order. Whatever landed, nothing of a
    // later group follows, so the whole group is cut and the log starts.
    let config = one_segment_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let (merged, marker_offset) = merge_last_groups(&last_segment, 3);
    let marker_end = marker_offset + GROUP_MARKER_BYTES as usize;
    let record_18 = marker_end..marker_end + RECORD_HEADER_BYTES as usize + payload(18).len();
    let holes = [
        ("the first record", record_18.clone()),
        ("the marker", marker_offset..marker_end),
        (
            "the middle record's header",
            record_18.end..record_18.end + 16,
        ),
        (
            "the marker and the first record",
            marker_offset..record_18.end,
        ),
    ];
    for (what, hole) in holes {
        let copy = copy_dir(dir.path());
        let segment = copy.path().join(last_segment.file_name().expect("name"));
        let mut content = merged.clone();
        zero(&mut content, hole);
        content.extend_from_slice(&[0u8; 4096]);
        fs::write(&segment, &content).expect("write");
        let wal = Wal::open(copy.path(), config.clone())
            .unwrap_or_else(|error| panic!("a hole in {what}: {error}"));
        let torn = wal.recovery_report().torn_tail.clone().expect("torn");
        assert_eq!(
            (torn.offset, torn.lsn),
            (marker_offset as u64, 18),
            "{what}"
        );
        assert_eq!(wal.durable_lsn(), 17, "{what}");
        assert_records_are_payloads(&replay_all(&wal, 0).expect("replay"), 1);
        assert_eq!(wal.append(&payload(18)).expect("append"), 18);
        wal.close().expect("close");
        let wal = Wal::open(copy.path(), config.clone()).expect("reopen");
        assert_eq!(replay_all(&wal, 0).expect("replay").len(), 18, "{what}");
    }
}

#[test]
fn damage_in_a_group_that_a_later_group_follows_is_corruption() {
    // A group is written only after the previous one's fsync returned: anything of a
    // later group behind damaged bytes proves they were synced (and acknowledged).
    let config = one_segment_config();
    let dir = build_wal(&config, 20);
    let last_segment = segment_files(dir.path()).pop().expect("segment");
    let content = fs::read(&last_segment).expect("read");
    let groups = single_record_groups(&content);
    assert!(groups.len() >= 3);
    let marker = GROUP_MARKER_BYTES as usize;
    let first_group_end = SEGMENT_HEADER_BYTES as usize + marker + groups[0].1.len();
    let header = SEGMENT_HEADER_BYTES as usize;
    let first_marker = header..header + marker;
    let first_record = header + marker..first_group_end;
    let second_marker = first_group_end..first_group_end + marker;
    let mut later_markers = Vec::new();
    let mut group_start = first_group_end;
    for (_, record) in &groups[1..] {
        later_markers.push(group_start..group_start + marker);
        group_start += marker + record.len();
    }
    let cases = [
        // The first group's record damaged; the next group is whole.
        ("a record, then a whole group", vec![first_record.clone()]),
        // The same, and the next group's marker lost too: its record, past the end the
        // first group's marker gives, still proves it.
        (
            "a record, then a group without its marker",
            vec![first_record.clone(), second_marker],
        ),
        // The first group's record damaged and every later marker lost: the later
        // records, past the end the first group's marker gives, prove it alone.
        (
            "a record, then groups without their markers",
            std::iter::once(first_record.clone())
                .chain(later_markers.iter().cloned())
                .collect(),
        ),
        // The first group's marker damaged: a later marker proves it.
        ("a marker, then a whole group", vec![first_marker]),
    ];
    for (what, holes) in cases {
        let copy = copy_dir(dir.path());
        let segment = copy.path().join(last_segment.file_name().expect("name"));
        let mut damaged = content.clone();
        for hole in holes {
            zero(&mut damaged, hole);
        }
        fs::write(&segment, &damaged).expect("write");
        match Wal::open(copy.path(), config.clone()) {
            Err(WalError::Corrupt {
                kind: CorruptionKind::DamagedBeforeValid { .. },
                ..
            }) => {}
            other => panic!("{what}: expected DamagedBeforeValid, got {:?}", other.err()),
        }
        assert_eq!(
            fs::read(&segment).expect("read"),
            damaged,
            "{what}: unchanged"
        );
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

#[test]
fn reserved_zeros_are_given_back_at_a_clean_close_and_cut_after_a_crash() {
    let config = small_config();
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    append_durable(&wal, 1, 30);
    let file_bytes = |path: &Path| fs::metadata(path).expect("metadata").len();
    let files = segment_files(dir.path());
    let (active, sealed) = files.split_last().expect("segments");
    assert!(sealed.len() >= 2, "the records span several segments");
    for path in sealed {
        assert!(
            file_bytes(path) <= config.segment_bytes,
            "{} was rolled with its reserved zeros",
            path.display()
        );
    }
    assert!(
        file_bytes(active) >= SEGMENT_RESERVE_BYTES / 2,
        "the active segment has zeros reserved after its records"
    );
    // A crash now leaves the zeros on disk: recovery cuts them and keeps every record.
    let crashed = copy_dir(dir.path());
    let recovered = Wal::open(crashed.path(), config.clone()).expect("recovers");
    let cut = recovered
        .recovery_report()
        .torn_tail
        .clone()
        .expect("zeros cut");
    assert_eq!(cut.lsn, 31);
    assert!(cut.bytes_dropped >= SEGMENT_RESERVE_BYTES / 2);
    assert_eq!(replay_all(&recovered, 0).expect("replay").len(), 30);
    drop(recovered);
    // A clean close gives them back: the segment ends at its last group.
    wal.close().expect("close");
    assert!(file_bytes(active) <= config.segment_bytes);
    let reopened = Wal::open(dir.path(), config).expect("reopen");
    assert_eq!(reopened.recovery_report().torn_tail, None);
    let records = replay_all(&reopened, 0).expect("replay");
    assert_records_are_payloads(&records, 1);
    assert_eq!(records.len(), 30);
}

/// `content` (a segment of the current format, as `build_wal` writes it) in the first
/// format: the same records back to back, no markers, version 1.
fn to_first_format(content: &[u8]) -> Vec<u8> {
    assert_eq!(content[8..12], FORMAT_VERSION.to_le_bytes());
    let first_lsn = u64::from_le_bytes(content[16..24].try_into().expect("8 bytes"));
    let mut old = encode_segment_header_of_version(first_lsn, FORMAT_VERSION_UNGROUPED).to_vec();
    for (_, record) in single_record_groups(content) {
        old.extend_from_slice(&record);
    }
    old
}

#[test]
fn a_log_of_the_first_format_recovers_and_goes_on_in_a_new_segment() {
    let config = small_config();
    let dir = build_wal(&config, 30);
    let files = segment_files(dir.path());
    assert!(files.len() >= 2);
    for path in &files {
        let content = fs::read(path).expect("read");
        fs::write(path, to_first_format(&content)).expect("write");
    }
    // A torn tail of the first format is cut by its own rule.
    let last = files.last().expect("segment");
    let mut content = fs::read(last).expect("read");
    content.extend_from_slice(&[7u8; 5]);
    fs::write(last, &content).expect("write");
    let wal = Wal::open(dir.path(), config.clone()).expect("the first format is read");
    assert_eq!(
        wal.recovery_report().torn_tail.as_ref().map(|t| t.lsn),
        Some(31)
    );
    assert_records_are_payloads(&replay_all(&wal, 0).expect("replay"), 1);
    // Appends go to a new segment of the current format; the old ones stay as they are.
    let after_open = segment_files(dir.path());
    assert_eq!(after_open.len(), files.len() + 1);
    assert_eq!(
        fs::read(last).expect("read"),
        content[..content.len() - 5],
        "the old last segment is only cut"
    );
    assert_eq!(wal.append(&payload(31)).expect("append"), 31);
    wal.close().expect("close");
    let new_segment = fs::read(after_open.last().expect("new")).expect("read");
    assert_eq!(new_segment[8..12], FORMAT_VERSION.to_le_bytes());
    let wal = Wal::open(dir.path(), config).expect("reopen");
    let records = replay_all(&wal, 0).expect("replay");
    assert_eq!(records.len(), 31);
    assert_records_are_payloads(&records, 1);
}

#[test]
fn a_marker_inside_a_torn_groups_payload_does_not_pass_for_a_later_group() {
    // Payloads are a client's bytes, logged as they came: one may hold a well-formed
    // marker. A torn group holding one must still be cut, not refused.
    let config = one_segment_config();
    for (what, first_lsn, lose_marker) in [
        ("an LSN just after, the group's marker read", 19, false),
        ("an LSN far ahead, the group's marker lost", 1 << 62, true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), config.clone()).expect("open");
        for index in 1..=20 {
            let mut bytes = payload(index);
            if index == 19 {
                let fake = GroupMarker {
                    first_lsn,
                    bytes: 16,
                    records: 1,
                };
                bytes = encode_group_marker(&fake).to_vec();
            }
            let lsn = wal.append(&bytes).expect("append");
            wal.wait_durable(lsn).expect("durable");
        }
        wal.close().expect("close");
        let segment = segment_files(dir.path()).pop().expect("segment");
        let (mut content, marker_offset) = merge_last_groups(&segment, 3);
        let marker_end = marker_offset + GROUP_MARKER_BYTES as usize;
        let record_18_end = marker_end + RECORD_HEADER_BYTES as usize + payload(18).len();
        let hole_start = if lose_marker {
            marker_offset
        } else {
            marker_end
        };
        zero(&mut content, hole_start..record_18_end);
        fs::write(&segment, &content).expect("write");
        let wal =
            Wal::open(dir.path(), config.clone()).unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(wal.durable_lsn(), 17, "{what}");
        assert_records_are_payloads(&replay_all(&wal, 0).expect("replay"), 1);
    }
}
