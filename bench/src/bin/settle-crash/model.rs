//! The record of everything sent, and what the daemon must hold because of it.
//!
//! Pure: no I/O. Every transfer event ever sent is here with its outcome, either known
//! from a reply (`created`, or a failure code) or unknown (the connection died before the
//! reply). From the created ones the model derives each transfer as the daemon must store
//! it (post and void inherit fields from their pending transfer) and each account's four
//! balances.

use std::collections::BTreeMap;

use protocol::{Account, Transfer, TransferFlags, AMOUNT_MAX};

/// The ledgers the accounts live on: per-ledger sums are checked on each.
pub const LEDGERS: [u32; 2] = [840, 978];
/// Accounts on each ledger.
pub const ACCOUNTS_PER_LEDGER: u128 = 12;
/// An account number no account has: transfers to it fail (`credit_account_not_found`).
pub const ACCOUNT_MISSING_INDEX: u128 = 999;

/// Account `index` (1-based) of `ledger`: `ledger * 1000 + index`, readable in a report.
pub fn account_id(ledger: u32, index: u128) -> u128 {
    u128::from(ledger) * 1000 + index
}

/// Every fourth account may not go negative (some transfers from it fail with
/// `exceeds_credits`, a result that depends on the order of events); every third keeps
/// balance history.
pub fn accounts() -> Vec<Account> {
    let mut accounts = Vec::new();
    for ledger in LEDGERS {
        for index in 1..=ACCOUNTS_PER_LEDGER {
            let mut flags = protocol::AccountFlags::default();
            if index % 4 == 0 {
                flags |= protocol::AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
            }
            if index % 3 == 0 {
                flags |= protocol::AccountFlags::HISTORY;
            }
            accounts.push(Account {
                id: account_id(ledger, index),
                user_data_128: index * 7,
                user_data_64: u64::from(ledger),
                user_data_32: 3,
                ledger,
                code: 10,
                flags,
                ..Account::default()
            });
        }
    }
    accounts
}

/// What became of one transfer event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, no reply: it may or may not have been applied.
    Unknown,
    /// Applied, with the timestamp the daemon gave it.
    Created { timestamp: u64 },
    /// Not applied; the result code says why.
    Failed { status: u32 },
}

#[derive(Clone, Debug)]
pub struct Entry {
    /// The event exactly as sent.
    pub sent: Transfer,
    /// The id of the first event of its linked chain, if it is in one.
    pub chain_head: Option<u128>,
    pub outcome: Outcome,
    /// Looked up and found as expected by a verification (after its outcome was known).
    pub verified: bool,
}

/// Balances of one account: debits pending, debits posted, credits pending, credits posted.
pub type Balances = [u128; 4];

#[derive(Default)]
pub struct Model {
    /// The accounts as sent, with the timestamps they were created with.
    pub accounts: BTreeMap<u128, Account>,
    pub transfers: BTreeMap<u128, Entry>,
}

impl Model {
    /// Record events about to be sent in one request (ids never sent before).
    pub fn sent(&mut self, events: &[Transfer]) {
        let mut chain_head = None;
        for event in events {
            let head = *chain_head.get_or_insert(event.id);
            let linked = event.flags.contains(TransferFlags::LINKED);
            let entry = Entry {
                sent: *event,
                chain_head: (linked || head != event.id).then_some(head),
                outcome: Outcome::Unknown,
                verified: false,
            };
            let previous = self.transfers.insert(event.id, entry);
            assert!(previous.is_none(), "transfer id {} sent twice", event.id);
            if !linked {
                chain_head = None;
            }
        }
    }

    pub fn set_outcome(&mut self, id: u128, outcome: Outcome) {
        self.transfers
            .get_mut(&id)
            .expect("an outcome for a transfer that was sent")
            .outcome = outcome;
    }

    pub fn outcome(&self, id: u128) -> Outcome {
        self.transfers[&id].outcome
    }

