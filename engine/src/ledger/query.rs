//! Read-only operations: lookups, account transfers and balances, and queries.
//!
//! Filters follow the reference: zero means "any" for the secondary fields and "no bound"
//! for the timestamps, `limit` caps the results (and must be nonzero), and an invalid
//! filter selects nothing rather than failing the request.

use protocol::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, QueryFilter,
    QueryFilterFlags, Transfer,
};

use super::stores::{HistoryEntry, Slot};
use super::Ledger;

/// Most records one query returns (one reply's worth of 128-byte records).
pub const QUERY_LIMIT_MAX: u32 = protocol::BATCH_EVENTS_MAX;

impl Ledger {
    /// The accounts with these ids, in request order; unknown ids are skipped.
    pub fn lookup_accounts(&self, ids: &[u128]) -> Vec<Account> {
        ids.iter()
            .filter_map(|id| self.accounts.by_id(*id))
            .copied()
            .collect()
    }

    /// The transfers with these ids, in request order; unknown ids are skipped.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        ids.iter()
            .filter_map(|id| self.transfers.by_id(*id))
            .copied()
            .collect()
    }

    /// Transfers of one account, oldest first (or newest first with `reversed`).
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        let Some(slot) = self.valid_account_filter(filter) else {
            return Vec::new();
        };
        let transfers = self
            .accounts
            .transfer_slots(slot)
            .iter()
            .map(|t| self.transfers.get(*t));
        let selected = transfers
            .filter(|transfer| account_filter_matches(filter, transfer))
            .copied();
        take(
            selected,
            filter.flags.contains(AccountFilterFlags::REVERSED),
            filter.limit,
        )
    }

    /// Balance snapshots of one account with the `history` flag, taken right after each of
    /// its transfers that the filter selects.
    pub fn get_account_balances(&self, filter: &AccountFilter) -> Vec<AccountBalance> {
        let Some(slot) = self.valid_account_filter(filter) else {
            return Vec::new();
        };
        if !self
            .accounts
            .get(slot)
            .flags
            .contains(AccountFlags::HISTORY)
        {
            return Vec::new();
        }
        let selected = self
            .accounts
            .history_of(slot)
            .filter(|entry| account_filter_matches(filter, self.transfers.get(entry.transfer_slot)))
            .map(|entry| self.history_balance(entry));
        take(
            selected,
            filter.flags.contains(AccountFilterFlags::REVERSED),
            filter.limit,
        )
    }

    pub fn query_accounts(&self, filter: &QueryFilter) -> Vec<Account> {
        if !query_filter_valid(filter) {
            return Vec::new();
        }
        let records = self.accounts.records();
        let range = timestamp_range(
            records,
            |a| a.timestamp,
            filter.timestamp_min,
            filter.timestamp_max,
        );
        let selected = records[range].iter().filter(|account| {
            query_fields_match(
                filter,
                [
                    account.user_data_128,
                    account.user_data_64.into(),
                    account.user_data_32.into(),
                ],
                account.ledger,
                account.code,
            )
        });
        take(
            selected.copied(),
            filter.flags.contains(QueryFilterFlags::REVERSED),
            filter.limit,
        )
    }

    pub fn query_transfers(&self, filter: &QueryFilter) -> Vec<Transfer> {
        if !query_filter_valid(filter) {
            return Vec::new();
        }
        let store = &self.transfers;
        let start = store.partition_point(|t| t.timestamp < filter.timestamp_min);
        let end = match filter.timestamp_max {
            0 => store.len(),
            max => store.partition_point(|t| t.timestamp <= max),
        };
        let selected = (start as Slot..end.max(start) as Slot)
            .map(|slot| store.get(slot))
            .filter(|transfer| {
                query_fields_match(
                    filter,
                    [
                        transfer.user_data_128,
                        transfer.user_data_64.into(),
                        transfer.user_data_32.into(),
                    ],
                    transfer.ledger,
                    transfer.code,
                )
            });
        take(
            selected.copied(),
            filter.flags.contains(QueryFilterFlags::REVERSED),
            filter.limit,
        )
    }

    pub(super) fn history_balance(&self, entry: &HistoryEntry) -> AccountBalance {
        AccountBalance {
            debits_pending: entry.debits_pending,
            debits_posted: entry.debits_posted,
            credits_pending: entry.credits_pending,
            credits_posted: entry.credits_posted,
            timestamp: self.transfers.get(entry.transfer_slot).timestamp,
            reserved: [0; 56],
        }
    }

    /// The account's slot when the filter can select anything at all.
    fn valid_account_filter(&self, filter: &AccountFilter) -> Option<Slot> {
        let sides =
            AccountFilterFlags(AccountFilterFlags::DEBITS.0 | AccountFilterFlags::CREDITS.0);
        let valid = filter.account_id != 0
            && filter.account_id != u128::MAX
            && filter.limit != 0
            && filter.flags.0 & !AccountFilterFlags::KNOWN_BITS == 0
            && filter.flags.0 & sides.0 != 0
            && filter.reserved.iter().all(|byte| *byte == 0)
            && timestamps_valid(filter.timestamp_min, filter.timestamp_max);
        valid
            .then(|| self.accounts.slot(filter.account_id))
            .flatten()
    }
}

