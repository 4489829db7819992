//! Metrics with the real parts: the release-like `settled` binary, Prometheus's own
//! `promtool` and a real Prometheus server evaluating every query of the Grafana dashboard.
//!
//! `make test` installs Debian's `prometheus` package (promtool included) when missing.
//! Without it these tests say so and pass, unless `SETTLED_REQUIRE_SYSTEM_TESTS=1` (set by
//! CI), which makes a missing Prometheus a failure.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use client::blocking::Client;
use common::daemon::{free_port, http_get, skip_without, spawn_with_settings, Daemon};
use common::{account, LEDGER};
use protocol::{Account, AccountFlags, CreateTransferResult, Transfer};

/// `name` on PATH, or `None` after saying why the test cannot run (a failure when CI
/// requires it).
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        skip_without(&format!(
            "{name} not found: install Debian's `prometheus` package (make test does) to run \
             this test"
        ));
    }
    found
}

/// A daemon with metrics on, checkpointing every second so checkpoint metrics move.
fn start_daemon(dir: &Path, metrics: SocketAddr) -> (Daemon, SocketAddr) {
    spawn_with_settings(dir, Some(metrics), "checkpoint_interval_seconds = 1\n")
}

/// Accounts 1..=10, then `rounds` requests of 100 transfers each, one of which always
/// fails (an unknown debit account) so a failure result is counted too.
fn traffic(addr: SocketAddr, round_first: u64, rounds: u64) -> (u64, u64) {
    let client = Client::connect(addr).expect("connect");
    let accounts: Vec<Account> = (1..=10)
        .map(|id| account(id, AccountFlags::empty()))
        .collect();
    client.create_accounts(&accounts).expect("create accounts");
    let (mut created, mut failed) = (0, 0);
    for round in round_first..round_first + rounds {
        let transfers: Vec<Transfer> = (0..100u64)
            .map(|index| Transfer {
                id: u128::from(round * 1000 + index + 1),
                debit_account_id: if index == 0 {
                    99
                } else {
                    1 + u128::from(index % 10)
                },
                credit_account_id: 1 + u128::from((index + 1) % 10),
                amount: 5,
                ledger: LEDGER,
                code: 1,
                ..Transfer::default()
            })
            .collect();
        for result in client
            .create_transfers(&transfers)
            .expect("create transfers")
        {
            match result.transfer_status() {
                Ok(CreateTransferResult::Created) => created += 1,
                Ok(CreateTransferResult::DebitAccountNotFound) => failed += 1,
                other => panic!("unexpected result {other:?}"),
            }
        }
    }
    client.lookup_accounts(&[1, 2]).expect("lookup");
    (created, failed)
}