    /// Ids whose outcome is not known yet.
    pub fn unknown_ids(&self) -> Vec<u128> {
        self.transfers
            .iter()
            .filter(|(_, entry)| entry.outcome == Outcome::Unknown)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn created_count(&self) -> usize {
        self.transfers
            .values()
            .filter(|entry| matches!(entry.outcome, Outcome::Created { .. }))
            .count()
    }

    /// The transfer as the daemon must store it, for a created event: what was sent, with
    /// its timestamp; a post or void takes accounts, ledger and code from its pending
    /// transfer, user data where it sent zero, a timeout of zero, and the amount it
    /// resolves (a post of `AMOUNT_MAX` or a void of zero: the whole pending amount).
    pub fn expected_transfer(&self, id: u128) -> Option<Transfer> {
        let entry = self.transfers.get(&id)?;
        let Outcome::Created { timestamp } = entry.outcome else {
            return None;
        };
        let mut transfer = entry.sent;
        transfer.timestamp = timestamp;
        let flags = transfer.flags;
        let void = flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
        if !void && !flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
            return Some(transfer);
        }
        let pending = self.expected_transfer(transfer.pending_id)?;
        transfer.debit_account_id = pending.debit_account_id;
        transfer.credit_account_id = pending.credit_account_id;
        transfer.ledger = pending.ledger;
        transfer.code = pending.code;
        transfer.timeout = 0;
        if transfer.user_data_128 == 0 {
            transfer.user_data_128 = pending.user_data_128;
        }
        if transfer.user_data_64 == 0 {
            transfer.user_data_64 = pending.user_data_64;
        }
        if transfer.user_data_32 == 0 {
            transfer.user_data_32 = pending.user_data_32;
        }
        if (void && transfer.amount == 0) || (!void && transfer.amount == AMOUNT_MAX) {
            transfer.amount = pending.amount;
        }
        Some(transfer)
    }

    /// Every account's balances as the created transfers make them.
    pub fn expected_balances(&self) -> BTreeMap<u128, Balances> {
        let mut balances: BTreeMap<u128, Balances> =
            self.accounts.keys().map(|id| (*id, [0; 4])).collect();
        // Sums and differences in wrapping arithmetic: the order of the steps then does
        // not matter, and a correct history never leaves a balance below zero.
        let mut add = |id: u128, side: usize, amount: u128, subtract: bool| {
            let balance = &mut balances.entry(id).or_default()[side];
            *balance = if subtract {
                balance.wrapping_sub(amount)
            } else {
                balance.wrapping_add(amount)
            };
        };
        for id in self.transfers.keys() {
            let Some(transfer) = self.expected_transfer(*id) else {
                continue;
            };
            let (debit, credit) = (transfer.debit_account_id, transfer.credit_account_id);
            let flags = transfer.flags;
            if flags.contains(TransferFlags::PENDING) {
                add(debit, 0, transfer.amount, false);
                add(credit, 2, transfer.amount, false);
                continue;
            }
            let resolves = flags.contains(TransferFlags::POST_PENDING_TRANSFER)
                || flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
            if resolves {
                let pending = self
                    .expected_transfer(transfer.pending_id)
                    .expect("a created post or void has a created pending transfer");
                add(debit, 0, pending.amount, true);
                add(credit, 2, pending.amount, true);
                if flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
                    continue;
                }
            }
            add(debit, 1, transfer.amount, false);
            add(credit, 3, transfer.amount, false);
        }
        balances
    }

    /// The account as the daemon must hold it.
    pub fn expected_account(&self, id: u128, balances: &BTreeMap<u128, Balances>) -> Account {
        let mut account = self.accounts[&id];
        let [debits_pending, debits_posted, credits_pending, credits_posted] = balances[&id];
        account.debits_pending = debits_pending;
        account.debits_posted = debits_posted;
        account.credits_pending = credits_pending;
        account.credits_posted = credits_posted;
        account
    }

    /// Created transfers per ledger.
    pub fn created_per_ledger(&self) -> BTreeMap<u32, u64> {
        let mut counts = BTreeMap::new();
        for id in self.transfers.keys() {
            if let Some(transfer) = self.expected_transfer(*id) {
                *counts.entry(transfer.ledger).or_default() += 1;
            }
        }
        counts
    }
}

