//! Checks shared by the `wal_record` and `wal_recovery` fuzz targets (`fuzz/`, nightly)
//! and this crate's proptests (`make test`, stable): one property, two drivers. Not part
//! of the API.
//!
//! Random bytes almost never carry a valid CRC32C or a segment magic, so the first input
//! byte is a set of [`Mode`] bits that make parts of the image well formed before the
//! check: a well-formed segment header, re-signed records with dense LSNs, segments
//! chained LSN to LSN. The decoders behind the checksums are reached that way.
//!
//! [`MemStorage`] keeps segment files in memory, so recovery runs without touching disk.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::CorruptionKind;
use crate::format::{
    decode_group_marker, decode_record, decode_record_any_lsn, decode_segment_header,
    encode_group_marker, encode_record, encode_segment_header, find_valid_record, read_u64,
    segment_file_name, GroupMarker, FORMAT_VERSION, FORMAT_VERSION_UNGROUPED, GROUP_MARKER_BYTES,
    GROUP_MARKER_LSN, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
    SEGMENT_TEMP_SUFFIX,
};
use crate::storage::{SegmentFile, Storage};
use crate::{Wal, WalConfig, WalError};

/// What the first input byte asks to fix before a check.
pub struct Mode;

impl Mode {
    /// Magic, version and reserved bytes of each segment header made valid.
    pub const HEADER_FIELDS: u8 = 1 << 0;
    /// Each segment's first LSN set to follow the previous segment's last record.
    pub const CHAIN_SEGMENTS: u8 = 1 << 1;
    /// Each segment header's CRC recomputed (after the fixes above).
    pub const HEADER_CRC: u8 = 1 << 2;
    /// Record LSNs rewritten to count up from the segment's first LSN.
    pub const DENSE_LSNS: u8 = 1 << 3;
    /// Record CRCs recomputed (for every record whose payload fits the file).
    pub const RECORD_CRC: u8 = 1 << 4;
    /// Segment files named after the LSN in their header (else after their position).
    pub const NAME_FROM_HEADER: u8 = 1 << 5;
    /// A half-created `.log.tmp` segment and a foreign file are added to the directory.
    pub const EXTRA_FILES: u8 = 1 << 6;
    /// Segments of the current format: each record in a group of its own, after a
    /// 40-byte marker (re-signed with the record CRCs). Without it, headers are given the
    /// first format (records back to back).
    pub const GROUPED: u8 = 1 << 7;
}

/// Limits of the WAL under test: small, so short inputs span records and segments.
pub fn config() -> WalConfig {
    WalConfig {
        record_bytes_max: 1024,
        segment_bytes: 4096,
        pending_bytes_max: 8192,
        first_lsn: 1,
    }
}

const HEADER_BYTES: usize = SEGMENT_HEADER_BYTES as usize;
const RECORD_HEADER: usize = RECORD_HEADER_BYTES as usize;
const FIRST_LSN_OFFSET: usize = 16;
const MARKER_BYTES: usize = GROUP_MARKER_BYTES as usize;

