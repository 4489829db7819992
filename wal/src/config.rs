//! `WalConfig`: every limit of the WAL, named and checked at open.

use crate::error::WalError;
use crate::format::{GROUP_MARKER_BYTES, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

/// Hard upper bound for `record_bytes_max`: recovery reads a whole segment
/// into memory, so records (and segments) must stay modest.
pub const RECORD_BYTES_LIMIT: u32 = 256 * 1024 * 1024;
/// Hard upper bound for `segment_bytes`.
pub const SEGMENT_BYTES_LIMIT: u64 = 4 * 1024 * 1024 * 1024;
/// Hard upper bound for `pending_bytes_max`.
pub const PENDING_BYTES_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

/// A field of [`WalConfig`], as named in [`WalError::ConfigInvalid`]: typed, so that a
/// caller with its own names for these settings maps them without comparing strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalConfigField {
    RecordBytesMax,
    SegmentBytes,
    PendingBytesMax,
    FirstLsn,
}

impl WalConfigField {
    pub fn name(self) -> &'static str {
        match self {
            WalConfigField::RecordBytesMax => "record_bytes_max",
            WalConfigField::SegmentBytes => "segment_bytes",
            WalConfigField::PendingBytesMax => "pending_bytes_max",
            WalConfigField::FirstLsn => "first_lsn",
        }
    }
}

impl std::fmt::Display for WalConfigField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Limits and starting point of a WAL. Checked by [`WalConfig::validate`]
/// when the WAL is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Largest payload of one record, in bytes. Larger appends fail with
    /// [`WalError::RecordTooLarge`]; larger lengths on disk are corruption.
    pub record_bytes_max: u32,
    /// Largest size of a segment file, header included. A record that would
    /// push the active segment past this starts a new segment; records never
    /// span segments. Must hold the header plus one record of
    /// `record_bytes_max`.
    pub segment_bytes: u64,
    /// Largest size of the buffer that fills while the writer thread writes
    /// and syncs the previous group (encoded bytes). An append that would
    /// exceed it blocks until the writer takes the buffer: this is the
    /// backpressure. Memory used by the WAL is at most twice this (the group
    /// being written plus the one filling).
    pub pending_bytes_max: u64,
    /// LSN of the first record of a brand-new (empty) WAL directory. Ignored
    /// when the directory already holds segments. Must be >= 1: LSN 0 means
    /// "nothing" (`durable_lsn() == first_lsn - 1` before the first sync).
    pub first_lsn: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            record_bytes_max: 8 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            pending_bytes_max: 16 * 1024 * 1024,
            first_lsn: 1,
        }
    }
}

impl WalConfig {
    /// Bytes one record of `record_bytes_max` occupies on disk.
    pub fn record_on_disk_bytes_max(&self) -> u64 {
        u64::from(RECORD_HEADER_BYTES) + u64::from(self.record_bytes_max)
    }

    /// Checks every limit; the WAL refuses to open with an invalid config.
    pub fn validate(&self) -> Result<(), WalError> {
        let invalid = |field, value, reason| {
            Err(WalError::ConfigInvalid {
                field,
                value,
                reason,
            })
        };
        if self.record_bytes_max > RECORD_BYTES_LIMIT {
            return invalid(
                WalConfigField::RecordBytesMax,
                u64::from(self.record_bytes_max),
                "above RECORD_BYTES_LIMIT",
            );
        }
        if self.segment_bytes > SEGMENT_BYTES_LIMIT {
            return invalid(
                WalConfigField::SegmentBytes,
                self.segment_bytes,
                "above SEGMENT_BYTES_LIMIT",
            );
        }
        let segment_bytes_min = u64::from(SEGMENT_HEADER_BYTES)
            + u64::from(GROUP_MARKER_BYTES)
            + self.record_on_disk_bytes_max();
        if self.segment_bytes < segment_bytes_min {
            return invalid(
                WalConfigField::SegmentBytes,
                self.segment_bytes,
                "must hold the segment header, a group marker and one record of record_bytes_max",
            );
        }
        if self.pending_bytes_max > PENDING_BYTES_LIMIT {
            return invalid(
                WalConfigField::PendingBytesMax,
                self.pending_bytes_max,
                "above PENDING_BYTES_LIMIT",
            );
        }
        if self.pending_bytes_max < self.record_on_disk_bytes_max() {
            return invalid(
                WalConfigField::PendingBytesMax,
                self.pending_bytes_max,
                "must hold one record of record_bytes_max",
            );
        }
        if self.first_lsn == 0 {
            return invalid(
                WalConfigField::FirstLsn,
                0,
                "LSN 0 is reserved; LSNs start at 1 or later",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        WalConfig::default()
            .validate()
            .expect("default config valid");
    }

    #[test]
    fn limits_are_enforced_with_the_offending_field_named() {
        let base = WalConfig::default();
        let cases = [
            (
                WalConfig {
                    segment_bytes: 1024,
                    ..base.clone()
                },
                WalConfigField::SegmentBytes,
            ),
            (
                WalConfig {
                    pending_bytes_max: 1024,
                    ..base.clone()
                },
                WalConfigField::PendingBytesMax,
            ),
            (
                WalConfig {
                    first_lsn: 0,
                    ..base.clone()
                },
                WalConfigField::FirstLsn,
            ),
            (
                WalConfig {
                    record_bytes_max: u32::MAX,
                    ..base.clone()
                },
                WalConfigField::RecordBytesMax,
            ),
        ];
        for (config, field_expected) in cases {
            match config.validate() {
                Err(WalError::ConfigInvalid { field, .. }) => assert_eq!(field, field_expected),
                other => panic!("{field_expected}: expected ConfigInvalid, got {other:?}"),
            }
        }
    }
}
