//! Recovery: verify every segment and record, cut a torn tail, find where
//! appending resumes.
//!
//! The one judgement call is torn tail versus corruption. Records are
//! written in LSN order and only the final, not-yet-synced write can be cut
//! short by a crash, and only in the last segment (a segment is synced
//! before the next one is created). So a damaged record is a torn tail only
//! if (1) it is in the last segment, (2) nothing valid follows it, and
//! (3) its CRC is what is wrong (a CRC-valid record with the wrong LSN is a
//! gap, never a torn write). Anything else stops recovery with
//! [`WalError::Corrupt`] naming file, byte offset and LSN.

use std::path::{Path, PathBuf};

use crate::config::WalConfig;
use crate::error::{CorruptionKind, WalError};
use crate::format::{
    decode_group_marker, decode_record, decode_record_any_lsn, decode_segment_header_versioned,
    find_valid_marker, find_valid_record, parse_segment_file_name, GroupMarker,
    FORMAT_VERSION_UNGROUPED, GROUP_MARKER_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
    SEGMENT_TEMP_SUFFIX,
};
use crate::segment::{create_segment, SegmentMeta};
use crate::storage::Storage;

/// What recovery found and did. Available from [`crate::Wal::recovery_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Number of segment files verified.
    pub segments_verified: u64,
    /// Number of records verified (all CRCs checked).
    pub records_verified: u64,
    /// LSN of the oldest retained record (or of the next record, if none).
    pub lsn_first_retained: u64,
    /// LSN the next append gets.
    pub lsn_next: u64,
    /// A torn tail that recovery cut off, if any.
    pub torn_tail: Option<TornTail>,
}

/// A crash artefact at the end of the last segment, cut off by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Offset the file was cut back to (end of the last good record).
    pub offset: u64,
    /// LSN the damaged bytes would have had.
    pub lsn: u64,
    /// Bytes removed from the end of the file.
    pub bytes_dropped: u64,
    /// Why the bytes at `offset` were not a valid record.
    pub kind: CorruptionKind,
}

/// Result of recovering a directory: its segments and the report.
pub(crate) struct Recovered {
    pub segments: Vec<SegmentMeta>,
    /// Length of the last segment after any torn tail was cut.
    pub active_file_bytes: u64,
    /// Whether the last segment is of the first format (never appended to again).
    pub active_ungrouped: bool,
    pub report: RecoveryReport,
}

/// Outcome of verifying one segment's bytes.
#[derive(Debug)]
struct SegmentScan {
    lsn_next: u64,
    /// End of the last valid record (of the last whole group, in a grouped segment).
    valid_bytes: u64,
    records: u64,
    torn: Option<CorruptionKind>,
}

impl SegmentScan {
    fn whole(lsn_next: u64, valid_bytes: u64, records: u64) -> SegmentScan {
        SegmentScan {
            lsn_next,
            valid_bytes,
            records,
            torn: None,
        }
    }

    fn torn(lsn_next: u64, valid_bytes: u64, records: u64, kind: CorruptionKind) -> SegmentScan {
        SegmentScan {
            torn: Some(kind),
            ..SegmentScan::whole(lsn_next, valid_bytes, records)
        }
    }
}

pub(crate) fn recover_dir(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
) -> Result<Recovered, WalError> {
    storage
        .create_dir_all(dir)
        .map_err(WalError::io("create directory", dir))?;
    let names = storage
        .list_dir(dir)
        .map_err(WalError::io("list directory", dir))?;
    remove_temp_segments(storage, dir, &names)?;
    let mut segments: Vec<SegmentMeta> = names
        .iter()
        .filter_map(|name| {
            parse_segment_file_name(name).map(|first_lsn| SegmentMeta {
                path: dir.join(name),
                first_lsn,
            })
        })
        .collect();
    segments.sort_by_key(|segment| segment.first_lsn);
    if segments.is_empty() {
        return create_first_segment(storage, dir, config.first_lsn);
    }
    verify_segments(storage, segments, config)
}

