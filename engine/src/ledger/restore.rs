//! Rebuilding a ledger from a checkpoint: [`Ledger::restore`].
//!
//! A checkpoint holds objects keyed by id (that is the order RocksDB iterates in), not in
//! the order the ledger created them. Restore sorts them back into timestamp order, which
//! is creation order, and rebuilds every derived structure (id indexes, per-account
//! transfer lists, the expiry queue, the balance history and its index) the way the live
//! ledger built it, so that the restored state hashes equal to the checkpointed one and
//! replaying the WAL from there gives the same results as the ledger that crashed.
//!
//! Everything here comes from disk, so nothing is trusted: the rules the ledger keeps
//! while running are checked again (unique ids and timestamps, transfers between existing
//! older accounts, statuses that agree with the flags, balances that add up to the
//! transfers, balance rules) and a broken one is a [`RestoreError`] naming the object,
//! never a panic.

use protocol::{Account, AccountBalance, AccountFlags, Transfer, TransferFlags, TIMESTAMP_MAX};

use super::resident::{HistoryEntry, PendingStatus, Slot, TransferSlot};
use super::Ledger;

/// Everything a checkpoint holds, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The ledger clock ([`Ledger::timestamp_last`]) when the checkpoint was taken.
    pub timestamp_last: u64,
    pub accounts: Vec<Account>,
    /// Every transfer with its pending status (`NotPending` for non-pending transfers).
    pub transfers: Vec<(Transfer, PendingStatus)>,
    /// Transfer ids that failed transiently.
    pub failed_ids: Vec<u128>,
    /// Balance snapshots of history accounts, `(account_id, balance)`; a balance's
    /// timestamp is that of the transfer after which it was taken.
    pub balances: Vec<(u128, AccountBalance)>,
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
    #[error("account {account_id}: {field} is {stored} but its transfers add up to {computed}")]
    BalanceMismatch {
        account_id: u128,
        field: &'static str,
        stored: u128,
        computed: u128,
    },
    #[error("account {account_id}: the transfers' {field} overflow u128")]
    BalanceOverflow {
        account_id: u128,
        field: &'static str,
    },
    #[error("balance of account {account_id} at {timestamp}: {reason}")]
    History {
        account_id: u128,
        timestamp: u64,
        reason: &'static str,
    },
    #[error("{found} balance snapshots, but the transfers of history accounts made {expected}")]
    HistoryCount { found: u64, expected: u64 },
    #[error("failed transfer id {id}: {reason}")]
    FailedId { id: u128, reason: &'static str },
}

/// The four balances of an account, in the order of [`Account`]'s fields.
const BALANCE_FIELDS: [&str; 4] = [
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
];

/// Which side of its transfer a history entry is for. The live ledger snapshots the debit
/// account before the credit account, so `Debit` sorts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Debit,
    Credit,
}

