//! The engine: the ledger, the WAL and the RocksDB store put together into the pipeline of
//! DESIGN.md, behind an in-process handle.
//!
//! ```text
//! EngineHandle::submit ─queue─▶ read stage ──────inbox──▶ core thread ─append─▶ WAL writer
//!   │    ▲     │          (RocksDB point reads)   ▲      │   ▲             (group fsync)
//!   │    │     └─ async creates ≤ 16 events read ─┘      │   └─ durable LSN ──────┘
//!   │    │        on their own task, straight to the inbox│
//!   │    └──────────────── replies, once durable ────────┤ memory's part of range reads
//!   │                                                     ▼
//!   └─ range reads (via the read stage) ──▶ query stage (RocksDB scans, joins both parts)
//!
//! core thread ── every N batches ──▶ checkpointer ──▶ RocksDB
//! ```
//!
//! - [`Engine::open`] recovers (checkpoint from RocksDB, then the WAL records after it,
//!   through the same apply code the core runs) and starts the threads.
//! - [`EngineHandle::submit`] is cheap to clone and safe from any thread or task; it
//!   returns a [`PendingReply`] to await or `wait()` on.
//! - [`Engine::shutdown`] finishes queued work, makes it durable, checkpoints, stops.
//!
//! State resident in memory: every account, every pending transfer, the newest
//! `transfers_resident_max` transfers plus those no written checkpoint holds yet (at most
//! `transfers_uncheckpointed_max`), and transiently failed ids. Older transfers live only in
//! RocksDB; the read stage reads the ones a request names before the core applies
//! it (see `read_stage`), and the query stage scans the old part of range reads off the
//! path of writes (see `query_stage`).

mod checkpointer;
mod config;
mod core_thread;
mod disk;
mod inbox;
mod outbox;
pub mod pipeline;
mod query_stage;
mod read_stage;
pub mod record;
mod request;
mod submit;
mod telemetry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use protocol::Operation;
use wal::{Wal, WalError};

pub use config::{system_clock_ns, Clock, EngineConfig, WalStorage, WhenFull};
pub use record::RecordError;
pub use request::{OnReply, PendingReply, Reply, Request};
pub use submit::{reads_on_submitting_task, EngineHandle, SlotWait, SUBMITTER_READS_EVENTS_MAX};
pub use telemetry::Health;

use checkpointer::{CheckpointQueue, CheckpointStatus};
use core_thread::{CoreThread, Eviction};
// For the simulation (`crate::sim`), which drives the same pieces on one thread.
pub(crate) use core_thread::execute_request;
pub(crate) use read_stage::{read_for_request, StoreReadData, StoreReads};

use crate::ledger::Ledger;
use crate::store::{Store, StoreError};

/// Everything that can go wrong between a caller and a durable reply.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine busy: {queue_requests_max} requests already queued; retry later")]
    Busy { queue_requests_max: u32 },
    /// The query stage has `queue_queries_max` range reads waiting for their scan; the
    /// read was not done (writes are not held up by it).
    #[error("queries busy: {queue_queries_max} range reads already queued; retry later")]
    QueriesBusy { queue_queries_max: u32 },
    #[error("{operation} request carries {count} events; the limit is {max}")]
    TooManyEvents {
        operation: Operation,
        count: u32,
        max: u32,
    },
    #[error("engine is shutting down; request not applied")]
    ShuttingDown,
    /// Checkpoints keep failing: writes are refused (not applied) so that memory and the
    /// WAL stay bounded; reads are served.
    #[error("writes refused: {reason}")]
    Unavailable { reason: String },
    #[error("engine stopped before replying")]
    Stopped,
    #[error("write-ahead log: {0}")]
    Wal(Arc<WalError>),
    #[error("store: {0}")]
    Store(Arc<StoreError>),
    /// `key` is the option's name in config/settled.toml.
    #[error("invalid config: {key} = {value}: {reason}")]
    ConfigInvalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("recovery: WAL record {lsn}: {source}")]
    Recovery { lsn: u64, source: RecordError },
    /// The WAL does not go on from the store's checkpoint.
    #[error("{what}: acknowledged requests may be lost; restore the WAL, or start with --accept-wal-loss to go on without them")]
    WalLost { what: String },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: String,
        source: Arc<std::io::Error>,
    },
}