/// Apply the fixes of `mode` to one segment image; returns the LSN after its last whole
/// record (what the next segment starts with when chained). `first_lsn`: the LSN
/// [`Mode::CHAIN_SEGMENTS`] gives it.
pub fn fix_segment(mode: u8, segment: &mut [u8], first_lsn: u64, record_bytes_max: u32) -> u64 {
    if segment.len() < HEADER_BYTES {
        return first_lsn;
    }
    let grouped = mode & Mode::GROUPED != 0;
    if mode & Mode::HEADER_FIELDS != 0 {
        let version = if grouped {
            FORMAT_VERSION
        } else {
            FORMAT_VERSION_UNGROUPED
        };
        segment[0..8].copy_from_slice(&SEGMENT_MAGIC);
        segment[8..12].copy_from_slice(&version.to_le_bytes());
        segment[12..16].fill(0);
        segment[24..28].fill(0);
    }
    if mode & Mode::CHAIN_SEGMENTS != 0 {
        segment[FIRST_LSN_OFFSET..][..8].copy_from_slice(&first_lsn.to_le_bytes());
    }
    if mode & Mode::HEADER_CRC != 0 {
        let crc = crc32c::crc32c(&segment[..28]);
        segment[28..32].copy_from_slice(&crc.to_le_bytes());
    }
    let mut lsn = read_u64(segment, FIRST_LSN_OFFSET);
    let mut offset = HEADER_BYTES;
    let marker_bytes = if grouped { MARKER_BYTES } else { 0 };
    while let Some(header) =
        segment.get(offset + marker_bytes..offset + marker_bytes + RECORD_HEADER)
    {
        let payload_bytes = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let end = offset + marker_bytes + RECORD_HEADER + payload_bytes as usize;
        if payload_bytes > record_bytes_max || end > segment.len() {
            break;
        }
        if grouped {
            if mode & Mode::RECORD_CRC != 0 && (1..GROUP_MARKER_LSN).contains(&lsn) {
                let marker = GroupMarker {
                    first_lsn: lsn,
                    bytes: (RECORD_HEADER + payload_bytes as usize) as u64,
                    records: 1,
                };
                segment[offset..][..MARKER_BYTES].copy_from_slice(&encode_group_marker(&marker));
            }
            offset += MARKER_BYTES;
        }
        if mode & Mode::DENSE_LSNS != 0 {
            segment[offset..][..8].copy_from_slice(&lsn.to_le_bytes());
        }
        if mode & Mode::RECORD_CRC != 0 {
            let record_lsn = read_u64(segment, offset);
            let payload_crc = crc32c::crc32c(&segment[offset + RECORD_HEADER..end]);
            let crc = crate::format::record_crc(record_lsn, payload_bytes, payload_crc);
            segment[offset + 12..][..4].copy_from_slice(&crc.to_le_bytes());
        }
        lsn = lsn.wrapping_add(1);
        offset = end;
    }
    lsn
}

/// `data` = mode byte, one segment image. Checks the segment header and record decoders
/// on it and returns the payloads of the records that decode, in order (what replay
/// would hand the engine).
pub fn check_segment(data: &[u8]) -> Vec<Vec<u8>> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    let record_bytes_max = config().record_bytes_max;
    let mut segment = rest.to_vec();
    fix_segment(mode, &mut segment, 1, record_bytes_max);
    let lsn_first = match crate::format::decode_segment_header_versioned(&segment) {
        Ok((first_lsn, version)) => {
            let expected = crate::format::encode_segment_header_of_version(first_lsn, version);
            assert_eq!(&expected[..], &segment[..HEADER_BYTES]);
            assert_eq!(decode_segment_header(&segment), Ok(first_lsn));
            first_lsn
        }
        Err(kind) => {
            assert!(is_segment_header_damage(&kind), "{kind}");
            // The records behind a bad header still decode on their own.
            1
        }
    };
    let mut payloads = Vec::new();
    let mut offset = HEADER_BYTES.min(segment.len()) as u64;
    let mut lsn = lsn_first;
    loop {
        match decode_record_any_lsn(&segment, offset, record_bytes_max) {
            Ok(record) if record.lsn == GROUP_MARKER_LSN => {
                // A group marker: well formed or refused, never a payload to replay.
                if let Ok(marker) = decode_group_marker(&segment, offset) {
                    assert_eq!(
                        &encode_group_marker(&marker)[..],
                        &segment[offset as usize..record.end_offset() as usize]
                    );
                }
                offset = record.end_offset();
            }
            Ok(record) => {
                check_decoded_record(&segment, offset, record, record_bytes_max);
                let payload =
                    &segment[record.payload_offset as usize..record.end_offset() as usize];
                payloads.push(payload.to_vec());
                offset = record.end_offset();
                lsn = record.lsn.wrapping_add(1);
            }
            Err(kind) => {
                assert!(is_record_damage(&kind), "{kind}");
                check_search_after(&segment, offset, lsn, record_bytes_max);
                return payloads;
            }
        }
    }
}

