//! The operations a client can ask for, with their stable wire codes.

use crate::{Account, AccountBalance, AccountFilter, CreateResult, QueryFilter, Transfer};

/// One operation of the ledger. The numeric code is part of the protocol and never
/// changes; new operations are only ever appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Operation {
    CreateAccounts = 1,
    CreateTransfers = 2,
    LookupAccounts = 3,
    LookupTransfers = 4,
    GetAccountTransfers = 5,
    GetAccountBalances = 6,
    QueryAccounts = 7,
    QueryTransfers = 8,
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::CreateAccounts,
        Operation::CreateTransfers,
        Operation::LookupAccounts,
        Operation::LookupTransfers,
        Operation::GetAccountTransfers,
        Operation::GetAccountBalances,
        Operation::QueryAccounts,
        Operation::QueryTransfers,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Operation> {
        Self::ALL
            .into_iter()
            .find(|operation| operation.code() == code)
    }

    /// The name used in documentation, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateAccounts => "create_accounts",
            Operation::CreateTransfers => "create_transfers",
            Operation::LookupAccounts => "lookup_accounts",
            Operation::LookupTransfers => "lookup_transfers",
            Operation::GetAccountTransfers => "get_account_transfers",
            Operation::GetAccountBalances => "get_account_balances",
            Operation::QueryAccounts => "query_accounts",
            Operation::QueryTransfers => "query_transfers",
        }
    }

    /// Whether the operation changes state (and is therefore logged in the WAL).
    pub fn is_write(self) -> bool {
        matches!(self, Operation::CreateAccounts | Operation::CreateTransfers)
    }

    /// Size of one event of the request body.
    pub fn event_bytes(self) -> u32 {
        let bytes = match self {
            Operation::CreateAccounts => size_of::<Account>(),
            Operation::CreateTransfers => size_of::<Transfer>(),
            Operation::LookupAccounts | Operation::LookupTransfers => size_of::<u128>(),
            Operation::GetAccountTransfers | Operation::GetAccountBalances => {
                size_of::<AccountFilter>()
            }
            Operation::QueryAccounts | Operation::QueryTransfers => size_of::<QueryFilter>(),
        };
        bytes as u32
    }

    /// Size of one record of the reply body.
    pub fn result_bytes(self) -> u32 {
        let bytes = match self {
            Operation::CreateAccounts | Operation::CreateTransfers => size_of::<CreateResult>(),
            Operation::LookupAccounts | Operation::QueryAccounts => size_of::<Account>(),
            Operation::LookupTransfers
            | Operation::GetAccountTransfers
            | Operation::QueryTransfers => size_of::<Transfer>(),
            Operation::GetAccountBalances => size_of::<AccountBalance>(),
        };
        bytes as u32
    }

    /// Filters are single-event requests; the rest carry up to `BATCH_EVENTS_MAX` events.
    pub fn events_max(self) -> u32 {
        match self {
            Operation::GetAccountTransfers
            | Operation::GetAccountBalances
            | Operation::QueryAccounts
            | Operation::QueryTransfers => 1,
            _ => crate::BATCH_EVENTS_MAX,
        }
    }
}

impl core::fmt::Display for Operation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_stable() {
        for (index, operation) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(operation.code() as usize, index + 1);
            assert_eq!(Operation::from_code(operation.code()), Some(operation));
        }
        assert_eq!(Operation::from_code(0), None);
        assert_eq!(Operation::from_code(9), None);
        assert_eq!(Operation::CreateTransfers.event_bytes(), 128);
        assert_eq!(Operation::LookupTransfers.event_bytes(), 16);
        assert_eq!(Operation::QueryTransfers.event_bytes(), 64);
        assert_eq!(Operation::CreateTransfers.result_bytes(), 16);
    }
}
