//! In-memory storage of accounts and transfers, behind the small interface the state
//! machine needs.
//!
//! Both stores keep their records in a `Vec` in creation order, which is also timestamp
//! order (the ledger only ever creates objects with increasing timestamps), plus a hash
//! index from id to slot. Timestamp-range queries are therefore binary searches, and
//! rolling back the newest objects of a failed linked chain is a pop.
//!
//! This is the seam where the engine will later keep only pending and recent transfers in
//! memory and prefetch older ones from disk before a batch is applied: the state machine
//! only calls the methods below.

use std::collections::{BTreeSet, HashMap, HashSet};

use protocol::{Account, Transfer};

pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Index of a record in its store's creation-ordered `Vec`.
pub(crate) type Slot = u32;

/// Where a pending transfer stands. Non-pending transfers are `NotPending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PendingStatus {
    NotPending = 0,
    Pending = 1,
    Posted = 2,
    Voided = 3,
    Expired = 4,
}

/// One balance snapshot of an account with the `history` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryEntry {
    pub account_slot: Slot,
    pub transfer_slot: Slot,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

#[derive(Clone, Default)]
pub(crate) struct AccountStore {
    records: Vec<Account>,
    slots: FastMap<u128, Slot>,
    /// Per account: slots of its transfers (either side), oldest first.
    transfer_slots: Vec<Vec<Slot>>,
    /// Balance snapshots of history accounts, oldest first, with a per-account index.
    history: Vec<HistoryEntry>,
    history_slots: FastMap<Slot, Vec<u32>>,
}

impl AccountStore {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn slot(&self, id: u128) -> Option<Slot> {
        self.slots.get(&id).copied()
    }

    pub fn get(&self, slot: Slot) -> &Account {
        &self.records[slot as usize]
    }

    pub fn get_mut(&mut self, slot: Slot) -> &mut Account {
        &mut self.records[slot as usize]
    }

    pub fn by_id(&self, id: u128) -> Option<&Account> {
        self.slot(id).map(|slot| self.get(slot))
    }

    pub fn records(&self) -> &[Account] {
        &self.records
    }

    pub fn timestamp_last(&self) -> u64 {
        self.records.last().map_or(0, |account| account.timestamp)
    }

    pub fn has_timestamp(&self, timestamp: u64) -> bool {
        self.records
            .binary_search_by_key(&timestamp, |account| account.timestamp)
            .is_ok()
    }

    pub fn insert(&mut self, account: Account) -> Slot {
        debug_assert!(account.timestamp > self.timestamp_last());
        let slot = Slot::try_from(self.records.len()).expect("more than 2^32 accounts in memory");
        let previous = self.slots.insert(account.id, slot);
        assert!(previous.is_none(), "account id inserted twice");
        self.records.push(account);
        self.transfer_slots.push(Vec::new());
        slot
    }

    /// Undo the newest `insert`.
    pub fn remove_last(&mut self, id: u128) {
        let account = self
            .records
            .pop()
            .expect("rollback of an account that was never created");
        assert_eq!(account.id, id);
        self.slots.remove(&id);
        let transfers = self.transfer_slots.pop();
        assert!(transfers.is_some_and(|list| list.is_empty()));
    }

    /// Overwrite an account's balances/flags, returning the previous record.
    pub fn replace(&mut self, slot: Slot, account: Account) -> Account {
        let record = &mut self.records[slot as usize];
        debug_assert_eq!(record.id, account.id);
        std::mem::replace(record, account)
    }

    pub fn transfer_slots(&self, slot: Slot) -> &[Slot] {
        &self.transfer_slots[slot as usize]
    }

    pub fn push_transfer(&mut self, slot: Slot, transfer_slot: Slot) {
        self.transfer_slots[slot as usize].push(transfer_slot);
    }

    pub fn pop_transfer(&mut self, slot: Slot, transfer_slot: Slot) {
        let popped = self.transfer_slots[slot as usize].pop();
        assert_eq!(popped, Some(transfer_slot));
    }

    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    pub fn history_of(&self, slot: Slot) -> impl DoubleEndedIterator<Item = &HistoryEntry> {
        let indexes = self.history_slots.get(&slot).map_or(&[][..], Vec::as_slice);
        indexes.iter().map(|index| &self.history[*index as usize])
    }

