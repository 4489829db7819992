//! `Wal`: the handle the engine holds. Appends, durability waits and
//! notifications, replay, truncation, stats.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};

use crate::config::WalConfig;
use crate::error::WalError;
use crate::format::{encode_record, RECORD_HEADER_BYTES};
use crate::recovery::{recover_dir, Recovered, RecoveryReport};
use crate::replay::Replay;
use crate::segment::{create_segment, ActiveSegment, SegmentMeta};
use crate::storage::{FsStorage, Storage};
use crate::writer::{add_segment, run_writer};

/// Depth of each durability notification channel. One queued value is
/// enough to wake a receiver, which then reads [`Wal::durable_lsn`].
const DURABLE_NOTIFY_DEPTH: usize = 1;

/// What a durability callback hears (see [`Wal::on_durable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every record through this LSN is durable.
    Durable(u64),
    /// The writer stopped (the WAL was closed or poisoned): nothing more becomes durable.
    /// The last call a callback gets.
    Stopped,
}

/// Called on the writer thread after each durable group, and once when it stops (see
/// [`Wal::on_durable`]).
pub type DurableCallback = Box<dyn Fn(Durability) + Send + Sync>;

/// One durability subscription.
pub(crate) enum Subscriber {
    /// A [`Wal::subscribe`] channel.
    Channel(Sender<u64>),
    /// A [`Wal::on_durable`] callback.
    Callback(DurableCallback),
}

/// Counters, all monotonic since open (except the two LSNs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalStats {
    pub records_appended: u64,
    pub payload_bytes_appended: u64,
    /// Groups the writer took from the pending buffer and wrote.
    pub groups_written: u64,
    /// `fdatasync` calls on segment files (one per group, plus one per
    /// segment rollover and one at open).
    pub fsyncs: u64,
    pub segments_created: u64,
    pub segments_removed: u64,
    /// Appends that had to wait for the writer (pending buffer full).
    pub backpressure_waits: u64,
    pub durable_lsn: u64,
    pub lsn_next: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub records_appended: AtomicU64,
    pub payload_bytes_appended: AtomicU64,
    pub groups_written: AtomicU64,
    pub fsyncs: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_removed: AtomicU64,
    pub backpressure_waits: AtomicU64,
}

/// The buffer appends fill while the writer writes the previous group.
pub(crate) struct Pending {
    /// Encoded records, dense LSNs, ready to write as one block.
    pub buffer: Vec<u8>,
    pub lsn_next: u64,
    pub closing: bool,
    /// The writer is parked waiting for records: only then does an append
    /// pay for a wake-up (a futex call per small record adds up).
    pub writer_waiting: bool,
    /// Appenders parked for room: only then does the writer pay for a wake-up
    /// when it takes the buffer (a `notify_all` is a syscall even with nobody
    /// waiting, once per group).
    pub appenders_waiting: u32,
}

/// Told by the writer thread about each group it made durable, for metrics. Runs on the
/// writer thread between a sync and the next group: keep it to a few atomic updates.
pub trait WalObserver: Send + Sync {
    fn group_durable(&self, group: &GroupDurable);
}

/// One group the writer wrote and synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupDurable {
    pub records: u64,
    /// Encoded bytes written (record headers included).
    pub bytes: u64,
    /// `fdatasync` calls (one, plus one per segment the group filled).
    pub fsyncs: u32,
    /// Time spent in those calls.
    pub sync_duration: std::time::Duration,
    /// The durable LSN this group published.
    pub durable_lsn: u64,
}

/// State shared by the `Wal` handle and its writer thread.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub config: WalConfig,
    pub storage: Arc<dyn Storage>,
    pub pending: Mutex<Pending>,
    /// Signalled when records arrive or closing starts (writer waits).
    pub pending_filled: Condvar,
    /// Signalled when the writer takes the buffer (appenders wait).
    pub pending_drained: Condvar,
    /// Mirror of `pending.lsn_next`, readable without the lock.
    pub lsn_next: AtomicU64,
    /// Highest LSN known to be on disk. Only ever set after a successful
    /// `fdatasync` covering it.
    pub durable_lsn: AtomicU64,
    /// Guards the durable LSN's changes; counts the `wait_durable` callers parked on
    /// `durable_changed`, so that publishing wakes nobody when nobody waits.
    pub durable_mutex: Mutex<u32>,
    pub durable_changed: Condvar,
    pub writer_stopped: AtomicBool,
    /// Set once, by the first failed write or sync. Never cleared.
    pub poison: OnceLock<Arc<WalError>>,
    pub subscribers: Mutex<Vec<Subscriber>>,
    /// Segments on disk, oldest first; the last is the active one.
    pub segments: Mutex<VecDeque<SegmentMeta>>,
    /// Serialises `truncate_before` calls.
    pub truncate_mutex: Mutex<()>,
    pub stats: StatCounters,
    /// Set at most once, by [`Wal::observe`].
    pub observer: OnceLock<Arc<dyn WalObserver>>,
}

