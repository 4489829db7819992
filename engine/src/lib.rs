//! `settled-engine`: the settlement engine behind the `settled` daemon.
//!
//! Read it in this order:
//! - [`ledger`]: the pure, deterministic double-entry state machine. No I/O, no clock.
//! - [`core`]: the pipeline around it: a bounded request queue, the single core thread
//!   that applies batches, the write-ahead log that makes them durable before any reply
//!   leaves, expiry as a logged input, checkpoints to the store, recovery.
//! - [`store`]: RocksDB checkpoints of the ledger state and their recovery.
//! - `sim` (hidden): the deterministic simulation of the pipeline that
//!   `tests/simulation.rs` runs from seeds.
//! - [`server`], [`config`], [`metrics`]: the `settled` daemon around the engine: the tokio
//!   TCP server (frames, connections, backpressure, graceful shutdown), every option with
//!   its default and precedence, and the Prometheus endpoint.

pub mod config;
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod ledger;
pub mod metrics;
pub mod server;
#[doc(hidden)]
pub mod sim;
pub mod store;
