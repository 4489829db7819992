//! `create_transfers`: plain, pending, post, void, balancing, closing and imported
//! transfers, validated in the precedence order of SEMANTICS.md.
//!
//! Control flow stays in [`Ledger::create_transfer`]; the `validate_*` leaves are pure
//! functions of the event and the records they read, and `apply_*` only runs once every
//! check passed, so a rejected event never changes state.

use protocol::{
    Account, AccountFlags, CreateResult, CreateTransferResult as Status, Transfer, TransferFlags,
    AMOUNT_MAX, TIMESTAMP_MAX,
};

use super::changes::Undo;
use super::lookahead::{AccountAhead, Lookahead};
use super::resident::{Found, HistoryEntry, PendingStatus, Slot, TransferSlot};
use super::{Event, Ledger};

impl Event for Transfer {
    type Status = Status;
    const CREATED: Status = Status::Created;
    const LINKED_EVENT_FAILED: Status = Status::LinkedEventFailed;
    const LINKED_EVENT_CHAIN_OPEN: Status = Status::LinkedEventChainOpen;
    const IMPORTED_EVENT_EXPECTED: Status = Status::ImportedEventExpected;
    const IMPORTED_EVENT_NOT_EXPECTED: Status = Status::ImportedEventNotExpected;
    const TIMESTAMP_MUST_BE_ZERO: Status = Status::TimestampMustBeZero;
    const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Status = Status::ImportedEventTimestampOutOfRange;
    const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Status =
        Status::ImportedEventTimestampMustNotAdvance;

    fn linked(&self) -> bool {
        self.flags.contains(TransferFlags::LINKED)
    }

    fn imported(&self) -> bool {
        self.flags.contains(TransferFlags::IMPORTED)
    }

    fn timestamp(&self) -> u64 {
        self.timestamp
    }

    fn result(status: Status, timestamp: u64) -> CreateResult {
        CreateResult::transfer(status, timestamp)
    }

    #[inline]
    fn create(ledger: &mut Ledger, transfer: &Transfer, timestamp: u64) -> (Status, u64) {
        ledger.create_transfer(transfer, timestamp)
    }

    #[inline]
    fn look_ahead(ledger: &Ledger, transfer: &Transfer) -> Lookahead {
        let id_tag = ledger.transfers.tag(transfer.id);
        ledger.transfers.prefetch_tagged(id_tag);
        if transfer.pending_id != 0 {
            let pending_tag = ledger.transfers.tag(transfer.pending_id);
            ledger.transfers.prefetch_tagged(pending_tag);
        }
        Lookahead {
            transfer_id: transfer.id,
            transfer_tag: id_tag,
            accounts: [
                AccountAhead::new(ledger, transfer.debit_account_id),
                AccountAhead::new(ledger, transfer.credit_account_id),
            ],
        }
    }

    #[inline]
    fn look_closer(ledger: &Ledger, lookahead: &mut Lookahead) {
        for account in &mut lookahead.accounts {
            account.slot_guess = ledger.accounts.guess_and_prefetch(account.tag);
        }
    }
}

/// The two accounts a transfer moves money between, borrowed for validation.
struct Parties<'a> {
    debit_slot: Slot,
    credit_slot: Slot,
    debit: &'a Account,
    credit: &'a Account,
}

const POST_OR_VOID: TransferFlags =
    TransferFlags(TransferFlags::POST_PENDING_TRANSFER.0 | TransferFlags::VOID_PENDING_TRANSFER.0);
const BALANCING: TransferFlags =
    TransferFlags(TransferFlags::BALANCING_DEBIT.0 | TransferFlags::BALANCING_CREDIT.0);
const CLOSING: TransferFlags =
    TransferFlags(TransferFlags::CLOSING_DEBIT.0 | TransferFlags::CLOSING_CREDIT.0);

