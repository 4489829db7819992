//! One client connection: a reader that validates frames and submits requests, a writer
//! task that sends replies in whatever order they become durable.
//!
//! ```text
//! socket ─read─▶ FrameReader ─▶ handshake / check / decode ─▶ EngineHandle::submit_async
//!                                                                  │ (a queue slot)
//!                                        WAL writer (or core) thread: durable reply
//!                                                                  │
//! socket ◀─send─ plain TCP, ≤ 4 KiB, alone in flight, writer idle ◀┤ (direct.rs)
//!                                                                  ▼
//! socket ◀─write─ writer task ◀── bounded mpsc (slot reserved per request) ◀──┘
//! ```
//!
//! Before a request is submitted the reader takes, in order: one of
//! `requests_in_flight_per_connection_max` in-flight permits (none left: answered
//! `too_many_in_flight`), the most bytes its reply can take out of the connection's
//! `reply_bytes_per_connection_max` budget, a slot in the writer's channel, and a slot in
//! the engine queue. The last three wait rather than refuse, and while the reader waits it
//! reads nothing: a client that stops reading its replies, or a full engine queue, stops
//! the server reading that client (backpressure reaches its socket), and its replies never
//! take more than the budget. Waits for the engine queue are fair (first come, first
//! served) and bounded by `queue_full_wait_ms_max`, then answered `busy`.
//!
//! The thread that releases a reply hands it straight to the writer's channel through the
//! reserved slot (no task per request); the writer encodes it, writes, and gives the
//! budget back once the bytes are in the socket. On plain TCP a small reply to a request
//! alone in flight on its connection is instead written by the releasing thread itself
//! while the writer is idle, and what the socket does not take goes to the writer
//! ([`super::direct`]). A write that makes no progress for
//! `write_timeout_seconds` ends the connection. The first frame must arrive within
//! `handshake_timeout_seconds`, and a connection with nothing in flight that sends no
//! frame for `idle_timeout_seconds` (when set) is closed.
//!
//! A client that goes away loses only its own replies: the writer's failure drops the
//! channel's receiver, and every later send simply fails. Nothing here blocks a tokio
//! worker thread, but for the connection's direct-write lock, held for one small frame's
//! encoding and non-blocking `send` at a time.
//!
//! The connection is generic over its two halves: plain TCP passes the socket's owned
//! read half and its write half shared with the direct path ([`DirectReplies::new`]), TLS
//! the halves of `tokio::io::split`. Each kind is compiled on its own, with no boxing per
//! read.
//!
//! The handshake also authenticates ([`super::auth`]): a server that lists clients answers
//! a missing or unknown token `unauthorized` and closes; a read-only client's creates are
//! answered `forbidden`, one request at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::frame::{
    negotiate_version, parse_handshake_body, ErrorCode, FrameKind, PROTOCOL_VERSION,
};
use protocol::{CreateAccountResult, CreateTransferResult, Operation};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::auth::{ClientAuth, Identity};
use super::codec::{self, OutFrame, Refusal};
use super::direct::{Direct, DirectReplies, WriterEnds, DIRECT_REPLY_BYTES_MAX};
use super::frame_io::{Frame, FrameReader, ReadError};
use super::shutdown::Shutdown;
use crate::core::{EngineError, EngineHandle, Reply, Request, SlotWait};

/// After a fatal error or at shutdown the server closes its side first, then reads and
/// discards what the client still sends, for this long and this much at most: closing a
/// socket with unread input makes the kernel send a reset, which could destroy the last
/// replies or the error frame before the client reads them.
const LINGER_AFTER_CLOSE: Duration = Duration::from_millis(500);
const LINGER_BYTES_MAX: usize = 2 * protocol::frame::BODY_BYTES_MAX as usize;

/// Frames smaller than this are gathered into one buffer and written together; larger
/// ones are written from where they are, without a copy.
const WRITE_GATHER_BYTES: usize = 64 * 1024;

/// What every connection shares.
pub(crate) struct Context {
    pub engine: EngineHandle,
    pub requests_in_flight_max: u32,
    /// How long a request waits on a full engine queue before it is answered `busy`.
    pub queue_full_wait_max: Duration,
    /// Reply bytes one connection may have waiting to be written.
    pub reply_bytes_max: u32,
    /// A write (or the flush of gathered frames) that makes no progress this long ends
    /// the connection.
    pub write_timeout: Duration,
    /// How long a new connection has to send its whole first frame.
    pub handshake_timeout: Duration,
    /// How long a connection with nothing in flight may send nothing; `None`: forever.
    pub idle_timeout: Option<Duration>,
    /// The configured clients that handshakes are checked against.
    pub auth: ClientAuth,
}

