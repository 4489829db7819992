//! `EngineHandle`: the cheap, cloneable front door of the engine.
//!
//! The request queue (submitters to the read stage) holds `queue_requests_max` requests.
//! Threads submit with [`EngineHandle::submit`], which blocks or answers `Busy` on a full
//! queue ([`WhenFull`]). Async callers use [`EngineHandle::submit_async`]: it first takes
//! one of `queue_requests_max` slots of a tokio semaphore, so a full queue parks the
//! calling task (first come, first served) without polling, and the send itself then
//! always finds room. The slot travels with the request and is given back when the core
//! takes it off its inbox: the slots bound the async requests waiting anywhere before the
//! core, in the read stage's queue or the core's inbox.
//!
//! A small async write (at most [`SUBMITTER_READS_EVENTS_MAX`] events) skips the read stage:
//! the submitting task does its point reads itself (at most three keys per event, new ids
//! nearly always, which RocksDB's bloom filters answer in memory) and puts it straight into
//! the core's inbox; so do account reads, which read nothing from the store (see
//! [`reads_on_submitting_task`]). That saves a thread hand-off per request, which is most
//! of what a request of one transfer costs: `settle-bench --clients 64 --batch-size 1`
//! went from 51 k to 59 k transfers/s with it (medians of four interleaved runs,
//! 2026-11-28). Larger writes, lookups of transfers (rows that exist, perhaps read from
//! disk) and range reads keep the read stage. What a small create may still cost its
//! task: when it names an evicted id (a retry of an old transfer) or a bloom filter
//! answers falsely, a read of that row, perhaps from disk, at most 48 keys a request. The
//! protocol promises no order between requests in flight together, so the two paths may
//! pass each other; each read is checked by the core against the eviction generation it
//! was made at, as the read stage's are.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use crossbeam::channel::{Sender, TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::core_thread::Submission;
use super::inbox::InboxSender;
use super::query_stage;
use super::read_stage::{load_watermark, read_failed, read_for_request, StoreReads};
use super::request::{OnReply, PendingReply, ReplySender, ReplyTo, Request};
use super::{EngineConfig, EngineError, WhenFull};
use crate::store::Store;

/// Async writes of at most this many events do their own point reads and go straight to
/// the core (see the module comment).
pub const SUBMITTER_READS_EVENTS_MAX: u32 = 16;

/// Whether an async `request` does its store reads on the submitting task and goes
/// straight to the core's inbox, rather than through the read stage's thread.
pub fn reads_on_submitting_task(request: &Request) -> bool {
    match request {
        Request::CreateAccounts(_) | Request::CreateTransfers(_) => {
            request.events_count() <= SUBMITTER_READS_EVENTS_MAX
        }
        // Nothing to read: accounts never leave memory.
        Request::LookupAccounts(_) | Request::QueryAccounts(_) => true,
        Request::LookupTransfers(_)
        | Request::GetAccountTransfers(_)
        | Request::GetAccountBalances(_)
        | Request::QueryTransfers(_) => false,
    }
}

/// What travels on the request queues: a submission and, from async submitters, the queue
/// slot it holds until the core takes it.
pub(crate) struct Admitted {
    pub submission: Submission,
    pub slot: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    /// Taken by the core: the slot goes to the next async submitter waiting for one.
    pub fn into_submission(self) -> Submission {
        drop(self.slot);
        self.submission
    }
}

/// Submits requests to the core from any thread or task.
#[derive(Clone)]
pub struct EngineHandle {
    requests: Sender<Admitted>,
    /// The core's inbox, for small async requests.
    core: InboxSender,
    /// What small async requests read before they go to the core.
    reads: Arc<SubmitterReads>,
    /// Queue slots for async submitters: as many as the queue holds.
    slots: Arc<Semaphore>,
    when_full: WhenFull,
    queue_requests_max: u32,
    /// `true` once the engine is stopping. Submitters hold the read side from their check
    /// of it to their send, shutdown takes the write side to set it: so every request
    /// let in is queued before the shutdown message, and the core answers it before it
    /// stops (none is left in a queue nobody reads).
    stopping: Arc<RwLock<bool>>,
}

