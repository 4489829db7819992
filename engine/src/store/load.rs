//! Reading a checkpoint back without its history: the manifest, every account and every
//! pending transfer, each row decoded and checked, then [`Ledger::restore`], which checks
//! them against the manifest's sums and the ledger's rules. The cost depends on the
//! accounts and pending transfers held, not on the transfers ever made.

use protocol::{Account, Transfer, TransferFlags};
use rocksdb::IteratorMode;

use super::codec::{
    decode_filed_transfer, decode_record, key_hex, parse_id_key, parse_timestamp_key, timestamp_key,
};
use super::{
    manifest, rocks, CheckpointMeta, Store, StoreError, CF_ACCOUNTS, CF_ACCOUNT_TRANSFERS,
    CF_BALANCES, CF_FAILED_IDS, CF_META, CF_PENDING, CF_TRANSFERS, CF_TRANSFER_IDS,
    CF_TRANSFER_STATUS, META_KEY,
};
use crate::ledger::{CheckpointTotals, Ledger, Snapshot};

/// One consistent view of the database, whatever is written meanwhile.
type View<'a> = rocksdb::Snapshot<'a>;

impl Store {
    /// Rebuilds the ledger from the store: (ledger, meta). An empty store gives
    /// (Ledger::new(), None).
    pub fn load_ledger(&self) -> Result<(Ledger, Option<CheckpointMeta>), StoreError> {
        self.drop_unmanifested_transfers()?;
        let view = self.db.snapshot();
        let Some((meta, totals)) = self.read_manifest(&view)? else {
            self.check_empty(&view)?;
            return Ok((Ledger::new(), None));
        };
        self.check_transfers_last(&view, &totals)?;
        let snapshot = Snapshot {
            timestamp_last: meta.timestamp_last,
            accounts: self.read_accounts(&view)?,
            pending: self.read_pending(&view)?,
            totals,
        };
        let ledger = Ledger::restore(snapshot)?;
        Ok((ledger, Some(meta)))
    }

    pub(super) fn read_meta(&self, view: &View) -> Result<Option<CheckpointMeta>, StoreError> {
        Ok(self.read_manifest(view)?.map(|(meta, _)| meta))
    }

    pub(super) fn read_manifest(
        &self,
        view: &View,
    ) -> Result<Option<(CheckpointMeta, CheckpointTotals)>, StoreError> {
        let value = view
            .get_pinned_cf(self.cf(CF_META)?, META_KEY)
            .map_err(rocks("read the manifest"))?;
        value.map(|bytes| manifest::decode(&bytes)).transpose()
    }

    /// A checkpoint ingests its transfers before it writes its manifest: a crash between
    /// the two leaves transfers newer than the manifest's newest, which no checkpoint
    /// holds (WAL replay makes them again), or transfers and no manifest at all after a
    /// crash in the first checkpoint. They are deleted here.
    fn drop_unmanifested_transfers(&self) -> Result<(), StoreError> {
        let view = self.db.snapshot();
        let manifest = self.read_manifest(&view)?;
        let after = manifest.map_or(0, |(_, totals)| totals.transfers_timestamp_last + 1);
        let newest = self.newest_transfer(&view)?;
        drop(view);
        // A key that is no timestamp is left for `check_transfers_last` to report.
        if newest.is_some_and(|newest| newest.is_ok_and(|newest| newest >= after)) {
            let transfers = self.cf(CF_TRANSFERS)?;
            tracing::warn!(
                after,
                "dropping transfers of an interrupted checkpoint (the WAL holds them)"
            );
            self.db
                .delete_range_cf(transfers, timestamp_key(after), timestamp_key(u64::MAX))
                .map_err(rocks("drop an interrupted checkpoint's transfers"))?;
        }
        Ok(())
    }

