//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use settled_wal::{Record, Wal, WalConfig, WalError};

/// Small limits so a few hundred bytes span several segments.
pub fn small_config() -> WalConfig {
    WalConfig {
        record_bytes_max: 256,
        segment_bytes: 1024,
        pending_bytes_max: 4096,
        first_lsn: 1,
    }
}

/// Deterministic, LSN-dependent payload of varying length (0..=200 bytes).
pub fn payload(index: u64) -> Vec<u8> {
    let length = (index * 37 % 201) as usize;
    (0..length)
        .map(|byte| (index as usize * 31 + byte * 7) as u8)
        .collect()
}

/// Appends `count` records with `payload(i)` and waits until all are durable.
pub fn append_durable(wal: &Wal, first_index: u64, count: u64) -> u64 {
    let mut lsn_last = 0;
    for index in first_index..first_index + count {
        lsn_last = wal.append(&payload(index)).expect("append");
    }
    wal.wait_durable(lsn_last).expect("durable");
    lsn_last
}

pub fn replay_all(wal: &Wal, after_lsn: u64) -> Result<Vec<Record>, WalError> {
    wal.replay_after(after_lsn)?.collect()
}

/// Asserts that `records` are exactly LSNs `first..first+len` with `payload(lsn)`
/// (tests use LSN 1 for index 1).
pub fn assert_records_are_payloads(records: &[Record], lsn_first: u64) {
    for (position, record) in records.iter().enumerate() {
        let lsn = lsn_first + position as u64;
        assert_eq!(record.lsn, lsn, "records must be dense and in order");
        assert_eq!(record.payload, payload(lsn), "payload of LSN {lsn}");
    }
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

/// Copies every file of `from` into a fresh temporary directory.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        fs::copy(&path, copy.path().join(path.file_name().expect("name"))).expect("copy");
    }
    copy
}

/// Builds a closed WAL with `count` records (`payload(1..=count)`), each durable before
/// the next is appended: one record per group, so every record has its own marker.
pub fn build_wal(config: &WalConfig, count: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    for index in 1..=count {
        append_durable(&wal, index, 1);
    }
    wal.close().expect("close");
    dir
}
