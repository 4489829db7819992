//! Typed flag sets of accounts and transfers.
//!
//! The flags are stored in the records as plain `u16` bit sets (so the records stay `Pod`);
//! these types give them names. Bits not named here are reserved and must be zero.

use bytemuck::{Pod, Zeroable};

macro_rules! flag_set {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$fmeta:meta])* $flag:ident = $bit:expr, $text:literal; )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
        #[repr(transparent)]
        pub struct $name(pub u16);

        impl $name {
            $( $(#[$fmeta])* pub const $flag: Self = Self(1 << $bit); )*

            /// Every named flag with its wire name, in bit order.
            pub const ALL: &'static [(Self, &'static str)] = &[ $( (Self::$flag, $text), )* ];

            /// The bits that name a flag; any other bit is reserved.
            pub const KNOWN_BITS: u16 = 0 $( | (1 << $bit) )*;

            pub const fn empty() -> Self {
                Self(0)
            }

            pub const fn bits(self) -> u16 {
                self.0
            }

            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// True when a bit outside the named flags is set.
            pub const fn has_reserved_bits(self) -> bool {
                self.0 & !Self::KNOWN_BITS != 0
            }

            pub fn set(&mut self, other: Self, value: bool) {
                if value {
                    self.0 |= other.0;
                } else {
                    self.0 &= !other.0;
                }
            }

            /// The flag with this wire name (`"pending"`, `"linked"`, ...).
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().find(|(_, text)| *text == name).map(|(flag, _)| *flag)
            }

            /// Wire names of the flags that are set, in bit order.
            pub fn names(self) -> impl Iterator<Item = &'static str> {
                Self::ALL.iter().filter(move |(flag, _)| self.contains(*flag)).map(|(_, text)| *text)
            }
        }

        impl core::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }
        }

        impl core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, other: Self) {
                self.0 |= other.0;
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let mut list = f.debug_list();
                list.entries(self.names());
                if self.has_reserved_bits() {
                    list.entry(&format_args!("reserved:{:#06x}", self.0 & !Self::KNOWN_BITS));
                }
                list.finish()
            }
        }
    };
}

flag_set! {
    /// Flags of an [`Account`](crate::Account).
    AccountFlags {
        /// Links this event's outcome to the next event of the request (atomic chain).
        LINKED = 0, "linked";
        /// debits_pending + debits_posted may never exceed credits_posted.
        DEBITS_MUST_NOT_EXCEED_CREDITS = 1, "debits_must_not_exceed_credits";
        /// credits_pending + credits_posted may never exceed debits_posted.
        CREDITS_MUST_NOT_EXCEED_DEBITS = 2, "credits_must_not_exceed_debits";
        /// Keep a balance snapshot after every transfer (for get_account_balances).
        HISTORY = 3, "history";
        /// The event carries its own (past) timestamp.
        IMPORTED = 4, "imported";
        /// The account rejects new transfers except voids of pending ones.
        CLOSED = 5, "closed";
    }
}

flag_set! {
    /// Flags of a [`Transfer`](crate::Transfer).
    TransferFlags {
        LINKED = 0, "linked";
        /// Reserve the amount (two-phase): moves into debits_pending / credits_pending.
        PENDING = 1, "pending";
        /// Post (all or part of) the pending transfer named by `pending_id`.
        POST_PENDING_TRANSFER = 2, "post_pending_transfer";
        /// Void the pending transfer named by `pending_id`, releasing its amount.
        VOID_PENDING_TRANSFER = 3, "void_pending_transfer";
        /// Move at most `amount`, clamped to what the debit account's credits allow.
        BALANCING_DEBIT = 4, "balancing_debit";
        /// Move at most `amount`, clamped to what the credit account's debits allow.
        BALANCING_CREDIT = 5, "balancing_credit";
        /// Close the debit account (requires `pending`; voiding reopens it).
        CLOSING_DEBIT = 6, "closing_debit";
        /// Close the credit account (requires `pending`; voiding reopens it).
        CLOSING_CREDIT = 7, "closing_credit";
        /// The event carries its own (past) timestamp.
        IMPORTED = 8, "imported";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reserved_bits_are_seen() {
        let flags = TransferFlags::PENDING | TransferFlags::LINKED;
        assert_eq!(flags.names().collect::<Vec<_>>(), ["linked", "pending"]);
        assert_eq!(
            TransferFlags::from_name("closing_credit"),
            Some(TransferFlags::CLOSING_CREDIT)
        );
        assert_eq!(TransferFlags::from_name("nope"), None);
        assert!(!flags.has_reserved_bits());
        assert!(TransferFlags(1 << 9).has_reserved_bits());
        assert!(AccountFlags(1 << 6).has_reserved_bits());
        assert!(!AccountFlags::CLOSED.has_reserved_bits());
    }
}
