//! What settled's benchmarks (`benches/`) and measurement tools (`src/bin/`) share:
//!
//! - here, the in-process workloads: plain accounts and random transfers for a [`Ledger`],
//!   and [`Replay`] for the steady-state measurements;
//! - [`daemon`]: a `settled` child process for the tools that load it over TCP
//!   (`settle-bench`, `settle-crash`): started on a free port, its log kept, stopped or
//!   killed, never left behind;
//! - [`pages`]: a ledger's accounts or transfers read back page by page, to check what the
//!   daemon holds.

pub mod daemon;
pub mod pages;

use engine::core::EngineConfig;
use engine::ledger::Ledger;
use protocol::{Account, Transfer, BATCH_EVENTS_MAX};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Clock reading used by benchmarks: any fixed instant works, the ledger only needs it to
/// be in range.
pub const NOW: u64 = 1_700_000_000_000_000_000;

/// Plain accounts with ids 1..=count on ledger 1, in requests of at most
/// `BATCH_EVENTS_MAX`.
pub fn plain_account_requests(count: u64) -> Vec<Vec<Account>> {
    let ids: Vec<u128> = (1..=u128::from(count)).collect();
    ids.chunks(BATCH_EVENTS_MAX as usize)
        .map(|chunk| {
            chunk
                .iter()
                .map(|id| Account {
                    id: *id,
                    ledger: 1,
                    code: 1,
                    ..Account::default()
                })
                .collect()
        })
        .collect()
}

/// A ledger with `count` plain accounts (ids 1..=count) on ledger 1.
pub fn ledger_with_accounts(count: u64) -> Ledger {
    let mut ledger = Ledger::new();
    for accounts in plain_account_requests(count) {
        let results = ledger.create_accounts(NOW, &accounts);
        assert!(
            results.iter().all(|r| r.status == 0),
            "account creation failed"
        );
    }
    ledger
}

/// Plain transfers between uniformly random distinct accounts, with fresh ids from
/// `first_id` on.
pub fn random_transfers(
    rng: &mut StdRng,
    accounts: u64,
    first_id: u128,
    count: usize,
) -> Vec<Transfer> {
    (0..count as u128)
        .map(|offset| {
            let debit = rng.random_range(1..=accounts);
            let mut credit = rng.random_range(1..accounts);
            if credit >= debit {
                credit += 1;
            }
            Transfer {
                id: first_id + offset,
                debit_account_id: debit.into(),
                credit_account_id: credit.into(),
                amount: rng.random_range(1..1_000),
                ledger: 1,
                code: 1,
                ..Transfer::default()
            }
        })
        .collect()
}

pub fn seeded_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The engine's default `transfers_resident_max`: what the steady-state measurements evict
/// down to, as the core does after each checkpoint.
pub fn transfers_resident_max_default() -> u64 {
    EngineConfig::new("").transfers_resident_max
}

/// Batches of random transfers replayed round after round, ids shifted each round so that
/// every transfer is new to a ledger that applied the earlier rounds: the workload of the
/// steady-state ledger measurements.
pub struct Replay {
    batches: Vec<Vec<Transfer>>,
    round: u128,
    next: usize,
}

impl Replay {
    /// `count` batches of `BATCH_EVENTS_MAX` random transfers over `accounts` accounts,
    /// ids consecutive from 1.
    pub fn new(accounts: u64, count: usize) -> Replay {
        let events = BATCH_EVENTS_MAX as usize;
        let mut rng = seeded_rng(accounts);
        let batches = (0..count)
            .map(|index| random_transfers(&mut rng, accounts, (index * events) as u128 + 1, events))
            .collect();
        Replay {
            batches,
            round: 0,
            next: 0,
        }
    }

    /// A copy of the next batch, with this round's ids.
    pub fn next_batch(&mut self) -> Vec<Transfer> {
        if self.next == self.batches.len() {
            self.next = 0;
            self.round += 1;
        }
        let round_events: usize = self.batches.iter().map(Vec::len).sum();
        let shift = self.round * round_events as u128;
        let batch = self.batches[self.next]
            .iter()
            .map(|transfer| Transfer {
                id: transfer.id + shift,
                ..*transfer
            })
            .collect();
        self.next += 1;
        batch
    }
}