impl Ledger {
    #[inline]
    fn create_transfer(&mut self, transfer: &Transfer, timestamp: u64) -> (Status, u64) {
        if let Err(status) = validate_header(transfer) {
            return (status, timestamp);
        }
        let tag = self.transfer_tag(transfer.id);
        if let Some(found) = self.transfers.find_tagged(transfer.id, tag) {
            let existing = match found {
                Found::Resident(slot) => self.transfers.get(slot),
                Found::Old(existing, _) => existing,
            };
            let status = self.transfer_exists(transfer, existing);
            let result_timestamp = if status == Status::Exists {
                existing.timestamp
            } else {
                timestamp
            };
            return (status, result_timestamp);
        }
        if self.transfers.has_failed(transfer.id) {
            return (Status::IdAlreadyFailed, timestamp);
        }
        let outcome = if transfer.flags.intersects(POST_OR_VOID) {
            self.post_or_void(transfer, timestamp)
        } else {
            self.create_new(transfer, timestamp)
        };
        match outcome {
            Ok(()) => (Status::Created, timestamp),
            Err(status) => {
                if status.is_transient() && self.transfers.mark_failed(transfer.id) {
                    self.changes.failed.push(transfer.id);
                }
                (status, timestamp)
            }
        }
    }

    /// A plain or pending transfer (neither post nor void).
    #[inline]
    fn create_new(&mut self, transfer: &Transfer, timestamp: u64) -> Result<(), Status> {
        validate_new_fields(transfer)?;
        let parties = self.parties(transfer.debit_account_id, transfer.credit_account_id)?;
        validate_ledgers(transfer, &parties)?;
        if transfer.flags.contains(TransferFlags::IMPORTED) {
            self.validate_imported(transfer, timestamp, &parties)?;
        }
        validate_open(&parties)?;
        let amount = balancing_amount(transfer, &parties);
        validate_amount(transfer, amount, timestamp, &parties)?;
        let slots = (parties.debit_slot, parties.credit_slot);
        self.apply_new(
            Transfer {
                amount,
                timestamp,
                ..*transfer
            },
            slots,
        );
        Ok(())
    }

    fn post_or_void(&mut self, transfer: &Transfer, timestamp: u64) -> Result<(), Status> {
        validate_post_or_void_fields(transfer)?;
        let (pending_slot, pending, status) = match self.transfers.find(transfer.pending_id) {
            None => return Err(Status::PendingTransferNotFound),
            Some(Found::Resident(slot)) => (
                Some(slot),
                *self.transfers.get(slot),
                self.transfers.status(slot),
            ),
            // Evicted: never pending (a pending transfer stays in memory until resolved).
            Some(Found::Old(pending, status)) => (None, *pending, status),
        };
        let amount = validate_against_pending(transfer, &pending)?;
        match status {
            PendingStatus::Pending => {}
            PendingStatus::NotPending => unreachable!("checked by validate_against_pending"),
            PendingStatus::Posted => return Err(Status::PendingTransferAlreadyPosted),
            PendingStatus::Voided => return Err(Status::PendingTransferAlreadyVoided),
            PendingStatus::Expired => return Err(Status::PendingTransferExpired),
        }
        let pending_slot =
            pending_slot.expect("a pending transfer stays resident until it is resolved");
        // Expired by the clock even if no expiry step has run yet.
        if pending
            .expires_at()
            .is_some_and(|expires_at| timestamp >= expires_at)
        {
            return Err(Status::PendingTransferExpired);
        }
        let parties = self.parties(pending.debit_account_id, pending.credit_account_id)?;
        if transfer.flags.contains(TransferFlags::IMPORTED) {
            self.validate_imported(transfer, timestamp, &parties)?;
        }
        // A closed account still lets its pending transfers be voided (that is how a
        // closing transfer is undone), but accepts nothing else.
        if !transfer
            .flags
            .contains(TransferFlags::VOID_PENDING_TRANSFER)
        {
            validate_open(&parties)?;
        }
        let resolved = Transfer {
            id: transfer.id,
            debit_account_id: pending.debit_account_id,
            credit_account_id: pending.credit_account_id,
            amount,
            pending_id: pending.id,
            user_data_128: inherit(transfer.user_data_128, pending.user_data_128),
            user_data_64: inherit(transfer.user_data_64, pending.user_data_64),
            user_data_32: inherit(transfer.user_data_32, pending.user_data_32),
            timeout: 0,
            ledger: pending.ledger,
            code: pending.code,
            flags: transfer.flags,
            timestamp,
        };
        let slots = (parties.debit_slot, parties.credit_slot);
        self.apply_post_or_void(resolved, &pending, pending_slot, slots);
        Ok(())
    }

