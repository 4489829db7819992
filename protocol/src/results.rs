//! Result codes of `create_accounts` and `create_transfers`.
//!
//! Each enum lists its statuses in precedence order: when several apply to one event, the
//! one listed first (the smallest code) is returned. The numeric codes are the wire values
//! and are stable.

use bytemuck::{Pod, Zeroable};

/// A `u32` that names no status of the enum it was decoded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownResultCode(pub u32);

impl core::fmt::Display for UnknownResultCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "unknown result code {}", self.0)
    }
}

impl std::error::Error for UnknownResultCode {}

macro_rules! result_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $code:literal => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name {
            $($variant = $code,)*
        }

        impl $name {
            /// Every status, in precedence order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The status name as SEMANTICS.md spells it (`"created"`, `"exceeds_credits"`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            pub const fn code(self) -> u32 {
                self as u32
            }

            pub fn from_code(code: u32) -> Result<Self, UnknownResultCode> {
                match code {
                    $($code => Ok(Self::$variant),)*
                    _ => Err(UnknownResultCode(code)),
                }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|status| status.as_str() == name)
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

result_enum! {
    /// The outcome of one `create_accounts` event.
    CreateAccountResult {
        Created = 0 => "created",
        LinkedEventFailed = 1 => "linked_event_failed",
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        ImportedEventExpected = 3 => "imported_event_expected",
        ImportedEventNotExpected = 4 => "imported_event_not_expected",
        TimestampMustBeZero = 5 => "timestamp_must_be_zero",
        ImportedEventTimestampOutOfRange = 6 => "imported_event_timestamp_out_of_range",
        ImportedEventTimestampMustNotAdvance = 7 => "imported_event_timestamp_must_not_advance",
        ReservedField = 8 => "reserved_field",
        ReservedFlag = 9 => "reserved_flag",
        IdMustNotBeZero = 10 => "id_must_not_be_zero",
        IdMustNotBeIntMax = 11 => "id_must_not_be_int_max",
        ExistsWithDifferentFlags = 12 => "exists_with_different_flags",
        ExistsWithDifferentUserData128 = 13 => "exists_with_different_user_data_128",
        ExistsWithDifferentUserData64 = 14 => "exists_with_different_user_data_64",
        ExistsWithDifferentUserData32 = 15 => "exists_with_different_user_data_32",
        ExistsWithDifferentLedger = 16 => "exists_with_different_ledger",
        ExistsWithDifferentCode = 17 => "exists_with_different_code",
        Exists = 18 => "exists",
        FlagsAreMutuallyExclusive = 19 => "flags_are_mutually_exclusive",
        DebitsPendingMustBeZero = 20 => "debits_pending_must_be_zero",
        DebitsPostedMustBeZero = 21 => "debits_posted_must_be_zero",
        CreditsPendingMustBeZero = 22 => "credits_pending_must_be_zero",
        CreditsPostedMustBeZero = 23 => "credits_posted_must_be_zero",
        LedgerMustNotBeZero = 24 => "ledger_must_not_be_zero",
        CodeMustNotBeZero = 25 => "code_must_not_be_zero",
        ImportedEventTimestampMustNotRegress = 26 => "imported_event_timestamp_must_not_regress",
    }
}

