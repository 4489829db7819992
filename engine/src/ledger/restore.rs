//! Rebuilding a ledger from a checkpoint without its history: [`Ledger::restore`].
//!
//! A start must not read every transfer ever made, so a checkpoint is loaded as what the
//! next requests need: every account (with its balances) and every transfer still
//! pending. Everything else (resolved and plain transfers, balance history, failed ids)
//! stays in the store, as if evicted, and is read back by the read stage when a request
//! names it. The ledger's state hash still covers all of it, through the sums the
//! checkpoints wrote ([`CheckpointTotals`]).
//!
//! Everything here comes from disk, so nothing is trusted: the loaded objects must hash
//! to the sums the manifest holds, and the rules the ledger keeps while running are
//! checked again on what is loaded (unique ids and timestamps, pending transfers between
//! existing older accounts on their ledger, pending balances that are exactly the pending
//! transfers, posted debits equal to posted credits on every ledger, balance rules). A
//! broken one is a [`RestoreError`] naming the object, never a panic. The full
//! recomputation of every balance from every transfer is `settled verify`, offline.

use std::collections::BTreeMap;

use protocol::{Account, AccountFlags, Transfer, TransferFlags, TIMESTAMP_MAX};

use super::hash::{account_hash, transfer_hash, CheckpointTotals};
use super::resident::{FastSet, PendingStatus, Slot};
use super::Ledger;

/// What a start loads from a checkpoint, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The ledger clock ([`Ledger::timestamp_last`]) when the checkpoint was taken.
    pub timestamp_last: u64,
    pub accounts: Vec<Account>,
    /// The stored transfers whose status is still `Pending`.
    pub pending: Vec<Transfer>,
    /// What every checkpoint so far wrote, from the manifest.
    pub totals: CheckpointTotals,
}

/// Why a snapshot cannot be the state of a ledger.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("timestamp_last {timestamp_last} is beyond the timestamp range")]
    ClockOutOfRange { timestamp_last: u64 },
    #[error("{kind} id {id} is reserved")]
    ReservedId { kind: &'static str, id: u128 },
    #[error("{kind} id {id} appears more than once")]
    DuplicateId { kind: &'static str, id: u128 },
    /// Timestamps are unique and positive: sorted, each must be above the one before.
    #[error("{kind} {id} has timestamp {timestamp}, not after {previous}")]
    TimestampNotIncreasing {
        kind: &'static str,
        id: u128,
        timestamp: u64,
        previous: u64,
    },
    #[error("{kind} {id} has timestamp {timestamp}, after the ledger clock {timestamp_last}")]
    TimestampAfterClock {
        kind: &'static str,
        id: u128,
        timestamp: u64,
        timestamp_last: u64,
    },
    #[error("account {account_id} and transfer {transfer_id} share timestamp {timestamp}")]
    TimestampShared {
        account_id: u128,
        transfer_id: u128,
        timestamp: u64,
    },
    #[error("account {account_id}: {reason}")]
    Account {
        account_id: u128,
        reason: &'static str,
    },
    #[error("transfer {transfer_id}: {reason}")]
    Transfer { transfer_id: u128, reason: String },
    #[error(
        "account {account_id}: {field} is {stored} but its pending transfers add up to {computed}"
    )]
    BalanceMismatch {
        account_id: u128,
        field: &'static str,
        stored: u128,
        computed: u128,
    },
    #[error("account {account_id}: the pending transfers' {field} overflow u128")]
    BalanceOverflow {
        account_id: u128,
        field: &'static str,
    },
    #[error("ledger {ledger}: accounts hold {debits} posted debits but {credits} posted credits")]
    LedgerUnbalanced {
        ledger: u32,
        debits: u128,
        credits: u128,
    },
    /// The loaded rows are not the ones the checkpoints wrote: a row is missing, extra,
    /// stale or changed.
    #[error("{what}: {found_count} rows hashing to {found:#034x}, but the checkpoint manifest says {expected_count} rows hashing to {expected:#034x}")]
    TotalsMismatch {
        what: &'static str,
        found_count: u64,
        found: u128,
        expected_count: u64,
        expected: u128,
    },
}

/// The two pending balances of an account, in the order of [`Account`]'s fields.
const PENDING_FIELDS: [&str; 2] = ["debits_pending", "credits_pending"];

