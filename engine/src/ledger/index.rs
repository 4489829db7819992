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
//!
//! Growth is incremental. A full index doubles into a fresh table and keeps the old one
//! beside it, draining it a few probe runs per insert, whole runs at a time, so that an
//! entry is always in exactly one of the two and every run left in the old table is as
//! it was. Rebuilding in one go stalled the single writer for as long as a pass over the
//! whole index takes: 154 ms at 4 M buckets (a million resident transfers) on the
//! development machine, and seconds at the sizes of hundreds of millions of accounts.
//! While a table drains, a lookup may read both tables.

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
/// Buckets of the old table an insert drains, at least (whole runs, so a little more).
/// A table grows at half full into one twice its size, which is full again after as
/// many inserts as the old table had buckets; draining 16 per insert empties the old
/// table after a sixteenth of them, long before.
const DRAIN_BUCKETS_PER_INSERT: usize = 16;

#[derive(Clone)]
pub(crate) struct IdIndex {
    /// The table inserts go to: a power of two long, or empty until the first insert.
    buckets: HugeVec<Bucket>,
    /// `64 - log2(buckets.len())`: a tag's home bucket is its top bits.
    shift: u32,
    /// Entries in both tables.
    len: usize,
    hasher: foldhash::fast::FixedState,
    /// The table before the last growth, while entries are left in it. Boxed: the
    /// index's own fields stay within one cache line for the lookups of every event.
    draining: Option<Box<Draining>>,
    /// Buckets drained per insert: [`DRAIN_BUCKETS_PER_INSERT`]; tests vary it.
    drain_per_insert: usize,
}

/// The previous table of a growing index. Its runs move to the new table whole, in
/// order from an empty bucket on: every bucket from there to `cursor` is empty, every
/// run after `cursor` is untouched (removals may split one; nothing is inserted here).
#[derive(Clone)]
struct Draining {
    buckets: HugeVec<Bucket>,
    shift: u32,
    /// Entries still here.
    len: usize,
    /// An empty bucket; the next run to move starts after it.
    cursor: usize,
}