/// What recovery found, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// LSN of the checkpoint loaded from RocksDB (0: none).
    pub checkpoint_lsn: u64,
    /// WAL records replayed on top of it.
    pub records_replayed: u64,
    /// LSN of the newest record applied.
    pub lsn_last: u64,
}

/// A running engine. Dropping it without [`Engine::shutdown`] stops it the same way.
pub struct Engine {
    handle: EngineHandle,
    wal: Arc<Wal>,
    checkpoint_status: Arc<CheckpointStatus>,
    transfers_resident: Arc<AtomicU64>,
    core: Option<JoinHandle<Ledger>>,
    reader: Option<JoinHandle<()>>,
    querier: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    sampler: Option<telemetry::Sampler>,
    recovery: RecoveryReport,
}

/// Counters of a stopped engine, for tests and operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    pub state_hash: u128,
    pub lsn_last: u64,
    pub checkpoint_lsn: u64,
}

impl Engine {
    /// Recover from `config.data_dir` and start the read stage, query stage, core and
    /// checkpointer threads (the WAL starts its own writer).
    pub fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        config.validate()?;
        let recovered = recover(&config)?;
        let (ledger, recovery) = (&recovered.ledger, recovered.report);
        tracing::info!(
            checkpoint_lsn = recovery.checkpoint_lsn,
            records_replayed = recovery.records_replayed,
            accounts = ledger.accounts_count(),
            transfers_resident = ledger.transfers_resident(),
            "recovered"
        );
        Ok(Self::start(config, recovered))
    }

    fn start(config: EngineConfig, recovered: Recovered) -> Engine {
        let Recovered {
            store,
            wal,
            ledger,
            report: recovery,
            transfers_checkpointed,
        } = recovered;
        let (store, wal) = (Arc::new(store), Arc::new(wal));
        let observed = wal.observe(Arc::new(telemetry::WalMetrics));
        assert!(observed.is_ok(), "a WAL just opened has no observer");
        // Two queues of `queue_requests_max`: submitters to the read stage, and the
        // read stage to the core (which batches what waits there). Range reads also go
        // to the query stage, at most `queue_queries_max` at once.
        let (requests_sender, submitted) =
            crossbeam::channel::bounded(config.queue_requests_max as usize);
        // One place more than there are queue slots: the shutdown message takes none, and
        // a slot holder's `try_send` must still find room beside it.
        let (inbox_sender, inbox) = inbox::inbox(config.queue_requests_max as usize + 1);
        let (queries, stage, query_parts) = query_stage::channels(config.queue_queries_max);
        let evicted_through = Arc::new(AtomicU64::new(ledger.evicted_through()));
        let eviction_generation = Arc::new(AtomicU64::new(ledger.eviction_generation()));
        let querier = {
            let store = store.clone();
            std::thread::Builder::new()
                .name("settled-query".into())
                .spawn(move || stage.run(store))
                .expect("spawn query stage thread")
        };
        let reader = {
            let store = store.clone();
            let (through, generation) = (evicted_through.clone(), eviction_generation.clone());
            let output = inbox_sender.clone();
            std::thread::Builder::new()
                .name("settled-reader".into())
                .spawn(move || {
                    read_stage::run(store, through, generation, submitted, queries, output)
                })
                .expect("spawn read stage thread")
        };
        // One checkpoint in flight plus one waiting: the core never blocks on RocksDB.
        let (jobs_sender, jobs) = crossbeam::channel::bounded(1);
        let (emptied_sender, emptied) = crossbeam::channel::bounded(1);
        let disk = disk::DiskGuard::new(
            vec![config.data_dir.join("wal"), config.data_dir.join("store")],
            config.disk_free_min_bytes,
        );
        disk.check();
        let checkpoint_status = Arc::new(CheckpointStatus::new(recovery.checkpoint_lsn, disk));
        let checkpointer = {
            let (store, wal, status) = (store.clone(), wal.clone(), checkpoint_status.clone());
            std::thread::Builder::new()
                .name("settled-checkpoint".into())
                .spawn(move || checkpointer::run(store, wal, jobs, emptied_sender, status))
                .expect("spawn checkpointer thread")
        };
        let sampler = telemetry::Sampler::start(
            store.clone(),
            Health {
                wal: wal.clone(),
                checkpoint_status: checkpoint_status.clone(),
            },
        );
        let handle = EngineHandle::new(
            requests_sender,
            inbox_sender.clone(),
            submit::SubmitterReads {
                store: Arc::downgrade(&store),
                evicted_through: evicted_through.clone(),
                eviction_generation: eviction_generation.clone(),
            },
            &config,
        );
        let transfers_resident = Arc::new(AtomicU64::new(ledger.transfers_resident()));
        let eviction = Eviction {
            store,
            transfers_resident: transfers_resident.clone(),
            checkpoint_status: checkpoint_status.clone(),
            evicted_through,
            eviction_generation,
            transfers_checkpointed,
            query_parts,
        };
        let core = CoreThread::new(
            config,
            ledger,
            wal.clone(),
            (inbox, inbox_sender.wake()),
            CheckpointQueue {
                jobs: jobs_sender,
                emptied,
            },
            eviction,
            recovery,
        );
        let core = std::thread::Builder::new()
            .name("settled-core".into())
            .spawn(move || core.run())
            .expect("spawn core thread");
        Engine {
            handle,
            wal,
            checkpoint_status,
            transfers_resident,
            core: Some(core),
            reader: Some(reader),
            querier: Some(querier),
            checkpointer: Some(checkpointer),
            sampler: Some(sampler),
            recovery,
        }
    }

    /// A handle for submitting requests; clone it freely.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }

    /// Transfers held in memory after the latest eviction (see `transfers_resident_max`).
    pub fn transfers_resident(&self) -> u64 {
        self.transfers_resident.load(Ordering::Relaxed)
    }

    /// What `/readyz` asks: can the engine still take writes?
    pub fn health(&self) -> Health {
        Health {
            wal: self.wal.clone(),
            checkpoint_status: self.checkpoint_status.clone(),
        }
    }

    /// LSN of the newest checkpoint written to RocksDB.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.checkpoint_status.lsn.load(Ordering::Acquire)
    }

    /// Stop accepting requests, finish and answer everything queued, make it durable,
    /// write a final checkpoint and stop every thread.
    pub fn shutdown(mut self) -> Result<ShutdownReport, EngineError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<ShutdownReport, EngineError> {
        let Some(core) = self.core.take() else {
            return Err(EngineError::Stopped);
        };
        self.handle.request_shutdown();
        // The core returns the final ledger; the checkpointer ends when the core's job
        // sender is dropped with it.
        let ledger = core.join().map_err(|_| EngineError::Stopped)?;
        if let Some(reader) = self.reader.take() {
            reader.join().map_err(|_| EngineError::Stopped)?;
        }
        // Ends once the read stage is gone and every range read it sent is answered.
        if let Some(querier) = self.querier.take() {
            querier.join().map_err(|_| EngineError::Stopped)?;
        }
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.join().map_err(|_| EngineError::Stopped)?;
        }
        drop(self.sampler.take());
        let lsn_last = self.wal.lsn_next() - 1;
        if let Some(error) = self.checkpoint_status.failure.get() {
            return Err(error);
        }
        if let Some(error) = self.wal.error() {
            return Err(wal_error(error));
        }
        // With the final checkpoint holding every record, the WAL is left empty, so the
        // next start reads nothing from it (not the rest of the last segment).
        let emptied = self
            .wal
            .close_covered(self.checkpoint_lsn())
            .map_err(wal_error)?;
        tracing::debug!(emptied, "WAL closed");
        Ok(ShutdownReport {
            state_hash: ledger.state_hash(),
            lsn_last,
            checkpoint_lsn: self.checkpoint_lsn(),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.core.is_some() {
            if let Err(error) = self.stop() {
                tracing::error!(%error, "engine stopped with an error");
            }
        }
    }
}

