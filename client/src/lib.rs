//! Rust client for `settled`, the settlement engine daemon.
//!
//! # In five minutes
//!
//! A [`Client`] is one TCP connection to a settled server. [`Client::connect`] opens it
//! and agrees on the protocol version (the handshake); after that every method sends one
//! request and waits for its reply:
//!
//! | method                                  | sends                        | returns                  |
//! |-----------------------------------------|------------------------------|--------------------------|
//! | [`create_accounts`](Client::create_accounts)   | up to 8189 [`Account`]s   | one [`CreateResult`] each |
//! | [`create_transfers`](Client::create_transfers) | up to 8189 [`Transfer`]s  | one [`CreateResult`] each |
//! | [`lookup_accounts`](Client::lookup_accounts)   | up to 8189 ids            | the accounts that exist  |
//! | [`lookup_transfers`](Client::lookup_transfers) | up to 8189 ids            | the transfers that exist |
//! | [`get_account_transfers`](Client::get_account_transfers) | an [`AccountFilter`] | transfers        |
//! | [`get_account_balances`](Client::get_account_balances)   | an [`AccountFilter`] | [`AccountBalance`]s |
//! | [`query_accounts`](Client::query_accounts)     | a [`QueryFilter`]         | accounts                 |
//! | [`query_transfers`](Client::query_transfers)   | a [`QueryFilter`]         | transfers                |
//!
//! Amounts are `u128` integers in the asset's smallest unit (cents for USD). A create
//! result's `status` is a [`CreateAccountResult`] / [`CreateTransferResult`] code: read it
//! with [`CreateResult::account_status`] / [`CreateResult::transfer_status`]. `created`
//! and `exists` both mean "the object is there"; anything else says why not. Ids are the
//! idempotency keys: after a lost connection, resend the same events with the same ids.
//!
//! ```no_run
//! use settled_client::{Account, Client, CreateTransferResult, Transfer};
//!
//! # async fn example() -> Result<(), settled_client::ClientError> {
//! let client = Client::connect("127.0.0.1:3000").await?;
//! let accounts = [1u128, 2].map(|id| Account { id, ledger: 840, code: 1, ..Account::default() });
//! client.create_accounts(&accounts).await?;
//! let transfer = Transfer {
//!     id: 100,
//!     debit_account_id: 1,
//!     credit_account_id: 2,
//!     amount: 1_250, // $12.50 in cents
//!     ledger: 840,
//!     code: 1,
//!     ..Transfer::default()
//! };
//! let results = client.create_transfers(&[transfer]).await?;
//! assert_eq!(results[0].transfer_status(), Ok(CreateTransferResult::Created));
//! let balances = client.lookup_accounts(&[1, 2]).await?;
//! println!("debits posted on account 1: {}", balances[0].debits_posted);
//! # Ok(())
//! # }
//! ```
//!
//! # Many requests at once
//!
//! `Client` is `Clone`; clones share the connection. Calls from many tasks are pipelined:
//! they are all in flight together, the server may answer them in any order, and each call
//! gets its own reply (matched by request id). The client keeps at most
//! [`ClientOptions::in_flight_max`] requests in flight (default 64, the server's default
//! limit); further calls wait. For throughput, put many events in one request (up to
//! 8189) rather than many requests of one event.
//!
//! # Errors
//!
//! Every method returns [`ClientError`]. A request the server refuses gives
//! [`ClientError::Server`] with its [`ErrorCode`] and message. A connection that breaks,
//! or a server that sends malformed bytes, fails *every* call in flight
//! ([`ClientError::Disconnected`], [`ClientError::Protocol`]): no call ever waits forever
//! on a dead connection. Requests over the limits are refused before anything is sent
//! ([`ClientError::TooManyEvents`]).
//!
//! # TLS and tokens
//!
//! A server with TLS on needs [`ClientOptions::tls`]: [`TlsOptions::from_ca_file`] names
//! the CA to trust and the server's name (a DNS name or an IP address in its certificate);
//! [`TlsOptions::with_client_identity_files`] adds a client certificate for a server that
//! requires one. A server that lists clients needs [`ClientOptions::token`]; without a
//! valid one, connecting fails with [`ClientError::Server`] `unauthorized`, and a read-only
//! token's creates fail with `forbidden`.
//!
//! ```no_run
//! use settled_client::{Client, ClientOptions, TlsOptions};
//!
//! # async fn example() -> Result<(), settled_client::ClientError> {
//! let options = ClientOptions {
//!     tls: Some(TlsOptions::from_ca_file("ca.pem", "ledger.internal")?),
//!     token: std::env::var("SETTLE_TOKEN").ok(),
//!     ..ClientOptions::default()
//! };
//! let client = Client::connect_with("ledger.internal:3000", options).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Without async
//!
//! [`blocking::Client`] has the same methods and blocks instead; it runs its own small
//! tokio runtime.
//!
//! # Underneath
//!
//! The wire protocol is in `docs/PROTOCOL.md`; the frame codec is [`protocol::frame`].
//! [`Client::request`] sends raw bodies for operations without a typed method. [`json`]
//! reads and writes accounts and transfers as the JSON objects the `settle` CLI uses.

mod client;
mod connection;
mod error;
mod reply;
mod tls;

pub mod blocking;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;

pub use client::{Client, ClientOptions, CONNECT_TIMEOUT_DEFAULT, IN_FLIGHT_MAX_DEFAULT};
pub use error::ClientError;
pub use tls::TlsOptions;

/// The wire types, so users need no separate dependency on `settled-protocol`.
pub use protocol;
pub use protocol::frame::{ErrorCode, Header};
pub use protocol::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult,
    CreateResult, CreateTransferResult, Operation, QueryFilter, QueryFilterFlags, Transfer,
    TransferFlags, BATCH_EVENTS_MAX,
};
