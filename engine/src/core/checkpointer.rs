//! The checkpointer thread: writes the core's changed state to RocksDB, then lets the WAL
//! drop what the checkpoint covers.
//!
//! Order matters for crash safety:
//! 1. wait until the WAL record the checkpoint stops at is durable, so a checkpoint never
//!    holds state the log could lose (recovery would otherwise show unacknowledged
//!    batches that a client may legitimately resend with different content);
//! 2. write every change plus the checkpoint LSN in one synced RocksDB `WriteBatch`;
//! 3. only then truncate the WAL below that LSN.
//!
//! A crash between any two steps recovers to the same state: the older checkpoint plus a
//! longer WAL suffix, or the newer one plus a shorter suffix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use wal::Wal;

use super::disk::DiskGuard;
use super::{wal_error, EngineError};
use crate::ledger::Changes;
use crate::metrics as m;
use crate::store::{CheckpointMeta, CheckpointWritten, Store};

pub(crate) struct CheckpointJob {
    pub meta: CheckpointMeta,
    pub changes: Changes,
}

/// The core's ends of the channels to the checkpointer: jobs go out (one in flight plus
/// one waiting), and the written changes come back for the ledger to fill again
/// ([`crate::ledger::Ledger::recycle_changes`]).
pub(crate) struct CheckpointQueue {
    pub jobs: Sender<CheckpointJob>,
    pub emptied: Receiver<Changes>,
}

/// What the checkpointer reports to the rest of the engine.
pub(crate) struct CheckpointStatus {
    /// LSN of the newest checkpoint written (0: none).
    pub lsn: AtomicU64,
    pub written: AtomicU64,
    /// Transfers per second the newest checkpoint was written at (0: none yet): the pace
    /// the core slows ingest towards when memory fills (`CoreThread::pace`).
    pub transfers_per_second: AtomicU64,
    /// The failure that outlasted the first retries: while it is set no newer checkpoint
    /// is written, the WAL keeps everything, the engine refuses writes and `/readyz` says
    /// why. The checkpointer goes on retrying and clears it once a checkpoint is written
    /// (a disk with room again); a failed WAL never clears.
    pub failure: Failure,
    /// Set by the core as it stops: a checkpointer retrying a failure gives up then.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Free space on the data directory's filesystems: below its reserve writes are
    /// refused, and a checkpoint waits unless it leaves a quarter of it free.
    pub disk: DiskGuard,
}

impl CheckpointStatus {
    pub fn new(checkpoint_lsn: u64, disk: DiskGuard) -> CheckpointStatus {
        CheckpointStatus {
            lsn: AtomicU64::new(checkpoint_lsn),
            written: AtomicU64::new(0),
            transfers_per_second: AtomicU64::new(0),
            failure: Failure::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            disk,
        }
    }
}

/// A checkpoint failure that writes wait out, readable from any thread without a lock
/// while there is none.
#[derive(Default)]
pub(crate) struct Failure {
    failing: std::sync::atomic::AtomicBool,
    error: std::sync::Mutex<Option<EngineError>>,
}

