//! Reading a checkpoint back: every row is decoded and checked, then the whole state goes
//! through [`Ledger::restore`], which checks what no single row can show.

use std::collections::BTreeMap;

use protocol::{Account, AccountBalance, Transfer, TransferFlags};
use rocksdb::IteratorMode;

use super::codec::{decode_record, decode_status, key_hex, parse_id_key, parse_timeline_key};
use super::{
    manifest, rocks, CheckpointMeta, Store, StoreError, CF_ACCOUNTS, CF_ACCOUNT_TRANSFERS,
    CF_BALANCES, CF_FAILED_IDS, CF_META, CF_TRANSFERS, CF_TRANSFER_STATUS, CF_TRANSFER_TIMES,
    META_KEY,
};
use crate::ledger::{Ledger, PendingStatus, Snapshot};

/// One consistent view of the database, whatever is written meanwhile.
type View<'a> = rocksdb::Snapshot<'a>;

impl Store {
    /// Rebuilds the whole ledger from the store: (ledger, meta). An empty store gives
    /// (Ledger::new(), None).
    pub fn load_ledger(&self) -> Result<(Ledger, Option<CheckpointMeta>), StoreError> {
        let view = self.db.snapshot();
        let Some(meta) = self.read_meta(&view)? else {
            self.check_empty(&view)?;
            return Ok((Ledger::new(), None));
        };
        let snapshot = Snapshot {
            timestamp_last: meta.timestamp_last,
            accounts: self.read_accounts(&view)?,
            transfers: self.read_transfers(&view)?,
            failed_ids: self.read_failed_ids(&view)?,
            balances: self.read_balances(&view)?,
        };
        let ledger = Ledger::restore(snapshot)?;
        Ok((ledger, Some(meta)))
    }

    pub(super) fn read_meta(&self, view: &View) -> Result<Option<CheckpointMeta>, StoreError> {
        let value = view
            .get_pinned_cf(self.cf(CF_META)?, META_KEY)
            .map_err(rocks("read the manifest"))?;
        value.map(|bytes| manifest::decode(&bytes)).transpose()
    }

    /// Rows without a manifest cannot come from a checkpoint, which writes both at once.
    fn check_empty(&self, view: &View) -> Result<(), StoreError> {
        let data = [
            CF_ACCOUNTS,
            CF_TRANSFERS,
            CF_TRANSFER_TIMES,
            CF_TRANSFER_STATUS,
            CF_ACCOUNT_TRANSFERS,
            CF_BALANCES,
            CF_FAILED_IDS,
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
    fn scan(
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

    /// Transfers with their status: the stored one if resolved, else what the pending
    /// flag implies. Every status row must belong to a transfer.
    fn read_transfers(&self, view: &View) -> Result<Vec<(Transfer, PendingStatus)>, StoreError> {
        let mut statuses = self.read_statuses(view)?;
        let mut transfers = Vec::new();
        self.scan(view, CF_TRANSFERS, |key, value| {
            let transfer: Transfer = decode_record(value)?;
            check_key_is_id(parse_id_key(key)?, transfer.id)?;
            let status = statuses.remove(&transfer.id).unwrap_or(
                if transfer.flags.contains(TransferFlags::PENDING) {
                    PendingStatus::Pending
                } else {
                    PendingStatus::NotPending
                },
            );
            transfers.push((transfer, status));
            Ok(())
        })?;
        if let Some(orphan) = statuses.keys().next() {
            return Err(StoreError::Corrupt {
                cf: CF_TRANSFER_STATUS,
                key: key_hex(&orphan.to_be_bytes()),
                reason: "no transfer has this id".to_owned(),
            });
        }
        Ok(transfers)
    }

    fn read_statuses(&self, view: &View) -> Result<BTreeMap<u128, PendingStatus>, StoreError> {
        let mut statuses = BTreeMap::new();
        self.scan(view, CF_TRANSFER_STATUS, |key, value| {
            statuses.insert(parse_id_key(key)?, decode_status(value)?);
            Ok(())
        })?;
        Ok(statuses)
    }

    fn read_failed_ids(&self, view: &View) -> Result<Vec<u128>, StoreError> {
        let mut failed_ids = Vec::new();
        self.scan(view, CF_FAILED_IDS, |key, value| {
            if !value.is_empty() {
                return Err(format!("value is {} bytes, not empty", value.len()));
            }
            failed_ids.push(parse_id_key(key)?);
            Ok(())
        })?;
        Ok(failed_ids)
    }

    fn read_balances(&self, view: &View) -> Result<Vec<(u128, AccountBalance)>, StoreError> {
        let mut balances = Vec::new();
        self.scan(view, CF_BALANCES, |key, value| {
            let (account_id, timestamp) = parse_timeline_key(key)?;
            let balance: AccountBalance = decode_record(value)?;
            if balance.timestamp != timestamp {
                let stored = balance.timestamp;
                return Err(format!(
                    "key timestamp {timestamp}, record timestamp {stored}"
                ));
            }
            balances.push((account_id, balance));
            Ok(())
        })?;
        Ok(balances)
    }
}

pub(super) fn check_key_is_id(key_id: u128, record_id: u128) -> Result<(), String> {
    if key_id != record_id {
        return Err(format!("key id {key_id}, record id {record_id}"));
    }
    Ok(())
}
