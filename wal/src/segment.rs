//! Segment files on disk: naming, crash-safe creation, the active segment.

use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::format::{
    encode_segment_header, segment_file_name, SEGMENT_HEADER_BYTES, SEGMENT_TEMP_SUFFIX,
};
use crate::storage::{SegmentFile, Storage};

/// A segment the WAL holds: where it is and the LSN of its first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub path: PathBuf,
    pub first_lsn: u64,
}

/// The segment new records are appended to.
pub(crate) struct ActiveSegment {
    pub file: Box<dyn SegmentFile>,
    pub path: PathBuf,
    /// Current length of the file (header included).
    pub file_bytes: u64,
}

impl ActiveSegment {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        self.file
            .write_all(bytes)
            .map_err(WalError::io("write segment", &self.path))?;
        self.file_bytes += bytes.len() as u64;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), WalError> {
        self.file
            .sync_data()
            .map_err(WalError::io("fdatasync segment", &self.path))
    }

    /// Drop the space reserved past the last record, durably (see
    /// [`SegmentFile::seal`]).
    pub fn seal(&mut self) -> Result<(), WalError> {
        self.file
            .seal()
            .map_err(WalError::io("seal segment", &self.path))
    }
}

/// Creates the segment whose first record will be `first_lsn`.
///
/// The header is written and synced under a temporary name, then renamed
/// and the directory synced: a segment file under its final name therefore
/// always has a complete, durable header, and a bad header is always
/// corruption, never a crash artefact. Leftover temporary files are removed
/// by recovery.
pub(crate) fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    first_lsn: u64,
) -> Result<ActiveSegment, WalError> {
    let name = segment_file_name(first_lsn);
    let path = dir.join(&name);
    let path_temp = dir.join(format!(
        "{}{SEGMENT_TEMP_SUFFIX}",
        name.trim_end_matches(".log")
    ));
    let mut file = storage
        .create_file(&path_temp)
        .map_err(WalError::io("create segment", &path_temp))?;
    file.write_all(&encode_segment_header(first_lsn))
        .map_err(WalError::io("write segment header", &path_temp))?;
    file.sync_data()
        .map_err(WalError::io("fdatasync segment header", &path_temp))?;
    storage
        .rename(&path_temp, &path)
        .map_err(WalError::io("rename segment", &path_temp))?;
    storage
        .sync_dir(dir)
        .map_err(WalError::io("fsync directory", dir))?;
    Ok(ActiveSegment {
        file,
        path,
        file_bytes: u64::from(SEGMENT_HEADER_BYTES),
    })
}
