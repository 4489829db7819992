//! The resident tables: accounts and transfers in memory, behind the small interface the
//! state machine needs. (RocksDB, where checkpointed state lives on disk, is `crate::store`.)
//!
//! Both tables keep their records in creation order, which is also timestamp order (the
//! ledger only ever creates objects with increasing timestamps), plus a hash index from
//! id to slot. Timestamp-range queries are therefore binary searches, and rolling back the
//! newest objects of a failed linked chain is a pop.
//!
//! Accounts are all resident. Transfers are resident from the newest back to an eviction
//! watermark: [`TransferTable::evict_chunk`] drops whole chunks of old transfers once the
//! engine says a checkpoint holds them, except the ones the state machine may still
//! change (pending transfers, and resolutions the store does not have yet), which stay
//! behind in `retained`. What is gone from memory comes back, per batch, as
//! [`OldTransfers`] read from the store before the batch is applied.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::OnceLock;

use protocol::{Account, Transfer};

use super::hash::{failed_id_hash, transfer_hash};
use super::index::IdIndex;
use super::lookahead::LOOKAHEAD_INDEX_EVENTS;
use super::memory::{prefetch_spare, HugeVec};

pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Index of an account in its table's creation-ordered `Vec`.
pub(crate) type Slot = u32;

/// Number of a transfer in creation order since the ledger was built or restored. Never
/// reused, so it outlives eviction: 64 bits, since a long-running engine creates more
/// than 2^32 transfers.
pub(crate) type TransferSlot = u64;

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
    pub transfer_slot: TransferSlot,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

#[derive(Clone, Default)]
pub(crate) struct AccountTable {
    records: HugeVec<Account>,
    slots: IdIndex,
    /// Balance snapshots of history accounts for resident transfers, oldest first;
    /// `history[0]` is entry number `history_base` of all time.
    history: VecDeque<HistoryEntry>,
    history_base: u64,
    /// Per history account: the numbers of its resident entries, oldest first.
    history_slots: FastMap<Slot, VecDeque<u64>>,
}

impl AccountTable {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The hash the id index files `id` under (see [`IdIndex::tag`]).
    pub fn tag(&self, id: u128) -> u64 {
        self.slots.tag(id)
    }

    pub fn slot(&self, id: u128) -> Option<Slot> {
        self.slot_tagged(id, self.tag(id))
    }

    /// [`AccountTable::slot`] with the id's tag already known.
    #[inline]
    pub fn slot_tagged(&self, id: u128, tag: u64) -> Option<Slot> {
        let slot = self
            .slots
            .get_tagged(id, tag, |slot| self.records[slot as usize].id)?;
        Some(slot as Slot)
    }

    /// Start loading the index entry of the id filed under `tag`.
    pub fn prefetch_tagged(&self, tag: u64) {
        self.slots.prefetch_tagged(tag);
    }

    /// The slot the index (already cached) guesses for the id filed under `tag`, with
    /// its record's cache lines on their way. A guess: check the record's id.
    #[inline]
    pub fn guess_and_prefetch(&self, tag: u64) -> Option<Slot> {
        let slot = self.slots.guess_tagged(tag)? as Slot;
        let account = self.records.get(slot as usize)?;
        super::index::prefetch(account);
        super::index::prefetch(&account.timestamp);
        Some(slot)
    }

    #[inline]
    pub fn get(&self, slot: Slot) -> &Account {
        &self.records[slot as usize]
    }

    #[inline]
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
        let tag = self.tag(account.id);
        assert!(
            self.slot_tagged(account.id, tag).is_none(),
            "account id inserted twice"
        );
        self.slots.insert_tagged(account.id, tag, slot.into());
        self.records.push(account);
        slot
    }

    /// Undo the newest `insert`.
    pub fn remove_last(&mut self, id: u128) {
        let account = self
            .records
            .pop()
            .expect("rollback of an account that was never created");
        assert_eq!(account.id, id);
        assert!(self.slots.remove(id, self.records.len() as u64));
    }

    /// Overwrite an account's balances/flags, returning the previous record.
    pub fn replace(&mut self, slot: Slot, account: Account) -> Account {
        let record = &mut self.records[slot as usize];
        debug_assert_eq!(record.id, account.id);
        std::mem::replace(record, account)
    }

    /// Number of the next history entry (entries ever made, minus rolled back ones).
    pub fn history_end(&self) -> u64 {
        self.history_base + self.history.len() as u64
    }

    pub fn history_resident(&self) -> usize {
        self.history.len()
    }

    /// Resident history entries from number `from` on (`from` must be resident).
    pub fn history_from(&self, from: u64) -> impl Iterator<Item = &HistoryEntry> {
        let start = from
            .checked_sub(self.history_base)
            .expect("history entry already evicted");
        self.history.range(start as usize..)
    }

    pub fn history_of(&self, slot: Slot) -> impl DoubleEndedIterator<Item = &HistoryEntry> {
        let indexes = self.history_slots.get(&slot);
        indexes
            .into_iter()
            .flatten()
            .map(|index| &self.history[(index - self.history_base) as usize])
    }

    pub fn push_history(&mut self, entry: HistoryEntry) {
        let index = self.history_end();
        self.history_slots
            .entry(entry.account_slot)
            .or_default()
            .push_back(index);
        self.history.push_back(entry);
    }

    /// Undo history entries of the newest transfer.
    pub fn pop_history(&mut self, transfer_slot: TransferSlot) {
        while let Some(entry) = self.history.back().copied() {
            if entry.transfer_slot != transfer_slot {
                break;
            }
            self.history.pop_back();
            let indexes = self
                .history_slots
                .get_mut(&entry.account_slot)
                .expect("history index");
            indexes.pop_back();
            if indexes.is_empty() {
                self.history_slots.remove(&entry.account_slot);
            }
        }
    }

    /// Drop the entries of transfers older than `transfer_slot`, oldest first.
    pub fn evict_history_before(&mut self, transfer_slot: TransferSlot) -> Vec<HistoryEntry> {
        let mut evicted = Vec::new();
        while let Some(entry) = self.history.front().copied() {
            if entry.transfer_slot >= transfer_slot {
                break;
            }
            self.history.pop_front();
            let indexes = self
                .history_slots
                .get_mut(&entry.account_slot)
                .expect("history index");
            assert_eq!(indexes.pop_front(), Some(self.history_base));
            if indexes.is_empty() {
                self.history_slots.remove(&entry.account_slot);
            }
            self.history_base += 1;
            evicted.push(entry);
        }
        evicted
    }
}

