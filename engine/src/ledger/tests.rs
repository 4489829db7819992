//! Unit tests of the ledger: one scripted history that produces every result code of both
//! operations, and focused tests of the rules that are easy to get wrong.

use std::collections::BTreeSet;

use protocol::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult as A,
    CreateTransferResult as T, QueryFilter, QueryFilterFlags, Transfer, TransferFlags,
    NS_PER_SECOND, TIMESTAMP_MAX,
};

use super::{Ledger, PendingStatus};

const NOW: u64 = 1_700_000_000 * NS_PER_SECOND;
const MAX: u128 = u128::MAX;

fn account(id: u128, ledger: u32) -> Account {
    Account {
        id,
        ledger,
        code: 10,
        ..Account::default()
    }
}

fn account_flags(id: u128, ledger: u32, flags: AccountFlags) -> Account {
    Account {
        flags,
        ..account(id, ledger)
    }
}

/// A plain transfer on ledger 1 (code 1); also used by `restore.rs`'s tests.
pub(super) fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

fn with_flags(transfer: Transfer, flags: TransferFlags) -> Transfer {
    Transfer { flags, ..transfer }
}

fn pending(id: u128, debit: u128, credit: u128, amount: u128, timeout: u32) -> Transfer {
    Transfer {
        timeout,
        ..with_flags(transfer(id, debit, credit, amount), TransferFlags::PENDING)
    }
}

fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        amount,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Transfer::default()
    }
}

fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer {
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..post(id, pending_id, 0)
    }
}

fn linked(transfer: Transfer) -> Transfer {
    Transfer {
        flags: transfer.flags | TransferFlags::LINKED,
        ..transfer
    }
}

fn imported(transfer: Transfer, timestamp: u64) -> Transfer {
    Transfer {
        timestamp,
        flags: transfer.flags | TransferFlags::IMPORTED,
        ..transfer
    }
}

/// Records every status it sees, so the test can prove it saw them all.
struct Script {
    ledger: Ledger,
    now: u64,
    transfer_statuses: BTreeSet<u32>,
    account_statuses: BTreeSet<u32>,
}

impl Script {
    fn new() -> Self {
        Self {
            ledger: Ledger::new(),
            now: NOW,
            transfer_statuses: BTreeSet::new(),
            account_statuses: BTreeSet::new(),
        }
    }

    fn accounts(&mut self, events: &[Account], expected: &[A]) {
        let results = self.ledger.create_accounts(self.now, events);
        let statuses: Vec<A> = results
            .iter()
            .map(|r| r.account_status().unwrap())
            .collect();
        assert_eq!(statuses, expected, "events {events:?}");
        self.account_statuses
            .extend(statuses.iter().map(|s| s.code()));
    }

    fn transfers(&mut self, events: &[Transfer], expected: &[T]) {
        let results = self.ledger.create_transfers(self.now, events);
        let statuses: Vec<T> = results
            .iter()
            .map(|r| r.transfer_status().unwrap())
            .collect();
        assert_eq!(statuses, expected, "events {events:?}");
        self.transfer_statuses
            .extend(statuses.iter().map(|s| s.code()));
    }

    fn balance(&self, id: u128) -> (u128, u128, u128, u128) {
        let a = self.ledger.lookup_accounts(&[id])[0];
        (
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        )
    }
}

