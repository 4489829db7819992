//! A blocking client for code that does not run tokio: the same methods as
//! [`crate::Client`], each waiting for its reply.
//!
//! It owns a one-worker tokio runtime on which the connection's reader and writer tasks
//! run, so replies are read even between calls. Clones share the connection and the runtime
//! and may be used from many threads at once; their requests are pipelined.
//!
//! Do not call it (or drop its last clone) from inside an async runtime: blocking there
//! would stall that runtime's thread, and tokio panics on it. Use [`crate::Client`] there.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use protocol::frame::Header;
use protocol::{
    Account, AccountBalance, AccountFilter, CreateResult, Operation, QueryFilter, Transfer,
};
use tokio::runtime::Runtime;

use crate::{ClientError, ClientOptions};

/// Blocking counterpart of [`crate::Client`].
#[derive(Clone, Debug)]
pub struct Client {
    // Field order is drop order: the connection closes before its runtime shuts down.
    client: crate::Client,
    runtime: Arc<Runtime>,
}

impl Client {
    /// Connects and handshakes with [`ClientOptions::default`].
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default())
    }

    /// Connects and handshakes; `addr` is resolved with the standard library.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("settled-client")
            .enable_all()
            .build()?;
        let client = runtime.block_on(crate::Client::connect_with(&addrs[..], options))?;
        Ok(Client {
            client,
            runtime: Arc::new(runtime),
        })
    }

    /// The async client underneath, for code that has both worlds.
    pub fn as_async(&self) -> &crate::Client {
        &self.client
    }

    /// False once the connection has closed (every call then fails).
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    pub fn create_accounts(&self, accounts: &[Account]) -> Result<Vec<CreateResult>, ClientError> {
        self.runtime.block_on(self.client.create_accounts(accounts))
    }

    pub fn create_transfers(
        &self,
        transfers: &[Transfer],
    ) -> Result<Vec<CreateResult>, ClientError> {
        self.runtime
            .block_on(self.client.create_transfers(transfers))
    }

    pub fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>, ClientError> {
        self.runtime.block_on(self.client.lookup_accounts(ids))
    }

    pub fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>, ClientError> {
        self.runtime.block_on(self.client.lookup_transfers(ids))
    }

    pub fn get_account_transfers(
        &self,
        filter: AccountFilter,
    ) -> Result<Vec<Transfer>, ClientError> {
        self.runtime
            .block_on(self.client.get_account_transfers(filter))
    }

    pub fn get_account_balances(
        &self,
        filter: AccountFilter,
    ) -> Result<Vec<AccountBalance>, ClientError> {
        self.runtime
            .block_on(self.client.get_account_balances(filter))
    }

    pub fn query_accounts(&self, filter: QueryFilter) -> Result<Vec<Account>, ClientError> {
        self.runtime.block_on(self.client.query_accounts(filter))
    }

    pub fn query_transfers(&self, filter: QueryFilter) -> Result<Vec<Transfer>, ClientError> {
        self.runtime.block_on(self.client.query_transfers(filter))
    }

    /// See [`crate::Client::request`].
    pub fn request(
        &self,
        operation: Operation,
        body: Vec<u8>,
        event_count: u32,
    ) -> Result<(Header, Vec<u8>), ClientError> {
        self.runtime
            .block_on(self.client.request(operation, body, event_count))
    }
}
