//! One connection (plain TCP or TLS): the handshake, the reader task that routes replies to
//! waiters, the writer task that batches frames onto the socket, and the table of requests
//! in flight. The tasks are generic over the stream's halves: plain TCP uses the socket's
//! owned halves, TLS the halves of `tokio::io::split`.
//!
//! Ownership, so that nothing can hang:
//! - Every request in flight has a `Waiter` in `Shared::state`. A waiter leaves the table in
//!   exactly one of two ways: its reply (or error frame) arrives, or the connection closes
//!   and [`Shared::close`] fails every waiter still there.
//! - Whoever sees the connection die first (reader: EOF, bad frame; writer: write error;
//!   last `Client` dropped) calls `close`, which also wakes the other task so both end and
//!   the socket is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use protocol::frame::{self, ErrorCode, FrameError, FrameKind, Header, HEADER_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::reply::{self, Expected};
use crate::ClientError;

/// Socket buffer sizes: one read syscall takes many small replies; one write many requests.
const READ_BUFFER_BYTES: usize = 64 * 1024;
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// How long closing the write side may take once the client is done with the connection.
const GOODBYE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A reply that passed every check: header plus whole records of the right size.
pub(crate) type Reply = (Header, Vec<u8>);

/// A request frame on its way to the writer task. The body is not copied into the header's
/// buffer: a 1 MiB body is written straight from the caller's vector.
pub(crate) struct Outgoing {
    pub header: [u8; HEADER_BYTES],
    pub body: Vec<u8>,
}

/// Why the connection closed; turned into a fresh `ClientError` for each waiter.
#[derive(Clone, Debug)]
pub(crate) enum CloseReason {
    Disconnected,
    Protocol(String),
    Server { code: ErrorCode, message: String },
}

impl CloseReason {
    fn to_error(&self) -> ClientError {
        match self {
            CloseReason::Disconnected => ClientError::Disconnected,
            CloseReason::Protocol(reason) => ClientError::Protocol {
                reason: reason.clone(),
            },
            CloseReason::Server { code, message } => ClientError::Server {
                code: *code,
                message: message.clone(),
            },
        }
    }
}

struct Waiter {
    expected: Expected,
    reply: oneshot::Sender<Result<Reply, ClientError>>,
    /// Held until the reply arrives, so the client never has more requests in flight than
    /// the server allows (its limit answers `too_many_in_flight` instead of queueing).
    _in_flight: OwnedSemaphorePermit,
}

#[derive(Default)]
struct State {
    waiters: HashMap<u64, Waiter>,
    closed: bool,
}

/// State shared by the `Client` handles and the two connection tasks.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Flips to true once, on close; both tasks watch it.
    closed: watch::Sender<bool>,
    pub(crate) in_flight: Arc<Semaphore>,
    /// Protocol version agreed in the handshake; every reply must carry it.
    pub(crate) version: u16,
}

impl Shared {
    pub(crate) fn new(in_flight_max: u32, version: u16) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            closed: watch::Sender::new(false),
            in_flight: Arc::new(Semaphore::new(in_flight_max as usize)),
            version,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the table itself is
        // still consistent (each operation is a single insert or remove), so go on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Adds a waiter; fails when the connection is already closed.
    pub(crate) fn register(
        &self,
        request_id: u64,
        expected: Expected,
        in_flight: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Result<Reply, ClientError>>, ClientError> {
        let mut state = self.lock();
        if state.closed {
            return Err(ClientError::Disconnected);
        }
        let (sender, receiver) = oneshot::channel();
        let waiter = Waiter {
            expected,
            reply: sender,
            _in_flight: in_flight,
        };
        let previous = state.waiters.insert(request_id, waiter);
        // Ids come from a u64 counter: a repeat would mean 2^64 requests on one connection.
        assert!(previous.is_none(), "request id {request_id} reused");
        Ok(receiver)
    }

    fn take(&self, request_id: u64) -> Option<Waiter> {
        self.lock().waiters.remove(&request_id)
    }

    /// Closes the connection once: every waiter gets `reason`, both tasks are told to stop,
    /// and new requests are refused. Later calls do nothing (the first reason is the cause).
    pub(crate) fn close(&self, reason: CloseReason) {
        let waiters = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            std::mem::take(&mut state.waiters)
        };
        match &reason {
            CloseReason::Disconnected => tracing::debug!("settled connection closed"),
            other => tracing::warn!(reason = ?other, "settled connection closed"),
        }
        self.in_flight.close();
        self.closed.send_replace(true);
        for (_, waiter) in waiters {
            // A waiter whose caller gave up has dropped its receiver: nothing to tell.
            let _ = waiter.reply.send(Err(reason.to_error()));
        }
    }

