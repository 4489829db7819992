//! Small replies written by the thread that releases them, on plain TCP.
//!
//! A reply the WAL writer (or the core, or a read stage) releases would otherwise cross
//! one more thread: into the connection's channel, then a tokio worker woken to write it.
//! On a busy machine a woken thread waits about 30 µs for a core, a tenth of a
//! one-transfer request's round trip at 16 connections (`docs/PERFORMANCE.md`, "fifth
//! pass"). So a small reply (a frame of at most 4 KiB) to a request alone in flight on
//! its connection is written at once, with a non-blocking `send` on the releasing
//! thread, when the writer task is not writing. Replies of pipelined requests stay with
//! the writer task, which gathers those that come together into one write.
//!
//! Frames never interleave. The socket is written only under this connection's lock,
//! by one of two parties:
//! - the writer task, from [`DirectReplies::writer_busy`] until
//!   [`DirectReplies::writer_idle`] (its writes await, so it does not hold the lock, but
//!   the busy flag keeps the direct path out);
//! - a direct write, only while the writer is idle and no rest waits, holding the lock
//!   for the frame's encoding and its one non-blocking `send`.
//!
//! A direct write the socket does not take whole (full send buffer, a client that does
//! not read, a failed socket) leaves the rest of its frame here and marks the writer
//! busy; the writer task writes that rest before anything else, under its write timeout,
//! so the connection's bounds and timeouts apply as before. A reply never waits on a
//! socket on the releasing thread: at most it waits for the connection's lock, which
//! another thread holds for one small frame's encoding and `send`, or a flag's change
//! (a tokio worker waits for it the same way).
//!
//! TLS connections write every reply from the writer task: a TLS session cannot be
//! written from two places.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::connection::{Answered, InFlight};
use crate::core::{EngineError, Reply};

/// Replies whose frame can take more than this go through the writer task: their
/// encoding and result count stay off the releasing thread, and a partial write never
/// copies a large body.
pub(crate) const DIRECT_REPLY_BYTES_MAX: u32 = 4096;

/// One plain TCP connection's socket, shared by the writer task and the direct path.
pub(crate) struct DirectReplies {
    /// The connection's `requests_in_flight_per_connection_max`.
    in_flight_max: u32,
    state: Mutex<State>,
}

struct State {
    /// The socket, until the writer task ends: then it goes, so that a reply still in
    /// flight keeps no descriptor open (the writer's own handle is the last).
    socket: Option<Arc<OwnedWriteHalf>>,
    /// The writer task is writing, or holds frames to write. Set from the start: the
    /// connection's first frame (the handshake's reply) is the writer's to send.
    writer_busy: bool,
    /// The end of a frame a direct write began: the writer task's first write.
    rest: Option<Rest>,
}

/// What is left of a frame a direct write began, with what the writer task records and
/// gives back once it is written.
pub(crate) struct Rest {
    pub bytes: Vec<u8>,
    pub answered: Answered,
    pub budget: OwnedSemaphorePermit,
}

/// How a direct write went.
pub(crate) enum Direct {
    /// The whole frame is in the socket, recorded and its budget given back.
    Written,
    /// Part of it (or none) is: the rest waits for the writer task, which must be woken.
    Rest,
    /// Not written: the writer task is busy or gone. The reply goes through its channel.
    Declined(InFlight, Result<Reply, EngineError>),
}

