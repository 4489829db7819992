//! The ledger: a pure, deterministic double-entry state machine.
//!
//! Inputs are requests (an operation, its events, and the engine's clock reading `now`)
//! and explicit expiry steps; outputs are one result per event plus the set of changed
//! objects ([`Changes`]). The ledger reads no clock, does no I/O, uses no randomness that
//! can reach a result (hash maps are only ever probed, never iterated for output), so
//! replaying the same inputs from the same state gives the same results and the same
//! [`Ledger::state_hash`], bit for bit. That is what lets the WAL log inputs only.
//!
//! Semantics and result precedence are those of `shared/SEMANTICS.md`:
//! - [`Ledger::create_accounts`] / [`Ledger::create_transfers`]: linked chains apply
//!   atomically (an undo log rolls back a failed chain), imported events carry their own
//!   timestamps, every other event is stamped `max(now, last + 1) + index`.
//! - [`Ledger::expire`]: voids pending transfers whose timeout passed, in order of expiry
//!   then creation. The engine calls it with its own clock and logs the call.
//! - lookups and queries read the state and never change it.

mod changes;
mod create_account;
mod create_transfer;
mod hash;
mod index;
mod lookahead;
mod memory;
mod query;
mod resident;
#[doc(hidden)]
pub use resident::set_chunk_transfers;
mod restore;

use protocol::{Account, AccountFlags, CreateResult, Transfer, TransferFlags, TIMESTAMP_MAX};

pub use changes::Changes;
pub use hash::CheckpointTotals;
pub(crate) use hash::{account_hash, balance_hash, failed_id_hash, transfer_hash};
pub use query::{
    account_filter_matches, account_filter_valid, join_split_read, query_filter_matches,
    query_filter_valid, QUERY_LIMIT_MAX,
};
pub use resident::{OldTransfers, PendingStatus};
pub use restore::{RestoreError, Snapshot};

use changes::{ChangeTracker, Undo, UndoLog};
use lookahead::{Lookahead, Window};
use resident::{AccountTable, TransferTable};

/// How far ahead of the newest result its memory is requested (results are
/// 16 bytes: four cache lines ahead).
const WRITE_AHEAD_RESULTS: usize = 16;

/// A point in the ledger's history, for eviction: transfers created, pending transfers
/// resolved and transient failures recorded up to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointMark {
    pub transfers: u64,
    pub resolutions: u64,
    pub failures: u64,
}

/// The state of every account and transfer, and the rules that change it.
///
/// `Clone` exists for tests and tools that compare a state with an alternative history.
#[derive(Clone, Default)]
pub struct Ledger {
    accounts: AccountTable,
    transfers: TransferTable,
    /// The newest timestamp handed out (or passed to `expire`); never goes backwards.
    timestamp_last: u64,
    undo: UndoLog,
    changes: ChangeTracker,
    /// Sum of the hashes of balance history entries that left memory (see `hash.rs`).
    evicted_history_digest: u128,
    /// What looking ahead learned about the event being applied (see `lookahead.rs`).
    lookahead: Lookahead,
}

/// The parts of `create_accounts` and `create_transfers` that are the same for both: one
/// event type, its status enum and the statuses shared by both operations.
trait Event: Copy {
    type Status: Copy + PartialEq;
    const CREATED: Self::Status;
    const LINKED_EVENT_FAILED: Self::Status;
    const LINKED_EVENT_CHAIN_OPEN: Self::Status;
    const IMPORTED_EVENT_EXPECTED: Self::Status;
    const IMPORTED_EVENT_NOT_EXPECTED: Self::Status;
    const TIMESTAMP_MUST_BE_ZERO: Self::Status;
    const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Self::Status;
    const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Self::Status;

