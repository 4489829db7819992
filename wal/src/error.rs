//! `WalError`: what failed and where (file, byte offset, LSN).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong in the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A configuration value is outside the limits the format supports.
    #[error("invalid WAL config: {field} = {value}: {reason}")]
    ConfigInvalid {
        field: crate::config::WalConfigField,
        value: u64,
        reason: &'static str,
    },

    /// An appended record is larger than `record_bytes_max`.
    #[error("record of {record_bytes} bytes exceeds record_bytes_max = {record_bytes_max}")]
    RecordTooLarge {
        record_bytes: u64,
        record_bytes_max: u32,
    },

    /// An operating-system call failed.
    #[error("{operation} {path:?}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk are not what the WAL wrote, at a place where a crash
    /// cannot explain them. Durable records may be lost: the WAL refuses to
    /// guess and stops.
    #[error("corrupt WAL segment {path:?} at byte offset {offset}{}: {kind}", lsn_text(*lsn))]
    Corrupt {
        path: PathBuf,
        offset: u64,
        lsn: Option<u64>,
        kind: CorruptionKind,
    },

    /// The caller needs records after `after_lsn`, but the oldest record the
    /// WAL still holds is `lsn_first_retained` > `after_lsn + 1`.
    #[error("records {} ..= {} are missing: the oldest retained record is {lsn_first_retained}", after_lsn + 1, lsn_first_retained - 1)]
    RecordsMissing {
        after_lsn: u64,
        lsn_first_retained: u64,
    },

    /// The caller asked for records after an LSN the WAL has never made
    /// durable: its checkpoint is ahead of the log.
    #[error("replay after LSN {after_lsn} requested, but the last durable LSN is {durable_lsn}")]
    ReplayPastEnd { after_lsn: u64, durable_lsn: u64 },

    /// `wait_durable` was asked about an LSN that was never appended.
    #[error("LSN {lsn} was never appended (next LSN is {lsn_next})")]
    LsnNotAppended { lsn: u64, lsn_next: u64 },

    /// The LSN space is exhausted (u64::MAX): the log cannot grow further.
    #[error("LSN space exhausted")]
    LsnExhausted,

    /// A write or sync failed earlier. Nothing after `durable_lsn` can be
    /// trusted to be on disk (after a failed fsync the page cache may hold
    /// data the disk does not), so the WAL refuses further work. Reopen it
    /// (ideally after restarting the process) to recover what is durable.
    #[error("WAL poisoned at durable LSN {durable_lsn}: {cause}")]
    Poisoned {
        durable_lsn: u64,
        #[source]
        cause: Arc<WalError>,
    },

    /// The WAL was closed; its writer thread has stopped.
    #[error("WAL is closed")]
    Closed,

    /// A durability callback ([`crate::Wal::on_durable`]) panicked on the writer thread.
    /// What it was told may not have been acted on, so the writer stops as after a
    /// failed sync: the durable LSN stays, later appends and waits get this error.
    #[error("a durability callback panicked on the WAL writer thread")]
    CallbackPanicked,
}

impl WalError {
    /// The error for a failed OS call `operation` on `path`, for `map_err`.
    pub(crate) fn io(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
        let path = path.to_path_buf();
        move |source| WalError::Io {
            operation,
            path,
            source,
        }
    }
}

fn lsn_text(lsn: Option<u64>) -> String {
    match lsn {
        Some(lsn) => format!(" (LSN {lsn})"),
        None => String::new(),
    }
}

/// What exactly is wrong with the bytes at a corrupt offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionKind {
    #[error("segment header short: file has only {file_bytes} bytes")]
    SegmentHeaderShort { file_bytes: u64 },
    #[error(
        "segment header CRC mismatch: stored {crc_stored:#010x}, computed {crc_computed:#010x}"
    )]
    SegmentHeaderCrc { crc_stored: u32, crc_computed: u32 },
    #[error("segment magic is not SETLWAL")]
    SegmentMagic,
    #[error("unsupported segment format version {version}")]
    SegmentVersion { version: u32 },
    #[error("segment header reserved bytes are not zero")]
    SegmentReserved,
    #[error("segment header first LSN is 0")]
    SegmentFirstLsnZero,
    #[error("segment file name says first LSN {lsn_in_name}, header says {lsn_in_header}")]
    SegmentNameMismatch {
        lsn_in_name: u64,
        lsn_in_header: u64,
    },
    #[error("LSN gap between segments: expected first LSN {lsn_expected}, found {lsn_found}")]
    SegmentLsnGap { lsn_expected: u64, lsn_found: u64 },
    #[error("record header short: only {bytes_left} bytes left in the file")]
    RecordHeaderShort { bytes_left: u64 },
    #[error(
        "record payload of {payload_bytes} bytes exceeds record_bytes_max = {record_bytes_max}"
    )]
    RecordTooLarge {
        payload_bytes: u32,
        record_bytes_max: u32,
    },
    #[error(
        "record payload of {payload_bytes} bytes, but only {payload_bytes_left} left in the file"
    )]
    RecordPayloadShort {
        payload_bytes: u32,
        payload_bytes_left: u64,
    },
    #[error("record CRC mismatch: stored {crc_stored:#010x}, computed {crc_computed:#010x}")]
    RecordCrc { crc_stored: u32, crc_computed: u32 },
    #[error("record LSN {lsn_found} where LSN {lsn_expected} was expected")]
    LsnMismatch { lsn_expected: u64, lsn_found: u64 },
    /// A damaged record followed by intact records: not a torn write.
    #[error("damaged record ({damage}) followed by a valid record with LSN {lsn_next_valid} at byte offset {offset_next_valid}")]
    DamagedBeforeValid {
        damage: Box<CorruptionKind>,
        lsn_next_valid: u64,
        offset_next_valid: u64,
    },
    /// A sealed (non-last) segment must end exactly after its last record.
    #[error("damaged record in a sealed segment: {damage}")]
    DamagedInSealedSegment { damage: Box<CorruptionKind> },
    #[error("segment file shrank or changed while being read")]
    SegmentChanged,
    /// A record header with the marker's LSN field whose payload is not a group marker.
    #[error("invalid group marker (LSN field {lsn_field:#x})")]
    GroupMarkerInvalid { lsn_field: u64 },
    /// Where a segment of format 2 must have a group marker, something else is.
    #[error("no group marker where a group must start: {found}")]
    GroupMarkerMissing { found: Box<CorruptionKind> },
    /// A group marker that does not continue the LSN sequence.
    #[error("group marker for LSN {lsn_found} where LSN {lsn_expected} was expected")]
    GroupLsnMismatch { lsn_expected: u64, lsn_found: u64 },
    /// The records after a valid marker do not fill exactly what it announced.
    #[error("group announced {records} records in {bytes} bytes; its records do not end there")]
    GroupLengthMismatch { records: u32, bytes: u64 },
}
