//! A stable hash of the whole ledger state, for determinism and recovery checks.
//!
//! Everything is fed in a canonical order (creation order for records, sorted order for
//! sets), so two ledgers hash equal exactly when their state is equal. Transfers and
//! balance snapshots enter as a sum of per-object hashes, kept for evicted objects as they
//! leave memory, so that the hash is the same whichever transfers are resident. xxh3-128 is
//! specified independently of the Rust release and platform, unlike `std`'s hasher.

use protocol::{Account, AccountBalance, Transfer, TransferFlags};
use xxhash_rust::xxh3::{xxh3_128, xxh3_128_with_seed, Xxh3};

use super::resident::{HistoryEntry, PendingStatus};
use super::{Changes, Ledger};

impl Ledger {
    /// Hash of accounts, transfers, pending statuses, expiry queue, failed ids, balance
    /// history and the clock. Cost is linear in the state: for tests and recovery checks,
    /// not the hot path.
    pub fn state_hash(&self) -> u128 {
        self.hash_state(true)
    }

    /// [`Ledger::state_hash`] without the set of transiently failed ids: lets a test
    /// compare a history with a failed linked chain (which remembers the failing id) against
    /// one where the chain never ran.
    pub fn state_hash_excluding_failed_ids(&self) -> u128 {
        self.hash_state(false)
    }

    fn hash_state(&self, include_failed_ids: bool) -> u128 {
        let mut hasher = Xxh3::new();
        hasher.update(&self.timestamp_last.to_le_bytes());
        hasher.update(protocol::records::as_bytes(self.accounts.records()));
        // Sums over every transfer and balance snapshot ever made, whether still in
        // memory or evicted: residency must not change the hash.
        let transfers = self.transfers.resident().fold(
            self.transfers.evicted_digest(),
            |sum, (transfer, status)| sum.wrapping_add(transfer_hash(transfer, status)),
        );
        hasher.update(&transfers.to_le_bytes());
        let history = self
            .accounts
            .history_from(self.accounts.history_end() - self.accounts.history_resident() as u64)
            .fold(self.evicted_history_digest, |sum, entry| {
                let account_id = self.accounts.get(entry.account_slot).id;
                let timestamp = self.transfers.get(entry.transfer_slot).timestamp;
                sum.wrapping_add(history_entry_hash(account_id, timestamp, entry))
            });
        hasher.update(&history.to_le_bytes());
        for (expires_at, slot) in self.transfers.expiry() {
            hasher.update(&expires_at.to_le_bytes());
            hasher.update(&self.transfers.get(*slot).id.to_le_bytes());
        }
        if include_failed_ids {
            let failed = self
                .transfers
                .failed()
                .iter()
                .fold(self.transfers.evicted_failed_digest(), |sum, id| {
                    sum.wrapping_add(failed_id_hash(*id))
                });
            hasher.update(&failed.to_le_bytes());
        }
        hasher.digest128()
    }
}

/// A transfer and its status as one summand of the state hash: a sum does not depend on
/// which transfers are resident, and each transfer's unique timestamp fixes its order.
pub(crate) fn transfer_hash(transfer: &Transfer, status: PendingStatus) -> u128 {
    xxh3_128_with_seed(
        protocol::records::as_bytes(std::slice::from_ref(transfer)),
        status as u64,
    )
}

/// One transiently failed id as a summand of the state hash.
pub(crate) fn failed_id_hash(id: u128) -> u128 {
    xxh3_128(&id.to_le_bytes())
}

/// One stored account as a summand of [`CheckpointTotals::accounts`].
pub(crate) fn account_hash(account: &Account) -> u128 {
    xxh3_128(protocol::records::as_bytes(std::slice::from_ref(account)))
}

/// One balance snapshot of a live entry as a summand of the state hash.
pub(crate) fn history_entry_hash(account_id: u128, timestamp: u64, entry: &HistoryEntry) -> u128 {
    history_hash(
        account_id,
        timestamp,
        [
            entry.debits_pending,
            entry.debits_posted,
            entry.credits_pending,
            entry.credits_posted,
        ],
    )
}