/// WAL records decoded, with their store reads done, ahead of the one being applied.
const REPLAY_READ_AHEAD_RECORDS: usize = 16;

/// Re-execute the WAL records after the checkpoint, in order, with the same apply code.
///
/// The store reads of each record (what it names of the transfers the start did not
/// load) run on a second thread, ahead of the apply: they depend only on the store and
/// the eviction watermark, which replay never moves, so a record's reads need nothing
/// from the records before it. Reads and apply then overlap, as the read stage and the
/// core do when the engine runs.
fn replay(
    wal: &Wal,
    store: &Store,
    ledger: &mut Ledger,
    checkpoint_lsn: u64,
) -> Result<RecoveryReport, EngineError> {
    let mut report = RecoveryReport {
        checkpoint_lsn,
        records_replayed: 0,
        lsn_last: checkpoint_lsn,
    };
    let through = ledger.evicted_through();
    std::thread::scope(|scope| {
        let (sender, receiver) = crossbeam::channel::bounded(REPLAY_READ_AHEAD_RECORDS);
        let reader = std::thread::Builder::new()
            .name("settled-replay".to_owned())
            .spawn_scoped(scope, move || {
                read_ahead(wal, store, checkpoint_lsn, through, sender)
            })
            .map_err(|source| EngineError::Io {
                operation: "start the replay reader thread",
                path: String::new(),
                source: Arc::new(source),
            })?;
        for (lsn, batch, olds) in receiver {
            // A CRC-valid record may still carry a clock the ledger cannot take.
            batch
                .check_clock(ledger.timestamp_last())
                .map_err(|source| EngineError::Recovery { lsn, source })?;
            assert_eq!(
                ledger.evicted_through(),
                through,
                "replay moved the watermark"
            );
            // Dense after the first record; the first follows the checkpoint unless the
            // operator accepted a WAL that starts later (`check_wal_follows`).
            if report.records_replayed > 0 {
                assert_eq!(lsn, report.lsn_last + 1, "WAL records out of sequence");
            } else {
                assert!(
                    lsn > report.lsn_last,
                    "WAL record {lsn} at or before the checkpoint"
                );
            }
            for (entry, mut old) in batch.entries.iter().zip(olds) {
                record::apply(ledger, batch.now, entry.as_write(), &mut old);
            }
            report.records_replayed += 1;
            report.lsn_last = lsn;
        }
        // The reader stops at the end of the WAL or at its first error, reported here.
        reader.join().expect("the replay reader does not panic")
    })?;
    Ok(report)
}

