//! The memory floor of applying transfers: the cache-line traffic a plain transfer costs
//! the ledger, replayed at the ledger's sizes with none of its logic.
//!
//! Per transfer, the ledger (engine/src/ledger) reads at random:
//! - two account-index buckets (16 bytes each, the index at most half full),
//! - two account records (128 bytes: both cache lines, since a transfer reads the id and
//!   debit balances of the first line and the credit balance, ledger and flags of the
//!   second),
//! - one transfer-index bucket (the id must be new; it is then filed there),
//!
//! and appends a 128-byte transfer record (in memory reused as evicted chunks' is). This
//! program makes those accesses, at the sizes of the `ledger` bench's steady state, in
//! memory that asks for huge pages, prefetched as far ahead as the ledger's lookahead
//! does (buckets 16 transfers ahead, records 8), and times them. It leaves out what the
//! ledger touches besides (the event itself, its party and status entries, the
//! changed-account bit, history), and its appends go to one mapping where the ledger's
//! chunks are separate ones: it can only be faster than the ledger. Whatever it measures,
//! `create_transfers` cannot beat on this machine with this layout.
//!
//! Run with `cargo run --release -p settled-bench --bin memory-floor -- --accounts 1000000`.

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use memmap2::MmapMut;
use rand::Rng;
use settled_bench::{seeded_rng, transfers_resident_max_default};

/// Events between prefetching an event's index buckets and applying it (the ledger's
/// `LOOKAHEAD_INDEX_EVENTS`).
const AHEAD_BUCKETS: usize = 16;
/// Events between prefetching an event's account records and applying it
/// (`LOOKAHEAD_RECORDS_EVENTS`).
const AHEAD_RECORDS: usize = 8;
/// Transfer records prefetched ahead of the append (`WRITE_AHEAD_TRANSFERS`).
const AHEAD_APPEND: usize = 16;
const RECORD_BYTES: usize = 128;
const BUCKET_BYTES: usize = 16;
/// An account-index bucket of the `--compact-accounts` layout.
const COMPACT_BUCKET_BYTES: usize = 32;
const LINE_BYTES: usize = 64;
/// Transfers between checkpoints in the steady-state bench (64 batches of 8189), by
/// which the resident transfers exceed `transfers_resident_max` before an eviction.
const TRANSFERS_PER_CHECKPOINT: u64 = 64 * 8189;

#[derive(Parser)]
#[command(about = "Time the random memory accesses of plain transfers, without the ledger")]
struct Args {
    /// Accounts the transfers move money between.
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    /// Transfers to replay.
    #[arg(long, default_value_t = 8_000_000)]
    transfers: usize,
    /// Use 4 KiB pages instead of asking for transparent huge pages.
    #[arg(long)]
    no_huge_pages: bool,
    /// Measure a layout the ledger does not have, to see what it would buy: 32-byte
    /// account-index buckets holding the id, ledger and flags, so that a transfer reads
    /// only the first line of each account record (the balances).
    #[arg(long)]
    compact_accounts: bool,
}

/// One array of the layout: an anonymous mapping, written through once so that its
/// pages exist before the timing starts.
struct Region {
    map: MmapMut,
}