impl Ledger {
    /// Rebuild the ledger a checkpoint holds from its accounts, its pending transfers and
    /// its totals. The result is indistinguishable from the ledger that was checkpointed
    /// (same [`Ledger::state_hash`], same results for every later input, given the store's
    /// answers for what it did not load), and its next [`Ledger::take_changes`] returns
    /// only what happens after the restore.
    pub fn restore(snapshot: Snapshot) -> Result<Ledger, RestoreError> {
        let Snapshot {
            timestamp_last,
            mut accounts,
            mut pending,
            totals,
        } = snapshot;
        if timestamp_last > TIMESTAMP_MAX {
            return Err(RestoreError::ClockOutOfRange { timestamp_last });
        }
        check_totals(
            "accounts",
            &accounts,
            account_hash,
            totals.accounts_count,
            totals.accounts,
        )?;
        let pending_hash = |transfer: &Transfer| transfer_hash(transfer, PendingStatus::Pending);
        check_totals(
            "pending transfers",
            &pending,
            pending_hash,
            totals.pending_count,
            totals.pending,
        )?;
        // Timestamp order is creation order, in which the tables must be filled.
        accounts.sort_unstable_by_key(|account| account.timestamp);
        pending.sort_unstable_by_key(|transfer| transfer.timestamp);
        let account_times = accounts.iter().map(|a| (a.id, a.timestamp));
        check_timestamps("account", account_times, timestamp_last)?;
        let transfers_last = totals.transfers_timestamp_last;
        if transfers_last > timestamp_last {
            let (kind, id, timestamp) = ("transfer", 0, transfers_last);
            return Err(RestoreError::TimestampAfterClock {
                kind,
                id,
                timestamp,
                timestamp_last,
            });
        }
        let pending_times = pending.iter().map(|t| (t.id, t.timestamp));
        check_timestamps("pending transfer", pending_times, transfers_last)?;
        check_timestamps_disjoint(&accounts, &pending)?;

        let mut ledger = Ledger {
            timestamp_last,
            evicted_history_digest: totals.history,
            ..Ledger::default()
        };
        for account in accounts {
            ledger.restore_account(account)?;
        }
        let mut pending_ids = FastSet::default();
        for transfer in &pending {
            ledger.check_pending(transfer)?;
            if !pending_ids.insert(transfer.id) {
                let (kind, id) = ("transfer", transfer.id);
                return Err(RestoreError::DuplicateId { kind, id });
            }
        }
        ledger.check_balances(&pending)?;
        let failed = (totals.failed_ids_count, totals.failed_ids);
        ledger
            .transfers
            .restore(&pending, transfers_last, totals.transfers, failed);
        // What was restored is already on disk: the next checkpoint starts after it.
        ledger.changes.transfers_from = ledger.transfers.len();
        ledger.changes.history_from = ledger.accounts.history_end();
        Ok(ledger)
    }

    fn restore_account(&mut self, account: Account) -> Result<(), RestoreError> {
        check_id("account", account.id)?;
        if self.accounts.slot(account.id).is_some() {
            return Err(RestoreError::DuplicateId {
                kind: "account",
                id: account.id,
            });
        }
        if let Err(reason) = check_account_fields(&account) {
            let account_id = account.id;
            return Err(RestoreError::Account { account_id, reason });
        }
        self.accounts.insert(account);
        Ok(())
    }

    /// A pending transfer as the ledger creates one: a valid id, pending flags, and two
    /// different older accounts on its ledger.
    fn check_pending(&self, transfer: &Transfer) -> Result<(), RestoreError> {
        check_id("transfer", transfer.id)?;
        let invalid = |reason| RestoreError::Transfer {
            transfer_id: transfer.id,
            reason,
        };
        check_pending_flags(transfer).map_err(invalid)?;
        self.restored_parties(transfer).map_err(invalid)?;
        Ok(())
    }

    /// The slots of a transfer's two accounts, which must be different, older than the
    /// transfer and on its ledger.
    fn restored_parties(&self, transfer: &Transfer) -> Result<(Slot, Slot), String> {
        let (debit_id, credit_id) = (transfer.debit_account_id, transfer.credit_account_id);
        if debit_id == credit_id {
            return Err(format!("debits and credits the same account {debit_id}"));
        }
        let party = |account_id: u128| -> Result<Slot, String> {
            let slot = self
                .accounts
                .slot(account_id)
                .ok_or_else(|| format!("account {account_id} does not exist"))?;
            let account = self.accounts.get(slot);
            if account.timestamp >= transfer.timestamp {
                return Err(format!("account {account_id} is not older than it"));
            }
            if account.ledger != transfer.ledger {
                return Err(format!("account {account_id} is on another ledger"));
            }
            Ok(slot)
        };
        Ok((party(debit_id)?, party(credit_id)?))
    }

