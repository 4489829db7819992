//! The checkpoint store: the ledger's state in RocksDB, so that recovery replays only
//! the WAL written after the newest checkpoint.
//!
//! Every few batches the core thread takes [`Changes`] from the ledger and hands them,
//! with the WAL position (LSN) they correspond to, to the checkpointer thread, which calls
//! [`Store::write_checkpoint`]. A checkpoint is its transfers, ingested as one sorted
//! file, then one `WriteBatch` with every other row and the manifest, then an atomic
//! flush of every column family: the manifest is the commit point (transfers past its
//! newest are dropped at the next start), and everything is in synced files before the
//! call returns, so the WAL below the checkpoint's LSN may then be dropped. On restart [`Store::load_ledger`] reads the manifest, every account and every
//! pending transfer (nothing else: its cost does not grow with history), rebuilds the
//! ledger with [`Ledger::restore`](crate::ledger::Ledger::restore) and returns the
//! manifest, whose LSN says where WAL replay starts.
//!
//! # On-disk layout, format version 4
//!
//! Keys are big-endian so that RocksDB's bytewise order is numeric order: ids ascending,
//! timestamps ascending, and composite keys by account, then time. Record values are the
//! protocol's 128-byte little-endian records, byte for byte (field offsets are documented
//! on [`protocol::Account`], [`protocol::Transfer`] and [`protocol::AccountBalance`]).
//!
//! | column family       | key bytes                          | value bytes             |
//! |---------------------|------------------------------------|-------------------------|
//! | `accounts`          | 0..16 account id                   | 0..128 `Account`        |
//! | `transfers`         | 0..8 timestamp                     | 0..128 `Transfer`       |
//! | `transfer_ids`      | 0..16 transfer id                  | 0..8 timestamp          |
//! | `transfer_status`   | 0..8 pending transfer's timestamp  | 0..1 status             |
//! | `account_transfers` | 0..16 account id, 16..24 timestamp | empty                   |
//! | `balances`          | 0..16 account id, 16..24 timestamp | 0..128 `AccountBalance` |
//! | `failed_ids`        | 0..16 transfer id                  | empty                   |
//! | `pending_transfers` | 0..8 timestamp                     | 0..128 `Transfer`       |
//! | `meta`              | 0..10 ASCII `checkpoint`           | 0..148 manifest         |
//!
//! Ids are u128 and timestamps u64, big-endian in keys and in the `transfer_ids` value;
//! the timestamps in keys are those of the transfer the row is about.
//!
//! - `transfers` holds every transfer keyed by its timestamp (unique, and creation
//!   order): every checkpoint appends past the end, so RocksDB moves these files down its
//!   levels without rewriting them. Only the thin `transfer_ids` index (24 bytes a
//!   transfer) has random keys that compaction must merge (measured at 60M transfers
//!   before this layout: compaction was half of the daemon's CPU, most of it rewriting
//!   128-byte transfers filed by random id).
//! - `transfer_status` has a row only for a pending transfer that was posted (byte 2),
//!   voided (3) or expired (4): the codes of `PendingStatus`. A pending transfer without
//!   a row is still pending; a transfer without the pending flag never has one.
//! - `account_transfers` lists every transfer twice, under its debit and under its credit
//!   account, ordered by time: the index of `get_account_transfers` and
//!   `get_account_balances` from disk; the key's timestamp finds the transfer.
//! - `balances` holds one snapshot per transfer and party with the `history` flag, keyed
//!   by the transfer's timestamp (which the record repeats at its bytes 64..72).
//! - `pending_transfers` holds a copy of every transfer whose status is still pending,
//!   keyed by its timestamp: what a start loads instead of the history. The row is
//!   written with the transfer and deleted with its resolution.
//! - The manifest is bincode 2.0.1 with fixed-width little-endian integers: bytes 0..4
//!   `format_version` (u32, currently 4; version 3 filed transfers by id, version 2 had
//!   no `pending_transfers` and a 20-byte manifest), 4..12 `lsn` (u64), 12..20 `timestamp_last`
//!   (u64), then the [`CheckpointTotals`] of everything written so far: 20..28 accounts
//!   count (u64), 28..44 accounts sum (u128), 44..52 transfers count, 52..60 newest
//!   transfer timestamp, 60..76 transfers sum, 76..84 pending count, 84..100 pending sum,
//!   100..108 balance snapshots count, 108..124 their sum, 124..132 failed ids count,
//!   132..148 their sum. A sum adds (wrapping) one xxh3-128 per row: of the account
//!   record, of the transfer record seeded with its status, of the account id, timestamp
//!   and four balances of a snapshot, of a failed id. The version comes first so that a
//!   store written in another layout is recognised and refused
//!   ([`StoreError::FormatVersion`]) rather than misread.
//!
//! # Integrity
//!
//! RocksDB checksums every block it writes (XXH3 by default for table blocks) and
//! verifies them on read (`verify_checksums` and `paranoid_checks` are on by default).
//! What the store adds is meaning: every value read back is checked for its exact
//! length, a known status byte and agreement with its key; a start checks that the
//! accounts and pending transfers it loads add up to the manifest's sums (a missing,
//! extra, stale or changed row is refused) and [`Ledger::restore`](crate::ledger::Ledger::restore)
//! re-checks the ledger's invariants on them (pending balances equal to the pending
//! transfers, posted debits equal to posted credits per ledger, ...). The rows a start
//! does not read are vouched for by the same sums, which `settled verify` recomputes
//! from every row, with every balance from every transfer ([`Store::verify`]). Bad data
//! is a [`StoreError`] naming the column family and key, never a panic.