#[test]
fn every_create_account_result_is_produced() {
    let mut s = Script::new();
    let linked = AccountFlags::LINKED;
    s.accounts(&[account(1, 1)], &[A::Created]);
    s.accounts(
        &[account_flags(2, 1, linked), account(0, 1)],
        &[A::LinkedEventFailed, A::IdMustNotBeZero],
    );
    assert!(
        s.ledger.lookup_accounts(&[2]).is_empty(),
        "failed chain left account 2 behind"
    );
    s.accounts(&[account_flags(2, 1, linked)], &[A::LinkedEventChainOpen]);
    // A chain left open at the request's end answers linked_event_chain_open on its last
    // event even when an earlier event already broke it.
    s.accounts(
        &[
            account_flags(2, 1, linked),
            account_flags(0, 1, linked),
            account_flags(3, 1, linked),
        ],
        &[
            A::LinkedEventFailed,
            A::IdMustNotBeZero,
            A::LinkedEventChainOpen,
        ],
    );
    s.accounts(
        &[account_flags(0, 1, linked), account_flags(2, 1, linked)],
        &[A::IdMustNotBeZero, A::LinkedEventChainOpen],
    );
    assert!(
        s.ledger.lookup_accounts(&[2, 3]).is_empty(),
        "a broken open chain left an account behind"
    );
    let imported = |id, timestamp| Account {
        timestamp,
        ..account_flags(id, 1, AccountFlags::IMPORTED)
    };
    s.accounts(
        &[imported(3, 0), account(4, 1)],
        &[
            A::ImportedEventTimestampOutOfRange,
            A::ImportedEventExpected,
        ],
    );
    s.accounts(
        &[account(5, 1), imported(6, 5)],
        &[A::Created, A::ImportedEventNotExpected],
    );
    s.accounts(
        &[Account {
            timestamp: 7,
            ..account(7, 1)
        }],
        &[A::TimestampMustBeZero],
    );
    s.accounts(
        &[imported(8, TIMESTAMP_MAX)],
        &[A::ImportedEventTimestampMustNotAdvance],
    );
    s.accounts(
        &[imported(9, 1)],
        &[A::ImportedEventTimestampMustNotRegress],
    );
    s.accounts(
        &[Account {
            reserved: 1,
            ..account(10, 1)
        }],
        &[A::ReservedField],
    );
    s.accounts(
        &[account_flags(10, 1, AccountFlags(1 << 9))],
        &[A::ReservedFlag],
    );
    s.accounts(&[account(MAX, 1)], &[A::IdMustNotBeIntMax]);
    s.accounts(
        &[account_flags(1, 1, AccountFlags::HISTORY)],
        &[A::ExistsWithDifferentFlags],
    );
    s.accounts(
        &[Account {
            user_data_128: 1,
            ..account(1, 1)
        }],
        &[A::ExistsWithDifferentUserData128],
    );
    s.accounts(
        &[Account {
            user_data_64: 1,
            ..account(1, 1)
        }],
        &[A::ExistsWithDifferentUserData64],
    );
    s.accounts(
        &[Account {
            user_data_32: 1,
            ..account(1, 1)
        }],
        &[A::ExistsWithDifferentUserData32],
    );
    s.accounts(&[account(1, 2)], &[A::ExistsWithDifferentLedger]);
    s.accounts(
        &[Account {
            code: 11,
            ..account(1, 1)
        }],
        &[A::ExistsWithDifferentCode],
    );
    s.accounts(&[account(1, 1)], &[A::Exists]);
    let both =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    s.accounts(
        &[account_flags(11, 1, both)],
        &[A::FlagsAreMutuallyExclusive],
    );
    s.accounts(
        &[Account {
            debits_pending: 1,
            ..account(11, 1)
        }],
        &[A::DebitsPendingMustBeZero],
    );
    s.accounts(
        &[Account {
            debits_posted: 1,
            ..account(11, 1)
        }],
        &[A::DebitsPostedMustBeZero],
    );
    s.accounts(
        &[Account {
            credits_pending: 1,
            ..account(11, 1)
        }],
        &[A::CreditsPendingMustBeZero],
    );
    s.accounts(
        &[Account {
            credits_posted: 1,
            ..account(11, 1)
        }],
        &[A::CreditsPostedMustBeZero],
    );
    s.accounts(&[account(11, 0)], &[A::LedgerMustNotBeZero]);
    s.accounts(
        &[Account {
            code: 0,
            ..account(11, 1)
        }],
        &[A::CodeMustNotBeZero],
    );
    let all: BTreeSet<u32> = A::ALL.iter().map(|s| s.code()).collect();
    assert_eq!(
        s.account_statuses, all,
        "some create_accounts result was never produced"
    );
}

