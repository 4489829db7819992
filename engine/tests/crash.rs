//! Abrupt stops: a child process runs the engine under a random workload and is killed
//! with SIGKILL at a random moment (mid-batch, between a WAL fsync and a checkpoint,
//! during a checkpoint, during WAL truncation). The parent then recovers the data
//! directory and checks that
//! - the recovered state is exactly the state after some prefix of the submitted
//!   requests (state hash equal to a reference ledger fed that prefix), and
//! - that prefix includes every request the child saw acknowledged.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{apply_reference, config, Workload};
use rand::{Rng, SeedableRng};
use settled_engine::core::{recover_ledger, Engine, Reply};
use settled_engine::ledger::Ledger;

const CHILD_DIR: &str = "SETTLED_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "SETTLED_CRASH_CHILD_SEED";
const ACCOUNTS: u128 = 60;
/// Requests in flight at once in the child: enough that kills land between a batch's
/// append and its fsync.
const IN_FLIGHT_MAX: usize = 8;

/// The child's side. Ignored in normal runs; the parent runs it by name.
#[test]
#[ignore = "run by crash_recovery_keeps_every_acknowledged_request in a child process"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("child needs a data directory");
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let engine = Engine::open(config(dir.as_ref())).unwrap();
    let handle = engine.handle();
    let mut workload = Workload::new(seed, ACCOUNTS);
    let mut in_flight = std::collections::VecDeque::new();
    let mut stdout = std::io::stdout().lock();
    for index in 0u64.. {
        in_flight.push_back((index, handle.submit(workload.next_request()).unwrap()));
        if in_flight.len() == IN_FLIGHT_MAX {
            let (acked, reply) = in_flight.pop_front().unwrap();
            assert!(matches!(reply.wait().unwrap(), Reply::Created(_)));
            writeln!(stdout, "acked {acked}").unwrap();
            stdout.flush().unwrap();
        }
    }
}

#[test]
fn crash_recovery_keeps_every_acknowledged_request() {
    let mut checkpoints_seen = 0;
    let mut evictions_seen = 0;
    for seed in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let acked_last = run_child_and_kill(dir.path(), seed);
        let (recovered, report) = recover_ledger(&config(dir.path())).unwrap();
        if report.checkpoint_lsn > 0 {
            checkpoints_seen += 1;
        }
        if recovered.evicted_through() > 0 {
            evictions_seen += 1;
        }
        let prefix = matching_prefix(seed, acked_last, recovered.state_hash());
        eprintln!("seed {seed}: last acknowledged request {acked_last}, recovered prefix {prefix:?}, {report:?}");
        assert!(
            prefix.is_some(),
            "seed {seed}: recovered state is no prefix of the requests from {acked_last} on \
             ({report:?})"
        );
        // The recovered data directory keeps working.
        let engine = Engine::open(config(dir.path())).unwrap();
        let mut workload = Workload::new(seed, ACCOUNTS);
        let request = workload.next_request();
        engine.handle().submit_wait(request).unwrap();
        engine.shutdown().unwrap();
    }
    assert!(checkpoints_seen > 0, "no run was killed after a checkpoint");
    assert!(
        evictions_seen > 0,
        "no run recovered with evicted transfers"
    );
}

/// Start the child, let it get a random number of acknowledgements, kill it at a random
/// instant after that, and return the index of the last request it saw acknowledged.
fn run_child_and_kill(dir: &std::path::Path, seed: u64) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Odd seeds run long enough for transfers to leave memory before the kill (a whole
    // chunk of 16384 must be in a written checkpoint, and checkpoints trail the acks).
    let acks_before_kill = if seed.is_multiple_of(2) {
        rng.random_range(5..80)
    } else {
        rng.random_range(500..700)
    };
    let mut acked_last = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(index) = line.strip_prefix("acked ") {
            acked_last = Some(index.parse::<u64>().unwrap());
            if acked_last >= Some(acks_before_kill) {
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_micros(rng.random_range(0..20_000)));
    child.kill().unwrap();
    // Acknowledgements printed before the kill still count.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(index) = line.strip_prefix("acked ") {
            acked_last = Some(index.parse::<u64>().unwrap());
        }
    }
    child.wait().unwrap();
    acked_last.expect("the child acknowledged requests before being killed")
}

/// The number of requests whose application gives `hash`, if it is at least
/// `acked_last + 1` (every acknowledged request applied).
fn matching_prefix(seed: u64, acked_last: u64, hash: u128) -> Option<u64> {
    let mut workload = Workload::new(seed, ACCOUNTS);
    let mut reference = Ledger::new();
    // Requests past the last acknowledgement may or may not have become durable, but no
    // more than the child could have had in flight (plus what was queued behind them).
    let limit = acked_last + 1 + IN_FLIGHT_MAX as u64 + 1;
    for applied in 1..=limit {
        apply_reference(&mut reference, &workload.next_request());
        if applied > acked_last && reference.state_hash() == hash {
            return Some(applied);
        }
    }
    None
}
