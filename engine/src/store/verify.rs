//! `settled verify`: the full check of a checkpoint store, offline and streaming.
//!
//! Every transfer row is read once, in timestamp order, beside the status rows (a merge
//! of two sorted scans), and added into the balances it implies: a pending transfer counts as
//! pending while its status says so, a plain transfer or a post counts as posted, a void
//! (and a pending transfer that was resolved) moves nothing. Then every account's stored
//! balances must equal those sums, and per ledger debits must equal credits. Memory holds
//! one entry per account, never the history.
//!
//! The scans also add up the hash sums of every kind of row (transfers with their
//! statuses, pending transfers, balance snapshots, failed ids, accounts), which must be
//! the ones the checkpoint manifest holds: those sums are what a start trusts for the
//! history it does not read.
//!
//! It checks the store as of its newest checkpoint; the WAL written after it is checked
//! by replay when the daemon starts.

use std::collections::{BTreeMap, HashMap};

use protocol::{Account, Transfer, TransferFlags};
use rocksdb::IteratorMode;

use xxhash_rust::xxh3::xxh3_128;

use super::codec::{
    decode_filed_transfer, decode_record, decode_status, id_key, key_hex, parse_id_key,
    parse_timeline_key, parse_timestamp_key, timeline_key, timestamp_key,
};
use super::{
    rocks, Store, StoreError, CF_ACCOUNTS, CF_ACCOUNT_TRANSFERS, CF_BALANCES, CF_FAILED_IDS,
    CF_PENDING, CF_TRANSFERS, CF_TRANSFER_IDS, CF_TRANSFER_STATUS,
};
use crate::ledger::{
    account_hash, balance_hash, failed_id_hash, transfer_hash, CheckpointTotals, PendingStatus,
};

/// What a successful verification covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub accounts: u64,
    pub transfers: u64,
    /// LSN of the checkpoint verified (0: an empty store).
    pub checkpoint_lsn: u64,
}

/// Transfers between two calls of the progress callback.
const PROGRESS_EVERY: u64 = 1 << 16;
const BALANCE_FIELDS: [&str; 4] = [
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
];

/// Counts and hash sums of index rows, as the transfers imply them or as stored.
#[derive(Default)]
struct IndexSums {
    ids_count: u64,
    ids: u128,
    timelines_count: u64,
    timelines: u128,
}