    fn closed_receiver(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

/// Connects the stream's halves to their tasks. Returns the sender the client writes to.
pub(crate) fn spawn_tasks<R, W>(
    read_half: R,
    write_half: W,
    shared: &Arc<Shared>,
    write_queue_frames_max: usize,
) -> mpsc::Sender<Outgoing>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(write_queue_frames_max);
    tokio::spawn(read_loop(read_half, Arc::clone(shared)));
    tokio::spawn(write_loop(write_half, receiver, Arc::clone(shared)));
    sender
}

async fn read_loop<R: AsyncRead + Unpin>(read_half: R, shared: Arc<Shared>) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let mut closed = shared.closed_receiver();
    let reason = loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader) => frame,
            // Someone else closed the connection: stop reading so the socket is freed.
            _ = closed.wait_for(|closed| *closed) => return,
        };
        let delivered = match frame {
            Ok((header, body)) => deliver(&shared, header, body),
            Err(ReadError::Closed | ReadError::Io(_)) => Err(CloseReason::Disconnected),
            Err(ReadError::Invalid(error)) => Err(CloseReason::Protocol(error.to_string())),
        };
        if let Err(reason) = delivered {
            break reason;
        }
    };
    shared.close(reason);
}

async fn write_loop<W: AsyncWrite + Unpin>(
    write_half: W,
    mut frames: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
    let mut closed = shared.closed_receiver();
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => frame,
            _ = closed.wait_for(|closed| *closed) => None,
        };
        // `None`: every Client handle is gone, or the connection closed.
        let Some(frame) = frame else { break };
        if write_batch(&mut writer, frame, &mut frames).await.is_err() {
            shared.close(CloseReason::Disconnected);
            return;
        }
    }
    // Say goodbye: a FIN, and with TLS a close_notify before it. Bounded, because a server
    // that reads nothing more could otherwise hold this task on a full socket buffer.
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, writer.shutdown()).await;
}

/// Writes `first` and whatever else is already queued, then flushes once: many pipelined
/// requests share one syscall. The queue's capacity bounds the batch.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    first: Outgoing,
    frames: &mut mpsc::Receiver<Outgoing>,
) -> std::io::Result<()> {
    let mut next = Some(first);
    while let Some(frame) = next {
        writer.write_all(&frame.header).await?;
        writer.write_all(&frame.body).await?;
        next = frames.try_recv().ok();
    }
    writer.flush().await
}

/// Routes one valid frame to its waiter. `Err` closes the connection.
fn deliver(shared: &Shared, header: Header, body: Vec<u8>) -> Result<(), CloseReason> {
    if header.version != shared.version {
        return Err(CloseReason::Protocol(format!(
            "frame at version {}, the connection agreed on {}",
            header.version, shared.version
        )));
    }
    match header.kind {
        FrameKind::Reply => deliver_reply(shared, header, body),
        FrameKind::Error => deliver_error(shared, header, &body),
        FrameKind::Handshake | FrameKind::Request => Err(CloseReason::Protocol(format!(
            "unexpected {:?} frame from the server",
            header.kind
        ))),
    }
}

fn deliver_reply(shared: &Shared, header: Header, body: Vec<u8>) -> Result<(), CloseReason> {
    let waiter = shared.take(header.request_id).ok_or_else(|| {
        CloseReason::Protocol(format!("reply to unknown request id {}", header.request_id))
    })?;
    // A reply of the wrong shape means the server and client no longer agree on the
    // stream, so the connection closes (the waiter hears why through `close`).
    if let Err(reason) = reply::check_reply(waiter.expected, &header) {
        let _ = waiter.reply.send(Err(ClientError::Protocol {
            reason: reason.clone(),
        }));
        return Err(CloseReason::Protocol(reason));
    }
    let _ = waiter.reply.send(Ok((header, body)));
    Ok(())
}