/// The store and the core's eviction watermark, as the read stage sees them. The store is
/// held weakly: a handle kept after the engine stopped must not keep RocksDB open (its
/// lock would refuse the next open of the directory).
pub(crate) struct SubmitterReads {
    pub store: std::sync::Weak<Store>,
    pub evicted_through: Arc<std::sync::atomic::AtomicU64>,
    pub eviction_generation: Arc<std::sync::atomic::AtomicU64>,
}

impl SubmitterReads {
    fn read(&self, request: &Request) -> Result<StoreReads, EngineError> {
        let (through, generation) =
            load_watermark(&self.evicted_through, &self.eviction_generation);
        let store = self.store.upgrade().ok_or(EngineError::ShuttingDown)?;
        read_for_request(&store, request, through, generation).map_err(read_failed)
    }
}

/// Why [`EngineHandle::submit_async`] gave up waiting for a queue slot.
pub enum SlotWait {
    /// `queue_full_wait` passed with the queue full.
    TimedOut,
    /// The caller's `cancel` future completed first (a shutdown, say).
    Cancelled,
}

impl EngineHandle {
    pub(crate) fn new(
        requests: Sender<Admitted>,
        core: InboxSender,
        reads: SubmitterReads,
        config: &EngineConfig,
    ) -> EngineHandle {
        EngineHandle {
            requests,
            core,
            reads: Arc::new(reads),
            slots: Arc::new(Semaphore::new(config.queue_requests_max as usize)),
            when_full: config.when_full,
            queue_requests_max: config.queue_requests_max,
            stopping: Arc::new(RwLock::new(false)),
        }
    }

    /// Queue a request. The reply arrives once the batch that applied it is durable.
    ///
    /// Fails at once (nothing applied) when the request is over a limit, when the engine
    /// is stopping, or, with [`WhenFull::Busy`], when the queue is full. With
    /// [`WhenFull::Wait`] a full queue blocks the calling thread: async callers should use
    /// [`EngineHandle::submit_async`].
    pub fn submit(&self, request: Request) -> Result<PendingReply, EngineError> {
        check_events(&request)?;
        let _open = self.open()?;
        let (reply, pending) = PendingReply::channel();
        let admitted = Admitted {
            submission: Submission::request(request, reply),
            slot: None,
        };
        let sent = match self.when_full {
            WhenFull::Wait => self
                .requests
                .send(admitted)
                .map_err(|_| EngineError::ShuttingDown),
            WhenFull::Busy => self.try_send(admitted),
        };
        sent.map(|()| pending)
    }

