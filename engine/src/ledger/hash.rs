//! A stable hash of the whole ledger state, for determinism and recovery checks.
//!
//! Everything is fed in a canonical order (creation order for records, sorted order for
//! sets), so two ledgers hash equal exactly when their state is equal. xxh3-128 is
//! specified independently of the Rust release and platform, unlike `std`'s hasher.

use xxhash_rust::xxh3::Xxh3;

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
        for chunk in self.transfers.chunks_from(0) {
            hasher.update(protocol::records::as_bytes(chunk));
        }
        for status in self.transfers.statuses() {
            hasher.update(&[*status as u8]);
        }
        for (expires_at, slot) in self.transfers.expiry() {
            hasher.update(&expires_at.to_le_bytes());
            hasher.update(&slot.to_le_bytes());
        }
        if include_failed_ids {
            let mut failed: Vec<u128> = self.transfers.failed().iter().copied().collect();
            failed.sort_unstable();
            hasher.update(protocol::records::as_bytes(&failed));
        }
        for entry in self.accounts.history() {
            hasher.update(&entry.account_slot.to_le_bytes());
            hasher.update(&entry.transfer_slot.to_le_bytes());
            for balance in [
                entry.debits_pending,
                entry.debits_posted,
                entry.credits_pending,
                entry.credits_posted,
            ] {
                hasher.update(&balance.to_le_bytes());
            }
        }
        for slot in 0..self.accounts.len() as u32 {
            hasher.update(protocol::records::as_bytes(
                self.accounts.transfer_slots(slot),
            ));
        }
        hasher.digest128()
    }
}