impl Ledger {
    /// Rebuild the ledger whose state `snapshot` holds. The result is indistinguishable
    /// from the ledger that was checkpointed (same [`Ledger::state_hash`], same results
    /// for every later input), and its next [`Ledger::take_changes`] returns only what
    /// happens after the restore.
    pub fn restore(snapshot: Snapshot) -> Result<Ledger, RestoreError> {
        let Snapshot {
            timestamp_last,
            mut accounts,
            mut transfers,
            failed_ids,
            balances,
        } = snapshot;
        if timestamp_last > TIMESTAMP_MAX {
            return Err(RestoreError::ClockOutOfRange { timestamp_last });
        }
        // Timestamp order is creation order, in which the tables must be filled.
        accounts.sort_unstable_by_key(|account| account.timestamp);
        transfers.sort_unstable_by_key(|(transfer, _)| transfer.timestamp);
        let account_times = accounts.iter().map(|a| (a.id, a.timestamp));
        check_timestamps("account", account_times, timestamp_last)?;
        let transfer_times = transfers.iter().map(|(t, _)| (t.id, t.timestamp));
        check_timestamps("transfer", transfer_times, timestamp_last)?;
        check_timestamps_disjoint(&accounts, &transfers)?;

        let mut ledger = Ledger {
            timestamp_last,
            ..Ledger::default()
        };
        for account in accounts {
            ledger.restore_account(account)?;
        }
        for (transfer, status) in transfers {
            ledger.restore_transfer(transfer, status)?;
        }
        ledger.check_balances()?;
        ledger.restore_failed_ids(failed_ids)?;
        ledger.restore_history(balances)?;
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

    /// Insert one transfer (all older ones are in) exactly as `insert_transfer` does at
    /// creation, minus the history entries, which come later from the snapshot.
    fn restore_transfer(
        &mut self,
        transfer: Transfer,
        status: PendingStatus,
    ) -> Result<(), RestoreError> {
        check_id("transfer", transfer.id)?;
        if self.transfers.slot(transfer.id).is_some() {
            return Err(RestoreError::DuplicateId {
                kind: "transfer",
                id: transfer.id,
            });
        }
        let invalid = |reason| RestoreError::Transfer {
            transfer_id: transfer.id,
            reason,
        };
        check_status(&transfer, status).map_err(invalid)?;
        let (debit_slot, credit_slot) = self.restored_parties(&transfer).map_err(invalid)?;
        self.check_resolution(&transfer).map_err(invalid)?;

        let tag = self.transfers.tag(transfer.id);
        let slot = self
            .transfers
            .insert(transfer, status, [debit_slot, credit_slot], tag);
        if status == PendingStatus::Pending {
            if let Some(expires_at) = transfer.expires_at() {
                self.transfers.expiry_insert(expires_at, slot);
            }
        }
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

    /// A post or void names an older pending transfer, which it resolved for good.
    fn check_resolution(&self, transfer: &Transfer) -> Result<(), String> {
        let expected = if transfer
            .flags
            .contains(TransferFlags::POST_PENDING_TRANSFER)
        {
            PendingStatus::Posted
        } else if transfer
            .flags
            .contains(TransferFlags::VOID_PENDING_TRANSFER)
        {
            PendingStatus::Voided
        } else {
            return Ok(());
        };
        let pending_id = transfer.pending_id;
        let slot = self
            .transfers
            .slot(pending_id)
            .ok_or_else(|| format!("resolves {pending_id}, which is not an older transfer"))?;
        match self.transfers.status(slot) {
            status if status == expected => Ok(()),
            status => Err(format!("resolves {pending_id}, whose status is {status:?}")),
        }
    }

    /// Account balances are derived from the transfers: recompute them, so a checkpoint
    /// that lost an account update (or a transfer) cannot come back as a ledger that
    /// created or destroyed money.
    fn check_balances(&self) -> Result<(), RestoreError> {
        let sums = self.balance_sums()?;
        for (account, computed) in self.accounts.records().iter().zip(sums) {
            let stored = [
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
            ];
            for (field, (stored, computed)) in stored.into_iter().zip(computed).enumerate() {
                if stored != computed {
                    return Err(RestoreError::BalanceMismatch {
                        account_id: account.id,
                        field: BALANCE_FIELDS[field],
                        stored,
                        computed,
                    });
                }
            }
            if account.debits_exceed_credits(0) || account.credits_exceed_debits(0) {
                let account_id = account.id;
                let reason = "its balances break its balance rule";
                return Err(RestoreError::Account { account_id, reason });
            }
        }
        Ok(())
    }

    /// Per account slot, the four balances its transfers add up to: a pending transfer
    /// counts while it is pending, a post counts as posted, a void moves nothing.
    fn balance_sums(&self) -> Result<Vec<[u128; 4]>, RestoreError> {
        let mut sums = vec![[0u128; 4]; self.accounts.len()];
        for slot in 0..self.transfers.len() {
            let transfer = self.transfers.get(slot);
            let void = transfer
                .flags
                .contains(TransferFlags::VOID_PENDING_TRANSFER);
            let field_debit = match self.transfers.status(slot) {
                PendingStatus::Pending => 0,
                PendingStatus::NotPending if !void => 1,
                _ => continue,
            };
            let parties = [
                (transfer.debit_account_id, field_debit),
                (transfer.credit_account_id, field_debit + 2),
            ];
            for (account_id, field) in parties {
                let account_slot = self
                    .accounts
                    .slot(account_id)
                    .expect("parties were checked when the transfer was restored");
                let sum = &mut sums[account_slot as usize][field];
                *sum = sum
                    .checked_add(transfer.amount)
                    .ok_or(RestoreError::BalanceOverflow {
                        account_id,
                        field: BALANCE_FIELDS[field],
                    })?;
            }
        }
        Ok(sums)
    }

    fn restore_failed_ids(&mut self, failed_ids: Vec<u128>) -> Result<(), RestoreError> {
        for id in failed_ids {
            check_id("failed transfer", id)?;
            if self.transfers.slot(id).is_some() {
                let reason = "a transfer with this id exists";
                return Err(RestoreError::FailedId { id, reason });
            }
            if !self.transfers.mark_failed(id) {
                let kind = "failed transfer";
                return Err(RestoreError::DuplicateId { kind, id });
            }
        }
        Ok(())
    }

    /// Put the balance history back in the live ledger's order: by transfer, the debit
    /// account's snapshot before the credit account's. Every transfer of a history account
    /// made exactly one snapshot of it, so the count is checked too.
    fn restore_history(
        &mut self,
        balances: Vec<(u128, AccountBalance)>,
    ) -> Result<(), RestoreError> {
        let mut entries = balances
            .iter()
            .map(|(account_id, balance)| self.history_entry(*account_id, balance))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_unstable_by_key(|(order, _)| *order);
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let entry = pair[1].1;
            return Err(RestoreError::History {
                account_id: self.accounts.get(entry.account_slot).id,
                timestamp: self.transfers.get(entry.transfer_slot).timestamp,
                reason: "appears more than once",
            });
        }
        let expected = self.history_entries_expected();
        if entries.len() as u64 != expected {
            let found = entries.len() as u64;
            return Err(RestoreError::HistoryCount { found, expected });
        }
        for (_, entry) in entries {
            self.accounts.push_history(entry);
        }
        Ok(())
    }

    /// One balance snapshot, with the key that orders it among the others.
    fn history_entry(
        &self,
        account_id: u128,
        balance: &AccountBalance,
    ) -> Result<((TransferSlot, Side), HistoryEntry), RestoreError> {
        let invalid = |reason| RestoreError::History {
            account_id,
            timestamp: balance.timestamp,
            reason,
        };
        let account_slot = self
            .accounts
            .slot(account_id)
            .ok_or_else(|| invalid("no account has this id"))?;
        let flags = self.accounts.get(account_slot).flags;
        if !flags.contains(AccountFlags::HISTORY) {
            return Err(invalid("the account has no history flag"));
        }
        if balance.reserved != [0; 56] {
            return Err(invalid("reserved bytes are not zero"));
        }
        let transfer_slot = self
            .transfer_slot_at(balance.timestamp)
            .ok_or_else(|| invalid("no transfer has this timestamp"))?;
        let transfer = self.transfers.get(transfer_slot);
        let side = if transfer.debit_account_id == account_id {
            Side::Debit
        } else if transfer.credit_account_id == account_id {
            Side::Credit
        } else {
            return Err(invalid(
                "the transfer at this timestamp is not the account's",
            ));
        };
        let entry = HistoryEntry {
            account_slot,
            transfer_slot,
            debits_pending: balance.debits_pending,
            debits_posted: balance.debits_posted,
            credits_pending: balance.credits_pending,
            credits_posted: balance.credits_posted,
        };
        Ok(((transfer_slot, side), entry))
    }

    fn transfer_slot_at(&self, timestamp: u64) -> Option<TransferSlot> {
        let slot = self
            .transfers
            .partition_point(|transfer| transfer.timestamp < timestamp);
        (slot < self.transfers.len() && self.transfers.get(slot).timestamp == timestamp)
            .then_some(slot)
    }

    /// One snapshot per transfer and party with the history flag (a flag that never
    /// changes after the account is created).
    fn history_entries_expected(&self) -> u64 {
        let has_history = |account_id| {
            self.accounts
                .by_id(account_id)
                .is_some_and(|account| account.flags.contains(AccountFlags::HISTORY))
        };
        (0..self.transfers.len())
            .map(|slot| self.transfers.get(slot))
            .map(|transfer| {
                u64::from(has_history(transfer.debit_account_id))
                    + u64::from(has_history(transfer.credit_account_id))
            })
            .sum()
    }
}

fn check_id(kind: &'static str, id: u128) -> Result<(), RestoreError> {
    if id == 0 || id == u128::MAX {
        return Err(RestoreError::ReservedId { kind, id });
    }
    Ok(())
}

/// Objects sorted by timestamp must have strictly increasing, positive timestamps, none
/// after the ledger clock.
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
    transfers: &[(Transfer, PendingStatus)],
) -> Result<(), RestoreError> {
    let mut transfers = transfers.iter().map(|(transfer, _)| transfer).peekable();
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

/// Non-pending transfers are `NotPending`; pending transfers are anything else.
fn check_status(transfer: &Transfer, status: PendingStatus) -> Result<(), String> {
    if transfer.flags.has_reserved_bits() {
        return Err("its flags have reserved bits set".to_owned());
    }
    let pending = transfer.flags.contains(TransferFlags::PENDING);
    if pending == (status == PendingStatus::NotPending) {
        return Err(format!(
            "status {status:?} disagrees with pending flag {pending}"
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
    use crate::ledger::Changes;

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
    /// account and status, every transfer, failed id and balance once.
    #[derive(Default)]
    struct Merged {
        accounts: BTreeMap<u128, Account>,
        transfers: Vec<Transfer>,
        statuses: BTreeMap<u128, PendingStatus>,
        failed_ids: Vec<u128>,
        balances: Vec<(u128, AccountBalance)>,
    }

    impl Merged {
        fn add(&mut self, changes: Changes) {
            for account in changes.accounts {
                self.accounts.insert(account.id, account);
            }
            self.transfers.extend(changes.transfers);
            self.statuses.extend(changes.pending_statuses);
            self.failed_ids.extend(changes.failed_ids);
            self.balances.extend(changes.balances);
        }

        /// The snapshot, with every list in reverse creation order so that restore must
        /// sort (a store hands them over in id order, which is no better).
        fn snapshot(&self, timestamp_last: u64) -> Snapshot {
            let transfers = self.transfers.iter().rev().map(|transfer| {
                let default = if transfer.flags.contains(TransferFlags::PENDING) {
                    PendingStatus::Pending
                } else {
                    PendingStatus::NotPending
                };
                let status = self.statuses.get(&transfer.id).copied();
                (*transfer, status.unwrap_or(default))
            });
            Snapshot {
                timestamp_last,
                accounts: self.accounts.values().rev().copied().collect(),
                transfers: transfers.collect(),
                failed_ids: self.failed_ids.iter().rev().copied().collect(),
                balances: self.balances.iter().rev().copied().collect(),
            }
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

    /// The same requests on two ledgers give the same results and the same state.
    fn continue_both(original: &mut Ledger, restored: &mut Ledger, now: u64) {
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
        assert_eq!(results, restored.create_transfers(now, &events));
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
        continue_both(&mut history.ledger, &mut restored, history.now);
    }

    #[test]
    fn restore_of_nothing_is_a_new_ledger() {
        let restored = Ledger::restore(Snapshot::default()).expect("restore");
        assert_eq!(restored.state_hash(), Ledger::new().state_hash());
    }

    /// Restore the realistic history with one thing broken; expect `error`.
    fn restore_broken(break_it: impl FnOnce(&mut Snapshot)) -> Result<Ledger, RestoreError> {
        let mut snapshot = realistic_history().snapshot();
        break_it(&mut snapshot);
        Ledger::restore(snapshot)
    }

    fn transfer_mut(snapshot: &mut Snapshot, id: u128) -> &mut (Transfer, PendingStatus) {
        let found = snapshot.transfers.iter_mut().find(|(t, _)| t.id == id);
        found.expect("transfer in the snapshot")
    }

    #[test]
    fn broken_snapshots_are_errors_not_ledgers() {
        let error = restore_broken(|s| s.accounts.retain(|a| a.id != 3))
            .err()
            .unwrap();
        let RestoreError::Transfer {
            transfer_id: 103,
            ref reason,
        } = error
        else {
            panic!("expected transfer 103 to miss account 3: {error}");
        };
        assert!(reason.contains("account 3"), "{reason}");
        let error = restore_broken(|s| transfer_mut(s, 102).1 = PendingStatus::NotPending);
        assert!(matches!(
            error,
            Err(RestoreError::Transfer {
                transfer_id: 102,
                ..
            })
        ));
        let error = restore_broken(|s| transfer_mut(s, 110).0.pending_id = 102);
        assert!(matches!(
            error,
            Err(RestoreError::Transfer {
                transfer_id: 110,
                ..
            })
        ));
        let error = restore_broken(|s| {
            let timestamp = transfer_mut(s, 100).0.timestamp;
            transfer_mut(s, 101).0.timestamp = timestamp;
        });
        assert!(matches!(
            error,
            Err(RestoreError::TimestampNotIncreasing { .. })
        ));
        let error = restore_broken(|s| s.timestamp_last -= NS_PER_SECOND * 3);
        assert!(matches!(
            error,
            Err(RestoreError::TimestampAfterClock { id: 150, .. })
        ));
        let error = restore_broken(|s| s.accounts[0].credits_posted += 1);
        assert!(matches!(
            error,
            Err(RestoreError::BalanceMismatch {
                field: "credits_posted",
                ..
            })
        ));
        let error = restore_broken(|s| s.transfers.retain(|(t, _)| t.id != 133));
        assert!(matches!(
            error,
            Err(RestoreError::BalanceMismatch { account_id: 2, .. })
        ));
        let error = restore_broken(|s| {
            s.balances.pop();
        });
        assert!(matches!(error, Err(RestoreError::HistoryCount { .. })));
        let error = restore_broken(|s| s.balances[0].1.timestamp += 1);
        assert!(matches!(error, Err(RestoreError::History { .. })));
        let error = restore_broken(|s| s.failed_ids.push(100));
        assert!(matches!(error, Err(RestoreError::FailedId { id: 100, .. })));
        let error = restore_broken(|s| s.transfers.push(s.transfers[0]));
        assert!(matches!(
            error,
            Err(RestoreError::TimestampNotIncreasing { .. })
        ));
    }
}
