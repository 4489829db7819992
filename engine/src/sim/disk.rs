//! The simulated disk under the WAL: a [`wal::Storage`] that keeps, per file, the bytes
//! written and how many of them a sync made durable, and lets the simulation decide the
//! fate of every write and sync the WAL's writer thread makes.
//!
//! Determinism with a real writer thread: the writer's `write_all` and `sync_data` stop
//! at a gate until the simulation gives a [`Verdict`] (complete, EIO, ENOSPC after part of
//! the bytes). The simulation only acts when the writer is at the gate, idle with
//! everything durable, or stopped ([`SimDisk::wait_stable`]), so what a group holds, and
//! so every byte on the disk, depends on the seed alone, never on thread timing.
//!
//! What it models: writes that reach the file but not the disk until synced; a crash
//! ([`SimDisk::crash`]) that keeps the synced bytes of each file plus a prefix (any
//! length, often none or all) of the unsynced ones: a torn write, or, as over the WAL's
//! reserved zeros, each page of the unsynced bytes or zeros in its place, in any order
//! (a hole, then bytes that did land); EIO and ENOSPC on a
//! write (after part of its bytes) or a sync (nothing synced); delayed completions (the
//! gate held while the core goes on); bit flips in synced bytes
//! ([`SimDisk::flip_bit`]); directory entries (create, rename, remove) that a crash
//! keeps or loses unless the directory was synced since; EIO on the writer's directory
//! operations (a new segment) and, on request, on the truncation's
//! ([`SimDisk::fail_directory_operation`]). What it does not: garbage in a torn tail
//! (only zeros or the bytes written); a cut (`truncate`)
//! is durable at once and never fails; the first segment at open and recovery's cuts
//! are never gated or failed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use wal::{SegmentFile, Storage, Wal};

const ERRNO_IO: i32 = 5;
const ERRNO_NO_SPACE: i32 = 28;

#[derive(Clone, Debug, Default)]
struct FileData {
    bytes: Vec<u8>,
    /// Bytes durable: a crash keeps these.
    synced: usize,
}

/// A write or sync of the writer thread, waiting for its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateOp {
    Write {
        bytes: usize,
    },
    Sync,
    /// Create, rename, or sync the directory (a new segment).
    Directory,
}

/// What happens to the operation at the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Complete,
    /// EIO; a write leaves this many of its bytes in the file first.
    Io {
        written: usize,
    },
    /// ENOSPC; a write leaves this many of its bytes in the file first.
    NoSpace {
        written: usize,
    },
}

#[derive(Default)]
struct State {
    names: BTreeMap<PathBuf, u64>,
    /// The names as of each directory's last sync: a crash may lose the later changes.
    names_durable: BTreeMap<PathBuf, u64>,
    /// The next directory operation (create, rename, remove, directory sync) of a thread
    /// other than the writer fails with EIO after this many more succeed (`None`: none).
    directory_fault_after: Option<u32>,
    files: BTreeMap<u64, FileData>,
    id_next: u64,
    /// This incarnation's disk is gone (the process crashed): every operation fails.
    crashed: bool,
    /// The writer's operation at the gate: its sequence number and kind.
    gate: Option<(u64, GateOp)>,
    verdict: Option<(u64, Verdict)>,
    gate_seq: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// The simulation's thread.
    driver: ThreadId,
}

/// Where the WAL's writer thread stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stable {
    /// Stopped at the gate with this operation.
    AtGate(GateOp),
    /// Everything appended is durable; the writer waits for appends.
    Idle,
    /// The WAL is poisoned: the writer stopped.
    Poisoned,
}

