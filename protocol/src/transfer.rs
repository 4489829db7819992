use bytemuck::{Pod, Zeroable};

use crate::{TransferFlags, NS_PER_SECOND};

/// An immutable movement of `amount` from a debit account to a credit account:
/// 128 bytes, little-endian, `#[repr(C)]`.
///
/// | offset | size | field             |
/// |--------|------|-------------------|
/// | 0      | 16   | id                |
/// | 16     | 16   | debit_account_id  |
/// | 32     | 16   | credit_account_id |
/// | 48     | 16   | amount            |
/// | 64     | 16   | pending_id        |
/// | 80     | 16   | user_data_128     |
/// | 96     | 8    | user_data_64      |
/// | 104    | 4    | user_data_32      |
/// | 108    | 4    | timeout (seconds) |
/// | 112    | 4    | ledger            |
/// | 116    | 2    | code              |
/// | 118    | 2    | flags             |
/// | 120    | 8    | timestamp         |
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    pub timestamp: u64,
}

const _: () = assert!(core::mem::size_of::<Transfer>() == 128);
const _: () = assert!(core::mem::offset_of!(Transfer, timeout) == 108);
const _: () = assert!(core::mem::offset_of!(Transfer, flags) == 118);
const _: () = assert!(core::mem::offset_of!(Transfer, timestamp) == 120);

impl Transfer {
    /// The timeout as a timestamp delta in nanoseconds (cannot overflow: u32 seconds).
    pub fn timeout_ns(&self) -> u64 {
        u64::from(self.timeout) * NS_PER_SECOND
    }

    /// When a pending transfer with a timeout expires; `None` for no timeout.
    pub fn expires_at(&self) -> Option<u64> {
        (self.timeout > 0).then(|| self.timestamp.saturating_add(self.timeout_ns()))
    }
}
