//! The id index of the account and transfer tables: from a 128-bit id to the slot of its
//! record.
//!
//! Every transfer the ledger creates goes through this index twice (is the id new? then
//! insert it), and the index is far larger than the CPU caches, so each visit is a cache
//! miss. Two choices make those misses cheap:
//! - A bucket is 16 bytes: the id's 64-bit hash and the slot, four to a cache line. The
//!   id itself lives only in the record, so a hit is confirmed by reading the record,
//!   which the caller needs next anyway; a miss almost never reads a record (the 64-bit
//!   hashes would have to collide).
//! - Linear probing: an id's bucket is its home or just after it, so
//!   [`IdIndex::prefetch_tagged`] can ask the memory system for that cache line while the
//!   ledger is still working on earlier events of the batch.
//!
//! Deletion shifts later buckets back instead of leaving tombstones, so lookups never
//! slow down as transfers are evicted. The hash is seeded per process: the ledger never
//! iterates the index, so the seed cannot reach a result, and clients cannot choose ids
//! that collide.

use std::hash::BuildHasher;

use bytemuck::{Pod, Zeroable};

use super::memory::HugeVec;

/// A slot with the hash of its id; `tag == 0` marks an empty bucket.
#[derive(Clone, Copy, Default, Pod, Zeroable)]
#[repr(C)]
struct Bucket {
    tag: u64,
    value: u64,
}

/// The index keeps at least half its buckets empty: a lookup of an absent id then reads
/// 2.5 buckets on average, usually within one cache line.
const LOAD_NUMERATOR: usize = 1;
const LOAD_DENOMINATOR: usize = 2;
/// One 4 KiB page.
const CAPACITY_MIN: usize = 256;

#[derive(Clone)]
pub(crate) struct IdIndex {
    /// A power of two long, or empty until the first insert.
    buckets: HugeVec<Bucket>,
    /// `64 - log2(buckets.len())`: a tag's home bucket is its top bits.
    shift: u32,
    len: usize,
    hasher: foldhash::fast::FixedState,
}

impl Default for IdIndex {
    fn default() -> Self {
        let seed = foldhash::fast::RandomState::default().hash_one(0u64);
        IdIndex {
            buckets: HugeVec::new(),
            shift: 64,
            len: 0,
            hasher: foldhash::fast::FixedState::with_seed(seed),
        }
    }
}

impl IdIndex {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The hash of `id` that the index files it under: computed once per event by the
    /// ledger's lookahead and passed to the `*_tagged` methods.
    #[inline]
    pub fn tag(&self, id: u128) -> u64 {
        // Never 0, the empty mark; the low bit is not used for the home bucket.
        self.hasher.hash_one(id) | 1
    }

    /// The slot of `id`, filed under `tag == self.tag(id)`. `id_of` reads the id of the
    /// record in a slot: the index holds only hashes, and a candidate counts only if its
    /// record has this id.
    #[inline]
    pub fn get_tagged(&self, id: u128, tag: u64, id_of: impl Fn(u64) -> u128) -> Option<u64> {
        debug_assert_eq!(tag, self.tag(id));
        self.probe(tag, |bucket| bucket.tag == tag && id_of(bucket.value) == id)
            .map(|position| self.buckets()[position].value)
    }

    /// The first slot filed under `tag`, without reading the record: a guess, good for
    /// prefetching the record, not for deciding anything.
    #[inline]
    pub fn guess_tagged(&self, tag: u64) -> Option<u64> {
        self.probe(tag, |bucket| bucket.tag == tag)
            .map(|position| self.buckets()[position].value)
    }

    /// Ask the memory system for the cache line where ids filed under `tag` live or would
    /// be inserted.
    #[inline]
    pub fn prefetch_tagged(&self, tag: u64) {
        let buckets = self.buckets();
        if !buckets.is_empty() {
            prefetch(&buckets[self.home(tag)]);
        }
    }

    /// Add an id the index does not hold (the caller looked it up first), filed under
    /// `tag == self.tag(id)`.
    #[inline]
    pub fn insert_tagged(&mut self, id: u128, tag: u64, value: u64) {
        debug_assert_eq!(tag, self.tag(id));
        if (self.len + 1) * LOAD_DENOMINATOR > self.capacity() * LOAD_NUMERATOR {
            self.grow();
        }
        self.place(Bucket { tag, value });
        self.len += 1;
    }

    /// Remove the entry of `id`, known to be at `value`. Returns whether it was there.
    pub fn remove(&mut self, id: u128, value: u64) -> bool {
        self.remove_tagged(self.tag(id), value)
    }

    /// [`IdIndex::remove`] with the id's tag already known.
    pub fn remove_tagged(&mut self, tag: u64, value: u64) -> bool {
        let Some(position) = self.probe(tag, |bucket| bucket.tag == tag && bucket.value == value)
        else {
            return false;
        };
        self.shift_back(position);
        self.len -= 1;
        true
    }

    fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    fn capacity(&self) -> usize {
        self.buckets().len()
    }

    /// The position of the first bucket of `tag`'s probe run that `matches`, if any
    /// before the run ends at an empty bucket.
    #[inline]
    fn probe(&self, tag: u64, matches: impl Fn(&Bucket) -> bool) -> Option<usize> {
        let buckets = self.buckets();
        if self.len == 0 {
            return None;
        }
        let mask = buckets.len() - 1;
        let mut position = self.home(tag);
        loop {
            let bucket = &buckets[position];
            if bucket.tag == 0 {
                return None;
            }
            if matches(bucket) {
                return Some(position);
            }
            position = (position + 1) & mask;
        }
    }

    /// Empty the bucket at `hole` and move later buckets of the same probe run back into
    /// it, so that every id stays reachable from its home without tombstones.
    fn shift_back(&mut self, mut hole: usize) {
        let shift = self.shift;
        let buckets = &mut self.buckets[..];
        let mask = buckets.len() - 1;
        let mut position = (hole + 1) & mask;
        loop {
            let bucket = buckets[position];
            if bucket.tag == 0 {
                break;
            }
            // The bucket may fill the hole unless its home lies cyclically in
            // (hole, position]: then the hole is before its home.
            let home = (bucket.tag >> shift) as usize;
            let home_distance = home.wrapping_sub(hole) & mask;
            if home_distance == 0 || home_distance > (position.wrapping_sub(hole) & mask) {
                buckets[hole] = bucket;
                hole = position;
            }
            position = (position + 1) & mask;
        }
        buckets[hole] = Bucket::default();
    }

    fn place(&mut self, bucket: Bucket) {
        let mut position = self.home(bucket.tag);
        let buckets = &mut self.buckets[..];
        let mask = buckets.len() - 1;
        while buckets[position].tag != 0 {
            position = (position + 1) & mask;
        }
        buckets[position] = bucket;
    }

    #[cold]
    fn grow(&mut self) {
        self.rebuild((self.capacity() * 2).max(CAPACITY_MIN));
    }

    fn rebuild(&mut self, capacity: usize) {
        debug_assert!(capacity.is_power_of_two());
        let old = std::mem::replace(&mut self.buckets, HugeVec::zeroed(capacity));
        self.shift = 64 - capacity.trailing_zeros();
        for bucket in old.iter().filter(|bucket| bucket.tag != 0) {
            self.place(*bucket);
        }
    }

    #[inline]
    fn home(&self, tag: u64) -> usize {
        // `shift` is 64 only while there are no buckets, and callers check that first.
        (tag >> self.shift) as usize
    }
}

/// A hint to load the cache line holding `value`; never faults, even if it were stale.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    prefetch_address((value as *const T).cast());
}

/// A hint to load the cache line at `address` into all cache levels (`prefetcht0`).
/// Also used for lines about to be written: a write-intent prefetch (`prefetchw`) would
/// need the `prfchw` target feature, which the build does not assume.
#[inline(always)]
pub(crate) fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing the program can observe and cannot
    // fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Records are `ids[slot]`, as in the tables.
    fn get(index: &IdIndex, ids: &[u128], id: u128) -> Option<u64> {
        index.get_tagged(id, index.tag(id), |slot| ids[slot as usize])
    }

    #[test]
    fn finds_what_was_inserted_across_growth() {
        let mut index = IdIndex::default();
        let ids: Vec<u128> = (1..=10_000u128).map(|n| n * 7919).collect();
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(get(&index, &ids, *id), None);
            index.insert_tagged(*id, index.tag(*id), slot as u64);
        }
        assert_eq!(index.len(), ids.len());
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(get(&index, &ids, *id), Some(slot as u64));
            assert_eq!(index.guess_tagged(index.tag(*id)), Some(slot as u64));
        }
        assert_eq!(get(&index, &ids, 1), None);
    }

    proptest! {
        /// Random inserts and removes, with ids from a small range so that probe runs
        /// collide and wrap around: the index agrees with a `HashMap` throughout.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((any::<bool>(), 1u128..300), 1..2_000)) {
            let mut index = IdIndex::default();
            let mut ids: Vec<u128> = Vec::new();
            let mut model: HashMap<u128, u64> = HashMap::new();
            for (insert, id) in ops {
                if insert {
                    if let std::collections::hash_map::Entry::Vacant(entry) = model.entry(id) {
                        let slot = ids.len() as u64;
                        ids.push(id);
                        index.insert_tagged(id, index.tag(id), slot);
                        entry.insert(slot);
                    }
                } else if let Some(slot) = model.remove(&id) {
                    prop_assert!(index.remove(id, slot));
                    prop_assert!(!index.remove(id, slot));
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for id in 1u128..300 {
                prop_assert_eq!(get(&index, &ids, id), model.get(&id).copied());
            }
        }
    }
}
