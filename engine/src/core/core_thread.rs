//! The core thread: the only writer of ledger state.
//!
//! Each turn it drains whatever requests are waiting (up to `batch_events_max` events),
//! reads the clock once, injects an expiry step when a pending transfer's timeout has
//! passed, applies everything in arrival order, appends the batch's inputs to the WAL as
//! one record, and parks the replies until the WAL says that record is durable. It never
//! waits for an fsync while there is work: the WAL writer syncs group after group while
//! the core applies the next batches, and replies go out as `durable_lsn` passes them,
//! sent by the WAL writer right after each sync unless the core is applying a batch
//! (see `outbox`).
//! Every `checkpoint_batches` batches (or `checkpoint_interval`) it hands the changed
//! state to the checkpointer thread without waiting for RocksDB; only when memory is at
//! its bound (`throttle`) or at shutdown does it wait for the checkpointer to take it.
//!
//! What to do when is decided by the [`Pipeline`] (`pipeline.rs`, pure, no I/O); this
//! thread feeds it events (a batch appended, the durable LSN, a checkpoint written) and
//! performs what it returns (send replies, hand over a checkpoint, evict, wait). The
//! pipeline sits in an [`Outbox`] that the WAL writer shares, only to release replies.
//!
//! Requests arrive on its [`Inbox`] (from the read stage, or straight from async
//! submitters for small requests); it parks there when idle. The WAL writer rings the
//! same doorbell only when it leaves the query stage's parts for the core, or stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError};
use wal::{Durability, Wal};

use super::checkpointer::{CheckpointJob, CheckpointQueue, CheckpointStatus};
use super::inbox::{Inbox, Wake, Woken};
use super::outbox::{Outbox, Releaser};
use super::pipeline::{Pipeline, PipelineStart, Throttle, ThrottleInput};
use super::query_stage::{self, RecentPart};
use super::read_stage::{read_for_request, StoreReadData, StoreReads};
use super::record::{apply, RecordBuilder, Write};
use super::request::{Reply, ReplySender, ReplyTo, Request};
use super::submit::Admitted;
use super::{wal_error, EngineConfig, EngineError, RecoveryReport};
use crate::ledger::{Ledger, OldTransfers};
use crate::store::{CheckpointMeta, Store};

/// What travels on the request queue.
pub(crate) enum Submission {
    Request {
        request: Request,
        /// The submitter, or for a range read the query stage (see `query_stage`).
        reply: ReplyTo,
        /// Filled in by the read stage.
        store_reads: Option<Box<StoreReads>>,
    },
    /// Finish everything queued before this, make it durable, checkpoint, stop.
    Shutdown,
}

impl Submission {
    pub(crate) fn request(request: Request, reply: ReplySender) -> Submission {
        Submission::Request {
            request,
            reply: ReplyTo::Caller(reply),
            store_reads: None,
        }
    }

    /// Drop a submission that was never queued, without answering it.
    pub(crate) fn forget_reply(self) {
        if let Submission::Request {
            reply: ReplyTo::Caller(reply),
            ..
        } = self
        {
            reply.disarm();
        }
    }
}

/// A reply with the result it carries once released.
pub(crate) type Answer = (ReplyTo, Result<Reply, EngineError>);

/// A request with its reply channel and what the read stage read for it.
type Queued = (Request, ReplyTo, Option<Box<StoreReads>>);

/// What the core needs to move transfers out of memory.
pub(crate) struct Eviction {
    pub store: Arc<Store>,
    pub checkpoint_status: Arc<CheckpointStatus>,
    /// The ledger's eviction watermark, for the read stage.
    pub evicted_through: Arc<AtomicU64>,
    /// Transfers the store's checkpoint held at start: the pipeline's starting value
    /// (it keeps the count from then on).
    pub transfers_checkpointed: u64,
    /// The ledger's eviction generation, published with the watermark (see `read_stage`).
    pub eviction_generation: Arc<AtomicU64>,
    /// The ledger's resident transfers after the latest eviction, for operators.
    pub transfers_resident: Arc<AtomicU64>,
    /// Range reads split at the watermark: memory's part goes to the query stage here
    /// (see `query_stage`). The core holds the only sender.
    pub query_parts: Sender<RecentPart>,
}