/// What the writer gets: a frame ready to go, or a request's reply from the core.
pub(crate) enum Outgoing {
    Frame {
        frame: OutFrame,
        answered: Option<Answered>,
    },
    Reply {
        request: InFlight,
        result: Result<Reply, EngineError>,
    },
    /// A direct write left the rest of a frame for the writer ([`DirectReplies`]).
    Wake,
}

pub(crate) struct Answered {
    pub operation: &'static str,
    pub outcome: &'static str,
    /// Events by result name (`created`, `exists`, a failure, or `ok` for reads); empty
    /// when the request was refused.
    pub results: Vec<(&'static str, u32)>,
    pub started: Instant,
}

impl Answered {
    /// Count the answer in the metrics, once its bytes are in the socket.
    pub fn record(self) {
        let Answered {
            operation,
            outcome,
            results,
            started,
        } = self;
        crate::metrics::request_answered(operation, outcome, &results, started.elapsed());
    }
}

/// How the reading side ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client closed (or the socket failed, or the writer gave up): in-flight replies
    /// still go out where they can.
    Closed,
    /// The server is shutting down: stop reading, answer what is in flight.
    Shutdown,
    /// A protocol error was answered with an Error frame; the connection closes.
    Fatal,
    /// No first frame within the handshake timeout, or idle past the idle timeout.
    TimedOut,
}

/// Serve one accepted connection, given as its read and write halves, until the client
/// leaves, a fatal error, or shutdown.
pub(crate) async fn serve<R, W>(
    read_half: R,
    write_half: W,
    peer: Option<SocketAddr>,
    context: Arc<Context>,
    shutdown: Shutdown,
    direct: Option<Arc<DirectReplies>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // A slot for every reply of the in-flight window, plus room for a handshake or error
    // frame; past that the reader waits for the writer.
    let capacity = context.requests_in_flight_max as usize + 2;
    let (sender, receiver) = mpsc::channel(capacity);
    let reply_bytes = Arc::new(Semaphore::new(context.reply_bytes_max as usize));
    let writer = tokio::spawn(write_frames(
        write_half,
        receiver,
        context.write_timeout,
        reply_bytes.clone(),
        direct.clone(),
    ));
    let connection = Connection {
        in_flight: Arc::new(Semaphore::new(context.requests_in_flight_max as usize)),
        reply_bytes,
        context,
        reader: FrameReader::new(read_half),
        sender,
        version: None,
        identity: Identity::anonymous(),
        peer,
        shutdown,
        direct,
    };
    let (end, read_half) = connection.run().await;
    tracing::debug!(?peer, ?end, "connection reading stopped");
    // The writer ends once every in-flight reply has been handed over and written (or it
    // gave up on a client that does not read).
    let _ = writer.await;
    // The client may still be sending: see LINGER_AFTER_CLOSE.
    if end != End::Closed {
        linger(read_half).await;
    }
}

struct Connection<R> {
    context: Arc<Context>,
    reader: FrameReader<R>,
    sender: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    /// The connection's reply budget in bytes; the writer closes it when it gives up.
    reply_bytes: Arc<Semaphore>,
    /// The version agreed by the handshake; `None` until then.
    version: Option<u16>,
    /// Who the handshake's token proved; anonymous until then, and when no client is
    /// configured.
    identity: Identity,
    peer: Option<SocketAddr>,
    shutdown: Shutdown,
    /// Plain TCP: small replies are written by the thread that releases them.
    direct: Option<Arc<DirectReplies>>,
}

impl<R: AsyncRead + Unpin> Connection<R> {
    /// Read and handle frames until the end; gives the read half back for lingering.
    async fn run(mut self) -> (End, R) {
        let end = self.read_loop().await;
        (end, self.reader.into_inner())
    }

