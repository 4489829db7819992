//! The on-disk format: constants, encoders and pure decoders.
//!
//! Everything here works on byte slices and never touches a file, so the
//! format can be tested (and fuzzed) without I/O. The byte-by-byte layout is
//! documented in the crate-level doc comment (`lib.rs`).

use crate::error::CorruptionKind;

/// Magic bytes at offset 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SETLWAL\0";
/// Format version written into every new segment header: records in groups, each
/// group's records led by a group marker (see the crate docs).
pub const FORMAT_VERSION: u32 = 2;
/// The first format, still read: records back to back, no group markers. A segment of
/// this version is never appended to (the writer starts a new one at open).
pub const FORMAT_VERSION_UNGROUPED: u32 = 1;
/// The LSN field of a group marker; never a record's LSN (appends stop before it).
pub const GROUP_MARKER_LSN: u64 = u64::MAX;
/// A group marker's payload: the group's first LSN, its bytes, its records, zero.
const GROUP_MARKER_PAYLOAD_BYTES: u32 = 24;
/// A whole group marker: a record header and its payload.
pub const GROUP_MARKER_BYTES: u32 = RECORD_HEADER_BYTES + GROUP_MARKER_PAYLOAD_BYTES;
/// Size of the segment header at the start of every segment file.
pub const SEGMENT_HEADER_BYTES: u32 = 32;
/// Size of the header in front of every record's payload.
pub const RECORD_HEADER_BYTES: u32 = 16;

/// Bytes of the record header that its CRC covers (everything but the CRC).
const RECORD_HEADER_CRC_COVERED_BYTES: usize = 12;
/// Bytes of the segment header that its CRC covers (everything but the CRC).
const SEGMENT_HEADER_CRC_COVERED_BYTES: usize = 28;

/// Prefix and suffix of segment file names: `wal-{first_lsn:020}.log`.
pub const SEGMENT_NAME_PREFIX: &str = "wal-";
pub const SEGMENT_NAME_SUFFIX: &str = ".log";
/// Suffix of a segment being created; renamed away once its header is synced.
pub const SEGMENT_TEMP_SUFFIX: &str = ".log.tmp";
/// Digits of the zero-padded first LSN in a segment name (u64::MAX has 20).
const SEGMENT_NAME_LSN_DIGITS: usize = 20;

const _: () = assert!(SEGMENT_HEADER_CRC_COVERED_BYTES + 4 == SEGMENT_HEADER_BYTES as usize);
const _: () = assert!(RECORD_HEADER_CRC_COVERED_BYTES + 4 == RECORD_HEADER_BYTES as usize);

/// File name of the segment whose first record has LSN `first_lsn`.
/// Zero padding makes lexical order equal LSN order.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{SEGMENT_NAME_PREFIX}{first_lsn:0SEGMENT_NAME_LSN_DIGITS$}{SEGMENT_NAME_SUFFIX}")
}

