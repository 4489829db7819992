//! Measures what accounts and remembered transfers cost in memory: resident set size
//! before and after loading 1M accounts, then 1M transfers between them.
//!
//! Run with `cargo run --release -p settled-bench --bin ledger-memory`.

use protocol::BATCH_EVENTS_MAX;
use settled_bench::{ledger_with_accounts, random_transfers, seeded_rng, NOW};

const ACCOUNTS: u64 = 1_000_000;
const TRANSFERS: u64 = 1_000_000;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm field");
    pages * 4096
}

fn main() {
    let mut rng = seeded_rng(7);
    let transfers: Vec<_> = random_transfers(&mut rng, ACCOUNTS, 1, TRANSFERS as usize);
    let before_accounts = resident_bytes();
    let mut ledger = ledger_with_accounts(ACCOUNTS);
    let after_accounts = resident_bytes();
    for batch in transfers.chunks(BATCH_EVENTS_MAX as usize) {
        let results = ledger.create_transfers(NOW, batch);
        assert!(
            results.iter().all(|r| r.status == 0),
            "transfer creation failed"
        );
    }
    let after_transfers = resident_bytes();
    let per_account = (after_accounts - before_accounts) as f64 / ACCOUNTS as f64;
    let per_transfer = (after_transfers - after_accounts) as f64 / TRANSFERS as f64;
    println!(
        "accounts:  {ACCOUNTS} -> {:.0} MiB RSS, {per_account:.0} bytes each",
        (after_accounts - before_accounts) as f64 / 1048576.0
    );
    println!("transfers: {TRANSFERS} -> {:.0} MiB RSS, {per_transfer:.0} bytes each (record, id index, per-account index)", (after_transfers - after_accounts) as f64 / 1048576.0);
    assert_eq!(ledger.transfers_count(), TRANSFERS);
}
