//! Prometheus metrics, and the health endpoints operators and orchestrators poll.
//!
//! Served on `metrics_listen` by a small HTTP server on a thread of its own ([`http`]):
//! `GET /metrics` (Prometheus text format), `GET /healthz` (200 while the process runs)
//! and `GET /readyz` (200 once recovered, while the WAL accepts writes and the
//! checkpointer is healthy; 503 with a one-line reason otherwise).
//!
//! Every name has one `settled_` prefix and base units (`_seconds`, `_bytes`), counters end
//! in `_total`, and labels take a bounded set of values (operation names, result and error
//! code names): never an account or transfer id.
//!
//! | metric | type | labels | recorded by |
//! |--------|------|--------|-------------|
//! | `settled_request_duration_seconds` | histogram | operation | connection writer, per request: frame read to reply written |
//! | `settled_requests_total` | counter | operation, outcome | per request: `ok` or the error code's name |
//! | `settled_events_total` | counter | operation, result | per request: create results by name (`created`, `exists`, each failure), `ok` for reads |
//! | `settled_connections` | gauge | | per connection opened or closed |
//! | `settled_connections_rejected_total` | counter | | per connection refused at `connections_max` |
//! | `settled_connection_errors_total` | counter | error | per connection closed on a fatal protocol error |
//! | `settled_connections_unauthorized_total` | counter | | per handshake refused `unauthorized` (no token, or one no configured client has) |
//! | `settled_tls_handshake_failures_total` | counter | | per connection whose TLS handshake failed or timed out (plaintext clients, wrong certificates, scanners) |
//! | `settled_queue_full_waits_total` | counter | | per submit that found the engine queue full (the connection then waits) |
//! | `settled_core_batches_total` | counter | | core thread, per batch |
//! | `settled_core_batch_events` | histogram | | per batch: events applied |
//! | `settled_core_batch_apply_seconds` | histogram | | per batch: time to apply it (not the fsync) |
//! | `settled_core_queue_requests` | gauge | | per batch: requests waiting for the core |
//! | `settled_core_paced_total` | counter | | per batch the core slowed down because checkpoints fall behind |
//! | `settled_transfers_resident` | gauge | | per batch: transfers in memory |
//! | `settled_transfers_checkpointed_resident` | gauge | | per batch: of those, held by a written checkpoint (evictable) |
//! | `settled_transfers_pending` | gauge | | per batch: pending transfers not yet posted, voided or expired |
//! | `settled_expirations_pending` | gauge | | per batch: pending transfers with a timeout |
//! | `settled_failed_ids` | gauge | | per batch: transiently failed ids held in memory (until a checkpoint holds them) |
//! | `settled_wal_records_written_total`, `settled_wal_bytes_written_total`, `settled_wal_fsyncs_total` | counter | | WAL writer, per group |
//! | `settled_wal_fsync_duration_seconds` | histogram | | per group: time in fdatasync |
//! | `settled_wal_group_records` | histogram | | per group: records it held (group commit) |
//! | `settled_wal_durable_lsn` | gauge | | per group |
//! | `settled_wal_poisoned` | gauge | | sampler: 1 once a write or fsync failed |
//! | `settled_checkpoints_total`, `settled_checkpoint_failures_total` | counter | | checkpointer, per checkpoint |
//! | `settled_checkpoint_duration_seconds` | histogram | | per checkpoint: wait for the WAL, RocksDB write, WAL truncation |
//! | `settled_checkpoint_rows_total`, `settled_checkpoint_bytes_total` | counter | | per checkpoint: RocksDB rows and batch bytes |
//! | `settled_checkpoint_last_success_timestamp_seconds` | gauge | | per checkpoint |
//! | `settled_checkpoint_lag_records` | gauge | | sampler: WAL records no written checkpoint holds |
//! | `settled_rocksdb_pending_compaction_bytes`, `settled_rocksdb_live_sst_bytes`, `settled_rocksdb_memtable_bytes`, `settled_rocksdb_block_cache_usage_bytes` | gauge | | sampler, from RocksDB properties |
//! | `settled_rocksdb_write_stopped`, `settled_rocksdb_delayed_write_rate_bytes` | gauge | | sampler: write stalls |
//! | `settled_ready` | gauge | | sampler: 1 when `/readyz` would answer 200 |
//! | `settled_build_info` | gauge | version, commit | once, value 1 |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds` | counter, gauges | | sampler, from /proc (the standard process metrics) |
//!
//! The core thread records per batch, never per event; the sampler thread
//! (`settled-sampler`, once a second) reads RocksDB properties and /proc off the hot path.
//! Without a recorder (tests, tools) every macro is a no-op.

