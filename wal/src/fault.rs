//! A fault-injecting [`Storage`] for tests (this crate's and the engine's).
//!
//! [`FaultyStorage`] forwards to the real file system, and on demand makes
//! `fdatasync` fail with EIO or makes writes stop part-way with ENOSPC or
//! EIO after a byte budget, leaving the partial write on disk exactly like a
//! real short write would.

use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::storage::{FsStorage, SegmentFile, Storage};

/// Linux errno for "No space left on device".
const ERRNO_NO_SPACE: i32 = 28;
/// Linux errno for "Input/output error".
const ERRNO_IO: i32 = 5;

/// Which error a write past the byte budget fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// ENOSPC: the disk is full.
    NoSpace,
    /// EIO: the device failed.
    Io,
}

#[derive(Debug, Default)]
struct FaultState {
    /// `sync_data` calls with an index in this range fail (0-based).
    sync_fail_indexes: Option<std::ops::Range<u64>>,
    /// Total bytes writes may still add before failing part-way.
    write_bytes_left: Option<u64>,
    write_fault: Option<WriteFault>,
    /// While set, `sync_data` calls block (a slow disk, held still).
    syncs_paused: bool,
    sync_data_count: u64,
    sync_data_failed_count: u64,
    syncs_blocked: u64,
    written_bytes: u64,
    /// The next directory sync fails with EIO (once).
    dir_sync_fail_armed: bool,
    /// While set, removing a file fails with EIO.
    removes_fail: bool,
}

/// Real file system plus injected faults. Clones share one fault plan.
#[derive(Debug, Clone, Default)]
pub struct FaultyStorage {
    state: Arc<Mutex<FaultState>>,
    syncs_resumed: Arc<Condvar>,
}

impl FaultyStorage {
    pub fn new() -> Self {
        FaultyStorage::default()
    }

    /// Every `sync_data` call from the `sync_index`-th on (0-based, counted
    /// since creation) fails with EIO.
    pub fn fail_syncs_from(&self, sync_index: u64) {
        self.lock().sync_fail_indexes = Some(sync_index..u64::MAX);
    }

    /// Only the `sync_index`-th `sync_data` call (0-based) fails with EIO.
    pub fn fail_sync_once(&self, sync_index: u64) {
        self.lock().sync_fail_indexes = Some(sync_index..sync_index + 1);
    }

    /// The next `sync_dir` call fails with EIO, once (a directory entry change not
    /// known to be durable).
    pub fn fail_dir_sync_once(&self) {
        self.lock().dir_sync_fail_armed = true;
    }

    /// While `fail` is set, every `remove_file` fails with EIO (so every WAL truncation,
    /// the last step of a checkpoint, fails).
    pub fn fail_removes(&self, fail: bool) {
        self.lock().removes_fail = fail;
    }

    /// Writes may add `bytes` more bytes in total; the write that crosses the
    /// budget writes the part that fits, then fails with `fault`.
    pub fn limit_write_bytes(&self, bytes: u64, fault: WriteFault) {
        let mut state = self.lock();
        state.write_bytes_left = Some(bytes);
        state.write_fault = Some(fault);
    }

    /// Makes `sync_data` calls block until [`FaultyStorage::resume_syncs`]:
    /// lets a test hold the writer inside an fsync.
    pub fn pause_syncs(&self) {
        self.lock().syncs_paused = true;
    }

    pub fn resume_syncs(&self) {
        self.lock().syncs_paused = false;
        self.syncs_resumed.notify_all();
    }

    /// Number of `sync_data` calls currently blocked by `pause_syncs`.
    pub fn syncs_blocked(&self) -> u64 {
        self.lock().syncs_blocked
    }

    /// Removes every injected fault.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.sync_fail_indexes = None;
        state.write_bytes_left = None;
        state.write_fault = None;
        state.syncs_paused = false;
        state.dir_sync_fail_armed = false;
        state.removes_fail = false;
        self.syncs_resumed.notify_all();
    }

    /// Number of `sync_data` calls so far (failed ones included).
    pub fn sync_data_count(&self) -> u64 {
        self.lock().sync_data_count
    }

    /// Number of `sync_data` calls that failed.
    pub fn sync_data_failed_count(&self) -> u64 {
        self.lock().sync_data_failed_count
    }

    /// Bytes that reached files through segment writes.
    pub fn written_bytes(&self) -> u64 {
        self.lock().written_bytes
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // A panicking test thread must not hide the fault plan from others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct FaultySegmentFile {
    inner: Box<dyn SegmentFile>,
    storage: FaultyStorage,
}

impl SegmentFile for FaultySegmentFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (allowed_bytes, fault) = {
            let mut state = self.storage.lock();
            match state.write_bytes_left {
                Some(left) if left < bytes.len() as u64 => {
                    state.write_bytes_left = Some(0);
                    (left as usize, state.write_fault)
                }
                Some(left) => {
                    state.write_bytes_left = Some(left - bytes.len() as u64);
                    (bytes.len(), None)
                }
                None => (bytes.len(), None),
            }
        };
        self.inner.write_all(&bytes[..allowed_bytes])?;
        self.storage.lock().written_bytes += allowed_bytes as u64;
        match fault {
            None => Ok(()),
            Some(WriteFault::NoSpace) => Err(io::Error::from_raw_os_error(ERRNO_NO_SPACE)),
            Some(WriteFault::Io) => Err(io::Error::from_raw_os_error(ERRNO_IO)),
        }
    }

    fn seal(&mut self) -> io::Result<()> {
        self.inner.seal()
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let fail = {
            let mut state = self.storage.lock();
            while state.syncs_paused {
                state.syncs_blocked += 1;
                state = self
                    .storage
                    .syncs_resumed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                state.syncs_blocked -= 1;
            }
            let index = state.sync_data_count;
            state.sync_data_count += 1;
            let fail = state
                .sync_fail_indexes
                .as_ref()
                .is_some_and(|indexes| indexes.contains(&index));
            state.sync_data_failed_count += u64::from(fail);
            fail
        };
        if fail {
            // Like Linux after a writeback error: the sync fails and the data
            // is not known to be on disk.
            return Err(io::Error::from_raw_os_error(ERRNO_IO));
        }
        self.inner.sync_data()
    }
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        FsStorage.list_dir(dir)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        FsStorage.read_file(path)
    }

    fn create_file(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let inner = FsStorage.create_file(path)?;
        Ok(Box::new(FaultySegmentFile {
            inner,
            storage: self.clone(),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let inner = FsStorage.open_append(path)?;
        Ok(Box::new(FaultySegmentFile {
            inner,
            storage: self.clone(),
        }))
    }

    fn truncate_file(&self, path: &Path, file_bytes: u64) -> io::Result<()> {
        FsStorage.truncate_file(path, file_bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.lock().removes_fail {
            return Err(io::Error::from_raw_os_error(ERRNO_IO));
        }
        FsStorage.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if std::mem::take(&mut self.lock().dir_sync_fail_armed) {
            return Err(io::Error::from_raw_os_error(ERRNO_IO));
        }
        FsStorage.sync_dir(dir)
    }
}