/// The first LSN encoded in a segment file name, or `None` if the name is
/// not a segment name (other files in the directory are ignored).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_NAME_PREFIX)?
        .strip_suffix(SEGMENT_NAME_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes the 32-byte segment header.
pub fn encode_segment_header(first_lsn: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    encode_segment_header_of_version(first_lsn, FORMAT_VERSION)
}

/// Encodes the 32-byte segment header of format `version` (the WAL writes only
/// [`FORMAT_VERSION`]; tests and checks rebuild headers of the first format).
pub fn encode_segment_header_of_version(
    first_lsn: u64,
    version: u32,
) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    assert!(first_lsn >= 1, "LSN 0 is reserved for 'nothing'");
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    // Bytes 12..16 and 24..28 are reserved and must be zero.
    header[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&header[..SEGMENT_HEADER_CRC_COVERED_BYTES]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes and verifies a segment header; returns its first LSN.
pub fn decode_segment_header(bytes: &[u8]) -> Result<u64, CorruptionKind> {
    decode_segment_header_versioned(bytes).map(|(first_lsn, _)| first_lsn)
}

/// Decodes and verifies a segment header of either version; returns its first LSN and
/// its version ([`FORMAT_VERSION`] or [`FORMAT_VERSION_UNGROUPED`]).
pub fn decode_segment_header_versioned(bytes: &[u8]) -> Result<(u64, u32), CorruptionKind> {
    let header =
        bytes
            .get(..SEGMENT_HEADER_BYTES as usize)
            .ok_or(CorruptionKind::SegmentHeaderShort {
                file_bytes: bytes.len() as u64,
            })?;
    let crc_stored = read_u32(header, 28);
    let crc_computed = crc32c::crc32c(&header[..SEGMENT_HEADER_CRC_COVERED_BYTES]);
    if crc_stored != crc_computed {
        return Err(CorruptionKind::SegmentHeaderCrc {
            crc_stored,
            crc_computed,
        });
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err(CorruptionKind::SegmentMagic);
    }
    let version = read_u32(header, 8);
    if version != FORMAT_VERSION && version != FORMAT_VERSION_UNGROUPED {
        return Err(CorruptionKind::SegmentVersion { version });
    }
    if read_u32(header, 12) != 0 || read_u32(header, 24) != 0 {
        return Err(CorruptionKind::SegmentReserved);
    }
    let first_lsn = read_u64(header, 16);
    if first_lsn == 0 {
        return Err(CorruptionKind::SegmentFirstLsnZero);
    }
    Ok((first_lsn, version))
}

/// What a group marker says of the records that follow it in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMarker {
    /// LSN of the group's first record.
    pub first_lsn: u64,
    /// Bytes of the group's records (headers and payloads), after the marker.
    pub bytes: u64,
    /// How many records the group holds (at least one).
    pub records: u32,
}

impl GroupMarker {
    /// Offset one past the group's last byte, for a marker found at `offset`.
    pub fn end_offset(&self, offset: u64) -> u64 {
        offset + u64::from(GROUP_MARKER_BYTES) + self.bytes
    }
}

/// The marker written in front of the records of one group (one write and one
/// `fdatasync`): a record with the LSN [`GROUP_MARKER_LSN`] whose payload says where the
/// group ends, so recovery can tell a torn last group from damage that later groups
/// prove was synced.
pub fn encode_group_marker(marker: &GroupMarker) -> [u8; GROUP_MARKER_BYTES as usize] {
    assert!(marker.first_lsn >= 1 && marker.first_lsn < GROUP_MARKER_LSN);
    assert!(marker.records >= 1 && marker.bytes >= u64::from(RECORD_HEADER_BYTES));
    let mut payload = [0u8; GROUP_MARKER_PAYLOAD_BYTES as usize];
    payload[0..8].copy_from_slice(&marker.first_lsn.to_le_bytes());
    payload[8..16].copy_from_slice(&marker.bytes.to_le_bytes());
    payload[16..20].copy_from_slice(&marker.records.to_le_bytes());
    let mut encoded = Vec::with_capacity(GROUP_MARKER_BYTES as usize);
    encode_record(
        &mut encoded,
        GROUP_MARKER_LSN,
        &payload,
        crc32c::crc32c(&payload),
    );
    encoded
        .try_into()
        .expect("a marker is a record header and its payload")
}

/// Decodes and verifies the group marker at `offset`.
pub fn decode_group_marker(segment: &[u8], offset: u64) -> Result<GroupMarker, CorruptionKind> {
    let record = decode_record_any_lsn(segment, offset, GROUP_MARKER_PAYLOAD_BYTES)?;
    if record.lsn != GROUP_MARKER_LSN || record.payload_bytes != GROUP_MARKER_PAYLOAD_BYTES {
        return Err(CorruptionKind::GroupMarkerInvalid {
            lsn_field: record.lsn,
        });
    }
    let payload = &segment[record.payload_offset as usize..record.end_offset() as usize];
    let marker = GroupMarker {
        first_lsn: read_u64(payload, 0),
        bytes: read_u64(payload, 8),
        records: read_u32(payload, 16),
    };
    let valid = read_u32(payload, 20) == 0
        && marker.bytes <= crate::config::SEGMENT_BYTES_LIMIT
        && marker.first_lsn >= 1
        && marker.first_lsn < GROUP_MARKER_LSN
        && marker.records >= 1
        && marker.bytes >= u64::from(marker.records) * u64::from(RECORD_HEADER_BYTES);
    if !valid {
        return Err(CorruptionKind::GroupMarkerInvalid {
            lsn_field: record.lsn,
        });
    }
    Ok(marker)
}

/// Searches `segment[offset_from..]` at every byte offset for a CRC-valid group marker
/// whose group starts at `lsn_min` or within as many LSNs after it as the segment could
/// hold records; returns its offset and what it says.
///
/// A valid marker after damaged bytes proves the damage was synced: the writer starts a
/// group only after the previous one's `fdatasync` returned. The LSN window keeps a
/// marker-shaped payload (a client's bytes are logged as they came) from passing for one
/// unless it also names an LSN close to the log's.
pub fn find_valid_marker(
    segment: &[u8],
    offset_from: u64,
    lsn_min: u64,
) -> Option<(u64, GroupMarker)> {
    let segment_bytes = segment.len() as u64;
    let lsn_max = lsn_search_max(segment, lsn_min);
    let mut offset = offset_from;
    while offset + u64::from(GROUP_MARKER_BYTES) <= segment_bytes {
        if read_u64(segment, offset as usize) == GROUP_MARKER_LSN {
            if let Ok(marker) = decode_group_marker(segment, offset) {
                if (lsn_min..=lsn_max).contains(&marker.first_lsn) {
                    return Some((offset, marker));
                }
            }
        }
        offset += 1;
    }
    None
}

/// CRC32C of a record: over its payload, then over its header's LSN and
/// length fields (bytes 0..12). Payload first, so that `payload_crc`
/// (`crc32c(payload)`) can be computed by an appender before it takes the
/// lock that assigns the LSN; only 12 bytes are hashed under the lock.
pub fn record_crc(lsn: u64, payload_bytes: u32, payload_crc: u32) -> u32 {
    let mut covered = [0u8; RECORD_HEADER_CRC_COVERED_BYTES];
    covered[0..8].copy_from_slice(&lsn.to_le_bytes());
    covered[8..12].copy_from_slice(&payload_bytes.to_le_bytes());
    crc32c::crc32c_append(payload_crc, &covered)
}

/// Appends one encoded record (header then payload) to `buffer`.
pub fn encode_record(buffer: &mut Vec<u8>, lsn: u64, payload: &[u8], payload_crc: u32) {
    assert!(lsn >= 1, "LSN 0 is reserved for 'nothing'");
    let payload_bytes =
        u32::try_from(payload.len()).expect("payload length checked against record_bytes_max");
    debug_assert_eq!(payload_crc, crc32c::crc32c(payload));
    let crc = record_crc(lsn, payload_bytes, payload_crc);
    buffer.extend_from_slice(&lsn.to_le_bytes());
    buffer.extend_from_slice(&payload_bytes.to_le_bytes());
    buffer.extend_from_slice(&crc.to_le_bytes());
    buffer.extend_from_slice(payload);
}

/// A record decoded from a segment: where it is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedRecord {
    pub lsn: u64,
    /// Offset of the payload's first byte within the segment.
    pub payload_offset: u64,
    pub payload_bytes: u32,
}

