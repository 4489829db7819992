//! What the ledger remembers beyond its state: the undo log of the open linked chain and
//! the set of objects changed since the engine last took them (for checkpoints).

use protocol::{Account, AccountBalance, Transfer};

use super::resident::{PendingStatus, Slot, TransferSlot};

/// One reversible step taken inside an open linked chain. Rolled back in LIFO order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Undo {
    AccountCreated {
        id: u128,
    },
    AccountChanged {
        slot: Slot,
        before: Account,
    },
    TransferCreated {
        id: u128,
    },
    StatusChanged {
        slot: TransferSlot,
        before: PendingStatus,
    },
    ExpiryRemoved {
        expires_at: u64,
        slot: TransferSlot,
    },
}

/// Undo entries are only recorded while a linked chain is open: events outside a chain
/// either apply whole or not at all, so they need no undo.
#[derive(Clone, Default)]
pub(crate) struct UndoLog {
    active: bool,
    entries: Vec<Undo>,
}

impl UndoLog {
    pub fn begin(&mut self) {
        assert!(!self.active, "linked chains do not nest");
        assert!(self.entries.is_empty());
        self.active = true;
    }

    pub fn commit(&mut self) {
        self.active = false;
        self.entries.clear();
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    #[inline]
    pub fn record(&mut self, undo: Undo) {
        if self.active {
            self.entries.push(undo);
        }
    }

    /// Take the next entry to roll back (newest first); `None` ends the rollback.
    pub fn pop(&mut self) -> Option<Undo> {
        debug_assert!(self.active);
        self.entries.pop()
    }
}

/// Everything changed since the last [`Ledger::take_changes`](super::Ledger::take_changes):
/// what a checkpoint must write so that the store plus the WAL suffix equals the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Current state of every account created or changed, in slot (creation) order.
    pub accounts: Vec<Account>,
    /// Transfers created, oldest first.
    pub transfers: Vec<Transfer>,
    /// Pending transfers resolved (posted, voided, expired), each once, with that status,
    /// in the order of the resolutions (a resolution a failed chain rolled back is not
    /// here: see `ChangeTracker::chain_resolved_from`).
    pub pending_statuses: Vec<(Transfer, PendingStatus)>,
    /// Transfer ids that failed transiently (retries get `id_already_failed`).
    pub failed_ids: Vec<u128>,
    /// New balance snapshots of history accounts, as `(account_id, balance)`.
    pub balances: Vec<(u128, AccountBalance)>,
}

impl Changes {
    /// Bytes a checkpoint of these changes may add on disk before compaction, generously:
    /// every row with its keys and indexes, uncompressed.
    pub(crate) fn bytes_estimate(&self) -> u64 {
        let rows = self.accounts.len() * 160
            + self.transfers.len() * 256
            + self.pending_statuses.len() * 160
            + self.failed_ids.len() * 48
            + self.balances.len() * 160;
        rows as u64
    }

    /// Empty every vector for reuse, keeping its memory unless it is far larger than
    /// this use needed (after a burst): what is kept stays within twice the last size.
    pub(crate) fn clear_for_reuse(&mut self) {
        let Changes {
            accounts,
            transfers,
            pending_statuses,
            failed_ids,
            balances,
        } = self;
        clear_for_reuse(accounts);
        clear_for_reuse(transfers);
        clear_for_reuse(pending_statuses);
        clear_for_reuse(failed_ids);
        clear_for_reuse(balances);
    }
}

/// Elements a reused vector may always keep room for.
const REUSE_ELEMENTS_MIN: usize = 4096;

fn clear_for_reuse<T>(vec: &mut Vec<T>) {
    if vec.capacity() > 2 * vec.len() + REUSE_ELEMENTS_MIN {
        *vec = Vec::new();
    } else {
        vec.clear();
    }
}

/// Cheap bookkeeping on the hot path: a bit per account slot plus append-only watermarks.
#[derive(Clone, Default)]
pub(crate) struct ChangeTracker {
    account_marks: Vec<u64>,
    pub accounts: Vec<Slot>,
    pub transfers_from: TransferSlot,
    pub history_from: u64,
    pub resolved: Vec<TransferSlot>,
    /// Length of `resolved` when the open linked chain began: a rollback drops the
    /// resolutions after it (the chain's transfers are gone, and their slots may be
    /// taken again by other transfers before the changes are taken).
    pub chain_resolved_from: usize,
    pub failed: Vec<u128>,
    /// Emptied vectors for the next [`Changes`] (see `Ledger::recycle_changes`).
    pub spare: Changes,
}

impl ChangeTracker {
    #[inline]
    pub fn mark_account(&mut self, slot: Slot) {
        let (word, bit) = (slot as usize / 64, slot % 64);
        if word >= self.account_marks.len() {
            self.account_marks.resize(word + 1, 0);
        }
        if self.account_marks[word] & (1 << bit) == 0 {
            self.account_marks[word] |= 1 << bit;
            self.accounts.push(slot);
        }
    }

    /// The marked slots, sorted (in place: the list keeps its memory, since growing it
    /// again on the hot path would cost page faults every checkpoint).
    pub fn sorted_accounts(&mut self) -> &[Slot] {
        self.accounts.sort_unstable();
        &self.accounts
    }

    /// Forget the marks, after the marked accounts were taken.
    pub fn clear_accounts(&mut self) {
        for slot in &self.accounts {
            self.account_marks[*slot as usize / 64] &= !(1 << (slot % 64));
        }
        self.accounts.clear();
    }
}
