//! A stable hash of the whole ledger state, for determinism and recovery checks.
//!
//! Everything is fed in a canonical order (creation order for records, sorted order for
//! sets), so two ledgers hash equal exactly when their state is equal. Transfers and
//! balance snapshots enter as a sum of per-object hashes, kept for evicted objects as they
//! leave memory, so that the hash is the same whichever transfers are resident. xxh3-128 is
//! specified independently of the Rust release and platform, unlike `std`'s hasher.

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use super::resident::{transfer_hash, HistoryEntry};
use super::Ledger;

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
                sum.wrapping_add(history_hash(account_id, timestamp, entry))
            });
        hasher.update(&history.to_le_bytes());
        for (expires_at, slot) in self.transfers.expiry() {
            hasher.update(&expires_at.to_le_bytes());
            hasher.update(&self.transfers.get(*slot).id.to_le_bytes());
        }
        if include_failed_ids {
            let mut failed: Vec<u128> = self.transfers.failed().iter().copied().collect();
            failed.sort_unstable();
            hasher.update(protocol::records::as_bytes(&failed));
        }
        hasher.digest128()
    }
}

/// One balance snapshot as a summand of the state hash.
pub(crate) fn history_hash(account_id: u128, timestamp: u64, entry: &HistoryEntry) -> u128 {
    let mut bytes = [0u8; 16 + 8 + 4 * 16];
    bytes[..16].copy_from_slice(&account_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&timestamp.to_le_bytes());
    let balances = [
        entry.debits_pending,
        entry.debits_posted,
        entry.credits_pending,
        entry.credits_posted,
    ];
    for (index, balance) in balances.iter().enumerate() {
        let at = 24 + index * 16;
        bytes[at..at + 16].copy_from_slice(&balance.to_le_bytes());
    }
    xxh3_128(&bytes)
}
