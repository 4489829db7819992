//! Pure ledger throughput: `create_transfers` on batches of 8189 uniform-random plain
//! transfers, single thread, over 10k and over 1M accounts.
//!
//! Two ledgers, each timed on `create_transfers` alone:
//! - `steady`: the engine's condition once it has run a while. Every `CHECKPOINT_BATCHES`
//!   batches (outside the timed region) the changes are taken and old transfers evicted to
//!   `transfers_resident_max` (the engine's default, 1 Mi), as the core does after each
//!   checkpoint; the id index and the memory of evicted chunks are reused.
//! - `growing`: a fresh ledger that keeps every transfer, as after a restart, reset to the
//!   accounts-only state every `TRANSFERS_PER_LEDGER` transfers (outside the timed region)
//!   to bound memory. It also pays for growing the id index and for new memory.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::ledger::{Ledger, OldTransfers};
use protocol::BATCH_EVENTS_MAX;
use settled_bench::{ledger_with_accounts, transfers_resident_max_default, Replay, NOW};

const BATCH_EVENTS: usize = BATCH_EVENTS_MAX as usize;
const TRANSFERS_PER_LEDGER: u64 = 4_000_000;
/// Batches between checkpoints in the steady mode (the engine checkpoints after 262144
/// events, 65536 batches or 30 s, whichever comes first: 32 batches of 8189 events under
/// full load). Also the number of batches prepared: a round of them comes between
/// checkpoints.
const CHECKPOINT_BATCHES: usize = 64;

#[derive(Clone, Copy)]
enum Mode {
    Steady,
    Growing,
}

fn create_transfers(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_create_transfers");
    group.throughput(Throughput::Elements(BATCH_EVENTS as u64));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for accounts in [10_000u64, 1_000_000] {
        let base = ledger_with_accounts(accounts);
        for (name, mode) in [("steady", Mode::Steady), ("growing", Mode::Growing)] {
            // One run across all of criterion's samples (it calls the routine once per
            // sample): a ledger made per sample would never reach the steady state.
            let mut run = Run::new(&base, accounts, mode);
            run.warm_up();
            group.bench_function(BenchmarkId::new(name, accounts), |b| {
                b.iter_custom(|iterations| (0..iterations).map(|_| run.batch()).sum());
            });
        }
    }
    group.finish();
}

/// One ledger fed a [`Replay`], so that every transfer is new to it.
struct Run<'a> {
    base: &'a Ledger,
    ledger: Ledger,
    replay: Replay,
    mode: Mode,
    applied: usize,
    transfers_resident_max: u64,
}

impl<'a> Run<'a> {
    fn new(base: &'a Ledger, accounts: u64, mode: Mode) -> Self {
        Run {
            base,
            ledger: base.clone(),
            replay: Replay::new(accounts, CHECKPOINT_BATCHES),
            mode,
            applied: 0,
            transfers_resident_max: transfers_resident_max_default(),
        }
    }

    /// Bring a steady run to its steady state: old transfers evicted at least twice, the
    /// id index at its full size, evicted chunks' memory in reuse.
    fn warm_up(&mut self) {
        if let Mode::Steady = self.mode {
            let warm = self.transfers_resident_max * 2 + (CHECKPOINT_BATCHES * BATCH_EVENTS) as u64;
            while self.ledger.transfers_count() < warm {
                self.batch();
            }
        }
    }

    /// Apply the next batch; returns the time `create_transfers` took.
    fn batch(&mut self) -> Duration {
        if let Mode::Growing = self.mode {
            if self.ledger.transfers_count() >= TRANSFERS_PER_LEDGER {
                self.ledger = self.base.clone();
            }
        }
        let batch = self.replay.next_batch();
        // Every id is new, so no evicted transfer needs reading back: the engine's
        // read stage would find nothing.
        let mut old = OldTransfers::new(self.ledger.evicted_through());
        let start = Instant::now();
        let results = self.ledger.create_transfers_with(NOW, &batch, &mut old);
        let elapsed = start.elapsed();
        assert!(results.iter().all(|result| result.status == 0));
        self.applied += 1;
        if matches!(self.mode, Mode::Steady) && self.applied.is_multiple_of(CHECKPOINT_BATCHES) {
            drop(self.ledger.take_changes());
            let settled = self.ledger.checkpoint_mark();
            self.ledger.evict(settled, self.transfers_resident_max);
        }
        elapsed
    }
}

criterion_group!(benches, create_transfers);
criterion_main!(benches);