    /// The timestamp of the newest row of `transfers`, if any; a key that is no timestamp
    /// is the inner error.
    fn newest_transfer(&self, view: &View) -> Result<Option<Result<u64, StoreError>>, StoreError> {
        let mut rows = view.iterator_cf(self.cf(CF_TRANSFERS)?, IteratorMode::End);
        let Some(row) = rows.next() else {
            return Ok(None);
        };
        let (key, _) = row.map_err(rocks("iterate"))?;
        let timestamp = parse_timestamp_key(&key).map_err(|reason| StoreError::Corrupt {
            cf: CF_TRANSFERS,
            key: key_hex(&key),
            reason,
        });
        Ok(Some(timestamp))
    }

    /// The newest row of `transfers` (filed by timestamp) is the newest transfer the
    /// manifest counts: a cheap check that the transfers the start does not read are the
    /// ones it stands for.
    fn check_transfers_last(
        &self,
        view: &View,
        totals: &CheckpointTotals,
    ) -> Result<(), StoreError> {
        let newest = match self.newest_transfer(view)? {
            Some(newest) => newest?,
            None => 0,
        };
        if newest != totals.transfers_timestamp_last {
            return Err(StoreError::Corrupt {
                cf: CF_TRANSFERS,
                key: key_hex(&newest.to_be_bytes()),
                reason: format!(
                    "the newest transfer is at {newest}, the checkpoint manifest says {}",
                    totals.transfers_timestamp_last
                ),
            });
        }
        Ok(())
    }

    /// Rows without a manifest cannot come from a checkpoint, which writes both at once.
    fn check_empty(&self, view: &View) -> Result<(), StoreError> {
        let data = [
            CF_ACCOUNTS,
            CF_TRANSFERS,
            CF_TRANSFER_IDS,
            CF_TRANSFER_STATUS,
            CF_ACCOUNT_TRANSFERS,
            CF_BALANCES,
            CF_FAILED_IDS,
            CF_PENDING,
        ];
        for cf in data {
            let mut rows = view.iterator_cf(self.cf(cf)?, IteratorMode::Start);
            if let Some(row) = rows.next() {
                let (key, _) = row.map_err(rocks("iterate"))?;
                let key = key_hex(&key);
                let reason = "a row but no checkpoint manifest".to_owned();
                return Err(StoreError::Corrupt { cf, key, reason });
            }
        }
        Ok(())
    }

    /// Visit every row of `cf` in key order; `visit` says what is wrong with a row.
    pub(super) fn scan(
        &self,
        view: &View,
        cf: &'static str,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        for row in view.iterator_cf(self.cf(cf)?, IteratorMode::Start) {
            let (key, value) = row.map_err(rocks("iterate"))?;
            visit(&key, &value).map_err(|reason| StoreError::Corrupt {
                cf,
                key: key_hex(&key),
                reason,
            })?;
        }
        Ok(())
    }

    pub(super) fn read_accounts(&self, view: &View) -> Result<Vec<Account>, StoreError> {
        let mut accounts = Vec::new();
        self.scan(view, CF_ACCOUNTS, |key, value| {
            let account: Account = decode_record(value)?;
            check_key_is_id(parse_id_key(key)?, account.id)?;
            accounts.push(account);
            Ok(())
        })?;
        Ok(accounts)
    }

    /// The stored transfers still pending, keyed by their timestamp.
    fn read_pending(&self, view: &View) -> Result<Vec<Transfer>, StoreError> {
        let mut pending = Vec::new();
        self.scan(view, CF_PENDING, |key, value| {
            let transfer = decode_filed_transfer(key, value)?;
            if !transfer.flags.contains(TransferFlags::PENDING) {
                return Err(format!(
                    "transfer {} is not a pending transfer",
                    transfer.id
                ));
            }
            pending.push(transfer);
            Ok(())
        })?;
        Ok(pending)
    }
}

pub(super) fn check_key_is_id(key_id: u128, record_id: u128) -> Result<(), String> {
    if key_id != record_id {
        return Err(format!("key id {key_id}, record id {record_id}"));
    }
    Ok(())
}