    #[inline]
    fn parties(
        &self,
        debit_account_id: u128,
        credit_account_id: u128,
    ) -> Result<Parties<'_>, Status> {
        let debit_slot = self
            .account_slot(debit_account_id)
            .ok_or(Status::DebitAccountNotFound)?;
        let credit_slot = self
            .account_slot(credit_account_id)
            .ok_or(Status::CreditAccountNotFound)?;
        Ok(Parties {
            debit_slot,
            credit_slot,
            debit: self.accounts.get(debit_slot),
            credit: self.accounts.get(credit_slot),
        })
    }

    /// Imported transfers keep the store in timestamp order, never share a timestamp with
    /// an account, and come after both of their accounts.
    fn validate_imported(
        &self,
        transfer: &Transfer,
        timestamp: u64,
        parties: &Parties,
    ) -> Result<(), Status> {
        if timestamp <= self.transfers.timestamp_last() || self.accounts.has_timestamp(timestamp) {
            return Err(Status::ImportedEventTimestampMustNotRegress);
        }
        if timestamp <= parties.debit.timestamp {
            return Err(Status::ImportedEventTimestampMustPostdateDebitAccount);
        }
        if timestamp <= parties.credit.timestamp {
            return Err(Status::ImportedEventTimestampMustPostdateCreditAccount);
        }
        if transfer.timeout != 0 {
            return Err(Status::ImportedEventTimeoutMustBeZero);
        }
        Ok(())
    }

    #[inline]
    fn apply_new(&mut self, transfer: Transfer, (debit_slot, credit_slot): (Slot, Slot)) {
        let (amount, flags) = (transfer.amount, transfer.flags);
        let pending = flags.contains(TransferFlags::PENDING);
        self.modify_account(debit_slot, |debit| {
            if pending {
                debit.debits_pending += amount;
            } else {
                debit.debits_posted += amount;
            }
            if flags.contains(TransferFlags::CLOSING_DEBIT) {
                debit.flags |= AccountFlags::CLOSED;
            }
        });
        self.modify_account(credit_slot, |credit| {
            if pending {
                credit.credits_pending += amount;
            } else {
                credit.credits_posted += amount;
            }
            if flags.contains(TransferFlags::CLOSING_CREDIT) {
                credit.flags |= AccountFlags::CLOSED;
            }
        });
        let status = if pending {
            PendingStatus::Pending
        } else {
            PendingStatus::NotPending
        };
        self.insert_transfer(transfer, status, (debit_slot, credit_slot));
    }

    fn apply_post_or_void(
        &mut self,
        transfer: Transfer,
        pending: &Transfer,
        pending_slot: TransferSlot,
        (debit_slot, credit_slot): (Slot, Slot),
    ) {
        let post = transfer
            .flags
            .contains(TransferFlags::POST_PENDING_TRANSFER);
        if post {
            // Cannot overflow: the amount was already counted in pending + posted.
            let (released, posted) = (pending.amount, transfer.amount);
            self.modify_account(debit_slot, |debit| {
                debit.debits_pending -= released;
                debit.debits_posted += posted;
            });
            self.modify_account(credit_slot, |credit| {
                credit.credits_pending -= released;
                credit.credits_posted += posted;
            });
        } else {
            self.release_pending(pending);
        }
        let status = if post {
            PendingStatus::Posted
        } else {
            PendingStatus::Voided
        };
        let before = self.transfers.resolve(pending_slot, status);
        debug_assert_eq!(before, PendingStatus::Pending);
        self.undo.record(Undo::StatusChanged {
            slot: pending_slot,
            before,
        });
        self.changes.resolved.push(pending_slot);
        if let Some(expires_at) = pending.expires_at() {
            if self.transfers.expiry_remove(expires_at, pending_slot) {
                self.undo.record(Undo::ExpiryRemoved {
                    expires_at,
                    slot: pending_slot,
                });
            }
        }
        self.insert_transfer(
            transfer,
            PendingStatus::NotPending,
            (debit_slot, credit_slot),
        );
    }

    /// Store a new transfer whose effect on its two accounts was already applied.
    #[inline]
    fn insert_transfer(
        &mut self,
        transfer: Transfer,
        status: PendingStatus,
        (debit_slot, credit_slot): (Slot, Slot),
    ) {
        debug_assert!(transfer.timestamp > self.transfers.timestamp_last());
        let tag = self.transfer_tag(transfer.id);
        let slot = self
            .transfers
            .insert(transfer, status, [debit_slot, credit_slot], tag);
        self.undo.record(Undo::TransferCreated { id: transfer.id });
        if status == PendingStatus::Pending {
            if let Some(expires_at) = transfer.expires_at() {
                self.transfers.expiry_insert(expires_at, slot);
            }
        }
        for account_slot in [debit_slot, credit_slot] {
            let account = self.accounts.get(account_slot);
            if account.flags.contains(AccountFlags::HISTORY) {
                let entry = HistoryEntry {
                    account_slot,
                    transfer_slot: slot,
                    debits_pending: account.debits_pending,
                    debits_posted: account.debits_posted,
                    credits_pending: account.credits_pending,
                    credits_posted: account.credits_posted,
                };
                self.accounts.push_history(entry);
            }
        }
    }

    /// Compare a retried transfer with the one already stored under its id.
    fn transfer_exists(&self, transfer: &Transfer, existing: &Transfer) -> Status {
        if transfer.flags != existing.flags {
            return Status::ExistsWithDifferentFlags;
        }
        if transfer.pending_id != existing.pending_id {
            return Status::ExistsWithDifferentPendingId;
        }
        if transfer.timeout != existing.timeout {
            return Status::ExistsWithDifferentTimeout;
        }
        if transfer.flags.intersects(POST_OR_VOID) {
            self.resolution_exists(transfer, existing)
        } else {
            new_transfer_exists(transfer, existing)
        }
    }

    /// `exists` for post/void: zero fields were inherited from the pending transfer.
    fn resolution_exists(&self, transfer: &Transfer, existing: &Transfer) -> Status {
        if differs_unless_zero(transfer.debit_account_id, existing.debit_account_id) {
            return Status::ExistsWithDifferentDebitAccountId;
        }
        if differs_unless_zero(transfer.credit_account_id, existing.credit_account_id) {
            return Status::ExistsWithDifferentCreditAccountId;
        }
        let amount_matches = if transfer
            .flags
            .contains(TransferFlags::VOID_PENDING_TRANSFER)
        {
            transfer.amount == 0 || transfer.amount == existing.amount
        } else {
            // `existing.pending_id` equals the event's (checked above), which the engine
            // read back with the batch if it was evicted.
            let pending_amount = match self.transfers.find(existing.pending_id) {
                Some(Found::Resident(slot)) => self.transfers.get(slot).amount,
                Some(Found::Old(pending, _)) => pending.amount,
                None => 0,
            };
            if existing.amount < pending_amount {
                transfer.amount == existing.amount
            } else {
                transfer.amount >= pending_amount
            }
        };
        if !amount_matches {
            return Status::ExistsWithDifferentAmount;
        }
        if differs_unless_zero(transfer.user_data_128, existing.user_data_128) {
            return Status::ExistsWithDifferentUserData128;
        }
        if differs_unless_zero(transfer.user_data_64.into(), existing.user_data_64.into()) {
            return Status::ExistsWithDifferentUserData64;
        }
        if differs_unless_zero(transfer.user_data_32.into(), existing.user_data_32.into()) {
            return Status::ExistsWithDifferentUserData32;
        }
        if differs_unless_zero(transfer.ledger.into(), existing.ledger.into()) {
            return Status::ExistsWithDifferentLedger;
        }
        if differs_unless_zero(transfer.code.into(), existing.code.into()) {
            return Status::ExistsWithDifferentCode;
        }
        Status::Exists
    }
}