impl Region {
    fn new(bytes: usize, huge_pages: bool) -> Region {
        let mut map = MmapMut::map_anon(bytes.max(4096))
            .unwrap_or_else(|error| panic!("mapping {bytes} bytes: {error}"));
        if huge_pages {
            // A hint, as in the ledger: without huge pages the result is slower.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        map.fill(1);
        Region { map }
    }

    fn address(&self, offset: usize) -> *const u8 {
        self.map[offset..].as_ptr()
    }

    fn read_u64(&self, offset: usize) -> u64 {
        let bytes = &self.map[offset..offset + 8];
        u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }

    fn add_u64(&mut self, offset: usize, value: u64) {
        let sum = self.read_u64(offset).wrapping_add(value);
        self.map[offset..offset + 8].copy_from_slice(&sum.to_le_bytes());
    }

    fn prefetch(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint that never faults; the address is in the mapping.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.address(offset).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        black_box(self.address(offset));
    }
}

/// Buckets of an index holding `len` entries at most half full, as the ledger's.
fn index_buckets(len: u64) -> usize {
    (len.max(1) * 2).next_power_of_two() as usize
}

/// The random positions one transfer reaches: two account-index buckets and the
/// transfer-index bucket.
#[derive(Clone, Copy)]
struct Visit {
    debit_bucket: usize,
    credit_bucket: usize,
    transfer_bucket: usize,
}

fn main() {
    let args = Args::parse();
    assert!(args.accounts >= 2, "--accounts must be at least 2");
    let huge_pages = !args.no_huge_pages;
    let accounts = args.accounts as usize;
    let account_buckets = index_buckets(args.accounts);
    let transfer_buckets =
        index_buckets(transfers_resident_max_default() + TRANSFERS_PER_CHECKPOINT);

    let (account_bucket_bytes, account_lines) = if args.compact_accounts {
        (COMPACT_BUCKET_BYTES, 1)
    } else {
        (BUCKET_BYTES, 2)
    };
    let mut account_index = Region::new(account_buckets * account_bucket_bytes, huge_pages);
    let mut records = Region::new(accounts * RECORD_BYTES, huge_pages);
    let mut transfer_index = Region::new(transfer_buckets * BUCKET_BYTES, huge_pages);
    // The ledger reuses the memory of evicted chunks: appends cycle through as many
    // records as stay resident.
    let appended_len = transfers_resident_max_default() as usize;
    let mut appended = Region::new(appended_len * RECORD_BYTES, huge_pages);

    // Each account bucket names a random account slot, so that reading a record
    // depends on reading its bucket first, as in the ledger.
    let mut rng = seeded_rng(args.accounts);
    for bucket in 0..account_buckets {
        let slot = rng.random_range(0..args.accounts);
        account_index.map[bucket * account_bucket_bytes..][..8]
            .copy_from_slice(&slot.to_le_bytes());
    }
    let visits: Vec<Visit> = (0..args.transfers)
        .map(|_| Visit {
            debit_bucket: rng.random_range(0..account_buckets),
            credit_bucket: rng.random_range(0..account_buckets),
            transfer_bucket: rng.random_range(0..transfer_buckets),
        })
        .collect();
    let slot_of = |index: &Region, bucket: usize| -> usize {
        index.read_u64(bucket * account_bucket_bytes) as usize * RECORD_BYTES
    };

    let start = Instant::now();
    for (index, visit) in visits.iter().enumerate() {
        if let Some(ahead) = visits.get(index + AHEAD_BUCKETS) {
            account_index.prefetch(ahead.debit_bucket * account_bucket_bytes);
            account_index.prefetch(ahead.credit_bucket * account_bucket_bytes);
            transfer_index.prefetch(ahead.transfer_bucket * BUCKET_BYTES);
        }
        if let Some(ahead) = visits.get(index + AHEAD_RECORDS) {
            for bucket in [ahead.debit_bucket, ahead.credit_bucket] {
                let record = slot_of(&account_index, bucket);
                for line in 0..account_lines {
                    records.prefetch(record + line * LINE_BYTES);
                }
            }
        }
        {
            let next = (index + AHEAD_APPEND) % appended_len * RECORD_BYTES;
            appended.prefetch(next);
            appended.prefetch(next + LINE_BYTES);
        }
        // Apply: debit balance in the first line, credit balance and ledger in the
        // second, the new id filed, the transfer appended.
        let debit = slot_of(&account_index, visit.debit_bucket);
        let credit = slot_of(&account_index, visit.credit_bucket);
        if args.compact_accounts {
            // Ledger and flags come with the bucket; the balances fill the first line.
            black_box(account_index.read_u64(visit.debit_bucket * account_bucket_bytes + 16));
            black_box(account_index.read_u64(visit.credit_bucket * account_bucket_bytes + 16));
            records.add_u64(debit + 16, 1);
            records.add_u64(credit + 48, 1);
        } else {
            // The first line holds the id that confirms the slot and the debit balances.
            records.add_u64(debit + 32, 1);
            black_box(records.read_u64(credit));
            records.add_u64(credit + 64, 1);
            black_box(records.read_u64(debit + 112) ^ records.read_u64(credit + 112));
        }
        let bucket = visit.transfer_bucket * BUCKET_BYTES;
        black_box(transfer_index.read_u64(bucket));
        transfer_index.add_u64(bucket + 8, index as u64);
        let record = index % appended_len * RECORD_BYTES;
        for word in 0..RECORD_BYTES / 8 {
            appended.add_u64(record + word * 8, word as u64);
        }
    }
    let elapsed = start.elapsed();

    let nanos = elapsed.as_nanos() as f64 / args.transfers as f64;
    let mib = |region: &Region| region.map.len() as f64 / 1048576.0;
    println!(
        "accounts {}: account index {:.0} MiB, records {:.0} MiB, transfer index {:.0} MiB, {}",
        args.accounts,
        mib(&account_index),
        mib(&records),
        mib(&transfer_index),
        if huge_pages {
            "huge pages asked"
        } else {
            "4 KiB pages"
        },
    );
    if args.compact_accounts {
        println!("  compact account layout (not the ledger's): one record line per account");
    }
    println!(
        "  {nanos:.1} ns per transfer in memory accesses alone: at most {:.1} M transfers/s",
        1e3 / nanos
    );
}