fn verify_segments(
    storage: &dyn Storage,
    segments: Vec<SegmentMeta>,
    config: &WalConfig,
) -> Result<Recovered, WalError> {
    let mut lsn_expected: Option<u64> = None;
    let mut records_verified = 0u64;
    let mut torn_tail = None;
    let mut active_file_bytes = 0;
    let mut active_ungrouped = false;
    for (index, segment) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let bytes = storage
            .read_file(&segment.path)
            .map_err(WalError::io("read segment", &segment.path))?;
        let (scan, version) = scan_segment(
            &bytes,
            segment,
            lsn_expected,
            is_last,
            config.record_bytes_max,
        )?;
        records_verified += scan.records;
        lsn_expected = Some(scan.lsn_next);
        active_file_bytes = scan.valid_bytes;
        active_ungrouped = version == FORMAT_VERSION_UNGROUPED;
        if let Some(kind) = scan.torn {
            torn_tail = Some(cut_torn_tail(
                storage,
                segment,
                scan.valid_bytes,
                scan.lsn_next,
                &bytes[scan.valid_bytes as usize..],
                kind,
            )?);
        }
    }
    let lsn_next = lsn_expected.expect("at least one segment verified");
    let report = RecoveryReport {
        segments_verified: segments.len() as u64,
        records_verified,
        lsn_first_retained: segments[0].first_lsn,
        lsn_next,
        torn_tail,
    };
    Ok(Recovered {
        segments,
        active_file_bytes,
        active_ungrouped,
        report,
    })
}

/// Verifies the header and every record of one segment; returns what it found and the
/// segment's format version.
fn scan_segment(
    bytes: &[u8],
    segment: &SegmentMeta,
    lsn_expected: Option<u64>,
    is_last: bool,
    record_bytes_max: u32,
) -> Result<(SegmentScan, u32), WalError> {
    let corrupt = |offset, lsn, kind| WalError::Corrupt {
        path: segment.path.clone(),
        offset,
        lsn,
        kind,
    };
    let (first_lsn, version) =
        decode_segment_header_versioned(bytes).map_err(|kind| corrupt(0, None, kind))?;
    if first_lsn != segment.first_lsn {
        let kind = CorruptionKind::SegmentNameMismatch {
            lsn_in_name: segment.first_lsn,
            lsn_in_header: first_lsn,
        };
        return Err(corrupt(0, Some(first_lsn), kind));
    }
    if let Some(lsn_expected) = lsn_expected.filter(|&expected| expected != first_lsn) {
        let kind = CorruptionKind::SegmentLsnGap {
            lsn_expected,
            lsn_found: first_lsn,
        };
        return Err(corrupt(0, Some(lsn_expected), kind));
    }
    let scan = if version == FORMAT_VERSION_UNGROUPED {
        scan_ungrouped(bytes, first_lsn, is_last, record_bytes_max)
    } else {
        scan_grouped(bytes, first_lsn, is_last, record_bytes_max)
    };
    let scan = scan.map_err(|(offset, lsn, kind)| corrupt(offset, Some(lsn), kind))?;
    assert!(scan.valid_bytes >= u64::from(SEGMENT_HEADER_BYTES));
    assert!(scan.valid_bytes <= bytes.len() as u64);
    assert!(scan.lsn_next == first_lsn + scan.records);
    Ok((scan, version))
}

/// Where corruption was found: byte offset, the LSN expected there, what is wrong.
type Damage = (u64, u64, CorruptionKind);

/// A segment of the first format: records back to back.
fn scan_ungrouped(
    bytes: &[u8],
    first_lsn: u64,
    is_last: bool,
    record_bytes_max: u32,
) -> Result<SegmentScan, Damage> {
    let mut offset = u64::from(SEGMENT_HEADER_BYTES);
    let mut lsn = first_lsn;
    let mut records = 0;
    while offset < bytes.len() as u64 {
        match decode_record(bytes, offset, lsn, record_bytes_max) {
            Ok(record) => {
                offset = record.end_offset();
                lsn += 1;
                records += 1;
            }
            Err(damage) => {
                let torn = classify_damage(bytes, offset, lsn, damage, is_last, record_bytes_max)
                    .map_err(|kind| (offset, lsn, kind))?;
                return Ok(SegmentScan::torn(lsn, offset, records, torn));
            }
        }
    }
    Ok(SegmentScan::whole(lsn, offset, records))
}

/// Where a group whose marker was read ends, and the LSN after its last record.
#[derive(Clone, Copy)]
struct GroupEnd {
    offset: u64,
    lsn: u64,
}

/// The group being read: where its marker is, where it must end, what is left of it.
struct OpenGroup {
    marker_offset: u64,
    marker: GroupMarker,
    records_read: u32,
}

