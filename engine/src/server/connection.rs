//! One client connection: a reader that validates frames and submits requests, a writer
//! task that sends replies in whatever order they become durable.
//!
//! ```text
//! socket ─read─▶ FrameReader ─▶ handshake / check / decode ─▶ EngineHandle::submit
//!                                                                  │ PendingReply
//!                                                  reply task per request (awaits it)
//!                                                                  ▼
//! socket ◀─write─ writer task ◀── bounded mpsc of encoded frames ◀──┘
//! ```
//!
//! Backpressure: a full engine queue makes the reader retry with a short sleep and stop
//! reading meanwhile; a slow client fills the bounded mpsc, which stops the reply tasks and
//! then the reader. Requests in flight per connection are capped by a semaphore whose
//! permit each reply task holds until its reply is handed to the writer.
//!
//! A client that goes away loses only its own replies: the writer's failure drops the
//! channel's receiver, and every later `send` simply fails. Nothing here can block a
//! tokio worker thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::frame::{
    negotiate_version, parse_handshake_body, ErrorCode, FrameKind, PROTOCOL_VERSION,
};
use protocol::{CreateAccountResult, CreateTransferResult, Operation};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::codec::{self, OutFrame, Refusal};
use super::frame_io::{Frame, FrameReader, ReadError};
use super::shutdown::Shutdown;
use crate::core::{EngineError, EngineHandle, PendingReply, Reply};

/// First sleep after the engine answered `Busy`; doubles up to [`BUSY_RETRY_SLEEP_MAX`].
/// The queue drains a batch at a time (about one fsync), so a millisecond is the right
/// order; doubling keeps thousands of waiting connections from spinning.
const BUSY_RETRY_SLEEP_FIRST: Duration = Duration::from_millis(1);
const BUSY_RETRY_SLEEP_MAX: Duration = Duration::from_millis(32);

/// After a fatal error or at shutdown the server closes its side first, then reads and
/// discards what the client still sends, for this long and this much at most: closing a
/// socket with unread input makes the kernel send a reset, which could destroy the last
/// replies or the error frame before the client reads them.
const LINGER_AFTER_CLOSE: Duration = Duration::from_millis(500);
const LINGER_BYTES_MAX: usize = 2 * protocol::frame::BODY_BYTES_MAX as usize;

/// What every connection shares.
pub(crate) struct Context {
    pub engine: EngineHandle,
    pub requests_in_flight_max: u32,
    /// How long a request waits on a full engine queue before it is answered `busy`.
    pub queue_full_wait_max: Duration,
}

/// A frame for the writer and, for answers to requests, what to record once it is sent.
pub(crate) struct Outgoing {
    pub frame: OutFrame,
    pub answered: Option<Answered>,
}

pub(crate) struct Answered {
    pub operation: &'static str,
    pub outcome: &'static str,
    /// Events by result name (`created`, `exists`, a failure, or `ok` for reads); empty
    /// when the request was refused.
    pub results: Vec<(&'static str, u32)>,
    pub started: Instant,
}

/// How the reading side ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed (or the socket failed): in-flight replies still go out.
    Closed,
    /// The server is shutting down: stop reading, answer what is in flight.
    Shutdown,
    /// A protocol error was answered with an Error frame; the connection closes.
    Fatal,
}

/// Serve one accepted connection until the client leaves, a fatal error, or shutdown.
pub(crate) async fn serve(stream: TcpStream, context: Arc<Context>, shutdown: Shutdown) {
    let peer = stream.peer_addr().ok();
    let (read_half, write_half) = stream.into_split();
    // Every reply of the in-flight window, plus a handshake or error frame, fits without
    // waiting; past that the reader waits for the writer.
    let capacity = context.requests_in_flight_max as usize + 2;
    let (sender, receiver) = mpsc::channel(capacity);
    let writer = tokio::spawn(write_frames(write_half, receiver));
    let connection = Connection {
        in_flight: Arc::new(Semaphore::new(context.requests_in_flight_max as usize)),
        context,
        reader: FrameReader::new(read_half),
        sender,
        version: None,
        shutdown,
    };
    let (end, read_half) = connection.run().await;
    tracing::debug!(?peer, ?end, "connection reading stopped");
    // The writer ends once every in-flight reply has been handed over and written.
    let _ = writer.await;
    // The client may still be sending: see LINGER_AFTER_CLOSE.
    if end != End::Closed {
        linger(read_half).await;
    }
}

