//! The async client: one TCP connection, many requests in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::frame::{FrameKind, Header};
use protocol::{
    records, Account, AccountBalance, AccountFilter, CreateResult, Operation, QueryFilter, Transfer,
};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;

use crate::connection::{self, CloseReason, Outgoing, Shared};
use crate::reply::{self, Expected};
use crate::{ClientError, TlsOptions};

/// The server's default limit of requests in flight per connection; the client waits
/// rather than exceed it.
pub const IN_FLIGHT_MAX_DEFAULT: u32 = 64;

/// How long `connect` may take, TCP connect and handshake together.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Knobs of [`Client::connect_with`]. `Default` matches the server's defaults: plain
/// TCP, no token.
#[derive(Clone)]
pub struct ClientOptions {
    /// Requests this client keeps in flight at most; more calls wait for a reply first.
    /// Keep it at or below the server's `in_flight_max` (default 64), or the excess is
    /// answered with `too_many_in_flight`.
    pub in_flight_max: u32,
    /// Bound on TCP connect plus handshakes (TLS and settled).
    pub connect_timeout: Duration,
    /// Connect over TLS, trusting these CAs; `None`: plain TCP.
    pub tls: Option<TlsOptions>,
    /// The client token sent in the handshake (1 to 128 bytes), for a server that lists
    /// clients (`settled token` makes one). A server that lists none ignores it. Without
    /// TLS it crosses the network in clear text.
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            tls: None,
            token: None,
        }
    }
}

/// Shows whether a token is set, never the token.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("in_flight_max", &self.in_flight_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A connection to a settled server. Cheap to clone: clones share the connection, and
/// requests from many tasks are pipelined on it. The connection closes when the last clone
/// is dropped, or when it fails (then every call returns an error; connect again).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    frames: mpsc::Sender<Outgoing>,
    /// Starts at 1: request id 0 means "no request" (handshake, connection-level errors).
    request_id_next: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No caller is left to wait on a reply: stop both tasks and release the socket.
        self.shared.close(CloseReason::Disconnected);
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("version", &self.inner.shared.version)
            .field("closed", &self.inner.shared.is_closed())
            .finish()
    }
}

