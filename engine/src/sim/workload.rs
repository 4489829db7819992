//! The simulation's clients: random requests of every operation from one seed.
//!
//! Results need not be predicted (the reference ledger answers them); the workload only
//! makes sure that every path is walked: accounts with balance rules and history, plain,
//! pending (with timeouts the simulated clock expires), post (full, partial, the whole
//! pending amount), void, balancing, closing, imported, linked chains (some left open),
//! invalid events, retries of requests never acknowledged (same ids, same fields) and of
//! acknowledged ones, point lookups and every range read.

use protocol::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, QueryFilter, QueryFilterFlags,
    Transfer, TransferFlags,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::core::Request;

/// Requests kept for retries, at most (oldest dropped).
const RETRY_MAX: usize = 64;
/// Events of one generated request, at most.
pub const REQUEST_EVENTS_MAX: usize = 12;

pub struct Workload {
    rng: StdRng,
    id_next: u128,
    accounts: Vec<u128>,
    transfers: Vec<u128>,
    pending: Vec<u128>,
    /// Requests that got no answer (lost in a crash, or refused by a failed WAL).
    unanswered: Vec<Request>,
    /// Requests answered, for retries that must answer `exists` or the same failure.
    answered: Vec<Request>,
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed ^ 0x0005_eed0_fc11_e175),
            id_next: 1,
            accounts: Vec::new(),
            transfers: Vec::new(),
            pending: Vec::new(),
            unanswered: Vec::new(),
            answered: Vec::new(),
        }
    }

    pub fn account_ids(&self) -> &[u128] {
        &self.accounts
    }

    fn id(&mut self) -> u128 {
        self.id_next += 1;
        self.id_next
    }

    pub fn answered(&mut self, request: Request) {
        if is_write(&request) {
            keep(&mut self.answered, request);
        }
    }

    pub fn unanswered(&mut self, request: Request) {
        if is_write(&request) {
            keep(&mut self.unanswered, request);
        }
    }

    /// The next request; `timestamp_last` is the ledger's newest timestamp (imported
    /// events are stamped after it).
    pub fn next_request(&mut self, timestamp_last: u64) -> Request {
        if self.accounts.len() < 6 {
            return self.create_accounts();
        }
        match self.rng.random_range(0..100) {
            0..=7 => self.create_accounts(),
            8..=15 if !self.unanswered.is_empty() => {
                let index = self.rng.random_range(0..self.unanswered.len());
                self.unanswered.swap_remove(index)
            }
            16..=19 if !self.answered.is_empty() => {
                let index = self.rng.random_range(0..self.answered.len());
                self.answered[index].clone()
            }
            20..=23 => self.imported(timestamp_last),
            24..=31 => Request::LookupTransfers(self.some_ids(false)),
            32..=35 => Request::LookupAccounts(self.some_ids(true)),
            36..=38 => Request::QueryAccounts(self.query_filter()),
            39..=41 => Request::QueryTransfers(self.query_filter()),
            42..=45 => Request::GetAccountTransfers(self.account_filter()),
            46..=47 => Request::GetAccountBalances(self.account_filter()),
            _ => self.create_transfers(),
        }
    }

    fn create_accounts(&mut self) -> Request {
        let count = self.rng.random_range(1..=4);
        let chain = self.rng.random_bool(0.2);
        let mut events = Vec::with_capacity(count);
        for index in 0..count {
            let id = self.id();
            self.accounts.push(id);
            let mut flags = AccountFlags::default();
            match self.rng.random_range(0..8) {
                0 | 1 => flags |= AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                2 => flags |= AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                _ => {}
            }
            if self.rng.random_bool(0.3) {
                flags |= AccountFlags::HISTORY;
            }
            if chain && index + 1 < count {
                flags |= AccountFlags::LINKED;
            }
            events.push(Account {
                id,
                ledger: if self.rng.random_bool(0.85) { 1 } else { 2 },
                code: if self.rng.random_bool(0.98) { 1 } else { 0 },
                user_data_64: self.rng.random_range(0..4),
                flags,
                ..Account::default()
            });
        }
        Request::CreateAccounts(events)
    }

    fn account(&mut self) -> u128 {
        self.accounts[self.rng.random_range(0..self.accounts.len())]
    }

    fn transfer_base(&mut self) -> Transfer {
        let debit = self.account();
        let mut credit = self.account();
        if credit == debit && self.rng.random_bool(0.8) {
            credit = self.accounts[(self.accounts.iter().position(|a| *a == debit).unwrap_or(0)
                + 1)
                % self.accounts.len()];
        }
        Transfer {
            id: self.id(),
            debit_account_id: debit,
            credit_account_id: credit,
            amount: self.rng.random_range(0..500),
            ledger: if self.rng.random_bool(0.9) { 1 } else { 2 },
            code: 1,
            user_data_64: self.rng.random_range(0..4),
            ..Transfer::default()
        }
    }

    fn create_transfers(&mut self) -> Request {
        let count = self.rng.random_range(1..=REQUEST_EVENTS_MAX);
        let mut events: Vec<Transfer> = Vec::with_capacity(count);
        for _ in 0..count {
            let mut transfer = self.transfer_base();
            match self.rng.random_range(0..20) {
                0..=5 => {}
                6..=8 => {
                    transfer.flags = TransferFlags::PENDING;
                    transfer.timeout = self.rng.random_range(0..4);
                    self.pending.push(transfer.id);
                }
                9..=11 if !self.pending.is_empty() => {
                    let pending_id = self.pending[self.rng.random_range(0..self.pending.len())];
                    transfer.flags = TransferFlags::POST_PENDING_TRANSFER;
                    transfer.pending_id = pending_id;
                    transfer.amount = match self.rng.random_range(0..3) {
                        0 => u128::MAX,
                        1 => 0,
                        _ => self.rng.random_range(0..300),
                    };
                    if self.rng.random_bool(0.7) {
                        // Inherited from the pending transfer.
                        (transfer.debit_account_id, transfer.credit_account_id) = (0, 0);
                        (transfer.ledger, transfer.code) = (0, 0);
                    }
                }
                12..=13 if !self.pending.is_empty() => {
                    let pending_id = self.pending[self.rng.random_range(0..self.pending.len())];
                    transfer.flags = TransferFlags::VOID_PENDING_TRANSFER;
                    transfer.pending_id = pending_id;
                    transfer.amount = 0;
                    (transfer.debit_account_id, transfer.credit_account_id) = (0, 0);
                    (transfer.ledger, transfer.code) = (0, 0);
                }
                14 => {
                    transfer.flags = if self.rng.random_bool(0.5) {
                        TransferFlags::BALANCING_DEBIT
                    } else {
                        TransferFlags::BALANCING_CREDIT
                    };
                    transfer.amount = self.rng.random_range(0..5000);
                }
                15 => {
                    transfer.flags = TransferFlags::PENDING
                        | if self.rng.random_bool(0.5) {
                            TransferFlags::CLOSING_DEBIT
                        } else {
                            TransferFlags::CLOSING_CREDIT
                        };
                    transfer.timeout = self.rng.random_range(0..3);
                    self.pending.push(transfer.id);
                }
                16 => {
                    // Invalid: a reserved id or a zero ledger.
                    if self.rng.random_bool(0.5) {
                        transfer.id = 0;
                    } else {
                        transfer.ledger = 0;
                    }
                }
                17 if !self.transfers.is_empty() => {
                    // An earlier id again, with the same or other fields.
                    transfer.id = self.transfers[self.rng.random_range(0..self.transfers.len())];
                }
                _ => transfer.amount = self.rng.random_range(1000..100_000),
            }
            if transfer.id != 0 {
                self.transfers.push(transfer.id);
            }
            events.push(transfer);
        }
        // Linked chains: a run of events, sometimes left open at the request's end.
        if count > 1 && self.rng.random_bool(0.3) {
            let start = self.rng.random_range(0..count - 1);
            let end = self.rng.random_range(start + 1..count);
            for event in &mut events[start..end] {
                event.flags |= TransferFlags::LINKED;
            }
            if self.rng.random_bool(0.2) {
                events[count - 1].flags |= TransferFlags::LINKED;
            }
        }
        Request::CreateTransfers(events)
    }

    fn imported(&mut self, timestamp_last: u64) -> Request {
        let count = self.rng.random_range(1..=4);
        if self.rng.random_bool(0.3) {
            let events = (0..count)
                .map(|index| {
                    let id = self.id();
                    self.accounts.push(id);
                    Account {
                        id,
                        ledger: 1,
                        code: 1,
                        flags: AccountFlags::IMPORTED,
                        timestamp: timestamp_last + 1 + index as u64,
                        ..Account::default()
                    }
                })
                .collect();
            return Request::CreateAccounts(events);
        }
        let events = (0..count)
            .map(|index| {
                let mut transfer = self.transfer_base();
                transfer.flags = TransferFlags::IMPORTED;
                transfer.timestamp = timestamp_last + 1 + index as u64;
                self.transfers.push(transfer.id);
                transfer
            })
            .collect();
        Request::CreateTransfers(events)
    }

    fn some_ids(&mut self, accounts: bool) -> Vec<u128> {
        let count = self.rng.random_range(1..=8);
        (0..count)
            .map(|_| {
                let known = if accounts {
                    &self.accounts
                } else {
                    &self.transfers
                };
                if known.is_empty() || self.rng.random_bool(0.1) {
                    self.id_next + 1000
                } else {
                    known[self.rng.random_range(0..known.len())]
                }
            })
            .collect()
    }

    fn query_filter(&mut self) -> QueryFilter {
        QueryFilter {
            user_data_64: if self.rng.random_bool(0.5) {
                self.rng.random_range(0..4)
            } else {
                0
            },
            ledger: if self.rng.random_bool(0.3) { 1 } else { 0 },
            limit: self.rng.random_range(1..50),
            flags: if self.rng.random_bool(0.5) {
                QueryFilterFlags::REVERSED
            } else {
                QueryFilterFlags::default()
            },
            ..QueryFilter::default()
        }
    }

    fn account_filter(&mut self) -> AccountFilter {
        let mut flags = match self.rng.random_range(0..3) {
            0 => AccountFilterFlags::DEBITS,
            1 => AccountFilterFlags::CREDITS,
            _ => AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        };
        if self.rng.random_bool(0.5) {
            flags = flags | AccountFilterFlags::REVERSED;
        }
        AccountFilter {
            account_id: self.account(),
            limit: self.rng.random_range(1..50),
            flags,
            ..AccountFilter::default()
        }
    }
}

fn is_write(request: &Request) -> bool {
    matches!(
        request,
        Request::CreateAccounts(_) | Request::CreateTransfers(_)
    )
}

fn keep(requests: &mut Vec<Request>, request: Request) {
    if requests.len() == RETRY_MAX {
        requests.remove(0);
    }
    requests.push(request);
}