struct Connection {
    context: Arc<Context>,
    reader: FrameReader<OwnedReadHalf>,
    sender: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    /// The version agreed by the handshake; `None` until then.
    version: Option<u16>,
    shutdown: Shutdown,
}

impl Connection {
    /// Read and handle frames until the end; gives the read half back for lingering.
    async fn run(mut self) -> (End, OwnedReadHalf) {
        let end = self.read_loop().await;
        (end, self.reader.into_inner())
    }

    async fn read_loop(&mut self) -> End {
        while !self.shutdown.is_shutdown() {
            let read = tokio::select! {
                read = self.reader.read_frame() => read,
                () = self.shutdown.recv() => return End::Shutdown,
            };
            let frame = match read {
                Ok(Some(frame)) => frame,
                Ok(None) => return End::Closed,
                Err(ReadError::Frame(error)) => {
                    return self.fatal(error.code(), &error.to_string()).await;
                }
                Err(error) => {
                    tracing::debug!(%error, "connection read ended");
                    return End::Closed;
                }
            };
            if let Err(end) = self.handle(frame).await {
                return end;
            }
        }
        End::Shutdown
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), End> {
        let Some(version) = self.version else {
            return self.handshake(frame).await;
        };
        if frame.header.version != version {
            let message = format!(
                "unsupported_version: frame at version {}, the handshake agreed on {version}",
                frame.header.version
            );
            return Err(self.fatal(ErrorCode::UnsupportedVersion, &message).await);
        }
        match frame.header.kind {
            FrameKind::Request => self.request(frame).await,
            FrameKind::Handshake => {
                let message = "bad_frame: handshake already done on this connection";
                Err(self.fatal(ErrorCode::BadFrame, message).await)
            }
            FrameKind::Reply | FrameKind::Error => {
                let message = "bad_frame: clients send only handshake and request frames";
                Err(self.fatal(ErrorCode::BadFrame, message).await)
            }
        }
    }

    async fn handshake(&mut self, frame: Frame) -> Result<(), End> {
        if frame.header.kind != FrameKind::Handshake {
            let message = "handshake_required: the first frame must be a handshake";
            return Err(self.fatal(ErrorCode::HandshakeRequired, message).await);
        }
        let (version_min, version_max) = match parse_handshake_body(&frame.body) {
            Ok(range) => range,
            Err(error) => return Err(self.fatal(error.code(), &error.to_string()).await),
        };
        let Some(version) = negotiate_version(version_min, version_max) else {
            let message = format!(
                "unsupported_version: client speaks {version_min}..={version_max}, \
                 server speaks {PROTOCOL_VERSION}"
            );
            return Err(self.fatal(ErrorCode::UnsupportedVersion, &message).await);
        };
        self.version = Some(version);
        self.send(codec::handshake_frame(version), None).await
    }

    async fn request(&mut self, frame: Frame) -> Result<(), End> {
        let started = Instant::now();
        let header = frame.header;
        let operation = match codec::check(&header) {
            Ok(operation) => operation,
            Err(refusal) => return self.refuse(&frame, None, refusal, started).await,
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            let message = format!(
                "too_many_in_flight: limit {} (requests_in_flight_per_connection_max)",
                self.context.requests_in_flight_max
            );
            let refusal = Refusal::new(ErrorCode::TooManyInFlight, message);
            return self.refuse(&frame, Some(operation), refusal, started).await;
        };
        let pending = match self.submit(operation, &frame.body).await {
            Ok(pending) => pending,
            Err(refusal) => return self.refuse(&frame, Some(operation), refusal, started).await,
        };
        let request = InFlight {
            operation,
            request_id: header.request_id,
            events: header.event_count,
            started,
            sender: self.sender.clone(),
            _permit: permit,
        };
        tokio::spawn(request.answer(pending));
        Ok(())
    }