mod codec;
mod load;
mod manifest;
mod read;
mod verify;

pub use verify::VerifyReport;

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    FlushOptions, Options, WriteBatch, WriteOptions, DB,
};

use crate::ledger::{Changes, CheckpointTotals, RestoreError};

use codec::{id_key, record_bytes, status_byte, timeline_key, timestamp_key};
use protocol::TransferFlags;

/// Table files RocksDB keeps open at most (its table cache): a bound on the descriptors
/// the store holds, whatever the history.
pub const OPEN_FILES_MAX: i32 = 512;

pub const CF_ACCOUNTS: &str = "accounts";
pub const CF_TRANSFERS: &str = "transfers";
pub const CF_TRANSFER_IDS: &str = "transfer_ids";
pub const CF_TRANSFER_STATUS: &str = "transfer_status";
pub const CF_ACCOUNT_TRANSFERS: &str = "account_transfers";
pub const CF_BALANCES: &str = "balances";
pub const CF_FAILED_IDS: &str = "failed_ids";
pub const CF_PENDING: &str = "pending_transfers";
pub const CF_META: &str = "meta";

/// The key of the manifest in [`CF_META`].
pub const META_KEY: &[u8] = b"checkpoint";

/// Bloom filters above this many bits per key cost memory for no measurable gain.
pub const BLOOM_BITS_PER_KEY_MAX: f64 = 64.0;

/// How a column family is read, which decides whether a bloom filter pays for itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Looked up by whole key (ids): a filter skips the disk for absent keys, which is
    /// what the idempotency check of every new id asks about.
    Point,
    /// Scanned by account and time range: whole-key filters are never consulted.
    Range,
}

const COLUMN_FAMILIES: [(&str, Reads); 9] = [
    (CF_ACCOUNTS, Reads::Point),
    // Read by timestamps that `transfer_ids` found: the filter would only cost memory.
    (CF_TRANSFERS, Reads::Range),
    (CF_TRANSFER_IDS, Reads::Point),
    (CF_TRANSFER_STATUS, Reads::Point),
    (CF_ACCOUNT_TRANSFERS, Reads::Range),
    (CF_BALANCES, Reads::Range),
    (CF_FAILED_IDS, Reads::Point),
    (CF_PENDING, Reads::Range),
    (CF_META, Reads::Point),
];

/// Tuning of the RocksDB instance.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bloom filter size of the point-read column families (RocksDB's default filter
    /// policy; 10 bits give about 1% false positives).
    pub bloom_bits_per_key: f64,
    /// One LRU block cache shared by all column families.
    pub block_cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            bloom_bits_per_key: 10.0,
            block_cache_bytes: 256 << 20,
        }
    }
}

