use bytemuck::{Pod, Zeroable};

/// Flags of an [`AccountFilter`] (`u32` on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, Pod, Zeroable)]
#[repr(transparent)]
pub struct AccountFilterFlags(pub u32);

impl AccountFilterFlags {
    /// Include transfers where the account is the debit side.
    pub const DEBITS: Self = Self(1 << 0);
    /// Include transfers where the account is the credit side.
    pub const CREDITS: Self = Self(1 << 1);
    /// Newest first.
    pub const REVERSED: Self = Self(1 << 2);
    pub const KNOWN_BITS: u32 = 0b111;

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for AccountFilterFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Selects the transfers (or balance snapshots) of one account: 128 bytes.
///
/// | offset | size | field                                   |
/// |--------|------|-----------------------------------------|
/// | 0      | 16   | account_id                              |
/// | 16     | 16   | user_data_128 (0 = any)                 |
/// | 32     | 8    | user_data_64 (0 = any)                  |
/// | 40     | 4    | user_data_32 (0 = any)                  |
/// | 44     | 2    | code (0 = any)                          |
/// | 46     | 58   | reserved (zero)                         |
/// | 104    | 8    | timestamp_min (0 = no lower bound)      |
/// | 112    | 8    | timestamp_max (0 = no upper bound)      |
/// | 120    | 4    | limit (results at most; 0 = invalid)    |
/// | 124    | 4    | flags: debits, credits, reversed        |
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct AccountFilter {
    pub account_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub code: u16,
    pub reserved: [u8; 58],
    pub timestamp_min: u64,
    pub timestamp_max: u64,
    pub limit: u32,
    pub flags: AccountFilterFlags,
}

const _: () = assert!(core::mem::size_of::<AccountFilter>() == 128);
const _: () = assert!(core::mem::offset_of!(AccountFilter, timestamp_min) == 104);

impl Default for AccountFilter {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// Flags of a [`QueryFilter`] (`u32` on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, Pod, Zeroable)]
#[repr(transparent)]
pub struct QueryFilterFlags(pub u32);

impl QueryFilterFlags {
    /// Newest first.
    pub const REVERSED: Self = Self(1 << 0);
    pub const KNOWN_BITS: u32 = 0b1;

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Selects accounts or transfers by their secondary fields: 64 bytes.
///
/// | offset | size | field                                |
/// |--------|------|--------------------------------------|
/// | 0      | 16   | user_data_128 (0 = any)              |
/// | 16     | 8    | user_data_64 (0 = any)               |
/// | 24     | 4    | user_data_32 (0 = any)               |
/// | 28     | 4    | ledger (0 = any)                     |
/// | 32     | 2    | code (0 = any)                       |
/// | 34     | 6    | reserved (zero)                      |
/// | 40     | 8    | timestamp_min (0 = no lower bound)   |
/// | 48     | 8    | timestamp_max (0 = no upper bound)   |
/// | 56     | 4    | limit (results at most; 0 = invalid) |
/// | 60     | 4    | flags: reversed                      |
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Pod, Zeroable)]
#[repr(C)]
pub struct QueryFilter {
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub ledger: u32,
    pub code: u16,
    pub reserved: [u8; 6],
    pub timestamp_min: u64,
    pub timestamp_max: u64,
    pub limit: u32,
    pub flags: QueryFilterFlags,
}

const _: () = assert!(core::mem::size_of::<QueryFilter>() == 64);
const _: () = assert!(core::mem::offset_of!(QueryFilter, timestamp_min) == 40);

/// An account's balances right after one of its transfers (accounts with the `history`
/// flag only): 128 bytes.
///
/// | offset | size | field           |
/// |--------|------|-----------------|
/// | 0      | 16   | debits_pending  |
/// | 16     | 16   | debits_posted   |
/// | 32     | 16   | credits_pending |
/// | 48     | 16   | credits_posted  |
/// | 64     | 8    | timestamp (of the transfer) |
/// | 72     | 56   | reserved (zero) |
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct AccountBalance {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub timestamp: u64,
    pub reserved: [u8; 56],
}

const _: () = assert!(core::mem::size_of::<AccountBalance>() == 128);

impl Default for AccountBalance {
    fn default() -> Self {
        Self::zeroed()
    }
}