/// A segment of the current format: groups, each a marker and its records. A torn tail
/// (damage, or the file ending inside a group) is cut at the start of its group (the whole group was one write and one sync, so
/// none of it was acknowledged), which keeps every group in the file whole.
fn scan_grouped(
    bytes: &[u8],
    first_lsn: u64,
    is_last: bool,
    record_bytes_max: u32,
) -> Result<SegmentScan, Damage> {
    let file_bytes = bytes.len() as u64;
    let mut offset = u64::from(SEGMENT_HEADER_BYTES);
    let mut lsn = first_lsn;
    let mut records = 0;
    let mut group: Option<OpenGroup> = None;
    let classify = |offset, lsn, damage, group_end| {
        let kind = classify_group_damage(
            bytes,
            offset,
            lsn,
            damage,
            is_last,
            group_end,
            record_bytes_max,
        );
        kind.map_err(|kind| (offset, lsn, kind))
    };
    // An open group at the end of the file reads as a record cut short there.
    while offset < file_bytes || group.is_some() {
        let Some(open) = &mut group else {
            match decode_group_marker(bytes, offset) {
                Ok(marker) if marker.first_lsn == lsn => {
                    group = Some(OpenGroup {
                        marker_offset: offset,
                        marker,
                        records_read: 0,
                    });
                    offset += u64::from(GROUP_MARKER_BYTES);
                }
                // CRC-valid bytes that do not continue the sequence: never a torn write.
                Ok(marker) => {
                    let kind = CorruptionKind::GroupLsnMismatch {
                        lsn_expected: lsn,
                        lsn_found: marker.first_lsn,
                    };
                    return Err((offset, lsn, kind));
                }
                Err(damage) => {
                    if decode_record_any_lsn(bytes, offset, record_bytes_max).is_ok() {
                        // A whole record where the writer always puts a marker.
                        let kind = CorruptionKind::GroupMarkerMissing {
                            found: Box::new(damage),
                        };
                        return Err((offset, lsn, kind));
                    }
                    let torn = classify(offset, lsn, damage, None)?;
                    return Ok(SegmentScan::torn(lsn, offset, records, torn));
                }
            }
            continue;
        };
        let group_end = open.marker.end_offset(open.marker_offset);
        match decode_record(bytes, offset, lsn, record_bytes_max) {
            Ok(record) => {
                open.records_read += 1;
                let end = record.end_offset();
                let group_full = open.records_read == open.marker.records;
                if end > group_end || group_full != (end == group_end) {
                    let kind = CorruptionKind::GroupLengthMismatch {
                        records: open.marker.records,
                        bytes: open.marker.bytes,
                    };
                    return Err((open.marker_offset, open.marker.first_lsn, kind));
                }
                offset = end;
                lsn += 1;
                records += 1;
                if group_full {
                    group = None;
                }
            }
            Err(damage) => {
                let (marker_offset, group_first_lsn) = (open.marker_offset, open.marker.first_lsn);
                let end = GroupEnd {
                    offset: group_end,
                    lsn: group_first_lsn + u64::from(open.marker.records),
                };
                let torn = classify(offset, lsn, damage, Some(end))?;
                let records_kept = records - (lsn - group_first_lsn);
                return Ok(SegmentScan::torn(
                    group_first_lsn,
                    marker_offset,
                    records_kept,
                    torn,
                ));
            }
        }
    }
    Ok(SegmentScan::whole(lsn, offset, records))
}

/// What no crash leaves, whatever follows (`Err`): a CRC-valid record with the wrong LSN
/// (a gap); the expected record's own header (its LSN in place) claiming more than any
/// record may hold (a torn write loses the end of a write or leaves zeros, it never
/// makes a length larger); damage in a sealed segment (synced before its successor was
/// created). Anything else may be a torn write (`Ok`), if nothing after it says otherwise.
fn damage_a_crash_can_leave(
    bytes: &[u8],
    offset: u64,
    lsn: u64,
    damage: CorruptionKind,
    is_last: bool,
) -> Result<CorruptionKind, CorruptionKind> {
    if matches!(damage, CorruptionKind::LsnMismatch { .. }) {
        return Err(damage);
    }
    if matches!(damage, CorruptionKind::RecordTooLarge { .. })
        && crate::format::lsn_at(bytes, offset) == Some(lsn)
    {
        return Err(damage);
    }
    if !is_last {
        return Err(CorruptionKind::DamagedInSealedSegment {
            damage: Box::new(damage),
        });
    }
    Ok(damage)
}