    /// Hand the request to the engine. While its queue is full, wait here, so this
    /// connection reads nothing more: the backpressure reaches the client's socket.
    async fn submit(
        &mut self,
        operation: Operation,
        body: &Bytes,
    ) -> Result<PendingReply, Refusal> {
        let waited_since = Instant::now();
        let mut sleep = BUSY_RETRY_SLEEP_FIRST;
        loop {
            let request = codec::decode(operation, body)?;
            match self.context.engine.submit(request) {
                Ok(pending) => return Ok(pending),
                Err(EngineError::Busy { queue_requests_max }) => {
                    if sleep == BUSY_RETRY_SLEEP_FIRST {
                        crate::metrics::queue_full_wait();
                    }
                    if waited_since.elapsed() >= self.context.queue_full_wait_max {
                        let message = format!(
                            "busy: the engine queue (queue_requests_max {queue_requests_max}) \
                             stayed full for queue_full_wait_ms_max; retry later"
                        );
                        return Err(Refusal::new(ErrorCode::Busy, message));
                    }
                }
                Err(error) => return Err(refusal_of(&error)),
            }
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.shutdown.recv() => {
                    let message = "shutting_down: request not applied".to_string();
                    return Err(Refusal::new(ErrorCode::ShuttingDown, message));
                }
            }
            sleep = (sleep * 2).min(BUSY_RETRY_SLEEP_MAX);
        }
    }

    /// Answer one request with an Error frame; the connection stays open.
    async fn refuse(
        &mut self,
        frame: &Frame,
        operation: Option<Operation>,
        refusal: Refusal,
        started: Instant,
    ) -> Result<(), End> {
        let header = &frame.header;
        let out = codec::error_frame(
            header.operation,
            header.request_id,
            refusal.code,
            &refusal.message,
        );
        let answered = Answered {
            operation: operation.map_or("unknown", Operation::as_str),
            outcome: refusal.code.as_str(),
            results: Vec::new(),
            started,
        };
        self.send(out, Some(answered)).await
    }

    /// Send an Error frame about the connection and end it.
    async fn fatal(&mut self, code: ErrorCode, message: &str) -> End {
        debug_assert!(code.is_fatal(), "{code} is answered per request");
        tracing::info!(
            error = code.as_str(),
            message,
            "closing connection on a protocol error"
        );
        crate::metrics::connection_error(code.as_str());
        let _ = self
            .send(codec::error_frame(0, 0, code, message), None)
            .await;
        End::Fatal
    }

    async fn send(&mut self, frame: OutFrame, answered: Option<Answered>) -> Result<(), End> {
        let outgoing = Outgoing { frame, answered };
        // The writer only goes away when the socket failed: nothing more to do here.
        self.sender.send(outgoing).await.map_err(|_| End::Closed)
    }
}

/// A request handed to the engine: waits for its reply and passes it to the writer.
struct InFlight {
    operation: Operation,
    request_id: u64,
    events: u32,
    started: Instant,
    sender: mpsc::Sender<Outgoing>,
    /// Released once the reply is with the writer: bounds replies held per connection.
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    async fn answer(self, pending: PendingReply) {
        let result = pending.await;
        let results = results_by_name(self.operation, self.events, &result);
        let (frame, outcome) = self.frame_of(result);
        let answered = Answered {
            operation: self.operation.as_str(),
            outcome,
            results,
            started: self.started,
        };
        // Fails only when the client is gone; its reply is dropped with it.
        let _ = self
            .sender
            .send(Outgoing {
                frame,
                answered: Some(answered),
            })
            .await;
    }