/// A decoded record lies within the bytes, re-encodes to them, and names its LSN.
fn check_decoded_record(
    segment: &[u8],
    offset: u64,
    record: crate::format::DecodedRecord,
    record_bytes_max: u32,
) {
    assert_eq!(
        record.payload_offset,
        offset + u64::from(RECORD_HEADER_BYTES)
    );
    assert!(
        record.end_offset() <= segment.len() as u64,
        "decode read past the bytes"
    );
    assert!(record.payload_bytes <= record_bytes_max);
    let bytes = &segment[offset as usize..record.end_offset() as usize];
    let payload = &bytes[RECORD_HEADER..];
    // LSN 0 is never written (encode_record refuses it) but decodes like any other.
    if record.lsn >= 1 {
        let mut encoded = Vec::new();
        encode_record(&mut encoded, record.lsn, payload, crc32c::crc32c(payload));
        assert_eq!(encoded, bytes, "a decoded record re-encodes to its bytes");
    }
    let expected = decode_record(segment, offset, record.lsn, record_bytes_max);
    assert_eq!(expected, Ok(record));
    let other = record.lsn.wrapping_add(1);
    assert_eq!(
        decode_record(segment, offset, other, record_bytes_max),
        Err(CorruptionKind::LsnMismatch {
            lsn_expected: other,
            lsn_found: record.lsn
        })
    );
}

/// What the torn-tail search finds after damage is a whole, CRC-valid record in the LSN
/// window it searches.
fn check_search_after(segment: &[u8], offset: u64, lsn_min: u64, record_bytes_max: u32) {
    let Some(found) = find_valid_record(segment, offset + 1, lsn_min, record_bytes_max) else {
        return;
    };
    let at = found.payload_offset - u64::from(RECORD_HEADER_BYTES);
    assert!(at > offset);
    assert!(found.lsn >= lsn_min);
    assert!(found.lsn - lsn_min <= segment.len() as u64 / u64::from(RECORD_HEADER_BYTES) + 1);
    assert_eq!(
        decode_record_any_lsn(segment, at, record_bytes_max),
        Ok(found)
    );
}

fn is_segment_header_damage(kind: &CorruptionKind) -> bool {
    matches!(
        kind,
        CorruptionKind::SegmentHeaderShort { .. }
            | CorruptionKind::SegmentHeaderCrc { .. }
            | CorruptionKind::SegmentMagic
            | CorruptionKind::SegmentVersion { .. }
            | CorruptionKind::SegmentReserved
            | CorruptionKind::SegmentFirstLsnZero
    )
}

fn is_record_damage(kind: &CorruptionKind) -> bool {
    matches!(
        kind,
        CorruptionKind::RecordHeaderShort { .. }
            | CorruptionKind::RecordTooLarge { .. }
            | CorruptionKind::RecordPayloadShort { .. }
            | CorruptionKind::RecordCrc { .. }
    )
}

/// The WAL directory the recovery check uses (in [`MemStorage`], never on disk).
pub fn wal_dir() -> PathBuf {
    PathBuf::from("wal")
}

/// Segment files (name, bytes) from `data` = mode byte, then segments, each a u16 LE
/// length and that many bytes (the last one cut short where the input ends).
pub fn segment_images(data: &[u8]) -> (u8, Vec<(String, Vec<u8>)>) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let record_bytes_max = config().record_bytes_max;
    let mut images = Vec::new();
    let mut lsn_next = 1u64;
    while let Some((length, after)) = rest.split_first_chunk::<2>() {
        let length = usize::from(u16::from_le_bytes(*length)).min(after.len());
        let (bytes, after) = after.split_at(length);
        rest = after;
        let mut segment = bytes.to_vec();
        lsn_next = fix_segment(mode, &mut segment, lsn_next, record_bytes_max);
        let lsn_in_name = match segment.get(FIRST_LSN_OFFSET..FIRST_LSN_OFFSET + 8) {
            Some(lsn) if mode & Mode::NAME_FROM_HEADER != 0 => {
                u64::from_le_bytes(lsn.try_into().expect("8 bytes"))
            }
            _ => images.len() as u64 + 1,
        };
        images.push((segment_file_name(lsn_in_name), segment));
    }
    (mode, images)
}