/// Decides whether damage at `offset` in a grouped segment is a torn last group (`Ok`,
/// to be cut) or corruption (`Err`, recovery stops). `group_end` is where the damaged
/// group ends when its marker was read.
///
/// The writer starts a group only after the previous group's `fdatasync` returned, and
/// the pages of one group may reach the disk in any order when power fails mid-sync
/// (segments are written over reserved zeros). So anything valid of a later group (a
/// marker after the damage, or a record past this group's end) proves the damage was
/// synced; valid records of the damaged group itself, after a hole, prove nothing.
fn classify_group_damage(
    bytes: &[u8],
    offset: u64,
    lsn: u64,
    damage: CorruptionKind,
    is_last: bool,
    group_end: Option<GroupEnd>,
    record_bytes_max: u32,
) -> Result<CorruptionKind, CorruptionKind> {
    let damage = damage_a_crash_can_leave(bytes, offset, lsn, damage, is_last)?;
    // Past the damaged group's end when its marker was read, so that nothing inside the
    // group (payloads are a client's bytes) is taken for a later group.
    let (search_from, lsn_later) = match group_end {
        Some(GroupEnd { offset, lsn }) => (offset, lsn),
        None => (offset + 1, lsn),
    };
    let later_record = group_end.and_then(|_| {
        find_valid_record(bytes, search_from, lsn_later, record_bytes_max).map(|record| {
            (
                record.lsn,
                record.payload_offset - u64::from(RECORD_HEADER_BYTES),
            )
        })
    });
    let later_marker = find_valid_marker(bytes, search_from, lsn_later)
        .map(|(marker_offset, marker)| (marker.first_lsn, marker_offset));
    match later_marker.or(later_record) {
        Some((lsn_next_valid, offset_next_valid)) => Err(CorruptionKind::DamagedBeforeValid {
            damage: Box::new(damage),
            lsn_next_valid,
            offset_next_valid,
        }),
        None => Ok(damage),
    }
}

/// Decides whether damage at `offset` is a torn tail (`Ok`, to be cut) or
/// corruption (`Err`, recovery stops). See the module documentation.
fn classify_damage(
    bytes: &[u8],
    offset: u64,
    lsn: u64,
    damage: CorruptionKind,
    is_last: bool,
    record_bytes_max: u32,
) -> Result<CorruptionKind, CorruptionKind> {
    let damage = damage_a_crash_can_leave(bytes, offset, lsn, damage, is_last)?;
    match find_valid_record(bytes, offset + 1, lsn, record_bytes_max) {
        Some(next) => Err(CorruptionKind::DamagedBeforeValid {
            damage: Box::new(damage),
            lsn_next_valid: next.lsn,
            offset_next_valid: next.payload_offset - u64::from(crate::format::RECORD_HEADER_BYTES),
        }),
        None => Ok(damage),
    }
}

fn cut_torn_tail(
    storage: &dyn Storage,
    segment: &SegmentMeta,
    valid_bytes: u64,
    lsn: u64,
    tail: &[u8],
    kind: CorruptionKind,
) -> Result<TornTail, WalError> {
    let bytes_dropped = tail.len() as u64;
    if tail.iter().all(|&byte| byte == 0) {
        // Space the writer reserved ahead of its records (see
        // `storage::SEGMENT_RESERVE_BYTES`): what any stop but a clean one leaves.
        tracing::info!(
            path = %segment.path.display(),
            offset = valid_bytes,
            lsn,
            bytes_dropped,
            "WAL recovery: zeros after the last group (reserved space); truncating",
        );
    } else {
        tracing::warn!(
            path = %segment.path.display(),
            offset = valid_bytes,
            lsn,
            bytes_dropped,
            reason = %kind,
            "WAL recovery: torn tail after the last valid record; truncating",
        );
    }
    storage
        .truncate_file(&segment.path, valid_bytes)
        .map_err(WalError::io("truncate torn tail", &segment.path))?;
    Ok(TornTail {
        path: segment.path.clone(),
        offset: valid_bytes,
        lsn,
        bytes_dropped,
        kind,
    })
}

/// Temporary files are segments whose creation a crash interrupted; they
/// hold no records (records are only written after the rename).
fn remove_temp_segments(
    storage: &dyn Storage,
    dir: &Path,
    names: &[String],
) -> Result<(), WalError> {
    let mut removed_any = false;
    for name in names
        .iter()
        .filter(|name| name.ends_with(SEGMENT_TEMP_SUFFIX))
    {
        let path = dir.join(name);
        tracing::warn!(path = %path.display(), "WAL recovery: removing half-created segment");
        storage
            .remove_file(&path)
            .map_err(WalError::io("remove temp segment", &path))?;
        removed_any = true;
    }
    if removed_any {
        storage
            .sync_dir(dir)
            .map_err(WalError::io("fsync directory", dir))?;
    }
    Ok(())
}

fn create_first_segment(
    storage: &dyn Storage,
    dir: &Path,
    first_lsn: u64,
) -> Result<Recovered, WalError> {
    let active = create_segment(storage, dir, first_lsn)?;
    let segments = vec![SegmentMeta {
        path: active.path.clone(),
        first_lsn,
    }];
    let report = RecoveryReport {
        segments_verified: 0,
        records_verified: 0,
        lsn_first_retained: first_lsn,
        lsn_next: first_lsn,
        torn_tail: None,
    };
    Ok(Recovered {
        segments,
        active_file_bytes: active.file_bytes,
        active_ungrouped: false,
        report,
    })
}
