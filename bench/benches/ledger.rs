//! Pure ledger throughput: `create_transfers` on batches of 8189 uniform-random plain
//! transfers, single thread, over 10k and over 1M accounts.
//!
//! The ledger keeps every transfer in memory, so the bench resets it to the accounts-only
//! state every `TRANSFERS_PER_LEDGER` transfers (outside the timed region) to keep memory
//! bounded; all batches inside a run go to a ledger that already holds transfers, as in
//! production.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use protocol::BATCH_EVENTS_MAX;
use settled_bench::{ledger_with_accounts, random_transfers, seeded_rng, NOW};

const BATCHES_PREPARED: usize = 64;
const TRANSFERS_PER_LEDGER: u64 = 4_000_000;

fn create_transfers(c: &mut Criterion) {
    let batch_events = BATCH_EVENTS_MAX as usize;
    let mut group = c.benchmark_group("ledger_create_transfers");
    group.throughput(Throughput::Elements(batch_events as u64));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for accounts in [10_000u64, 1_000_000] {
        let base = ledger_with_accounts(accounts);
        let mut rng = seeded_rng(accounts);
        let batches: Vec<_> = (0..BATCHES_PREPARED)
            .map(|index| {
                random_transfers(&mut rng, accounts, 1, batch_events)
                    .into_iter()
                    .map(move |mut t| {
                        t.id += (index * batch_events) as u128;
                        t
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        group.bench_with_input(
            BenchmarkId::new("accounts", accounts),
            &batches,
            |b, batches| {
                let mut ledger = base.clone();
                let mut round: u128 = 0;
                let mut next = 0;
                b.iter_custom(|iterations| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iterations {
                        if ledger.transfers_count() >= TRANSFERS_PER_LEDGER {
                            ledger = base.clone();
                            round = 0;
                        }
                        if next == batches.len() {
                            next = 0;
                            round += 1;
                        }
                        // Shift ids per round so every transfer is new to the ledger.
                        let shift = round * (batches.len() * batch_events) as u128;
                        let batch: Vec<_> = batches[next]
                            .iter()
                            .map(|t| protocol::Transfer {
                                id: t.id + shift,
                                ..*t
                            })
                            .collect();
                        next += 1;
                        let start = Instant::now();
                        let results = ledger.create_transfers(NOW, &batch);
                        elapsed += start.elapsed();
                        debug_assert!(results.iter().all(|r| r.status == 0));
                        std::hint::black_box(results);
                    }
                    elapsed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, create_transfers);
criterion_main!(benches);