    fn frame_of(&self, result: Result<Reply, EngineError>) -> (OutFrame, &'static str) {
        let refusal = match result {
            Ok(reply) => match codec::reply_frame(self.operation, self.request_id, reply) {
                Some(frame) => return (frame, "ok"),
                None => Refusal::new(
                    ErrorCode::Internal,
                    "internal: reply too large for one frame".into(),
                ),
            },
            Err(error) => refusal_of(&error),
        };
        let frame = codec::error_frame(
            self.operation.code(),
            self.request_id,
            refusal.code,
            &refusal.message,
        );
        (frame, refusal.code.as_str())
    }
}

/// A reply's events counted by result name, for `settled_events_total`: one pass over a
/// create reply's results (on this task, not the core thread), `ok` for a read.
fn results_by_name(
    operation: Operation,
    events: u32,
    result: &Result<Reply, EngineError>,
) -> Vec<(&'static str, u32)> {
    let created = match result {
        Ok(Reply::Created(created)) => created,
        Ok(_) => return vec![("ok", events)],
        Err(_) => return Vec::new(),
    };
    let mut counts: Vec<(u32, u32)> = Vec::new();
    for result in created {
        match counts.iter_mut().find(|(code, _)| *code == result.status) {
            Some((_, count)) => *count += 1,
            None => counts.push((result.status, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(code, count)| {
            let name = match operation {
                Operation::CreateAccounts => {
                    CreateAccountResult::from_code(code).map(CreateAccountResult::as_str)
                }
                _ => CreateTransferResult::from_code(code).map(CreateTransferResult::as_str),
            };
            (name.unwrap_or("unknown"), count)
        })
        .collect()
}

/// The Error frame code for an engine error.
fn refusal_of(error: &EngineError) -> Refusal {
    let code = match error {
        EngineError::ShuttingDown => ErrorCode::ShuttingDown,
        EngineError::Unavailable { .. } => ErrorCode::Unavailable,
        EngineError::Busy { .. } | EngineError::QueriesBusy { .. } => ErrorCode::Busy,
        EngineError::TooManyEvents { .. } => ErrorCode::TooManyEvents,
        // Stopped: the core went away without answering, so the request may or may not
        // have been applied; like WAL and store failures, that is the server's fault.
        _ => ErrorCode::Internal,
    };
    Refusal::new(code, format!("{}: {error}", code.as_str()))
}

/// The writer task: frames from the channel to the socket, flushed whenever the channel
/// runs dry (so pipelined replies share a write), metrics recorded once written.
async fn write_frames(write_half: OwnedWriteHalf, mut receiver: mpsc::Receiver<Outgoing>) {
    let mut writer = BufWriter::new(write_half);
    let mut written = Vec::new();
    while let Some(outgoing) = receiver.recv().await {
        let mut next = Some(outgoing);
        while let Some(outgoing) = next {
            if write_frame(&mut writer, &outgoing.frame).await.is_err() {
                return;
            }
            written.extend(outgoing.answered);
            next = receiver.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
        for answered in written.drain(..) {
            crate::metrics::request_answered(
                answered.operation,
                answered.outcome,
                &answered.results,
                answered.started.elapsed(),
            );
        }
    }
    // Every sender is gone (reader done, no reply in flight): say so with a FIN.
    let _ = writer.shutdown().await;
}

async fn write_frame(
    writer: &mut BufWriter<OwnedWriteHalf>,
    frame: &OutFrame,
) -> std::io::Result<()> {
    writer.write_all(&frame.header).await?;
    writer.write_all(frame.body.as_slice()).await
}

/// Read and discard what the client still sends after the server closed its side, bounded in time and
/// bytes (see [`LINGER_AFTER_CLOSE`]).
pub(crate) async fn linger(mut read_half: OwnedReadHalf) {
    let drain = async {
        let mut buffer = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            match read_half.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => drained += read,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_AFTER_CLOSE, drain).await;
}
