//! The read path of transfers that left memory: point reads by id (idempotency checks,
//! pending ids, lookups) and the old part of range reads (account transfers, balances,
//! queries), each bounded by the eviction watermark `through` the caller read at.
//!
//! Point reads go through `batched_multi_get` on sorted keys: one call per batch, and the
//! bloom filter of `transfer_ids` answers most absent ids (new ones) without touching a
//! data block. A present id gives the timestamp that files the transfer and its status.

use protocol::{AccountBalance, AccountFilter, AccountFilterFlags, QueryFilter, QueryFilterFlags};
use protocol::{Transfer, TransferFlags};
use rocksdb::{DBPinnableSlice, IteratorMode, ReadOptions};

use super::codec::{
    decode_filed_transfer, decode_record, decode_status, id_key, key_hex, parse_timeline_key,
    parse_timestamp_key, timeline_key, timestamp_key,
};
use super::{
    rocks, Store, StoreError, CF_ACCOUNT_TRANSFERS, CF_BALANCES, CF_FAILED_IDS, CF_PENDING,
    CF_TRANSFERS, CF_TRANSFER_IDS, CF_TRANSFER_STATUS,
};
use crate::ledger::{
    account_filter_matches, account_filter_valid, query_filter_matches, query_filter_valid,
    OldTransfers, PendingStatus, QUERY_LIMIT_MAX,
};

fn corrupt<'a>(cf: &'static str, key: &'a [u8]) -> impl FnOnce(String) -> StoreError + 'a {
    move |reason| StoreError::Corrupt {
        cf,
        key: key_hex(key),
        reason,
    }
}

/// The inclusive timestamp bounds of a filter's old part: `None` when it selects nothing
/// at or before `through`.
fn old_bounds(timestamp_min: u64, timestamp_max: u64, through: u64) -> Option<(u64, u64)> {
    let max = if timestamp_max == 0 {
        through
    } else {
        timestamp_max.min(through)
    };
    (through != 0 && timestamp_min <= max).then_some((timestamp_min, max))
}

/// Reads over `[lower, upper)` of one column family, in key order or reversed.
fn bounded(lower: Vec<u8>, upper: Vec<u8>) -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_iterate_lower_bound(lower);
    options.set_iterate_upper_bound(upper);
    options
}

fn direction(reversed: bool) -> IteratorMode<'static> {
    if reversed {
        IteratorMode::End
    } else {
        IteratorMode::Start
    }
}

impl Store {
    /// `ids`, sorted and without repeats, each with its value in `cf` if it has one: one
    /// batched read on sorted keys, with `options` (a snapshot, for one).
    fn get_by_ids(
        &self,
        cf: &'static str,
        mut ids: Vec<u128>,
        options: &ReadOptions,
    ) -> Result<Vec<(u128, Option<DBPinnableSlice<'_>>)>, StoreError> {
        ids.sort_unstable();
        ids.dedup();
        let keys: Vec<[u8; 16]> = ids.iter().map(|id| id_key(*id)).collect();
        let values = self
            .db
            .batched_multi_get_cf_opt(self.cf(cf)?, &keys, true, options);
        ids.into_iter()
            .zip(values)
            .map(|(id, value)| Ok((id, value.map_err(rocks("read by id"))?)))
            .collect()
    }

