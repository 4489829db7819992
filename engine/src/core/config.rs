//! `EngineConfig`: every limit and interval of the pipeline, checked at open.

use std::path::PathBuf;
use std::time::Duration;

use protocol::BATCH_EVENTS_MAX;
use wal::{WalConfig, WalConfigField, WalError};

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

/// The WAL's storage, shared by the engine's opens of it.
#[derive(Clone)]
pub struct WalStorage(pub std::sync::Arc<dyn wal::Storage>);

impl Default for WalStorage {
    fn default() -> WalStorage {
        WalStorage(std::sync::Arc::new(wal::FsStorage))
    }
}

impl std::fmt::Debug for WalStorage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WalStorage")
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Holds `wal/` (the write-ahead log) and `store/` (RocksDB checkpoints).
    pub data_dir: PathBuf,
    /// Requests waiting for the core, at most. Bounds memory: each request holds at most
    /// `BATCH_EVENTS_MAX` events of 128 bytes.
    pub queue_requests_max: u32,
    /// Range reads (`get_account_transfers`, `get_account_balances`, `query_transfers`)
    /// waiting for the query stage's scan of checkpointed history, at most. One more is
    /// answered [`EngineError::QueriesBusy`] at once: writes never wait behind queries.
    pub queue_queries_max: u32,
    /// What `submit` does when the queue is full.
    pub when_full: WhenFull,
    /// Events the core gathers into one batch (one WAL record) at most. A request is never
    /// split, so this must be at least `BATCH_EVENTS_MAX`.
    pub batch_events_max: u32,
    /// Checkpoint to RocksDB after this many logged batches...
    pub checkpoint_batches: u32,
    /// ...or this many logged events (small checkpoints keep the checkpointer busy all
    /// along instead of in bursts, and shorten each wait at the memory bound)...
    pub checkpoint_events: u64,
    /// ...or after this much time with at least one logged batch, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Transfers kept in memory after a checkpoint holds them: the newest this many (in
    /// whole chunks of 16384), plus pending ones. Older ones are read back from RocksDB.
    pub transfers_resident_max: u64,
    /// Transfers not yet in a written checkpoint, at most: beyond this the core stops
    /// taking requests until the checkpointer catches up (the queue then fills and
    /// `submit` waits or answers busy). With `transfers_resident_max` it bounds memory.
    pub transfers_uncheckpointed_max: u64,
    /// Start even when the WAL does not go on from the store's checkpoint (missing,
    /// empty, or starting after it): the operator accepts losing the acknowledged
    /// requests it held. Off by default: such a start is refused.
    pub accept_wal_loss: bool,
    /// Free bytes the data directory's filesystems must keep: below this writes are
    /// refused (`Unavailable`) until there is room, and a checkpoint waits unless it
    /// leaves a quarter of it free, so neither the WAL nor RocksDB meets a full disk. 0
    /// turns the guard off.
    pub disk_free_min_bytes: u64,
    pub wal: WalConfig,
    /// What the WAL's files are written through: the filesystem, or for tests a storage
    /// that fails on purpose (`wal::fault::FaultyStorage`).
    pub wal_storage: WalStorage,
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
            queue_queries_max: 64,
            when_full: WhenFull::Wait,
            batch_events_max: BATCH_EVENTS_MAX * 4,
            checkpoint_batches: 65536,
            checkpoint_events: 1 << 18,
            checkpoint_interval: Duration::from_secs(30),
            transfers_resident_max: 1 << 20,
            transfers_uncheckpointed_max: 2 << 20,
            accept_wal_loss: false,
            disk_free_min_bytes: 1 << 30,
            wal: WalConfig::default(),
            wal_storage: WalStorage::default(),
            store: StoreConfig::default(),
            clock: system_clock_ns,
        }
    }

    /// The limits the core's [`super::pipeline::Pipeline`] decides with.
    pub fn pipeline(&self) -> super::pipeline::PipelineConfig {
        super::pipeline::PipelineConfig {
            batch_events_max: self.batch_events_max,
            checkpoint_batches: self.checkpoint_batches,
            checkpoint_events: self.checkpoint_events,
            checkpoint_interval_ns: u64::try_from(self.checkpoint_interval.as_nanos())
                .unwrap_or(u64::MAX),
            transfers_uncheckpointed_max: self.transfers_uncheckpointed_max,
        }
    }

    /// Raise the WAL's record limit to hold a full batch of `batch_events_max` events
    /// (never lowering it: a data directory written with larger batches must still
    /// recover after batch_events_max is lowered).
    pub fn fit_wal_records_to_batch(&mut self) -> Result<(), EngineError> {
        let record_bytes = u32::try_from(record_bytes_max(self.batch_events_max))
            .map_err(|_| self.invalid_batch("a batch this large does not fit one WAL record"))?;
        self.wal.record_bytes_max = self.wal.record_bytes_max.max(record_bytes);
        Ok(())
    }

    /// Every limit, the WAL's included. Errors name the option as config/settled.toml
    /// does, so the daemon reports them without translating.
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |key: &'static str, value: &dyn std::fmt::Display, reason: &str| {
            Err(EngineError::ConfigInvalid {
                key,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        if self.queue_requests_max == 0 {
            return invalid("queue_requests_max", &0, "must be at least 1");
        }
        if self.queue_queries_max == 0 {
            return invalid("queue_queries_max", &0, "must be at least 1");
        }
        if self.batch_events_max < BATCH_EVENTS_MAX {
            let reason = format!("below the {BATCH_EVENTS_MAX} events of one request");
            return invalid("batch_events_max", &self.batch_events_max, &reason);
        }
        let record_bytes = record_bytes_max(self.batch_events_max);
        if record_bytes > u64::from(self.wal.record_bytes_max) {
            return Err(self.invalid_batch(&format!(
                "a batch needs WAL records of {record_bytes} bytes, above the WAL's \
                 record_bytes_max {}",
                self.wal.record_bytes_max
            )));
        }
        if self.checkpoint_batches == 0 {
            return invalid("checkpoint_batches", &0, "must be at least 1");
        }
        if self.checkpoint_events == 0 {
            return invalid("checkpoint_events", &0, "must be at least 1");
        }
        if self.checkpoint_interval.is_zero() {
            let value = self.checkpoint_interval.as_secs();
            return invalid("checkpoint_interval_seconds", &value, "must be at least 1");
        }
        if self.transfers_uncheckpointed_max < u64::from(self.batch_events_max) {
            let reason = format!(
                "below batch_events_max {}: one batch would stall the core",
                self.batch_events_max
            );
            return invalid(
                "transfers_uncheckpointed_max",
                &self.transfers_uncheckpointed_max,
                &reason,
            );
        }
        self.wal.validate().map_err(|error| self.wal_invalid(error))
    }

    fn invalid_batch(&self, reason: &str) -> EngineError {
        EngineError::ConfigInvalid {
            key: "batch_events_max",
            value: self.batch_events_max.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The WAL's complaint under the option that sets the field: the `wal_` options, or
    /// batch_events_max for the record size, which follows from it.
    fn wal_invalid(&self, error: WalError) -> EngineError {
        let (field, value, reason) = match error {
            WalError::ConfigInvalid {
                field,
                value,
                reason,
            } => (field, value, reason),
            other => return EngineError::Wal(std::sync::Arc::new(other)),
        };
        let key = match field {
            WalConfigField::RecordBytesMax => return self.invalid_batch(reason),
            WalConfigField::SegmentBytes => "wal_segment_bytes",
            WalConfigField::PendingBytesMax => "wal_pending_bytes_max",
            WalConfigField::FirstLsn => "wal_first_lsn",
        };
        EngineError::ConfigInvalid {
            key,
            value: value.to_string(),
            reason: format!(
                "{reason} (one record holds a batch of batch_events_max {} events: {} bytes)",
                self.batch_events_max, self.wal.record_bytes_max
            ),
        }
    }
}