fn account_filter_matches(filter: &AccountFilter, transfer: &Transfer) -> bool {
    let side_matches = (filter.flags.contains(AccountFilterFlags::DEBITS)
        && transfer.debit_account_id == filter.account_id)
        || (filter.flags.contains(AccountFilterFlags::CREDITS)
            && transfer.credit_account_id == filter.account_id);
    side_matches
        && any_or_equal(filter.user_data_128, transfer.user_data_128)
        && any_or_equal(filter.user_data_64.into(), transfer.user_data_64.into())
        && any_or_equal(filter.user_data_32.into(), transfer.user_data_32.into())
        && any_or_equal(filter.code.into(), transfer.code.into())
        && filter.timestamp_min <= transfer.timestamp
        && (filter.timestamp_max == 0 || transfer.timestamp <= filter.timestamp_max)
}

fn query_filter_valid(filter: &QueryFilter) -> bool {
    filter.limit != 0
        && filter.flags.0 & !QueryFilterFlags::KNOWN_BITS == 0
        && filter.reserved.iter().all(|byte| *byte == 0)
        && timestamps_valid(filter.timestamp_min, filter.timestamp_max)
}

fn query_fields_match(filter: &QueryFilter, user_data: [u128; 3], ledger: u32, code: u16) -> bool {
    any_or_equal(filter.user_data_128, user_data[0])
        && any_or_equal(filter.user_data_64.into(), user_data[1])
        && any_or_equal(filter.user_data_32.into(), user_data[2])
        && any_or_equal(filter.ledger.into(), ledger.into())
        && any_or_equal(filter.code.into(), code.into())
}

fn any_or_equal(wanted: u128, value: u128) -> bool {
    wanted == 0 || wanted == value
}

fn timestamps_valid(min: u64, max: u64) -> bool {
    min != u64::MAX && max != u64::MAX && (max == 0 || min <= max)
}

/// The index range of `records` (sorted by timestamp) within `[min, max]`; `max == 0`
/// means no upper bound.
fn timestamp_range<T>(
    records: &[T],
    key: impl Fn(&T) -> u64,
    min: u64,
    max: u64,
) -> std::ops::Range<usize> {
    let start = records.partition_point(|record| key(record) < min);
    let end = if max == 0 {
        records.len()
    } else {
        records.partition_point(|record| key(record) <= max)
    };
    start..end.max(start)
}

/// The first `limit` items (capped at [`QUERY_LIMIT_MAX`]), from the back when reversed.
fn take<T>(items: impl DoubleEndedIterator<Item = T>, reversed: bool, limit: u32) -> Vec<T> {
    let limit = limit.min(QUERY_LIMIT_MAX) as usize;
    if reversed {
        items.rev().take(limit).collect()
    } else {
        items.take(limit).collect()
    }
}