impl DecodedRecord {
    /// Offset one past the record's last byte.
    pub fn end_offset(&self) -> u64 {
        self.payload_offset + u64::from(self.payload_bytes)
    }
}

/// Decodes and verifies the record starting at `offset`, which must carry
/// `lsn_expected`. Errors say why the bytes there are not that record.
pub fn decode_record(
    segment: &[u8],
    offset: u64,
    lsn_expected: u64,
    record_bytes_max: u32,
) -> Result<DecodedRecord, CorruptionKind> {
    let record = decode_record_any_lsn(segment, offset, record_bytes_max)?;
    if record.lsn != lsn_expected {
        return Err(CorruptionKind::LsnMismatch {
            lsn_expected,
            lsn_found: record.lsn,
        });
    }
    Ok(record)
}

/// Decodes and verifies the record at `offset` whatever its LSN.
pub fn decode_record_any_lsn(
    segment: &[u8],
    offset: u64,
    record_bytes_max: u32,
) -> Result<DecodedRecord, CorruptionKind> {
    let segment_bytes = segment.len() as u64;
    let bytes_left = segment_bytes.saturating_sub(offset);
    if bytes_left < u64::from(RECORD_HEADER_BYTES) {
        return Err(CorruptionKind::RecordHeaderShort { bytes_left });
    }
    // Both conversions are in range: offset < segment.len().
    let start = offset as usize;
    let lsn = read_u64(segment, start);
    let payload_bytes = read_u32(segment, start + 8);
    let crc_stored = read_u32(segment, start + 12);
    if payload_bytes > record_bytes_max {
        return Err(CorruptionKind::RecordTooLarge {
            payload_bytes,
            record_bytes_max,
        });
    }
    let payload_offset = offset + u64::from(RECORD_HEADER_BYTES);
    let payload_bytes_left = segment_bytes - payload_offset;
    if u64::from(payload_bytes) > payload_bytes_left {
        return Err(CorruptionKind::RecordPayloadShort {
            payload_bytes,
            payload_bytes_left,
        });
    }
    let payload = &segment[payload_offset as usize..][..payload_bytes as usize];
    let crc_computed = record_crc(lsn, payload_bytes, crc32c::crc32c(payload));
    if crc_stored != crc_computed {
        return Err(CorruptionKind::RecordCrc {
            crc_stored,
            crc_computed,
        });
    }
    Ok(DecodedRecord {
        lsn,
        payload_offset,
        payload_bytes,
    })
}

