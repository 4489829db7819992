//! `settled-engine`: the settlement engine behind the `settled` daemon.
//!
//! Read it in this order:
//! - [`ledger`]: the pure, deterministic double-entry state machine. No I/O, no clock.
//! - [`core`]: the pipeline around it: a bounded request queue, the single core thread
//!   that applies batches, the write-ahead log that makes them durable before any reply
//!   leaves, expiry as a logged input, checkpoints to the store, recovery.
//! - [`store`]: RocksDB checkpoints of the ledger state and their recovery.

pub mod core;
pub mod ledger;
pub mod store;