/// `data` as [`segment_images`] reads it: WAL recovery on those files returns a WAL or an
/// error, never panics; refusing changes no segment; a recovered WAL replays every record
/// it counted, densely, cut only at a torn tail of the last segment, appends at its next
/// LSN and recovers again to the same records plus the new one.
pub fn check_recovery(data: &[u8]) {
    let (mode, images) = segment_images(data);
    let storage = MemStorage::default();
    let dir = wal_dir();
    for (name, bytes) in &images {
        storage.insert(dir.join(name), bytes.clone());
    }
    if mode & Mode::EXTRA_FILES != 0 {
        let temp = segment_file_name(1).replace(".log", SEGMENT_TEMP_SUFFIX);
        storage.insert(dir.join(temp), encode_segment_header(1).to_vec());
        storage.insert(dir.join("notes.txt"), b"not a segment".to_vec());
    }
    let before = storage.files();
    let opened = Wal::open_with_storage(&dir, config(), Arc::new(storage.clone()));
    let wal = match opened {
        Ok(wal) => wal,
        Err(error) => {
            assert!(
                matches!(error, WalError::Corrupt { .. } | WalError::LsnExhausted),
                "recovery failed with {error}"
            );
            assert_eq!(
                segments(&storage.files()),
                segments(&before),
                "refused, but changed"
            );
            return;
        }
    };
    check_recovered(&wal, &storage, &before);
    let lsn_next = wal.lsn_next();
    let payload = b"appended after recovery";
    let appended = match wal.append(payload) {
        Ok(lsn) => lsn,
        Err(error) => {
            // Only at the very end of the LSN space.
            assert!(matches!(error, WalError::LsnExhausted), "{error}");
            return;
        }
    };
    assert_eq!(appended, lsn_next);
    wal.wait_durable(appended).expect("durable in memory");
    wal.close().expect("close");
    let reopened = Wal::open_with_storage(&dir, config(), Arc::new(storage.clone()))
        .expect("a WAL this process wrote recovers");
    let report = reopened.recovery_report();
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.lsn_next, appended + 1);
    let replayed: Vec<_> = reopened
        .replay_after(appended - 1)
        .expect("replay")
        .collect::<Result<_, _>>()
        .expect("replay the appended record");
    assert_eq!(replayed.len(), 1);
    assert_eq!(
        (replayed[0].lsn, &replayed[0].payload[..]),
        (appended, &payload[..])
    );
}

/// What recovery kept is what was there, less a torn tail of the last segment, and it
/// replays densely.
fn check_recovered(wal: &Wal, storage: &MemStorage, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let report = wal.recovery_report().clone();
    let after = storage.files();
    assert!(
        after
            .keys()
            .all(|path| !path.to_string_lossy().ends_with(SEGMENT_TEMP_SUFFIX)),
        "half-created segments are removed"
    );
    for (path, bytes) in before.iter().filter(|(path, _)| !is_segment(path)) {
        if !path.to_string_lossy().ends_with(SEGMENT_TEMP_SUFFIX) {
            assert_eq!(after.get(path), Some(bytes), "foreign files are left alone");
        }
    }
    let (segments_before, segments_after) = (segments(before), segments(&after));
    if segments_before.is_empty() {
        assert_eq!(segments_after.len(), 1, "a new WAL has one segment");
    } else {
        let paths_before: Vec<_> = segments_before.keys().collect();
        let mut paths_after: Vec<_> = segments_after.keys().collect();
        let last = paths_before[paths_before.len() - 1];
        // A last segment of the first format is never appended to: a new segment starts
        // at the next LSN (replacing it under its name when it holds no record).
        let restarted = crate::format::decode_segment_header_versioned(segments_before[last])
            .is_ok_and(|(_, version)| version == FORMAT_VERSION_UNGROUPED);
        let fresh_path = wal_dir().join(segment_file_name(report.lsn_next));
        if restarted && fresh_path != **last {
            assert_eq!(
                paths_after.pop(),
                Some(&&fresh_path),
                "a new segment at the next LSN"
            );
        }
        assert_eq!(paths_before, paths_after, "recovery keeps every segment");
        for (path, bytes) in &segments_before {
            let kept = &segments_after[*path];
            if restarted && **path == fresh_path {
                assert_eq!(&kept[..], &encode_segment_header(report.lsn_next)[..]);
                continue;
            }
            match &report.torn_tail {
                Some(torn) if path.as_path() == last.as_path() => {
                    assert_eq!(torn.path.as_path(), path.as_path());
                    assert_eq!(kept.len() as u64, torn.offset);
                    assert_eq!(&bytes[..kept.len()], &kept[..]);
                    assert_eq!(torn.bytes_dropped, (bytes.len() - kept.len()) as u64);
                }
                _ => assert_eq!(kept, bytes, "{} changed", path.display()),
            }
        }
    }
    assert_eq!(report.lsn_next, wal.lsn_next());
    assert_eq!(wal.durable_lsn(), report.lsn_next - 1);
    assert_eq!(
        report.lsn_next - report.lsn_first_retained,
        report.records_verified,
        "records are dense across segments"
    );
    let replayed: Vec<_> = match wal.replay_after(report.lsn_first_retained - 1) {
        Ok(replay) => replay
            .collect::<Result<_, _>>()
            .expect("replay what recovery verified"),
        Err(error) => panic!("replay after recovery: {error}"),
    };
    assert_eq!(replayed.len() as u64, report.records_verified);
    for (record, lsn) in replayed.iter().zip(report.lsn_first_retained..) {
        assert_eq!(record.lsn, lsn);
    }
}