    pub fn push_history(&mut self, entry: HistoryEntry) {
        let index = u32::try_from(self.history.len()).expect("more than 2^32 history entries");
        self.history_slots
            .entry(entry.account_slot)
            .or_default()
            .push(index);
        self.history.push(entry);
    }

    /// Undo history entries of the newest transfer.
    pub fn pop_history(&mut self, transfer_slot: Slot) {
        while let Some(entry) = self.history.last().copied() {
            if entry.transfer_slot != transfer_slot {
                break;
            }
            self.history.pop();
            let indexes = self
                .history_slots
                .get_mut(&entry.account_slot)
                .expect("history index");
            indexes.pop();
            if indexes.is_empty() {
                self.history_slots.remove(&entry.account_slot);
            }
        }
    }
}

/// Transfers per storage chunk (1 MiB of records). Chunks never move once allocated, so
/// growing the store never copies old transfers, and a whole chunk is the natural unit for
/// moving old transfers out of memory later.
const CHUNK_TRANSFERS: usize = 8192;

#[derive(Clone, Default)]
pub(crate) struct TransferStore {
    /// Transfers in creation order: every chunk but the last holds `CHUNK_TRANSFERS`.
    chunks: Vec<Vec<Transfer>>,
    count: usize,
    slots: FastMap<u128, Slot>,
    status: Vec<PendingStatus>,
    /// Pending transfers with a timeout, ordered by expiry then creation.
    expiry: BTreeSet<(u64, Slot)>,
    /// Ids whose creation failed with a transient result.
    failed: FastSet<u128>,
}

impl TransferStore {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn slot(&self, id: u128) -> Option<Slot> {
        self.slots.get(&id).copied()
    }

    pub fn get(&self, slot: Slot) -> &Transfer {
        let slot = slot as usize;
        &self.chunks[slot / CHUNK_TRANSFERS][slot % CHUNK_TRANSFERS]
    }

    pub fn by_id(&self, id: u128) -> Option<&Transfer> {
        self.slot(id).map(|slot| self.get(slot))
    }

    /// The records from `slot` on, as contiguous slices in creation order.
    pub fn chunks_from(&self, slot: usize) -> impl Iterator<Item = &[Transfer]> {
        let first = slot / CHUNK_TRANSFERS;
        self.chunks
            .iter()
            .enumerate()
            .skip(first)
            .map(move |(index, chunk)| {
                if index == first {
                    &chunk[slot % CHUNK_TRANSFERS..]
                } else {
                    &chunk[..]
                }
            })
    }

    /// The number of leading records for which `before` holds (records must be
    /// partitioned by it, as they are by timestamp).
    pub fn partition_point(&self, before: impl Fn(&Transfer) -> bool) -> usize {
        let full_chunks = self
            .chunks
            .partition_point(|chunk| chunk.last().is_some_and(&before));
        match self.chunks.get(full_chunks) {
            Some(chunk) => full_chunks * CHUNK_TRANSFERS + chunk.partition_point(&before),
            None => self.count,
        }
    }

    pub fn statuses(&self) -> &[PendingStatus] {
        &self.status
    }

    pub fn timestamp_last(&self) -> u64 {
        self.chunks
            .last()
            .and_then(|chunk| chunk.last())
            .map_or(0, |transfer| transfer.timestamp)
    }

    pub fn has_timestamp(&self, timestamp: u64) -> bool {
        let index = self.partition_point(|transfer| transfer.timestamp < timestamp);
        index < self.count && self.get(index as Slot).timestamp == timestamp
    }

    pub fn insert(&mut self, transfer: Transfer, status: PendingStatus) -> Slot {
        debug_assert!(transfer.timestamp > self.timestamp_last());
        let slot = Slot::try_from(self.count).expect("more than 2^32 transfers in memory");
        let previous = self.slots.insert(transfer.id, slot);
        assert!(previous.is_none(), "transfer id inserted twice");
        if self.count.is_multiple_of(CHUNK_TRANSFERS) {
            self.chunks.push(Vec::with_capacity(CHUNK_TRANSFERS));
        }
        let chunk = self.chunks.last_mut().expect("a chunk with room");
        debug_assert!(chunk.len() < CHUNK_TRANSFERS);
        chunk.push(transfer);
        self.count += 1;
        self.status.push(status);
        slot
    }