/// Accounts used by the transfer script: 1, 2, 6, 7..=10 plain on ledger 1; 3 on ledger 2;
/// 4 debits_must_not_exceed_credits; 5 credits_must_not_exceed_debits.
fn transfer_script() -> Script {
    let mut s = Script::new();
    let accounts = [
        account(1, 1),
        account(2, 1),
        account(3, 2),
        account_flags(4, 1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        account_flags(5, 1, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        account(6, 1),
        account(7, 1),
        account(8, 1),
        account(9, 1),
        account(10, 1),
    ];
    s.accounts(&accounts, &[A::Created; 10]);
    s
}

#[test]
fn every_create_transfer_result_is_produced() {
    let mut s = transfer_script();
    shape_and_existence_results(&mut s);
    field_results(&mut s);
    two_phase_results(&mut s);
    imported_and_closed_results(&mut s);
    overflow_and_limit_results(&mut s);
    // overflows_timeout needs a clock near 2^63, so it gets a ledger of its own.
    let mut late = transfer_script();
    late.now = TIMESTAMP_MAX - 10 * NS_PER_SECOND;
    late.transfers(&[pending(1, 1, 2, 1, 60)], &[T::OverflowsTimeout]);
    s.transfer_statuses.extend(late.transfer_statuses);
    let all: BTreeSet<u32> = T::ALL.iter().map(|s| s.code()).collect();
    let missing: Vec<_> = all
        .difference(&s.transfer_statuses)
        .map(|c| T::from_code(*c).unwrap())
        .collect();
    assert!(missing.is_empty(), "never produced: {missing:?}");
}

fn shape_and_existence_results(s: &mut Script) {
    let linked = TransferFlags::LINKED;
    s.transfers(&[transfer(100, 1, 2, 10)], &[T::Created]);
    s.transfers(
        &[
            with_flags(transfer(101, 1, 2, 1), linked),
            transfer(0, 1, 2, 1),
        ],
        &[T::LinkedEventFailed, T::IdMustNotBeZero],
    );
    s.transfers(
        &[with_flags(transfer(101, 1, 2, 1), linked)],
        &[T::LinkedEventChainOpen],
    );
    // The open chain is reported on the last event even after an earlier event broke it.
    s.transfers(
        &[
            with_flags(transfer(101, 1, 2, 1), linked),
            with_flags(transfer(0, 1, 2, 1), linked),
            with_flags(transfer(102, 1, 2, 1), linked),
        ],
        &[
            T::LinkedEventFailed,
            T::IdMustNotBeZero,
            T::LinkedEventChainOpen,
        ],
    );
    s.transfers(
        &[
            with_flags(transfer(0, 1, 2, 1), linked),
            with_flags(transfer(101, 1, 2, 1), linked),
        ],
        &[T::IdMustNotBeZero, T::LinkedEventChainOpen],
    );
    assert!(
        s.ledger.lookup_transfers(&[101, 102]).is_empty(),
        "a broken open chain left a transfer behind"
    );
    s.transfers(
        &[imported(transfer(102, 1, 2, 1), 0), transfer(103, 1, 2, 1)],
        &[
            T::ImportedEventTimestampOutOfRange,
            T::ImportedEventExpected,
        ],
    );
    s.transfers(
        &[transfer(104, 1, 2, 1), imported(transfer(105, 1, 2, 1), 5)],
        &[T::Created, T::ImportedEventNotExpected],
    );
    s.transfers(
        &[Transfer {
            timestamp: 9,
            ..transfer(106, 1, 2, 1)
        }],
        &[T::TimestampMustBeZero],
    );
    s.transfers(
        &[imported(transfer(106, 1, 2, 1), TIMESTAMP_MAX)],
        &[T::ImportedEventTimestampMustNotAdvance],
    );
    s.transfers(
        &[with_flags(transfer(106, 1, 2, 1), TransferFlags(1 << 12))],
        &[T::ReservedFlag],
    );
    s.transfers(&[transfer(MAX, 1, 2, 1)], &[T::IdMustNotBeIntMax]);
    let retry = transfer(100, 1, 2, 10);
    s.transfers(
        &[with_flags(retry, TransferFlags::PENDING)],
        &[T::ExistsWithDifferentFlags],
    );
    s.transfers(
        &[Transfer {
            pending_id: 5,
            ..retry
        }],
        &[T::ExistsWithDifferentPendingId],
    );
    s.transfers(
        &[Transfer {
            timeout: 5,
            ..retry
        }],
        &[T::ExistsWithDifferentTimeout],
    );
    s.transfers(
        &[Transfer {
            debit_account_id: 6,
            ..retry
        }],
        &[T::ExistsWithDifferentDebitAccountId],
    );
    s.transfers(
        &[Transfer {
            credit_account_id: 6,
            ..retry
        }],
        &[T::ExistsWithDifferentCreditAccountId],
    );
    s.transfers(
        &[Transfer {
            amount: 11,
            ..retry
        }],
        &[T::ExistsWithDifferentAmount],
    );
    s.transfers(
        &[Transfer {
            user_data_128: 1,
            ..retry
        }],
        &[T::ExistsWithDifferentUserData128],
    );
    s.transfers(
        &[Transfer {
            user_data_64: 1,
            ..retry
        }],
        &[T::ExistsWithDifferentUserData64],
    );
    s.transfers(
        &[Transfer {
            user_data_32: 1,
            ..retry
        }],
        &[T::ExistsWithDifferentUserData32],
    );
    s.transfers(
        &[Transfer { ledger: 2, ..retry }],
        &[T::ExistsWithDifferentLedger],
    );
    s.transfers(
        &[Transfer { code: 2, ..retry }],
        &[T::ExistsWithDifferentCode],
    );
    let before = s.balance(1);
    s.transfers(&[retry], &[T::Exists]);
    assert_eq!(s.balance(1), before, "a retried transfer applied twice");
    s.transfers(&[transfer(110, 1, 999, 1)], &[T::CreditAccountNotFound]);
    s.transfers(&[transfer(110, 1, 999, 1)], &[T::IdAlreadyFailed]);
}

fn field_results(s: &mut Script) {
    let post_and_void = TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
    s.transfers(
        &[with_flags(post(120, 100, 1), post_and_void)],
        &[T::FlagsAreMutuallyExclusive],
    );
    s.transfers(&[transfer(120, 0, 2, 1)], &[T::DebitAccountIdMustNotBeZero]);
    s.transfers(
        &[transfer(120, MAX, 2, 1)],
        &[T::DebitAccountIdMustNotBeIntMax],
    );
    s.transfers(
        &[transfer(120, 1, 0, 1)],
        &[T::CreditAccountIdMustNotBeZero],
    );
    s.transfers(
        &[transfer(120, 1, MAX, 1)],
        &[T::CreditAccountIdMustNotBeIntMax],
    );
    s.transfers(&[transfer(120, 1, 1, 1)], &[T::AccountsMustBeDifferent]);
    s.transfers(
        &[Transfer {
            pending_id: 7,
            ..transfer(120, 1, 2, 1)
        }],
        &[T::PendingIdMustBeZero],
    );
    s.transfers(&[post(120, 0, 1)], &[T::PendingIdMustNotBeZero]);
    s.transfers(&[post(120, MAX, 1)], &[T::PendingIdMustNotBeIntMax]);
    s.transfers(&[post(120, 120, 1)], &[T::PendingIdMustBeDifferent]);
    s.transfers(
        &[Transfer {
            timeout: 1,
            ..transfer(120, 1, 2, 1)
        }],
        &[T::TimeoutReservedForPendingTransfer],
    );
    s.transfers(
        &[with_flags(
            transfer(120, 1, 2, 1),
            TransferFlags::CLOSING_DEBIT,
        )],
        &[T::ClosingTransferMustBePending],
    );
    s.transfers(
        &[Transfer {
            ledger: 0,
            ..transfer(120, 1, 2, 1)
        }],
        &[T::LedgerMustNotBeZero],
    );
    s.transfers(
        &[Transfer {
            code: 0,
            ..transfer(120, 1, 2, 1)
        }],
        &[T::CodeMustNotBeZero],
    );
    s.transfers(&[transfer(121, 999, 2, 1)], &[T::DebitAccountNotFound]);
    s.transfers(
        &[transfer(122, 1, 3, 1)],
        &[T::AccountsMustHaveTheSameLedger],
    );
    s.transfers(
        &[Transfer {
            ledger: 2,
            ..transfer(122, 1, 2, 1)
        }],
        &[T::TransferMustHaveTheSameLedgerAsAccounts],
    );
}

fn two_phase_results(s: &mut Script) {
    s.transfers(&[post(130, 888, 1)], &[T::PendingTransferNotFound]);
    s.transfers(&[post(131, 100, 1)], &[T::PendingTransferNotPending]);
    s.transfers(&[pending(200, 1, 2, 50, 0)], &[T::Created]);
    s.transfers(
        &[Transfer {
            debit_account_id: 6,
            ..post(132, 200, 1)
        }],
        &[T::PendingTransferHasDifferentDebitAccountId],
    );
    s.transfers(
        &[Transfer {
            credit_account_id: 6,
            ..post(132, 200, 1)
        }],
        &[T::PendingTransferHasDifferentCreditAccountId],
    );
    s.transfers(
        &[Transfer {
            ledger: 2,
            ..post(132, 200, 1)
        }],
        &[T::PendingTransferHasDifferentLedger],
    );
    s.transfers(
        &[Transfer {
            code: 2,
            ..post(132, 200, 1)
        }],
        &[T::PendingTransferHasDifferentCode],
    );
    s.transfers(&[post(132, 200, 51)], &[T::ExceedsPendingTransferAmount]);
    s.transfers(
        &[Transfer {
            amount: 10,
            ..void(132, 200)
        }],
        &[T::PendingTransferHasDifferentAmount],
    );
    s.transfers(&[post(133, 200, 20)], &[T::Created]);
    s.transfers(&[post(134, 200, 1)], &[T::PendingTransferAlreadyPosted]);
    s.transfers(
        &[pending(201, 1, 2, 5, 0), void(135, 201), void(136, 201)],
        &[T::Created, T::Created, T::PendingTransferAlreadyVoided],
    );
    s.transfers(&[pending(202, 1, 2, 5, 1)], &[T::Created]);
    let expires_at = s.ledger.lookup_transfers(&[202])[0].timestamp + NS_PER_SECOND;
    assert_eq!(s.ledger.expire(expires_at - 1), Vec::<u128>::new());
    assert_eq!(s.ledger.expire(expires_at), vec![202]);
    s.transfers(&[post(137, 202, 1)], &[T::PendingTransferExpired]);
}

fn imported_and_closed_results(s: &mut Script) {
    s.transfers(
        &[imported(transfer(140, 1, 2, 1), 1)],
        &[T::ImportedEventTimestampMustNotRegress],
    );
    // A fresh account far ahead of the last transfer leaves room for imported timestamps
    // that come after every transfer but before the account.
    s.now = s.ledger.timestamp_last() + 1_000;
    s.accounts(&[account(11, 1)], &[A::Created]);
    let account_11 = s.ledger.lookup_accounts(&[11])[0].timestamp;
    s.transfers(
        &[imported(transfer(140, 11, 2, 1), account_11 - 1)],
        &[T::ImportedEventTimestampMustPostdateDebitAccount],
    );
    s.transfers(
        &[imported(transfer(141, 1, 11, 1), account_11 - 2)],
        &[T::ImportedEventTimestampMustPostdateCreditAccount],
    );
    s.transfers(
        &[imported(pending(142, 1, 2, 1, 5), account_11 - 3)],
        &[T::ImportedEventTimeoutMustBeZero],
    );
    s.transfers(
        &[imported(transfer(143, 1, 2, 1), account_11 - 4)],
        &[T::Created],
    );
    let closing = TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT;
    s.transfers(
        &[with_flags(transfer(150, 6, 2, 0), closing)],
        &[T::Created],
    );
    s.transfers(
        &[transfer(151, 6, 2, 1), transfer(152, 2, 6, 1)],
        &[T::DebitAccountAlreadyClosed, T::CreditAccountAlreadyClosed],
    );
    s.transfers(&[post(153, 150, 0)], &[T::DebitAccountAlreadyClosed]);
    s.transfers(
        &[void(154, 150), transfer(155, 6, 2, 1)],
        &[T::Created, T::Created],
    );
}

fn overflow_and_limit_results(s: &mut Script) {
    s.transfers(&[pending(160, 7, 8, MAX - 1, 0)], &[T::Created]);
    s.transfers(&[pending(161, 7, 2, 2, 0)], &[T::OverflowsDebitsPending]);
    s.transfers(&[pending(162, 1, 8, 2, 0)], &[T::OverflowsCreditsPending]);
    s.transfers(&[transfer(163, 9, 10, MAX - 1)], &[T::Created]);
    s.transfers(&[transfer(164, 9, 2, 2)], &[T::OverflowsDebitsPosted]);
    s.transfers(&[transfer(165, 1, 10, 2)], &[T::OverflowsCreditsPosted]);
    s.transfers(&[transfer(166, 7, 2, 2)], &[T::OverflowsDebits]);
    s.transfers(&[transfer(167, 1, 8, 2)], &[T::OverflowsCredits]);
    s.transfers(&[transfer(168, 4, 2, 1)], &[T::ExceedsCredits]);
    s.transfers(&[transfer(169, 1, 5, 1)], &[T::ExceedsDebits]);
}

#[test]
fn post_moves_part_of_a_pending_amount_and_releases_the_rest() {
    let mut s = transfer_script();
    s.transfers(&[pending(1, 1, 2, 50, 0)], &[T::Created]);
    assert_eq!(s.balance(1), (50, 0, 0, 0));
    assert_eq!(s.balance(2), (0, 0, 50, 0));
    s.transfers(
        &[Transfer {
            user_data_64: 7,
            ..post(2, 1, 20)
        }],
        &[T::Created],
    );
    assert_eq!(s.balance(1), (0, 20, 0, 0));
    assert_eq!(s.balance(2), (0, 0, 0, 20));
    let posted = s.ledger.lookup_transfers(&[2])[0];
    assert_eq!(
        (
            posted.debit_account_id,
            posted.credit_account_id,
            posted.amount
        ),
        (1, 2, 20)
    );
    assert_eq!((posted.ledger, posted.code, posted.user_data_64), (1, 1, 7));
    assert_eq!(s.ledger.pending_status(1), Some(PendingStatus::Posted));
    // Retrying the post is `exists` (zero fields inherit); the pending is not re-posted.
    s.transfers(
        &[Transfer {
            user_data_64: 8,
            ..post(2, 1, 20)
        }],
        &[T::ExistsWithDifferentUserData64],
    );
    s.transfers(&[post(2, 1, 20)], &[T::Exists]);
    s.transfers(
        &[Transfer {
            user_data_64: 7,
            ..post(2, 1, 20)
        }],
        &[T::Exists],
    );
    // Posting with AMOUNT_MAX takes the whole pending amount.
    s.transfers(
        &[pending(3, 1, 2, 30, 0), post(4, 3, MAX)],
        &[T::Created, T::Created],
    );
    assert_eq!(s.ledger.lookup_transfers(&[4])[0].amount, 30);
    assert_eq!(s.balance(1), (0, 50, 0, 0));
}

#[test]
fn failed_linked_chain_leaves_no_trace() {
    let mut s = transfer_script();
    s.transfers(&[pending(1, 1, 2, 40, 0)], &[T::Created]);
    // The reference history runs a batch of the same size whose events all fail alone.
    let mut reference = s.ledger.clone();
    reference.create_transfers(s.now, &[transfer(0, 1, 2, 1); 4]);
    let chain = [
        linked(transfer(10, 1, 2, 5)),
        linked(post(11, 1, 10)),
        linked(pending(12, 6, 7, 3, 60)),
        transfer(13, 4, 2, 1), // exceeds_credits breaks the chain
    ];
    s.transfers(
        &chain,
        &[
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::LinkedEventFailed,
            T::ExceedsCredits,
        ],
    );
    assert_eq!(
        s.ledger.state_hash_excluding_failed_ids(),
        reference.state_hash_excluding_failed_ids()
    );
    assert_eq!(s.ledger.pending_status(1), Some(PendingStatus::Pending));
    assert!(s.ledger.lookup_transfers(&[10, 11, 12, 13]).is_empty());
    // Accounts created in a failed chain are gone too, and the chain's ids are free.
    let accounts = [account_flags(20, 1, AccountFlags::LINKED), account(21, 0)];
    s.accounts(&accounts, &[A::LinkedEventFailed, A::LedgerMustNotBeZero]);
    assert!(s.ledger.lookup_accounts(&[20]).is_empty());
    s.transfers(&[transfer(10, 1, 2, 5)], &[T::Created]);
    // The transiently failing id is remembered.
    s.transfers(&[transfer(13, 4, 2, 0)], &[T::IdAlreadyFailed]);
}

#[test]
fn a_chain_succeeds_as_a_whole_and_chains_are_independent() {
    let mut s = transfer_script();
    let linked = TransferFlags::LINKED;
    let events = [
        with_flags(transfer(1, 1, 2, 5), linked),
        transfer(2, 2, 6, 5),
        with_flags(transfer(3, 1, 2, 5), linked),
        transfer(3, 1, 2, 5), // same id twice in one chain: `linked` differs, so the chain fails
        transfer(4, 1, 2, 1),
    ];
    let expected = [
        T::Created,
        T::Created,
        T::LinkedEventFailed,
        T::ExistsWithDifferentFlags,
        T::Created,
    ];
    s.transfers(&events, &expected);
    assert_eq!(s.balance(1), (0, 6, 0, 0));
    assert_eq!(s.balance(6), (0, 0, 0, 5));
}

#[test]
fn expiry_is_ordered_by_expiry_then_creation_and_reopens_closed_accounts() {
    let mut s = transfer_script();
    let closing = TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT;
    let events = [
        pending(1, 1, 2, 10, 2),
        pending(2, 1, 2, 10, 1),
        Transfer {
            timeout: 1,
            ..with_flags(transfer(3, 1, 6, 0), closing)
        },
        pending(4, 1, 2, 10, 0),
    ];
    s.transfers(&events, &[T::Created; 4]);
    s.transfers(&[transfer(5, 1, 6, 1)], &[T::CreditAccountAlreadyClosed]);
    let base = s.ledger.lookup_transfers(&[1])[0].timestamp;
    // Transfers 2 and 3 both expire one second after creation (3 a nanosecond later).
    assert_eq!(s.ledger.expire(base + 2 * NS_PER_SECOND - 1), vec![2, 3]);
    assert_eq!(s.ledger.expire(base + 2 * NS_PER_SECOND), vec![1]);
    let far_future = NOW + 1_000_000 * NS_PER_SECOND;
    assert_eq!(
        s.ledger.expire(far_future),
        Vec::<u128>::new(),
        "no timeout, no expiry"
    );
    assert_eq!(s.balance(1), (10, 0, 0, 0));
    assert!(!s.ledger.lookup_accounts(&[6])[0]
        .flags
        .contains(AccountFlags::CLOSED));
    s.transfers(&[transfer(6, 1, 6, 1)], &[T::Created]);
    // Events after an expiry step are stamped after it.
    assert!(s.ledger.lookup_transfers(&[6])[0].timestamp > far_future);
}

#[test]
fn post_after_expiry_time_fails_even_before_the_expiry_step() {
    let mut s = transfer_script();
    s.transfers(&[pending(1, 1, 2, 10, 1)], &[T::Created]);
    s.now = s.ledger.timestamp_last() + NS_PER_SECOND;
    s.transfers(&[post(2, 1, 10)], &[T::PendingTransferExpired]);
    assert_eq!(s.ledger.pending_status(1), Some(PendingStatus::Pending));
}

#[test]
fn balancing_transfers_clamp_to_the_balance_rule_and_record_the_actual_amount() {
    let mut s = transfer_script();
    s.transfers(&[transfer(1, 1, 4, 30)], &[T::Created]); // account 4 gets 30 credits
    let balancing = with_flags(transfer(2, 4, 2, 100), TransferFlags::BALANCING_DEBIT);
    s.transfers(&[balancing], &[T::Created]);
    assert_eq!(s.ledger.lookup_transfers(&[2])[0].amount, 30);
    assert_eq!(s.balance(4), (0, 30, 0, 30));
    // A retry whose maximum covers the recorded amount is `exists`; a smaller one is not.
    s.transfers(
        &[Transfer {
            amount: 50,
            ..balancing
        }],
        &[T::Exists],
    );
    s.transfers(
        &[Transfer {
            amount: 29,
            ..balancing
        }],
        &[T::ExistsWithDifferentAmount],
    );
    // Nothing left to move: a zero-amount transfer is still created.
    s.transfers(&[Transfer { id: 3, ..balancing }], &[T::Created]);
    assert_eq!(s.ledger.lookup_transfers(&[3])[0].amount, 0);
    let credit_side = with_flags(transfer(4, 5, 2, 100), TransferFlags::BALANCING_CREDIT);
    s.transfers(&[transfer(5, 5, 1, 7)], &[T::Created]); // account 5 gets 7 debits
    s.transfers(
        &[Transfer {
            debit_account_id: 1,
            credit_account_id: 5,
            ..credit_side
        }],
        &[T::Created],
    );
    assert_eq!(s.balance(5), (0, 7, 0, 7));
}

#[test]
fn timestamps_are_unique_and_increase_even_when_the_clock_goes_back() {
    let mut s = transfer_script();
    s.transfers(
        &[transfer(1, 1, 2, 1), transfer(2, 1, 2, 1)],
        &[T::Created; 2],
    );
    s.now = NOW - 1_000_000;
    s.transfers(&[transfer(3, 1, 2, 1)], &[T::Created]);
    let stamps: Vec<u64> = s
        .ledger
        .lookup_transfers(&[1, 2, 3])
        .iter()
        .map(|t| t.timestamp)
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    let accounts = s.ledger.lookup_accounts(&[1])[0].timestamp;
    assert!(accounts < stamps[0]);
    // Results carry: created -> new object, exists -> original, failure -> validation time.
    let results = s
        .ledger
        .create_transfers(NOW, &[transfer(1, 1, 2, 1), transfer(9, 1, 999, 1)]);
    assert_eq!(results[0].timestamp, stamps[0]);
    assert_eq!(results[1].timestamp, s.ledger.timestamp_last());
}

fn account_filter(account_id: u128, flags: AccountFilterFlags) -> AccountFilter {
    AccountFilter {
        account_id,
        limit: 100,
        flags,
        ..AccountFilter::default()
    }
}

#[test]
fn account_transfers_and_balances_follow_the_filter() {
    let mut s = Script::new();
    s.accounts(
        &[
            account_flags(1, 1, AccountFlags::HISTORY),
            account(2, 1),
            account(3, 1),
        ],
        &[A::Created; 3],
    );
    let events = [
        transfer(10, 1, 2, 5),
        Transfer {
            user_data_32: 9,
            ..transfer(11, 2, 1, 3)
        },
        transfer(12, 2, 3, 1),
        pending(13, 1, 3, 2, 0),
    ];
    s.transfers(&events, &[T::Created; 4]);
    let both = AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS;
    let ids = |transfers: Vec<Transfer>| transfers.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.ledger.get_account_transfers(&account_filter(1, both))),
        [10, 11, 13]
    );
    assert_eq!(
        ids(s
            .ledger
            .get_account_transfers(&account_filter(1, AccountFilterFlags::CREDITS))),
        [11]
    );
    let reversed = AccountFilter {
        limit: 2,
        ..account_filter(1, both | AccountFilterFlags::REVERSED)
    };
    assert_eq!(ids(s.ledger.get_account_transfers(&reversed)), [13, 11]);
    let by_user_data = AccountFilter {
        user_data_32: 9,
        ..account_filter(2, both)
    };
    assert_eq!(ids(s.ledger.get_account_transfers(&by_user_data)), [11]);
    let t11 = s.ledger.lookup_transfers(&[11])[0].timestamp;
    let window = AccountFilter {
        timestamp_min: t11,
        timestamp_max: t11,
        ..account_filter(2, both)
    };
    assert_eq!(ids(s.ledger.get_account_transfers(&window)), [11]);
    assert!(s
        .ledger
        .get_account_transfers(&account_filter(1, AccountFilterFlags(0)))
        .is_empty());
    assert!(s
        .ledger
        .get_account_transfers(&AccountFilter {
            limit: 0,
            ..account_filter(1, both)
        })
        .is_empty());
    let balances = s.ledger.get_account_balances(&account_filter(1, both));
    let rows: Vec<_> = balances
        .iter()
        .map(|b| (b.debits_pending, b.debits_posted, b.credits_posted))
        .collect();
    assert_eq!(rows, [(0, 5, 0), (0, 5, 3), (2, 5, 3)]);
    assert!(
        s.ledger
            .get_account_balances(&account_filter(2, both))
            .is_empty(),
        "no history flag"
    );
}