/// One balance snapshot (an account's four balances after the transfer at `timestamp`).
fn history_hash(account_id: u128, timestamp: u64, balances: [u128; 4]) -> u128 {
    let mut bytes = [0u8; 16 + 8 + 4 * 16];
    bytes[..16].copy_from_slice(&account_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&timestamp.to_le_bytes());
    for (index, balance) in balances.iter().enumerate() {
        let at = 24 + index * 16;
        bytes[at..at + 16].copy_from_slice(&balance.to_le_bytes());
    }
    xxh3_128(&bytes)
}

/// Counts and hash sums over everything the checkpoints so far wrote: the checkpoint
/// manifest carries them, so that a start can check what it loads (accounts and pending
/// transfers) and stand for what it does not (every other transfer, the balance history,
/// failed ids) without reading history. Sums wrap: they are checksums, not amounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointTotals {
    pub accounts_count: u64,
    /// Sum of [`account_hash`] over the stored accounts.
    pub accounts: u128,
    pub transfers_count: u64,
    /// Timestamp of the newest transfer stored (0: none).
    pub transfers_timestamp_last: u64,
    /// Sum of [`transfer_hash`] over every stored transfer with its stored status.
    pub transfers: u128,
    /// Transfers stored as still pending, and the sum of their [`transfer_hash`].
    pub pending_count: u64,
    pub pending: u128,
    pub history_count: u64,
    pub history: u128,
    pub failed_ids_count: u64,
    pub failed_ids: u128,
}

impl CheckpointTotals {
    /// The totals once `changes` are written too. `accounts_before[i]` is the stored
    /// record (if any) that `changes.accounts[i]` replaces.
    pub fn add(&mut self, changes: &Changes, accounts_before: &[Option<Account>]) {
        assert_eq!(changes.accounts.len(), accounts_before.len());
        for (account, before) in changes.accounts.iter().zip(accounts_before) {
            self.accounts = self.accounts.wrapping_add(account_hash(account));
            match before {
                Some(before) => {
                    assert_eq!(before.id, account.id, "accounts_before out of step");
                    self.accounts = self.accounts.wrapping_sub(account_hash(before));
                }
                None => self.accounts_count += 1,
            }
        }
        for transfer in &changes.transfers {
            assert!(
                transfer.timestamp > self.transfers_timestamp_last,
                "transfers stored out of timestamp order"
            );
            self.transfers_timestamp_last = transfer.timestamp;
            let status = if transfer.flags.contains(TransferFlags::PENDING) {
                self.pending_count += 1;
                self.pending = self
                    .pending
                    .wrapping_add(transfer_hash(transfer, PendingStatus::Pending));
                PendingStatus::Pending
            } else {
                PendingStatus::NotPending
            };
            self.transfers = self.transfers.wrapping_add(transfer_hash(transfer, status));
        }
        self.transfers_count += changes.transfers.len() as u64;
        for (transfer, status) in &changes.pending_statuses {
            // Every resolution ends a pending transfer that is stored (above, or earlier)
            // as pending.
            let status = *status;
            assert_ne!(status, PendingStatus::Pending, "a resolution to pending");
            assert!(
                transfer.flags.contains(TransferFlags::PENDING),
                "a resolution of transfer {}, which is not pending",
                transfer.id
            );
            let pending = transfer_hash(transfer, PendingStatus::Pending);
            self.transfers = self
                .transfers
                .wrapping_sub(pending)
                .wrapping_add(transfer_hash(transfer, status));
            self.pending_count = self
                .pending_count
                .checked_sub(1)
                .expect("a resolution of a transfer stored as pending");
            self.pending = self.pending.wrapping_sub(pending);
        }
        for (account_id, balance) in &changes.balances {
            self.history = self
                .history
                .wrapping_add(balance_hash(*account_id, balance));
        }
        self.history_count += changes.balances.len() as u64;
        for id in &changes.failed_ids {
            self.failed_ids = self.failed_ids.wrapping_add(failed_id_hash(*id));
        }
        self.failed_ids_count += changes.failed_ids.len() as u64;
    }
}

/// A stored balance snapshot as a summand of the state hash (equal to the
/// [`history_entry_hash`] of the entry it was taken from).
pub(crate) fn balance_hash(account_id: u128, balance: &AccountBalance) -> u128 {
    history_hash(
        account_id,
        balance.timestamp,
        [
            balance.debits_pending,
            balance.debits_posted,
            balance.credits_pending,
            balance.credits_posted,
        ],
    )
}
