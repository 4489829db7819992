use bytemuck::{Pod, Zeroable};

use crate::AccountFlags;

/// A double-entry account: 128 bytes, little-endian, `#[repr(C)]`.
///
/// | offset | size | field            |
/// |--------|------|------------------|
/// | 0      | 16   | id               |
/// | 16     | 16   | debits_pending   |
/// | 32     | 16   | debits_posted    |
/// | 48     | 16   | credits_pending  |
/// | 64     | 16   | credits_posted   |
/// | 80     | 16   | user_data_128    |
/// | 96     | 8    | user_data_64     |
/// | 104    | 4    | user_data_32     |
/// | 108    | 4    | reserved (zero)  |
/// | 112    | 4    | ledger           |
/// | 116    | 2    | code             |
/// | 118    | 2    | flags            |
/// | 120    | 8    | timestamp        |
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub reserved: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    pub timestamp: u64,
}

const _: () = assert!(core::mem::size_of::<Account>() == 128);
const _: () = assert!(core::mem::offset_of!(Account, user_data_64) == 96);
const _: () = assert!(core::mem::offset_of!(Account, ledger) == 112);
const _: () = assert!(core::mem::offset_of!(Account, timestamp) == 120);

impl Account {
    /// True when this account's balance rule would be broken by debiting `amount` more
    /// (checked against posted plus pending debits).
    pub fn debits_exceed_credits(&self, amount: u128) -> bool {
        self.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && exceeds(
                self.debits_pending,
                self.debits_posted,
                amount,
                self.credits_posted,
            )
    }

    /// True when this account's balance rule would be broken by crediting `amount` more.
    pub fn credits_exceed_debits(&self, amount: u128) -> bool {
        self.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && exceeds(
                self.credits_pending,
                self.credits_posted,
                amount,
                self.debits_posted,
            )
    }
}

/// `pending + posted + amount > limit`, without overflow (an overflowing sum exceeds any limit).
fn exceeds(pending: u128, posted: u128, amount: u128, limit: u128) -> bool {
    match pending
        .checked_add(posted)
        .and_then(|sum| sum.checked_add(amount))
    {
        Some(total) => total > limit,
        None => true,
    }
}
