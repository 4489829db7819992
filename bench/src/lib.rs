//! Workloads shared by settled's benchmarks (`benches/`) and measurement tools (`src/bin/`).

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