#[test]
fn queries_select_by_fields_and_time() {
    let mut s = Script::new();
    let accounts = [
        account(1, 1),
        Account {
            user_data_64: 4,
            ..account(2, 1)
        },
        account(3, 2),
    ];
    s.accounts(&accounts, &[A::Created; 3]);
    s.transfers(
        &[
            transfer(10, 1, 2, 5),
            Transfer {
                code: 7,
                ..transfer(11, 2, 1, 3)
            },
        ],
        &[T::Created; 2],
    );
    let filter = |ledger, code, user_data_64| QueryFilter {
        ledger,
        code,
        user_data_64,
        limit: 10,
        ..QueryFilter::default()
    };
    let account_ids = |accounts: Vec<Account>| accounts.iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(
        account_ids(s.ledger.query_accounts(&filter(1, 0, 0))),
        [1, 2]
    );
    assert_eq!(account_ids(s.ledger.query_accounts(&filter(0, 0, 4))), [2]);
    let reversed = QueryFilter {
        flags: QueryFilterFlags::REVERSED,
        ..filter(0, 0, 0)
    };
    assert_eq!(account_ids(s.ledger.query_accounts(&reversed)), [3, 2, 1]);
    let transfers = s.ledger.query_transfers(&filter(0, 7, 0));
    assert_eq!(transfers.iter().map(|t| t.id).collect::<Vec<_>>(), [11]);
    let after = QueryFilter {
        timestamp_min: transfers[0].timestamp,
        ..filter(0, 0, 0)
    };
    assert_eq!(s.ledger.query_transfers(&after).len(), 1);
    let inverted = QueryFilter {
        timestamp_min: 5,
        timestamp_max: 4,
        ..filter(0, 0, 0)
    };
    assert!(s.ledger.query_transfers(&inverted).is_empty());
}