/// What a checkpoint's manifest says: the ledger holds the effect of every WAL record up
/// to and including `lsn` and of none after it (recovery replays from `lsn + 1`), and its
/// clock stood at `timestamp_last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointMeta {
    pub lsn: u64,
    pub timestamp_last: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb failed to {op}: {source}")]
    Rocks {
        op: &'static str,
        source: rocksdb::Error,
    },
    #[error("store config: {reason}")]
    Config { reason: String },
    #[error("column family {cf} is missing")]
    MissingColumnFamily { cf: &'static str },
    #[error("corrupt row in {cf}, key {key}: {reason}")]
    Corrupt {
        cf: &'static str,
        key: String,
        reason: String,
    },
    #[error("checkpoint format version {found} is not the version {expected} this build reads")]
    FormatVersion { found: u32, expected: u32 },
    #[error("checkpoint {requested:?} would go back from the stored {previous:?}")]
    CheckpointBackwards {
        previous: CheckpointMeta,
        requested: CheckpointMeta,
    },
    #[error("the checkpoint is not a valid ledger: {0}")]
    Restore(#[from] RestoreError),
}

fn rocks(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
    move |source| StoreError::Rocks { op, source }
}

/// Size of a checkpoint written: RocksDB rows (puts and deletes) and write batch bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointWritten {
    pub rows: u64,
    pub bytes: u64,
}

/// What [`Store::rocksdb_stats`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RocksStats {
    /// Bytes compaction estimates it must rewrite to bring every level within its
    /// target (RocksDB slows, then stops, writes when this grows too large).
    pub pending_compaction_bytes: u64,
    pub live_sst_bytes: u64,
    pub memtable_bytes: u64,
    pub block_cache_bytes: u64,
    /// RocksDB stopped writes (a checkpoint write waits).
    pub write_stopped: bool,
    /// Rate RocksDB slowed writes to, bytes per second (0: not slowed).
    pub delayed_write_rate_bytes: u64,
}

/// A row as RocksDB holds it: key and value.
pub(crate) type RawRow = (Box<[u8]>, Box<[u8]>);

/// The ledger's checkpoints in one RocksDB instance. Written by one thread (the
/// checkpointer); reads see a consistent snapshot.
pub struct Store {
    db: DB,
    /// The options of `transfers`, for the files checkpoints build for it.
    transfers_options: Options,
    /// Where those files are built before RocksDB takes them in.
    ingest_dir: PathBuf,
    /// Whether `failed_ids` has rows: until it does, no batch needs to read it.
    failed_ids_stored: AtomicBool,
}

