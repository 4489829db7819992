//! The slowest single request while the ledger fills: a fresh ledger takes `--transfers`
//! transfers in requests of `--batch-size` (1 by default, as a waiting user sends them),
//! with nothing evicted, and every request's apply time is recorded. Throughput hides a
//! stall of the single writer; the maximum shows it (before incremental growth, the id
//! index's rebuild at each doubling: 154 ms at 4 M buckets on the development machine).
//!
//! With `--new-accounts N` it fills the account table instead (whose records grew by
//! copying: 2.4 s at 8 M accounts).
//!
//! Run with `cargo run --release -p settled-bench --bin ledger-growth -- --transfers 3000000`.

use std::time::Instant;

use clap::Parser;
use engine::ledger::OldTransfers;
use hdrhistogram::Histogram;
use settled_bench::{ledger_with_accounts, random_transfers, seeded_rng, NOW};

#[derive(Parser)]
#[command(about = "Apply time of each request while a fresh ledger fills: p50, p99.9 and max")]
struct Args {
    /// Accounts the random transfers move money between.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Transfers to create, all resident at the end.
    #[arg(long, default_value_t = 3_000_000)]
    transfers: u64,
    /// Transfers per request.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Fill the account table instead: this many accounts, in requests of
    /// `--batch-size`, and no transfers.
    #[arg(long)]
    new_accounts: Option<u64>,
}

/// Transfers generated ahead at a time, so that generating them stays out of the timing.
const GENERATED_AHEAD: usize = 1 << 16;

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.batch_size == 0 || args.accounts < 2 {
        return Err("--batch-size must be positive and --accounts at least 2".to_owned());
    }
    if let Some(count) = args.new_accounts {
        return fill_accounts(count, args.batch_size);
    }
    let mut ledger = ledger_with_accounts(args.accounts);
    let mut rng = seeded_rng(args.accounts);
    let mut timings = Timings::new()?;
    while timings.created < args.transfers {
        let ahead = GENERATED_AHEAD.min((args.transfers - timings.created) as usize);
        let first_id = u128::from(timings.created) + 1;
        let transfers = random_transfers(&mut rng, args.accounts, first_id, ahead);
        for batch in transfers.chunks(args.batch_size) {
            let mut old = OldTransfers::new(ledger.evicted_through());
            let start = Instant::now();
            let results = ledger.create_transfers_with(NOW, batch, &mut old);
            timings.record(start, batch.len(), &results)?;
        }
    }
    timings.print("transfers", args.batch_size);
    Ok(())
}

/// The account table's turn: `count` new accounts into an empty ledger.
fn fill_accounts(count: u64, batch_size: usize) -> Result<(), String> {
    let mut ledger = engine::ledger::Ledger::new();
    let mut timings = Timings::new()?;
    while timings.created < count {
        let ahead = (GENERATED_AHEAD as u64).min(count - timings.created);
        let accounts: Vec<protocol::Account> = (timings.created + 1..=timings.created + ahead)
            .map(|id| protocol::Account {
                id: u128::from(id),
                ledger: 1,
                code: 1,
                ..protocol::Account::default()
            })
            .collect();
        for batch in accounts.chunks(batch_size) {
            let start = Instant::now();
            let results = ledger.create_accounts(NOW, batch);
            timings.record(start, batch.len(), &results)?;
        }
    }
    timings.print("accounts", batch_size);
    Ok(())
}

/// Every request's apply time, and where the slowest was.
struct Timings {
    latency_ns: Histogram<u64>,
    applying_ns: u64,
    slowest_ns: u64,
    /// Events created before the slowest request.
    slowest_at: u64,
    created: u64,
}

impl Timings {
    fn new() -> Result<Timings, String> {
        Ok(Timings {
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .map_err(|error| error.to_string())?,
            applying_ns: 0,
            slowest_ns: 0,
            slowest_at: 0,
            created: 0,
        })
    }

    /// A request that started at `start` and created `events`; every one must succeed.
    fn record(
        &mut self,
        start: Instant,
        events: usize,
        results: &[protocol::CreateResult],
    ) -> Result<(), String> {
        let took = start.elapsed().as_nanos() as u64;
        if let Some(failed) = results.iter().find(|result| result.status != 0) {
            return Err(format!(
                "an event after {} failed: {failed:?}",
                self.created
            ));
        }
        self.applying_ns += took;
        self.latency_ns.saturating_record(took.max(1));
        if took > self.slowest_ns {
            (self.slowest_ns, self.slowest_at) = (took, self.created);
        }
        self.created += events as u64;
        Ok(())
    }

    fn print(&self, what: &str, batch_size: usize) {
        let us = |ns: u64| ns as f64 / 1e3;
        println!(
            "{} {what} in requests of {batch_size}: {:.2} M {what}/s; per request p50 {:.1} \
             µs, p99.9 {:.1} µs, max {:.1} µs (after {} {what}){}",
            self.created,
            self.created as f64 / (self.applying_ns as f64 / 1e9) / 1e6,
            us(self.latency_ns.value_at_quantile(0.5)),
            us(self.latency_ns.value_at_quantile(0.999)),
            us(self.slowest_ns),
            self.slowest_at,
            memory_line(),
        );
    }
}

/// The process's resident and huge-page memory (Linux), to see that grown tables kept
/// their huge pages.
fn memory_line() -> String {
    let Ok(rollup) = std::fs::read_to_string("/proc/self/smaps_rollup") else {
        return String::new();
    };
    let field = |name: &str| {
        rollup
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    format!(
        "; resident {} MiB, of it in huge pages {} MiB",
        field("Rss:"),
        field("AnonHugePages:")
    )
}