    /// The value in `cf` of each of `timestamps` (sorted), if it has one: one batched read
    /// with `options`.
    fn get_by_timestamps(
        &self,
        cf: &'static str,
        timestamps: impl Iterator<Item = u64>,
        options: &ReadOptions,
    ) -> Result<Vec<Option<DBPinnableSlice<'_>>>, StoreError> {
        let keys: Vec<[u8; 8]> = timestamps.map(timestamp_key).collect();
        debug_assert!(keys.is_sorted());
        self.db
            .batched_multi_get_cf_opt(self.cf(cf)?, &keys, true, options)
            .into_iter()
            .map(|value| value.map_err(rocks("read by timestamp")))
            .collect()
    }

    /// Add to `old` every transfer the store has among `ids`, with its status.
    ///
    /// Every read here goes through one snapshot: the checkpointer writes while this
    /// reads, and a checkpoint that resolved a pending transfer between the read of its
    /// status (none yet) and of its pending row (deleted) would show it with neither.
    pub fn read_transfers_by_id(
        &self,
        ids: Vec<u128>,
        old: &mut OldTransfers,
    ) -> Result<(), StoreError> {
        let view = self.db.snapshot();
        let mut options = ReadOptions::default();
        options.set_snapshot(&view);
        let mut found: Vec<(u64, u128)> = Vec::new();
        for (id, value) in self.get_by_ids(CF_TRANSFER_IDS, ids, &options)? {
            let Some(value) = value else {
                continue;
            };
            let timestamp =
                parse_timestamp_key(&value).map_err(corrupt(CF_TRANSFER_IDS, &id_key(id)))?;
            found.push((timestamp, id));
        }
        found.sort_unstable();
        let timestamps = found.iter().map(|(t, _)| *t);
        let values = self.get_by_timestamps(CF_TRANSFERS, timestamps, &options)?;
        let mut pending = Vec::new();
        for ((timestamp, id), value) in found.iter().zip(values) {
            let key = &timestamp_key(*timestamp);
            let transfer = match value {
                Some(value) => decode_transfer(key, &value)?,
                None => {
                    let reason =
                        format!("names a transfer at {}, which is not stored", key_hex(key));
                    return Err(corrupt(CF_TRANSFER_IDS, &id_key(*id))(reason));
                }
            };
            if transfer.id != *id {
                let reason = format!("filed for id {id}, but the record is of id {}", transfer.id);
                return Err(corrupt(CF_TRANSFERS, key)(reason));
            }
            if transfer.flags.contains(TransferFlags::PENDING) {
                pending.push(transfer);
            } else {
                old.insert(transfer, PendingStatus::NotPending);
            }
        }
        // `pending` is a subsequence of `found`: still in timestamp order.
        let timestamps = pending.iter().map(|t| t.timestamp);
        let statuses = self.get_by_timestamps(CF_TRANSFER_STATUS, timestamps, &options)?;
        let mut unresolved = Vec::new();
        for (transfer, status) in pending.into_iter().zip(statuses) {
            match status {
                Some(value) => {
                    let key = &timestamp_key(transfer.timestamp);
                    let status = decode_status(&value).map_err(corrupt(CF_TRANSFER_STATUS, key))?;
                    old.insert(transfer, status);
                }
                None => unresolved.push(transfer),
            }
        }
        // Without a status row a transfer is still pending, which the store must say too:
        // the ledger holds every pending transfer in memory and trusts that.
        let timestamps = unresolved.iter().map(|t| t.timestamp);
        let rows = self.get_by_timestamps(CF_PENDING, timestamps, &options)?;
        for (transfer, row) in unresolved.into_iter().zip(rows) {
            if row.is_none() {
                let key = &timestamp_key(transfer.timestamp);
                let reason = format!(
                    "pending transfer {} has no status row and no pending row",
                    transfer.id
                );
                return Err(corrupt(CF_TRANSFER_STATUS, key)(reason));
            }
            old.insert(transfer, PendingStatus::Pending);
        }
        Ok(())
    }

    /// Record in `old` which of `ids` the store holds as transiently failed.
    pub fn read_failed_ids(
        &self,
        ids: Vec<u128>,
        old: &mut OldTransfers,
    ) -> Result<(), StoreError> {
        let mut failed = Vec::new();
        for (id, value) in self.get_by_ids(CF_FAILED_IDS, ids, &ReadOptions::default())? {
            let Some(value) = value else {
                continue;
            };
            if !value.is_empty() {
                let reason = format!("value is {} bytes, not empty", value.len());
                return Err(corrupt(CF_FAILED_IDS, &id_key(id))(reason));
            }
            failed.push(id);
        }
        old.set_failed(failed);
        Ok(())
    }

    /// Record in `old` which of `timestamps` belong to a stored transfer.
    pub fn read_transfer_timestamps(
        &self,
        mut timestamps: Vec<u64>,
        old: &mut OldTransfers,
    ) -> Result<(), StoreError> {
        timestamps.sort_unstable();
        timestamps.dedup();
        let options = ReadOptions::default();
        let values = self.get_by_timestamps(CF_TRANSFERS, timestamps.iter().copied(), &options)?;
        for (timestamp, value) in timestamps.into_iter().zip(values) {
            if value.is_some() {
                old.insert_timestamp(timestamp);
            }
        }
        Ok(())
    }

    /// `get_account_transfers` over the transfers at or before `through`, in the filter's
    /// order, up to its limit.
    pub fn read_account_transfers(
        &self,
        filter: &AccountFilter,
        through: u64,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut selected = Vec::new();
        self.scan_account(CF_ACCOUNT_TRANSFERS, filter, through, |key, _| {
            let transfer = self.transfer_of_row(CF_ACCOUNT_TRANSFERS, key, filter.account_id)?;
            if account_filter_matches(filter, &transfer) {
                selected.push(transfer);
            }
            Ok(selected.len())
        })?;
        Ok(selected)
    }

    /// `get_account_balances` over the snapshots of transfers at or before `through`.
    pub fn read_account_balances(
        &self,
        filter: &AccountFilter,
        through: u64,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        let mut selected = Vec::new();
        self.scan_account(CF_BALANCES, filter, through, |key, value| {
            let balance: AccountBalance =
                decode_record(value).map_err(corrupt(CF_BALANCES, key))?;
            let transfer = self.transfer_of_row(CF_BALANCES, key, filter.account_id)?;
            if account_filter_matches(filter, &transfer) {
                selected.push(balance);
            }
            Ok(selected.len())
        })?;
        Ok(selected)
    }

    /// `query_transfers` over the transfers at or before `through`.
    pub fn read_query_transfers(
        &self,
        filter: &QueryFilter,
        through: u64,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut selected = Vec::new();
        let Some((min, max)) = old_bounds(filter.timestamp_min, filter.timestamp_max, through)
        else {
            return Ok(selected);
        };
        if !query_filter_valid(filter) {
            return Ok(selected);
        }
        let limit = filter.limit.min(QUERY_LIMIT_MAX) as usize;
        let options = bounded(timestamp_key(min).to_vec(), timestamp_key(max + 1).to_vec());
        let reversed = filter.flags.contains(QueryFilterFlags::REVERSED);
        let rows = self
            .db
            .iterator_cf_opt(self.cf(CF_TRANSFERS)?, options, direction(reversed));
        for row in rows {
            let (key, value) = row.map_err(rocks("iterate transfers"))?;
            let transfer = decode_transfer(&key, &value)?;
            if query_filter_matches(filter, &transfer) {
                selected.push(transfer);
                if selected.len() == limit {
                    break;
                }
            }
        }
        Ok(selected)
    }

    /// Visit the rows of one account's timeline column family within the filter's time
    /// bounds and `through`, in the filter's order, until `visit` reports the limit.
    fn scan_account(
        &self,
        cf: &'static str,
        filter: &AccountFilter,
        through: u64,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<usize, StoreError>,
    ) -> Result<(), StoreError> {
        let Some((min, max)) = old_bounds(filter.timestamp_min, filter.timestamp_max, through)
        else {
            return Ok(());
        };
        if !account_filter_valid(filter) {
            return Ok(());
        }
        let limit = filter.limit.min(QUERY_LIMIT_MAX) as usize;
        let lower = timeline_key(filter.account_id, min).to_vec();
        let upper = timeline_key(filter.account_id, max + 1).to_vec();
        let reversed = filter.flags.contains(AccountFilterFlags::REVERSED);
        let rows =
            self.db
                .iterator_cf_opt(self.cf(cf)?, bounded(lower, upper), direction(reversed));
        for row in rows {
            let (key, value) = row.map_err(rocks("iterate an account's rows"))?;
            parse_timeline_key(&key).map_err(corrupt(cf, &key))?;
            if visit(&key, &value)? >= limit {
                break;
            }
        }
        Ok(())
    }

    /// The transfer at the timestamp of an account's timeline row, which must be one of
    /// the account's transfers; its absence is corruption.
    fn transfer_of_row(
        &self,
        cf: &'static str,
        key: &[u8],
        account_id: u128,
    ) -> Result<Transfer, StoreError> {
        let (_, timestamp) = parse_timeline_key(key).map_err(corrupt(cf, key))?;
        let transfer_key = timestamp_key(timestamp);
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_TRANSFERS)?, transfer_key)
            .map_err(rocks("read a transfer"))?
            .ok_or_else(|| StoreError::Corrupt {
                cf,
                key: key_hex(key),
                reason: format!("no transfer is stored at {timestamp}"),
            })?;
        let transfer = decode_transfer(&transfer_key, &value)?;
        if transfer.debit_account_id != account_id && transfer.credit_account_id != account_id {
            let reason = format!(
                "transfer {} at {timestamp} is not the account's",
                transfer.id
            );
            return Err(corrupt(cf, key)(reason));
        }
        Ok(transfer)
    }
}

/// A stored transfer, which must be filed under its own timestamp.
fn decode_transfer(key: &[u8], value: &[u8]) -> Result<Transfer, StoreError> {
    decode_filed_transfer(key, value).map_err(corrupt(CF_TRANSFERS, key))
}