pub(crate) struct CoreThread {
    config: EngineConfig,
    ledger: Ledger,
    wal: Arc<Wal>,
    requests: Inbox,
    /// Rings the inbox: handed to the WAL's durability callback when the core starts.
    bell: Option<Wake>,
    checkpoints: CheckpointQueue,
    eviction: Eviction,
    /// The pipeline makes every decision: batching, parking until durable, checkpoints
    /// due, eviction marks, throttling (see `pipeline`); this thread performs what it
    /// asks. The WAL writer shares it to release replies (see `outbox`).
    outbox: Arc<Outbox>,
    /// The monotonic clock the pipeline's checkpoint interval is measured on.
    started: Instant,
    record: RecordBuilder,
    /// A request taken from the queue that did not fit the previous batch.
    carried: Option<Queued>,
    /// Set once the WAL fails: state in memory may be ahead of the log, so nothing more
    /// is applied or answered from it.
    failed: Option<EngineError>,
    /// Set when the checkpointer is gone: throttling would wait forever.
    throttle_off: bool,
    shutdown_seen: bool,
}

impl CoreThread {
    pub fn new(
        config: EngineConfig,
        ledger: Ledger,
        wal: Arc<Wal>,
        (requests, bell): (Inbox, Wake),
        checkpoints: CheckpointQueue,
        eviction: Eviction,
        recovery: RecoveryReport,
    ) -> CoreThread {
        let pipeline = Pipeline::new(
            config.pipeline(),
            PipelineStart {
                lsn_last: recovery.lsn_last,
                checkpoint_lsn: recovery.checkpoint_lsn,
                // Replayed records are not in the store yet: they count towards a checkpoint.
                records_replayed: recovery.records_replayed,
                transfers_checkpointed: eviction.transfers_checkpointed,
                now_ns: 0,
            },
        );
        CoreThread {
            config,
            ledger,
            wal,
            requests,
            bell: Some(bell),
            checkpoints,
            eviction,
            outbox: Arc::new(Outbox::new(pipeline)),
            started: Instant::now(),
            record: RecordBuilder::default(),
            carried: None,
            failed: None,
            throttle_off: false,
            shutdown_seen: false,
        }
    }

    /// Runs until shutdown; returns the final ledger.
    pub fn run(mut self) -> Ledger {
        let durable = self.hear_durability();
        while !self.shutdown_seen {
            self.throttle();
            let next = match self.carried.take() {
                Some((request, reply, store_reads)) => Some(Submission::Request {
                    request,
                    reply,
                    store_reads,
                }),
                None => self.next_submission(&durable),
            };
            match next {
                Some(Submission::Request {
                    request,
                    reply,
                    store_reads,
                }) => {
                    self.run_batch(Some((request, reply, store_reads)));
                }
                Some(Submission::Shutdown) => self.shutdown_seen = true,
                None => self.run_batch(None),
            }
            // The batch's flag down first, then the release: it sends what the writer left
            // to the applying core (see `Outbox::end_applying`).
            self.outbox.end_applying();
            self.release_durable();
            self.maybe_checkpoint(false);
            self.evict_checkpointed();
            self.eviction.checkpoint_status.disk.check_due();
        }
        self.stop()
    }

    /// The pipeline's clock: nanoseconds since this thread started (monotonic).
    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Subscribe to the WAL's durability. The writer releases the replies itself (waking
    /// the core only to send them would put a thread hand-off on every request's path),
    /// except while the core applies a batch: then the core releases them when the batch
    /// ends, moments later, and the sends stay off the writer's path to its next sync
    /// when the cores are busy (see `Outbox::core_applying`). The writer rings the core
    /// only when it leaves the query stage's parts, or when it stops; the returned
    /// channel says so, its sender dropped when the writer stops.
    fn hear_durability(&mut self) -> Receiver<u64> {
        let bell = self.bell.take().expect("run is called once");
        let (look, durable) = crossbeam::channel::bounded(1);
        let look = std::sync::Mutex::new(Some(look));
        let outbox = Arc::clone(&self.outbox);
        self.wal.on_durable(Box::new(move |event| {
            let lsn = match event {
                Durability::Durable(lsn) => {
                    // An applying core sees `lsn` when its batch ends.
                    if outbox.core_applying() || !outbox.durable(lsn, Releaser::WalWriter) {
                        return;
                    }
                    Some(lsn)
                }
                Durability::Stopped => None,
            };
            let mut look = look
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match lsn {
                // Full already holds a wake-up for the same purpose.
                Some(lsn) => {
                    if let Some(sender) = look.as_ref() {
                        let _ = sender.try_send(lsn);
                    }
                }
                None => drop(look.take()),
            }
            drop(look);
            bell();
        }));
        durable
    }

