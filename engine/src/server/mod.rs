//! The TCP server: accept loop, connection limit, graceful shutdown (after mini-redis).
//!
//! - [`Server::bind`] validates the config, installs the metrics endpoint, binds the
//!   listener and opens the engine (recovery). [`Server::run`] accepts connections until
//!   the shutdown future completes, then: stops accepting, tells every connection to stop
//!   reading, waits (at most `shutdown_timeout_seconds`) for their in-flight requests to be
//!   answered, and shuts the engine down (drain, fsync, final checkpoint).
//! - At most `connections_max` connections are served; one more is accepted, told `busy`
//!   with an Error frame, and closed, so the client learns why instead of timing out.
//! - Each connection ([`connection`]) reads frames ([`frame_io`]), turns requests into
//!   engine requests ([`codec`]) and writes replies as they become durable, in any order;
//!   on plain TCP small ones are written by the thread that releases them ([`direct`]).
//! - Who may connect: with `tls_cert_file`/`tls_key_file` every connection is TLS
//!   ([`tls`]; the handshake bounded by `TLS_HANDSHAKE_TIMEOUT`), with `[[clients]]` every
//!   handshake must carry a known token ([`auth`]). A listener on a non-loopback address
//!   without either is logged as a warning at start.
//!
//! The wire format is `docs/PROTOCOL.md`; the frame codec is `protocol::frame`.

pub mod auth;
pub(crate) mod codec;
mod connection;
mod descriptors;
mod direct;
pub(crate) mod frame_io;
mod shutdown;
pub(crate) mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use protocol::frame::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError};
use crate::core::{Engine, EngineError, ShutdownReport};
use crate::metrics::http::Readiness;
use crate::metrics::MetricsError;
use auth::ClientAuth;
use connection::Context;
use direct::DirectReplies;
use shutdown::Shutdown;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("config error: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("listen = {addr}: cannot bind: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot read the file descriptor limit (RLIMIT_NOFILE): {0}")]
    Descriptors(std::io::Error),
    #[error("{task} failed: {source}")]
    Task {
        task: &'static str,
        source: tokio::task::JoinError,
    },
}

/// Longest pause between accept retries after an error (e.g. out of file descriptors):
/// long enough to let connections close, short enough not to be noticed.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long telling a refused connection `busy` may take: the frame fits an empty socket
/// buffer, so only a peer that vanished makes it wait.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connections over `connections_max` being told `busy` at once, at most; past it one is
/// closed without a word (each holds a descriptor until its client has read the frame).
pub(crate) const REJECTING_MAX: usize = 64;

/// A bound, recovered server that is not accepting yet.
pub struct Server {
    config: Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    engine: Engine,
    /// What `/readyz` reports, when the metrics listener is on.
    readiness: Option<Readiness>,
    /// `Some` when the listener speaks TLS.
    tls: Option<TlsAcceptor>,
    auth: ClientAuth,
}