pub mod http;
pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUEST_DURATION_SECONDS: &str = "settled_request_duration_seconds";
pub const REQUESTS_TOTAL: &str = "settled_requests_total";
pub const EVENTS_TOTAL: &str = "settled_events_total";
pub const CONNECTIONS: &str = "settled_connections";
pub const CONNECTIONS_REJECTED_TOTAL: &str = "settled_connections_rejected_total";
pub const CONNECTION_ERRORS_TOTAL: &str = "settled_connection_errors_total";
pub const CONNECTIONS_UNAUTHORIZED_TOTAL: &str = "settled_connections_unauthorized_total";
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "settled_tls_handshake_failures_total";
pub const QUEUE_FULL_WAITS_TOTAL: &str = "settled_queue_full_waits_total";

pub const CORE_BATCHES_TOTAL: &str = "settled_core_batches_total";
pub const CORE_BATCH_EVENTS: &str = "settled_core_batch_events";
pub const CORE_BATCH_APPLY_SECONDS: &str = "settled_core_batch_apply_seconds";
pub const CORE_QUEUE_REQUESTS: &str = "settled_core_queue_requests";
pub const CORE_PACED_TOTAL: &str = "settled_core_paced_total";
pub const TRANSFERS_RESIDENT: &str = "settled_transfers_resident";
pub const TRANSFERS_CHECKPOINTED_RESIDENT: &str = "settled_transfers_checkpointed_resident";
pub const TRANSFERS_PENDING: &str = "settled_transfers_pending";
pub const EXPIRATIONS_PENDING: &str = "settled_expirations_pending";
pub const FAILED_IDS: &str = "settled_failed_ids";

pub const WAL_RECORDS_WRITTEN_TOTAL: &str = "settled_wal_records_written_total";
pub const WAL_BYTES_WRITTEN_TOTAL: &str = "settled_wal_bytes_written_total";
pub const WAL_FSYNCS_TOTAL: &str = "settled_wal_fsyncs_total";
pub const WAL_FSYNC_DURATION_SECONDS: &str = "settled_wal_fsync_duration_seconds";
pub const WAL_GROUP_RECORDS: &str = "settled_wal_group_records";
pub const WAL_DURABLE_LSN: &str = "settled_wal_durable_lsn";
pub const WAL_POISONED: &str = "settled_wal_poisoned";

pub const CHECKPOINTS_TOTAL: &str = "settled_checkpoints_total";
pub const CHECKPOINT_FAILURES_TOTAL: &str = "settled_checkpoint_failures_total";
pub const CHECKPOINT_DURATION_SECONDS: &str = "settled_checkpoint_duration_seconds";
pub const CHECKPOINT_ROWS_TOTAL: &str = "settled_checkpoint_rows_total";
pub const CHECKPOINT_BYTES_TOTAL: &str = "settled_checkpoint_bytes_total";
pub const CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "settled_checkpoint_last_success_timestamp_seconds";
pub const CHECKPOINT_LAG_RECORDS: &str = "settled_checkpoint_lag_records";

pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "settled_rocksdb_pending_compaction_bytes";
pub const ROCKSDB_LIVE_SST_BYTES: &str = "settled_rocksdb_live_sst_bytes";
pub const ROCKSDB_MEMTABLE_BYTES: &str = "settled_rocksdb_memtable_bytes";
pub const ROCKSDB_BLOCK_CACHE_USAGE_BYTES: &str = "settled_rocksdb_block_cache_usage_bytes";
pub const ROCKSDB_WRITE_STOPPED: &str = "settled_rocksdb_write_stopped";
pub const ROCKSDB_DELAYED_WRITE_RATE_BYTES: &str = "settled_rocksdb_delayed_write_rate_bytes";

pub const READY: &str = "settled_ready";
pub const BUILD_INFO: &str = "settled_build_info";

/// Request latency buckets, 50 µs to 10 s: a read served from memory lands in the first
/// ones, a write waits for an fsync (about 1 ms on good disks, tens on slow ones).
const REQUEST_DURATION_BUCKETS_SECONDS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// fsync and batch-apply buckets, 10 µs to 2.5 s.
const SHORT_DURATION_BUCKETS_SECONDS: [f64; 15] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.5, 2.5,
];
/// Checkpoint buckets, 1 ms to 5 minutes.
const CHECKPOINT_DURATION_BUCKETS_SECONDS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 300.0,
];
/// Sizes: events per batch (up to 4 x 8189) and records per WAL group.
const COUNT_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 8189.0, 16378.0, 32756.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics_listen = {addr}: {source}")]
    Build {
        addr: SocketAddr,
        source: BuildError,
    },
    #[error("metrics_listen = {addr}: cannot bind: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: a recorder is already installed in this process")]
    AlreadyInstalled,
    #[error("metrics: {0}")]
    Runtime(std::io::Error),
}

