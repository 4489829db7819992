//! What the core thread spends per transfer beyond applying it, in the steady state the
//! `ledger` criterion bench measures: taking the changes for a checkpoint and evicting old
//! transfers afterwards. Both run between batches in the engine, so sustained throughput
//! is one over (apply + take + evict) per transfer.
//!
//! Run with `cargo run --release -p settled-bench --bin ledger-upkeep -- --accounts 10000`.

use std::time::{Duration, Instant};

use clap::Parser;
use engine::ledger::OldTransfers;
use settled_bench::{ledger_with_accounts, transfers_resident_max_default, Replay, NOW};

#[derive(Parser)]
#[command(about = "Per-transfer cost of applying, taking changes and evicting, steady state")]
struct Args {
    /// Accounts the random transfers move money between.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Batches of 8189 transfers to run (the first quarter is warm-up).
    #[arg(long, default_value_t = 2_000)]
    batches: usize,
    /// Batches between checkpoints (changes taken, old transfers evicted).
    #[arg(long, default_value_t = 64)]
    checkpoint_batches: usize,
    /// Take every checkpoint's changes into fresh vectors instead of the previous
    /// checkpoint's, given back (as the engine's checkpointer does).
    #[arg(long)]
    fresh_changes: bool,
}

#[derive(Default)]
struct Spent {
    time: Duration,
    transfers: u64,
}

impl Spent {
    fn add(&mut self, time: Duration, transfers: u64) {
        self.time += time;
        self.transfers += transfers;
    }

    fn nanos_each(&self) -> f64 {
        self.time.as_nanos() as f64 / self.transfers.max(1) as f64
    }
}

fn main() {
    let args = Args::parse();
    assert!(
        args.checkpoint_batches > 0,
        "--checkpoint-batches must be positive"
    );
    let mut ledger = ledger_with_accounts(args.accounts);
    let mut replay = Replay::new(args.accounts, args.checkpoint_batches);
    let transfers_resident_max = transfers_resident_max_default();
    let warm_up = args.batches / 4;
    let (mut apply, mut take, mut evict) = (Spent::default(), Spent::default(), Spent::default());
    for index in 0..args.batches {
        let batch = replay.next_batch();
        let mut old = OldTransfers::new(ledger.evicted_through());
        let start = Instant::now();
        let results = ledger.create_transfers_with(NOW, &batch, &mut old);
        let applied = start.elapsed();
        assert!(results.iter().all(|result| result.status == 0));
        let measured = index >= warm_up;
        if measured {
            apply.add(applied, batch.len() as u64);
        }
        if (index + 1) % args.checkpoint_batches == 0 {
            let start = Instant::now();
            let changes = ledger.take_changes();
            let taken = start.elapsed();
            let settled = ledger.checkpoint_mark();
            let start = Instant::now();
            let evicted = ledger.evict(settled, transfers_resident_max);
            let evicted_time = start.elapsed();
            if measured {
                take.add(taken, changes.transfers.len() as u64);
                evict.add(evicted_time, evicted);
            }
            // As the checkpointer hands them back once written.
            if !args.fresh_changes {
                ledger.recycle_changes(changes);
            }
        }
    }
    let total = apply.nanos_each() + take.nanos_each() + evict.nanos_each();
    println!("accounts {}, steady state, per transfer:", args.accounts);
    println!("  apply (create_transfers)  {:6.1} ns", apply.nanos_each());
    println!("  take_changes              {:6.1} ns", take.nanos_each());
    println!("  evict                     {:6.1} ns", evict.nanos_each());
    println!(
        "  sum {total:.1} ns: {:.2} M transfers/s sustained on one core",
        1e3 / total
    );
}
