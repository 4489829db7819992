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
    let mut latency_ns =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let (mut slowest_ns, mut slowest_at) = (0u64, 0u64);
    let mut applying_ns = 0u64;
    let mut created = 0u64;
    while created < args.transfers {
        let ahead = GENERATED_AHEAD.min((args.transfers - created) as usize);
        let transfers = random_transfers(&mut rng, args.accounts, u128::from(created) + 1, ahead);
        for batch in transfers.chunks(args.batch_size) {
            let mut old = OldTransfers::new(ledger.evicted_through());
            let start = Instant::now();
            let results = ledger.create_transfers_with(NOW, batch, &mut old);
            let took = start.elapsed().as_nanos() as u64;
            if results.iter().any(|result| result.status != 0) {
                return Err(format!("a transfer after {created} failed: {results:?}"));
            }
            applying_ns += took;
            latency_ns.saturating_record(took.max(1));
            if took > slowest_ns {
                (slowest_ns, slowest_at) = (took, created);
            }
            created += batch.len() as u64;
        }
    }
    let us = |ns: u64| ns as f64 / 1e3;
    println!(
        "{created} transfers in requests of {}: {:.2} M transfers/s; per request p50 {:.1} µs, \
         p99.9 {:.1} µs, max {:.1} µs (after {slowest_at} transfers){}",
        args.batch_size,
        created as f64 / (applying_ns as f64 / 1e9) / 1e6,
        us(latency_ns.value_at_quantile(0.5)),
        us(latency_ns.value_at_quantile(0.999)),
        us(slowest_ns),
        memory_line(),
    );
    Ok(())
}

/// The account table's turn: `count` new accounts into an empty ledger.
fn fill_accounts(count: u64, batch_size: usize) -> Result<(), String> {
    let mut ledger = engine::ledger::Ledger::new();
    let mut latency_ns =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let (mut slowest_ns, mut slowest_at, mut applying_ns) = (0u64, 0u64, 0u64);
    let mut created = 0u64;
    while created < count {
        let ahead = (GENERATED_AHEAD as u64).min(count - created);
        let accounts: Vec<protocol::Account> = (created + 1..=created + ahead)
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
            let took = start.elapsed().as_nanos() as u64;
            if results.iter().any(|result| result.status != 0) {
                return Err(format!("an account after {created} failed: {results:?}"));
            }
            applying_ns += took;
            latency_ns.saturating_record(took.max(1));
            if took > slowest_ns {
                (slowest_ns, slowest_at) = (took, created);
            }
            created += batch.len() as u64;
        }
    }
    println!(
        "{created} accounts in requests of {batch_size}: {:.2} M accounts/s; per request p50 \
         {:.1} µs, p99.9 {:.1} µs, max {:.1} µs (after {slowest_at} accounts){}",
        created as f64 / (applying_ns as f64 / 1e9) / 1e6,
        latency_ns.value_at_quantile(0.5) as f64 / 1e3,
        latency_ns.value_at_quantile(0.999) as f64 / 1e3,
        slowest_ns as f64 / 1e3,
        memory_line(),
    );
    Ok(())
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
