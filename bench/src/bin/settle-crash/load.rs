//! The load: tasks that each send one create_transfers request at a time and record its
//! reply, or that none came.
//!
//! Each task owns the pending transfers it created: only it posts or voids them, and only
//! once they were acknowledged `created`, so what a post or void refers to is never in
//! doubt. Transfer ids are `(task + 1) << 64 | sequence`: unique over the whole run, and
//! the task that sent one is read off its id.

use client::{Client, ClientError};
use protocol::{CreateResult, Transfer, TransferFlags, AMOUNT_MAX};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{account_id, ACCOUNTS_PER_LEDGER, ACCOUNT_MISSING_INDEX, LEDGERS};

/// Events in one request at most (a few large ones; most are small).
const REQUEST_EVENTS_MAX: u32 = 1000;
/// Events in one linked chain at most.
const CHAIN_EVENTS_MAX: u32 = 4;
/// Amounts are small, so that balances never come near overflow.
const AMOUNT_MAX_SENT: u128 = 10_000;
/// Timeouts of pending transfers: none, a day, a year (none expires during a run).
const TIMEOUTS_SECONDS: [u32; 3] = [0, 86_400, 31_536_000];

/// One request and what came back.
pub struct Sent {
    pub events: Vec<Transfer>,
    /// `None`: the connection failed before the reply (or the daemon refused the request
    /// with an error frame); its events may or may not have been applied.
    pub results: Option<Vec<CreateResult>>,
    /// Why there is no reply.
    pub error: Option<String>,
}

/// A task's state; it lives across cycles (the driver hands it to the next cycle's task).
pub struct Task {
    pub index: u32,
    rng: StdRng,
    sequence_next: u64,
    /// Pending transfers this task created (acknowledged), not yet posted or voided by it.
    open_pending: Vec<Transfer>,
    /// Requests of the current cycle, in order.
    pub sent: Vec<Sent>,
}