/// Transfers per storage chunk (2 MiB of records, one huge page). Chunks never move once allocated, so
/// growing the store never copies old transfers, and a whole chunk is the unit of
/// eviction.
pub(crate) const CHUNK_TRANSFERS: usize = 16384;

/// The chunk size of transfer tables built from now on: [`CHUNK_TRANSFERS`], except under
/// the simulation (`crate::sim`), which sets a small power of two before it builds any
/// ledger so that a few thousand transfers span many chunks and evictions.
static CHUNK_TRANSFERS_SHIFT_NEW: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(CHUNK_TRANSFERS.trailing_zeros());

/// Chunks of `transfers` (a power of two, at most [`CHUNK_TRANSFERS`]) for the transfer
/// tables built after this call. For the simulation only.
#[doc(hidden)]
pub fn set_chunk_transfers(transfers: usize) {
    assert!(transfers.is_power_of_two() && (2..=CHUNK_TRANSFERS).contains(&transfers));
    CHUNK_TRANSFERS_SHIFT_NEW.store(
        transfers.trailing_zeros(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// A table's chunk size, fixed when it is built: `1 << shift` transfers.
#[derive(Clone, Copy, Debug)]
struct ChunkSize {
    shift: u32,
}

impl Default for ChunkSize {
    fn default() -> ChunkSize {
        ChunkSize {
            shift: CHUNK_TRANSFERS_SHIFT_NEW.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl ChunkSize {
    #[inline]
    fn transfers(self) -> usize {
        1 << self.shift
    }
}

/// A run of consecutive transfers. Which of them touch an account is found without a
/// per-account list (whose upkeep costs two cache misses per transfer): the chunk being
/// filled is scanned, and a full chunk is indexed in bulk the first time an account's
/// transfers are asked of it. Most chunks are never asked and never pay for the index
/// (sorting a chunk's 32768 keys takes ~250 us, as long as applying ~2000 transfers).
/// The price: the first account query after a while may index every resident chunk
/// (64 at 1 Mi resident: ~15 ms on the core thread), once.
#[derive(Clone, Default)]
struct Chunk {
    /// Transfers it holds when full.
    size: usize,
    transfers: HugeVec<Transfer>,
    status: Vec<PendingStatus>,
    /// The account slots of each transfer (in either order).
    parties: Vec<[Slot; 2]>,
    /// Once the chunk is full and was asked for an account's transfers:
    /// `account slot << 32 | offset` for both accounts of every transfer, sorted, so an
    /// account's transfers are one run in creation order.
    by_account: OnceLock<Vec<u64>>,
}

impl Chunk {
    /// An empty chunk, in the memory of `recycled` records if there are some.
    fn new(recycled: Option<HugeVec<Transfer>>, size: usize) -> Chunk {
        let transfers = match recycled {
            Some(mut transfers) => {
                transfers.clear();
                transfers
            }
            None => HugeVec::with_capacity(size),
        };
        Chunk {
            size,
            transfers,
            status: Vec::with_capacity(size),
            parties: Vec::with_capacity(size),
            by_account: OnceLock::new(),
        }
    }

    /// The account index of a full chunk, built on first use.
    fn by_account(&self) -> &[u64] {
        debug_assert_eq!(self.transfers.len(), self.size);
        self.by_account.get_or_init(|| {
            let mut keys = Vec::with_capacity(self.parties.len() * 2);
            for (offset, parties) in self.parties.iter().enumerate() {
                for account in parties {
                    keys.push(account_key(*account, offset));
                }
            }
            // Keys were made in offset order, so a stable sort by account is enough.
            sort_by_account(&mut keys);
            keys
        })
    }

    /// The chunk's transfers of one account, oldest first.
    fn of_account(&self, account: Slot) -> ChunkRun<'_> {
        if self.transfers.len() == self.size {
            let by_account = self.by_account();
            let start = by_account.partition_point(|key| key_account(*key) < account);
            let end =
                start + by_account[start..].partition_point(|key| key_account(*key) == account);
            ChunkRun::Indexed {
                keys: by_account[start..end].iter(),
                transfers: &self.transfers,
            }
        } else {
            ChunkRun::Scanned {
                parties: self.parties.iter().enumerate(),
                transfers: &self.transfers,
                account,
            }
        }
    }
}

/// A full chunk's account index key: the account slot, then the transfer's offset.
fn account_key(account: Slot, offset: usize) -> u64 {
    u64::from(account) << 32 | offset as u64
}

fn key_account(key: u64) -> Slot {
    (key >> 32) as Slot
}

fn key_offset(key: u64) -> usize {
    (key & u64::from(u32::MAX)) as usize
}

/// Stable sort of `key >> 32`: a least-significant-digit radix sort, a byte per pass,
/// skipping the bytes no account slot uses (two passes up to 65536 accounts). Several
/// times faster than a comparison sort on the 32768 keys of a chunk.
fn sort_by_account(keys: &mut Vec<u64>) {
    let slot_max = keys.iter().map(|key| key_account(*key)).max().unwrap_or(0);
    let bytes = (Slot::BITS - slot_max.leading_zeros()).div_ceil(8);
    let mut sorted = vec![0u64; keys.len()];
    for byte in 0..bytes {
        let shift = 32 + 8 * byte;
        let mut starts = [0usize; 256];
        for key in keys.iter() {
            starts[(key >> shift) as usize & 0xff] += 1;
        }
        let mut start = 0;
        for count in starts.iter_mut() {
            (*count, start) = (start, start + *count);
        }
        for key in keys.iter() {
            let digit = (key >> shift) as usize & 0xff;
            sorted[starts[digit]] = *key;
            starts[digit] += 1;
        }
        std::mem::swap(keys, &mut sorted);
    }
}

/// The transfers of one account in one chunk, in either direction.
enum ChunkRun<'a> {
    Indexed {
        keys: std::slice::Iter<'a, u64>,
        transfers: &'a [Transfer],
    },
    Scanned {
        parties: std::iter::Enumerate<std::slice::Iter<'a, [Slot; 2]>>,
        transfers: &'a [Transfer],
        account: Slot,
    },
}

impl<'a> ChunkRun<'a> {
    /// The next transfer from the front, or from the back.
    fn step(&mut self, from_back: bool) -> Option<&'a Transfer> {
        match self {
            ChunkRun::Indexed { keys, transfers } => {
                let key = if from_back {
                    keys.next_back()
                } else {
                    keys.next()
                };
                key.map(|key| &transfers[key_offset(*key)])
            }
            ChunkRun::Scanned {
                parties,
                transfers,
                account,
            } => {
                let touches = |(_, pair): &(usize, &[Slot; 2])| pair.contains(account);
                let found = if from_back {
                    parties.rfind(touches)
                } else {
                    parties.find(touches)
                };
                found.map(|(offset, _)| &transfers[offset])
            }
        }
    }
}

impl<'a> Iterator for ChunkRun<'a> {
    type Item = &'a Transfer;

    fn next(&mut self) -> Option<&'a Transfer> {
        self.step(false)
    }
}

impl<'a> DoubleEndedIterator for ChunkRun<'a> {
    fn next_back(&mut self) -> Option<&'a Transfer> {
        self.step(true)
    }
}

/// Transfers the engine read back from RocksDB for one request (or one WAL entry during
/// replay): the ones it references
/// by id that are no longer resident. Read-only: a transfer that can still change
/// (pending, or resolved since the last checkpoint) never leaves memory.
#[derive(Clone, Debug, Default)]
pub struct OldTransfers {
    through: u64,
    found: FastMap<u128, (Transfer, PendingStatus)>,
    /// Timestamps of evicted transfers that imported accounts of the batch ask about.
    timestamps: FastSet<u64>,
    /// Ids of the batch the store holds as transiently failed, once `failed_read`.
    failed: FastSet<u128>,
    failed_read: bool,
}

impl OldTransfers {
    /// An empty set read while the ledger's eviction watermark
    /// ([`Ledger::evicted_through`](super::Ledger::evicted_through)) was `through`: it
    /// answers for every transfer evicted up to then.
    pub fn new(through: u64) -> OldTransfers {
        OldTransfers {
            through,
            found: FastMap::default(),
            timestamps: FastSet::default(),
            failed: FastSet::default(),
            failed_read: false,
        }
    }

    pub fn through(&self) -> u64 {
        self.through
    }

    pub fn insert(&mut self, transfer: Transfer, status: PendingStatus) {
        self.found.insert(transfer.id, (transfer, status));
    }

    /// Record that an evicted transfer has this timestamp.
    pub fn insert_timestamp(&mut self, timestamp: u64) {
        self.timestamps.insert(timestamp);
    }

    pub fn get(&self, id: u128) -> Option<&(Transfer, PendingStatus)> {
        self.found.get(&id)
    }

    /// Record that the store's failed ids were read for the batch's ids; `failed` are
    /// those it holds.
    pub fn set_failed(&mut self, failed: impl IntoIterator<Item = u128>) {
        self.failed.extend(failed);
        self.failed_read = true;
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }
}

/// A transfer found by id: resident (with its slot) or read back from the store.
pub(crate) enum Found<'a> {
    Resident(TransferSlot),
    Old(&'a Transfer, PendingStatus),
}

/// How far ahead of the newest transfer its chunk's memory is requested.
const WRITE_AHEAD_TRANSFERS: usize = 16;
/// The same for the party list and the statuses: a few cache lines ahead.
const WRITE_AHEAD_PARTIES: usize = 64;
const WRITE_AHEAD_STATUSES: usize = 256;

#[derive(Clone, Default)]
pub(crate) struct TransferTable {
    /// Transfers per chunk ([`CHUNK_TRANSFERS`] but in the simulation).
    chunk_size: ChunkSize,
    /// Resident transfers in creation order: every chunk but the last holds
    /// `chunk_size`; `chunks[0]` starts at slot `base`.
    chunks: VecDeque<Chunk>,
    base: TransferSlot,
    /// The next slot.
    count: TransferSlot,
    /// Id to slot of every resident and retained transfer.
    slots: IdIndex,
    /// Transfers of evicted chunks kept because they may still change.
    retained: FastMap<TransferSlot, (Transfer, PendingStatus)>,
    /// Resolutions (post, void, expiry) as `(sequence number, slot)`, oldest first, until
    /// a checkpoint holds them.
    resolutions: VecDeque<(u64, TransferSlot)>,
    /// Resolutions made so far (rolled back ones excepted): the next sequence number.
    resolutions_count: u64,
    /// Bumped whenever anything leaves memory: reads from the store made at an older
    /// generation may miss something.
    eviction_generation: u64,
    /// Every transfer with a later timestamp is resident; of the others only `retained`.
    evicted_through: u64,
    /// Sum of [`transfer_hash`] over transfers that left memory.
    evicted_digest: u128,
    timestamp_last: u64,
    /// Pending transfers with a timeout, ordered by expiry then creation.
    expiry: BTreeSet<(u64, TransferSlot)>,
    /// Transfers whose status is `Pending` (resident or retained: a pending transfer
    /// never leaves memory), for operators.
    pending_count: u64,
    /// Ids whose creation failed with a transient result and that no written checkpoint
    /// holds yet (older ones are read back with the batch, like evicted transfers).
    failed: FastSet<u128>,
    /// The ids of `failed` in order of failure; `failed_order[0]` is failure number
    /// `failed_released` of all time.
    failed_order: VecDeque<u128>,
    failed_released: u64,
    /// Sum of [`failed_id_hash`] over failed ids that left memory.
    evicted_failed_digest: u128,
    /// Whether any failed id left memory (or was loaded as stored): from then on every
    /// batch needs the store's answer.
    failed_evicted: bool,
    /// The current request's transfers read back from RocksDB.
    pub old: OldTransfers,
    /// Record memory of evicted chunks, for the next chunks: new memory costs page
    /// faults and a clear, reused memory costs nothing. At most as many as there are
    /// resident chunks, so the table never holds more memory than it used at its peak.
    spare_records: Vec<HugeVec<Transfer>>,
}

impl TransferTable {
    /// Transfers created since the table was built (resident or not).
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn resident_len(&self) -> u64 {
        self.count - self.base + self.retained.len() as u64
    }

    pub fn evicted_through(&self) -> u64 {
        self.evicted_through
    }

    pub fn resolutions_count(&self) -> u64 {
        self.resolutions_count
    }

    /// Transfers still pending (not posted, voided or expired).
    pub fn pending_len(&self) -> u64 {
        self.pending_count
    }

    /// Transfers of evicted chunks kept in memory: pending, or resolved after the last
    /// written checkpoint.
    pub fn retained_len(&self) -> u64 {
        self.retained.len() as u64
    }

    /// Pending transfers with a timeout, waiting to expire.
    pub fn expiry_len(&self) -> u64 {
        self.expiry.len() as u64
    }

    /// Ids remembered in memory as transiently failed.
    pub fn failed_len(&self) -> u64 {
        self.failed.len() as u64
    }

    /// Transient failures so far: the number the next one gets.
    pub fn failures_count(&self) -> u64 {
        self.failed_released + self.failed_order.len() as u64
    }

    pub fn evicted_failed_digest(&self) -> u128 {
        self.evicted_failed_digest
    }

    pub fn eviction_generation(&self) -> u64 {
        self.eviction_generation
    }

    pub fn evicted_digest(&self) -> u128 {
        self.evicted_digest
    }

    /// The hash the id index files `id` under (see [`IdIndex::tag`]).
    pub fn tag(&self, id: u128) -> u64 {
        self.slots.tag(id)
    }

    pub fn slot(&self, id: u128) -> Option<TransferSlot> {
        self.slot_tagged(id, self.tag(id))
    }

    #[inline]
    fn slot_tagged(&self, id: u128, tag: u64) -> Option<TransferSlot> {
        self.slots.get_tagged(id, tag, |slot| self.get(slot).id)
    }

    /// Start loading the index entry of the id filed under `tag`.
    pub fn prefetch_tagged(&self, tag: u64) {
        self.slots.prefetch_tagged(tag);
    }

    /// The transfer `id`, resident or in the batch's [`OldTransfers`]. A transfer that is
    /// neither does not exist: the engine read every evicted id the batch names.
    pub fn find(&self, id: u128) -> Option<Found<'_>> {
        self.find_tagged(id, self.tag(id))
    }

    /// [`TransferTable::find`] with the id's tag already known.
    #[inline]
    pub fn find_tagged(&self, id: u128, tag: u64) -> Option<Found<'_>> {
        if let Some(slot) = self.slot_tagged(id, tag) {
            return Some(Found::Resident(slot));
        }
        if self.evicted_through == 0 {
            return None;
        }
        assert!(
            self.old.through >= self.evicted_through,
            "old transfers read at watermark {} do not cover the evicted ones (through {})",
            self.old.through,
            self.evicted_through
        );
        self.old
            .get(id)
            .map(|(transfer, status)| Found::Old(transfer, *status))
    }

    /// Where a slot lives: `Some((chunk, index))` in the resident chunks, `None` for a
    /// retained transfer (older than `base`).
    #[inline]
    fn locate(&self, slot: TransferSlot) -> Option<(usize, usize)> {
        let offset = slot.checked_sub(self.base)? as usize;
        let shift = self.chunk_size.shift;
        Some((offset >> shift, offset & ((1 << shift) - 1)))
    }

    #[inline]
    pub fn get(&self, slot: TransferSlot) -> &Transfer {
        match self.locate(slot) {
            Some((chunk, index)) => &self.chunks[chunk].transfers[index],
            None => &self.retained[&slot].0,
        }
    }

    pub fn status(&self, slot: TransferSlot) -> PendingStatus {
        match self.locate(slot) {
            Some((chunk, index)) => self.chunks[chunk].status[index],
            None => self.retained[&slot].1,
        }
    }

    fn status_mut(&mut self, slot: TransferSlot) -> &mut PendingStatus {
        match self.locate(slot) {
            Some((chunk, index)) => &mut self.chunks[chunk].status[index],
            None => {
                &mut self
                    .retained
                    .get_mut(&slot)
                    .expect("transfer slot resident")
                    .1
            }
        }
    }

    /// The resident chunks' records from `slot` on (at least `base`), as contiguous
    /// slices in creation order.
    pub fn chunks_from(&self, slot: TransferSlot) -> impl Iterator<Item = &[Transfer]> {
        let (first, start) = self.locate(slot).expect("slot evicted");
        self.chunks
            .iter()
            .enumerate()
            .skip(first)
            .map(move |(index, chunk)| {
                if index == first {
                    &chunk.transfers[start..]
                } else {
                    &chunk.transfers[..]
                }
            })
    }

    /// The transfers in chunks of the account in slot `account`, oldest first.
    pub fn of_account(&self, account: Slot) -> impl DoubleEndedIterator<Item = &Transfer> {
        self.chunks
            .iter()
            .flat_map(move |chunk| chunk.of_account(account))
    }

    /// The slot of the first resident transfer (in a chunk) for which `before` fails
    /// (records are partitioned by it, as they are by timestamp); `len()` if none.
    pub fn partition_point(&self, before: impl Fn(&Transfer) -> bool) -> TransferSlot {
        let full_chunks = self
            .chunks
            .partition_point(|chunk| chunk.transfers.last().is_some_and(&before));
        match self.chunks.get(full_chunks) {
            Some(chunk) => {
                self.base
                    + (full_chunks * self.chunk_size.transfers()
                        + chunk.transfers.partition_point(&before)) as u64
            }
            None => self.count,
        }
    }

    /// Every resident transfer with its status: chunks, then the retained ones.
    pub fn resident(&self) -> impl Iterator<Item = (&Transfer, PendingStatus)> {
        let chunked = self
            .chunks
            .iter()
            .flat_map(|chunk| chunk.transfers.iter().zip(chunk.status.iter().copied()));
        chunked.chain(
            self.retained
                .values()
                .map(|(transfer, status)| (transfer, *status)),
        )
    }

    pub fn timestamp_last(&self) -> u64 {
        self.timestamp_last
    }

    /// Whether a transfer has this timestamp (an evicted one only if the batch's
    /// [`OldTransfers`] says so).
    pub fn has_timestamp(&self, timestamp: u64) -> bool {
        if timestamp <= self.evicted_through {
            assert!(
                self.old.through >= self.evicted_through,
                "old transfers do not cover the evicted ones"
            );
            return self.old.timestamps.contains(&timestamp);
        }
        let slot = self.partition_point(|transfer| transfer.timestamp < timestamp);
        slot < self.count && self.get(slot).timestamp == timestamp
    }

    /// Fill an empty table from a checkpoint without its history: `pending` (the stored
    /// transfers still pending, in timestamp order) are resident from slot 0 as retained
    /// transfers, and every other stored transfer, up to `timestamp_last`, stays in the
    /// store as if evicted. `transfers_digest` is the sum of [`transfer_hash`] over all
    /// stored transfers; `failed` the count and digest of the stored failed ids.
    pub fn restore(
        &mut self,
        pending: &[Transfer],
        timestamp_last: u64,
        transfers_digest: u128,
        failed: (u64, u128),
    ) {
        assert_eq!(self.count, 0, "restore into a table in use");
        let mut digest = transfers_digest;
        for transfer in pending {
            assert!(transfer.timestamp <= timestamp_last);
            let slot = self.count;
            let tag = self.tag(transfer.id);
            assert!(
                self.slot_tagged(transfer.id, tag).is_none(),
                "pending id twice"
            );
            self.slots.insert_tagged(transfer.id, tag, slot);
            self.retained
                .insert(slot, (*transfer, PendingStatus::Pending));
            if let Some(expires_at) = transfer.expires_at() {
                self.expiry_insert(expires_at, slot);
            }
            digest = digest.wrapping_sub(transfer_hash(transfer, PendingStatus::Pending));
            self.count += 1;
        }
        self.base = self.count;
        self.pending_count = self.count;
        self.evicted_through = timestamp_last;
        self.timestamp_last = timestamp_last;
        self.evicted_digest = digest;
        let (failed_count, failed_digest) = failed;
        self.failed_evicted = failed_count > 0;
        self.evicted_failed_digest = failed_digest;
    }

    /// Store a new transfer between the accounts in slots `parties`; `tag` is the tag of
    /// its id.
    pub fn insert(
        &mut self,
        transfer: Transfer,
        status: PendingStatus,
        parties: [Slot; 2],
        tag: u64,
    ) -> TransferSlot {
        debug_assert!(transfer.timestamp > self.timestamp_last);
        let slot = self.count;
        // A second probe of the line the caller's lookup just loaded: cheap, and an id
        // filed twice would corrupt the index.
        assert!(
            self.slot_tagged(transfer.id, tag).is_none(),
            "transfer id inserted twice"
        );
        self.slots.insert_tagged(transfer.id, tag, slot);
        let size = self.chunk_size.transfers();
        // Chunk sizes are powers of two.
        if ((self.count - self.base) as usize) & (size - 1) == 0 {
            let recycled = self.spare_records.pop();
            self.chunks.push_back(Chunk::new(recycled, size));
        }
        let chunk = self.chunks.back_mut().expect("a chunk with room");
        debug_assert!(chunk.transfers.len() < chunk.size);
        chunk.transfers.push(transfer);
        chunk
            .transfers
            .prefetch_spare(chunk.transfers.len() + WRITE_AHEAD_TRANSFERS);
        chunk.status.push(status);
        chunk.parties.push(parties);
        self.pending_count += u64::from(status == PendingStatus::Pending);
        prefetch_spare(&chunk.parties, chunk.parties.len() + WRITE_AHEAD_PARTIES);
        prefetch_spare(&chunk.status, chunk.status.len() + WRITE_AHEAD_STATUSES);
        self.count += 1;
        self.timestamp_last = transfer.timestamp;
        slot
    }

    /// Undo the newest `insert`.
    pub fn remove_last(&mut self, id: u128) -> Transfer {
        let chunk = self
            .chunks
            .back_mut()
            .expect("rollback of a transfer that was never created");
        // Its account index (if one was built) would name the transfer.
        chunk.by_account.take();
        let transfer = chunk.transfers.pop().expect("chunks are never left empty");
        let status = chunk.status.pop().expect("a status per transfer");
        self.pending_count -= u64::from(status == PendingStatus::Pending);
        chunk.parties.pop();
        if chunk.transfers.is_empty() {
            self.chunks.pop_back();
        }
        self.count -= 1;
        assert_eq!(transfer.id, id);
        assert!(self.slots.remove(id, self.count));
        self.timestamp_last = match self.chunks.back() {
            Some(chunk) => chunk.transfers.last().map_or(0, |last| last.timestamp),
            None => self.evicted_through,
        };
        transfer
    }

    /// Resolve a pending transfer (post, void or expiry); returns the status before.
    pub fn resolve(&mut self, slot: TransferSlot, status: PendingStatus) -> PendingStatus {
        debug_assert!(status != PendingStatus::Pending);
        self.resolutions.push_back((self.resolutions_count, slot));
        self.resolutions_count += 1;
        let before = std::mem::replace(self.status_mut(slot), status);
        assert_eq!(
            before,
            PendingStatus::Pending,
            "only a pending transfer resolves"
        );
        self.pending_count -= 1;
        before
    }

    /// Undo the newest `resolve`.
    pub fn unresolve(&mut self, slot: TransferSlot, before: PendingStatus) {
        let (_, resolved) = self.resolutions.pop_back().expect("a resolution to undo");
        assert_eq!(resolved, slot);
        self.resolutions_count -= 1;
        *self.status_mut(slot) = before;
        self.pending_count += u64::from(before == PendingStatus::Pending);
    }

    pub fn expiry(&self) -> &BTreeSet<(u64, TransferSlot)> {
        &self.expiry
    }

    pub fn expiry_insert(&mut self, expires_at: u64, slot: TransferSlot) {
        assert!(self.expiry.insert((expires_at, slot)));
    }

    pub fn expiry_remove(&mut self, expires_at: u64, slot: TransferSlot) -> bool {
        self.expiry.remove(&(expires_at, slot))
    }

    /// The earliest expiry at or before `now`, if any.
    pub fn expiry_due(&self, now: u64) -> Option<(u64, TransferSlot)> {
        self.expiry
            .first()
            .copied()
            .filter(|(expires_at, _)| *expires_at <= now)
    }

    /// Whether `id` failed transiently: in memory, or (once failed ids left memory) in
    /// the batch's [`OldTransfers`].
    pub fn has_failed(&self, id: u128) -> bool {
        if !self.failed.is_empty() && self.failed.contains(&id) {
            return true;
        }
        if !self.failed_evicted {
            return false;
        }
        assert!(
            self.old.failed_read,
            "failed ids left memory but the batch did not read the store's"
        );
        self.old.failed.contains(&id)
    }

    /// Remember `id` as transiently failed; false if it already was (in memory).
    pub fn mark_failed(&mut self, id: u128) -> bool {
        let inserted = self.failed.insert(id);
        if inserted {
            self.failed_order.push_back(id);
        }
        inserted
    }

    /// Forget failed ids the store now holds: the first `failures_checkpointed` failures
    /// ever recorded.
    pub fn release_failed(&mut self, failures_checkpointed: u64) {
        assert!(failures_checkpointed <= self.failures_count());
        while self.failed_released < failures_checkpointed {
            let id = self.failed_order.pop_front().expect("checked above");
            assert!(
                self.failed.remove(&id),
                "failed id in order but not in the set"
            );
            self.failed_released += 1;
            self.failed_evicted = true;
            self.eviction_generation += 1;
            self.evicted_failed_digest =
                self.evicted_failed_digest.wrapping_add(failed_id_hash(id));
        }
    }

    pub fn failed(&self) -> &FastSet<u128> {
        &self.failed
    }

    /// Take back the records of an evicted chunk, to fill again.
    pub fn recycle(&mut self, records: HugeVec<Transfer>) {
        if self.spare_records.len() < self.chunks.len() {
            self.spare_records.push(records);
        }
    }

    /// Forget retained transfers whose final status the store now holds: the first
    /// `resolutions_checkpointed` resolutions ever made.
    pub fn release_checkpointed(&mut self, resolutions_checkpointed: u64) {
        while let Some(&(sequence, slot)) = self.resolutions.front() {
            if sequence >= resolutions_checkpointed {
                break;
            }
            self.resolutions.pop_front();
            if slot < self.base {
                self.eviction_generation += 1;
                let (transfer, status) = self.retained.remove(&slot).expect("retained transfer");
                debug_assert_ne!(status, PendingStatus::Pending);
                assert!(self.slots.remove(transfer.id, slot));
                self.evicted_digest = self
                    .evicted_digest
                    .wrapping_add(transfer_hash(&transfer, status));
            }
        }
    }

    /// Slots whose resolution no written checkpoint holds yet: call after
    /// [`TransferTable::release_checkpointed`], once for every chunk an eviction drops.
    pub fn uncheckpointed(&self) -> FastSet<TransferSlot> {
        self.resolutions.iter().map(|(_, slot)| *slot).collect()
    }

    /// Evict the oldest chunk if the store holds all of it (it lies within the first
    /// `transfers_checkpointed` slots), it is not the chunk being filled, and at least
    /// `keep_recent` transfers stay in chunks; transfers that are pending or in
    /// `uncheckpointed` stay behind. Returns the evicted chunk's transfers and the slot of its
    /// first one.
    pub fn evict_chunk(
        &mut self,
        transfers_checkpointed: u64,
        keep_recent: u64,
        uncheckpointed: &FastSet<TransferSlot>,
    ) -> Option<(TransferSlot, HugeVec<Transfer>)> {
        if self.chunks.len() < 2 {
            return None;
        }
        let end = self.base + self.chunk_size.transfers() as u64;
        let newest = self.chunks.front()?.transfers.last()?.timestamp;
        if end > transfers_checkpointed || self.count - end < keep_recent {
            return None;
        }
        self.eviction_generation += 1;
        let chunk = self.chunks.pop_front().expect("checked above");
        let first = self.base;
        self.base += self.chunk_size.transfers() as u64;
        // Every removal is a cache miss in the id index: its bucket is requested
        // `LOOKAHEAD_INDEX_EVENTS` transfers ahead, as when the transfers were created.
        let mut tags = [0u64; LOOKAHEAD_INDEX_EVENTS];
        let tag_ahead = |slots: &IdIndex, offset: usize| {
            let tag = chunk
                .transfers
                .get(offset)
                .map_or(0, |ahead| slots.tag(ahead.id));
            slots.prefetch_tagged(tag);
            tag
        };
        for (offset, tag) in tags.iter_mut().enumerate() {
            *tag = tag_ahead(&self.slots, offset);
        }
        for (offset, (transfer, status)) in chunk.transfers.iter().zip(&chunk.status).enumerate() {
            let slot = first + offset as u64;
            let tag = std::mem::replace(
                &mut tags[offset % LOOKAHEAD_INDEX_EVENTS],
                tag_ahead(&self.slots, offset + LOOKAHEAD_INDEX_EVENTS),
            );
            if *status == PendingStatus::Pending || uncheckpointed.contains(&slot) {
                self.retained.insert(slot, (*transfer, *status));
            } else {
                debug_assert_eq!(tag, self.slots.tag(transfer.id));
                assert!(self.slots.remove_tagged(tag, slot));
                self.evicted_digest = self
                    .evicted_digest
                    .wrapping_add(transfer_hash(transfer, *status));
            }
        }
        self.evicted_through = newest;
        Some((first, chunk.transfers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = CHUNK_TRANSFERS as u64;

    fn put(
        table: &mut TransferTable,
        transfer: Transfer,
        status: PendingStatus,
        parties: [Slot; 2],
    ) -> TransferSlot {
        let tag = table.tag(transfer.id);
        table.insert(transfer, status, parties, tag)
    }

    fn numbered(index: u64) -> Transfer {
        Transfer {
            id: u128::from(index) + 1,
            timestamp: (index + 1) * 10,
            ..Transfer::default()
        }
    }

    #[test]
    fn transfer_chunks_behave_like_one_ordered_vector() {
        let mut table = TransferTable::default();
        let count = CHUNK * 2 + 5;
        for index in 0..count {
            let inserted = put(
                &mut table,
                numbered(index),
                PendingStatus::NotPending,
                [0, 1],
            );
            assert_eq!(inserted, index);
        }
        assert_eq!(table.len(), count);
        assert_eq!(table.get(CHUNK).id, u128::from(CHUNK) + 1);
        assert_eq!(
            table.partition_point(|t| t.timestamp < 10 * CHUNK + 5),
            CHUNK
        );
        assert_eq!(table.partition_point(|t| t.timestamp < u64::MAX), count);
        assert!(table.has_timestamp(10 * (CHUNK + 1)));
        assert!(!table.has_timestamp(10 * CHUNK + 5));
        let tail: usize = table.chunks_from(CHUNK - 1).map(<[Transfer]>::len).sum();
        assert_eq!(tail as u64, count - CHUNK + 1);
        // Roll back across a chunk boundary and grow again.
        for id in (u128::from(CHUNK) * 2 - 2..=u128::from(count)).rev() {
            table.remove_last(id);
        }
        assert_eq!(table.len(), CHUNK * 2 - 3);
        assert_eq!(table.timestamp_last(), 10 * (CHUNK * 2 - 3));
        let transfer = Transfer {
            id: 999_999,
            timestamp: u64::MAX - 1,
            ..Transfer::default()
        };
        assert_eq!(
            put(&mut table, transfer, PendingStatus::Pending, [0, 1]),
            CHUNK * 2 - 3
        );
        let slot = table.slot(999_999).expect("inserted");
        assert_eq!(table.get(slot).timestamp, u64::MAX - 1);
    }

    /// The account slots of transfer `index`: a spread over 7 accounts, never the same
    /// account twice.
    fn parties_of(index: u64) -> [Slot; 2] {
        let debit = (index * 5 % 7) as Slot;
        [debit, (debit + 1 + (index % 3) as Slot) % 7]
    }

    /// What `of_account` must return: the transfers whose parties include the account.
    fn expected_of(table: &TransferTable, account: Slot) -> Vec<u128> {
        (table.base..table.len())
            .filter(|slot| parties_of(*slot).contains(&account))
            .map(|slot| table.get(slot).id)
            .collect()
    }

    fn check_accounts(table: &TransferTable) {
        for account in 0..7 {
            let forward: Vec<u128> = table.of_account(account).map(|t| t.id).collect();
            let mut backward: Vec<u128> = table.of_account(account).rev().map(|t| t.id).collect();
            backward.reverse();
            let expected = expected_of(table, account);
            assert_eq!(forward, expected, "account {account}");
            assert_eq!(backward, expected, "account {account}, reversed");
        }
    }

    fn put_range(table: &mut TransferTable, indexes: std::ops::Range<u64>) {
        for index in indexes {
            put(
                table,
                numbered(index),
                PendingStatus::NotPending,
                parties_of(index),
            );
        }
    }

    fn indexed(table: &TransferTable) -> Vec<bool> {
        let chunks = table.chunks.iter();
        chunks
            .map(|chunk| chunk.by_account.get().is_some())
            .collect()
    }

    #[test]
    fn account_runs_match_a_scan_in_full_and_open_chunks() {
        let mut table = TransferTable::default();
        put_range(&mut table, 0..CHUNK * 2 + 10);
        assert_eq!(indexed(&table), [false; 3], "indexed only when asked");
        check_accounts(&table);
        assert_eq!(
            indexed(&table),
            [true, true, false],
            "the open chunk is scanned"
        );
        // A rollback across the boundary drops the full chunk's index; asking again
        // builds it again.
        for index in (CHUNK * 2 - 5..CHUNK * 2 + 10).rev() {
            table.remove_last(u128::from(index) + 1);
        }
        assert_eq!(indexed(&table), [true, false]);
        check_accounts(&table);
        put_range(&mut table, CHUNK * 2 - 5..CHUNK * 2 + 1);
        check_accounts(&table);
        assert_eq!(indexed(&table), [true, true, false]);
    }

    #[test]
    fn a_rollback_that_stops_at_a_chunk_boundary_keeps_the_full_chunk_indexed() {
        let mut table = TransferTable::default();
        put_range(&mut table, 0..CHUNK + 1);
        check_accounts(&table);
        // Rolling back the first transfer of the new chunk pops that chunk and leaves the
        // full one's index, which is still right.
        table.remove_last(u128::from(CHUNK) + 1);
        assert_eq!(indexed(&table), [true]);
        check_accounts(&table);
        put_range(&mut table, CHUNK..CHUNK + 3);
        check_accounts(&table);
        // A rollback into the full chunk drops its index.
        for index in (CHUNK - 2..CHUNK + 3).rev() {
            table.remove_last(u128::from(index) + 1);
        }
        assert_eq!(indexed(&table), [false]);
        check_accounts(&table);
    }

    #[test]
    fn a_chunk_filled_in_recycled_memory_is_indexed_afresh() {
        let mut table = TransferTable::default();
        put_range(&mut table, 0..CHUNK * 2 + 1);
        check_accounts(&table);
        let checkpointed = table.len();
        let (first, records) = table
            .evict_chunk(checkpointed, 0, &table.uncheckpointed())
            .expect("the oldest chunk is evicted");
        assert_eq!(first, 0);
        table.recycle(records);
        // Chunk 2 fills in the evicted chunk's memory, and its index is its own.
        put_range(&mut table, CHUNK * 2 + 1..CHUNK * 3 + 1);
        check_accounts(&table);
        assert_eq!(indexed(&table), [true, true, false]);
        // A clone answers alike and is independent: a rollback in it leaves the original.
        let mut clone = table.clone();
        for index in (CHUNK * 3 - 2..CHUNK * 3 + 1).rev() {
            clone.remove_last(u128::from(index) + 1);
        }
        check_accounts(&clone);
        check_accounts(&table);
        assert_eq!(indexed(&table), [true, true, false]);
    }

    #[test]
    fn radix_sort_by_account_is_a_stable_sort() {
        let mut seed = 7u64;
        for accounts in [1u64, 200, 70_000, 1 << 31] {
            let mut keys: Vec<u64> = (0..5000u64)
                .map(|offset| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) % accounts) << 32 | offset
                })
                .collect();
            let mut expected = keys.clone();
            expected.sort_by_key(|key| key >> 32);
            sort_by_account(&mut keys);
            assert_eq!(keys, expected, "{accounts} accounts");
        }
    }

    #[test]
    fn eviction_keeps_what_may_change_until_the_store_has_it() {
        let mut table = TransferTable::default();
        let count = CHUNK * 3 + 1;
        for index in 0..count {
            let status = if index == 5 || index == 6 {
                PendingStatus::Pending
            } else {
                PendingStatus::NotPending
            };
            put(&mut table, numbered(index), status, [0, 1]);
        }
        assert_eq!(table.pending_len(), 2);
        // Slot 6 is posted after the checkpoint holding the first chunk was taken.
        table.resolve(6, PendingStatus::Posted);
        assert_eq!(table.pending_len(), 1);
        let checkpointed = CHUNK;
        // The newest chunk and `keep_recent` transfers stay; uncheckpointed chunks stay.
        assert!(table
            .evict_chunk(checkpointed, 3 * CHUNK, &table.uncheckpointed())
            .is_none());
        assert!(table
            .evict_chunk(checkpointed - 1, 0, &table.uncheckpointed())
            .is_none());
        let generation = table.eviction_generation();
        let (first, evicted) = table
            .evict_chunk(checkpointed, 0, &table.uncheckpointed())
            .expect("first chunk checkpointed");
        assert_eq!((first, evicted.len() as u64), (0, CHUNK));
        assert!(
            table
                .evict_chunk(checkpointed, 0, &table.uncheckpointed())
                .is_none(),
            "second chunk is not checkpointed"
        );
        assert_eq!(table.evicted_through(), 10 * CHUNK);
        assert!(table.eviction_generation() > generation);
        // Kept: the pending transfer and the one whose post no checkpoint holds yet.
        assert_eq!(table.resident_len(), count - CHUNK + 2);
        assert_eq!(table.slot(8), None, "checkpointed, not pending: gone");
        assert_eq!(table.slot(7), Some(6));
        assert_eq!(table.status(5), PendingStatus::Pending);
        assert_eq!(table.status(6), PendingStatus::Posted);
        // Once a checkpoint holds the post (the first resolution), it leaves too.
        table.release_checkpointed(0);
        assert_eq!(table.slot(7), Some(6));
        let generation = table.eviction_generation();
        table.release_checkpointed(1);
        assert!(table.eviction_generation() > generation);
        assert_eq!(table.slot(7), None);
        assert_eq!(table.slot(6), Some(5));
        assert_eq!(table.resident_len(), count - CHUNK + 1);
    }
}