    fn linked(&self) -> bool;
    fn imported(&self) -> bool;
    fn timestamp(&self) -> u64;
    fn result(status: Self::Status, timestamp: u64) -> CreateResult;
    /// Validate and apply one event at `timestamp`; returns its status and the timestamp
    /// its result carries.
    fn create(ledger: &mut Ledger, event: &Self, timestamp: u64) -> (Self::Status, u64);
    /// Hash the ids the event names and request their index buckets.
    fn look_ahead(ledger: &Ledger, event: &Self) -> Lookahead;
    /// Later, with those buckets cached: guess the slots of the records the event reads
    /// and request them.
    fn look_closer(ledger: &Ledger, lookahead: &mut Lookahead);
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// The newest timestamp the ledger has handed out or been advanced to.
    pub fn timestamp_last(&self) -> u64 {
        self.timestamp_last
    }

    pub fn accounts_count(&self) -> u64 {
        self.accounts.len() as u64
    }

    /// Transfers created since the ledger was built or restored, resident or not.
    pub fn transfers_count(&self) -> u64 {
        self.transfers.len()
    }

    /// Transfers held in memory: the recent chunks plus old ones kept because they may
    /// still change.
    pub fn transfers_resident(&self) -> u64 {
        self.transfers.resident_len()
    }

    /// Transfers still pending (neither posted, voided nor expired).
    pub fn transfers_pending(&self) -> u64 {
        self.transfers.pending_len()
    }

    /// Transfers of evicted chunks kept in memory because they may still change.
    pub fn transfers_retained(&self) -> u64 {
        self.transfers.retained_len()
    }

    /// Pending transfers with a timeout, waiting for their expiry.
    pub fn expirations_pending(&self) -> u64 {
        self.transfers.expiry_len()
    }

    /// Transfer ids remembered in memory as transiently failed (until a checkpoint holds
    /// them).
    pub fn failed_ids_count(&self) -> u64 {
        self.transfers.failed_len()
    }

    /// The eviction watermark: every transfer with a later timestamp is in memory; older
    /// ones may only be in the store (0: nothing was ever evicted). Requests that name
    /// transfers by id need [`OldTransfers`] read at this watermark or later.
    pub fn evicted_through(&self) -> u64 {
        self.transfers.evicted_through()
    }

    /// Where the ledger stood when [`Ledger::take_changes`] was called: once the store
    /// has durably written those changes, this is what [`Ledger::evict`] may drop.
    pub fn checkpoint_mark(&self) -> CheckpointMark {
        CheckpointMark {
            transfers: self.transfers.len(),
            resolutions: self.transfers.resolutions_count(),
            failures: self.transfers.failures_count() - self.changes.failed.len() as u64,
        }
    }

    /// Bumped whenever a transfer leaves memory: reads from the store made for an older
    /// generation may miss what left since, and must be repeated.
    pub fn eviction_generation(&self) -> u64 {
        self.transfers.eviction_generation()
    }

    /// Move old transfers out of memory. `checkpointed` is the [`Ledger::checkpoint_mark`] of a
    /// checkpoint the store has durably written: whole chunks of the transfers it holds
    /// are dropped, oldest first, as long as `keep_recent` transfers stay in chunks.
    /// Transfers that may still change (pending, or resolved after `checkpointed`) stay, and
    /// leave once a later checkpoint mark covers their resolution. Returns the number of
    /// transfers that left memory.
    pub fn evict(&mut self, checkpointed: CheckpointMark, keep_recent: u64) -> u64 {
        assert!(!self.undo.is_active(), "eviction inside a linked chain");
        assert!(
            checkpointed.transfers <= self.changes.transfers_from,
            "checkpoint mark beyond the changes taken"
        );
        assert!(
            checkpointed.failures + self.changes.failed.len() as u64
                <= self.transfers.failures_count(),
            "checkpoint mark beyond the failures taken"
        );
        let resident_before = self.transfers.resident_len();
        self.transfers.release_failed(checkpointed.failures);
        self.transfers
            .release_checkpointed(checkpointed.resolutions);
        let uncheckpointed = self.transfers.uncheckpointed();
        while let Some((first, chunk)) =
            self.transfers
                .evict_chunk(checkpointed.transfers, keep_recent, &uncheckpointed)
        {
            let end = first + chunk.len() as u64;
            assert!(
                end <= self.changes.transfers_from,
                "evicted transfers that no checkpoint took"
            );
            for entry in self.accounts.evict_history_before(end) {
                let transfer = &chunk[(entry.transfer_slot - first) as usize];
                let account_id = self.accounts.get(entry.account_slot).id;
                self.evicted_history_digest =
                    self.evicted_history_digest
                        .wrapping_add(hash::history_entry_hash(
                            account_id,
                            transfer.timestamp,
                            &entry,
                        ));
            }
            assert!(
                self.accounts.history_end() - self.accounts.history_resident() as u64
                    <= self.changes.history_from,
                "evicted balance history that no checkpoint took"
            );
            self.transfers.recycle(chunk);
        }
        resident_before.saturating_sub(self.transfers.resident_len())
    }

