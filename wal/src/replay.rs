//! Replay: stream the records after a checkpoint's LSN, verifying each one.

use std::sync::Arc;

use crate::error::{CorruptionKind, WalError};
use crate::format::{
    decode_group_marker, decode_record, decode_segment_header_versioned, lsn_at,
    FORMAT_VERSION_UNGROUPED, GROUP_MARKER_BYTES, GROUP_MARKER_LSN, SEGMENT_HEADER_BYTES,
};
use crate::segment::SegmentMeta;
use crate::storage::Storage;

/// One record handed back by replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

/// Iterator over the records with LSN in `after_lsn + 1 ..= lsn_last`, in
/// LSN order, from [`crate::Wal::replay_after`].
///
/// Memory: one segment file is read at a time (at most `segment_bytes`),
/// plus a copy of each payload handed out. Every record is verified again as
/// it is read. After the first `Err` the iterator ends.
pub struct Replay {
    storage: Arc<dyn Storage>,
    segments: std::vec::IntoIter<SegmentMeta>,
    current: Option<SegmentCursor>,
    lsn_next: u64,
    lsn_last: u64,
    record_bytes_max: u32,
    /// LSN the next segment must start with (None before the first one).
    lsn_file_next: Option<u64>,
    failed: bool,
}

struct SegmentCursor {
    meta: SegmentMeta,
    bytes: Vec<u8>,
    offset: u64,
    lsn: u64,
    /// Records come in groups, each after a marker (format 2).
    grouped: bool,
}

impl Replay {
    /// `segments` must start with the segment holding `after_lsn + 1`.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        segments: Vec<SegmentMeta>,
        after_lsn: u64,
        lsn_last: u64,
        record_bytes_max: u32,
    ) -> Replay {
        debug_assert!(segments
            .first()
            .is_none_or(|first| first.first_lsn <= after_lsn + 1));
        Replay {
            storage,
            segments: segments.into_iter(),
            current: None,
            lsn_next: after_lsn + 1,
            lsn_last,
            record_bytes_max,
            lsn_file_next: None,
            failed: false,
        }
    }

    /// LSN of the last record this replay will return.
    pub fn lsn_last(&self) -> u64 {
        self.lsn_last
    }

    fn next_record(&mut self) -> Result<Option<Record>, WalError> {
        while self.lsn_next <= self.lsn_last {
            if self.current.is_none() {
                self.current = Some(self.open_next_segment()?);
            }
            let Some(cursor) = self.current.as_mut() else {
                unreachable!("cursor set above")
            };
            if cursor.offset >= cursor.bytes.len() as u64 {
                self.lsn_file_next = Some(cursor.lsn);
                self.current = None;
                continue;
            }
            let corrupt = |kind| WalError::Corrupt {
                path: cursor.meta.path.clone(),
                offset: cursor.offset,
                lsn: Some(cursor.lsn),
                kind,
            };
            if cursor.grouped && lsn_at(&cursor.bytes, cursor.offset) == Some(GROUP_MARKER_LSN) {
                let marker = decode_group_marker(&cursor.bytes, cursor.offset).map_err(corrupt)?;
                if marker.first_lsn != cursor.lsn {
                    return Err(corrupt(CorruptionKind::GroupLsnMismatch {
                        lsn_expected: cursor.lsn,
                        lsn_found: marker.first_lsn,
                    }));
                }
                cursor.offset += u64::from(GROUP_MARKER_BYTES);
                continue;
            }
            let record = decode_record(
                &cursor.bytes,
                cursor.offset,
                cursor.lsn,
                self.record_bytes_max,
            )
            .map_err(corrupt)?;
            cursor.offset = record.end_offset();
            cursor.lsn += 1;
            if record.lsn < self.lsn_next {
                continue;
            }
            let payload =
                cursor.bytes[record.payload_offset as usize..record.end_offset() as usize].to_vec();
            self.lsn_next += 1;
            return Ok(Some(Record {
                lsn: record.lsn,
                payload,
            }));
        }
        Ok(None)
    }

    fn open_next_segment(&mut self) -> Result<SegmentCursor, WalError> {
        let Some(meta) = self.segments.next() else {
            // The records up to lsn_last were verified at open; their file
            // must have been removed or cut since.
            return Err(WalError::Corrupt {
                path: std::path::PathBuf::new(),
                offset: 0,
                lsn: Some(self.lsn_next),
                kind: CorruptionKind::SegmentChanged,
            });
        };
        let bytes = self
            .storage
            .read_file(&meta.path)
            .map_err(WalError::io("read segment", &meta.path))?;
        let corrupt = |kind| WalError::Corrupt {
            path: meta.path.clone(),
            offset: 0,
            lsn: Some(meta.first_lsn),
            kind,
        };
        let (first_lsn, version) = decode_segment_header_versioned(&bytes).map_err(corrupt)?;
        if first_lsn != meta.first_lsn {
            return Err(corrupt(CorruptionKind::SegmentNameMismatch {
                lsn_in_name: meta.first_lsn,
                lsn_in_header: first_lsn,
            }));
        }
        // A segment continues exactly where the previous one ended; the first
        // one must hold the first record asked for.
        let lsn_expected = self.lsn_file_next.unwrap_or(self.lsn_next);
        let gap = match self.lsn_file_next {
            Some(lsn_file_next) => first_lsn != lsn_file_next,
            None => first_lsn > self.lsn_next,
        };
        if gap {
            return Err(corrupt(CorruptionKind::SegmentLsnGap {
                lsn_expected,
                lsn_found: first_lsn,
            }));
        }
        Ok(SegmentCursor {
            meta,
            bytes,
            offset: u64::from(SEGMENT_HEADER_BYTES),
            lsn: first_lsn,
            grouped: version != FORMAT_VERSION_UNGROUPED,
        })
    }
}

impl Iterator for Replay {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(record) => record.map(Ok),
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}