/// The replay reader: every record after `checkpoint_lsn`, decoded, with the store's
/// answers for each of its entries, in order.
fn read_ahead(
    wal: &Wal,
    store: &Store,
    checkpoint_lsn: u64,
    through: u64,
    records: crossbeam::channel::Sender<(u64, record::Batch, Vec<crate::ledger::OldTransfers>)>,
) -> Result<(), EngineError> {
    for record in wal.replay_after(checkpoint_lsn).map_err(wal_error)? {
        let record = record.map_err(wal_error)?;
        let batch = record::decode(&record.payload).map_err(|source| EngineError::Recovery {
            lsn: record.lsn,
            source,
        })?;
        let olds = batch
            .entries
            .iter()
            .map(|entry| read_stage::read_for_write(store, entry.as_write(), through))
            .collect::<Result<Vec<_>, _>>()
            .map_err(store_error)?;
        if records.send((record.lsn, batch, olds)).is_err() {
            break;
        }
    }
    Ok(())
}

pub(crate) fn store_error(error: StoreError) -> EngineError {
    EngineError::Store(Arc::new(error))
}

pub(crate) fn wal_error(error: WalError) -> EngineError {
    EngineError::Wal(Arc::new(error))
}

/// Everything recovery rebuilt.
pub(crate) struct Recovered {
    pub store: Store,
    pub wal: Wal,
    pub ledger: Ledger,
    pub report: RecoveryReport,
    /// Transfers the checkpoint held (the rest came from the WAL).
    pub transfers_checkpointed: u64,
}

