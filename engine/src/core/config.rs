//! `EngineConfig`: every limit and interval of the pipeline, checked at open.

use std::path::PathBuf;
use std::time::Duration;

use protocol::BATCH_EVENTS_MAX;
use wal::WalConfig;

use super::record::record_bytes_max;
use super::EngineError;
use crate::store::StoreConfig;

/// The engine's clock: nanoseconds since the Unix epoch. A plain function so that tests
/// can pin time without the core ever reading anything but this.
pub type Clock = fn() -> u64;

/// The wall clock, as nanoseconds since the Unix epoch.
pub fn system_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// What `submit` does when the request queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Block the submitting thread until the core makes room.
    Wait,
    /// Fail at once with [`EngineError::Busy`]; the caller retries later.
    Busy,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Holds `wal/` (the write-ahead log) and `store/` (RocksDB checkpoints).
    pub data_dir: PathBuf,
    /// Requests waiting for the core, at most. Bounds memory: each request holds at most
    /// `BATCH_EVENTS_MAX` events of 128 bytes.
    pub queue_requests_max: u32,
    /// What `submit` does when the queue is full.
    pub when_full: WhenFull,
    /// Events the core gathers into one batch (one WAL record) at most. A request is never
    /// split, so this must be at least `BATCH_EVENTS_MAX`.
    pub batch_events_max: u32,
    /// Checkpoint to RocksDB after this many logged batches...
    pub checkpoint_batches: u32,
    /// ...or after this much time with at least one logged batch, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Transfers kept in memory after a checkpoint holds them: the newest this many (in
    /// whole chunks of 8192), plus pending ones. Older ones are read back from RocksDB.
    pub transfers_resident_max: u64,
    /// Transfers not yet in a written checkpoint, at most: beyond this the core stops
    /// taking requests until the checkpointer catches up (the queue then fills and
    /// `submit` waits or answers busy). With `transfers_resident_max` it bounds memory.
    pub transfers_unsettled_max: u64,
    pub wal: WalConfig,
    pub store: StoreConfig,
    /// Where the core reads time from (once per batch).
    pub clock: Clock,
}

impl EngineConfig {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            queue_requests_max: 256,
            when_full: WhenFull::Wait,
            batch_events_max: BATCH_EVENTS_MAX * 4,
            checkpoint_batches: 4096,
            checkpoint_interval: Duration::from_secs(30),
            transfers_resident_max: 1 << 20,
            transfers_unsettled_max: 4 << 20,
            wal: WalConfig::default(),
            store: StoreConfig::default(),
            clock: system_clock_ns,
        }
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid =
            |key: &'static str, reason: String| Err(EngineError::ConfigInvalid { key, reason });
        if self.queue_requests_max == 0 {
            return invalid("queue_requests_max", "must be at least 1".into());
        }
        if self.batch_events_max < BATCH_EVENTS_MAX {
            return invalid(
                "batch_events_max",
                format!(
                    "{} is below the {BATCH_EVENTS_MAX} events of one request",
                    self.batch_events_max
                ),
            );
        }
        let record_bytes = record_bytes_max(self.batch_events_max);
        if record_bytes > u64::from(self.wal.record_bytes_max) {
            return invalid(
                "batch_events_max",
                format!(
                    "a batch of {} events needs WAL records of {record_bytes} bytes, above \
                     wal.record_bytes_max {}",
                    self.batch_events_max, self.wal.record_bytes_max
                ),
            );
        }
        if self.checkpoint_batches == 0 {
            return invalid("checkpoint_batches", "must be at least 1".into());
        }
        if self.transfers_unsettled_max < u64::from(self.batch_events_max) {
            return invalid(
                "transfers_unsettled_max",
                format!(
                    "{} is below batch_events_max {}: one batch would stall the core",
                    self.transfers_unsettled_max, self.batch_events_max
                ),
            );
        }
        if self.checkpoint_interval.is_zero() {
            return invalid("checkpoint_interval", "must be above zero".into());
        }
        Ok(())
    }
}