result_enum! {
    /// The outcome of one `create_transfers` event.
    CreateTransferResult {
        Created = 0 => "created",
        LinkedEventFailed = 1 => "linked_event_failed",
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        ImportedEventExpected = 3 => "imported_event_expected",
        ImportedEventNotExpected = 4 => "imported_event_not_expected",
        TimestampMustBeZero = 5 => "timestamp_must_be_zero",
        ImportedEventTimestampOutOfRange = 6 => "imported_event_timestamp_out_of_range",
        ImportedEventTimestampMustNotAdvance = 7 => "imported_event_timestamp_must_not_advance",
        ReservedFlag = 8 => "reserved_flag",
        IdMustNotBeZero = 9 => "id_must_not_be_zero",
        IdMustNotBeIntMax = 10 => "id_must_not_be_int_max",
        ExistsWithDifferentFlags = 11 => "exists_with_different_flags",
        ExistsWithDifferentPendingId = 12 => "exists_with_different_pending_id",
        ExistsWithDifferentTimeout = 13 => "exists_with_different_timeout",
        ExistsWithDifferentDebitAccountId = 14 => "exists_with_different_debit_account_id",
        ExistsWithDifferentCreditAccountId = 15 => "exists_with_different_credit_account_id",
        ExistsWithDifferentAmount = 16 => "exists_with_different_amount",
        ExistsWithDifferentUserData128 = 17 => "exists_with_different_user_data_128",
        ExistsWithDifferentUserData64 = 18 => "exists_with_different_user_data_64",
        ExistsWithDifferentUserData32 = 19 => "exists_with_different_user_data_32",
        ExistsWithDifferentLedger = 20 => "exists_with_different_ledger",
        ExistsWithDifferentCode = 21 => "exists_with_different_code",
        Exists = 22 => "exists",
        IdAlreadyFailed = 23 => "id_already_failed",
        FlagsAreMutuallyExclusive = 24 => "flags_are_mutually_exclusive",
        DebitAccountIdMustNotBeZero = 25 => "debit_account_id_must_not_be_zero",
        DebitAccountIdMustNotBeIntMax = 26 => "debit_account_id_must_not_be_int_max",
        CreditAccountIdMustNotBeZero = 27 => "credit_account_id_must_not_be_zero",
        CreditAccountIdMustNotBeIntMax = 28 => "credit_account_id_must_not_be_int_max",
        AccountsMustBeDifferent = 29 => "accounts_must_be_different",
        PendingIdMustBeZero = 30 => "pending_id_must_be_zero",
        PendingIdMustNotBeZero = 31 => "pending_id_must_not_be_zero",
        PendingIdMustNotBeIntMax = 32 => "pending_id_must_not_be_int_max",
        PendingIdMustBeDifferent = 33 => "pending_id_must_be_different",
        TimeoutReservedForPendingTransfer = 34 => "timeout_reserved_for_pending_transfer",
        ClosingTransferMustBePending = 35 => "closing_transfer_must_be_pending",
        LedgerMustNotBeZero = 36 => "ledger_must_not_be_zero",
        CodeMustNotBeZero = 37 => "code_must_not_be_zero",
        DebitAccountNotFound = 38 => "debit_account_not_found",
        CreditAccountNotFound = 39 => "credit_account_not_found",
        AccountsMustHaveTheSameLedger = 40 => "accounts_must_have_the_same_ledger",
        TransferMustHaveTheSameLedgerAsAccounts = 41 => "transfer_must_have_the_same_ledger_as_accounts",
        PendingTransferNotFound = 42 => "pending_transfer_not_found",
        PendingTransferNotPending = 43 => "pending_transfer_not_pending",
        PendingTransferHasDifferentDebitAccountId = 44 => "pending_transfer_has_different_debit_account_id",
        PendingTransferHasDifferentCreditAccountId = 45 => "pending_transfer_has_different_credit_account_id",
        PendingTransferHasDifferentLedger = 46 => "pending_transfer_has_different_ledger",
        PendingTransferHasDifferentCode = 47 => "pending_transfer_has_different_code",
        ExceedsPendingTransferAmount = 48 => "exceeds_pending_transfer_amount",
        PendingTransferHasDifferentAmount = 49 => "pending_transfer_has_different_amount",
        PendingTransferAlreadyPosted = 50 => "pending_transfer_already_posted",
        PendingTransferAlreadyVoided = 51 => "pending_transfer_already_voided",
        PendingTransferExpired = 52 => "pending_transfer_expired",
        ImportedEventTimestampMustNotRegress = 53 => "imported_event_timestamp_must_not_regress",
        ImportedEventTimestampMustPostdateDebitAccount = 54 => "imported_event_timestamp_must_postdate_debit_account",
        ImportedEventTimestampMustPostdateCreditAccount = 55 => "imported_event_timestamp_must_postdate_credit_account",
        ImportedEventTimeoutMustBeZero = 56 => "imported_event_timeout_must_be_zero",
        DebitAccountAlreadyClosed = 57 => "debit_account_already_closed",
        CreditAccountAlreadyClosed = 58 => "credit_account_already_closed",
        OverflowsDebitsPending = 59 => "overflows_debits_pending",
        OverflowsCreditsPending = 60 => "overflows_credits_pending",
        OverflowsDebitsPosted = 61 => "overflows_debits_posted",
        OverflowsCreditsPosted = 62 => "overflows_credits_posted",
        OverflowsDebits = 63 => "overflows_debits",
        OverflowsCredits = 64 => "overflows_credits",
        OverflowsTimeout = 65 => "overflows_timeout",
        ExceedsCredits = 66 => "exceeds_credits",
        ExceedsDebits = 67 => "exceeds_debits",
    }
}