impl Server {
    /// Validate `config`, serve metrics (when `metrics_listen` is set), bind `listen` and
    /// recover the engine from `data_dir`. Clients may connect from here on; they are
    /// served once [`Server::run`] starts.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let descriptors = descriptors::ensure(config.connections_max)?;
        tracing::debug!(descriptors, "file descriptor limit");
        let engine_config = config.engine_config()?;
        let tls = config.tls_config()?.map(TlsAcceptor::from);
        let auth = config.client_auth()?;
        let readiness = match config.metrics_addr()? {
            Some(addr) => {
                let readiness = crate::metrics::install(addr)?;
                tracing::info!("metrics served at http://{addr}/metrics (and /healthz, /readyz)");
                Some(readiness)
            }
            None => None,
        };
        let addr = config.listen_addr()?;
        let bind_error = |source| ServerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        warn_if_exposed(&config, local_addr, tls.is_some(), auth.is_required());
        // Recovery reads the whole WAL: keep it off the async workers.
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
            .await
            .map_err(|source| ServerError::Task {
                task: "engine open",
                source,
            })??;
        if let Some(readiness) = &readiness {
            let health = engine.health();
            readiness.serving(move || health.check());
        }
        Ok(Server {
            config,
            listener,
            local_addr,
            engine,
            readiness,
            tls,
            auth,
        })
    }

    /// The address actually bound (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until `shutdown` completes, then shut down gracefully (see the module doc).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ShutdownReport, ServerError> {
        let Server {
            config,
            listener,
            local_addr,
            engine,
            readiness,
            tls,
            auth,
        } = self;
        let (notify_shutdown, _) = broadcast::channel(1);
        let (shutdown_complete_sender, mut shutdown_complete) = mpsc::channel::<()>(1);
        let mut accept = Acceptor {
            listener,
            connections: Arc::new(Semaphore::new(config.connections_max as usize)),
            rejecting: Arc::new(Semaphore::new(REJECTING_MAX)),
            connections_max: config.connections_max,
            context: Arc::new(Context {
                engine: engine.handle(),
                requests_in_flight_max: config.requests_in_flight_per_connection_max,
                queue_full_wait_max: Duration::from_millis(config.queue_full_wait_ms_max),
                reply_bytes_max: config.reply_bytes_per_connection_max,
                write_timeout: Duration::from_secs(config.write_timeout_seconds),
                handshake_timeout: Duration::from_secs(config.handshake_timeout_seconds),
                idle_timeout: (config.idle_timeout_seconds > 0)
                    .then(|| Duration::from_secs(config.idle_timeout_seconds)),
                auth,
            }),
            tls,
            notify_shutdown,
            shutdown_complete_sender,
        };
        let transport = if accept.tls.is_some() { " (TLS)" } else { "" };
        tracing::info!("listening on {local_addr}{transport}");
        tokio::select! {
            () = accept.run() => {}
            () = shutdown => tracing::info!("shutdown requested: no new connections"),
        }
        if let Some(readiness) = &readiness {
            readiness.stopping();
        }
        // Dropping the sides held by the acceptor is the signal: connections stop reading,
        // and `recv` below returns once the last of them has answered its requests.
        drop(accept);
        let drained = tokio::time::timeout(config.shutdown_timeout(), shutdown_complete.recv());
        if drained.await.is_err() {
            tracing::warn!(
                shutdown_timeout_seconds = config.shutdown_timeout_seconds,
                "connections still busy after the shutdown timeout; stopping the engine anyway"
            );
        }
        let report = tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .map_err(|source| ServerError::Task {
                task: "engine shutdown",
                source,
            })??;
        tracing::info!(
            lsn_last = report.lsn_last,
            checkpoint_lsn = report.checkpoint_lsn,
            "stopped"
        );
        Ok(report)
    }
}

/// Bind, log `listening on ADDR`, serve until `shutdown` completes, shut down.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<ShutdownReport, ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

/// The accept loop and what each accepted connection is handed.
struct Acceptor {
    listener: TcpListener,
    connections: Arc<Semaphore>,
    /// Slots for connections being refused (see [`REJECTING_MAX`]).
    rejecting: Arc<Semaphore>,
    connections_max: u32,
    context: Arc<Context>,
    tls: Option<TlsAcceptor>,
    notify_shutdown: broadcast::Sender<()>,
    /// Cloned into each connection task; `recv` on the other side returns `None` once
    /// every clone is dropped, i.e. every connection has finished.
    shutdown_complete_sender: mpsc::Sender<()>,
}

impl Acceptor {
    async fn run(&mut self) {
        loop {
            let stream = self.accept().await;
            // Replies are small and latency matters more than packet count.
            let _ = stream.set_nodelay(true);
            match self.connections.clone().try_acquire_owned() {
                Ok(permit) => self.spawn_connection(stream, permit),
                Err(_) => match self.rejecting.clone().try_acquire_owned() {
                    Ok(slot) => {
                        tokio::spawn(reject(stream, self.connections_max, self.tls.clone(), slot));
                    }
                    Err(_) => {
                        crate::metrics::connection_rejected();
                        drop(stream);
                    }
                },
            }
        }
    }