impl DirectReplies {
    /// Share `socket` between a writer task (the returned [`SharedWriteHalf`]) and the
    /// direct path, for a connection of at most `in_flight_max` requests in flight.
    pub fn new(
        socket: OwnedWriteHalf,
        in_flight_max: u32,
    ) -> (Arc<DirectReplies>, SharedWriteHalf) {
        let socket = Arc::new(socket);
        let direct = Arc::new(DirectReplies {
            in_flight_max,
            state: Mutex::new(State {
                socket: Some(Arc::clone(&socket)),
                writer_busy: true,
                rest: None,
            }),
        });
        (direct, SharedWriteHalf { socket })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // What it guards is three fields, consistent at every statement, so a panic
        // under it (a broken assert) leaves nothing half done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write `request`'s reply now if the writer task is idle and the request is alone
    /// in flight on its connection (any thread; never waits on the socket). Replies of
    /// pipelined requests are left to the writer task, which gathers those that come
    /// together into one write (one syscall for many, off the releasing thread). The
    /// lock is held for the frame's encoding (at most 4 KiB), one copy and one
    /// non-blocking `send`.
    pub fn write(&self, request: InFlight, result: Result<Reply, EngineError>) -> Direct {
        if !request.alone(self.in_flight_max) {
            return Direct::Declined(request, result);
        }
        let mut state = self.state();
        // A rest waiting for the writer keeps others out too: it goes first. Without a
        // socket the writer has ended, and its channel drops the reply.
        if state.writer_busy || state.rest.is_some() || state.socket.is_none() {
            return Direct::Declined(request, result);
        }
        let (frame, answered, budget) = request.into_frame(result);
        let body = frame.body.as_slice();
        let total = frame.header.len() + body.len();
        // One buffer for one `send` (which never raises SIGPIPE, unlike `writev`).
        let mut staged = [0u8; DIRECT_REPLY_BYTES_MAX as usize];
        let written = match staged.get_mut(..total) {
            Some(staged) => {
                let (header, rest) = staged.split_at_mut(frame.header.len());
                header.copy_from_slice(&frame.header);
                rest.copy_from_slice(body);
                let socket = state.socket.as_ref().expect("checked above, same lock");
                // Would block, or the socket failed: the writer task meets the same on
                // its first write and deals with it under its timeout.
                socket.try_write(staged).unwrap_or(0)
            }
            // Past the bound the reader checked (it cannot be): the writer takes it.
            None => 0,
        };
        assert!(written <= total, "wrote {written} of a {total}-byte frame");
        if written == total {
            drop(state);
            drop(budget);
            answered.record();
            return Direct::Written;
        }
        let bytes = match staged.get(written..total) {
            Some(rest) => rest.to_vec(),
            None => [&frame.header[..], body].concat(),
        };
        assert_eq!(bytes.len(), total - written, "the rest of the frame");
        state.rest = Some(Rest {
            bytes,
            answered,
            budget,
        });
        state.writer_busy = true;
        Direct::Rest
    }

    /// The writer task is about to write what it received: keep direct writes out, and
    /// take the rest of a frame one began meanwhile, which goes first. (A rest is always
    /// followed by a wake in the writer's channel, so the writer comes here for it.)
    pub fn writer_busy(&self) -> Option<Rest> {
        let mut state = self.state();
        state.writer_busy = true;
        state.rest.take()
    }

    /// The writer task wrote everything it had and waits for its channel: direct writes
    /// may go on.
    pub fn writer_idle(&self) {
        self.state().writer_busy = false;
    }

    /// The writer task ended: no more direct writes, and the socket is let go (a rest
    /// is dropped with its budget).
    pub fn close(&self) {
        let mut state = self.state();
        state.socket = None;
        state.rest = None;
    }
}

/// Held by the writer task: when it ends, however it ends (returns, panics where panics
/// unwind, is aborted), the direct path lets go of the socket ([`DirectReplies::close`])
/// before the writer's own handle goes.
pub(crate) struct WriterEnds(pub Arc<DirectReplies>);

impl Drop for WriterEnds {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The writer task's half of a shared socket: an `AsyncWrite` over `&OwnedWriteHalf`.
/// Its shutdown is the write half's drop: a FIN when the last holder lets go, which is
/// this writer once [`DirectReplies::close`] let go of the direct path's handle.
pub(crate) struct SharedWriteHalf {
    socket: Arc<OwnedWriteHalf>,
}

impl SharedWriteHalf {
    fn stream(&self) -> &TcpStream {
        (*self.socket).as_ref()
    }
}

impl AsyncWrite for SharedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream().poll_write_ready(context))?;
            // `try_write` clears the readiness it finds gone, so the next poll waits.
            match self.socket.try_write(bytes) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Nothing to do here: the FIN goes when the write half is dropped, with this writer
    /// (the direct path let go of it when the writer ended).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