impl IndexSums {
    /// `(count, sum)` per index column family.
    fn by_family(&self) -> [(&'static str, (u64, u128)); 2] {
        [
            (CF_TRANSFER_IDS, (self.ids_count, self.ids)),
            (CF_ACCOUNT_TRANSFERS, (self.timelines_count, self.timelines)),
        ]
    }

    fn add(&mut self, transfer: &Transfer) {
        self.ids = self
            .ids
            .wrapping_add(id_row_hash(transfer.id, transfer.timestamp));
        self.ids_count += 1;
        for account_id in [transfer.debit_account_id, transfer.credit_account_id] {
            let key = timeline_key(account_id, transfer.timestamp);
            self.timelines = self.timelines.wrapping_add(xxh3_128(&key));
            self.timelines_count += 1;
        }
    }
}

fn id_row_hash(id: u128, timestamp: u64) -> u128 {
    let mut row = [0u8; 24];
    row[..16].copy_from_slice(&id_key(id));
    row[16..].copy_from_slice(&timestamp_key(timestamp));
    xxh3_128(&row)
}

/// One account: its stored record and the four balances its transfers add up to.
struct Tally {
    account: Account,
    computed: [u128; 4],
}

impl Store {
    /// Recompute every balance from every transfer and compare. `progress` hears the
    /// number of transfers read so far, now and then.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport, StoreError> {
        let view = self.db.snapshot();
        let Some((meta, expected)) = self.read_manifest(&view)? else {
            return Ok(VerifyReport::default());
        };
        let mut found = CheckpointTotals::default();
        let mut accounts = self.tally_accounts(&view)?;
        for tally in accounts.values() {
            found.accounts = found.accounts.wrapping_add(account_hash(&tally.account));
        }
        found.accounts_count = accounts.len() as u64;
        let mut statuses = view
            .iterator_cf(self.cf(CF_TRANSFER_STATUS)?, IteratorMode::Start)
            .peekable();
        let mut transfers = 0u64;
        let mut indexes = IndexSums::default();
        // Transfers past the manifest's newest are an interrupted checkpoint's (a start
        // drops them): not part of the checkpoint verified.
        let mut bounded = rocksdb::ReadOptions::default();
        bounded.set_snapshot(&view);
        bounded.set_iterate_upper_bound(timestamp_key(expected.transfers_timestamp_last + 1));
        for row in self
            .db
            .iterator_cf_opt(self.cf(CF_TRANSFERS)?, bounded, IteratorMode::Start)
        {
            let (key, value) = row.map_err(rocks("iterate transfers"))?;
            let corrupt = |reason: String| StoreError::Corrupt {
                cf: CF_TRANSFERS,
                key: key_hex(&key),
                reason,
            };
            let transfer = decode_filed_transfer(&key, &value).map_err(corrupt)?;
            let timestamp = transfer.timestamp;
            // Status rows are filed by timestamp too: take the one of this transfer, if any.
            let mut status = None;
            while let Some(row) = statuses.next_if(|row| {
                row.as_ref().map_or(true, |(key, _)| {
                    parse_timestamp_key(key).is_ok_and(|k| k <= timestamp)
                })
            }) {
                let (status_key, status_value) = row.map_err(rocks("iterate statuses"))?;
                let status_corrupt = |reason: String| StoreError::Corrupt {
                    cf: CF_TRANSFER_STATUS,
                    key: key_hex(&status_key),
                    reason,
                };
                if parse_timestamp_key(&status_key).map_err(status_corrupt)? != timestamp {
                    return Err(status_corrupt("no transfer has this timestamp".into()));
                }
                status = Some(decode_status(&status_value).map_err(status_corrupt)?);
            }
            indexes.add(&transfer);
            let status = add_transfer(&mut accounts, &transfer, status).map_err(corrupt)?;
            found.transfers = found
                .transfers
                .wrapping_add(transfer_hash(&transfer, status));
            found.transfers_timestamp_last = found.transfers_timestamp_last.max(transfer.timestamp);
            if status == PendingStatus::Pending {
                found.pending_count += 1;
                found.pending = found.pending.wrapping_add(transfer_hash(&transfer, status));
            }
            transfers += 1;
            if transfers.is_multiple_of(PROGRESS_EVERY) {
                progress(transfers);
            }
        }
        if let Some(row) = statuses.next() {
            let (key, _) = row.map_err(rocks("iterate statuses"))?;
            return Err(StoreError::Corrupt {
                cf: CF_TRANSFER_STATUS,
                key: key_hex(&key),
                reason: "no transfer has this timestamp".into(),
            });
        }
        progress(transfers);
        found.transfers_count = transfers;
        check_balances(&accounts)?;
        self.tally_other_rows(&view, &mut found)?;
        check_totals(&found, &expected)?;
        self.check_indexes(&view, &indexes)?;
        Ok(VerifyReport {
            accounts: accounts.len() as u64,
            transfers,
            checkpoint_lsn: meta.lsn,
        })
    }

