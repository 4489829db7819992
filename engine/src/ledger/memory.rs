//! Memory for the ledger's large arrays: account records, transfer chunks and the id
//! indexes.
//!
//! They are mapped straight from the kernel and marked for transparent huge pages
//! (`madvise(MADV_HUGEPAGE)`; most systems, this one included, enable THP only where asked).
//! Two costs shrink by a factor of 512 that way:
//! - Page faults. Every new 4 KiB page costs a fault, a memory-cgroup charge and a
//!   clear; a growing ledger writes 128 bytes per transfer, so that is one fault per 32
//!   transfers. A 2 MiB page costs one fault per 16384.
//! - TLB misses. Records and index buckets are reached at random; with 4 KiB pages
//!   nearly every such access also misses the TLB and walks the page table (twice over
//!   inside a virtual machine). 2 MiB pages let the TLB cover gigabytes.
//!
//! Huge pages are a hint: where the kernel has none to give, the arrays are the same,
//! only slower.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use bytemuck::Pod;
use memmap2::MmapMut;

/// The smallest mapping: one 4 KiB page.
const MAPPING_BYTES_MIN: usize = 4096;

/// A `Vec` of plain-old-data records in its own anonymous mapping. On Linux growing it
/// moves the mapping's pages to a larger region (`mremap`) instead of copying them: the
/// single writer does not stop to copy a table that holds millions of accounts (2.4 s
/// at 8 M accounts, a gigabyte, when it did). Elsewhere, or if the move fails, it maps
/// a larger region and copies, as `Vec` reallocates.
///
/// The records are reached through a pointer kept beside the mapping, not through the
/// mapping's own accessors: every record access of the ledger's hot path goes through
/// `Deref`, and the accessors' checks cost as much as the access.
pub(crate) struct HugeVec<T: Pod> {
    /// Owns the memory (unmapped on drop); `None` while nothing was ever pushed.
    mapping: Option<MmapMut>,
    /// The start of the mapping (dangling while there is none), `capacity` records long.
    records: NonNull<T>,
    capacity: usize,
    len: usize,
}

// SAFETY: a `HugeVec` owns its mapping alone, as a `Vec` owns its buffer, and `records`
// only points into that mapping: it is `Send` when its records are, as a `Vec` is.
unsafe impl<T: Pod + Send> Send for HugeVec<T> {}
// SAFETY: as for `Send`; shared access only reads.
unsafe impl<T: Pod + Sync> Sync for HugeVec<T> {}

impl<T: Pod> HugeVec<T> {
    pub fn new() -> Self {
        HugeVec {
            mapping: None,
            records: NonNull::dangling(),
            capacity: 0,
            len: 0,
        }
    }

    /// Empty, with room for `capacity` records before it has to grow.
    pub fn with_capacity(capacity: usize) -> Self {
        const { assert!(size_of::<T>() != 0, "no zero-sized records") };
        let bytes = capacity
            .checked_mul(size_of::<T>())
            .unwrap_or_else(|| panic!("{capacity} records overflow the address space"));
        let mut map = map_zeroed(bytes);
        // Page-aligned, so aligned for any `T`.
        assert!(map.as_ptr().cast::<T>().is_aligned());
        HugeVec {
            records: NonNull::new(map.as_mut_ptr().cast::<T>()).expect("a mapping is never null"),
            capacity: map.len() / size_of::<T>(),
            mapping: Some(map),
            len: 0,
        }
    }

    /// `len` all-zero records (for tables whose empty slots are zero).
    pub fn zeroed(len: usize) -> Self {
        let mut records = Self::with_capacity(len);
        assert!(len <= records.capacity);
        records.len = len;
        records
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline]
    pub fn push(&mut self, record: T) {
        if self.len == self.capacity {
            self.grow();
        }
        // SAFETY: `len < capacity`, so the slot lies inside the mapping.
        unsafe { self.records.add(self.len).write(record) };
        self.len += 1;
    }

    pub fn pop(&mut self) -> Option<T> {
        let last = *self.last()?;
        self.len -= 1;
        Some(last)
    }

    /// Ask the memory system for the cache lines of record `index`, to be written soon:
    /// a push that finds its line missing stalls every later store behind it.
    /// `index` may be past the end (that is the point) but within the capacity.
    #[inline]
    pub fn prefetch_spare(&self, index: usize) {
        prefetch_element(self.records.as_ptr(), self.capacity, index);
    }