impl CreateTransferResult {
    /// Results that depend on ledger state rather than on the event alone. A transfer id
    /// that got one is remembered, and every retry with that id gets `id_already_failed`.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::DebitAccountNotFound
                | Self::CreditAccountNotFound
                | Self::PendingTransferNotFound
                | Self::ExceedsCredits
                | Self::ExceedsDebits
                | Self::DebitAccountAlreadyClosed
                | Self::CreditAccountAlreadyClosed
        )
    }
}

/// One create event's result on the wire: 16 bytes.
///
/// | offset | size | field                                                        |
/// |--------|------|--------------------------------------------------------------|
/// | 0      | 8    | timestamp: of the new object (`created`), of the existing one (`exists`), else of the validation |
/// | 8      | 4    | status: a [`CreateAccountResult`] or [`CreateTransferResult`] code |
/// | 12     | 4    | reserved (zero)                                              |
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Pod, Zeroable)]
#[repr(C)]
pub struct CreateResult {
    pub timestamp: u64,
    pub status: u32,
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<CreateResult>() == 16);

impl CreateResult {
    pub fn account(status: CreateAccountResult, timestamp: u64) -> Self {
        Self {
            timestamp,
            status: status.code(),
            reserved: 0,
        }
    }

    pub fn transfer(status: CreateTransferResult, timestamp: u64) -> Self {
        Self {
            timestamp,
            status: status.code(),
            reserved: 0,
        }
    }

    pub fn account_status(&self) -> Result<CreateAccountResult, UnknownResultCode> {
        CreateAccountResult::from_code(self.status)
    }

    pub fn transfer_status(&self) -> Result<CreateTransferResult, UnknownResultCode> {
        CreateTransferResult::from_code(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_in_precedence_order_and_names_round_trip() {
        for (index, status) in CreateTransferResult::ALL.iter().enumerate() {
            assert_eq!(status.code(), index as u32);
            assert_eq!(
                CreateTransferResult::from_name(status.as_str()),
                Some(*status)
            );
            assert_eq!(CreateTransferResult::from_code(status.code()), Ok(*status));
        }
        for (index, status) in CreateAccountResult::ALL.iter().enumerate() {
            assert_eq!(status.code(), index as u32);
            assert_eq!(
                CreateAccountResult::from_name(status.as_str()),
                Some(*status)
            );
        }
        assert_eq!(CreateTransferResult::ALL.len(), 68);
        assert_eq!(CreateAccountResult::ALL.len(), 27);
        assert_eq!(
            CreateTransferResult::from_code(68),
            Err(UnknownResultCode(68))
        );
    }

    #[test]
    fn exactly_seven_transfer_results_are_transient() {
        let transient: Vec<_> = CreateTransferResult::ALL
            .iter()
            .filter(|status| status.is_transient())
            .collect();
        assert_eq!(transient.len(), 7);
    }
}
