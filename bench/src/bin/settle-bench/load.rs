//! Sending the workload: every connection keeps `in_flight` requests going, each taking
//! the next batch number from one shared counter, so requests leave in about sequence
//! order whatever the concurrency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::Client;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::workload::Workload;

/// What the load phase saw.
pub struct Load {
    pub elapsed: Duration,
    pub requests: u64,
    /// Per-request latency, send to reply, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Results by create_transfers status code.
    pub results: BTreeMap<u32, u64>,
    /// Bit `seq` set when transfer `seq` was answered `created`.
    pub created: Created,
}

/// One bit per transfer of the run.
pub struct Created {
    words: Vec<AtomicU64>,
}

impl Created {
    pub fn new(transfers: u64) -> Created {
        let words = transfers.div_ceil(64);
        Created {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn set(&self, seq: u64) {
        self.words[(seq / 64) as usize].fetch_or(1 << (seq % 64), Ordering::Relaxed);
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.words[(seq / 64) as usize].load(Ordering::Relaxed) & (1 << (seq % 64)) != 0
    }
}

/// Latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

struct Sender {
    client: Client,
    workload: Arc<Workload>,
    batch_next: Arc<AtomicU64>,
    created: Arc<Created>,
    progress: ProgressBar,
}

struct Tally {
    requests: u64,
    latency_us: Histogram<u64>,
    results: BTreeMap<u32, u64>,
}

impl Sender {
    /// Requests until the batches run out, one at a time.
    async fn run(self) -> Result<Tally, String> {
        let mut tally = Tally {
            requests: 0,
            latency_us: histogram(),
            results: BTreeMap::new(),
        };
        let batches = self.workload.batches();
        loop {
            let batch = self.batch_next.fetch_add(1, Ordering::Relaxed);
            if batch >= batches {
                return Ok(tally);
            }
            let range = self.workload.batch_range(batch);
            let transfers = self.workload.batch(batch);
            let sent = Instant::now();
            let results = self
                .client
                .create_transfers(&transfers)
                .await
                .map_err(|error| format!("create_transfers of batch {batch} failed: {error}"))?;
            let took_us = sent.elapsed().as_micros() as u64;
            tally.latency_us.saturating_record(took_us.max(1));
            tally.requests += 1;
            assert_eq!(results.len(), transfers.len(), "one result per event");
            for (seq, result) in range.zip(&results) {
                *tally.results.entry(result.status).or_default() += 1;
                if result.status == protocol::CreateTransferResult::Created.code() {
                    self.created.set(seq);
                }
            }
            self.progress.inc(transfers.len() as u64);
        }
    }
}

/// Send every transfer of `workload` over `clients`, `in_flight` requests each.
pub async fn run(
    clients: &[Client],
    in_flight: u32,
    workload: Arc<Workload>,
    progress: ProgressBar,
) -> Result<Load, String> {
    let created = Arc::new(Created::new(workload.transfers));
    let batch_next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        for _ in 0..in_flight {
            let sender = Sender {
                client: client.clone(),
                workload: Arc::clone(&workload),
                batch_next: Arc::clone(&batch_next),
                created: Arc::clone(&created),
                progress: progress.clone(),
            };
            tasks.spawn(sender.run());
        }
    }
    let mut load = Load {
        elapsed: Duration::ZERO,
        requests: 0,
        latency_us: histogram(),
        results: BTreeMap::new(),
        created: Created::new(0),
    };
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|error| format!("a sender task failed: {error}"))??;
        load.requests += tally.requests;
        load.latency_us
            .add(&tally.latency_us)
            .map_err(|error| format!("merging latencies: {error}"))?;
        for (status, count) in tally.results {
            *load.results.entry(status).or_default() += count;
        }
    }
    load.elapsed = started.elapsed();
    progress.finish_and_clear();
    load.created = Arc::into_inner(created).expect("every sender finished");
    Ok(load)
}