impl Store {
    /// Opens (creating if missing) the RocksDB at `dir` with all column families.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<Store, StoreError> {
        let bloom = config.bloom_bits_per_key;
        if !(1.0..=BLOOM_BITS_PER_KEY_MAX).contains(&bloom) {
            let reason =
                format!("bloom_bits_per_key {bloom} is not in 1..={BLOOM_BITS_PER_KEY_MAX}");
            return Err(StoreError::Config { reason });
        }
        let cache = Cache::new_lru_cache(config.block_cache_bytes);
        let descriptors = COLUMN_FAMILIES.iter().map(|(name, reads)| {
            ColumnFamilyDescriptor::new(*name, column_family_options(&cache, bloom, *reads))
        });
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(4);
        // Table files stay open in RocksDB's table cache; bounded, so descriptors do not
        // grow with history (the server counts them against RLIMIT_NOFILE).
        options.set_max_open_files(OPEN_FILES_MAX);
        // Checkpoints skip RocksDB's own log (the engine's WAL already holds every change)
        // and are flushed to SST files before the engine's WAL may drop them: the flush
        // must take every column family at once, or a crash could leave a checkpoint half
        // in the files.
        options.set_atomic_flush(true);
        let db = DB::open_cf_descriptors(&options, dir, descriptors).map_err(rocks("open"))?;
        let ingest_dir = dir.join("ingest");
        // Files of a checkpoint that a crash interrupted are not part of any checkpoint.
        let _ = std::fs::remove_dir_all(&ingest_dir);
        std::fs::create_dir_all(&ingest_dir).map_err(|error| StoreError::Config {
            reason: format!("create {}: {error}", ingest_dir.display()),
        })?;
        let store = Store {
            db,
            transfers_options: column_family_options(&cache, bloom, Reads::Range),
            ingest_dir,
            failed_ids_stored: AtomicBool::new(false),
        };
        if let Some((_, totals)) = store.read_manifest(&store.db.snapshot())? {
            store.note_failed_ids(&totals);
        }
        Ok(store)
    }

    /// The newest checkpoint written, if any.
    pub fn checkpoint_meta(&self) -> Result<Option<CheckpointMeta>, StoreError> {
        self.read_meta(&self.db.snapshot())
    }

    /// Whether any transfer id is stored as transiently failed: a batch of new transfers
    /// must then ask the store about its ids ([`Store::read_failed_ids`]).
    pub fn failed_ids_stored(&self) -> bool {
        self.failed_ids_stored.load(Ordering::Acquire)
    }

    fn note_failed_ids(&self, totals: &CheckpointTotals) {
        if totals.failed_ids_count > 0 {
            self.failed_ids_stored.store(true, Ordering::Release);
        }
    }

    /// Writes `changes` and `meta` (the transfers as an ingested file, the rest in one
    /// atomic WriteBatch), then flushes every column family at once (RocksDB's atomic
    /// flush) to synced SST files: durable before return. The batch skips RocksDB's own
    /// log, which would only write the same bytes twice: until the flush returns, the
    /// engine's WAL (not yet truncated) holds them. `meta.lsn` and `meta.timestamp_last` must not be below the previous
    /// checkpoint's, and `meta.timestamp_last` must be the ledger's clock when `changes`
    /// were taken.
    pub fn write_checkpoint(
        &self,
        meta: CheckpointMeta,
        changes: &Changes,
    ) -> Result<CheckpointWritten, StoreError> {
        let written = self.write_batch(meta, changes)?;
        // The caller drops the WAL records up to `meta.lsn` once this returns: the
        // checkpoint must be in synced files by then.
        let families = COLUMN_FAMILIES
            .iter()
            .map(|(name, _)| self.cf(name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        self.db
            .flush_cfs_opt(&families, &flush)
            .map_err(rocks("flush a checkpoint"))?;
        Ok(written)
    }

    /// The checkpoint's rows and manifest, in one batch into the memtables.
    fn write_batch(
        &self,
        meta: CheckpointMeta,
        changes: &Changes,
    ) -> Result<CheckpointWritten, StoreError> {
        let view = self.db.snapshot();
        let previous = self.read_manifest(&view)?;
        let mut totals = CheckpointTotals::default();
        if let Some((previous, previous_totals)) = previous {
            if meta.lsn < previous.lsn || meta.timestamp_last < previous.timestamp_last {
                return Err(StoreError::CheckpointBackwards {
                    previous,
                    requested: meta,
                });
            }
            // The same position holds the same changes: this checkpoint is stored already
            // (a retry after a failed flush, whose batch the memtables hold, or after a
            // failed WAL truncation; or nothing new since). Adding its changes again
            // would count them twice.
            if previous == meta {
                return Ok(CheckpointWritten::default());
            }
            totals = previous_totals;
        }
        assert_changes_before(meta, changes);
        let accounts_before = self.accounts_before(&view, &changes.accounts)?;
        drop(view);
        totals.add(changes, &accounts_before);
        // The transfers go in first, as a file of their own: a crash before the batch
        // below leaves them past the manifest's newest transfer, where the next start
        // drops them (`drop_unmanifested_transfers`) and WAL replay makes them again.
        let ingested = self.ingest_transfers(&changes.transfers)?;
        let mut batch = WriteBatch::default();
        self.batch_objects(&mut batch, changes)?;
        self.batch_indexes(&mut batch, changes)?;
        batch.put_cf(self.cf(CF_META)?, META_KEY, manifest::encode(meta, &totals));
        let written = CheckpointWritten {
            rows: batch.len() as u64 + changes.transfers.len() as u64,
            bytes: batch.size_in_bytes() as u64 + ingested,
        };
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .write_opt(batch, &options)
            .map_err(rocks("write a checkpoint"))?;
        self.note_failed_ids(&totals);
        Ok(written)
    }

    /// Write `transfers` (in timestamp order, after every stored one) into a sorted file
    /// and hand it to RocksDB, which files it below everything else without a memtable,
    /// a flush or a later merge: the keys are new and past all stored ones. Returns the
    /// file's size.
    fn ingest_transfers(&self, transfers: &[protocol::Transfer]) -> Result<u64, StoreError> {
        let Some(first) = transfers.first() else {
            return Ok(0);
        };
        let path = self
            .ingest_dir
            .join(format!("transfers-{}.sst", first.timestamp));
        let mut writer = rocksdb::SstFileWriter::create(&self.transfers_options);
        writer
            .open(&path)
            .map_err(rocks("create a transfers file"))?;
        let mut previous = 0;
        for transfer in transfers {
            assert!(
                transfer.timestamp > previous,
                "transfers out of timestamp order"
            );
            previous = transfer.timestamp;
            writer
                .put(timestamp_key(transfer.timestamp), record_bytes(transfer))
                .map_err(rocks("write a transfers file"))?;
        }
        writer.finish().map_err(rocks("finish a transfers file"))?;
        let bytes = writer.file_size();
        let mut options = rocksdb::IngestExternalFileOptions::default();
        options.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf(CF_TRANSFERS)?, &options, vec![&path])
            .map_err(rocks("ingest a transfers file"))?;
        Ok(bytes)
    }

    /// The stored record of each of `accounts` (by id), if any: what the checkpoint
    /// replaces, for the manifest's sums.
    fn accounts_before(
        &self,
        view: &rocksdb::Snapshot,
        accounts: &[protocol::Account],
    ) -> Result<Vec<Option<protocol::Account>>, StoreError> {
        let keys: Vec<[u8; 16]> = accounts.iter().map(|account| id_key(account.id)).collect();
        let mut options = rocksdb::ReadOptions::default();
        options.set_snapshot(view);
        let sorted = keys.is_sorted();
        let values =
            self.db
                .batched_multi_get_cf_opt(self.cf(CF_ACCOUNTS)?, &keys, sorted, &options);
        keys.iter()
            .zip(values)
            .map(|(key, value)| {
                let Some(value) = value.map_err(rocks("read accounts"))? else {
                    return Ok(None);
                };
                let corrupt = |reason| StoreError::Corrupt {
                    cf: CF_ACCOUNTS,
                    key: codec::key_hex(key),
                    reason,
                };
                let account: protocol::Account = codec::decode_record(&value).map_err(corrupt)?;
                // The sums assume a row holds the account its key names.
                load::check_key_is_id(codec::parse_id_key(key).map_err(corrupt)?, account.id)
                    .map_err(corrupt)?;
                Ok(Some(account))
            })
            .collect()
    }

    /// The objects themselves: accounts (newest value), transfers, resolved statuses and
    /// failed ids.
    ///
    /// Every column family's rows go into the batch in key order: RocksDB's memtable
    /// inserts a sorted run almost for free, while millions of random keys spend most of a
    /// checkpoint re-searching its skip list (measured: 10x slower).
    fn batch_objects(&self, batch: &mut WriteBatch, changes: &Changes) -> Result<(), StoreError> {
        let accounts = self.cf(CF_ACCOUNTS)?;
        for account in sorted_by_key(&changes.accounts, |account| account.id) {
            batch.put_cf(accounts, id_key(account.id), record_bytes(account));
        }
        // The transfers themselves were ingested as a file (`ingest_transfers`). New
        // pending transfers go before the resolutions below, which may delete the same
        // rows again.
        let pending = self.cf(CF_PENDING)?;
        for transfer in &changes.transfers {
            if transfer.flags.contains(TransferFlags::PENDING) {
                let key = timestamp_key(transfer.timestamp);
                batch.put_cf(pending, key, record_bytes(transfer));
            }
        }
        let transfer_ids = self.cf(CF_TRANSFER_IDS)?;
        for transfer in sorted_by_key(&changes.transfers, |transfer| transfer.id) {
            let key = id_key(transfer.id);
            batch.put_cf(transfer_ids, key, timestamp_key(transfer.timestamp));
        }
        let statuses = self.cf(CF_TRANSFER_STATUS)?;
        for (transfer, status) in sorted_by_key(&changes.pending_statuses, |(t, _)| t.timestamp) {
            let key = timestamp_key(transfer.timestamp);
            let byte = status_byte(*status).expect("a resolution is posted, voided or expired");
            batch.put_cf(statuses, key, [byte]);
            batch.delete_cf(pending, key);
        }
        let failed_ids = self.cf(CF_FAILED_IDS)?;
        for id in sorted_by_key(&changes.failed_ids, |id| *id) {
            batch.put_cf(failed_ids, id_key(*id), []);
        }
        Ok(())
    }

    /// The time-ordered rows per account: transfer index and balance history.
    fn batch_indexes(&self, batch: &mut WriteBatch, changes: &Changes) -> Result<(), StoreError> {
        let account_transfers = self.cf(CF_ACCOUNT_TRANSFERS)?;
        let mut rows: Vec<_> = changes
            .transfers
            .iter()
            .flat_map(|transfer| {
                [transfer.debit_account_id, transfer.credit_account_id]
                    .map(|account_id| timeline_key(account_id, transfer.timestamp))
            })
            .collect();
        rows.sort_unstable();
        for key in rows {
            batch.put_cf(account_transfers, key, []);
        }
        let balances = self.cf(CF_BALANCES)?;
        for (account_id, balance) in
            sorted_by_key(&changes.balances, |(id, balance)| (*id, balance.timestamp))
        {
            let key = timeline_key(*account_id, balance.timestamp);
            batch.put_cf(balances, key, record_bytes(balance));
        }
        Ok(())
    }

    /// RocksDB's own figures, for operators: summed over column families where RocksDB
    /// keeps them per family. Property reads are cheap (no I/O); call from any thread.
    pub fn rocksdb_stats(&self) -> Result<RocksStats, StoreError> {
        let mut stats = RocksStats::default();
        let int = |value: Result<Option<u64>, rocksdb::Error>| {
            value
                .map(Option::unwrap_or_default)
                .map_err(rocks("read a property"))
        };
        for (name, _) in COLUMN_FAMILIES {
            let cf = self.cf(name)?;
            stats.pending_compaction_bytes += int(self
                .db
                .property_int_value_cf(cf, "rocksdb.estimate-pending-compaction-bytes"))?;
            stats.live_sst_bytes += int(self
                .db
                .property_int_value_cf(cf, "rocksdb.live-sst-files-size"))?;
            stats.memtable_bytes += int(self
                .db
                .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables"))?;
        }
        // One block cache serves every family.
        stats.block_cache_bytes = int(self
            .db
            .property_int_value_cf(self.cf(CF_TRANSFERS)?, "rocksdb.block-cache-usage"))?;
        stats.write_stopped = int(self.db.property_int_value("rocksdb.is-write-stopped"))? != 0;
        stats.delayed_write_rate_bytes = int(self
            .db
            .property_int_value("rocksdb.actual-delayed-write-rate"))?;
        Ok(stats)
    }

    /// For the simulation (`crate::sim`): flip bit `bit` of the value of the `pick`-th
    /// row (modulo the count) of `accounts`, flushed. Returns the key and the original
    /// value, for [`Store::put_account_row`] to put back; `None` when there is no row.
    pub(crate) fn damage_account_row(
        &self,
        pick: usize,
        bit: usize,
    ) -> Result<Option<RawRow>, StoreError> {
        let cf = self.cf(CF_ACCOUNTS)?;
        let rows = self
            .db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .collect::<Result<Vec<_>, _>>()
            .map_err(rocks("read accounts"))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let (key, value) = rows[pick % rows.len()].clone();
        let mut damaged = value.to_vec();
        let bit = bit % (damaged.len() * 8);
        damaged[bit / 8] ^= 1 << (bit % 8);
        self.put_account_row(&key, &damaged)?;
        Ok(Some((key, value)))
    }

    /// For the simulation: write an `accounts` row as it is given, flushed.
    pub(crate) fn put_account_row(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let cf = self.cf(CF_ACCOUNTS)?;
        self.db
            .put_cf(cf, key, value)
            .map_err(rocks("write account row"))?;
        self.db.flush_cf(cf).map_err(rocks("flush accounts"))
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily { cf: name })
    }
}