    /// Queue a request from async code; `on_reply` is called with its reply once the batch
    /// that applied it is durable (see [`OnReply`]: on the WAL writer or the core thread,
    /// so it must only hand the reply on).
    ///
    /// While the queue is full the task waits for a slot, in arrival order, for at most
    /// `queue_full_wait` or until `cancel` completes; `Ok(Err(_))` says which ended the
    /// wait. `Err` is a refusal (over a limit, stopping); either way nothing was applied
    /// and `on_reply` is not called.
    pub async fn submit_async(
        &self,
        request: Request,
        on_reply: OnReply,
        queue_full_wait: Duration,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<Result<(), SlotWait>, EngineError> {
        check_events(&request)?;
        // Refused before waiting for a slot; checked again, held, once one is taken.
        if self.is_stopping() {
            return Err(EngineError::ShuttingDown);
        }
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                crate::metrics::queue_full_wait();
                let acquire = self.slots.clone().acquire_owned();
                tokio::select! {
                    acquired = tokio::time::timeout(queue_full_wait, acquire) => match acquired {
                        Ok(Ok(slot)) => slot,
                        // The semaphore is never closed.
                        Ok(Err(_)) => return Err(EngineError::ShuttingDown),
                        Err(_) => return Ok(Err(SlotWait::TimedOut)),
                    },
                    () = cancel => return Ok(Err(SlotWait::Cancelled)),
                }
            }
        };
        // Held to the send below; no await from here on.
        let _open = self.open()?;
        if reads_on_submitting_task(&request) {
            debug_assert!(!query_stage::is_range_read(&request));
            let store_reads = self.reads.read(&request)?;
            let admitted = Admitted {
                submission: Submission::Request {
                    request,
                    reply: ReplyTo::Caller(ReplySender::callback(on_reply)),
                    store_reads: Some(Box::new(store_reads)),
                },
                slot: Some(slot),
            };
            return self.send_to_core(admitted).map(Ok);
        }
        let admitted = Admitted {
            submission: Submission::request(request, ReplySender::callback(on_reply)),
            slot: Some(slot),
        };
        // Room is certain unless threads also submit to this engine (they take no slot);
        // then a full queue is answered `Busy` rather than blocking the runtime.
        self.try_send(admitted).map(Ok)
    }

    /// Put a request that carries its reads straight into the core's inbox. Room is
    /// certain as in [`EngineHandle::submit_async`]: every async request holds a slot until
    /// the core takes it, and the inbox holds as many as there are slots.
    fn send_to_core(&self, admitted: Admitted) -> Result<(), EngineError> {
        self.core
            .try_send(admitted)
            .map_err(|error| self.refused(error))
    }

    /// Submit and block until the reply arrives.
    pub fn submit_wait(&self, request: Request) -> Result<super::Reply, EngineError> {
        self.submit(request)?.wait()
    }

    /// Refuse new requests and ask the core to finish those already queued.
    pub(crate) fn request_shutdown(&self) {
        let first = {
            let mut stopping = self
                .stopping
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            !std::mem::replace(&mut *stopping, true)
        };
        if first {
            // Blocks while the queue is full: everything ahead of it gets applied first.
            let shutdown = Admitted {
                submission: Submission::Shutdown,
                slot: None,
            };
            if let Err(unsent) = self.requests.send(shutdown) {
                // The read stage is gone (it only stops after a shutdown, or by a bug):
                // the core still has to hear it, and handles keep its inbox open, so
                // it would never see its queue disconnect.
                let _ = self.core.send(unsent.into_inner());
            }
        }
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The read side of `stopping` while it is still `false`: hold it until the request
    /// is queued.
    fn open(&self) -> Result<RwLockReadGuard<'_, bool>, EngineError> {
        let stopping = self.stopping.read().unwrap_or_else(PoisonError::into_inner);
        if *stopping {
            return Err(EngineError::ShuttingDown);
        }
        Ok(stopping)
    }

    fn try_send(&self, admitted: Admitted) -> Result<(), EngineError> {
        self.requests
            .try_send(admitted)
            .map_err(|error| self.refused(error))
    }

    /// A submission either queue refused is dropped here: its reply sender answers
    /// nobody, since the caller learns of the refusal from the error instead.
    fn refused(&self, error: TrySendError<Admitted>) -> EngineError {
        let (admitted, refusal) = match error {
            TrySendError::Full(admitted) => (
                admitted,
                EngineError::Busy {
                    queue_requests_max: self.queue_requests_max,
                },
            ),
            TrySendError::Disconnected(admitted) => (admitted, EngineError::ShuttingDown),
        };
        admitted.submission.forget_reply();
        refusal
    }
}

/// The refusal that needs no queue: more events than the operation allows.
fn check_events(request: &Request) -> Result<(), EngineError> {
    let operation = request.operation();
    let count = request.events_count();
    if count > operation.events_max() {
        return Err(EngineError::TooManyEvents {
            operation,
            count,
            max: operation.events_max(),
        });
    }
    Ok(())
}