impl Client {
    /// Connects and handshakes with [`ClientOptions::default`].
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects (over TLS when `options.tls` is set), handshakes (protocol version 1,
    /// with `options.token`) and starts the connection's reader and writer tasks on the
    /// current tokio runtime.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if options.in_flight_max == 0 {
            return Err(ClientError::InvalidArgument {
                reason: "in_flight_max must be at least 1".to_string(),
            });
        }
        check_token(options.token.as_deref())?;
        let connecting = connect_and_handshake(addr, &options);
        let (stream, version) = tokio::time::timeout(options.connect_timeout, connecting)
            .await
            .map_err(|_| ClientError::Handshake {
                reason: format!(
                    "no connection and handshake within {} ms",
                    options.connect_timeout.as_millis()
                ),
            })??;
        let shared = Shared::new(options.in_flight_max, version);
        // Every queued frame holds an in-flight permit, so this capacity is never the limit.
        let capacity = options.in_flight_max as usize;
        let frames = match stream {
            Transport::Plain(stream) => {
                let (read_half, write_half) = stream.into_split();
                connection::spawn_tasks(read_half, write_half, &shared, capacity)
            }
            Transport::Tls(stream) => {
                let (read_half, write_half) = tokio::io::split(*stream);
                connection::spawn_tasks(read_half, write_half, &shared, capacity)
            }
        };
        let inner = Inner {
            shared,
            frames,
            request_id_next: AtomicU64::new(1),
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// False once the connection has closed (every call then fails).
    pub fn is_connected(&self) -> bool {
        !self.inner.shared.is_closed()
    }

    /// Creates accounts; one result per account, in order.
    pub async fn create_accounts(
        &self,
        accounts: &[Account],
    ) -> Result<Vec<CreateResult>, ClientError> {
        self.call(Operation::CreateAccounts, accounts).await
    }

    /// Creates transfers; one result per transfer, in order.
    pub async fn create_transfers(
        &self,
        transfers: &[Transfer],
    ) -> Result<Vec<CreateResult>, ClientError> {
        self.call(Operation::CreateTransfers, transfers).await
    }

    /// The accounts that exist among `ids` (missing ids are left out).
    pub async fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>, ClientError> {
        self.call(Operation::LookupAccounts, ids).await
    }

    /// The transfers that exist among `ids` (missing ids are left out).
    pub async fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>, ClientError> {
        self.call(Operation::LookupTransfers, ids).await
    }

    /// Transfers of one account, selected by `filter`.
    pub async fn get_account_transfers(
        &self,
        filter: AccountFilter,
    ) -> Result<Vec<Transfer>, ClientError> {
        self.call(Operation::GetAccountTransfers, &[filter]).await
    }

    /// Balance history of one account (accounts with the `history` flag).
    pub async fn get_account_balances(
        &self,
        filter: AccountFilter,
    ) -> Result<Vec<AccountBalance>, ClientError> {
        self.call(Operation::GetAccountBalances, &[filter]).await
    }

    /// Accounts selected by `filter`.
    pub async fn query_accounts(&self, filter: QueryFilter) -> Result<Vec<Account>, ClientError> {
        self.call(Operation::QueryAccounts, &[filter]).await
    }

    /// Transfers selected by `filter`.
    pub async fn query_transfers(&self, filter: QueryFilter) -> Result<Vec<Transfer>, ClientError> {
        self.call(Operation::QueryTransfers, &[filter]).await
    }

    /// Sends one request of `event_count` events and returns the checked reply: its header
    /// and a body of whole `operation.result_bytes()` records (for creates, exactly one per
    /// event). The typed methods are built on this.
    pub async fn request(
        &self,
        operation: Operation,
        body: Vec<u8>,
        event_count: u32,
    ) -> Result<(Header, Vec<u8>), ClientError> {
        check_request(operation, body.len(), u64::from(event_count))?;
        let shared = &self.inner.shared;
        // Order matters for cancellation: the awaits come first, and once the waiter is
        // registered the frame is queued without another await, so a caller that gives up
        // can never leave a registered request that was never sent.
        let permit = Arc::clone(&shared.in_flight)
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Disconnected)?;
        let slot = self
            .inner
            .frames
            .reserve()
            .await
            .map_err(|_| ClientError::Disconnected)?;
        let request_id = self.inner.request_id_next.fetch_add(1, Ordering::Relaxed);
        let expected = Expected {
            operation,
            event_count,
        };
        let reply = shared.register(request_id, expected, permit)?;
        let header = Header::new(
            FrameKind::Request,
            operation.code(),
            request_id,
            event_count,
            0,
            &body,
        );
        slot.send(Outgoing {
            header: header.encode(),
            body,
        });
        reply.await.map_err(|_| ClientError::Disconnected)?
    }

    /// A typed request: events out as their wire bytes, records back.
    async fn call<E: bytemuck::Pod, R: bytemuck::Pod>(
        &self,
        operation: Operation,
        events: &[E],
    ) -> Result<Vec<R>, ClientError> {
        debug_assert_eq!(size_of::<E>(), operation.event_bytes() as usize);
        debug_assert_eq!(size_of::<R>(), operation.result_bytes() as usize);
        // Checked before copying the events: a refused request costs nothing.
        check_event_count(operation, events.len() as u64)?;
        let body = records::as_bytes(events).to_vec();
        let event_count = events.len() as u32;
        let (_, body) = self.request(operation, body, event_count).await?;
        reply::decode_records(&body).map_err(|reason| ClientError::Protocol { reason })
    }
}