#[derive(Clone)]
pub struct SimDisk {
    shared: Arc<Shared>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl SimDisk {
    /// An empty disk driven from the calling thread: operations of every other thread
    /// (the WAL's writer) pass the gate, the driver's own (open, recovery, truncation)
    /// do not.
    pub fn driven_from_this_thread() -> SimDisk {
        SimDisk::from_state(State::default(), std::thread::current().id())
    }

    fn from_state(state: State, driver: ThreadId) -> SimDisk {
        SimDisk {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Condvar::new(),
                driver,
            }),
        }
    }

    /// Operations of threads other than the driver wait at the gate.
    fn gated(&self) -> bool {
        std::thread::current().id() != self.shared.driver
    }

    /// Wait until the writer of `wal` is at the gate, idle with `appended_last` durable,
    /// or stopped. Bounded: a writer that does none of these within a minute is a bug.
    pub fn wait_stable(&self, wal: &Wal, appended_last: u64) -> Stable {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            {
                let state = lock(&self.shared);
                if let Some((seq, op)) = state.gate {
                    if state.verdict.is_none_or(|(decided, _)| decided != seq) {
                        return Stable::AtGate(op);
                    }
                }
            }
            if wal.error().is_some() {
                return Stable::Poisoned;
            }
            if wal.durable_lsn() >= appended_last {
                return Stable::Idle;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL writer neither reached the gate nor made LSN {appended_last} durable"
            );
            let state = lock(&self.shared);
            let _ = self
                .shared
                .changed
                .wait_timeout(state, Duration::from_micros(200))
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Give the operation at the gate its verdict and wait until the writer took it.
    pub fn decide(&self, verdict: Verdict) {
        let mut state = lock(&self.shared);
        let (seq, _) = state.gate.expect("an operation waits at the gate");
        state.verdict = Some((seq, verdict));
        self.shared.changed.notify_all();
        while state.gate.is_some_and(|(waiting, _)| waiting == seq) {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Bytes of a file written over reserved zeros (the WAL's file-system storage) when
    /// power fails mid-sync: each page of the unsynced bytes reached the disk or did not,
    /// whatever its place, and a page that did not reads as the zeros under it. The synced
    /// bytes are all there.
    fn pages_in_any_order(bytes: &[u8], synced: usize, rng: &mut StdRng) -> Vec<u8> {
        const PAGE_BYTES: usize = 512;
        let mut survived = bytes[..synced].to_vec();
        survived.resize(bytes.len(), 0);
        // Half the time the first page is the one lost and every later one landed: a hole
        // followed by whole records, the case that must not pass for corruption.
        let first_lost = rng.random_bool(0.5);
        let mut page_start = synced;
        while page_start < bytes.len() {
            let page_end = ((page_start / PAGE_BYTES + 1) * PAGE_BYTES).min(bytes.len());
            let landed = if first_lost {
                page_start != synced
            } else {
                rng.random_bool(0.5)
            };
            if landed {
                survived[page_start..page_end].copy_from_slice(&bytes[page_start..page_end]);
            }
            page_start = page_end;
        }
        // The zeros reserved past the last write are there too, more or fewer of them (a
        // file with nothing unsynced was sealed: it ends at its last write).
        let zeros = if synced < bytes.len() {
            rng.random_range(0..2 * PAGE_BYTES)
        } else {
            0
        };
        survived.resize(bytes.len() + zeros, 0);
        assert_eq!(
            &survived[..synced],
            &bytes[..synced],
            "synced bytes survive"
        );
        survived
    }

    /// The process crashed: this disk fails every later operation (the writer thread at
    /// the gate gets EIO and stops), and the returned disk holds what survives: per file
    /// the synced bytes plus a prefix of the unsynced ones (a torn write), all synced.
    pub fn crash(&self, rng: &mut StdRng) -> SimDisk {
        let mut state = lock(&self.shared);
        state.crashed = true;
        self.shared.changed.notify_all();
        // Directory changes since the last directory sync survived, or did not.
        let names = if rng.random_bool(0.5) {
            state.names.clone()
        } else {
            state.names_durable.clone()
        };
        let mut files = BTreeMap::new();
        for (&id, file) in &state.files {
            if !names.values().any(|named| *named == id) {
                continue;
            }
            let unsynced = file.bytes.len() - file.synced;
            let bytes = match rng.random_range(0..5) {
                0 => file.bytes[..file.synced].to_vec(),
                1 => file.bytes.clone(),
                2 | 3 => {
                    let kept = rng.random_range(0..=unsynced);
                    file.bytes[..file.synced + kept].to_vec()
                }
                _ => Self::pages_in_any_order(&file.bytes, file.synced, rng),
            };
            files.insert(
                id,
                FileData {
                    synced: bytes.len(),
                    bytes,
                },
            );
        }
        SimDisk::from_state(
            State {
                names_durable: names.clone(),
                names,
                files,
                id_next: state.id_next,
                ..State::default()
            },
            self.shared.driver,
        )
    }

    /// The process is gone: every later operation fails, and a writer at the gate
    /// gets EIO (so that its WAL can close).
    pub fn halt(&self) {
        lock(&self.shared).crashed = true;
        self.shared.changed.notify_all();
    }

    /// A directory operation outside the writer thread (the WAL's truncation: remove a
    /// segment, sync the directory) fails with EIO after `after` more succeed; `None`
    /// takes a fault back.
    pub fn fail_directory_operation(&self, after: Option<u32>) {
        lock(&self.shared).directory_fault_after = after;
    }

    /// Paths and synced lengths of the files whose names `keep` accepts, in path order.
    pub fn synced_files(&self, keep: impl Fn(&Path) -> bool) -> Vec<(PathBuf, usize)> {
        let state = lock(&self.shared);
        state
            .names
            .iter()
            .filter(|(path, _)| keep(path))
            .map(|(path, id)| (path.clone(), state.files[id].synced))
            .collect()
    }

    pub fn read_synced(&self, path: &Path) -> Option<Vec<u8>> {
        let state = lock(&self.shared);
        let file = &state.files[state.names.get(path)?];
        Some(file.bytes[..file.synced].to_vec())
    }

    /// Flip one bit of a file's synced bytes (flipping it again undoes it).
    pub fn flip_bit(&self, path: &Path, offset: usize, bit: u8) {
        let mut state = lock(&self.shared);
        let id = state.names[path];
        let file = state.files.get_mut(&id).expect("named file exists");
        assert!(offset < file.synced, "flips only hit synced bytes");
        file.bytes[offset] ^= 1 << bit;
    }

    /// Every file's bytes, for the trace.
    pub fn digest(&self) -> u128 {
        let state = lock(&self.shared);
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for (path, id) in &state.names {
            let file = &state.files[id];
            // Names only: the directory differs from run to run.
            let name = path.file_name().unwrap_or_default();
            hasher.update(name.to_string_lossy().as_bytes());
            hasher.update(&(file.synced as u64).to_le_bytes());
            hasher.update(&file.bytes);
        }
        hasher.digest128()
    }

    /// Before a directory operation: a crashed disk, the writer's gate, or a fault the
    /// simulation asked for. `Ok(state)`: go on.
    fn directory_operation(&self) -> io::Result<MutexGuard<'_, State>> {
        let mut state = lock(&self.shared);
        if state.crashed {
            return Err(errno(ERRNO_IO));
        }
        if self.gated() {
            let (after, decided) = self.pass_gate(state, GateOp::Directory);
            state = after;
            return match decided.ok_or_else(|| errno(ERRNO_IO))? {
                Verdict::Complete => Ok(state),
                Verdict::Io { .. } => Err(errno(ERRNO_IO)),
                Verdict::NoSpace { .. } => Err(errno(ERRNO_NO_SPACE)),
            };
        }
        match state.directory_fault_after {
            Some(0) => {
                state.directory_fault_after = None;
                return Err(errno(ERRNO_IO));
            }
            Some(after) => state.directory_fault_after = Some(after - 1),
            None => {}
        }
        Ok(state)
    }

    fn file_id(state: &State, path: &Path) -> io::Result<u64> {
        state
            .names
            .get(path)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    /// Stop at the gate until the simulation decides (or the disk crashed: `None`).
    fn pass_gate<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        op: GateOp,
    ) -> (MutexGuard<'a, State>, Option<Verdict>) {
        state.gate_seq += 1;
        let seq = state.gate_seq;
        state.gate = Some((seq, op));
        self.shared.changed.notify_all();
        loop {
            if state.crashed {
                state.gate = None;
                self.shared.changed.notify_all();
                return (state, None);
            }
            if let Some((decided, verdict)) = state.verdict {
                if decided == seq {
                    state.verdict = None;
                    state.gate = None;
                    self.shared.changed.notify_all();
                    return (state, Some(verdict));
                }
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

struct SimFile {
    disk: SimDisk,
    id: u64,
}

impl SegmentFile for SimFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.disk.shared);
        if state.crashed {
            return Err(errno(ERRNO_IO));
        }
        let mut verdict = Verdict::Complete;
        if self.disk.gated() {
            let op = GateOp::Write { bytes: bytes.len() };
            let (after, decided) = self.disk.pass_gate(state, op);
            state = after;
            verdict = decided.ok_or_else(|| errno(ERRNO_IO))?;
        }
        let Some(file) = state.files.get_mut(&self.id) else {
            return Err(errno(ERRNO_IO));
        };
        match verdict {
            Verdict::Complete => {
                file.bytes.extend_from_slice(bytes);
                Ok(())
            }
            Verdict::Io { written } => {
                file.bytes
                    .extend_from_slice(&bytes[..written.min(bytes.len())]);
                Err(errno(ERRNO_IO))
            }
            Verdict::NoSpace { written } => {
                file.bytes
                    .extend_from_slice(&bytes[..written.min(bytes.len())]);
                Err(errno(ERRNO_NO_SPACE))
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = lock(&self.disk.shared);
        if state.crashed {
            return Err(errno(ERRNO_IO));
        }
        let mut verdict = Verdict::Complete;
        if self.disk.gated() {
            let (after, decided) = self.disk.pass_gate(state, GateOp::Sync);
            state = after;
            verdict = decided.ok_or_else(|| errno(ERRNO_IO))?;
        }
        match verdict {
            Verdict::Complete => {
                let Some(file) = state.files.get_mut(&self.id) else {
                    return Err(errno(ERRNO_IO));
                };
                file.synced = file.bytes.len();
                Ok(())
            }
            Verdict::Io { .. } => Err(errno(ERRNO_IO)),
            Verdict::NoSpace { .. } => Err(errno(ERRNO_NO_SPACE)),
        }
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.shared);
        if state.crashed {
            return Err(errno(ERRNO_IO));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = lock(&self.shared);
        if state.crashed {
            return Err(errno(ERRNO_IO));
        }
        let id = Self::file_id(&state, path)?;
        Ok(state.files[&id].bytes.clone())
    }

    fn create_file(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let mut state = self.directory_operation()?;
        state.id_next += 1;
        let id = state.id_next;
        state.files.insert(id, FileData::default());
        state.names.insert(path.to_path_buf(), id);
        Ok(Box::new(SimFile {
            disk: self.clone(),
            id,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let state = lock(&self.shared);
        if state.crashed {
            return Err(errno(ERRNO_IO));
        }
        let id = Self::file_id(&state, path)?;
        Ok(Box::new(SimFile {
            disk: self.clone(),
            id,
        }))
    }

    fn truncate_file(&self, path: &Path, file_bytes: u64) -> io::Result<()> {
        let mut state = lock(&self.shared);
        if state.crashed {
            return Err(errno(ERRNO_IO));
        }
        let id = Self::file_id(&state, path)?;
        let file = state.files.get_mut(&id).expect("named file exists");
        file.bytes.resize(file_bytes as usize, 0);
        // The new length is made durable (the real one syncs the file).
        file.synced = file.bytes.len();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.directory_operation()?;
        let id = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.directory_operation()?;
        // The data stays while the durable directory may still name the file.
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.directory_operation()?;
        let state = &mut *state;
        state
            .names_durable
            .retain(|path, _| path.parent() != Some(dir));
        for (path, id) in &state.names {
            if path.parent() == Some(dir) {
                state.names_durable.insert(path.clone(), *id);
            }
        }
        Ok(())
    }
}