fn new_transfer_exists(transfer: &Transfer, existing: &Transfer) -> Status {
    if transfer.debit_account_id != existing.debit_account_id {
        return Status::ExistsWithDifferentDebitAccountId;
    }
    if transfer.credit_account_id != existing.credit_account_id {
        return Status::ExistsWithDifferentCreditAccountId;
    }
    // A balancing transfer records what it actually moved: a retry matches when its
    // maximum still covers that amount.
    let amount_matches = if transfer.flags.intersects(BALANCING) {
        transfer.amount >= existing.amount
    } else {
        transfer.amount == existing.amount
    };
    if !amount_matches {
        return Status::ExistsWithDifferentAmount;
    }
    if transfer.user_data_128 != existing.user_data_128 {
        return Status::ExistsWithDifferentUserData128;
    }
    if transfer.user_data_64 != existing.user_data_64 {
        return Status::ExistsWithDifferentUserData64;
    }
    if transfer.user_data_32 != existing.user_data_32 {
        return Status::ExistsWithDifferentUserData32;
    }
    if transfer.ledger != existing.ledger {
        return Status::ExistsWithDifferentLedger;
    }
    if transfer.code != existing.code {
        return Status::ExistsWithDifferentCode;
    }
    Status::Exists
}

fn differs_unless_zero(requested: u128, stored: u128) -> bool {
    requested != 0 && requested != stored
}