    /// The rows that only the manifest's sums vouch for at a start: pending transfers
    /// (which must be the pending ones among the transfers, a check made by comparing
    /// their sum with the transfers' below), balance snapshots and failed ids.
    fn tally_other_rows(
        &self,
        view: &rocksdb::Snapshot,
        found: &mut CheckpointTotals,
    ) -> Result<(), StoreError> {
        let (mut pending_count, mut pending) = (0u64, 0u128);
        self.scan(view, CF_PENDING, |_, value| {
            let transfer: Transfer = decode_record(value)?;
            pending_count += 1;
            pending = pending.wrapping_add(transfer_hash(&transfer, PendingStatus::Pending));
            Ok(())
        })?;
        check_sums(
            CF_PENDING,
            (pending_count, pending),
            (found.pending_count, found.pending),
            "the transfers' statuses make pending",
        )?;
        self.scan(view, CF_BALANCES, |key, value| {
            let (account_id, timestamp) = parse_timeline_key(key)?;
            let balance: protocol::AccountBalance = decode_record(value)?;
            if balance.timestamp != timestamp {
                let stored = balance.timestamp;
                return Err(format!(
                    "key timestamp {timestamp}, record timestamp {stored}"
                ));
            }
            found.history_count += 1;
            found.history = found
                .history
                .wrapping_add(balance_hash(account_id, &balance));
            Ok(())
        })?;
        self.scan(view, CF_FAILED_IDS, |key, value| {
            if !value.is_empty() {
                return Err(format!("value is {} bytes, not empty", value.len()));
            }
            found.failed_ids_count += 1;
            found.failed_ids = found
                .failed_ids
                .wrapping_add(failed_id_hash(parse_id_key(key)?));
            Ok(())
        })?;
        Ok(())
    }

    /// The two indexes of the transfers hold exactly one row per transfer (`transfer_ids`)
    /// and per transfer and party (`account_transfers`), naming it rightly.
    fn check_indexes(
        &self,
        view: &rocksdb::Snapshot,
        expected: &IndexSums,
    ) -> Result<(), StoreError> {
        let mut found = IndexSums::default();
        self.scan(view, CF_TRANSFER_IDS, |key, value| {
            let id = parse_id_key(key)?;
            let timestamp = parse_timestamp_key(value)?;
            found.ids = found.ids.wrapping_add(id_row_hash(id, timestamp));
            found.ids_count += 1;
            Ok(())
        })?;
        self.scan(view, CF_ACCOUNT_TRANSFERS, |key, value| {
            parse_timeline_key(key)?;
            if !value.is_empty() {
                return Err(format!("value is {} bytes, not empty", value.len()));
            }
            found.timelines = found.timelines.wrapping_add(xxh3_128(key));
            found.timelines_count += 1;
            Ok(())
        })?;
        check_all(
            &found.by_family(),
            &expected.by_family(),
            "the transfers make",
        )?;
        Ok(())
    }

    /// Every account, each with zero balances to add its transfers into.
    fn tally_accounts(&self, view: &rocksdb::Snapshot) -> Result<HashMap<u128, Tally>, StoreError> {
        let accounts = self.read_accounts(view)?;
        Ok(accounts
            .into_iter()
            .map(|account| {
                (
                    account.id,
                    Tally {
                        account,
                        computed: [0; 4],
                    },
                )
            })
            .collect())
    }
}

/// Add what `transfer` leaves in its accounts' balances; returns its status.
fn add_transfer(
    accounts: &mut HashMap<u128, Tally>,
    transfer: &Transfer,
    status: Option<PendingStatus>,
) -> Result<PendingStatus, String> {
    let pending = transfer.flags.contains(TransferFlags::PENDING);
    let status = match status {
        Some(status) if !pending => {
            return Err(format!(
                "a status row ({status:?}) for a transfer that is not pending"
            ))
        }
        Some(status) => status,
        None if pending => PendingStatus::Pending,
        None => PendingStatus::NotPending,
    };
    let void = transfer
        .flags
        .contains(TransferFlags::VOID_PENDING_TRANSFER);
    let field_debit = match status {
        PendingStatus::Pending => 0,
        PendingStatus::NotPending if !void => 1,
        _ => return Ok(status),
    };
    for (account_id, field) in [
        (transfer.debit_account_id, field_debit),
        (transfer.credit_account_id, field_debit + 2),
    ] {
        let tally = accounts
            .get_mut(&account_id)
            .ok_or_else(|| format!("account {account_id} does not exist"))?;
        if tally.account.ledger != transfer.ledger {
            return Err(format!(
                "ledger {} but account {account_id} is on ledger {}",
                transfer.ledger, tally.account.ledger
            ));
        }
        let sum = &mut tally.computed[field];
        *sum = sum
            .checked_add(transfer.amount)
            .ok_or_else(|| format!("account {account_id}: {} overflows", BALANCE_FIELDS[field]))?;
    }
    Ok(status)
}