/// A connected stream, handshakes done.
enum Transport {
    Plain(TcpStream),
    /// Boxed: the TLS session state is large, and this is made once per connection.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect_and_handshake(
    addr: impl ToSocketAddrs,
    options: &ClientOptions,
) -> Result<(Transport, u16), ClientError> {
    let stream = TcpStream::connect(addr).await?;
    // Small pipelined requests must not wait for Nagle; the writer task batches instead.
    stream.set_nodelay(true)?;
    let token = options.token.as_deref().map(str::as_bytes);
    match &options.tls {
        None => {
            let mut stream = stream;
            let version = connection::handshake(&mut stream, token).await?;
            Ok((Transport::Plain(stream), version))
        }
        Some(tls) => {
            let mut stream = tls
                .connector()
                .connect(tls.server_name(), stream)
                .await
                .map_err(|error| ClientError::Handshake {
                    reason: format!("TLS: {error}"),
                })?;
            let version = connection::handshake(&mut stream, token).await?;
            Ok((Transport::Tls(Box::new(stream)), version))
        }
    }
}

/// A token must fit the handshake: refused before connecting, never cut.
fn check_token(token: Option<&str>) -> Result<(), ClientError> {
    let Some(token) = token else { return Ok(()) };
    let max = protocol::frame::HANDSHAKE_TOKEN_BYTES_MAX as usize;
    if token.is_empty() || token.len() > max {
        return Err(ClientError::InvalidArgument {
            reason: format!("token of {} bytes: must be 1 to {max}", token.len()),
        });
    }
    Ok(())
}

/// Refuses, before anything is sent, what the server would refuse.
fn check_request(
    operation: Operation,
    body_bytes: usize,
    event_count: u64,
) -> Result<(), ClientError> {
    check_event_count(operation, event_count)?;
    // Filter operations take exactly one filter; the server refuses an empty one.
    if operation.events_max() == 1 && event_count != 1 {
        return Err(ClientError::InvalidArgument {
            reason: format!("{operation} takes exactly 1 filter, got {event_count}"),
        });
    }
    let body_bytes_expected = event_count * u64::from(operation.event_bytes());
    if body_bytes as u64 != body_bytes_expected {
        return Err(ClientError::InvalidArgument {
            reason: format!(
                "{operation} body of {body_bytes} bytes is not {event_count} events of {} bytes",
                operation.event_bytes()
            ),
        });
    }
    Ok(())
}

fn check_event_count(operation: Operation, event_count: u64) -> Result<(), ClientError> {
    let max = operation.events_max();
    if event_count > u64::from(max) {
        return Err(ClientError::TooManyEvents {
            count: event_count,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_over_the_limits_are_refused() {
        let error = check_request(Operation::CreateTransfers, 8190 * 128, 8190).unwrap_err();
        assert!(matches!(
            error,
            ClientError::TooManyEvents {
                count: 8190,
                max: 8189
            }
        ));
        let error = check_request(Operation::QueryAccounts, 128, 2).unwrap_err();
        assert!(matches!(
            error,
            ClientError::TooManyEvents { count: 2, max: 1 }
        ));
        let error = check_request(Operation::LookupAccounts, 17, 1).unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument { .. }));
        check_request(Operation::CreateTransfers, 8189 * 128, 8189).expect("at the limit");
        check_request(Operation::LookupAccounts, 0, 0).expect("empty request");
        let error = check_request(Operation::QueryAccounts, 0, 0).unwrap_err();
        assert!(matches!(error, ClientError::InvalidArgument { .. }));
    }

    #[test]
    fn tokens_must_fit_the_handshake_and_never_show_in_debug() {
        check_token(None).unwrap();
        check_token(Some(&"a".repeat(128))).unwrap();
        assert!(check_token(Some("")).is_err());
        assert!(check_token(Some(&"a".repeat(129))).is_err());
        let options = ClientOptions {
            token: Some("very-secret".to_string()),
            ..ClientOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
    }
}