    /// Create accounts when transfers were evicted: `old` must hold the timestamps of
    /// evicted transfers that imported accounts of the batch ask for.
    pub fn create_accounts_with(
        &mut self,
        now: u64,
        events: &[Account],
        old: &mut OldTransfers,
    ) -> Vec<CreateResult> {
        self.execute_with(now, events, old)
    }

    /// Create transfers that may name evicted transfers (by id or pending id): `old` must
    /// hold every one of those, read at [`Ledger::evicted_through`] or later.
    pub fn create_transfers_with(
        &mut self,
        now: u64,
        events: &[Transfer],
        old: &mut OldTransfers,
    ) -> Vec<CreateResult> {
        self.execute_with(now, events, old)
    }

    /// [`Ledger::execute`] with the batch's evicted transfers lent to the store for the
    /// duration (moved in and back, no copy).
    fn execute_with<E: Event>(
        &mut self,
        now: u64,
        events: &[E],
        old: &mut OldTransfers,
    ) -> Vec<CreateResult> {
        std::mem::swap(&mut self.transfers.old, old);
        let results = self.execute(now, events);
        std::mem::swap(&mut self.transfers.old, old);
        results
    }

    /// Create accounts; one result per event, in order. `now` is the engine's clock.
    pub fn create_accounts(&mut self, now: u64, events: &[Account]) -> Vec<CreateResult> {
        self.execute(now, events)
    }

    /// Create transfers; one result per event, in order. `now` is the engine's clock.
    pub fn create_transfers(&mut self, now: u64, events: &[Transfer]) -> Vec<CreateResult> {
        self.execute(now, events)
    }