fn inherit<T: PartialEq + Default>(requested: T, pending: T) -> T {
    if requested == T::default() {
        pending
    } else {
        requested
    }
}

/// Checks that come before the existence check.
#[inline]
fn validate_header(transfer: &Transfer) -> Result<(), Status> {
    if transfer.flags.has_reserved_bits() {
        return Err(Status::ReservedFlag);
    }
    if transfer.id == 0 {
        return Err(Status::IdMustNotBeZero);
    }
    if transfer.id == u128::MAX {
        return Err(Status::IdMustNotBeIntMax);
    }
    Ok(())
}

#[inline]
fn validate_new_fields(transfer: &Transfer) -> Result<(), Status> {
    let (debit, credit) = (transfer.debit_account_id, transfer.credit_account_id);
    if debit == 0 {
        return Err(Status::DebitAccountIdMustNotBeZero);
    }
    if debit == u128::MAX {
        return Err(Status::DebitAccountIdMustNotBeIntMax);
    }
    if credit == 0 {
        return Err(Status::CreditAccountIdMustNotBeZero);
    }
    if credit == u128::MAX {
        return Err(Status::CreditAccountIdMustNotBeIntMax);
    }
    if debit == credit {
        return Err(Status::AccountsMustBeDifferent);
    }
    if transfer.pending_id != 0 {
        return Err(Status::PendingIdMustBeZero);
    }
    if !transfer.flags.contains(TransferFlags::PENDING) {
        if transfer.timeout != 0 {
            return Err(Status::TimeoutReservedForPendingTransfer);
        }
        if transfer.flags.intersects(CLOSING) {
            return Err(Status::ClosingTransferMustBePending);
        }
    }
    if transfer.ledger == 0 {
        return Err(Status::LedgerMustNotBeZero);
    }
    if transfer.code == 0 {
        return Err(Status::CodeMustNotBeZero);
    }
    Ok(())
}

fn validate_post_or_void_fields(transfer: &Transfer) -> Result<(), Status> {
    let exclusive = TransferFlags(TransferFlags::PENDING.0 | BALANCING.0 | CLOSING.0);
    if transfer.flags.contains(POST_OR_VOID) || transfer.flags.intersects(exclusive) {
        return Err(Status::FlagsAreMutuallyExclusive);
    }
    if transfer.pending_id == 0 {
        return Err(Status::PendingIdMustNotBeZero);
    }
    if transfer.pending_id == u128::MAX {
        return Err(Status::PendingIdMustNotBeIntMax);
    }
    if transfer.pending_id == transfer.id {
        return Err(Status::PendingIdMustBeDifferent);
    }
    if transfer.timeout != 0 {
        return Err(Status::TimeoutReservedForPendingTransfer);
    }
    Ok(())
}