    /// The next connection. Accept errors (out of file descriptors, a connection reset
    /// before it was accepted) are retried with backoff: they pass, and the connections
    /// already open must go on being served.
    async fn accept(&mut self) -> TcpStream {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => return stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    fn spawn_connection(&self, stream: TcpStream, permit: OwnedSemaphorePermit) {
        let context = self.context.clone();
        let mut shutdown = Shutdown::new(self.notify_shutdown.subscribe());
        let shutdown_complete = self.shutdown_complete_sender.clone();
        let tls = self.tls.clone();
        tokio::spawn(async move {
            // The slot is held from here, TLS handshake included (which is bounded).
            let _open = OpenConnection::new(permit);
            let peer = stream.peer_addr().ok();
            match tls {
                None => {
                    let (read_half, write_half) = stream.into_split();
                    let in_flight_max = context.requests_in_flight_max;
                    let (direct, write_half) = DirectReplies::new(write_half, in_flight_max);
                    connection::serve(read_half, write_half, peer, context, shutdown, Some(direct))
                        .await;
                }
                Some(acceptor) => {
                    if let Some(stream) = tls::accept(&acceptor, stream, peer, &mut shutdown).await
                    {
                        let (read_half, write_half) = tokio::io::split(stream);
                        connection::serve(read_half, write_half, peer, context, shutdown, None)
                            .await;
                    }
                }
            }
            drop(shutdown_complete);
        });
    }
}

/// Holds a connection's slot and keeps the gauge right however the task ends.
struct OpenConnection {
    _permit: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(permit: OwnedSemaphorePermit) -> OpenConnection {
        crate::metrics::connection_opened();
        OpenConnection { _permit: permit }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::metrics::connection_closed();
    }
}

/// Tell a connection over the limit why it is refused, then close it. With TLS the frame
/// can only travel inside a session, so the TLS handshake comes first, within the same
/// short bound: a client too slow for it is closed without the frame.
async fn reject(
    stream: TcpStream,
    connections_max: u32,
    tls: Option<TlsAcceptor>,
    _slot: OwnedSemaphorePermit,
) {
    crate::metrics::connection_rejected();
    let Some(acceptor) = tls else {
        let (read_half, write_half) = stream.into_split();
        return tell_busy(read_half, write_half, connections_max).await;
    };
    let accepted = tokio::time::timeout(REJECT_WRITE_TIMEOUT, acceptor.accept(stream)).await;
    if let Ok(Ok(stream)) = accepted {
        let (read_half, write_half) = tokio::io::split(stream);
        tell_busy(read_half, write_half, connections_max).await;
    }
}

async fn tell_busy<R, W>(read_half: R, mut write_half: W, connections_max: u32)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let message = format!("busy: {connections_max} connections open (connections_max)");
    let frame = codec::error_frame(0, 0, ErrorCode::Busy, &message);
    let written = async {
        write_half.write_all(&frame.header).await?;
        write_half.write_all(frame.body.as_slice()).await?;
        write_half.shutdown().await
    };
    if tokio::time::timeout(REJECT_WRITE_TIMEOUT, written)
        .await
        .is_ok()
    {
        connection::linger(read_half).await;
    }
}

/// A loud warning for each way a listener reachable from other machines is unprotected:
/// without TLS, tokens and data cross the network in clear; without tokens anyone who
/// reaches the port may move money. The metrics endpoint never has authentication.
fn warn_if_exposed(config: &Config, listen: SocketAddr, tls: bool, tokens: bool) {
    if !listen.ip().is_loopback() {
        if !tls {
            tracing::warn!(
                "UNPROTECTED: listen = {listen} is not a loopback address and TLS is off \
                 (tls_cert_file, tls_key_file): requests, replies and client tokens cross \
                 the network in clear text"
            );
        }
        if !tokens {
            tracing::warn!(
                "UNPROTECTED: listen = {listen} is not a loopback address and no [[clients]] \
                 are configured: anyone who can reach this port can create accounts and \
                 transfers"
            );
        }
    }
    if let Ok(Some(metrics)) = config.metrics_addr() {
        if !metrics.ip().is_loopback() {
            tracing::warn!(
                "metrics_listen = {metrics} is not a loopback address: /metrics, /healthz \
                 and /readyz have no authentication and no TLS"
            );
        }
    }
}