/// Searches `segment[offset_from..]` at every byte offset for a complete,
/// CRC-valid record with an LSN at or after `lsn_min`.
///
/// This is what tells a torn tail from corruption: a crash mid-write leaves
/// only a prefix of the final write followed by nothing, zeros or garbage,
/// while corruption in the middle of the log leaves intact records behind
/// the damaged one. Candidates are filtered by a plausible LSN window before
/// any CRC is computed, so zero fill and random garbage are scanned cheaply.
pub fn find_valid_record(
    segment: &[u8],
    offset_from: u64,
    lsn_min: u64,
    record_bytes_max: u32,
) -> Option<DecodedRecord> {
    let segment_bytes = segment.len() as u64;
    let header_bytes = u64::from(RECORD_HEADER_BYTES);
    let lsn_max = lsn_search_max(segment, lsn_min);
    let mut offset = offset_from;
    while offset + header_bytes <= segment_bytes {
        let lsn = read_u64(segment, offset as usize);
        if (lsn_min..=lsn_max).contains(&lsn) {
            if let Ok(record) = decode_record_any_lsn(segment, offset, record_bytes_max) {
                return Some(record);
            }
        }
        offset += 1;
    }
    None
}

/// The highest LSN a search after damage accepts, from `lsn_min`: no more records can
/// follow than there are record headers' worth of bytes in the segment.
fn lsn_search_max(segment: &[u8], lsn_min: u64) -> u64 {
    let lsn_window = segment.len() as u64 / u64::from(RECORD_HEADER_BYTES) + 1;
    lsn_min.saturating_add(lsn_window)
}