    /// Where the pending transfer `id` stands; `None` when no resident transfer has that
    /// id (an evicted transfer is never pending).
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.transfers
            .slot(id)
            .map(|slot| self.transfers.status(slot))
    }

    /// When the next pending transfer expires, if any has a timeout: the engine wakes up
    /// at that instant to call [`Ledger::expire`].
    pub fn expiry_timestamp_next(&self) -> Option<u64> {
        self.transfers
            .expiry()
            .first()
            .map(|(expires_at, _)| *expires_at)
    }

    /// Void every pending transfer whose expiry (`timestamp + timeout`) is at or before
    /// `now`, oldest expiry first, ties by creation. Returns the expired transfer ids.
    /// Also advances the ledger clock to `now`, so later events are stamped after it.
    pub fn expire(&mut self, now: u64) -> Vec<u128> {
        assert!(now <= TIMESTAMP_MAX, "engine clock out of range: {now}");
        let mut expired = Vec::new();
        while let Some((expires_at, slot)) = self.transfers.expiry_due(now) {
            assert!(self.transfers.expiry_remove(expires_at, slot));
            let pending = *self.transfers.get(slot);
            let before = self.transfers.resolve(slot, PendingStatus::Expired);
            assert_eq!(
                before,
                PendingStatus::Pending,
                "expiry of a resolved transfer"
            );
            self.release_pending(&pending);
            self.changes.resolved.push(slot);
            expired.push(pending.id);
        }
        self.timestamp_last = self.timestamp_last.max(now);
        expired
    }

    /// Hand over everything changed since the previous call, in the vectors of the last
    /// [`Ledger::recycle_changes`] if there was one.
    pub fn take_changes(&mut self) -> Changes {
        assert!(
            !self.undo.is_active(),
            "changes taken inside a linked chain"
        );
        let mut changes = std::mem::take(&mut self.changes.spare);
        changes.accounts.extend(
            self.changes
                .sorted_accounts()
                .iter()
                .filter(|slot| (**slot as usize) < self.accounts.len())
                .map(|slot| *self.accounts.get(*slot)),
        );
        self.changes.clear_accounts();
        // Sized once: extending chunk by chunk would grow (and copy) a fresh vector a
        // dozen times per checkpoint.
        changes
            .transfers
            .reserve((self.transfers.len() - self.changes.transfers_from) as usize);
        for chunk in self.transfers.chunks_from(self.changes.transfers_from) {
            changes.transfers.extend_from_slice(chunk);
        }
        self.changes.transfers_from = self.transfers.len();
        changes
            .pending_statuses
            .extend(self.changes.resolved.drain(..).map(|slot| {
                // A rollback drops its chain's resolutions: every slot left here
                // holds a transfer it resolved for good.
                let status = self.transfers.status(slot);
                assert!(
                    !matches!(status, PendingStatus::Pending | PendingStatus::NotPending),
                    "resolution of slot {slot} left as {status:?}"
                );
                (*self.transfers.get(slot), status)
            }));
        changes
            .balances
            .extend(
                self.accounts
                    .history_from(self.changes.history_from)
                    .map(|entry| {
                        (
                            self.accounts.get(entry.account_slot).id,
                            self.history_balance(entry),
                        )
                    }),
            );
        self.changes.history_from = self.accounts.history_end();
        // The tracker goes on in the spare's (empty) vector.
        std::mem::swap(&mut changes.failed_ids, &mut self.changes.failed);
        changes
    }

    /// Give back a [`Changes`] that is no longer needed (written to the store): the next
    /// [`Ledger::take_changes`] fills its vectors. At a million changed accounts a
    /// checkpoint's changes are ~200 MB, and the page faults of fresh memory for them were
    /// most of what taking them cost. A vector more than twice as large as this use
    /// needed is dropped, so memory comes back after a burst.
    pub fn recycle_changes(&mut self, mut changes: Changes) {
        changes.clear_for_reuse();
        self.changes.spare = changes;
    }

    /// Run one request: stamp timestamps, apply events in order with linked-chain
    /// atomicity, and produce exactly one result per event.
    fn execute<E: Event>(&mut self, now: u64, events: &[E]) -> Vec<CreateResult> {
        let timestamp_first = self.reserve_timestamps(now, events.len());
        let imported_batch = events.first().is_some_and(E::imported);
        let mut results = Vec::with_capacity(events.len());
        let mut chain_start: Option<usize> = None;
        let mut chain_broken = false;
        let mut window = Window::start(self, events);
        for (index, event) in events.iter().enumerate() {
            self.lookahead = window.advance(self, events, index);
            let timestamp = timestamp_first + index as u64;
            if event.linked() && chain_start.is_none() {
                chain_start = Some(index);
                self.undo.begin();
                self.changes.chain_resolved_from = self.changes.resolved.len();
            }
            // A chain still open at the request's last event is reported on that event
            // even when an earlier event already broke the chain (the reference checks
            // the open chain first).
            let (status, result_timestamp) = if event.linked() && index + 1 == events.len() {
                (E::LINKED_EVENT_CHAIN_OPEN, timestamp)
            } else if chain_broken {
                (E::LINKED_EVENT_FAILED, timestamp)
            } else if let Some(status) = check_import(event, imported_batch, timestamp) {
                (status, timestamp)
            } else {
                let event_timestamp = if event.imported() {
                    event.timestamp()
                } else {
                    timestamp
                };
                E::create(self, event, event_timestamp)
            };
            if status != E::CREATED && !chain_broken {
                if let Some(start) = chain_start {
                    chain_broken = true;
                    self.rollback();
                    for (offset, result) in results[start..index].iter_mut().enumerate() {
                        *result = E::result(
                            E::LINKED_EVENT_FAILED,
                            timestamp_first + (start + offset) as u64,
                        );
                    }
                }
            }
            results.push(E::result(status, result_timestamp));
            memory::prefetch_spare(&results, index + WRITE_AHEAD_RESULTS);
            if !event.linked() || index + 1 == events.len() {
                if chain_start.take().is_some() {
                    self.undo.commit();
                }
                chain_broken = false;
            }
        }
        self.lookahead = Lookahead::default();
        debug_assert_eq!(results.len(), events.len());
        results
    }

    /// Timestamps of a request: strictly after everything before, and not before `now`.
    fn reserve_timestamps(&mut self, now: u64, count: usize) -> u64 {
        let first = now.max(self.timestamp_last + 1);
        if count > 0 {
            let last = first + count as u64 - 1;
            assert!(last <= TIMESTAMP_MAX, "engine clock out of range: {last}");
            self.timestamp_last = last;
        }
        first
    }

    /// Undo every step of the open linked chain, newest first.
    fn rollback(&mut self) {
        self.changes
            .resolved
            .truncate(self.changes.chain_resolved_from);
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::AccountCreated { id } => self.accounts.remove_last(id),
                Undo::AccountChanged { slot, before } => {
                    self.accounts.replace(slot, before);
                }
                Undo::TransferCreated { id } => self.remove_newest_transfer(id),
                Undo::StatusChanged { slot, before } => {
                    self.transfers.unresolve(slot, before);
                }
                Undo::ExpiryRemoved { expires_at, slot } => {
                    self.transfers.expiry_insert(expires_at, slot);
                }
            }
        }
    }

    fn remove_newest_transfer(&mut self, id: u128) {
        let slot = self.transfers.len() - 1;
        let transfer = self.transfers.remove_last(id);
        if let Some(expires_at) = transfer.expires_at() {
            self.transfers.expiry_remove(expires_at, slot);
        }
        self.accounts.pop_history(slot);
    }

    /// Release a pending transfer's amounts (void and expiry), reopening accounts that
    /// the transfer closed.
    fn release_pending(&mut self, pending: &Transfer) {
        let debit_slot = self
            .accounts
            .slot(pending.debit_account_id)
            .expect("debit account");
        let credit_slot = self
            .accounts
            .slot(pending.credit_account_id)
            .expect("credit account");
        let (amount, flags) = (pending.amount, pending.flags);
        self.modify_account(debit_slot, |debit| {
            debit.debits_pending -= amount;
            if flags.contains(TransferFlags::CLOSING_DEBIT) {
                debit.flags.set(AccountFlags::CLOSED, false);
            }
        });
        self.modify_account(credit_slot, |credit| {
            credit.credits_pending -= amount;
            if flags.contains(TransferFlags::CLOSING_CREDIT) {
                credit.flags.set(AccountFlags::CLOSED, false);
            }
        });
    }

    /// Change an account in place, remembering the old value for rollback (inside a
    /// chain) and the slot for the next checkpoint.
    #[inline]
    fn modify_account(&mut self, slot: u32, change: impl FnOnce(&mut Account)) {
        if self.undo.is_active() {
            let before = *self.accounts.get(slot);
            self.undo.record(Undo::AccountChanged { slot, before });
        }
        change(self.accounts.get_mut(slot));
        self.changes.mark_account(slot);
    }
}

/// The statuses that depend only on the request's shape: imported flags must agree with
/// the first event, and timestamps are the engine's unless imported.
fn check_import<E: Event>(event: &E, imported_batch: bool, timestamp: u64) -> Option<E::Status> {
    if imported_batch && !event.imported() {
        return Some(E::IMPORTED_EVENT_EXPECTED);
    }
    if !imported_batch && event.imported() {
        return Some(E::IMPORTED_EVENT_NOT_EXPECTED);
    }
    if !event.imported() {
        return (event.timestamp() != 0).then_some(E::TIMESTAMP_MUST_BE_ZERO);
    }
    if event.timestamp() == 0 || event.timestamp() > TIMESTAMP_MAX {
        return Some(E::IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE);
    }
    // An imported event may use any past instant up to the slot reserved for it, which no
    // other object will ever take.
    (event.timestamp() > timestamp).then_some(E::IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE)
}

#[cfg(test)]
mod tests;
