//! `EngineHandle`: the cheap, cloneable front door of the engine.
//!
//! The request queue (submitters to the read stage) holds `queue_requests_max` requests.
//! Threads submit with [`EngineHandle::submit`], which blocks or answers `Busy` on a full
//! queue ([`WhenFull`]). Async callers use [`EngineHandle::submit_async`]: it first takes
//! one of `queue_requests_max` slots of a tokio semaphore, so a full queue parks the
//! calling task (first come, first served) without polling, and the send itself then
//! always finds room. The slot travels with the request and is given back when the read
//! stage takes it off the queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Sender, TrySendError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::core_thread::Submission;
use super::request::{OnReply, PendingReply, ReplySender, Request};
use super::{EngineConfig, EngineError, WhenFull};

/// What travels on the request queue: a submission and, from async submitters, the queue
/// slot it holds.
pub(crate) struct Admitted {
    pub submission: Submission,
    pub slot: Option<OwnedSemaphorePermit>,
}

/// Submits requests to the core from any thread or task.
#[derive(Clone)]
pub struct EngineHandle {
    requests: Sender<Admitted>,
    /// Queue slots for async submitters: as many as the queue holds.
    slots: Arc<Semaphore>,
    when_full: WhenFull,
    queue_requests_max: u32,
    stopping: Arc<AtomicBool>,
}

/// Why [`EngineHandle::submit_async`] gave up waiting for a queue slot.
pub enum SlotWait {
    /// `queue_full_wait` passed with the queue full.
    TimedOut,
    /// The caller's `cancel` future completed first (a shutdown, say).
    Cancelled,
}

impl EngineHandle {
    pub(crate) fn new(requests: Sender<Admitted>, config: &EngineConfig) -> EngineHandle {
        EngineHandle {
            requests,
            slots: Arc::new(Semaphore::new(config.queue_requests_max as usize)),
            when_full: config.when_full,
            queue_requests_max: config.queue_requests_max,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Queue a request. The reply arrives once the batch that applied it is durable.
    ///
    /// Fails at once (nothing applied) when the request is over a limit, when the engine
    /// is stopping, or, with [`WhenFull::Busy`], when the queue is full. With
    /// [`WhenFull::Wait`] a full queue blocks the calling thread: async callers should use
    /// [`EngineHandle::submit_async`].
    pub fn submit(&self, request: Request) -> Result<PendingReply, EngineError> {
        self.check(&request)?;
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
    /// that applied it is durable (see [`OnReply`]: on the core thread, so it must only
    /// hand the reply on).
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
        self.check(&request)?;
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
        if self.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        let admitted = Admitted {
            submission: Submission::request(request, ReplySender::callback(on_reply)),
            slot: Some(slot),
        };
        // Room is certain unless threads also submit to this engine (they take no slot);
        // then a full queue is answered `Busy` rather than blocking the runtime.
        self.try_send(admitted).map(Ok)
    }

    /// Submit and block until the reply arrives.
    pub fn submit_wait(&self, request: Request) -> Result<super::Reply, EngineError> {
        self.submit(request)?.wait()
    }

    /// Refuse new requests and ask the core to finish those already queued.
    pub(crate) fn request_shutdown(&self) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            // Blocks while the queue is full: everything ahead of it gets applied first.
            let _ = self.requests.send(Admitted {
                submission: Submission::Shutdown,
                slot: None,
            });
        }
    }

    /// The refusals that need no queue: over a limit, or stopping.
    fn check(&self, request: &Request) -> Result<(), EngineError> {
        let operation = request.operation();
        let count = request.events_count();
        if count > operation.events_max() {
            return Err(EngineError::TooManyEvents {
                operation,
                count,
                max: operation.events_max(),
            });
        }
        if self.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        Ok(())
    }

    fn try_send(&self, admitted: Admitted) -> Result<(), EngineError> {
        // A refused submission is dropped here: its reply sender answers nobody, since the
        // caller learns of the refusal from the error instead.
        self.requests
            .try_send(admitted)
            .map_err(|error| match error {
                TrySendError::Full(admitted) => {
                    admitted.submission.forget_reply();
                    EngineError::Busy {
                        queue_requests_max: self.queue_requests_max,
                    }
                }
                TrySendError::Disconnected(admitted) => {
                    admitted.submission.forget_reply();
                    EngineError::ShuttingDown
                }
            })
    }
}