/// The first field where two transfers differ, for a report.
pub fn transfer_difference(found: &Transfer, expected: &Transfer) -> Option<String> {
    let fields: [(&str, u128, u128); 13] = [
        ("id", found.id, expected.id),
        (
            "debit_account_id",
            found.debit_account_id,
            expected.debit_account_id,
        ),
        (
            "credit_account_id",
            found.credit_account_id,
            expected.credit_account_id,
        ),
        ("amount", found.amount, expected.amount),
        ("pending_id", found.pending_id, expected.pending_id),
        ("user_data_128", found.user_data_128, expected.user_data_128),
        (
            "user_data_64",
            found.user_data_64.into(),
            expected.user_data_64.into(),
        ),
        (
            "user_data_32",
            found.user_data_32.into(),
            expected.user_data_32.into(),
        ),
        ("timeout", found.timeout.into(), expected.timeout.into()),
        ("ledger", found.ledger.into(), expected.ledger.into()),
        ("code", found.code.into(), expected.code.into()),
        (
            "flags",
            found.flags.bits().into(),
            expected.flags.bits().into(),
        ),
        (
            "timestamp",
            found.timestamp.into(),
            expected.timestamp.into(),
        ),
    ];
    fields
        .iter()
        .find(|(_, found, expected)| found != expected)
        .map(|(name, found, expected)| format!("{name} {found}, expected {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(id: u128, amount: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            id,
            debit_account_id: account_id(840, 1),
            credit_account_id: account_id(840, 2),
            amount,
            user_data_128: 5,
            ledger: 840,
            code: 1,
            flags,
            ..Transfer::default()
        }
    }

    fn model_with_accounts() -> Model {
        let mut model = Model::default();
        for account in accounts() {
            model.accounts.insert(account.id, account);
        }
        model
    }

    #[test]
    fn balances_follow_plain_pending_post_and_void() {
        let mut model = model_with_accounts();
        let pending = [
            transfer(1, 100, TransferFlags::PENDING),
            transfer(2, 40, TransferFlags::PENDING),
        ];
        let post = Transfer {
            id: 3,
            pending_id: 1,
            amount: 30,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Transfer::default()
        };
        let void = Transfer {
            id: 4,
            pending_id: 2,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Transfer::default()
        };
        let plain = transfer(5, 7, TransferFlags::default());
        model.sent(&pending);
        model.sent(&[post, void, plain]);
        for (id, timestamp) in [(1, 10), (2, 11), (3, 12), (4, 13), (5, 14)] {
            model.set_outcome(id, Outcome::Created { timestamp });
        }
        let balances = model.expected_balances();
        assert_eq!(balances[&account_id(840, 1)], [0, 37, 0, 0]);
        assert_eq!(balances[&account_id(840, 2)], [0, 0, 0, 37]);
        let void = model.expected_transfer(4).unwrap();
        assert_eq!(
            (
                void.amount,
                void.debit_account_id,
                void.user_data_128,
                void.code
            ),
            (40, account_id(840, 1), 5, 1),
            "a void inherits its pending transfer's fields and resolves its whole amount"
        );
    }

    #[test]
    fn a_transfer_applied_twice_or_lost_changes_the_balances() {
        let mut model = model_with_accounts();
        model.sent(&[transfer(1, 100, TransferFlags::default())]);
        model.set_outcome(1, Outcome::Created { timestamp: 1 });
        let once = model.expected_balances();
        assert_eq!(once[&account_id(840, 1)], [0, 100, 0, 0]);
        model.set_outcome(1, Outcome::Failed { status: 1 });
        assert_ne!(model.expected_balances(), once);
    }

    #[test]
    fn chains_remember_their_first_event() {
        let mut model = Model::default();
        let linked = transfer(1, 1, TransferFlags::LINKED);
        let last = transfer(2, 1, TransferFlags::default());
        let single = transfer(3, 1, TransferFlags::default());
        model.sent(&[linked, last, single]);
        assert_eq!(model.transfers[&1].chain_head, Some(1));
        assert_eq!(model.transfers[&2].chain_head, Some(1));
        assert_eq!(model.transfers[&3].chain_head, None);
    }

    #[test]
    fn a_difference_names_the_field() {
        let expected = transfer(1, 100, TransferFlags::default());
        let mut found = expected;
        assert_eq!(transfer_difference(&found, &expected), None);
        found.user_data_32 = 9;
        assert_eq!(
            transfer_difference(&found, &expected).unwrap(),
            "user_data_32 9, expected 0"
        );
    }
}