    /// Forget the records, keeping the memory (already faulted in) for new ones.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    #[cold]
    fn grow(&mut self) {
        let bytes_min = MAPPING_BYTES_MIN.max(size_of::<T>());
        let capacity = (self.capacity() * 2).max(bytes_min.div_ceil(size_of::<T>()));
        #[cfg(target_os = "linux")]
        if self.remap(capacity) {
            return;
        }
        let mut grown = Self::with_capacity(capacity);
        grown.len = self.len;
        grown.deref_mut().copy_from_slice(self);
        *self = grown;
    }
}

#[cfg(target_os = "linux")]
impl<T: Pod> HugeVec<T> {
    /// Grow the mapping in place or move it whole to room for `capacity` records, its
    /// records with it. Returns false (nothing changed) when there is no mapping yet or
    /// the kernel refuses.
    fn remap(&mut self, capacity: usize) -> bool {
        let Some(mapping) = self.mapping.as_mut() else {
            return false;
        };
        let Some(bytes) = capacity.checked_mul(size_of::<T>()) else {
            return false;
        };
        let len_before = self.len;
        // SAFETY: `&mut self` means no reference into the records is alive, and the
        // records pointer is taken again from the mapping below, wherever it moved.
        let moved = unsafe { mapping.remap(bytes, memmap2::RemapOptions::new().may_move(true)) };
        if moved.is_err() {
            return false;
        }
        // The new tail is fresh memory: the same hint as at creation.
        let _ = mapping.advise(memmap2::Advice::HugePage);
        assert!(mapping.as_ptr().cast::<T>().is_aligned());
        self.records =
            NonNull::new(mapping.as_mut_ptr().cast::<T>()).expect("a mapping is never null");
        self.capacity = mapping.len() / size_of::<T>();
        assert!(self.capacity >= capacity && self.len == len_before);
        true
    }
}

impl<T: Pod> Default for HugeVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Pod> Deref for HugeVec<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len <= capacity` records of the mapping (or none, at a
        // dangling aligned pointer); their bytes are initialised (the mapping starts
        // zero-filled, pushes write whole records) and any bits are a valid `T: Pod`.
        // The borrow of `self` keeps the mapping alive and unchanged.
        unsafe { std::slice::from_raw_parts(self.records.as_ptr(), self.len) }
    }
}

impl<T: Pod> DerefMut for HugeVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as for `deref`; the mutable borrow of `self` makes it the only one.
        unsafe { std::slice::from_raw_parts_mut(self.records.as_ptr(), self.len) }
    }
}

impl<T: Pod> Clone for HugeVec<T> {
    fn clone(&self) -> Self {
        let mut copy = match self.capacity() {
            0 => Self::new(),
            capacity => Self::with_capacity(capacity),
        };
        copy.len = self.len;
        copy.deref_mut().copy_from_slice(self);
        copy
    }
}

/// Ask the memory system for the cache line of `vec`'s element `index`, past its end
/// but within its capacity, to be written soon (see [`HugeVec::prefetch_spare`]).
#[inline]
pub(crate) fn prefetch_spare<T>(vec: &Vec<T>, index: usize) {
    prefetch_element(vec.as_ptr(), vec.capacity(), index);
}

/// Prefetch every cache line of element `index` of the `capacity` elements at `start`;
/// nothing if `index` is out of that range.
#[inline]
fn prefetch_element<T>(start: *const T, capacity: usize, index: usize) {
    if index < capacity {
        let element = start.wrapping_add(index).cast::<u8>();
        let mut line = 0;
        while line < size_of::<T>() {
            super::index::prefetch_address(element.wrapping_add(line));
            line += 64;
        }
    }
}

/// A zero-filled anonymous mapping of at least `bytes`, advised to use huge pages.
fn map_zeroed(bytes: usize) -> MmapMut {
    let bytes = bytes.max(MAPPING_BYTES_MIN);
    let map = MmapMut::map_anon(bytes)
        .unwrap_or_else(|error| panic!("out of memory mapping {bytes} bytes: {error}"));
    // Only a hint: without huge pages the ledger is slower, not wrong.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_vec_across_growth_clone_and_pop() {
        let mut records: HugeVec<u64> = HugeVec::new();
        assert!(records.is_empty());
        for value in 0..10_000u64 {
            records.push(value * 3);
        }
        assert_eq!(records.len(), 10_000);
        assert!(records.capacity() >= 10_000);
        assert!(records.iter().enumerate().all(|(i, v)| *v == i as u64 * 3));
        let copy = records.clone();
        assert_eq!(copy[..], records[..]);
        assert_eq!(records.pop(), Some(9_999 * 3));
        records.push(7);
        assert_eq!(records.last(), Some(&7));
        assert_eq!(copy.last(), Some(&(9_999 * 3)), "a clone is independent");
        let zeroed: HugeVec<u64> = HugeVec::zeroed(5000);
        assert!(zeroed.iter().all(|v| *v == 0));
    }
}