impl Task {
    pub fn new(index: u32, seed: u64) -> Task {
        Task {
            index,
            rng: StdRng::seed_from_u64(
                seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            sequence_next: 1,
            open_pending: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// A pending transfer of this task is known to be created: it may be resolved now.
    pub fn pending_created(&mut self, pending: Transfer) {
        debug_assert_eq!(task_of(pending.id), self.index);
        self.open_pending.push(pending);
    }

    /// Send requests until the connection fails (the daemon was killed).
    pub async fn run(mut self, client: Client) -> Task {
        loop {
            let events = self.request();
            match client.create_transfers(&events).await {
                Ok(results) => {
                    self.acknowledged(&events, &results);
                    self.sent.push(Sent {
                        events,
                        results: Some(results),
                        error: None,
                    });
                }
                Err(error) => {
                    let closed = error.is_connection_closed();
                    self.sent.push(Sent {
                        events,
                        results: None,
                        error: Some(error.to_string()),
                    });
                    // Refusals (busy, unavailable) leave the connection up: go on. The
                    // events are retried after the restart like the unanswered ones.
                    if closed || matches!(error, ClientError::TooManyEvents { .. }) {
                        return self;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// Pending transfers that an acknowledged request created become open for resolving.
    fn acknowledged(&mut self, events: &[Transfer], results: &[CreateResult]) {
        for (event, result) in events.iter().zip(results) {
            let created = result.transfer_status() == Ok(protocol::CreateTransferResult::Created);
            if created && event.flags.contains(TransferFlags::PENDING) {
                self.open_pending.push(*event);
            }
        }
    }

    /// The next request: single events and linked chains, 1 to REQUEST_EVENTS_MAX events.
    fn request(&mut self) -> Vec<Transfer> {
        let count = match self.rng.random_range(0..100) {
            0..70 => self.rng.random_range(1..=16),
            70..95 => self.rng.random_range(17..=200),
            _ => self.rng.random_range(201..=REQUEST_EVENTS_MAX),
        };
        let mut events = Vec::with_capacity(count as usize);
        while events.len() < count as usize {
            let room = count as usize - events.len();
            if room >= 2 && self.rng.random_bool(0.1) {
                let length = self.rng.random_range(2..=CHAIN_EVENTS_MAX).min(room as u32);
                self.chain(length, &mut events);
            } else {
                let event = self.single();
                events.push(event);
            }
        }
        events
    }

    /// Plain and pending transfers flagged linked but the last; sometimes the last is
    /// doomed (its credit account does not exist), so the whole chain fails.
    fn chain(&mut self, length: u32, events: &mut Vec<Transfer>) {
        let ledger = LEDGERS[self.rng.random_range(0..LEDGERS.len())];
        let doomed = self.rng.random_bool(0.3);
        for position in 0..length {
            let last = position + 1 == length;
            let mut event = if last && doomed {
                self.doomed(ledger)
            } else {
                let pending = self.rng.random_bool(0.3);
                self.new_transfer(ledger, pending)
            };
            if !last {
                event.flags |= TransferFlags::LINKED;
            }
            events.push(event);
        }
    }

    fn single(&mut self) -> Transfer {
        let ledger = LEDGERS[self.rng.random_range(0..LEDGERS.len())];
        match self.rng.random_range(0..100) {
            0..55 => self.new_transfer(ledger, false),
            55..75 => self.new_transfer(ledger, true),
            75..92 if !self.open_pending.is_empty() => self.resolve(),
            92..100 => self.doomed(ledger),
            _ => self.new_transfer(ledger, false),
        }
    }

    fn id_next(&mut self) -> u128 {
        let sequence = self.sequence_next;
        self.sequence_next += 1;
        transfer_id(self.index, sequence)
    }

    /// A plain or pending transfer between two different accounts of `ledger`.
    fn new_transfer(&mut self, ledger: u32, pending: bool) -> Transfer {
        let id = self.id_next();
        let debit = self.rng.random_range(1..=ACCOUNTS_PER_LEDGER);
        let credit =
            (debit + self.rng.random_range(1..ACCOUNTS_PER_LEDGER) - 1) % ACCOUNTS_PER_LEDGER + 1;
        let (flags, timeout) = if pending {
            let timeout = TIMEOUTS_SECONDS[self.rng.random_range(0..TIMEOUTS_SECONDS.len())];
            (TransferFlags::PENDING, timeout)
        } else {
            (TransferFlags::default(), 0)
        };
        Transfer {
            id,
            debit_account_id: account_id(ledger, debit),
            credit_account_id: account_id(ledger, credit),
            amount: self.rng.random_range(1..=AMOUNT_MAX_SENT),
            user_data_128: self.rng.random(),
            user_data_64: self.rng.random(),
            user_data_32: self.rng.random(),
            timeout,
            ledger,
            code: self.rng.random_range(1..=9),
            flags,
            ..Transfer::default()
        }
    }

    /// A transfer to an account that does not exist: `credit_account_not_found`, a
    /// result that depends on state, so a retry of its id answers `id_already_failed`.
    fn doomed(&mut self, ledger: u32) -> Transfer {
        let mut event = self.new_transfer(ledger, false);
        event.credit_account_id = account_id(ledger, ACCOUNT_MISSING_INDEX);
        event
    }

    /// A post (whole or part) or a void of one of this task's open pending transfers;
    /// half of them leave accounts, ledger, code and user data zero to inherit them.
    fn resolve(&mut self) -> Transfer {
        let index = self.rng.random_range(0..self.open_pending.len());
        let pending = self.open_pending.swap_remove(index);
        let id = self.id_next();
        let post = self.rng.random_bool(0.6);
        let (flags, amount) = if post {
            let amount = match self.rng.random_range(0..3) {
                0 => AMOUNT_MAX,
                1 => pending.amount,
                _ => self.rng.random_range(1..=pending.amount),
            };
            (TransferFlags::POST_PENDING_TRANSFER, amount)
        } else if self.rng.random_bool(0.5) {
            (TransferFlags::VOID_PENDING_TRANSFER, 0)
        } else {
            (TransferFlags::VOID_PENDING_TRANSFER, pending.amount)
        };
        let mut event = Transfer {
            id,
            pending_id: pending.id,
            amount,
            flags,
            ..Transfer::default()
        };
        if self.rng.random_bool(0.5) {
            event.debit_account_id = pending.debit_account_id;
            event.credit_account_id = pending.credit_account_id;
            event.ledger = pending.ledger;
            event.code = pending.code;
            event.user_data_64 = self.rng.random();
        }
        event
    }
}

pub fn transfer_id(task: u32, sequence: u64) -> u128 {
    (u128::from(task) + 1) << 64 | u128::from(sequence)
}

pub fn task_of(id: u128) -> u32 {
    ((id >> 64) - 1) as u32
}
