//! Read-only operations: lookups, account transfers and balances, and queries.
//!
//! Filters follow the reference: zero means "any" for the secondary fields and "no bound"
//! for the timestamps, `limit` caps the results (and must be nonzero), and an invalid
//! filter selects nothing rather than failing the request.

use protocol::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, QueryFilter,
    QueryFilterFlags, Transfer,
};

use super::resident::{HistoryEntry, OldTransfers, Slot};
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

    /// The transfers with these ids, in request order; unknown ids are skipped. Sees only
    /// resident transfers: a ledger that evicted some needs
    /// [`Ledger::lookup_transfers_with`].
    pub fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        self.lookup_transfers_with(ids, &OldTransfers::new(self.evicted_through()))
    }

    /// [`Ledger::lookup_transfers`] when some ids may be evicted: `old` holds those, read
    /// at [`Ledger::evicted_through`] or later.
    pub fn lookup_transfers_with(&self, ids: &[u128], old: &OldTransfers) -> Vec<Transfer> {
        let evicted = self.evicted_through();
        assert!(
            evicted == 0 || old.through() >= evicted,
            "old transfers read at {} do not cover those evicted through {evicted}",
            old.through()
        );
        ids.iter()
            .filter_map(|id| match self.transfers.slot(*id) {
                Some(slot) => Some(*self.transfers.get(slot)),
                None => old.get(*id).map(|(transfer, _)| *transfer),
            })
            .collect()
    }

    /// Transfers of one account, oldest first (or newest first with `reversed`). Sees only
    /// resident transfers (see [`Ledger::get_account_transfers_with`]); the same holds for
    /// `get_account_balances` and `query_transfers`.
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        let Some(slot) = self.valid_account_filter(filter) else {
            return Vec::new();
        };
        let selected = self
            .transfers
            .of_account(slot)
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
        let range = time_range(filter, records.len() as u64, |timestamp| {
            records.partition_point(|account| account.timestamp < timestamp) as u64
        });
        select(
            filter,
            records[range.start as usize..range.end as usize].iter(),
        )
    }

    pub fn query_transfers(&self, filter: &QueryFilter) -> Vec<Transfer> {
        if !query_filter_valid(filter) {
            return Vec::new();
        }
        let table = &self.transfers;
        let range = time_range(filter, table.len(), |timestamp| {
            table.partition_point(|transfer| transfer.timestamp < timestamp)
        });
        select(filter, range.map(|slot| table.get(slot)))
    }

    /// [`Ledger::get_account_transfers`] when older transfers may be evicted: `old` is the
    /// store's answer for the transfers at or before `through`, an eviction watermark at
    /// or after [`Ledger::evicted_through`]; memory answers for the later ones.
    pub fn get_account_transfers_with(
        &self,
        filter: &AccountFilter,
        through: u64,
        old: Vec<Transfer>,
    ) -> Vec<Transfer> {
        self.account_split_read(filter, through, old, |recent| {
            self.get_account_transfers(recent)
        })
    }

    /// [`Ledger::get_account_balances`] with the old part from the store, as
    /// [`Ledger::get_account_transfers_with`].
    pub fn get_account_balances_with(
        &self,
        filter: &AccountFilter,
        through: u64,
        old: Vec<AccountBalance>,
    ) -> Vec<AccountBalance> {
        self.account_split_read(filter, through, old, |recent| {
            self.get_account_balances(recent)
        })
    }

    /// The two account reads split at `through`: `read_recent` answers for memory's part
    /// with the filter narrowed to after `through`.
    fn account_split_read<T>(
        &self,
        filter: &AccountFilter,
        through: u64,
        old: Vec<T>,
        read_recent: impl FnOnce(&AccountFilter) -> Vec<T>,
    ) -> Vec<T> {
        let recent = AccountFilter {
            timestamp_min: after(filter.timestamp_min, through),
            ..*filter
        };
        let valid = account_filter_valid(filter);
        let reversed = filter.flags.contains(AccountFilterFlags::REVERSED);
        self.split_read(through, valid, reversed, filter.limit, old, || {
            read_recent(&recent)
        })
    }

    /// [`Ledger::query_transfers`] with the old part from the store, as
    /// [`Ledger::get_account_transfers_with`].
    pub fn query_transfers_with(
        &self,
        filter: &QueryFilter,
        through: u64,
        old: Vec<Transfer>,
    ) -> Vec<Transfer> {
        let recent = QueryFilter {
            timestamp_min: after(filter.timestamp_min, through),
            ..*filter
        };
        let valid = query_filter_valid(filter);
        let reversed = filter.flags.contains(QueryFilterFlags::REVERSED);
        self.split_read(through, valid, reversed, filter.limit, old, || {
            self.query_transfers(&recent)
        })
    }

    /// One answer from the store's part (at or before `through`) and memory's part
    /// (after it), each already in the filter's order and within its limit; nothing for
    /// a filter that is not `valid` as given.
    fn split_read<T>(
        &self,
        through: u64,
        valid: bool,
        reversed: bool,
        limit: u32,
        old: Vec<T>,
        recent: impl FnOnce() -> Vec<T>,
    ) -> Vec<T> {
        assert!(
            through >= self.evicted_through(),
            "a read split at {through} misses transfers evicted through {}",
            self.evicted_through()
        );
        if !valid {
            return Vec::new();
        }
        join_split_read(old, recent(), reversed, limit)
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
        account_filter_valid(filter)
            .then(|| self.accounts.slot(filter.account_id))
            .flatten()
    }
}