    /// What a start can check of the balances without the history: pending balances are
    /// exactly the pending transfers, posted debits equal posted credits on every ledger,
    /// and no account breaks its balance rule. (Posted balances against the transfers
    /// that make them: `settled verify`.)
    fn check_balances(&self, pending: &[Transfer]) -> Result<(), RestoreError> {
        let mut sums = vec![[0u128; 2]; self.accounts.len()];
        for transfer in pending {
            for (account_id, field) in [
                (transfer.debit_account_id, 0),
                (transfer.credit_account_id, 1),
            ] {
                let slot = self
                    .accounts
                    .slot(account_id)
                    .expect("parties were checked");
                let sum = &mut sums[slot as usize][field];
                *sum = sum
                    .checked_add(transfer.amount)
                    .ok_or(RestoreError::BalanceOverflow {
                        account_id,
                        field: PENDING_FIELDS[field],
                    })?;
            }
        }
        let mut ledgers: BTreeMap<u32, [u128; 2]> = BTreeMap::new();
        for (account, computed) in self.accounts.records().iter().zip(sums) {
            let stored = [account.debits_pending, account.credits_pending];
            for field in 0..2 {
                if stored[field] != computed[field] {
                    return Err(RestoreError::BalanceMismatch {
                        account_id: account.id,
                        field: PENDING_FIELDS[field],
                        stored: stored[field],
                        computed: computed[field],
                    });
                }
            }
            if account.debits_exceed_credits(0) || account.credits_exceed_debits(0) {
                let account_id = account.id;
                let reason = "its balances break its balance rule";
                return Err(RestoreError::Account { account_id, reason });
            }
            // Wrapping: the sums are compared, and money created anywhere shows as a
            // difference whether or not a sum wrapped.
            let posted = ledgers.entry(account.ledger).or_default();
            posted[0] = posted[0].wrapping_add(account.debits_posted);
            posted[1] = posted[1].wrapping_add(account.credits_posted);
        }
        for (ledger, [debits, credits]) in ledgers {
            if debits != credits {
                return Err(RestoreError::LedgerUnbalanced {
                    ledger,
                    debits,
                    credits,
                });
            }
        }
        Ok(())
    }
}

/// The loaded rows of one kind hash to the manifest's sum.
fn check_totals<T>(
    what: &'static str,
    rows: &[T],
    hash: impl Fn(&T) -> u128,
    expected_count: u64,
    expected: u128,
) -> Result<(), RestoreError> {
    let found = rows
        .iter()
        .fold(0u128, |sum, row| sum.wrapping_add(hash(row)));
    let found_count = rows.len() as u64;
    if (found_count, found) != (expected_count, expected) {
        return Err(RestoreError::TotalsMismatch {
            what,
            found_count,
            found,
            expected_count,
            expected,
        });
    }
    Ok(())
}

fn check_id(kind: &'static str, id: u128) -> Result<(), RestoreError> {
    if id == 0 || id == u128::MAX {
        return Err(RestoreError::ReservedId { kind, id });
    }
    Ok(())
}

/// Objects sorted by timestamp must have strictly increasing, positive timestamps, none
/// after `timestamp_last`.
fn check_timestamps(
    kind: &'static str,
    objects: impl Iterator<Item = (u128, u64)>,
    timestamp_last: u64,
) -> Result<(), RestoreError> {
    let mut previous = 0;
    for (id, timestamp) in objects {
        if timestamp <= previous {
            return Err(RestoreError::TimestampNotIncreasing {
                kind,
                id,
                timestamp,
                previous,
            });
        }
        if timestamp > timestamp_last {
            return Err(RestoreError::TimestampAfterClock {
                kind,
                id,
                timestamp,
                timestamp_last,
            });
        }
        previous = timestamp;
    }
    Ok(())
}