fn is_segment(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    name.is_some_and(|name| crate::format::parse_segment_file_name(&name).is_some())
}

fn segments(files: &BTreeMap<PathBuf, Vec<u8>>) -> BTreeMap<&PathBuf, &Vec<u8>> {
    files.iter().filter(|(path, _)| is_segment(path)).collect()
}

/// Files in memory: a [`Storage`] for recovery from bytes. One flat namespace of paths;
/// a directory lists the files whose parent it is. Syncs succeed and do nothing. An open
/// file keeps writing to its content after a rename, as a file descriptor does.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    files: Arc<Mutex<BTreeMap<PathBuf, Content>>>,
}

type Content = Arc<Mutex<Vec<u8>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemStorage {
    pub fn insert(&self, path: PathBuf, bytes: Vec<u8>) {
        lock(&self.files).insert(path, Arc::new(Mutex::new(bytes)));
    }

    /// A copy of every file.
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        lock(&self.files)
            .iter()
            .map(|(path, content)| (path.clone(), lock(content).clone()))
            .collect()
    }

    fn content(&self, path: &Path) -> io::Result<Content> {
        lock(&self.files)
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

struct MemFile {
    content: Content,
}

impl SegmentFile for MemFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        lock(&self.content).extend_from_slice(bytes);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Storage for MemStorage {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let files = lock(&self.files);
        let names = files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned));
        Ok(names.collect())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let content = self.content(path)?;
        let bytes = lock(&content).clone();
        Ok(bytes)
    }

    fn create_file(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        self.insert(path.to_path_buf(), Vec::new());
        self.open_append(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let content = self.content(path)?;
        Ok(Box::new(MemFile { content }))
    }

    fn truncate_file(&self, path: &Path, file_bytes: u64) -> io::Result<()> {
        let content = self.content(path)?;
        lock(&content).resize(file_bytes as usize, 0);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = lock(&self.files);
        let content = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_path_buf(), content);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        lock(&self.files)
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// The input [`check_recovery`] reads for a valid WAL: one segment per entry of
/// `segments`, each holding those payloads, LSNs dense from 1, named after their header,
/// each record in a group of its own (after its marker), as the writer leaves them.
pub fn valid_image(segments: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut data = vec![Mode::NAME_FROM_HEADER];
    let mut lsn = 1;
    for payloads in segments {
        let mut segment = encode_segment_header(lsn).to_vec();
        for payload in payloads {
            let marker = GroupMarker {
                first_lsn: lsn,
                bytes: (RECORD_HEADER + payload.len()) as u64,
                records: 1,
            };
            segment.extend_from_slice(&encode_group_marker(&marker));
            encode_record(&mut segment, lsn, payload, crc32c::crc32c(payload));
            lsn += 1;
        }
        let length = u16::try_from(segment.len()).expect("test segments are small");
        data.extend_from_slice(&length.to_le_bytes());
        data.extend_from_slice(&segment);
    }
    data
}