/// Whether an account filter can select anything (whether its account exists aside).
pub fn account_filter_valid(filter: &AccountFilter) -> bool {
    let sides = AccountFilterFlags(AccountFilterFlags::DEBITS.0 | AccountFilterFlags::CREDITS.0);
    filter.account_id != 0
        && filter.account_id != u128::MAX
        && filter.limit != 0
        && filter.flags.0 & !AccountFilterFlags::KNOWN_BITS == 0
        && filter.flags.0 & sides.0 != 0
        && filter.reserved.iter().all(|byte| *byte == 0)
        && timestamps_valid(filter.timestamp_min, filter.timestamp_max)
}

/// Whether a transfer of the filter's account is one the filter selects.
pub fn account_filter_matches(filter: &AccountFilter, transfer: &Transfer) -> bool {
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

pub fn query_filter_valid(filter: &QueryFilter) -> bool {
    filter.limit != 0
        && filter.flags.0 & !QueryFilterFlags::KNOWN_BITS == 0
        && filter.reserved.iter().all(|byte| *byte == 0)
        && timestamps_valid(filter.timestamp_min, filter.timestamp_max)
}

/// The fields a [`QueryFilter`] selects on.
trait Queried: Copy {
    fn user_data(&self) -> [u128; 3];
    fn ledger(&self) -> u32;
    fn code(&self) -> u16;
}

/// Accounts and transfers carry the selected fields under the same names.
macro_rules! impl_queried {
    ($($record:ty),*) => {$(
        impl Queried for $record {
            fn user_data(&self) -> [u128; 3] {
                [
                    self.user_data_128,
                    self.user_data_64.into(),
                    self.user_data_32.into(),
                ]
            }
            fn ledger(&self) -> u32 {
                self.ledger
            }
            fn code(&self) -> u16 {
                self.code
            }
        }
    )*};
}

impl_queried!(Account, Transfer);

/// Whether a transfer (already within the time bounds) matches the filter's fields.
pub fn query_filter_matches(filter: &QueryFilter, transfer: &Transfer) -> bool {
    query_matches(filter, transfer)
}

fn query_matches<T: Queried>(filter: &QueryFilter, record: &T) -> bool {
    let wanted = [
        filter.user_data_128,
        filter.user_data_64.into(),
        filter.user_data_32.into(),
    ];
    wanted
        .iter()
        .zip(record.user_data())
        .all(|(wanted, value)| any_or_equal(*wanted, value))
        && any_or_equal(filter.ledger.into(), record.ledger().into())
        && any_or_equal(filter.code.into(), record.code().into())
}

/// The records (already within the time bounds) that match the filter's fields, in the
/// filter's order, up to its limit.
fn select<'a, T: Queried + 'a>(
    filter: &QueryFilter,
    records: impl DoubleEndedIterator<Item = &'a T>,
) -> Vec<T> {
    let selected = records.filter(|record| query_matches(filter, *record));
    take(
        selected.copied(),
        filter.flags.contains(QueryFilterFlags::REVERSED),
        filter.limit,
    )
}

fn any_or_equal(wanted: u128, value: u128) -> bool {
    wanted == 0 || wanted == value
}

fn timestamps_valid(min: u64, max: u64) -> bool {
    min != u64::MAX && max != u64::MAX && (max == 0 || min <= max)
}

/// The index range of `len` timestamp-ordered records within the filter's time bounds
/// (`timestamp_max == 0`: no upper bound), given the index of the first record at or after
/// a timestamp.
fn time_range(
    filter: &QueryFilter,
    len: u64,
    first_at_or_after: impl Fn(u64) -> u64,
) -> std::ops::Range<u64> {
    let start = first_at_or_after(filter.timestamp_min);
    // timestamps_valid rejected u64::MAX, so `max + 1` cannot overflow.
    let end = if filter.timestamp_max == 0 {
        len
    } else {
        first_at_or_after(filter.timestamp_max + 1)
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

/// One page from a range read split at a watermark: `old`, the part at or before it, and
/// `recent`, the part after it, each already in the filter's order and within its limit.
/// Oldest first the old part leads, newest first the recent one; then the page is cut at
/// `limit` (capped at [`QUERY_LIMIT_MAX`]).
pub fn join_split_read<T>(old: Vec<T>, recent: Vec<T>, reversed: bool, limit: u32) -> Vec<T> {
    let limit = limit.min(QUERY_LIMIT_MAX) as usize;
    let (mut page, second) = if reversed {
        (recent, old)
    } else {
        (old, recent)
    };
    page.extend(second);
    page.truncate(limit);
    page
}

/// The lower time bound of a read's part after the split at `through`.
fn after(timestamp_min: u64, through: u64) -> u64 {
    timestamp_min.max(through + 1)
}
