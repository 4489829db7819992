//! `EngineHandle`: the cheap, cloneable front door of the engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::channel::{Sender, TrySendError};

use super::core_thread::Submission;
use super::request::{PendingReply, ReplyTo, Request};
use super::{EngineConfig, EngineError, WhenFull};

/// Submits requests to the core from any thread or task.
#[derive(Clone)]
pub struct EngineHandle {
    requests: Sender<Submission>,
    when_full: WhenFull,
    queue_requests_max: u32,
    stopping: Arc<AtomicBool>,
}

impl EngineHandle {
    pub(crate) fn new(requests: Sender<Submission>, config: &EngineConfig) -> EngineHandle {
        EngineHandle {
            requests,
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
    /// `Busy` or submit from a blocking-friendly context.
    pub fn submit(&self, request: Request) -> Result<PendingReply, EngineError> {
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
        let (reply, pending) = PendingReply::channel();
        let submission = Submission::Request {
            request,
            reply: ReplyTo::Caller(reply),
            store_reads: None,
        };
        let sent = match self.when_full {
            WhenFull::Wait => self
                .requests
                .send(submission)
                .map_err(|_| EngineError::ShuttingDown),
            WhenFull::Busy => self
                .requests
                .try_send(submission)
                .map_err(|error| match error {
                    TrySendError::Full(_) => EngineError::Busy {
                        queue_requests_max: self.queue_requests_max,
                    },
                    TrySendError::Disconnected(_) => EngineError::ShuttingDown,
                }),
        };
        sent.map(|()| pending)
    }

    /// Submit and block until the reply arrives.
    pub fn submit_wait(&self, request: Request) -> Result<super::Reply, EngineError> {
        self.submit(request)?.wait()
    }

    /// Refuse new requests and ask the core to finish those already queued.
    pub(crate) fn request_shutdown(&self) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            // Blocks while the queue is full: everything ahead of it gets applied first.
            let _ = self.requests.send(Submission::Shutdown);
        }
    }
}