/// Accounts and transfers never share a timestamp (both sorted by it): balance snapshots
/// find their transfer by timestamp, and imported objects rely on it.
fn check_timestamps_disjoint(
    accounts: &[Account],
    transfers: &[Transfer],
) -> Result<(), RestoreError> {
    let mut transfers = transfers.iter().peekable();
    for account in accounts {
        while transfers
            .next_if(|transfer| transfer.timestamp < account.timestamp)
            .is_some()
        {}
        if let Some(transfer) = transfers.next_if(|t| t.timestamp == account.timestamp) {
            return Err(RestoreError::TimestampShared {
                account_id: account.id,
                transfer_id: transfer.id,
                timestamp: account.timestamp,
            });
        }
    }
    Ok(())
}

/// Field checks the ledger made when it created the account.
fn check_account_fields(account: &Account) -> Result<(), &'static str> {
    let both_limits =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    if account.flags.has_reserved_bits() || account.flags.contains(both_limits) {
        return Err("its flags are not ones the ledger creates");
    }
    if account.reserved != 0 {
        return Err("its reserved field is not zero");
    }
    if account.ledger == 0 || account.code == 0 {
        return Err("its ledger or code is zero");
    }
    Ok(())
}

/// A pending transfer has the pending flag, and neither reserved bits nor the flags of a
/// post or void.
fn check_pending_flags(transfer: &Transfer) -> Result<(), String> {
    if transfer.flags.has_reserved_bits() {
        return Err("its flags have reserved bits set".to_owned());
    }
    let post_or_void = TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
    if !transfer.flags.contains(TransferFlags::PENDING) || transfer.flags.intersects(post_or_void) {
        return Err(format!(
            "stored as pending, but its flags are {:?}",
            transfer.flags
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use protocol::{CreateAccountResult as A, CreateTransferResult as T, NS_PER_SECOND};

    use super::*;
    use crate::ledger::tests::transfer;
    use crate::ledger::{Changes, OldTransfers};

    const START: u64 = 1_700_000_000 * NS_PER_SECOND;

    fn account(id: u128, ledger: u32, flags: AccountFlags) -> Account {
        Account {
            id,
            ledger,
            code: 10,
            flags,
            ..Account::default()
        }
    }

    fn flagged(transfer: Transfer, flags: TransferFlags) -> Transfer {
        Transfer {
            flags: transfer.flags | flags,
            ..transfer
        }
    }

    fn pending(transfer: Transfer, timeout_seconds: u32) -> Transfer {
        Transfer {
            timeout: timeout_seconds,
            ..flagged(transfer, TransferFlags::PENDING)
        }
    }

    fn resolve(id: u128, pending_id: u128, amount: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            id,
            pending_id,
            amount,
            flags,
            ..Transfer::default()
        }
    }

    /// What a store holds after writing every `Changes` in turn: the newest value of each
    /// account and status, every transfer and failed id, and the manifest's totals.
    #[derive(Default)]
    struct Merged {
        accounts: BTreeMap<u128, Account>,
        transfers: BTreeMap<u128, Transfer>,
        statuses: BTreeMap<u128, PendingStatus>,
        failed_ids: Vec<u128>,
        totals: CheckpointTotals,
    }

    impl Merged {
        fn add(&mut self, changes: Changes) {
            let before: Vec<_> = changes
                .accounts
                .iter()
                .map(|account| self.accounts.get(&account.id).copied())
                .collect();
            self.totals.add(&changes, &before);
            for account in &changes.accounts {
                self.accounts.insert(account.id, *account);
            }
            for transfer in &changes.transfers {
                self.transfers.insert(transfer.id, *transfer);
            }
            for (transfer, status) in &changes.pending_statuses {
                self.statuses.insert(transfer.id, *status);
            }
            self.failed_ids.extend(&changes.failed_ids);
        }

        fn status(&self, transfer: &Transfer) -> PendingStatus {
            let default = if transfer.flags.contains(TransferFlags::PENDING) {
                PendingStatus::Pending
            } else {
                PendingStatus::NotPending
            };
            self.statuses.get(&transfer.id).copied().unwrap_or(default)
        }

        /// The snapshot, with every list in reverse creation order so that restore must
        /// sort (a store hands them over in key order, which is no better).
        fn snapshot(&self, timestamp_last: u64) -> Snapshot {
            let mut pending: Vec<Transfer> = self
                .transfers
                .values()
                .filter(|transfer| self.status(transfer) == PendingStatus::Pending)
                .copied()
                .collect();
            pending.sort_unstable_by_key(|transfer| std::cmp::Reverse(transfer.timestamp));
            let mut accounts: Vec<Account> = self.accounts.values().copied().collect();
            accounts.sort_unstable_by_key(|account| std::cmp::Reverse(account.timestamp));
            Snapshot {
                timestamp_last,
                accounts,
                pending,
                totals: self.totals,
            }
        }

        /// What the read stage would read for `events`: the stored transfers they name
        /// and the stored failed ids among them.
        fn old_for(&self, events: &[Transfer], through: u64) -> OldTransfers {
            let mut old = OldTransfers::new(through);
            for id in events.iter().flat_map(|event| [event.id, event.pending_id]) {
                if let Some(transfer) = self.transfers.get(&id) {
                    old.insert(*transfer, self.status(transfer));
                }
            }
            let failed = events
                .iter()
                .map(|event| event.id)
                .filter(|id| self.failed_ids.contains(id));
            old.set_failed(failed);
            old
        }
    }

    /// Drives a ledger through requests, checking each result, and merges its changes.
    struct History {
        ledger: Ledger,
        now: u64,
        merged: Merged,
    }

    impl History {
        fn accounts(&mut self, events: &[Account], expected: &[A]) {
            self.now += NS_PER_SECOND / 10;
            let results = self.ledger.create_accounts(self.now, events);
            let statuses: Vec<_> = results.iter().map(|r| r.account_status().ok()).collect();
            let expected: Vec<_> = expected.iter().map(|s| Some(*s)).collect();
            assert_eq!(statuses, expected);
        }

        fn transfers(&mut self, events: &[Transfer], expected: &[T]) {
            self.now += NS_PER_SECOND / 10;
            let results = self.ledger.create_transfers(self.now, events);
            let statuses: Vec<_> = results.iter().map(|r| r.transfer_status().ok()).collect();
            let expected: Vec<_> = expected.iter().map(|s| Some(*s)).collect();
            assert_eq!(statuses, expected);
        }

        fn checkpoint(&mut self) {
            self.merged.add(self.ledger.take_changes());
        }

        fn snapshot(&self) -> Snapshot {
            self.merged.snapshot(self.ledger.timestamp_last())
        }
    }

    /// Accounts 1..=7 (1, 2 and 5 with history, 3 and 4 with balance rules, 6 and 7 on
    /// ledger 2), an imported account 8, and every kind of transfer: plain, pending,
    /// partial post, void, imported, balancing, closing, expired, a failed linked chain
    /// that had posted a pending transfer, transient failures. Changes are taken four
    /// times along the way.
    fn realistic_history() -> History {
        let mut h = History {
            ledger: Ledger::new(),
            now: START,
            merged: Merged::default(),
        };
        let none = AccountFlags::empty();
        let accounts = [
            account(1, 1, AccountFlags::HISTORY),
            account(2, 1, AccountFlags::HISTORY),
            account(3, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            account(4, 1, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
            account(
                5,
                1,
                AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ),
            account(6, 2, none),
            account(7, 2, none),
        ];
        h.accounts(&accounts, &[A::Created; 7]);
        h.transfers(
            &[
                transfer(100, 1, 2, 500),
                pending(transfer(101, 2, 1, 30), 0),
                pending(transfer(102, 1, 5, 20), 1),
                pending(transfer(103, 1, 3, 40), 5),
                pending(transfer(104, 1, 2, 9), 60),
            ],
            &[T::Created; 5],
        );
        // Imported objects carry their own (past) timestamps.
        let imported_account = Account {
            timestamp: h.ledger.timestamp_last() + 1,
            ..account(8, 1, AccountFlags::IMPORTED | AccountFlags::HISTORY)
        };
        h.accounts(&[imported_account], &[A::Created]);
        let imported_transfer = Transfer {
            timestamp: h.ledger.timestamp_last() + 1,
            ..flagged(transfer(105, 1, 8, 3), TransferFlags::IMPORTED)
        };
        h.transfers(&[imported_transfer], &[T::Created]);
        h.checkpoint();
        let post = TransferFlags::POST_PENDING_TRANSFER;
        let void = TransferFlags::VOID_PENDING_TRANSFER;
        h.transfers(
            &[resolve(110, 101, 20, post), resolve(111, 103, 0, void)],
            &[T::Created, T::Created],
        );
        // A chain that posts 104 and then fails transiently: no trace but the failed id.
        h.transfers(
            &[
                flagged(resolve(120, 104, 9, post), TransferFlags::LINKED),
                flagged(transfer(121, 1, 2, 1), TransferFlags::LINKED),
                transfer(122, 3, 1, 1_000),
            ],
            &[
                T::LinkedEventFailed,
                T::LinkedEventFailed,
                T::ExceedsCredits,
            ],
        );
        h.transfers(
            &[
                transfer(130, 4, 2, 60),
                transfer(131, 1, 3, 50),
                flagged(transfer(132, 3, 4, 1_000), TransferFlags::BALANCING_DEBIT),
                transfer(133, 2, 5, 70),
                pending(transfer(134, 5, 1, 25), 0),
            ],
            &[T::Created; 5],
        );
        assert_eq!(h.ledger.lookup_transfers(&[132])[0].amount, 50);
        h.checkpoint();
        let closing_debit = TransferFlags::CLOSING_DEBIT;
        let closing_credit = TransferFlags::CLOSING_CREDIT;
        let on_ledger_2 = |t: Transfer| Transfer { ledger: 2, ..t };
        h.transfers(
            &[
                flagged(pending(transfer(140, 4, 2, 0), 0), closing_debit),
                on_ledger_2(flagged(pending(transfer(141, 6, 7, 0), 2), closing_credit)),
                transfer(142, 4, 1, 1),
                transfer(143, 1, 999, 1),
            ],
            &[
                T::Created,
                T::Created,
                T::DebitAccountAlreadyClosed,
                T::CreditAccountNotFound,
            ],
        );
        assert!(h.ledger.lookup_accounts(&[7])[0]
            .flags
            .contains(AccountFlags::CLOSED));
        // 102 (1 s) and 141 (2 s) expire; 141's expiry reopens account 7.
        h.now += 3 * NS_PER_SECOND;
        let mut expired = h.ledger.expire(h.now);
        expired.sort_unstable();
        assert_eq!(expired, [102, 141]);
        h.checkpoint();
        h.transfers(&[transfer(150, 2, 1, 5)], &[T::Created]);
        h.checkpoint();
        h
    }

    /// The same requests on two ledgers give the same results and the same state; the
    /// restored one gets the store's answers for what it did not load.
    fn continue_both(original: &mut Ledger, restored: &mut Ledger, merged: &Merged, now: u64) {
        let post = TransferFlags::POST_PENDING_TRANSFER;
        let void = TransferFlags::VOID_PENDING_TRANSFER;
        let events = [
            resolve(200, 104, 4, post),
            resolve(201, 134, 0, void),
            resolve(202, 140, 0, void),
            transfer(203, 4, 2, 3),
            transfer(122, 3, 1, 1),
            resolve(204, 102, 0, void),
            transfer(205, 1, 5, 8),
            pending(transfer(206, 2, 1, 1), 1),
        ];
        let results = original.create_transfers(now, &events);
        let mut old = merged.old_for(&events, restored.evicted_through());
        assert_eq!(
            results,
            restored.create_transfers_with(now, &events, &mut old)
        );
        let statuses: Vec<_> = results.iter().map(|r| r.transfer_status().ok()).collect();
        assert_eq!(statuses[4], Some(T::IdAlreadyFailed));
        assert_eq!(statuses[5], Some(T::PendingTransferExpired));
        let later = now + 5 * NS_PER_SECOND;
        assert_eq!(original.expire(later), restored.expire(later));
        assert_eq!(original.state_hash(), restored.state_hash());
        assert_eq!(original.take_changes(), restored.take_changes());
    }

    #[test]
    fn restore_rebuilds_the_state_of_a_realistic_history() {
        let mut history = realistic_history();
        let mut restored = Ledger::restore(history.snapshot()).expect("restore");
        assert_eq!(restored.state_hash(), history.ledger.state_hash());
        assert_eq!(
            restored.expiry_timestamp_next(),
            history.ledger.expiry_timestamp_next()
        );
        assert_eq!(restored.take_changes(), Changes::default());
        assert_eq!(restored.transfers_pending(), 3, "104, 134 and 140");
        assert_eq!(
            restored.transfers_resident(),
            3,
            "nothing but the pending ones"
        );
        assert_eq!(
            restored.failed_ids_count(),
            0,
            "failed ids stay in the store"
        );
        let now = history.now;
        continue_both(&mut history.ledger, &mut restored, &history.merged, now);
    }

    #[test]
    fn restore_of_nothing_is_a_new_ledger() {
        let restored = Ledger::restore(Snapshot::default()).expect("restore");
        assert_eq!(restored.state_hash(), Ledger::new().state_hash());
    }

    /// Restore the realistic history with one thing broken; expect `error`. With
    /// `rehash`, the manifest's sums are made to fit the broken rows (as a tool that
    /// rewrote both would), so that the checks behind them are reached.
    fn restore_broken(
        rehash: bool,
        break_it: impl FnOnce(&mut Snapshot),
    ) -> Result<Ledger, RestoreError> {
        let mut snapshot = realistic_history().snapshot();
        break_it(&mut snapshot);
        if rehash {
            let totals = &mut snapshot.totals;
            totals.accounts_count = snapshot.accounts.len() as u64;
            totals.accounts = snapshot
                .accounts
                .iter()
                .map(account_hash)
                .fold(0, u128::wrapping_add);
            totals.pending_count = snapshot.pending.len() as u64;
            totals.pending = snapshot
                .pending
                .iter()
                .map(|transfer| transfer_hash(transfer, PendingStatus::Pending))
                .fold(0, u128::wrapping_add);
        }
        Ledger::restore(snapshot)
    }

    fn account_mut(snapshot: &mut Snapshot, id: u128) -> &mut Account {
        let found = snapshot.accounts.iter_mut().find(|a| a.id == id);
        found.expect("account in the snapshot")
    }

    fn pending_mut(snapshot: &mut Snapshot, id: u128) -> &mut Transfer {
        let found = snapshot.pending.iter_mut().find(|t| t.id == id);
        found.expect("pending transfer in the snapshot")
    }

    #[test]
    fn rows_that_differ_from_the_manifest_are_refused() {
        let mismatch = |error: Result<Ledger, RestoreError>| match error {
            Err(RestoreError::TotalsMismatch { what, .. }) => what,
            other => panic!("expected a totals mismatch, got {:?}", other.err()),
        };
        let error = restore_broken(false, |s| s.accounts.retain(|a| a.id != 3));
        assert_eq!(mismatch(error), "accounts");
        let error = restore_broken(false, |s| account_mut(s, 1).credits_posted += 1);
        assert_eq!(mismatch(error), "accounts");
        let error = restore_broken(false, |s| pending_mut(s, 104).amount += 1);
        assert_eq!(mismatch(error), "pending transfers");
        let error = restore_broken(false, |s| s.pending.retain(|t| t.id != 134));
        assert_eq!(mismatch(error), "pending transfers");
    }

    #[test]
    fn broken_snapshots_are_errors_not_ledgers() {
        let error = restore_broken(true, |s| s.accounts.retain(|a| a.id != 4))
            .err()
            .unwrap();
        let RestoreError::Transfer {
            transfer_id: 140,
            ref reason,
        } = error
        else {
            panic!("expected transfer 140 to miss account 4: {error}");
        };
        assert!(reason.contains("account 4"), "{reason}");
        let error = restore_broken(true, |s| pending_mut(s, 104).flags = TransferFlags::empty());
        assert!(matches!(
            error,
            Err(RestoreError::Transfer {
                transfer_id: 104,
                ..
            })
        ));
        let error = restore_broken(true, |s| {
            let timestamp = pending_mut(s, 104).timestamp;
            pending_mut(s, 134).timestamp = timestamp;
        });
        assert!(matches!(
            error,
            Err(RestoreError::TimestampNotIncreasing { .. })
        ));
        let error = restore_broken(false, |s| s.timestamp_last -= NS_PER_SECOND * 3);
        assert!(matches!(
            error,
            Err(RestoreError::TimestampAfterClock { .. })
        ));
        let error = restore_broken(true, |s| account_mut(s, 1).credits_posted += 1);
        assert!(matches!(
            error,
            Err(RestoreError::LedgerUnbalanced { ledger: 1, .. })
        ));
        let error = restore_broken(true, |s| s.pending.retain(|t| t.id != 134));
        assert!(matches!(
            error,
            Err(RestoreError::BalanceMismatch {
                account_id: 1,
                field: "credits_pending",
                ..
            })
        ));
        let error = restore_broken(true, |s| {
            // 141 was created just after 140: a free transfer timestamp, as 141 expired.
            let mut twin = *pending_mut(s, 140);
            twin.timestamp += 1;
            s.pending.push(twin);
        });
        assert!(matches!(
            error,
            Err(RestoreError::DuplicateId { id: 140, .. })
        ));
    }
}