/// The value of the sample `series` (name with its labels, as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_scrape_after_traffic_shows_it_and_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (mut daemon, addr) = start_daemon(dir.path(), metrics);
    let (created, failed) = traffic(addr, 0, 20);
    assert_eq!((created, failed), (1980, 20));
    // The sampler reads once a second and a checkpoint is due every second.
    std::thread::sleep(Duration::from_millis(2500));
    let (status, text) = http_get(metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    let value =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    let transfers = "operation=\"create_transfers\"";
    assert_eq!(
        value(&format!(
            "settled_events_total{{{transfers},result=\"created\"}}"
        )),
        1980.0
    );
    assert_eq!(
        value(&format!(
            "settled_events_total{{{transfers},result=\"debit_account_not_found\"}}"
        )),
        20.0
    );
    assert_eq!(
        value(&format!(
            "settled_requests_total{{{transfers},outcome=\"ok\"}}"
        )),
        20.0
    );
    // 21 writes (accounts plus 20 transfer requests): at least that many batches and WAL
    // records, at least one fsync each group.
    assert!(value("settled_core_batches_total") >= 21.0);
    assert!(value("settled_wal_records_written_total") >= 21.0);
    assert!(value("settled_wal_fsyncs_total") >= 1.0);
    assert!(value("settled_wal_bytes_written_total") > 2000.0 * 128.0);
    assert!(value("settled_wal_durable_lsn") >= 21.0);
    assert!(
        value("settled_checkpoints_total") >= 1.0,
        "a checkpoint every second"
    );
    assert!(value("settled_checkpoint_rows_total") >= 1980.0);
    assert_eq!(value("settled_checkpoint_failures_total"), 0.0);
    assert_eq!(value("settled_checkpoint_lag_records"), 0.0);
    assert_eq!(value("settled_transfers_resident"), 1980.0);
    // The 20 failed ids are checkpointed, so they left memory (retries read the store).
    assert_eq!(value("settled_failed_ids"), 0.0);
    assert_eq!(value("settled_wal_poisoned"), 0.0);
    assert_eq!(value("settled_ready"), 1.0);
    assert!(
        value("settled_rocksdb_live_sst_bytes") + value("settled_rocksdb_memtable_bytes") > 0.0
    );
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 5.0);
    assert!(text.contains("settled_build_info{version=\""), "{text}");
    let (ready, body) = http_get(metrics, "/readyz");
    assert!(ready.contains("200") && body == "ready\n", "{ready} {body}");
    let (healthy, _) = http_get(metrics, "/healthz");
    assert!(healthy.contains("200"), "{healthy}");

    if let Some(promtool) = prometheus_tool("promtool") {
        let mut check = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = check.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        daemon.stop_with("TERM").code(),
        Some(0),
        "{:?}",
        daemon.stderr
    );
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scraping `target` every second with config/prometheus.yml's job.
    fn start(binary: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/prometheus.yml");
        let config = std::fs::read_to_string(shipped).unwrap();
        assert!(config.contains("\"127.0.0.1:9100\""), "{config}");
        let config = config
            .replace("\"127.0.0.1:9100\"", &format!("\"{target}\""))
            .replace("scrape_interval: 5s", "scrape_interval: 1s");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr }
    }

    /// Evaluate `expr` now: the number of series it returns.
    fn series(&self, expr: &str) -> Result<usize, String> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr)));
        if !status.contains("200") {
            return Err(format!("{status}: {body}"));
        }
        let reply: serde_json::Value =
            serde_json::from_str(&body).map_err(|error| format!("{error}: {body}"))?;
        match reply["data"]["result"].as_array() {
            Some(result) if reply["status"] == "success" => Ok(result.len()),
            _ => Err(body),
        }
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let Some(binary) = prometheus_tool("prometheus") else {
        return;
    };
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grafana/settled.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |target| (title.clone(), target["expr"].as_str().unwrap().to_string()))
        })
        .collect();
    assert!(queries.len() >= 30, "the dashboard has its panels");

    let dir = tempfile::tempdir().unwrap();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (mut daemon, addr) = start_daemon(dir.path(), metrics);
    let prometheus = Prometheus::start(&binary, dir.path(), metrics);
    // Traffic spread over several scrapes, so that rates and quantiles have two samples.
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(6) {
        traffic(addr, round, 5);
        round += 5;
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut empty: Vec<String>;
    loop {
        empty = queries
            .iter()
            .filter(|(_, expr)| prometheus.series(expr).map_or(true, |series| series == 0))
            .map(|(title, expr)| format!("{title}: {expr}"))
            .collect();
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        traffic(addr, round, 5);
        round += 5;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        empty.is_empty(),
        "dashboard queries that return nothing ({} of {}):\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
    drop(prometheus);
    assert_eq!(
        daemon.stop_with("TERM").code(),
        Some(0),
        "{:?}",
        daemon.stderr
    );
}

/// `GET path` on the in-process exporter without blocking the runtime that serves it.
async fn http_get_async(addr: SocketAddr, path: &'static str) -> (String, String) {
    tokio::task::spawn_blocking(move || http_get(addr, path))
        .await
        .expect("http_get")
}

// The only test in this binary that runs a server in-process, so the only one that installs
// the process-wide metrics recorder: a server test running beside it (they run on threads of
// one process) would count its own requests into the same counters.
#[tokio::test]
async fn an_in_process_server_exports_request_and_connection_metrics() {
    use common::wire::{server_config, TestServer, Wire};
    use protocol::{CreateResult, Operation};
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = settled_engine::config::Config {
        metrics_listen: metrics_addr.to_string(),
        ..server_config(dir.path())
    };
    let server = TestServer::start(config).await;
    let mut wire = Wire::ready(server.addr).await;
    let accounts = [
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
    ];
    let created: Vec<CreateResult> = wire.call(Operation::CreateAccounts, 1, &accounts).await;
    assert_eq!(created.len(), 2);
    let found: Vec<Account> = wire.call(Operation::LookupAccounts, 2, &[1u128]).await;
    assert_eq!(found.len(), 1);
    // A request is counted once its reply is written, just after the client may have
    // read it: scrape until the counts are in, for a few seconds at most.
    let expected = [
        "settled_request_duration_seconds_bucket{operation=\"create_accounts\",le=\"0.0001\"}",
        "settled_request_duration_seconds_bucket{operation=\"lookup_accounts\",le=\"10\"}",
        "settled_requests_total{operation=\"create_accounts\",outcome=\"ok\"}",
        "settled_events_total{operation=\"create_accounts\",result=\"created\"} 2",
        "settled_events_total{operation=\"lookup_accounts\",result=\"ok\"} 1",
        "settled_connections 1",
        "settled_core_batches_total",
        "settled_wal_fsync_duration_seconds_bucket",
        "settled_build_info{",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http_get_async(metrics_addr, "/metrics").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let missing: Vec<_> = expected
            .iter()
            .filter(|line| !body.contains(*line))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "missing {missing:?} in:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (health, _) = http_get_async(metrics_addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let (ready, body) = http_get_async(metrics_addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && body.ends_with("ready\n"),
        "{ready} {body}"
    );
    let (missing, _) = http_get_async(metrics_addr, "/nothing").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    server.stop().await;
}