/// Open the store and the WAL of `config.data_dir` and rebuild the ledger: the
/// checkpoint's accounts and pending transfers, then every WAL record after it.
pub(crate) fn recover(config: &EngineConfig) -> Result<Recovered, EngineError> {
    let store_dir = config.data_dir.join("store");
    let wal_dir = config.data_dir.join("wal");
    for dir in [&store_dir, &wal_dir] {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Io {
            operation: "create directory",
            path: dir.display().to_string(),
            source: Arc::new(source),
        })?;
    }
    let store = Store::open(&store_dir, &config.store).map_err(store_error)?;
    // Accounts and pending transfers only: the rest of the history stays in the store.
    let (mut ledger, meta) = store.load_ledger().map_err(store_error)?;
    let transfers_checkpointed = ledger.transfers_count();
    let checkpoint_lsn = meta.map_or(0, |meta| meta.lsn);
    // A brand-new WAL continues numbering after the checkpoint.
    let wal_config = wal::WalConfig {
        first_lsn: checkpoint_lsn + 1,
        ..config.wal.clone()
    };
    let storage = config.wal_storage.0.clone();
    let mut wal =
        Wal::open_with_storage(&wal_dir, wal_config.clone(), storage.clone()).map_err(wal_error)?;
    if !check_wal_follows(&wal, checkpoint_lsn, config.accept_wal_loss)?
        && wal.recovery_report().segments_verified > 0
    {
        // Accepted loss: replaying a WAL that does not go on from the checkpoint would
        // number new records before it (or after a gap). Keep it aside for the operator,
        // and go on from the checkpoint with a fresh one.
        wal.close().map_err(wal_error)?;
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let aside = config
            .data_dir
            .join(format!("wal.lost-{checkpoint_lsn}-{seconds}"));
        std::fs::rename(&wal_dir, &aside).map_err(|source| EngineError::Io {
            operation: "move the WAL aside",
            path: wal_dir.display().to_string(),
            source: Arc::new(source),
        })?;
        tracing::warn!(aside = %aside.display(), "the WAL that did not follow the checkpoint was moved aside; a new one starts after it");
        std::fs::create_dir_all(&wal_dir).map_err(|source| EngineError::Io {
            operation: "create directory",
            path: wal_dir.display().to_string(),
            source: Arc::new(source),
        })?;
        wal = Wal::open_with_storage(&wal_dir, wal_config, storage).map_err(wal_error)?;
    }
    let report = replay(&wal, &store, &mut ledger, checkpoint_lsn)?;
    Ok(Recovered {
        store,
        wal,
        ledger,
        report,
        transfers_checkpointed,
    })
}

/// The WAL must go on from the checkpoint: a WAL is never empty once used (its active
/// segment is never deleted), and its oldest record is at or before the one after the
/// checkpoint. Otherwise acknowledged requests written after the checkpoint are gone:
/// refused, unless the operator said they accept it (`Ok(false)`).
fn check_wal_follows(
    wal: &Wal,
    checkpoint_lsn: u64,
    accept_loss: bool,
) -> Result<bool, EngineError> {
    let found = wal.recovery_report();
    let follows = checkpoint_lsn == 0
        || (found.segments_verified > 0
            && found.lsn_first_retained <= checkpoint_lsn + 1
            && found.lsn_next > checkpoint_lsn);
    if follows {
        return Ok(true);
    }
    let what = format!(
        "the store holds a checkpoint at LSN {checkpoint_lsn}, but the WAL has {} segment(s) \
         holding LSN {} to {}",
        found.segments_verified,
        found.lsn_first_retained,
        found.lsn_next.saturating_sub(1)
    );
    if accept_loss {
        tracing::warn!("{what}; starting anyway (--accept-wal-loss): requests acknowledged after the checkpoint may be lost");
        return Ok(false);
    }
    Err(EngineError::WalLost { what })
}

/// The state a data directory recovers to, without starting anything: for tests and
/// tools that compare it with an expected history.
pub fn recover_ledger(config: &EngineConfig) -> Result<(Ledger, RecoveryReport), EngineError> {
    config.validate()?;
    let recovered = recover(config)?;
    recovered.wal.close().map_err(wal_error)?;
    Ok((recovered.ledger, recovered.report))
}