    async fn read_loop(&mut self) -> End {
        while !self.shutdown.is_shutdown() {
            let deadline = self.read_deadline();
            let read = tokio::select! {
                read = self.reader.read_frame() => read,
                () = self.shutdown.recv() => return End::Shutdown,
                // The writer gave up on this client (it does not read): stop reading too.
                () = self.sender.closed() => return End::Closed,
                () = sleep_until_or_forever(deadline) => {
                    if self.version.is_some() && !self.nothing_in_flight() {
                        // Waiting for replies is not idling: wait another period.
                        continue;
                    }
                    return self.timed_out().await;
                }
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

    /// When waiting for the next frame must stop: the handshake timeout before the
    /// handshake, the idle timeout (if any) after it.
    fn read_deadline(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        if self.version.is_none() {
            return Some(now + self.context.handshake_timeout);
        }
        self.context.idle_timeout.map(|timeout| now + timeout)
    }

    fn nothing_in_flight(&self) -> bool {
        self.in_flight.available_permits() == self.context.requests_in_flight_max as usize
    }

    async fn timed_out(&mut self) -> End {
        let (code, message) = if self.version.is_none() {
            (
                ErrorCode::HandshakeTimeout,
                "handshake_timeout: no handshake within handshake_timeout_seconds",
            )
        } else {
            (
                ErrorCode::IdleTimeout,
                "idle_timeout: no request within idle_timeout_seconds",
            )
        };
        self.fatal(code, message).await;
        End::TimedOut
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
        // The reader refuses such a frame from its header already; this keeps the rule
        // true here whatever the reader does.
        if frame.header.kind != FrameKind::Handshake {
            let message = "handshake_required: the first frame must be a handshake";
            return Err(self.fatal(ErrorCode::HandshakeRequired, message).await);
        }
        let handshake = match parse_handshake_body(&frame.body) {
            Ok(handshake) => handshake,
            Err(error) => return Err(self.fatal(error.code(), &error.to_string()).await),
        };
        let (version_min, version_max) = (handshake.version_min, handshake.version_max);
        let Some(version) = negotiate_version(version_min, version_max) else {
            let message = format!(
                "unsupported_version: client speaks {version_min}..={version_max}, \
                 server speaks {PROTOCOL_VERSION}"
            );
            return Err(self.fatal(ErrorCode::UnsupportedVersion, &message).await);
        };
        self.identity = match self.context.auth.authenticate(handshake.token) {
            Ok(identity) => identity,
            Err(refused) => {
                crate::metrics::connection_unauthorized();
                return Err(self.fatal(ErrorCode::Unauthorized, refused.message()).await);
            }
        };
        if let Some(name) = &self.identity.name {
            tracing::debug!(peer = ?self.peer, client = %name, "client authenticated");
        }
        self.version = Some(version);
        self.reader.handshake_done();
        self.send(codec::handshake_frame(version), None).await
    }

    async fn request(&mut self, frame: Frame) -> Result<(), End> {
        let started = Instant::now();
        let header = frame.header;
        let operation = match codec::check(&header) {
            Ok(operation) => operation,
            Err(refusal) => return self.refuse(&frame, None, refusal, started).await,
        };
        if self.identity.read_only && operation.is_write() {
            let name = self.identity.name.as_deref().unwrap_or_default();
            let message = format!("forbidden: client {name:?} is read-only; {operation} refused");
            let refusal = Refusal::new(ErrorCode::Forbidden, message);
            return self.refuse(&frame, Some(operation), refusal, started).await;
        }
        let Ok(in_flight) = self.in_flight.clone().try_acquire_owned() else {
            let message = format!(
                "too_many_in_flight: limit {} (requests_in_flight_per_connection_max)",
                self.context.requests_in_flight_max
            );
            let refusal = Refusal::new(ErrorCode::TooManyInFlight, message);
            return self.refuse(&frame, Some(operation), refusal, started).await;
        };
        let request = match codec::decode(operation, &frame.body) {
            Ok(request) => request,
            Err(refusal) => return self.refuse(&frame, Some(operation), refusal, started).await,
        };
        // The reply's room: budget bytes, then a slot in the writer's channel. Both wait
        // for the writer, so a client that does not read stops being read.
        let bound = codec::reply_bytes_bound(&request);
        debug_assert!(
            bound <= self.context.reply_bytes_max,
            "the budget fits any reply"
        );
        let budget = tokio::select! {
            acquired = self.reply_bytes.clone().acquire_many_owned(bound) => acquired,
            () = self.shutdown.recv() => return Err(self.shutting_down(&frame, operation, started)),
        };
        // Closed by the writer when it gave up on the socket.
        let Ok(budget) = budget else {
            return Err(End::Closed);
        };
        let slot = tokio::select! {
            reserved = self.sender.clone().reserve_owned() => reserved,
            () = self.shutdown.recv() => return Err(self.shutting_down(&frame, operation, started)),
        };
        let Ok(slot) = slot else {
            return Err(End::Closed);
        };
        let request_in_flight = InFlight {
            operation,
            request_id: header.request_id,
            events: header.event_count,
            started,
            in_flight,
            budget,
        };
        let direct = match &self.direct {
            Some(direct) if bound <= DIRECT_REPLY_BYTES_MAX => Some(Arc::clone(direct)),
            _ => None,
        };
        let on_reply = Box::new(move |result: Result<Reply, EngineError>| {
            hand_reply(direct.as_deref(), slot, request_in_flight, result);
        });
        match self.submit(request, on_reply).await {
            Ok(()) => Ok(()),
            Err(refusal) => self.refuse(&frame, Some(operation), refusal, started).await,
        }
    }

    /// Hand the request to the engine. While its queue is full, wait here (fairly, for
    /// at most `queue_full_wait_ms_max`), so this connection reads nothing more: the
    /// backpressure reaches the client's socket.
    async fn submit(
        &mut self,
        request: Request,
        on_reply: crate::core::OnReply,
    ) -> Result<(), Refusal> {
        let context = &self.context;
        let submitted = context.engine.submit_async(
            request,
            on_reply,
            context.queue_full_wait_max,
            self.shutdown.recv(),
        );
        match submitted.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(SlotWait::TimedOut)) => {
                let message = format!(
                    "busy: the engine queue stayed full for queue_full_wait_ms_max ({} ms); \
                     retry later",
                    context.queue_full_wait_max.as_millis()
                );
                Err(Refusal::new(ErrorCode::Busy, message))
            }
            Ok(Err(SlotWait::Cancelled)) => {
                let message = "shutting_down: request not applied".to_string();
                Err(Refusal::new(ErrorCode::ShuttingDown, message))
            }
            Err(error) => Err(refusal_of(&error)),
        }
    }

    /// A request read but not submitted when the shutdown came: answered `shutting_down`
    /// if the writer has room right now (it was waiting for room: no waiting here), else
    /// the client sees the connection close with it unanswered. Nothing was applied.
    fn shutting_down(&self, frame: &Frame, operation: Operation, started: Instant) -> End {
        let message = "shutting_down: request not applied".to_string();
        let refusal = Refusal::new(ErrorCode::ShuttingDown, message);
        let _ = self
            .sender
            .try_send(refusal_outgoing(frame, Some(operation), refusal, started));
        End::Shutdown
    }

    /// Answer one request with an Error frame; the connection stays open.
    async fn refuse(
        &mut self,
        frame: &Frame,
        operation: Option<Operation>,
        refusal: Refusal,
        started: Instant,
    ) -> Result<(), End> {
        let outgoing = refusal_outgoing(frame, operation, refusal, started);
        // The writer only goes away when the socket failed: nothing more to do here.
        self.sender.send(outgoing).await.map_err(|_| End::Closed)
    }

    /// Send an Error frame about the connection and end it.
    async fn fatal(&mut self, code: ErrorCode, message: &str) -> End {
        debug_assert!(code.is_fatal(), "{code} is answered per request");
        tracing::info!(
            peer = ?self.peer,
            error = code.as_str(),
            message,
            "closing connection after an error frame about it"
        );
        crate::metrics::connection_error(code.as_str());
        let _ = self
            .send(codec::error_frame(0, 0, code, message), None)
            .await;
        End::Fatal
    }

    async fn send(&mut self, frame: OutFrame, answered: Option<Answered>) -> Result<(), End> {
        let outgoing = Outgoing::Frame { frame, answered };
        // The writer only goes away when the socket failed: nothing more to do here.
        self.sender.send(outgoing).await.map_err(|_| End::Closed)
    }
}

/// Hand `request`'s reply on, on the thread that released it: written at once when
/// `direct` takes it ([`DirectReplies::write`]), else through the writer's channel in the
/// slot reserved for it (never blocks; dropped when the writer is gone). Returns how.
fn hand_reply(
    direct: Option<&DirectReplies>,
    slot: mpsc::OwnedPermit<Outgoing>,
    request: InFlight,
    result: Result<Reply, EngineError>,
) -> Handed {
    let direct = match direct {
        Some(direct) => direct.write(request, result),
        None => Direct::Declined(request, result),
    };
    match direct {
        // The slot goes back unused.
        Direct::Written => Handed::Written,
        Direct::Rest => {
            slot.send(Outgoing::Wake);
            Handed::Rest
        }
        Direct::Declined(request, result) => {
            slot.send(Outgoing::Reply { request, result });
            Handed::Queued
        }
    }
}

/// How [`hand_reply`] passed a reply on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handed {
    /// Written whole by the releasing thread.
    Written,
    /// Begun by it, the rest left to the writer task.
    Rest,
    /// Queued for the writer task.
    Queued,
}

