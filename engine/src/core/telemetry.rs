//! What the engine tells operators, recorded where it is cheap: the WAL writer reports
//! each durable group ([`WalMetrics`]), and a sampler thread reads, once a second, what
//! only changes slowly or lives outside the hot path (RocksDB properties, checkpoint lag,
//! WAL health, the process). The core and the checkpointer record their own figures per
//! batch and per checkpoint (`core_thread.rs`, `checkpointer.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use wal::{GroupDurable, Wal, WalObserver};

use super::checkpointer::CheckpointStatus;
use crate::metrics as m;
use crate::store::Store;

/// How often the sampler reads RocksDB, the WAL and /proc.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Records every durable WAL group; runs on the WAL writer thread.
pub(crate) struct WalMetrics;

impl WalObserver for WalMetrics {
    fn group_durable(&self, group: &GroupDurable) {
        metrics::counter!(m::WAL_RECORDS_WRITTEN_TOTAL).increment(group.records);
        metrics::counter!(m::WAL_BYTES_WRITTEN_TOTAL).increment(group.bytes);
        metrics::counter!(m::WAL_FSYNCS_TOTAL).increment(u64::from(group.fsyncs));
        metrics::histogram!(m::WAL_FSYNC_DURATION_SECONDS)
            .record(group.sync_duration.as_secs_f64());
        metrics::histogram!(m::WAL_GROUP_RECORDS).record(group.records as f64);
        metrics::gauge!(m::WAL_DURABLE_LSN).set(group.durable_lsn as f64);
    }
}

/// Whether the engine can take writes: `Err` with a one-line reason once the WAL or the
/// checkpointer failed (both stop the engine from acknowledging anything more, or from
/// bounding its log).
#[derive(Clone)]
pub struct Health {
    pub(crate) wal: Arc<Wal>,
    pub(crate) checkpoint_status: Arc<CheckpointStatus>,
}

impl Health {
    pub fn check(&self) -> Result<(), String> {
        if let Some(error) = self.wal.error() {
            return Err(format!("write-ahead log failed: {error}"));
        }
        if let Some(reason) = self.checkpoint_status.disk.writes_held() {
            return Err(reason);
        }
        if let Some(error) = self.checkpoint_status.failure.get() {
            return Err(format!("checkpointer failed: {error}"));
        }
        Ok(())
    }
}

/// The sampler thread; stops when its [`Sampler`] is dropped.
pub(crate) struct Sampler {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    pub fn start(store: Arc<Store>, health: Health) -> Sampler {
        let (stop, stopped) = crossbeam::channel::bounded(0);
        let thread = std::thread::Builder::new()
            .name("settled-sampler".into())
            .spawn(move || run(&store, &health, &stopped))
            .expect("spawn sampler thread");
        Sampler {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // Disconnecting the channel wakes the thread at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(store: &Store, health: &Health, stopped: &Receiver<()>) {
    let mut rocksdb_error_logged = false;
    loop {
        sample(store, health, &mut rocksdb_error_logged);
        match stopped.recv_timeout(SAMPLE_INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn sample(store: &Store, health: &Health, rocksdb_error_logged: &mut bool) {
    let wal = &health.wal;
    let lsn_last = wal.lsn_next().saturating_sub(1);
    let checkpoint_lsn = health.checkpoint_status.lsn.load(Ordering::Acquire);
    metrics::gauge!(m::CHECKPOINT_LAG_RECORDS).set(lsn_last.saturating_sub(checkpoint_lsn) as f64);
    metrics::gauge!(m::WAL_POISONED).set(if wal.error().is_some() { 1.0 } else { 0.0 });
    match store.rocksdb_stats() {
        Ok(stats) => {
            metrics::gauge!(m::ROCKSDB_PENDING_COMPACTION_BYTES)
                .set(stats.pending_compaction_bytes as f64);
            metrics::gauge!(m::ROCKSDB_LIVE_SST_BYTES).set(stats.live_sst_bytes as f64);
            metrics::gauge!(m::ROCKSDB_MEMTABLE_BYTES).set(stats.memtable_bytes as f64);
            metrics::gauge!(m::ROCKSDB_BLOCK_CACHE_USAGE_BYTES).set(stats.block_cache_bytes as f64);
            metrics::gauge!(m::ROCKSDB_WRITE_STOPPED).set(if stats.write_stopped {
                1.0
            } else {
                0.0
            });
            metrics::gauge!(m::ROCKSDB_DELAYED_WRITE_RATE_BYTES)
                .set(stats.delayed_write_rate_bytes as f64);
        }
        Err(error) if !*rocksdb_error_logged => {
            tracing::warn!(%error, "cannot read RocksDB properties for metrics");
            *rocksdb_error_logged = true;
        }
        Err(_) => {}
    }
    if let Some(stats) = m::process::read() {
        m::process::record(&stats);
    }
}
