//! `settle-bench` end to end: it starts the `settled` built beside it, loads it over TCP
//! with every kind of transfer it can send, and verifies what was acknowledged.

use std::path::PathBuf;
use std::process::Command;

fn settle_bench() -> Command {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_settle-bench"));
    let settled = bench.with_file_name("settled");
    assert!(
        settled.is_file(),
        "{} is missing: run the workspace's tests (cargo test --workspace builds it)",
        settled.display()
    );
    Command::new(bench)
}

#[test]
fn a_mixed_run_is_verified_and_reported_as_json() {
    let output = settle_bench()
        .args([
            "--accounts=500",
            "--transfers=200000",
            "--batch-size=2000",
            "--clients=2",
            "--in-flight=2",
            "--pending-percent=20",
            "--linked-percent=10",
            "--distribution=zipf",
            "--queries=20",
            "--restart",
            "--json",
        ])
        .output()
        .expect("run settle-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "settle-bench failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    assert_eq!(report["transfers"], 200000);
    assert_eq!(
        report["requests"], 100,
        "200000 transfers in requests of 2000"
    );
    assert_eq!(report["verification"]["transfers_checked"], 200000);
    assert_eq!(report["verification"]["problems"], serde_json::json!([]));
    // Nothing in this workload can fail: every transfer is created, posts and voids
    // included (their pending transfers were applied long before).
    assert_eq!(report["results"], serde_json::json!({"created": 200000}));
    assert_eq!(report["verification"]["created_found"], 200000);
    assert_eq!(report["queries"]["count"], 20);
    assert_eq!(report["queries"]["lookup_transfers_found"], 20);
    assert_eq!(report["daemon_exit_ok"], true);
    // Every 997th transfer, looked up again after a graceful restart.
    assert_eq!(report["restart_transfers_checked"], 201);
    assert!(report["restart_seconds"].as_f64().unwrap() > 0.0);
    assert!(report["daemon_peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(report["daemon_data_bytes"].as_u64().unwrap() > 200000 * 128);
    let latency = &report["request_latency"];
    assert!(latency["p50_ms"].as_f64().unwrap() <= latency["max_ms"].as_f64().unwrap());
}

#[test]
fn a_knob_out_of_range_is_refused_by_name() {
    let output = settle_bench()
        .args(["--pending-percent=60"])
        .output()
        .expect("run settle-bench");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--pending-percent 60: must be 0 to 50"),
        "{stderr}"
    );
}