fn column_family_options(cache: &Cache, bloom_bits_per_key: f64, reads: Reads) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Index and filter blocks live in the block cache too, so that one size bounds what
    // RocksDB holds of its files, and a start loads them as reads need them rather than
    // all at once (they grow with history: ~2.5 bytes per transfer). The top level and
    // the files of L0 stay pinned: every read passes through them.
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_pin_top_level_index_and_filter(true);
    if reads == Reads::Point {
        table.set_bloom_filter(bloom_bits_per_key, false);
    }
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_block_based_table_factory(&table);
    // A checkpoint writes millions of rows at once: large memtables keep it from stalling
    // on flushes of many small ones.
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options.set_max_write_buffer_number(4);
    options
}

const WRITE_BUFFER_BYTES: usize = 256 << 20;

/// `items` in (stable) order of `key`, by reference.
fn sorted_by_key<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by_key(|item| key(item));
    sorted
}

/// A checkpoint whose objects postdate its own clock would be refused by restore: that
/// is a bug of the caller, caught here before it reaches the disk.
fn assert_changes_before(meta: CheckpointMeta, changes: &Changes) {
    let timestamps = changes
        .accounts
        .iter()
        .map(|account| account.timestamp)
        .chain(changes.transfers.iter().map(|transfer| transfer.timestamp));
    for timestamp in timestamps {
        assert!(
            timestamp <= meta.timestamp_last,
            "checkpoint {meta:?} holds an object of timestamp {timestamp}"
        );
    }
}

#[cfg(test)]
mod tests;
