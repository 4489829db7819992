//! Prometheus metrics: what the server records and where operators scrape it.
//!
//! | metric                              | type      | labels               |
//! |-------------------------------------|-----------|----------------------|
//! | `settled_request_duration_seconds`  | histogram | operation            |
//! | `settled_requests_total`            | counter   | operation, outcome   |
//! | `settled_events_total`              | counter   | operation            |
//! | `settled_connections`               | gauge     |                      |
//! | `settled_connection_errors_total`   | counter   | error                |
//! | `settled_transfers_resident`        | gauge     |                      |
//!
//! A request's duration runs from its frame being read to its reply (or error) being
//! written to the socket, so it includes queueing, the batch, and the fsync. `outcome` is
//! `ok` or the error code's name (`too_many_events`, `busy`, ...); `operation` is
//! `unknown` when the code named none. Connection errors are the fatal ones (bad frames),
//! after which the connection is closed.
//!
//! The server's tasks record all but one: the core thread sets `settled_transfers_resident`
//! (transfers in memory) after each eviction, a single atomic store once per checkpoint.
//! An HTTP listener on a thread of its own serves them, so a scrape never competes with
//! requests.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

pub const REQUEST_DURATION_SECONDS: &str = "settled_request_duration_seconds";
pub const REQUESTS_TOTAL: &str = "settled_requests_total";
pub const EVENTS_TOTAL: &str = "settled_events_total";
pub const CONNECTIONS: &str = "settled_connections";
pub const CONNECTION_ERRORS_TOTAL: &str = "settled_connection_errors_total";
pub const TRANSFERS_RESIDENT: &str = "settled_transfers_resident";

/// Latency buckets, 100 µs to 10 s: a read served from memory lands in the first ones, a
/// write waits for an fsync (about 1 ms on good disks, tens on slow ones).
pub const REQUEST_DURATION_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics_listen = {addr}: {source}")]
    Build {
        addr: SocketAddr,
        source: BuildError,
    },
    #[error("metrics: a recorder is already installed in this process")]
    AlreadyInstalled,
    #[error("metrics: {0}")]
    Runtime(std::io::Error),
}

/// Serve `GET /metrics` on `addr` and make this process's recorder the Prometheus one.
/// Fails (nothing installed) when the address cannot be bound. Once per process.
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION_SECONDS.to_string()),
            &REQUEST_DURATION_BUCKETS_SECONDS,
        )
        .map_err(|source| MetricsError::Build { addr, source })?;
    // A runtime of its own: the exporter must outlive whichever runtime called us, and
    // scrapes must not take time from the connections' workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MetricsError::Runtime)?;
    let (recorder, exporter) = {
        let _entered = runtime.enter();
        builder
            .build()
            .map_err(|source| MetricsError::Build { addr, source })?
    };
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    std::thread::Builder::new()
        .name("settled-metrics".into())
        .spawn(move || {
            if let Err(error) = runtime.block_on(exporter) {
                tracing::error!(?error, "metrics endpoint stopped");
            }
        })
        .map_err(MetricsError::Runtime)?;
    describe();
    // Shown from the first scrape on, not only after the first connection.
    metrics::gauge!(CONNECTIONS).set(0.0);
    Ok(())
}

fn describe() {
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from a request frame read to its reply written"
    );
    metrics::describe_counter!(REQUESTS_TOTAL, "Requests answered, by outcome");
    metrics::describe_counter!(EVENTS_TOTAL, "Events in requests answered ok");
    metrics::describe_gauge!(CONNECTIONS, "Open client connections");
    metrics::describe_gauge!(
        TRANSFERS_RESIDENT,
        "Transfers held in memory after the latest eviction"
    );
    metrics::describe_counter!(
        CONNECTION_ERRORS_TOTAL,
        "Connections closed on a fatal protocol error, by error"
    );
}

/// One request answered: `operation` and `outcome` as in the module doc.
pub fn request_answered(
    operation: &'static str,
    outcome: &'static str,
    events: u32,
    took: Duration,
) {
    metrics::histogram!(REQUEST_DURATION_SECONDS, "operation" => operation)
        .record(took.as_secs_f64());
    metrics::counter!(REQUESTS_TOTAL, "operation" => operation, "outcome" => outcome).increment(1);
    if outcome == "ok" {
        metrics::counter!(EVENTS_TOTAL, "operation" => operation).increment(u64::from(events));
    }
}

pub fn connection_opened() {
    metrics::gauge!(CONNECTIONS).increment(1.0);
}

pub fn connection_closed() {
    metrics::gauge!(CONNECTIONS).decrement(1.0);
}

/// A connection closed on a fatal protocol error.
pub fn connection_error(error: &'static str) {
    metrics::counter!(CONNECTION_ERRORS_TOTAL, "error" => error).increment(1);
}