/// A request handed to the engine, travelling with its reply to the writer.
pub(crate) struct InFlight {
    operation: Operation,
    request_id: u64,
    events: u32,
    started: Instant,
    /// Released when the reply is encoded (by the writer, or by a direct write): bounds
    /// requests per connection.
    in_flight: OwnedSemaphorePermit,
    /// The reply's share of the connection's byte budget, given back once it is written.
    budget: OwnedSemaphorePermit,
}

impl InFlight {
    /// Whether no other request of its connection is in flight (of `in_flight_max`).
    pub(crate) fn alone(&self, in_flight_max: u32) -> bool {
        let others_free = self.in_flight.semaphore().available_permits();
        others_free + 1 >= in_flight_max as usize
    }

    /// The frame for `result`, what to record about it, and the budget to give back once
    /// it is written.
    pub(crate) fn into_frame(
        self,
        result: Result<Reply, EngineError>,
    ) -> (OutFrame, Answered, OwnedSemaphorePermit) {
        let results = results_by_name(self.operation, self.events, &result);
        let (frame, outcome) = self.frame_of(result);
        debug_assert!(
            frame.header.len() + frame.body.as_slice().len() <= self.budget.num_permits(),
            "a reply never outgrows the budget set aside for it"
        );
        let answered = Answered {
            operation: self.operation.as_str(),
            outcome,
            results,
            started: self.started,
        };
        (frame, answered, self.budget)
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
/// create reply's results (on the writer task; on the releasing thread only for a reply
/// small enough to be written there, at most 250 results), `ok` for a read.
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

/// The Error frame answering request `frame` with `refusal`, and what to record of it.
fn refusal_outgoing(
    frame: &Frame,
    operation: Option<Operation>,
    refusal: Refusal,
    started: Instant,
) -> Outgoing {
    let header = &frame.header;
    let frame = codec::error_frame(
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
    Outgoing::Frame {
        frame,
        answered: Some(answered),
    }
}

/// Why the writer stopped before its channel closed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("no write progress for {0:?} (write_timeout_seconds)")]
    TimedOut(Duration),
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
}

/// The writer task: frames from the channel to the socket, small ones gathered into one
/// write while the channel has more (pipelined replies share a syscall), metrics recorded
/// and reply budget given back once written. With `direct` (plain TCP) it also writes the
/// rest of a frame a direct write began, first, and tells the direct path when it is idle
/// ([`DirectReplies`]). On a failed or stalled write it closes the budget and drops the
/// channel, which ends the reader too.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut receiver: mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
    reply_bytes: Arc<Semaphore>,
    direct: Option<Arc<DirectReplies>>,
) {
    // Dropped before `socket` (a parameter): the direct path lets go first, and the
    // writer's handle, the last, sends the FIN.
    let _ends = direct.clone().map(WriterEnds);
    let mut gathered = Vec::with_capacity(WRITE_GATHER_BYTES);
    let mut answered = Vec::new();
    let mut budgets = Vec::new();
    let outcome: Result<(), WriteError> = async {
        while let Some(first) = receiver.recv().await {
            let rest = direct.as_ref().and_then(|direct| direct.writer_busy());
            // The rest of a frame a direct write began goes before anything else.
            if let Some(rest) = rest {
                write_timed(&mut socket, &rest.bytes, write_timeout).await?;
                answered.push(rest.answered);
                budgets.push(rest.budget);
            }
            let mut next = Some(first);
            while let Some(outgoing) = next {
                let (frame, answer, budget) = match outgoing {
                    Outgoing::Frame { frame, answered } => (frame, answered, None),
                    Outgoing::Reply { request, result } => {
                        let (frame, answer, budget) = request.into_frame(result);
                        (frame, Some(answer), Some(budget))
                    }
                    Outgoing::Wake => {
                        next = receiver.try_recv().ok();
                        continue;
                    }
                };
                let body = frame.body.as_slice();
                gathered.extend_from_slice(&frame.header);
                if gathered.len() + body.len() <= WRITE_GATHER_BYTES {
                    gathered.extend_from_slice(body);
                } else {
                    write_timed(&mut socket, &gathered, write_timeout).await?;
                    gathered.clear();
                    write_timed(&mut socket, body, write_timeout).await?;
                }
                answered.extend(answer);
                budgets.extend(budget);
                next = receiver.try_recv().ok();
            }
            write_timed(&mut socket, &gathered, write_timeout).await?;
            gathered.clear();
            budgets.clear();
            for answer in answered.drain(..) {
                answer.record();
            }
            // Idle: direct writes may go on while it waits. (Busy until its first turn
            // is done: the handshake's reply goes before any reply written directly.)
            if let Some(direct) = &direct {
                direct.writer_idle();
            }
        }
        Ok(())
    }
    .await;
    reply_bytes.close();
    match outcome {
        // Every sender is gone (reader done, no reply in flight): say so with a FIN.
        Ok(()) => {
            let _ = tokio::time::timeout(write_timeout, socket.shutdown()).await;
        }
        Err(WriteError::TimedOut(timeout)) => {
            crate::metrics::connection_error("write_timeout");
            tracing::info!(
                ?timeout,
                "closing a connection that does not read its replies"
            );
        }
        Err(error) => tracing::debug!(%error, "connection write ended"),
    }
}

/// Write all of `bytes`, failing when one write makes no progress for `timeout`.
async fn write_timed(
    socket: &mut (impl AsyncWrite + Unpin),
    mut bytes: &[u8],
    timeout: Duration,
) -> Result<(), WriteError> {
    while !bytes.is_empty() {
        match tokio::time::timeout(timeout, socket.write(bytes)).await {
            Err(_) => return Err(WriteError::TimedOut(timeout)),
            Ok(Err(error)) => return Err(error.into()),
            Ok(Ok(0)) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
            Ok(Ok(written)) => bytes = &bytes[written..],
        }
    }
    Ok(())
}

/// Sleep until `deadline`, or forever without one.
async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Read and discard what the client still sends after the server closed its side, bounded in time and
/// bytes (see [`LINGER_AFTER_CLOSE`]).
pub(crate) async fn linger<R: AsyncRead + Unpin>(mut read_half: R) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use protocol::frame::{FrameKind, Header, HEADER_BYTES};
    use protocol::CreateResult;
    use tokio::net::{TcpListener, TcpSocket};