impl Default for IdIndex {
    fn default() -> Self {
        let seed = foldhash::fast::RandomState::default().hash_one(0u64);
        IdIndex {
            buckets: HugeVec::new(),
            shift: 64,
            len: 0,
            hasher: foldhash::fast::FixedState::with_seed(seed),
            draining: None,
            drain_per_insert: DRAIN_BUCKETS_PER_INSERT,
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
        self.find(tag, |bucket| bucket.tag == tag && id_of(bucket.value) == id)
    }

    /// The first slot filed under `tag`, without reading the record: a guess, good for
    /// prefetching the record, not for deciding anything.
    #[inline]
    pub fn guess_tagged(&self, tag: u64) -> Option<u64> {
        self.find(tag, |bucket| bucket.tag == tag)
    }

    /// Ask the memory system for the cache line where ids filed under `tag` live or would
    /// be inserted (in both tables while one drains).
    #[inline]
    pub fn prefetch_tagged(&self, tag: u64) {
        if !self.buckets.is_empty() {
            prefetch(&self.buckets[home(tag, self.shift)]);
        }
        if let Some(old) = &self.draining {
            prefetch(&old.buckets[home(tag, old.shift)]);
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
        place(&mut self.buckets, self.shift, Bucket { tag, value });
        self.len += 1;
        if self.draining.is_some() {
            self.drain(self.drain_per_insert);
        }
    }

    /// Remove the entry of `id`, known to be at `value`. Returns whether it was there.
    pub fn remove(&mut self, id: u128, value: u64) -> bool {
        self.remove_tagged(self.tag(id), value)
    }

    /// [`IdIndex::remove`] with the id's tag already known.
    pub fn remove_tagged(&mut self, tag: u64, value: u64) -> bool {
        let matches = |bucket: &Bucket| bucket.tag == tag && bucket.value == value;
        if let Some(old) = &mut self.draining {
            if let Some(position) = probe(&old.buckets, old.shift, tag, matches) {
                shift_back(&mut old.buckets, old.shift, position);
                old.len -= 1;
                self.len -= 1;
                if old.len == 0 {
                    self.draining = None;
                }
                return true;
            }
        }
        let Some(position) = probe(&self.buckets, self.shift, tag, matches) else {
            return false;
        };
        shift_back(&mut self.buckets, self.shift, position);
        self.len -= 1;
        true
    }

    fn capacity(&self) -> usize {
        self.buckets.len()
    }

    /// The value of the first bucket of `tag`'s run that `matches`, in whichever table
    /// holds it: an entry is in exactly one.
    #[inline]
    fn find(&self, tag: u64, matches: impl Fn(&Bucket) -> bool) -> Option<u64> {
        if self.draining.is_some() {
            return self.find_while_draining(tag, matches);
        }
        probe(&self.buckets, self.shift, tag, &matches).map(|position| self.buckets[position].value)
    }

    /// [`IdIndex::find`] in both tables: off the common path, which has one.
    #[cold]
    #[inline(never)]
    fn find_while_draining(&self, tag: u64, matches: impl Fn(&Bucket) -> bool) -> Option<u64> {
        if let Some(old) = &self.draining {
            if let Some(position) = probe(&old.buckets, old.shift, tag, &matches) {
                return Some(old.buckets[position].value);
            }
        }
        probe(&self.buckets, self.shift, tag, &matches).map(|position| self.buckets[position].value)
    }

    /// Double into a fresh table; the current one drains into it over the next inserts.
    #[cold]
    fn grow(&mut self) {
        // At DRAIN_BUCKETS_PER_INSERT the previous growth is long done (see there); this
        // only guards the invariant that at most one table drains.
        if self.draining.is_some() {
            self.drain(usize::MAX);
        }
        debug_assert!(self.draining.is_none());
        let capacity = (self.capacity() * 2).max(CAPACITY_MIN);
        debug_assert!(capacity.is_power_of_two());
        let old = std::mem::replace(&mut self.buckets, HugeVec::zeroed(capacity));
        let old_shift = std::mem::replace(&mut self.shift, 64 - capacity.trailing_zeros());
        if self.len == 0 {
            return;
        }
        // At most half full, so there is an empty bucket to start from.
        let cursor = old
            .iter()
            .position(|bucket| bucket.tag == 0)
            .expect("a table at most half full has an empty bucket");
        self.draining = Some(Box::new(Draining {
            buckets: old,
            shift: old_shift,
            len: self.len,
            cursor,
        }));
    }

    /// Move whole runs from the draining table to the current one until at least
    /// `buckets_min` buckets were passed or it is empty; drop it when empty.
    fn drain(&mut self, buckets_min: usize) {
        let Some(old) = &mut self.draining else {
            return;
        };
        let mask = old.buckets.len() - 1;
        let mut passed = 0usize;
        while old.len > 0 && passed < buckets_min {
            debug_assert_eq!(
                old.buckets[old.cursor].tag, 0,
                "the cursor is on an empty bucket"
            );
            let mut position = (old.cursor + 1) & mask;
            while old.buckets[position].tag != 0 {
                let bucket = std::mem::take(&mut old.buckets[position]);
                place(&mut self.buckets, self.shift, bucket);
                old.len -= 1;
                position = (position + 1) & mask;
                passed += 1;
            }
            old.cursor = position;
            passed += 1;
        }
        if old.len == 0 {
            self.draining = None;
        }
    }

    /// Expensive check (tests): both tables' entries add up to `len`, every entry is
    /// found from its home, and the draining table is empty up to its cursor's run.
    #[cfg(test)]
    fn check(&self) {
        let entries = |buckets: &[Bucket]| buckets.iter().filter(|b| b.tag != 0).count();
        let old_len = self.draining.as_ref().map_or(0, |old| {
            assert_eq!(entries(&old.buckets), old.len);
            assert_eq!(old.buckets[old.cursor].tag, 0);
            old.len
        });
        assert_eq!(entries(&self.buckets) + old_len, self.len);
        let tables = std::iter::once((&self.buckets[..], self.shift)).chain(
            self.draining
                .iter()
                .map(|old| (&old.buckets[..], old.shift)),
        );
        for (buckets, shift) in tables {
            for bucket in buckets.iter().filter(|b| b.tag != 0) {
                let found = probe(buckets, shift, bucket.tag, |b| b.value == bucket.value);
                assert!(found.is_some(), "an entry unreachable from its home");
            }
        }
    }
}

/// `tag`'s home bucket in a table whose `shift` is `64 - log2(len)`.
#[inline]
fn home(tag: u64, shift: u32) -> usize {
    (tag >> shift) as usize
}

/// The position of the first bucket of `tag`'s probe run that `matches`, if any before
/// the run ends at an empty bucket.
#[inline]
fn probe(
    buckets: &[Bucket],
    shift: u32,
    tag: u64,
    matches: impl Fn(&Bucket) -> bool,
) -> Option<usize> {
    // `shift` is 64 only while there are no buckets.
    if buckets.is_empty() {
        return None;
    }
    let mask = buckets.len() - 1;
    let mut position = home(tag, shift);
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

/// Empty the bucket at `hole` and move later buckets of the same probe run back into it,
/// so that every id stays reachable from its home without tombstones.
fn shift_back(buckets: &mut [Bucket], shift: u32, mut hole: usize) {
    let mask = buckets.len() - 1;
    let mut position = (hole + 1) & mask;
    loop {
        let bucket = buckets[position];
        if bucket.tag == 0 {
            break;
        }
        // The bucket may fill the hole unless its home lies cyclically in
        // (hole, position]: then the hole is before its home.
        let home_distance = home(bucket.tag, shift).wrapping_sub(hole) & mask;
        if home_distance == 0 || home_distance > (position.wrapping_sub(hole) & mask) {
            buckets[hole] = bucket;
            hole = position;
        }
        position = (position + 1) & mask;
    }
    buckets[hole] = Bucket::default();
}

/// Put `bucket` in the first empty bucket from its home on (the table has one).
fn place(buckets: &mut [Bucket], shift: u32, bucket: Bucket) {
    let mask = buckets.len() - 1;
    let mut position = home(bucket.tag, shift);
    while buckets[position].tag != 0 {
        position = (position + 1) & mask;
    }
    buckets[position] = bucket;
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

    fn draining_len(index: &IdIndex) -> usize {
        index.draining.as_ref().map_or(0, |old| old.len)
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
        index.check();
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(get(&index, &ids, *id), Some(slot as u64));
            assert_eq!(index.guess_tagged(index.tag(*id)), Some(slot as u64));
        }
        assert_eq!(get(&index, &ids, 1), None);
    }

    /// No insert pays for a whole rebuild: each moves a few runs of the old table, and
    /// the old table is empty before the new one is full (no growth has to finish the
    /// previous one at once).
    #[test]
    fn growth_moves_a_few_runs_per_insert() {
        let mut index = IdIndex::default();
        let count = 200_000u64;
        let mut growths = 0;
        let mut moved_max = 0;
        for slot in 0..count {
            let id = u128::from(slot) * 0x9E37_79B9_7F4A_7C15 + 1;
            let capacity = index.capacity();
            let draining = index.draining.is_some();
            let before = draining_len(&index);
            index.insert_tagged(id, index.tag(id), slot);
            if index.capacity() != capacity {
                growths += 1;
                assert!(!draining, "grew while the previous table still drained");
                // The growing insert drained a little of what it moved aside.
                if capacity > 0 {
                    let moved_aside = index.len() - 1;
                    assert!(draining_len(&index) > 0);
                    assert!(moved_aside - draining_len(&index) <= 64);
                }
            } else if draining {
                moved_max = moved_max.max(before - draining_len(&index));
            }
        }
        assert_eq!(
            growths, 12,
            "the first 256 buckets, doubled up to 2^19 for 200 k entries"
        );
        assert!(moved_max >= 1, "the old tables drained");
        assert!(
            moved_max <= 64,
            "an insert moved {moved_max} entries: the whole table moves in one go again"
        );
        index.check();
        for slot in (0..count).step_by(997) {
            let id = u128::from(slot) * 0x9E37_79B9_7F4A_7C15 + 1;
            assert_eq!(index.guess_tagged(index.tag(id)), Some(slot));
        }
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
            index.check();
            for id in 1u128..300 {
                prop_assert_eq!(get(&index, &ids, id), model.get(&id).copied());
            }
        }

        /// The same while tables drain: slow draining (down to none during inserts, so
        /// that a growth finds the previous table not yet empty and finishes it) and
        /// removals that hit both tables. Every id the model holds is found, and no other, at every
        /// step.
        #[test]
        fn agrees_with_a_map_while_draining(
            drain_per_insert in 0usize..=16,
            ops in proptest::collection::vec((0u8..3, 1u128..3_000), 1..3_000),
        ) {
            let mut index = IdIndex { drain_per_insert, ..IdIndex::default() };
            let mut ids: Vec<u128> = Vec::new();
            let mut model: HashMap<u128, u64> = HashMap::new();
            let mut removed_while_draining = 0;
            for (step, (op, id)) in ops.into_iter().enumerate() {
                if op < 2 {
                    if let std::collections::hash_map::Entry::Vacant(entry) = model.entry(id) {
                        prop_assert_eq!(get(&index, &ids, id), None);
                        let slot = ids.len() as u64;
                        ids.push(id);
                        index.insert_tagged(id, index.tag(id), slot);
                        entry.insert(slot);
                    }
                } else if let Some(slot) = model.remove(&id) {
                    removed_while_draining += usize::from(index.draining.is_some());
                    prop_assert!(index.remove(id, slot));
                    prop_assert!(!index.remove(id, slot));
                    prop_assert_eq!(get(&index, &ids, id), None);
                }
                prop_assert_eq!(index.len(), model.len());
                if step % 64 == 0 {
                    index.check();
                    for (id, slot) in &model {
                        prop_assert_eq!(get(&index, &ids, *id), Some(*slot));
                    }
                }
            }
            index.check();
            for id in 1u128..3_000 {
                prop_assert_eq!(get(&index, &ids, id), model.get(&id).copied());
            }
            let _ = removed_while_draining;
        }
    }
}
