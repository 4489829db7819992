//! Builders shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;

use protocol::{Account, AccountFlags, Transfer, TransferFlags, NS_PER_SECOND};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use settled_engine::core::{EngineConfig, Request};
use settled_engine::ledger::Ledger;

pub const START: u64 = 1_700_000_000 * NS_PER_SECOND;
pub const LEDGER: u32 = 1;

/// A clock that never moves: timestamps then depend only on the order of events, so a
/// test can rebuild the exact history without knowing how the core batched it.
pub fn frozen_clock() -> u64 {
    START
}

/// Small WAL segments, frequent checkpoints and no resident transfers beyond the chunk
/// being filled, so tests cross segment boundaries, truncate the WAL and read old
/// transfers back from the store.
pub fn config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.clock = frozen_clock;
    config.checkpoint_batches = 3;
    config.transfers_resident_max = 0;
    config.wal.segment_bytes = 4 * 1024 * 1024 + 4096;
    config.wal.record_bytes_max = 4 * 1024 * 1024;
    config.batch_events_max = 2 * protocol::BATCH_EVENTS_MAX;
    config
}

/// Copy every file of directory `from` into `to` (created if missing).
pub fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

pub fn account(id: u128, flags: AccountFlags) -> Account {
    Account {
        id,
        ledger: LEDGER,
        code: 1,
        flags,
        ..Account::default()
    }
}

pub fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: LEDGER,
        code: 1,
        ..Transfer::default()
    }
}

/// Apply a create request the way the engine does under [`frozen_clock`]; reads change
/// nothing and are ignored.
pub fn apply_reference(ledger: &mut Ledger, request: &Request) {
    match request {
        Request::CreateAccounts(accounts) => {
            ledger.create_accounts(START, accounts);
        }
        Request::CreateTransfers(transfers) => {
            ledger.create_transfers(START, transfers);
        }
        _ => {}
    }
}

/// A deterministic random workload: request 0 creates `accounts` accounts (every
/// seventh may not go negative, so some transfers fail; every fifth keeps balance
/// history), then each request is a mix of plain, pending, post, void and linked
/// transfers, with some that fail, and retries of earlier events (same or changed), of
/// posts and voids of already resolved transfers among them.
pub struct Workload {
    rng: StdRng,
    accounts: u128,
    id_next: u128,
    pending: Vec<u128>,
    resolved: Vec<u128>,
    sent: Vec<Transfer>,
    requests: u64,
    /// Transfers in one request, at most.
    events_max: usize,
}

impl Workload {
    pub fn new(seed: u64, accounts: u128) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            accounts,
            id_next: 1_000_000,
            pending: Vec::new(),
            resolved: Vec::new(),
            sent: Vec::new(),
            requests: 0,
            events_max: 199,
        }
    }

    /// Requests of at most `events_max` transfers (199 unless set).
    pub fn with_events_max(mut self, events_max: usize) -> Workload {
        assert!(events_max >= 1);
        self.events_max = events_max;
        self
    }

    pub fn next_request(&mut self) -> Request {
        self.requests += 1;
        if self.requests == 1 {
            return Request::CreateAccounts(
                (1..=self.accounts)
                    .map(|id| {
                        let mut flags = if id % 7 == 0 {
                            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                        } else {
                            AccountFlags::default()
                        };
                        if id % 5 == 0 {
                            flags |= AccountFlags::HISTORY;
                        }
                        account(id, flags)
                    })
                    .collect(),
            );
        }
        let count = self.rng.random_range(1..self.events_max + 1);
        let mut transfers = Vec::with_capacity(count);
        while transfers.len() < count {
            let linked = self.rng.random_bool(0.1) && transfers.len() + 1 < count;
            let mut event = self.event();
            if linked {
                event.flags |= TransferFlags::LINKED;
                transfers.push(event);
                transfers.push(self.event());
            } else {
                transfers.push(event);
            }
        }
        self.sent.extend_from_slice(&transfers);
        Request::CreateTransfers(transfers)
    }

    /// Ids of transfers sent so far (created or not).
    pub fn sent_ids(&self) -> impl Iterator<Item = u128> + '_ {
        self.sent.iter().map(|transfer| transfer.id)
    }

    fn event(&mut self) -> Transfer {
        if !self.sent.is_empty() && self.rng.random_bool(0.05) {
            let mut retry = self.sent[self.rng.random_range(0..self.sent.len())];
            retry.flags.set(TransferFlags::LINKED, false);
            if self.rng.random_bool(0.3) {
                retry.amount ^= 1;
            }
            return retry;
        }
        if !self.resolved.is_empty() && self.rng.random_bool(0.02) {
            self.id_next += 1;
            let pending_id = self.resolved[self.rng.random_range(0..self.resolved.len())];
            let mut event = transfer(self.id_next, 0, 0, 0);
            event.pending_id = pending_id;
            event.flags = TransferFlags::VOID_PENDING_TRANSFER;
            return event;
        }
        self.id_next += 1;
        let debit = self.rng.random_range(1..=self.accounts);
        let mut credit = self.rng.random_range(1..=self.accounts);
        if credit == debit {
            credit = debit % self.accounts + 1;
        }
        let mut event = transfer(self.id_next, debit, credit, self.rng.random_range(1..1000));
        match self.rng.random_range(0..10) {
            0 | 1 => {
                event.flags = TransferFlags::PENDING;
                self.pending.push(self.id_next);
            }
            2 if !self.pending.is_empty() => {
                let index = self.rng.random_range(0..self.pending.len());
                event.pending_id = self.pending.swap_remove(index);
                self.resolved.push(event.pending_id);
                event.flags = if self.rng.random_bool(0.5) {
                    TransferFlags::POST_PENDING_TRANSFER
                } else {
                    TransferFlags::VOID_PENDING_TRANSFER
                };
                // Post and void take the pending transfer's accounts and amount.
                (
                    event.debit_account_id,
                    event.credit_account_id,
                    event.amount,
                ) = (
                    0,
                    0,
                    if self.rng.random_bool(0.5) {
                        0
                    } else {
                        protocol::AMOUNT_MAX
                    },
                );
            }
            3 => event.debit_account_id = self.accounts + 1, // does not exist
            _ => {}
        }
        event
    }
}
pub mod daemon;
pub mod tls;
pub mod wire;