    /// Learn which checkpoints were written and move what they hold out of memory.
    fn evict_checkpointed(&mut self) {
        // The written LSN first, the durable LSN after: a checkpoint is durable before
        // it is written, so the pipeline knows it durable when it learns it written.
        let written_lsn = self.eviction.checkpoint_status.lsn.load(Ordering::Acquire);
        self.release_durable();
        let Some(checkpoint_mark) = self.outbox.pipeline().checkpoint_written(written_lsn) else {
            return;
        };
        let evicted = self
            .ledger
            .evict(checkpoint_mark, self.config.transfers_resident_max);
        // The watermark first: a store read that sees the new generation sees it too.
        self.eviction
            .evicted_through
            .store(self.ledger.evicted_through(), Ordering::Release);
        self.eviction
            .eviction_generation
            .store(self.ledger.eviction_generation(), Ordering::Release);
        let resident = self.ledger.transfers_resident();
        self.eviction
            .transfers_resident
            .store(resident, Ordering::Relaxed);
        if evicted > 0 {
            tracing::debug!(
                evicted,
                resident = self.ledger.transfers_resident(),
                through = self.ledger.evicted_through(),
                "transfers evicted"
            );
        }
    }

    fn throttle_input(&self) -> ThrottleInput {
        let status = &self.eviction.checkpoint_status;
        ThrottleInput {
            transfers_count: self.ledger.transfers_count(),
            checkpoint_rate: status.transfers_per_second.load(Ordering::Relaxed),
            checkpointer_gone: self.throttle_off,
        }
    }

    /// Slow down, then stop, taking requests while too many transfers wait for a
    /// checkpoint (the pipeline decides): memory stays bounded when ingest outruns
    /// RocksDB, and the full queue pushes back on clients.
    fn throttle(&mut self) {
        let mut warned = false;
        loop {
            self.observe_checkpointer();
            let decision = self.outbox.pipeline().throttle(self.throttle_input());
            match decision {
                Throttle::Go => return,
                Throttle::Pace { delay_ns } => return self.pace(delay_ns),
                Throttle::Hold | Throttle::ForceCheckpoint => {}
            }
            if !warned {
                tracing::warn!(
                    uncheckpointed = self
                        .outbox
                        .pipeline()
                        .transfers_uncheckpointed(self.ledger.transfers_count()),
                    "checkpoints fall behind; holding requests until one is written"
                );
                warned = true;
            }
            if decision == Throttle::ForceCheckpoint {
                self.maybe_checkpoint(true);
                if self.outbox.pipeline().checkpoints_in_flight() == 0 {
                    // The checkpointer is gone: no checkpoint will be written, waiting would hang.
                    tracing::error!("checkpointer stopped; memory is no longer bounded");
                    self.throttle_off = true;
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
            self.evict_checkpointed();
        }
    }

    /// Wait `delay_ns` after a batch (the pipeline's pace towards the checkpointer's
    /// rate); replies keep going out while it waits.
    fn pace(&mut self, delay_ns: u64) {
        let deadline = Instant::now() + Duration::from_nanos(delay_ns);
        metrics::counter!(crate::metrics::CORE_PACED_TOTAL).increment(1);
        loop {
            self.evict_checkpointed();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(1)));
        }
    }

    /// Wait for a request, the WAL writer's call (parts left, or the WAL stopped), or the
    /// next deadline.
    fn next_submission(&mut self, durable: &Receiver<u64>) -> Option<Submission> {
        let timeout = Duration::from_nanos(
            self.outbox
                .pipeline()
                .idle_timeout_ns((self.config.clock)(), self.ledger.expiry_timestamp_next()),
        );
        // The WAL writer releases replies itself; the core hears of durability only when
        // something is left for it, or when the WAL stops (until it fails).
        let durable = self.failed.is_none().then_some(durable);
        match self.requests.wait(durable, timeout) {
            Woken::Submission(admitted) => Some(admitted.into_submission()),
            Woken::Durable | Woken::TimedOut => None,
            Woken::DurableClosed => {
                self.fail_from_wal();
                None
            }
            Woken::Disconnected => Some(Submission::Shutdown),
        }
    }