/// The rows of `cf` add up to `(count, sum)` as `expected` says (`whose`: who says so).
fn check_sums(
    cf: &'static str,
    (found_count, found_sum): (u64, u128),
    (expected_count, expected_sum): (u64, u128),
    whose: &str,
) -> Result<(), StoreError> {
    if (found_count, found_sum) == (expected_count, expected_sum) {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        cf,
        key: "(all rows)".to_owned(),
        reason: format!(
            "{found_count} rows hashing to {found_sum:#x}, but {whose} {expected_count} rows \
             hashing to {expected_sum:#x}"
        ),
    })
}

/// Each column family's `(count, sum)` as `found` and as `expected` (same order).
fn check_all<const N: usize>(
    found: &[(&'static str, (u64, u128)); N],
    expected: &[(&'static str, (u64, u128)); N],
    whose: &str,
) -> Result<(), StoreError> {
    for ((cf, found), (_, expected)) in found.iter().zip(expected) {
        check_sums(cf, *found, *expected, whose)?;
    }
    Ok(())
}

/// The manifest's `(count, sum)` per column family.
fn totals_by_family(totals: &CheckpointTotals) -> [(&'static str, (u64, u128)); 5] {
    [
        (CF_ACCOUNTS, (totals.accounts_count, totals.accounts)),
        (CF_TRANSFERS, (totals.transfers_count, totals.transfers)),
        (CF_PENDING, (totals.pending_count, totals.pending)),
        (CF_BALANCES, (totals.history_count, totals.history)),
        (CF_FAILED_IDS, (totals.failed_ids_count, totals.failed_ids)),
    ]
}

/// What the rows add up to is what the checkpoints wrote, kind by kind.
fn check_totals(found: &CheckpointTotals, expected: &CheckpointTotals) -> Result<(), StoreError> {
    let whose = "the checkpoint manifest says";
    check_all(&totals_by_family(found), &totals_by_family(expected), whose)?;
    if found.transfers_timestamp_last != expected.transfers_timestamp_last {
        return Err(StoreError::Corrupt {
            cf: CF_TRANSFERS,
            key: "(all rows)".to_owned(),
            reason: format!(
                "the newest transfer is at {}, the checkpoint manifest says {}",
                found.transfers_timestamp_last, expected.transfers_timestamp_last
            ),
        });
    }
    Ok(())
}

/// Every account's stored balances equal its sums (in id order, so the first mismatch
/// reported is always the same), and per ledger debits equal credits.
fn check_balances(accounts: &HashMap<u128, Tally>) -> Result<(), StoreError> {
    let mut ids: Vec<u128> = accounts.keys().copied().collect();
    ids.sort_unstable();
    let mut ledgers: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for id in ids {
        let Tally { account, computed } = &accounts[&id];
        let stored = [
            account.debits_pending,
            account.debits_posted,
            account.credits_pending,
            account.credits_posted,
        ];
        for field in 0..4 {
            if stored[field] != computed[field] {
                return Err(StoreError::Corrupt {
                    cf: CF_ACCOUNTS,
                    key: key_hex(&id.to_be_bytes()),
                    reason: format!(
                        "account {id}: {} is {} but its transfers add up to {}",
                        BALANCE_FIELDS[field], stored[field], computed[field]
                    ),
                });
            }
        }
        let sums = ledgers.entry(account.ledger).or_default();
        for field in 0..4 {
            // The per-account sums were checked; the ledger's can only overflow if the
            // ledger created money, which the comparison below reports.
            sums[field] = sums[field].wrapping_add(stored[field]);
        }
    }
    for (ledger, [debits_pending, debits_posted, credits_pending, credits_posted]) in ledgers {
        if debits_pending != credits_pending || debits_posted != credits_posted {
            return Err(StoreError::Corrupt {
                cf: CF_ACCOUNTS,
                key: format!("ledger {ledger}"),
                reason: format!(
                    "debits {debits_posted} posted, {debits_pending} pending; credits \
                     {credits_posted} posted, {credits_pending} pending"
                ),
            });
        }
    }
    Ok(())
}