/// Walks the records of an in-memory group (as produced by `encode_record`)
/// and returns the byte length of its longest prefix of whole records that
/// fits in `bytes_budget`, with the number of records in it.
pub fn group_prefix_fitting(group: &[u8], bytes_budget: u64) -> (usize, u64) {
    let mut prefix_bytes = 0usize;
    let mut records = 0u64;
    while prefix_bytes < group.len() {
        // The group is our own memory, produced by `encode_record`; a short
        // header here is a bug, not bad disk data.
        let payload_bytes = read_u32(group, prefix_bytes + 8) as usize;
        let record_bytes = RECORD_HEADER_BYTES as usize + payload_bytes;
        assert!(
            prefix_bytes + record_bytes <= group.len(),
            "group buffer holds whole records"
        );
        if (prefix_bytes + record_bytes) as u64 > bytes_budget {
            break;
        }
        prefix_bytes += record_bytes;
        records += 1;
    }
    (prefix_bytes, records)
}

/// LSN of the record at the start of `group` (our own in-memory buffer).
pub fn group_first_lsn(group: &[u8]) -> u64 {
    read_u64(group, 0)
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

/// The LSN field of a record header at `offset`, if its 8 bytes are there.
pub(crate) fn lsn_at(segment: &[u8], offset: u64) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let bytes = segment.get(start..start.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut segment = encode_segment_header(records[0].0).to_vec();
        for (lsn, payload) in records {
            encode_record(&mut segment, *lsn, payload, crc32c::crc32c(payload));
        }
        segment
    }

    #[test]
    fn segment_header_round_trips_and_is_little_endian() {
        let header = encode_segment_header(0x0102_0304_0506_0708);
        assert_eq!(&header[0..8], b"SETLWAL\0");
        assert_eq!(&header[8..12], &[2, 0, 0, 0]);
        assert_eq!(&header[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(decode_segment_header(&header), Ok(0x0102_0304_0506_0708));
        assert_eq!(
            decode_segment_header_versioned(&header),
            Ok((0x0102_0304_0506_0708, FORMAT_VERSION))
        );
        // The first format is still read; no other version is.
        let old = encode_segment_header_of_version(0x0102_0304_0506_0708, FORMAT_VERSION_UNGROUPED);
        assert_eq!(&old[8..12], &[1, 0, 0, 0]);
        assert_eq!(
            decode_segment_header_versioned(&old),
            Ok((0x0102_0304_0506_0708, FORMAT_VERSION_UNGROUPED))
        );
        let unknown = encode_segment_header_of_version(0x0102_0304_0506_0708, 3);
        assert_eq!(
            decode_segment_header(&unknown),
            Err(CorruptionKind::SegmentVersion { version: 3 })
        );
    }

    #[test]
    fn group_marker_round_trips_and_rejects_every_single_bit_flip() {
        let marker = GroupMarker {
            first_lsn: 7,
            bytes: 300,
            records: 3,
        };
        let marker_bytes = encode_group_marker(&marker);
        assert_eq!(marker_bytes.len(), GROUP_MARKER_BYTES as usize);
        assert_eq!(&marker_bytes[0..8], &u64::MAX.to_le_bytes());
        assert_eq!(decode_group_marker(&marker_bytes, 0), Ok(marker));
        assert_eq!(marker.end_offset(100), 100 + 40 + 300);
        for bit in 0..marker_bytes.len() * 8 {
            let mut flipped = marker_bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_group_marker(&flipped, 0).is_err(), "bit {bit}");
        }
        // A record is not a marker, and a marker is not a record of any LSN a log uses.
        let record = encoded(&[(7, b"payload")]);
        assert!(decode_group_marker(&record, 32).is_err());
        assert!(matches!(
            decode_record(&marker_bytes, 0, 7, 1024),
            Err(CorruptionKind::LsnMismatch { .. })
        ));
    }

    #[test]
    fn find_valid_marker_skips_records_and_zeros_and_honours_the_lsn() {
        let mut segment = encoded(&[(1, b"one"), (2, b"two")]);
        segment.extend_from_slice(&[0u8; 100]);
        let at = segment.len() as u64;
        let marker = GroupMarker {
            first_lsn: 3,
            bytes: 16,
            records: 1,
        };
        segment.extend_from_slice(&encode_group_marker(&marker));
        assert_eq!(find_valid_marker(&segment, 32, 1), Some((at, marker)));
        assert_eq!(find_valid_marker(&segment, at, 3), Some((at, marker)));
        assert_eq!(find_valid_marker(&segment, at + 1, 1), None);
        assert_eq!(find_valid_marker(&segment, 32, 4), None);
    }

    #[test]
    fn segment_header_rejects_every_single_bit_flip() {
        let header = encode_segment_header(42);
        for bit in 0..header.len() * 8 {
            let mut flipped = header;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_segment_header(&flipped).is_err(),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn record_layout_matches_documentation() {
        let segment = encoded(&[(7, b"abc")]);
        let record = &segment[SEGMENT_HEADER_BYTES as usize..];
        assert_eq!(&record[0..8], &7u64.to_le_bytes());
        assert_eq!(&record[8..12], &3u32.to_le_bytes());
        // The CRC is a plain CRC32C over the payload then header bytes 0..12.
        let mut covered = b"abc".to_vec();
        covered.extend_from_slice(&record[0..12]);
        assert_eq!(&record[12..16], &crc32c::crc32c(&covered).to_le_bytes());
        assert_eq!(&record[16..], b"abc");
    }

    #[test]
    fn decode_record_checks_lsn_length_and_crc() {
        let segment = encoded(&[(5, b"hello"), (6, b"")]);
        let first = decode_record(&segment, 32, 5, 64).expect("valid record");
        assert_eq!(first.payload_bytes, 5);
        let second = decode_record(&segment, first.end_offset(), 6, 64).expect("empty payload");
        assert_eq!(second.end_offset(), segment.len() as u64);
        assert!(matches!(
            decode_record(&segment, 32, 6, 64),
            Err(CorruptionKind::LsnMismatch { .. })
        ));
        assert!(matches!(
            decode_record(&segment, 32, 5, 4),
            Err(CorruptionKind::RecordTooLarge { .. })
        ));
        assert!(matches!(
            decode_record(&segment[..40], 32, 5, 64),
            Err(CorruptionKind::RecordHeaderShort { bytes_left: 8 })
        ));
        assert!(matches!(
            decode_record(&segment[..50], 32, 5, 64),
            Err(CorruptionKind::RecordPayloadShort { .. })
        ));
    }

    #[test]
    fn find_valid_record_skips_zeros_and_finds_a_later_record() {
        let mut segment = encoded(&[(1, b"one")]);
        segment.extend_from_slice(&[0u8; 100]);
        assert_eq!(find_valid_record(&segment, 33, 2, 64), None);
        let at = segment.len() as u64;
        encode_record(&mut segment, 3, b"three", crc32c::crc32c(b"three"));
        let found = find_valid_record(&segment, 33, 2, 64).expect("record 3 found");
        assert_eq!((found.lsn, found.payload_offset), (3, at + 16));
    }

    #[test]
    fn segment_names_sort_by_lsn_and_parse_back() {
        assert_eq!(segment_file_name(12), "wal-00000000000000000012.log");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_segment_file_name("wal-12.log"), None);
        assert_eq!(
            parse_segment_file_name("wal-0000000000000000001x.log"),
            None
        );
        assert_eq!(
            parse_segment_file_name("wal-00000000000000000012.log.tmp"),
            None
        );
    }

    #[test]
    fn group_prefix_fitting_never_splits_a_record() {
        let mut group = Vec::new();
        for lsn in 1..=3 {
            encode_record(&mut group, lsn, &[9u8; 10], crc32c::crc32c(&[9u8; 10]));
        }
        assert_eq!(group_prefix_fitting(&group, 1000), (78, 3));
        assert_eq!(group_prefix_fitting(&group, 77), (52, 2));
        assert_eq!(group_prefix_fitting(&group, 25), (0, 0));
        assert_eq!(group_first_lsn(&group[26..]), 2);
    }
}