    /// One core batch: the first request (if any) plus whatever else is waiting.
    fn run_batch(&mut self, first: Option<Queued>) {
        self.outbox.begin_applying();
        let mut batch: Vec<Queued> = first.into_iter().collect();
        self.drain_into(&mut batch);
        if let Some(error) = &self.failed {
            for (_, reply, _) in batch {
                reply.send(Err(error.clone()), &self.eviction.query_parts);
            }
            return;
        }
        self.observe_checkpointer();
        let now = (self.config.clock)();
        self.record.begin(now);
        if self
            .outbox
            .pipeline()
            .expiry_due(now, self.ledger.expiry_timestamp_next())
        {
            self.record.push(Write::Expire);
            let mut nothing = OldTransfers::new(self.ledger.evicted_through());
            apply(&mut self.ledger, now, Write::Expire, &mut nothing);
        }
        let mut replies = Vec::with_capacity(batch.len());
        let events: u64 = batch
            .iter()
            .map(|(request, _, _)| u64::from(request.events_count()))
            .sum();
        let apply_started = Instant::now();
        for (request, mut reply, store_reads) in batch {
            // Range reads come in the order of requests, their store part left to the query
            // stage, which answers them; every other request carries its own reads.
            match &mut reply {
                ReplyTo::QueryStage { through, .. } => {
                    assert!(query_stage::is_range_read(&request) && store_reads.is_none());
                    *through = self.ledger.evicted_through();
                }
                ReplyTo::Caller(_) => assert!(!query_stage::is_range_read(&request)),
            }
            replies.push((reply, self.execute(now, request, store_reads)));
        }
        self.record_batch(events, apply_started.elapsed());
        let appended = if self.record.is_empty() {
            None
        } else {
            match self.wal.append(self.record.finish()) {
                Ok(lsn) => Some(lsn),
                Err(error) => {
                    self.fail(wal_error(error), replies);
                    return;
                }
            }
        };
        // Parked behind the newest record; the pipeline asserts the LSN is dense.
        let wal = &self.wal;
        self.outbox.batch_appended(
            appended,
            events,
            replies,
            || wal.durable_lsn(),
            &self.eviction.query_parts,
        );
    }

    /// While checkpoints keep failing, writes are refused before they touch the ledger:
    /// nothing more can be checkpointed, so memory and the WAL would grow without bound.
    /// Reads go on, and writes come back once a checkpoint is written again.
    fn refuse_write(&self, request: &Request) -> Option<EngineError> {
        let writes = matches!(
            request,
            Request::CreateAccounts(_) | Request::CreateTransfers(_)
        );
        if !writes {
            return None;
        }
        if let Some(reason) = self.eviction.checkpoint_status.disk.writes_held() {
            return Some(EngineError::Unavailable { reason });
        }
        if !self.outbox.pipeline().writes_refused() {
            return None;
        }
        let error = self
            .eviction
            .checkpoint_status
            .failure
            .get()
            .map_or_else(|| "no detail".to_owned(), |error| error.to_string());
        Some(EngineError::Unavailable {
            reason: format!("checkpoints to disk are failing ({error}); reads are served"),
        })
    }

    /// Tell the pipeline whether checkpoints keep failing (the checkpointer's status).
    fn observe_checkpointer(&mut self) {
        let failing = self.eviction.checkpoint_status.failure.is_failing();
        self.outbox.pipeline().checkpoints_failing(failing);
    }

    /// Per batch, never per event: a handful of atomic updates next to a batch's work.
    fn record_batch(&self, events: u64, apply: Duration) {
        use crate::metrics as m;
        metrics::counter!(m::CORE_BATCHES_TOTAL).increment(1);
        metrics::histogram!(m::CORE_BATCH_EVENTS).record(events as f64);
        metrics::histogram!(m::CORE_BATCH_APPLY_SECONDS).record(apply.as_secs_f64());
        metrics::gauge!(m::CORE_QUEUE_REQUESTS).set(self.requests.len() as f64);
        let ledger = &self.ledger;
        let resident = ledger.transfers_resident();
        let uncheckpointed = self
            .outbox
            .pipeline()
            .transfers_uncheckpointed(ledger.transfers_count());
        metrics::gauge!(m::TRANSFERS_RESIDENT).set(resident as f64);
        metrics::gauge!(m::TRANSFERS_CHECKPOINTED_RESIDENT)
            .set(resident.saturating_sub(uncheckpointed) as f64);
        metrics::gauge!(m::TRANSFERS_PENDING).set(ledger.transfers_pending() as f64);
        metrics::gauge!(m::EXPIRATIONS_PENDING).set(ledger.expirations_pending() as f64);
        metrics::gauge!(m::FAILED_IDS).set(ledger.failed_ids_count() as f64);
    }