    use super::*;

    /// A create request of `events` in flight, its permits taken from `permits` (its
    /// connection's in-flight limit) and `reply_bytes`.
    fn in_flight(
        permits: &Arc<Semaphore>,
        reply_bytes: &Arc<Semaphore>,
        request_id: u64,
        events: u32,
    ) -> InFlight {
        InFlight {
            operation: Operation::CreateTransfers,
            request_id,
            events,
            started: Instant::now(),
            in_flight: permits.clone().try_acquire_owned().unwrap(),
            budget: reply_bytes
                .clone()
                .try_acquire_many_owned(HEADER_BYTES as u32 + 16 * events)
                .unwrap(),
        }
    }

    /// A writer task on `write_half` shared with the direct path, for a connection of
    /// `in_flight_max` requests, with a channel of `capacity` and an unbounded budget.
    fn spawn_writer(
        write_half: tokio::net::tcp::OwnedWriteHalf,
        in_flight_max: u32,
        capacity: usize,
    ) -> (
        Arc<DirectReplies>,
        mpsc::Sender<Outgoing>,
        Arc<Semaphore>,
        tokio::task::JoinHandle<()>,
    ) {
        let (direct, shared) = DirectReplies::new(write_half, in_flight_max);
        let (sender, receiver) = mpsc::channel(capacity);
        let reply_bytes = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        let writer = tokio::spawn(write_frames(
            shared,
            receiver,
            Duration::from_secs(60),
            reply_bytes.clone(),
            Some(direct.clone()),
        ));
        (direct, sender, reply_bytes, writer)
    }