impl Failure {
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    pub fn get(&self) -> Option<EngineError> {
        if !self.is_failing() {
            return None;
        }
        self.error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set(&self, error: EngineError) {
        *self
            .error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
        self.failing.store(true, Ordering::Release);
    }

    fn clear(&self) {
        self.failing.store(false, Ordering::Release);
        *self
            .error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

/// Attempts at one checkpoint before its failure counts as persistent, and the pause
/// before the first retry (doubling after each): about 6 s in all, enough for a busy
/// disk or a compaction to pass, short enough that clients learn soon.
const CHECKPOINT_ATTEMPTS: u32 = 6;
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(200);

/// Pause between attempts once a failure is persistent (writes refused meanwhile): how
/// soon writes come back after the cause is fixed.
const RETRY_PAUSE_FAILING: Duration = Duration::from_secs(1);

pub(crate) fn run(
    store: Arc<Store>,
    wal: Arc<Wal>,
    jobs: Receiver<CheckpointJob>,
    emptied: Sender<Changes>,
    status: Arc<CheckpointStatus>,
) {
    for job in jobs {
        let (written, took) = match checkpoint_with_retries(&store, &wal, &job, &status.disk) {
            Ok(written) => written,
            Err(error) => {
                tracing::error!(%error, lsn = job.meta.lsn, "checkpoints keep failing: writes are refused, reads are served, the WAL keeps every record; retrying every second");
                status.failure.set(error);
                // The same checkpoint again until it is written: a newer one must not be
                // written before it, or its changes would be missing from the store while
                // the WAL that holds them got truncated.
                match retry_while_failing(&store, &wal, &job, &status) {
                    Some(written) => {
                        status.failure.clear();
                        tracing::info!(
                            lsn = job.meta.lsn,
                            "checkpoint written after failures: writes are accepted again"
                        );
                        written
                    }
                    None => return,
                }
            }
        };
        record_written(written, took);
        // Only checkpoints large enough to time well say what the checkpointer can do.
        let transfers = job.changes.transfers.len() as u64;
        if transfers >= 1024 {
            let rate = transfers as f64 / took.as_secs_f64().max(1e-3);
            status
                .transfers_per_second
                .store(rate as u64, Ordering::Relaxed);
        }
        status.lsn.store(job.meta.lsn, Ordering::Release);
        status.written.fetch_add(1, Ordering::Relaxed);
        // Never waits: if the core has not taken the previous ones back, these are
        // dropped (as all are once the core is gone).
        let _ = emptied.try_send(job.changes);
    }
}

/// After a persistent failure: the same checkpoint every [`RETRY_PAUSE_FAILING`] until
/// it is written, the WAL fails for good (`None`, the failure stays), or the engine stops.
fn retry_while_failing(
    store: &Store,
    wal: &Wal,
    job: &CheckpointJob,
    status: &CheckpointStatus,
) -> Option<(CheckpointWritten, Duration)> {
    loop {
        if status.stopping.load(Ordering::Acquire) || wal.error().is_some() {
            return None;
        }
        std::thread::sleep(RETRY_PAUSE_FAILING);
        let started = Instant::now();
        match checkpoint(store, wal, job, &status.disk) {
            Ok(written) => return Some((written, started.elapsed())),
            Err(error) => {
                metrics::counter!(m::CHECKPOINT_FAILURES_TOTAL).increment(1);
                tracing::debug!(%error, lsn = job.meta.lsn, "checkpoint still failing");
                status.failure.set(error);
            }
        }
    }
}

/// Retries with a doubling pause: a checkpoint is idempotent (the same rows, an atomic
/// batch, a truncation that only drops what the store holds), so repeating it is safe.
/// Returns what was written and how long the successful attempt took (the pace the core
/// slows towards must not count the pauses).
fn checkpoint_with_retries(
    store: &Store,
    wal: &Wal,
    job: &CheckpointJob,
    disk: &DiskGuard,
) -> Result<(CheckpointWritten, Duration), EngineError> {
    // A WAL that cannot make the checkpoint's records durable has failed for good (it
    // is poisoned): no retry can help.
    wal.wait_durable(job.meta.lsn).map_err(wal_error)?;
    let mut pause = RETRY_PAUSE_FIRST;
    let mut attempt = 1;
    loop {
        let started = Instant::now();
        match checkpoint(store, wal, job, disk) {
            Ok(written) => return Ok((written, started.elapsed())),
            Err(error) => {
                metrics::counter!(m::CHECKPOINT_FAILURES_TOTAL).increment(1);
                if attempt == CHECKPOINT_ATTEMPTS {
                    return Err(error);
                }
                tracing::warn!(%error, lsn = job.meta.lsn, attempt, "checkpoint failed; retrying");
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
        }
    }
}

fn record_written(written: CheckpointWritten, took: Duration) {
    metrics::counter!(m::CHECKPOINTS_TOTAL).increment(1);
    metrics::counter!(m::CHECKPOINT_ROWS_TOTAL).increment(written.rows);
    metrics::counter!(m::CHECKPOINT_BYTES_TOTAL).increment(written.bytes);
    metrics::histogram!(m::CHECKPOINT_DURATION_SECONDS).record(took.as_secs_f64());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    metrics::gauge!(m::CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS).set(now);
}

fn checkpoint(
    store: &Store,
    wal: &Wal,
    job: &CheckpointJob,
    disk: &DiskGuard,
) -> Result<CheckpointWritten, EngineError> {
    // The caller waited for the WAL to hold the checkpoint's records durably.
    debug_assert!(wal.durable_lsn() >= job.meta.lsn);
    // RocksDB must never meet a full disk: it would stop until reopened.
    if let Some(reason) = disk.checkpoint_refused(job.changes.bytes_estimate()) {
        return Err(EngineError::Unavailable { reason });
    }
    // With "checkpoint written" below, brackets the window a crash test aims its kills at.
    tracing::debug!(lsn = job.meta.lsn, "checkpoint started");
    let written = store
        .write_checkpoint(job.meta, &job.changes)
        .map_err(|error| EngineError::Store(Arc::new(error)))?;
    // The WAL may only drop what a durable log and a written checkpoint both hold.
    assert!(
        wal.durable_lsn() >= job.meta.lsn,
        "truncating the WAL below LSN {} before it is durable",
        job.meta.lsn
    );
    let removed = wal.truncate_before(job.meta.lsn + 1).map_err(wal_error)?;
    tracing::debug!(
        lsn = job.meta.lsn,
        accounts = job.changes.accounts.len(),
        transfers = job.changes.transfers.len(),
        wal_segments_removed = removed,
        "checkpoint written"
    );
    Ok(written)
}