fn deliver_error(shared: &Shared, header: Header, body: &[u8]) -> Result<(), CloseReason> {
    let (code, message) = reply::parse_error(&header, body).map_err(CloseReason::Protocol)?;
    // Fatal errors (and errors about no request) end the connection: the server closes
    // after sending them, so every waiter hears the server's reason.
    if code.is_fatal() || header.request_id == 0 {
        return Err(CloseReason::Server { code, message });
    }
    let waiter = shared.take(header.request_id).ok_or_else(|| {
        CloseReason::Protocol(format!(
            "{code} error for unknown request id {}",
            header.request_id
        ))
    })?;
    if let Err(reason) = reply::check_error(waiter.expected, &header) {
        let _ = waiter.reply.send(Err(ClientError::Protocol {
            reason: reason.clone(),
        }));
        return Err(CloseReason::Protocol(reason));
    }
    let _ = waiter
        .reply
        .send(Err(ClientError::Server { code, message }));
    Ok(())
}

pub(crate) enum ReadError {
    /// EOF: the connection is gone.
    Closed,
    /// Any other I/O error (with TLS: the server's alert, e.g. a refused certificate).
    Io(std::io::Error),
    /// The bytes are not a valid frame.
    Invalid(FrameError),
}

/// Reads one frame: the header is validated before the body is allocated, so a corrupt
/// length can never make the client allocate more than `BODY_BYTES_MAX`.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<(Header, Vec<u8>), ReadError> {
    let closed = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => ReadError::Closed,
        _ => ReadError::Io(error),
    };
    let mut header_bytes = [0u8; HEADER_BYTES];
    reader.read_exact(&mut header_bytes).await.map_err(closed)?;
    let header = Header::decode(&header_bytes).map_err(ReadError::Invalid)?;
    let mut body = vec![0u8; header.body_bytes as usize];
    reader.read_exact(&mut body).await.map_err(closed)?;
    header.check_body(&body).map_err(ReadError::Invalid)?;
    Ok((header, body))
}

/// Sends our version range (and `token`, checked by the caller to fit) and returns the
/// version the server chose.
pub(crate) async fn handshake<S>(stream: &mut S, token: Option<&[u8]>) -> Result<u16, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let version = frame::PROTOCOL_VERSION;
    let body = match token {
        None => frame::handshake_body(version, version).to_vec(),
        Some(token) => {
            frame::handshake_body_with_token(version, version, token).ok_or_else(|| {
                ClientError::InvalidArgument {
                    reason: format!(
                        "token of {} bytes: must be 1 to {}",
                        token.len(),
                        frame::HANDSHAKE_TOKEN_BYTES_MAX
                    ),
                }
            })?
        }
    };
    let mut bytes = Vec::new();
    frame::encode_frame(&mut bytes, FrameKind::Handshake, 0, 0, 0, 0, &body);
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let (header, body) = read_frame(stream).await.map_err(|error| match error {
        ReadError::Closed => handshake_error("the server closed the connection".to_string()),
        ReadError::Io(error) => handshake_error(format!("reading the server's answer: {error}")),
        ReadError::Invalid(error) => handshake_error(error.to_string()),
    })?;
    match header.kind {
        FrameKind::Handshake => check_handshake_reply(&header, &body),
        FrameKind::Error => Err(match reply::parse_error(&header, &body) {
            Ok((code, message)) => ClientError::Server { code, message },
            Err(reason) => handshake_error(reason),
        }),
        other => Err(handshake_error(format!(
            "expected a Handshake frame, got {other:?}"
        ))),
    }
}

/// The server must choose one version inside the range we offered, and say it twice.
fn check_handshake_reply(header: &Header, body: &[u8]) -> Result<u16, ClientError> {
    let reply =
        frame::parse_handshake_body(body).map_err(|error| handshake_error(error.to_string()))?;
    if reply.token.is_some() {
        return Err(handshake_error(
            "the server's handshake carries a token; it must be 4 bytes".to_string(),
        ));
    }
    let (chosen_min, chosen_max) = (reply.version_min, reply.version_max);
    let chosen = header.version;
    if chosen_min != chosen || chosen_max != chosen || chosen != frame::PROTOCOL_VERSION {
        return Err(handshake_error(format!(
            "server chose version {chosen} (body {chosen_min}..={chosen_max}), this client speaks {}",
            frame::PROTOCOL_VERSION
        )));
    }
    Ok(chosen)
}

fn handshake_error(reason: String) -> ClientError {
    ClientError::Handshake { reason }
}