    /// Undo the newest `insert`.
    pub fn remove_last(&mut self, id: u128) -> Transfer {
        let chunk = self
            .chunks
            .last_mut()
            .expect("rollback of a transfer that was never created");
        let transfer = chunk.pop().expect("chunks are never left empty");
        if chunk.is_empty() {
            self.chunks.pop();
        }
        self.count -= 1;
        assert_eq!(transfer.id, id);
        self.slots.remove(&id);
        self.status.pop();
        transfer
    }

    pub fn status(&self, slot: Slot) -> PendingStatus {
        self.status[slot as usize]
    }

    pub fn set_status(&mut self, slot: Slot, status: PendingStatus) -> PendingStatus {
        std::mem::replace(&mut self.status[slot as usize], status)
    }

    pub fn expiry(&self) -> &BTreeSet<(u64, Slot)> {
        &self.expiry
    }

    pub fn expiry_insert(&mut self, expires_at: u64, slot: Slot) {
        assert!(self.expiry.insert((expires_at, slot)));
    }

    pub fn expiry_remove(&mut self, expires_at: u64, slot: Slot) -> bool {
        self.expiry.remove(&(expires_at, slot))
    }

    /// The earliest expiry at or before `now`, if any.
    pub fn expiry_due(&self, now: u64) -> Option<(u64, Slot)> {
        self.expiry
            .first()
            .copied()
            .filter(|(expires_at, _)| *expires_at <= now)
    }

    pub fn has_failed(&self, id: u128) -> bool {
        !self.failed.is_empty() && self.failed.contains(&id)
    }

    pub fn mark_failed(&mut self, id: u128) -> bool {
        self.failed.insert(id)
    }

    pub fn failed(&self) -> &FastSet<u128> {
        &self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_chunks_behave_like_one_ordered_vector() {
        let mut store = TransferStore::default();
        let count = CHUNK_TRANSFERS * 2 + 5;
        for index in 0..count as u128 {
            let transfer = Transfer {
                id: index + 1,
                timestamp: (index as u64 + 1) * 10,
                ..Transfer::default()
            };
            assert_eq!(
                store.insert(transfer, PendingStatus::NotPending),
                index as Slot
            );
        }
        assert_eq!(store.len(), count);
        assert_eq!(
            store.get(CHUNK_TRANSFERS as Slot).id,
            CHUNK_TRANSFERS as u128 + 1
        );
        assert_eq!(
            store.partition_point(|t| t.timestamp < 10 * CHUNK_TRANSFERS as u64 + 5),
            CHUNK_TRANSFERS
        );
        assert_eq!(store.partition_point(|t| t.timestamp < u64::MAX), count);
        assert!(store.has_timestamp(10 * (CHUNK_TRANSFERS as u64 + 1)));
        assert!(!store.has_timestamp(10 * CHUNK_TRANSFERS as u64 + 5));
        let tail: usize = store
            .chunks_from(CHUNK_TRANSFERS - 1)
            .map(<[Transfer]>::len)
            .sum();
        assert_eq!(tail, count - CHUNK_TRANSFERS + 1);
        // Roll back across a chunk boundary and grow again.
        for id in (CHUNK_TRANSFERS as u128 * 2 - 2..=count as u128).rev() {
            store.remove_last(id);
        }
        assert_eq!(store.len(), CHUNK_TRANSFERS * 2 - 3);
        assert_eq!(
            store.timestamp_last(),
            10 * (CHUNK_TRANSFERS as u64 * 2 - 3)
        );
        let transfer = Transfer {
            id: 999_999,
            timestamp: u64::MAX - 1,
            ..Transfer::default()
        };
        assert_eq!(
            store.insert(transfer, PendingStatus::Pending),
            (CHUNK_TRANSFERS * 2 - 3) as Slot
        );
        assert_eq!(
            store.by_id(999_999).map(|t| t.timestamp),
            Some(u64::MAX - 1)
        );
    }
}