/// Match a post/void against its pending transfer; returns the amount it resolves.
fn validate_against_pending(transfer: &Transfer, pending: &Transfer) -> Result<u128, Status> {
    if !pending.flags.contains(TransferFlags::PENDING) {
        return Err(Status::PendingTransferNotPending);
    }
    if differs_unless_zero(transfer.debit_account_id, pending.debit_account_id) {
        return Err(Status::PendingTransferHasDifferentDebitAccountId);
    }
    if differs_unless_zero(transfer.credit_account_id, pending.credit_account_id) {
        return Err(Status::PendingTransferHasDifferentCreditAccountId);
    }
    if differs_unless_zero(transfer.ledger.into(), pending.ledger.into()) {
        return Err(Status::PendingTransferHasDifferentLedger);
    }
    if differs_unless_zero(transfer.code.into(), pending.code.into()) {
        return Err(Status::PendingTransferHasDifferentCode);
    }
    let void = transfer
        .flags
        .contains(TransferFlags::VOID_PENDING_TRANSFER);
    let amount = match (void, transfer.amount) {
        (false, AMOUNT_MAX) | (true, 0) => pending.amount,
        (_, amount) => amount,
    };
    if amount > pending.amount {
        return Err(Status::ExceedsPendingTransferAmount);
    }
    if void && amount < pending.amount {
        return Err(Status::PendingTransferHasDifferentAmount);
    }
    Ok(amount)
}

#[inline]
fn validate_ledgers(transfer: &Transfer, parties: &Parties) -> Result<(), Status> {
    if parties.debit.ledger != parties.credit.ledger {
        return Err(Status::AccountsMustHaveTheSameLedger);
    }
    if transfer.ledger != parties.debit.ledger {
        return Err(Status::TransferMustHaveTheSameLedgerAsAccounts);
    }
    Ok(())
}

#[inline]
fn validate_open(parties: &Parties) -> Result<(), Status> {
    if parties.debit.flags.contains(AccountFlags::CLOSED) {
        return Err(Status::DebitAccountAlreadyClosed);
    }
    if parties.credit.flags.contains(AccountFlags::CLOSED) {
        return Err(Status::CreditAccountAlreadyClosed);
    }
    Ok(())
}

/// A balancing transfer moves at most `amount`, clamped to what keeps the debit account's
/// debits (and/or the credit account's credits) within its other side's posted amount,
/// whatever the accounts' balance-rule flags.
#[inline]
fn balancing_amount(transfer: &Transfer, parties: &Parties) -> u128 {
    let mut amount = transfer.amount;
    if transfer.flags.contains(TransferFlags::BALANCING_DEBIT) {
        let debit = &parties.debit;
        let debits = debit.debits_pending.saturating_add(debit.debits_posted);
        amount = amount.min(debit.credits_posted.saturating_sub(debits));
    }
    if transfer.flags.contains(TransferFlags::BALANCING_CREDIT) {
        let credit = &parties.credit;
        let credits = credit.credits_pending.saturating_add(credit.credits_posted);
        amount = amount.min(credit.debits_posted.saturating_sub(credits));
    }
    amount
}

/// Overflow and balance-rule checks of a new transfer moving `amount`.
#[inline]
fn validate_amount(
    transfer: &Transfer,
    amount: u128,
    timestamp: u64,
    parties: &Parties,
) -> Result<(), Status> {
    let (debit, credit) = (&parties.debit, &parties.credit);
    if transfer.flags.contains(TransferFlags::PENDING) {
        if debit.debits_pending.checked_add(amount).is_none() {
            return Err(Status::OverflowsDebitsPending);
        }
        if credit.credits_pending.checked_add(amount).is_none() {
            return Err(Status::OverflowsCreditsPending);
        }
    }
    if debit.debits_posted.checked_add(amount).is_none() {
        return Err(Status::OverflowsDebitsPosted);
    }
    if credit.credits_posted.checked_add(amount).is_none() {
        return Err(Status::OverflowsCreditsPosted);
    }
    if sum3_overflows(debit.debits_pending, debit.debits_posted, amount) {
        return Err(Status::OverflowsDebits);
    }
    if sum3_overflows(credit.credits_pending, credit.credits_posted, amount) {
        return Err(Status::OverflowsCredits);
    }
    if u128::from(timestamp) + u128::from(transfer.timeout_ns()) > u128::from(TIMESTAMP_MAX) {
        return Err(Status::OverflowsTimeout);
    }
    if debit.debits_exceed_credits(amount) {
        return Err(Status::ExceedsCredits);
    }
    if credit.credits_exceed_debits(amount) {
        return Err(Status::ExceedsDebits);
    }
    Ok(())
}

fn sum3_overflows(a: u128, b: u128, c: u128) -> bool {
    a.checked_add(b)
        .and_then(|sum| sum.checked_add(c))
        .is_none()
}