/// Make this process's metrics recorder the Prometheus one and serve it, with the health
/// endpoints, on `addr`. Once per process. Returns the readiness to report into.
pub fn install(addr: SocketAddr) -> Result<http::Readiness, MetricsError> {
    let handle = recorder(addr)?;
    let readiness = http::Readiness::default();
    http::serve(addr, handle, readiness.clone())?;
    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("SETTLED_COMMIT"))
        .set(1.0);
    // Shown from the first scrape on, not only after the first event: a panel or alert
    // on a counter that never moved must still find it.
    for counter in [
        CONNECTIONS_REJECTED_TOTAL,
        CONNECTIONS_UNAUTHORIZED_TOTAL,
        TLS_HANDSHAKE_FAILURES_TOTAL,
        QUEUE_FULL_WAITS_TOTAL,
        CORE_BATCHES_TOTAL,
        CORE_PACED_TOTAL,
        WAL_RECORDS_WRITTEN_TOTAL,
        WAL_BYTES_WRITTEN_TOTAL,
        WAL_FSYNCS_TOTAL,
        CHECKPOINTS_TOTAL,
        CHECKPOINT_FAILURES_TOTAL,
        CHECKPOINT_ROWS_TOTAL,
        CHECKPOINT_BYTES_TOTAL,
    ] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!(CONNECTIONS).set(0.0);
    metrics::gauge!(READY).set(0.0);
    Ok(readiness)
}