    /// Take waiting requests while the pipeline says they fit the batch.
    fn drain_into(&mut self, batch: &mut Vec<Queued>) {
        let mut events: u64 = batch
            .iter()
            .map(|(r, _, _)| u64::from(r.events_count()))
            .sum();
        while self.outbox.pipeline().batch_has_room(events) {
            match self.requests.try_recv().map(Admitted::into_submission) {
                Ok(Submission::Request {
                    request,
                    reply,
                    store_reads,
                }) => {
                    let count = u64::from(request.events_count());
                    if !self.outbox.pipeline().fits(events, count) {
                        self.carried = Some((request, reply, store_reads));
                        return;
                    }
                    events += count;
                    batch.push((request, reply, store_reads));
                }
                Ok(Submission::Shutdown) => {
                    // Requests queued after a shutdown are refused by `stop`.
                    self.shutdown_seen = true;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Apply one request; writes go into the batch's WAL record first. Evicted transfers
    /// it names come from the read stage, or are read here if the core evicted more
    /// since (a store error then fails this request alone, before anything is applied).
    fn execute(
        &mut self,
        now: u64,
        request: Request,
        store_reads: Option<Box<StoreReads>>,
    ) -> Result<Reply, EngineError> {
        if let Some(refused) = self.refuse_write(&request) {
            return Err(refused);
        }
        let through = self.ledger.evicted_through();
        if query_stage::is_range_read(&request) {
            return Ok(self.recent_part(request, through));
        }
        execute_request(
            &mut self.ledger,
            &self.eviction.store,
            &mut self.record,
            now,
            request,
            store_reads,
        )
    }

    /// Memory's part of a range read: what it selects after the watermark `through`, in
    /// the filter's order and within its limit. The query stage joins the store's part
    /// (at or before `through`) to it; the core never scans the store.
    fn recent_part(&self, request: Request, through: u64) -> Reply {
        let ledger = &self.ledger;
        match request {
            Request::GetAccountTransfers(filter) => {
                Reply::Transfers(ledger.get_account_transfers_with(&filter, through, Vec::new()))
            }
            Request::GetAccountBalances(filter) => {
                Reply::Balances(ledger.get_account_balances_with(&filter, through, Vec::new()))
            }
            Request::QueryTransfers(filter) => {
                Reply::Transfers(ledger.query_transfers_with(&filter, through, Vec::new()))
            }
            other => unreachable!("{:?} is not a range read", other.operation()),
        }
    }

    /// Send what the WAL made durable and its writer has not sent yet, and the query
    /// stage's parts it left for the core.
    fn release_durable(&mut self) {
        self.outbox.durable(
            self.wal.durable_lsn(),
            Releaser::Core(&self.eviction.query_parts),
        );
        // Checked against the WAL itself, read after the release: whatever the pipeline
        // released is at or below an LSN the WAL reports durable.
        let released_through = self.outbox.pipeline().lsn_durable();
        assert!(
            released_through <= self.wal.durable_lsn(),
            "replies released through LSN {released_through} with the WAL durable to {}",
            self.wal.durable_lsn()
        );
        if self.outbox.pipeline().has_parked() && self.wal.error().is_some() {
            self.fail_from_wal();
        }
    }

    fn fail_from_wal(&mut self) {
        let error = self.wal.error().map_or(EngineError::Stopped, wal_error);
        self.fail(error, Vec::new());
    }

    /// The WAL failed: nothing not yet durable may be acknowledged, and the in-memory
    /// state may be ahead of the log, so the engine stops serving until restarted.
    fn fail(&mut self, error: EngineError, replies: Vec<Answer>) {
        tracing::error!(%error, "engine failed; restart to recover from the WAL");
        self.outbox.wal_failed(
            self.wal.durable_lsn(),
            &error,
            replies,
            &self.eviction.query_parts,
        );
        self.failed = Some(error);
    }

    /// Hand the changes since the last checkpoint to the checkpointer when the pipeline
    /// says one is due, unless it is still busy with the previous one (then they keep
    /// accumulating). `force` waits for room.
    fn maybe_checkpoint(&mut self, force: bool) {
        let now_ns = self.now_ns();
        let queue_has_room = !self.checkpoints.jobs.is_full();
        let Some(lsn) = self
            .outbox
            .pipeline()
            .checkpoint_due(now_ns, queue_has_room, force)
        else {
            return;
        };
        let meta = CheckpointMeta {
            lsn,
            timestamp_last: self.ledger.timestamp_last(),
        };
        if let Ok(changes) = self.checkpoints.emptied.try_recv() {
            self.ledger.recycle_changes(changes);
        }
        let job = CheckpointJob {
            meta,
            changes: self.ledger.take_changes(),
        };
        let sent = if force {
            self.checkpoints.jobs.send(job).is_ok()
        } else {
            match self.checkpoints.jobs.try_send(job) {
                Ok(()) => true,
                Err(TrySendError::Disconnected(_)) => false,
                // Only this thread sends, and the queue had room a moment ago: a job is
                // never dropped while counted as taken.
                Err(TrySendError::Full(_)) => unreachable!("the checkpoint queue filled by itself"),
            }
        };
        if sent {
            self.outbox
                .pipeline()
                .checkpoint_taken(lsn, self.ledger.checkpoint_mark(), now_ns);
        }
    }

    /// Graceful end: everything applied becomes durable and answered, a final checkpoint
    /// is handed over, and requests that arrived after the shutdown are refused.
    fn stop(mut self) -> Ledger {
        // A checkpointer retrying a failure gives up now: the final checkpoint below is
        // then not written (the WAL keeps everything) instead of waiting for a disk.
        self.eviction
            .checkpoint_status
            .stopping
            .store(true, Ordering::Release);
        let lsn_last = self.outbox.pipeline().lsn_last();
        if self.failed.is_none() && lsn_last > 0 {
            if let Err(error) = self.wal.wait_durable(lsn_last) {
                self.fail(wal_error(error), Vec::new());
            }
        }
        // The core hears no more rings: it waits for a release the writer is still
        // sending, and sends the query stage's parts it leaves.
        self.outbox
            .last_release(self.wal.durable_lsn(), &self.eviction.query_parts);
        self.release_durable();
        self.maybe_checkpoint(true);
        while let Ok(admitted) = self.requests.try_recv() {
            if let Submission::Request { reply, .. } = admitted.into_submission() {
                reply.send(Err(EngineError::ShuttingDown), &self.eviction.query_parts);
            }
        }
        self.ledger
    }
}

/// Apply one request that is not a range read (the core's and the simulation's path):
/// writes go into the batch's WAL record `record` first. Evicted transfers it names come
/// from `store_reads` (the read stage's), or are read here if the ledger evicted more
/// since (a store error then fails this request alone, before anything is applied).
pub(crate) fn execute_request(
    ledger: &mut Ledger,
    store: &Store,
    record: &mut RecordBuilder,
    now: u64,
    request: Request,
    store_reads: Option<Box<StoreReads>>,
) -> Result<Reply, EngineError> {
    let through = ledger.evicted_through();
    let store_reads = match store_reads {
        Some(store_reads) if store_reads.generation == ledger.eviction_generation() => *store_reads,
        _ => read_for_request(store, &request, through, ledger.eviction_generation())
            .map_err(|error| EngineError::Store(Arc::new(error)))?,
    };
    // The watermark only moves with the generation.
    debug_assert_eq!(store_reads.through, through);
    let reply = match (request, store_reads.data) {
        (Request::CreateAccounts(accounts), StoreReadData::Transfers(mut old)) => {
            let write = Write::CreateAccounts(&accounts);
            if !accounts.is_empty() {
                record.push(write);
            }
            Reply::Created(apply(ledger, now, write, &mut old))
        }
        (Request::CreateTransfers(transfers), StoreReadData::Transfers(mut old)) => {
            let write = Write::CreateTransfers(&transfers);
            if !transfers.is_empty() {
                record.push(write);
            }
            Reply::Created(apply(ledger, now, write, &mut old))
        }
        (Request::LookupAccounts(ids), _) => Reply::Accounts(ledger.lookup_accounts(&ids)),
        (Request::LookupTransfers(ids), StoreReadData::Transfers(old)) => {
            Reply::Transfers(ledger.lookup_transfers_with(&ids, &old))
        }
        (Request::QueryAccounts(filter), _) => Reply::Accounts(ledger.query_accounts(&filter)),
        (request, data) => unreachable!(
            "read stage read {data:?} for a {:?} request",
            request.operation()
        ),
    };
    Ok(reply)
}
