//! Durable throughput of the in-process engine: submitters send 8189-transfer requests
//! through the whole pipeline (queue, read stage, core, WAL with fsync, checkpoints,
//! eviction) and count transfers whose replies came back, i.e. transfers on disk. Also
//! reports the transfers resident at the end and the process's peak RSS, so that a long
//! run shows memory staying bounded (requests are generated as they are sent).
//!
//! Run with `cargo run --release -p settled-bench --bin engine-throughput -- --help`.

use std::time::{Duration, Instant};

use clap::Parser;
use engine::core::{Engine, EngineConfig, PendingReply, Reply, Request};
use hdrhistogram::Histogram;
use protocol::BATCH_EVENTS_MAX;
use settled_bench::{plain_account_requests, random_transfers, seeded_rng};

#[derive(Parser, Debug)]
#[command(about = "Durable transfers per second through the in-process engine")]
struct Args {
    /// Accounts created before the measurement (ids 1..=N).
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Threads submitting requests at once.
    #[arg(long, default_value_t = 1)]
    submitters: u32,
    /// Requests of 8189 transfers each submitter sends.
    #[arg(long, default_value_t = 200)]
    requests: u32,
    /// Requests each submitter keeps in flight before waiting for the oldest reply.
    #[arg(long, default_value_t = 4)]
    in_flight: u32,
    /// Checkpoint to RocksDB every this many core batches.
    #[arg(long, default_value_t = 64)]
    checkpoint_batches: u32,
    /// Transfers kept in memory once checkpointed (engine default if not given).
    #[arg(long)]
    transfers_resident_max: Option<u64>,
    /// Transfers not yet checkpointed before the core holds requests (engine default if
    /// not given).
    #[arg(long)]
    transfers_uncheckpointed_max: Option<u64>,
    /// Data directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    let temporary = tempfile::tempdir().expect("temporary directory");
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or(temporary.path().to_path_buf());
    let mut config = EngineConfig::new(&data_dir);
    config.checkpoint_batches = args.checkpoint_batches;
    if let Some(max) = args.transfers_resident_max {
        config.transfers_resident_max = max;
    }
    if let Some(max) = args.transfers_uncheckpointed_max {
        config.transfers_uncheckpointed_max = max;
    }
    let engine = Engine::open(config).expect("open engine");
    create_accounts(&engine, args.accounts);

    let started = Instant::now();
    let threads: Vec<_> = (0..args.submitters)
        .map(|submitter| {
            let handle = engine.handle();
            let (accounts, requests) = (args.accounts, args.requests);
            let in_flight = args.in_flight as usize;
            std::thread::spawn(move || {
                let requests = workload(accounts, requests, submitter);
                submit_all(&handle, requests, in_flight)
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new(3).expect("histogram");
    let mut transfers = 0u64;
    for thread in threads {
        let (created, histogram) = thread.join().expect("submitter");
        transfers += created;
        latencies.add(histogram).expect("same histogram bounds");
    }
    let elapsed = started.elapsed();
    let resident = engine.transfers_resident();
    let shutdown_started = Instant::now();
    let report = engine.shutdown().expect("clean shutdown");
    println!(
        "engine: {} submitter(s), {} accounts, {} in flight each: {transfers} durable \
         transfers in {:.2} s = {:.0} transfers/s; request latency p50 {:.1} ms, p99 {:.1} \
         ms, max {:.1} ms; shutdown (final checkpoint) {:.2} s; WAL records {}; transfers \
         resident at the end {resident}; peak RSS {} MiB",
        args.submitters,
        args.accounts,
        args.in_flight,
        elapsed.as_secs_f64(),
        transfers as f64 / elapsed.as_secs_f64(),
        micros_as_ms(latencies.value_at_quantile(0.5)),
        micros_as_ms(latencies.value_at_quantile(0.99)),
        micros_as_ms(latencies.max()),
        shutdown_started.elapsed().as_secs_f64(),
        report.lsn_last,
        settled_bench::daemon::peak_rss_bytes("self").unwrap_or(0) / (1024 * 1024),
    );
}

fn micros_as_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn create_accounts(engine: &Engine, count: u64) {
    for accounts in plain_account_requests(count) {
        let Ok(Reply::Created(results)) = engine
            .handle()
            .submit_wait(Request::CreateAccounts(accounts))
        else {
            panic!("create_accounts failed")
        };
        assert!(results.iter().all(|result| result.status == 0));
    }
}

/// Each submitter's transfers get ids of their own, so every transfer is created. Made
/// one request at a time, as they are sent.
fn workload(accounts: u64, requests: u32, submitter: u32) -> impl Iterator<Item = Request> {
    let mut rng = seeded_rng(u64::from(submitter) + 1);
    (0..requests).map(move |request| {
        let first_id = ((u128::from(submitter) + 1) << 64)
            | (u128::from(request) * u128::from(BATCH_EVENTS_MAX));
        Request::CreateTransfers(random_transfers(
            &mut rng,
            accounts,
            first_id + 1,
            BATCH_EVENTS_MAX as usize,
        ))
    })
}

fn submit_all(
    handle: &engine::core::EngineHandle,
    requests: impl Iterator<Item = Request>,
    in_flight_max: usize,
) -> (u64, Histogram<u64>) {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let mut in_flight: std::collections::VecDeque<(Instant, PendingReply)> = Default::default();
    let mut created = 0;
    let mut wait_oldest = |in_flight: &mut std::collections::VecDeque<(Instant, PendingReply)>| {
        let (sent, reply) = in_flight.pop_front().expect("a request in flight");
        let results = match reply.wait() {
            Ok(Reply::Created(results)) => results,
            other => panic!("create_transfers failed: {other:?}"),
        };
        let latency = sent.elapsed().max(Duration::from_micros(1));
        histogram
            .record(latency.as_micros() as u64)
            .expect("latency in range");
        created += results.iter().filter(|result| result.status == 0).count() as u64;
    };
    for request in requests {
        if in_flight.len() == in_flight_max {
            wait_oldest(&mut in_flight);
        }
        in_flight.push_back((Instant::now(), handle.submit(request).expect("submit")));
    }
    while !in_flight.is_empty() {
        wait_oldest(&mut in_flight);
    }
    (created, histogram)
}