    /// `count` results `created`.
    fn results(count: usize) -> Result<Reply, EngineError> {
        let result = CreateResult {
            timestamp: 7,
            status: 0,
            reserved: 0,
        };
        Ok(Reply::Created(vec![result; count]))
    }

    /// The next frame's header and body, checked; `None` at the end of the stream.
    async fn read_frame(client: &mut tokio::net::TcpStream) -> Option<(Header, Vec<u8>)> {
        let mut header = [0u8; HEADER_BYTES];
        match client.read_exact(&mut header).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(error) => panic!("reading a header: {error}"),
        }
        let decoded = Header::decode(&header).expect("a whole, valid header");
        let mut body = vec![0u8; decoded.body_bytes as usize];
        client.read_exact(&mut body).await.unwrap();
        decoded
            .check_body(&body)
            .expect("the body its header names");
        Some((decoded, body))
    }

    #[tokio::test]
    async fn the_handshake_reply_goes_before_any_reply_written_directly() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut client, _) = listener.accept().await.unwrap();
        let (_read_half, write_half) = server.into_split();
        // Two requests in flight at most; one at a time until the end.
        let (direct, sender, reply_bytes, writer) = spawn_writer(write_half, 2, 8);
        let permits = Arc::new(Semaphore::new(2));
        // The writer task waits on its empty channel (this runtime has one thread: it
        // runs at the yields), as it does from the connection's start.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The reader queues the handshake's reply, and a pipelined request's reply is
        // released before the writer has run again: it waits its turn.
        let handshake = Outgoing::Frame {
            frame: codec::handshake_frame(PROTOCOL_VERSION),
            answered: None,
        };
        sender.try_send(handshake).unwrap();
        let slot = sender.clone().try_reserve_owned().unwrap();
        let request = in_flight(&permits, &reply_bytes, 1, 1);
        let how = hand_reply(Some(&direct), slot, request, results(1));
        assert_eq!(how, Handed::Queued, "behind the handshake's reply");
        // Once the writer has had its turn, replies go directly.
        let mut request_id = 2;
        loop {
            let slot = sender.clone().reserve_owned().await.unwrap();
            let request = in_flight(&permits, &reply_bytes, request_id, 1);
            if hand_reply(Some(&direct), slot, request, results(1)) == Handed::Written {
                break;
            }
            assert!(request_id < 5000, "the writer never went idle");
            request_id += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // With another request in flight beside it, a reply is left to the writer, which
        // gathers pipelined replies into one write.
        let beside = permits.clone().try_acquire_owned().unwrap();
        let slot = sender.clone().reserve_owned().await.unwrap();
        request_id += 1;
        let request = in_flight(&permits, &reply_bytes, request_id, 1);
        let how = hand_reply(Some(&direct), slot, request, results(1));
        assert_eq!(how, Handed::Queued, "pipelined");
        drop((sender, direct, beside));
        let mut kinds = Vec::new();
        while let Some((header, _)) = read_frame(&mut client).await {
            kinds.push((header.kind, header.request_id));
        }
        writer.await.unwrap();
        assert_eq!(kinds[0], (FrameKind::Handshake, 0), "{kinds:?}");
        assert_eq!(kinds[1], (FrameKind::Reply, 1), "{kinds:?}");
        assert_eq!(kinds.len() as u64, request_id + 1, "every reply once");
    }

    /// Small replies written by two releasing threads straight into the socket, while the
    /// writer task writes large replies from its channel, over buffers small enough and a
    /// client slow enough that direct writes find the socket full and leave rests: the
    /// client reads every frame whole and valid, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_written_directly_and_by_the_writer_task_never_interleave() {
        const SMALL_PER_THREAD: u64 = 3000;
        const LARGE: u64 = 40;
        const LARGE_RESULTS: usize = 4000;
        let listener = TcpSocket::new_v4().unwrap();
        listener.set_recv_buffer_size(4096).unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = listener.listen(1).unwrap();
        let server = TcpSocket::new_v4().unwrap();
        server.set_send_buffer_size(4096).unwrap();
        let server = server
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut client, _) = listener.accept().await.unwrap();

        let (_read_half, write_half) = server.into_split();
        // Each request alone on its connection, as far as the direct path can tell.
        let capacity = (2 * SMALL_PER_THREAD + LARGE) as usize;
        let (direct, sender, reply_bytes, writer) = spawn_writer(write_half, 1, capacity);
        let in_flight = |request_id: u64, events: u32| {
            in_flight(
                &Arc::new(Semaphore::new(1)),
                &reply_bytes,
                request_id,
                events,
            )
        };

        // Until the releasers have handed on this many replies, far more than the
        // socket's buffers hold, the client reads nothing: some are written whole, then
        // one finds the socket full and leaves a rest, then the busy writer queues them.
        const HANDED_BEFORE_READING: u64 = 1000;
        let handed_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let all_handed = |handed_count: Arc<std::sync::atomic::AtomicU64>| async move {
            while handed_count.load(std::sync::atomic::Ordering::Relaxed) < HANDED_BEFORE_READING {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let mut releasers = Vec::new();
        for thread in 0..2 {
            let mut replies = Vec::new();
            for index in 0..SMALL_PER_THREAD {
                let slot = sender.clone().reserve_owned().await.unwrap();
                // 1 to 200 results: frames up to 3 264 bytes, all taken directly, and
                // large enough that a full socket takes some of them in part.
                let events = 1 + (index % 200) as u32;
                replies.push((
                    slot,
                    in_flight(1_000_000 * (thread + 1) + index, events),
                    events,
                ));
            }
            let direct = direct.clone();
            let handed_count = handed_count.clone();
            releasers.push(std::thread::spawn(move || {
                let mut handed = BTreeMap::new();
                for (index, (slot, request, events)) in replies.into_iter().enumerate() {
                    // Spread over the client's reading, so that direct writes meet the
                    // writer task mid-frame as well as a full socket.
                    if index % 4 == 0 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    let how = hand_reply(Some(&direct), slot, request, results(events as usize));
                    *handed.entry(format!("{how:?}")).or_insert(0u64) += 1;
                    handed_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                handed
            }));
        }
        // The FIN goes when the last holder of the socket lets go.
        drop(direct);
        // Large replies through the channel meanwhile, spaced so that the writer task is
        // in turn busy with them and idle, with direct writes before, between and after.
        let large: Vec<InFlight> = (0..LARGE)
            .map(|request_id| in_flight(request_id, LARGE_RESULTS as u32))
            .collect();
        let filled = all_handed(handed_count.clone());
        tokio::spawn(async move {
            filled.await;
            for request in large {
                let result = results(LARGE_RESULTS);
                sender
                    .send(Outgoing::Reply { request, result })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        all_handed(handed_count).await;
        let mut seen = BTreeMap::new();
        let read_all = async {
            while let Some((decoded, _)) = read_frame(&mut client).await {
                assert_eq!(decoded.kind, FrameKind::Reply);
                *seen.entry(decoded.request_id).or_insert(0) += 1;
                if seen.len() % 256 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            writer.await.unwrap();
        };
        // A broken build fails here instead of hanging the suite (a releasing thread
        // that panicked mid-frame leaves the stream without an end).
        tokio::time::timeout(Duration::from_secs(60), read_all)
            .await
            .expect("every frame and the end of the stream within 60 s");

        let mut handed = BTreeMap::new();
        for releaser in releasers {
            for (how, count) in releaser.join().unwrap() {
                *handed.entry(how).or_insert(0) += count;
            }
        }
        let expected: BTreeMap<u64, u32> = (0..LARGE)
            .chain((0..2).flat_map(|thread| {
                (0..SMALL_PER_THREAD).map(move |index| 1_000_000 * (thread + 1) + index)
            }))
            .map(|request_id| (request_id, 1))
            .collect();
        assert!(
            seen == expected,
            "each reply once: {} of {}",
            seen.len(),
            expected.len()
        );
        // Every way a reply can go was taken, or the test proved less than it says.
        for how in ["Written", "Rest", "Queued"] {
            assert!(
                handed.get(how).copied().unwrap_or(0) > 0,
                "{how}: {handed:?}"
            );
        }
        assert_eq!(
            reply_bytes.available_permits(),
            Semaphore::MAX_PERMITS,
            "every budget given back"
        );
    }
}