/// Locks a mutex, ignoring poisoning: the data behind our mutexes stays
/// consistent even if a holder panicked (no multi-step invariants are
/// broken half-way while holding them).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn poisoned_error(&self) -> Option<WalError> {
        self.poison.get().map(|cause| WalError::Poisoned {
            durable_lsn: self.durable_lsn.load(Ordering::Acquire),
            cause: Arc::clone(cause),
        })
    }
}

/// A write-ahead log opened on a directory. See the crate documentation.
///
/// All methods take `&self`; share it between threads with `Arc<Wal>`.
/// Dropping it flushes what was appended and stops the writer thread
/// (use [`Wal::close`] to see the result).
pub struct Wal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    report: RecoveryReport,
}

/// A last segment of the first format is left as it is (recovery verified it) and
/// appends go to a new segment of the current format: one with no records yet is
/// replaced under the same name, atomically.
fn start_grouped_segment(
    storage: &dyn Storage,
    dir: &Path,
    recovered: &mut Recovered,
) -> Result<(), WalError> {
    let lsn_next = recovered.report.lsn_next;
    let active = create_segment(storage, dir, lsn_next)?;
    let last = recovered
        .segments
        .last()
        .expect("recovery yields at least one segment");
    if last.first_lsn == lsn_next {
        assert_eq!(last.path, active.path, "one name per first LSN");
    } else {
        assert!(last.first_lsn < lsn_next);
        recovered.segments.push(SegmentMeta {
            path: active.path.clone(),
            first_lsn: lsn_next,
        });
    }
    recovered.active_file_bytes = active.file_bytes;
    recovered.active_ungrouped = false;
    tracing::info!(path = %active.path.display(), lsn_next, "WAL: new segment in the current format");
    Ok(())
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir` on the real file system.
    /// Recovers it first: see [`Wal::open_with_storage`].
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Wal, WalError> {
        Wal::open_with_storage(dir, config, Arc::new(FsStorage))
    }

    /// Opens the WAL in `dir` through `storage`. Verifies every segment and
    /// record, cuts a torn tail off the last segment (with a warning), syncs
    /// the last segment, and starts the writer thread. On return,
    /// `durable_lsn()` is the last recovered record and appends continue at
    /// the next LSN.
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        config: WalConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<Wal, WalError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let mut recovered = recover_dir(storage.as_ref(), &dir, &config)?;
        if recovered.active_ungrouped {
            start_grouped_segment(storage.as_ref(), &dir, &mut recovered)?;
        }
        let segment_last = recovered
            .segments
            .last()
            .expect("recovery yields at least one segment")
            .clone();
        let mut active = ActiveSegment {
            file: storage
                .open_append(&segment_last.path)
                .map_err(WalError::io("open segment", &segment_last.path))?,
            path: segment_last.path.clone(),
            file_bytes: recovered.active_file_bytes,
        };
        // What recovery read may still sit only in the page cache (a process
        // crash, not a machine crash): make it durable before calling it so.
        active.sync()?;
        let lsn_next = recovered.report.lsn_next;
        let shared = Arc::new(Shared {
            dir,
            config,
            storage,
            pending: Mutex::new(Pending {
                buffer: Vec::new(),
                lsn_next,
                closing: false,
                writer_waiting: false,
                appenders_waiting: 0,
            }),
            pending_filled: Condvar::new(),
            pending_drained: Condvar::new(),
            lsn_next: AtomicU64::new(lsn_next),
            durable_lsn: AtomicU64::new(lsn_next - 1),
            durable_mutex: Mutex::new(0),
            durable_changed: Condvar::new(),
            writer_stopped: AtomicBool::new(false),
            poison: OnceLock::new(),
            subscribers: Mutex::new(Vec::new()),
            segments: Mutex::new(recovered.segments.into_iter().collect()),
            truncate_mutex: Mutex::new(()),
            stats: StatCounters::default(),
            observer: OnceLock::new(),
        });
        shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("settled-wal".to_string())
            .spawn(move || run_writer(writer_shared, active, lsn_next))
            .map_err(WalError::io("spawn writer thread", Path::new("")))?;
        tracing::info!(dir = %shared.dir.display(), lsn_next, "WAL opened");
        Ok(Wal {
            shared,
            writer: Mutex::new(Some(writer)),
            report: recovered.report,
        })
    }

    /// Appends one record and returns its LSN. The record is durable once
    /// `durable_lsn() >= lsn` (see [`Wal::wait_durable`], [`Wal::subscribe`]).
    ///
    /// Does not wait for any fsync: the payload is copied into the pending
    /// buffer under a short lock. Blocks only when the pending buffer is full
    /// (`pending_bytes_max`), until the writer takes it.
    pub fn append(&self, payload: &[u8]) -> Result<u64, WalError> {
        let record_bytes_max = self.shared.config.record_bytes_max;
        if payload.len() as u64 > u64::from(record_bytes_max) {
            return Err(WalError::RecordTooLarge {
                record_bytes: payload.len() as u64,
                record_bytes_max,
            });
        }
        // The expensive part of the CRC happens outside the lock.
        let payload_crc = crc32c::crc32c(payload);
        let record_bytes = u64::from(RECORD_HEADER_BYTES) + payload.len() as u64;
        let mut pending = self.wait_for_room(record_bytes)?;
        let lsn = pending.lsn_next;
        let lsn_next = lsn
            .checked_add(1)
            .filter(|&next| next < u64::MAX)
            .ok_or(WalError::LsnExhausted)?;
        encode_record(&mut pending.buffer, lsn, payload, payload_crc);
        pending.lsn_next = lsn_next;
        self.shared.lsn_next.store(lsn_next, Ordering::Release);
        let wake_writer = std::mem::take(&mut pending.writer_waiting);
        drop(pending);
        if wake_writer {
            self.shared.pending_filled.notify_one();
        }
        let stats = &self.shared.stats;
        stats.records_appended.fetch_add(1, Ordering::Relaxed);
        stats
            .payload_bytes_appended
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        Ok(lsn)
    }

    /// Locks the pending buffer once it has room for `record_bytes` (an
    /// empty buffer always has room: config guarantees one record fits).
    fn wait_for_room(&self, record_bytes: u64) -> Result<MutexGuard<'_, Pending>, WalError> {
        let shared = &self.shared;
        let mut pending = lock(&shared.pending);
        loop {
            if let Some(error) = shared.poisoned_error() {
                return Err(error);
            }
            if pending.closing {
                return Err(WalError::Closed);
            }
            let buffer_bytes = pending.buffer.len() as u64;
            if buffer_bytes == 0 || buffer_bytes + record_bytes <= shared.config.pending_bytes_max {
                return Ok(pending);
            }
            shared
                .stats
                .backpressure_waits
                .fetch_add(1, Ordering::Relaxed);
            pending.appenders_waiting += 1;
            pending = shared
                .pending_drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
            pending.appenders_waiting -= 1;
        }
    }

    /// Highest LSN known to be durable (`first_lsn - 1` if none yet).
    /// Only ever advanced after a successful `fdatasync`.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// The LSN the next append will get.
    pub fn lsn_next(&self) -> u64 {
        self.shared.lsn_next.load(Ordering::Acquire)
    }

    /// LSN of the oldest record still held (after truncation).
    pub fn lsn_first_retained(&self) -> u64 {
        lock(&self.shared.segments)
            .front()
            .map_or(self.lsn_next(), |segment| segment.first_lsn)
    }

    /// Blocks until `lsn` is durable. Errors if the WAL is poisoned or
    /// closed before that, or if `lsn` was never appended.
    pub fn wait_durable(&self, lsn: u64) -> Result<(), WalError> {
        self.wait_durable_until(lsn, None).map(|_| ())
    }

    /// Like [`Wal::wait_durable`] but gives up after `timeout`; returns
    /// whether `lsn` is durable.
    pub fn wait_durable_timeout(&self, lsn: u64, timeout: Duration) -> Result<bool, WalError> {
        self.wait_durable_until(lsn, Some(Instant::now() + timeout))
    }

    fn wait_durable_until(&self, lsn: u64, deadline: Option<Instant>) -> Result<bool, WalError> {
        let shared = &self.shared;
        if lsn >= self.lsn_next() {
            return Err(WalError::LsnNotAppended {
                lsn,
                lsn_next: self.lsn_next(),
            });
        }
        let mut guard = lock(&shared.durable_mutex);
        loop {
            // Checked under the mutex the writer takes before notifying, so
            // no wake-up is lost.
            if self.durable_lsn() >= lsn {
                return Ok(true);
            }
            if let Some(error) = shared.poisoned_error() {
                return Err(error);
            }
            if shared.writer_stopped.load(Ordering::Acquire) {
                return Err(WalError::Closed);
            }
            let left = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) => Some(left),
                    None => return Ok(false),
                },
            };
            // Counted while parked: the writer notifies only when someone waits.
            *guard += 1;
            guard = match left {
                None => shared
                    .durable_changed
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(left) => {
                    shared
                        .durable_changed
                        .wait_timeout(guard, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            *guard -= 1;
        }
    }

    /// A channel that receives the durable LSN after each successful group
    /// sync, for a thread that selects over several channels (the engine's
    /// core). A received value is a lower bound: read [`Wal::durable_lsn`]
    /// for the latest. The channel disconnects when the WAL is poisoned or
    /// closed; then call [`Wal::error`].
    pub fn subscribe(&self) -> Receiver<u64> {
        let (sender, receiver) = crossbeam::channel::bounded(DURABLE_NOTIFY_DEPTH);
        // A WAL already stopped hands the sender back and it is dropped here: the receiver
        // reads as disconnected at once, so nobody waits for a notification that will
        // never come.
        drop(self.add_subscriber(Subscriber::Channel(sender)));
        receiver
    }

    /// Call `callback` on the writer thread with the durable LSN right after each group's
    /// sync returns, and once with [`Durability::Stopped`] when the writer stops (at once
    /// if it already has). It runs between syncs, under the subscribers' lock: it must be
    /// quick (hand results on, wake someone; no I/O, no blocking, never call back into
    /// this WAL's subscriptions).
    pub fn on_durable(&self, callback: DurableCallback) {
        if let Some(Subscriber::Callback(callback)) =
            self.add_subscriber(Subscriber::Callback(callback))
        {
            callback(Durability::Stopped);
        }
    }

    /// Adds `subscriber` while the writer runs; gives it back once the writer has stopped
    /// (closed or poisoned), when nothing more will be published. The writer sets
    /// `writer_stopped` before it takes the list, and this reads it under the list's lock:
    /// a subscriber is either in the list the writer ends or given back here.
    fn add_subscriber(&self, subscriber: Subscriber) -> Option<Subscriber> {
        let mut subscribers = lock(&self.shared.subscribers);
        if self.shared.poison.get().is_some() || self.shared.writer_stopped.load(Ordering::Acquire)
        {
            return Some(subscriber);
        }
        subscribers.push(subscriber);
        None
    }

    /// The error that poisoned the WAL, if any.
    pub fn error(&self) -> Option<WalError> {
        self.shared.poisoned_error()
    }

    /// The records with LSN > `after_lsn` that are durable now, in order,
    /// read and re-verified segment by segment. Typically called right after
    /// open with the checkpoint's LSN, before new appends.
    ///
    /// Errors: [`WalError::RecordsMissing`] if truncation already removed
    /// records after `after_lsn`; [`WalError::ReplayPastEnd`] if `after_lsn`
    /// is beyond the durable end of the log.
    pub fn replay_after(&self, after_lsn: u64) -> Result<Replay, WalError> {
        let durable_lsn = self.durable_lsn();
        if after_lsn > durable_lsn {
            return Err(WalError::ReplayPastEnd {
                after_lsn,
                durable_lsn,
            });
        }
        let segments: Vec<SegmentMeta> = lock(&self.shared.segments).iter().cloned().collect();
        let lsn_first_retained = segments
            .first()
            .map_or(durable_lsn + 1, |segment| segment.first_lsn);
        if after_lsn + 1 < lsn_first_retained {
            return Err(WalError::RecordsMissing {
                after_lsn,
                lsn_first_retained,
            });
        }
        // Start at the last segment whose first record is <= after_lsn + 1.
        let start = segments
            .iter()
            .rposition(|segment| segment.first_lsn <= after_lsn + 1)
            .unwrap_or(0);
        let storage = Arc::clone(&self.shared.storage);
        let record_bytes_max = self.shared.config.record_bytes_max;
        Ok(Replay::new(
            storage,
            segments[start..].to_vec(),
            after_lsn,
            durable_lsn,
            record_bytes_max,
        ))
    }

    /// Removes the segments all of whose records have LSN < `lsn` (the
    /// caller's checkpoint covers them). The active segment is never removed.
    /// Returns the number of segments removed.
    ///
    /// Crash-safe: segments are removed oldest first, with a directory sync
    /// after each, so a crash leaves a contiguous run of segments that
    /// recovers normally.
    pub fn truncate_before(&self, lsn: u64) -> Result<u64, WalError> {
        let shared = &self.shared;
        let _serial = lock(&shared.truncate_mutex);
        let removable: Vec<PathBuf> = {
            let segments = lock(&shared.segments);
            let count = segments
                .iter()
                .skip(1)
                .take_while(|next| next.first_lsn <= lsn)
                .count();
            segments
                .iter()
                .take(count)
                .map(|segment| segment.path.clone())
                .collect()
        };
        for path in &removable {
            match shared.storage.remove_file(path) {
                Ok(()) => {}
                // A retry after a failed directory sync: the file is gone, but the
                // removal was never made durable, so the sync below must still run (and
                // the segment still leave the list). Without this, every retry failed.
                // Only segments a written checkpoint covers are removed here, so nothing
                // is lost either way; a file gone for another reason is still worth a line.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), "WAL segment already gone: removed by a truncation retried after a failed directory sync, or by someone else");
                }
                Err(error) => return Err(WalError::io("remove segment", path)(error)),
            }
            shared
                .storage
                .sync_dir(&shared.dir)
                .map_err(WalError::io("fsync directory", &shared.dir))?;
            let removed = lock(&shared.segments).pop_front();
            assert_eq!(
                removed.as_ref().map(|segment| &segment.path),
                Some(path),
                "only truncate removes segments"
            );
            shared
                .stats
                .segments_removed
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(removable.len() as u64)
    }

    /// What recovery found when this WAL was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub fn stats(&self) -> WalStats {
        let counters = &self.shared.stats;
        WalStats {
            records_appended: counters.records_appended.load(Ordering::Relaxed),
            payload_bytes_appended: counters.payload_bytes_appended.load(Ordering::Relaxed),
            groups_written: counters.groups_written.load(Ordering::Relaxed),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            segments_created: counters.segments_created.load(Ordering::Relaxed),
            segments_removed: counters.segments_removed.load(Ordering::Relaxed),
            backpressure_waits: counters.backpressure_waits.load(Ordering::Relaxed),
            durable_lsn: self.durable_lsn(),
            lsn_next: self.lsn_next(),
        }
    }

    /// Report every group made durable from now on to `observer` (once per WAL; a second
    /// observer is refused and returned).
    pub fn observe(&self, observer: Arc<dyn WalObserver>) -> Result<(), Arc<dyn WalObserver>> {
        self.shared.observer.set(observer)
    }

    /// Paths of the segment files currently held, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        lock(&self.shared.segments)
            .iter()
            .map(|segment| segment.path.clone())
            .collect()
    }

    /// Writes and syncs everything appended, stops the writer thread, and
    /// reports whether the WAL ended healthy.
    pub fn close(self) -> Result<(), WalError> {
        self.shutdown()
    }

    /// Closes like [`Wal::close`] and then, when `checkpoint_lsn` covers every record
    /// appended, leaves the log as one empty segment starting at the next LSN: the next
    /// open verifies a header instead of a segment full of records a checkpoint already
    /// holds, so a restart after a graceful stop reads nothing from the WAL, however
    /// much the last segment held. Returns whether the log was emptied.
    ///
    /// Crash-safe like rolling and truncation: the empty segment is durable under its
    /// name before the older segments are removed, oldest first, so a crash at any
    /// point leaves a contiguous run of segments that recovers normally.
    pub fn close_covered(&self, checkpoint_lsn: u64) -> Result<bool, WalError> {
        self.shutdown()?;
        let lsn_next = self.lsn_next();
        assert_eq!(
            self.durable_lsn() + 1,
            lsn_next,
            "a closed healthy WAL has every record durable"
        );
        assert!(
            checkpoint_lsn < lsn_next,
            "checkpoint {checkpoint_lsn} is past the WAL's last record {}",
            lsn_next - 1
        );
        let active_first_lsn = lock(&self.shared.segments)
            .back()
            .map(|segment| segment.first_lsn);
        if checkpoint_lsn + 1 != lsn_next || active_first_lsn == Some(lsn_next) {
            return Ok(false);
        }
        let shared = &self.shared;
        add_segment(shared, lsn_next)?;
        self.truncate_before(lsn_next)?;
        assert_eq!(
            lock(&shared.segments).len(),
            1,
            "only the empty segment is left"
        );
        Ok(true)
    }

    fn shutdown(&self) -> Result<(), WalError> {
        lock(&self.shared.pending).closing = true;
        self.shared.pending_filled.notify_all();
        self.shared.pending_drained.notify_all();
        if let Some(writer) = lock(&self.writer).take() {
            // The writer never panics on disk data; a panic is a bug, and
            // re-raising it beats hiding it.
            if let Err(panic) = writer.join() {
                std::panic::resume_unwind(panic);
            }
        }
        match self.shared.poisoned_error() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.shared.pending).closing = true;
            self.shared.pending_filled.notify_all();
            return;
        }
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "WAL closed with an error");
        }
    }
}
