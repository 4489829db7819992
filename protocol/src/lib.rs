//! The records that cross the wire and the disk in `settled`.
//!
//! Every hot-path record is a fixed-layout `#[repr(C)]` little-endian struct whose size is
//! asserted at compile time, so a buffer of records is converted to and from bytes without
//! per-field work (see [`records`]):
//!
//! | record                      | bytes | what it is                                           |
//! |-----------------------------|-------|------------------------------------------------------|
//! | [`Account`]                 | 128   | a double-entry account and its four balances         |
//! | [`Transfer`]                | 128   | an immutable movement of `amount` between two accounts |
//! | [`AccountFilter`]           | 128   | input of `get_account_transfers` / `get_account_balances` |
//! | [`QueryFilter`]             | 64    | input of `query_accounts` / `query_transfers`        |
//! | [`AccountBalance`]          | 128   | one historical balance snapshot of an account        |
//! | [`CreateResult`]            | 16    | result of one create event: status code + timestamp |
//! | [`frame::Header`]           | 64    | frame header: kind, operation, request id, sizes, checksums |
//!
//! Frames ([`frame`]) wrap those records for the TCP protocol: a 64-byte checksummed header
//! (magic, version, kind, operation, request id, event count, body size and checksum), then
//! the body. `docs/PROTOCOL.md` documents the protocol byte by byte.
//!
//! Result codes ([`CreateAccountResult`], [`CreateTransferResult`]) are listed in precedence
//! order (when several apply, the smallest code wins) and their numeric values are part of
//! the protocol: a code is never renumbered, new codes are only ever appended.
//!
//! The semantics of every field and result are those of `shared/SEMANTICS.md`.
//!
//! [`LedgerAsset`] (asset code and decimal scale of a ledger id) is shared by the daemon's
//! config and the `settle` CLI.

#[cfg(not(target_endian = "little"))]
compile_error!(
    "settled's wire and disk records are little-endian; big-endian targets are not supported"
);

mod account;
mod asset;
mod filter;
mod flags;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod operation;
pub mod records;
mod results;
mod transfer;

pub use account::Account;
pub use asset::{
    ledger_find, ledgers_default, ledgers_validate, LedgerAsset, LedgerAssetError, LEDGER_SCALE_MAX,
};
pub use filter::{
    AccountBalance, AccountFilter, AccountFilterFlags, QueryFilter, QueryFilterFlags,
};
pub use flags::{AccountFlags, TransferFlags};
pub use operation::Operation;
pub use results::{CreateAccountResult, CreateResult, CreateTransferResult, UnknownResultCode};
pub use transfer::Transfer;

/// Most events one request may carry. Chosen so that a request of 8189 128-byte events plus
/// a header fits in 1 MiB, as in the reference ledger.
pub const BATCH_EVENTS_MAX: u32 = 8189;

/// Ids 0 and `u128::MAX` are reserved and never name an object.
pub const ID_RESERVED_MAX: u128 = u128::MAX;

/// A post with this amount posts the full pending amount.
pub const AMOUNT_MAX: u128 = u128::MAX;

/// Timestamps are nanoseconds since the Unix epoch and must stay below 2^63.
pub const TIMESTAMP_MAX: u64 = (1 << 63) - 1;

/// Nanoseconds per second, for converting `Transfer::timeout` (seconds) to a timestamp delta.
pub const NS_PER_SECOND: u64 = 1_000_000_000;