#[test]
fn changes_hold_every_changed_object_once() {
    let mut s = transfer_script();
    let initial = s.ledger.take_changes();
    assert_eq!(initial.accounts.len(), 10);
    s.transfers(
        &[
            pending(1, 1, 2, 5, 0),
            post(2, 1, 5),
            transfer(3, 1, 999, 1),
        ],
        &[T::Created, T::Created, T::CreditAccountNotFound],
    );
    let changes = s.ledger.take_changes();
    assert_eq!(
        changes.accounts.iter().map(|a| a.id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(changes.accounts[0].debits_posted, 5);
    assert_eq!(
        changes.transfers.iter().map(|t| t.id).collect::<Vec<_>>(),
        [1, 2]
    );
    let statuses: Vec<_> = changes
        .pending_statuses
        .iter()
        .map(|(transfer, status)| (transfer.id, *status))
        .collect();
    assert_eq!(statuses, [(1, PendingStatus::Posted)]);
    assert_eq!(changes.failed_ids, [3]);
    assert_eq!(s.ledger.take_changes(), super::Changes::default());
}

#[test]
fn recycled_changes_are_refilled_like_fresh_ones() {
    let mut s = transfer_script();
    s.accounts(
        &[account_flags(11, 1, AccountFlags::HISTORY)],
        &[A::Created],
    );
    let initial = s.ledger.take_changes();
    let accounts_memory = initial.accounts.as_ptr();
    let mut twin = s.ledger.clone();
    s.ledger.recycle_changes(initial);
    let rounds: [&[Transfer]; 2] = [
        &[
            pending(1, 1, 11, 5, 0),
            post(2, 1, 5),
            transfer(3, 1, 999, 1),
        ],
        &[transfer(4, 11, 6, 7), void(5, 1), transfer(6, 999, 1, 1)],
    ];
    for (round, transfers) in rounds.into_iter().enumerate() {
        s.ledger.create_transfers(NOW, transfers);
        twin.create_transfers(NOW, transfers);
        let recycled = s.ledger.take_changes();
        let fresh = twin.take_changes();
        assert_eq!(recycled, fresh, "round {round}");
        assert!(!fresh.failed_ids.is_empty() && !fresh.transfers.is_empty());
        assert!(!fresh.balances.is_empty() && !fresh.accounts.is_empty());
        if round == 0 {
            assert_eq!(recycled.accounts.as_ptr(), accounts_memory, "memory reused");
        }
        s.ledger.recycle_changes(recycled);
    }
    assert_eq!(s.ledger.take_changes(), super::Changes::default());
}

#[test]
fn same_inputs_give_the_same_state_hash() {
    let run = || {
        let mut s = transfer_script();
        shape_and_existence_results(&mut s);
        two_phase_results(&mut s);
        s.ledger.state_hash()
    };
    assert_eq!(run(), run());
    let mut other = transfer_script();
    other.transfers(&[transfer(1, 1, 2, 1)], &[T::Created]);
    assert_ne!(
        other.ledger.state_hash(),
        transfer_script().ledger.state_hash()
    );
}
