//! `create_accounts`: validation in the precedence order of SEMANTICS.md, then insert.

use protocol::{Account, AccountFlags, CreateAccountResult as Status, CreateResult};

use super::changes::Undo;
use super::lookahead::{AccountAhead, Lookahead};
use super::{Event, Ledger};

impl Event for Account {
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
        self.flags.contains(AccountFlags::LINKED)
    }

    fn imported(&self) -> bool {
        self.flags.contains(AccountFlags::IMPORTED)
    }

    fn timestamp(&self) -> u64 {
        self.timestamp
    }

    fn result(status: Status, timestamp: u64) -> CreateResult {
        CreateResult::account(status, timestamp)
    }

    fn create(ledger: &mut Ledger, account: &Account, timestamp: u64) -> (Status, u64) {
        ledger.create_account(account, timestamp)
    }

    fn look_ahead(ledger: &Ledger, account: &Account) -> Lookahead {
        Lookahead {
            accounts: [
                AccountAhead::new(ledger, account.id),
                AccountAhead::default(),
            ],
            ..Lookahead::default()
        }
    }

    fn look_closer(_: &Ledger, _: &mut Lookahead) {
        // A new account reads no record: its id is (almost always) not there yet.
    }
}

impl Ledger {
    fn create_account(&mut self, account: &Account, timestamp: u64) -> (Status, u64) {
        if let Err(status) = validate_fields(account) {
            return (status, timestamp);
        }
        if let Some(existing) = self
            .account_slot(account.id)
            .map(|slot| self.accounts.get(slot))
        {
            let status = account_exists(account, existing);
            let result_timestamp = if status == Status::Exists {
                existing.timestamp
            } else {
                timestamp
            };
            return (status, result_timestamp);
        }
        if let Err(status) = validate_new(account) {
            return (status, timestamp);
        }
        if account.flags.contains(AccountFlags::IMPORTED) && !self.imported_account_fits(timestamp)
        {
            return (Status::ImportedEventTimestampMustNotRegress, timestamp);
        }
        let slot = self.accounts.insert(Account {
            timestamp,
            ..*account
        });
        self.undo.record(Undo::AccountCreated { id: account.id });
        self.changes.mark_account(slot);
        (Status::Created, timestamp)
    }

    /// Imported accounts keep the store in timestamp order and never share a timestamp
    /// with any other object.
    fn imported_account_fits(&self, timestamp: u64) -> bool {
        timestamp > self.accounts.timestamp_last() && !self.transfers.has_timestamp(timestamp)
    }
}

/// Checks that need nothing but the event, up to the existence check.
fn validate_fields(account: &Account) -> Result<(), Status> {
    if account.reserved != 0 {
        return Err(Status::ReservedField);
    }
    if account.flags.has_reserved_bits() {
        return Err(Status::ReservedFlag);
    }
    if account.id == 0 {
        return Err(Status::IdMustNotBeZero);
    }
    if account.id == u128::MAX {
        return Err(Status::IdMustNotBeIntMax);
    }
    Ok(())
}

/// Checks of a new account (no account with its id exists).
fn validate_new(account: &Account) -> Result<(), Status> {
    let both_limits =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    if account.flags.contains(both_limits) {
        return Err(Status::FlagsAreMutuallyExclusive);
    }
    if account.debits_pending != 0 {
        return Err(Status::DebitsPendingMustBeZero);
    }
    if account.debits_posted != 0 {
        return Err(Status::DebitsPostedMustBeZero);
    }
    if account.credits_pending != 0 {
        return Err(Status::CreditsPendingMustBeZero);
    }
    if account.credits_posted != 0 {
        return Err(Status::CreditsPostedMustBeZero);
    }
    if account.ledger == 0 {
        return Err(Status::LedgerMustNotBeZero);
    }
    if account.code == 0 {
        return Err(Status::CodeMustNotBeZero);
    }
    Ok(())
}

fn account_exists(account: &Account, existing: &Account) -> Status {
    debug_assert_eq!(account.id, existing.id);
    if account.flags != existing.flags {
        Status::ExistsWithDifferentFlags
    } else if account.user_data_128 != existing.user_data_128 {
        Status::ExistsWithDifferentUserData128
    } else if account.user_data_64 != existing.user_data_64 {
        Status::ExistsWithDifferentUserData64
    } else if account.user_data_32 != existing.user_data_32 {
        Status::ExistsWithDifferentUserData32
    } else if account.ledger != existing.ledger {
        Status::ExistsWithDifferentLedger
    } else if account.code != existing.code {
        Status::ExistsWithDifferentCode
    } else {
        Status::Exists
    }
}