fn recorder(addr: SocketAddr) -> Result<PrometheusHandle, MetricsError> {
    let buckets: [(&str, &[f64]); 6] = [
        (REQUEST_DURATION_SECONDS, &REQUEST_DURATION_BUCKETS_SECONDS),
        (CORE_BATCH_APPLY_SECONDS, &SHORT_DURATION_BUCKETS_SECONDS),
        (WAL_FSYNC_DURATION_SECONDS, &SHORT_DURATION_BUCKETS_SECONDS),
        (
            CHECKPOINT_DURATION_SECONDS,
            &CHECKPOINT_DURATION_BUCKETS_SECONDS,
        ),
        (CORE_BATCH_EVENTS, &COUNT_BUCKETS),
        (WAL_GROUP_RECORDS, &COUNT_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_string()), values)
            .map_err(|source| MetricsError::Build { addr, source })?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a request frame read to its reply written"
    );
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests answered, by operation and outcome"
    );
    describe_counter!(
        EVENTS_TOTAL,
        "Events of answered requests, by operation and result"
    );
    describe_gauge!(CONNECTIONS, "Open client connections");
    describe_counter!(
        CONNECTIONS_REJECTED_TOTAL,
        "Connections refused because connections_max were open"
    );
    describe_counter!(
        CONNECTION_ERRORS_TOTAL,
        "Connections closed on a fatal protocol error, by error"
    );
    describe_counter!(
        CONNECTIONS_UNAUTHORIZED_TOTAL,
        "Handshakes refused because the client token was missing or unknown"
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "Connections whose TLS handshake failed or timed out"
    );
    describe_counter!(
        QUEUE_FULL_WAITS_TOTAL,
        "Submissions that found the engine queue full and waited"
    );
    describe_counter!(CORE_BATCHES_TOTAL, "Batches the core applied");
    describe_histogram!(CORE_BATCH_EVENTS, Unit::Count, "Events per core batch");
    describe_histogram!(
        CORE_BATCH_APPLY_SECONDS,
        Unit::Seconds,
        "Time the core spent applying one batch"
    );
    describe_gauge!(CORE_QUEUE_REQUESTS, "Requests waiting for the core thread");
    describe_counter!(
        CORE_PACED_TOTAL,
        "Batches after which the core slowed down for checkpoints to catch up"
    );
    describe_gauge!(TRANSFERS_RESIDENT, "Transfers held in memory");
    describe_gauge!(
        TRANSFERS_CHECKPOINTED_RESIDENT,
        "Transfers in memory that a written checkpoint holds"
    );
    describe_gauge!(TRANSFERS_PENDING, "Pending transfers not yet resolved");
    describe_gauge!(EXPIRATIONS_PENDING, "Pending transfers with a timeout");
    describe_gauge!(FAILED_IDS, "Transiently failed transfer ids held in memory");
    describe_counter!(WAL_RECORDS_WRITTEN_TOTAL, "WAL records made durable");
    describe_counter!(WAL_BYTES_WRITTEN_TOTAL, Unit::Bytes, "WAL bytes written");
    describe_counter!(WAL_FSYNCS_TOTAL, "WAL fdatasync calls");
    describe_histogram!(
        WAL_FSYNC_DURATION_SECONDS,
        Unit::Seconds,
        "Time in fdatasync per WAL group"
    );
    describe_histogram!(WAL_GROUP_RECORDS, Unit::Count, "Records per WAL group");
    describe_gauge!(WAL_DURABLE_LSN, "Highest durable WAL LSN");
    describe_gauge!(WAL_POISONED, "1 once a WAL write or fsync failed");
    describe_counter!(CHECKPOINTS_TOTAL, "Checkpoints written to RocksDB");
    describe_counter!(CHECKPOINT_FAILURES_TOTAL, "Checkpoints that failed");
    describe_histogram!(
        CHECKPOINT_DURATION_SECONDS,
        Unit::Seconds,
        "Time to write one checkpoint"
    );
    describe_counter!(CHECKPOINT_ROWS_TOTAL, "RocksDB rows written by checkpoints");
    describe_counter!(
        CHECKPOINT_BYTES_TOTAL,
        Unit::Bytes,
        "RocksDB write batch bytes of checkpoints"
    );
    describe_gauge!(
        CHECKPOINT_LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the newest checkpoint written"
    );
    describe_gauge!(
        CHECKPOINT_LAG_RECORDS,
        "WAL records that no written checkpoint holds"
    );
    describe_gauge!(
        ROCKSDB_PENDING_COMPACTION_BYTES,
        Unit::Bytes,
        "Bytes RocksDB estimates compaction must rewrite"
    );
    describe_gauge!(
        ROCKSDB_LIVE_SST_BYTES,
        Unit::Bytes,
        "Bytes of live SST files"
    );
    describe_gauge!(
        ROCKSDB_MEMTABLE_BYTES,
        Unit::Bytes,
        "Bytes in RocksDB memtables"
    );
    describe_gauge!(
        ROCKSDB_BLOCK_CACHE_USAGE_BYTES,
        Unit::Bytes,
        "Bytes held by the RocksDB block cache"
    );
    describe_gauge!(ROCKSDB_WRITE_STOPPED, "1 while RocksDB stops writes");
    describe_gauge!(
        ROCKSDB_DELAYED_WRITE_RATE_BYTES,
        Unit::Bytes,
        "Rate RocksDB slowed writes to (0: not slowed)"
    );
    describe_gauge!(READY, "1 when /readyz answers 200");
    describe_gauge!(BUILD_INFO, "Version and commit of this build (value 1)");
    process::describe();
}

/// One request answered: `operation` and `outcome` as in the module doc; `results` counts
/// the events by result name.
pub fn request_answered(
    operation: &'static str,
    outcome: &'static str,
    results: &[(&'static str, u32)],
    took: Duration,
) {
    metrics::histogram!(REQUEST_DURATION_SECONDS, "operation" => operation)
        .record(took.as_secs_f64());
    metrics::counter!(REQUESTS_TOTAL, "operation" => operation, "outcome" => outcome).increment(1);
    for (result, count) in results {
        metrics::counter!(EVENTS_TOTAL, "operation" => operation, "result" => *result)
            .increment(u64::from(*count));
    }
}

pub fn connection_opened() {
    metrics::gauge!(CONNECTIONS).increment(1.0);
}

pub fn connection_closed() {
    metrics::gauge!(CONNECTIONS).decrement(1.0);
}

pub fn connection_rejected() {
    metrics::counter!(CONNECTIONS_REJECTED_TOTAL).increment(1);
}

/// A connection closed on a fatal protocol error.
pub fn connection_error(error: &'static str) {
    metrics::counter!(CONNECTION_ERRORS_TOTAL, "error" => error).increment(1);
}

/// A handshake refused `unauthorized`.
pub fn connection_unauthorized() {
    metrics::counter!(CONNECTIONS_UNAUTHORIZED_TOTAL).increment(1);
}

pub fn tls_handshake_failed() {
    metrics::counter!(TLS_HANDSHAKE_FAILURES_TOTAL).increment(1);
}

pub fn queue_full_wait() {
    metrics::counter!(QUEUE_FULL_WAITS_TOTAL).increment(1);
}
