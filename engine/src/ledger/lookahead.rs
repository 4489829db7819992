//! Looking ahead in a batch, so that applying an event finds what it reads in the cache.
//!
//! The ids an event names are hashed and their index buckets requested
//! [`LOOKAHEAD_INDEX_EVENTS`] events before it is applied; [`LOOKAHEAD_RECORDS_EVENTS`]
//! events before, the (by then cached) buckets give the accounts' probable slots, and their
//! records are requested. What that learned is kept in a [`Lookahead`] per event and reused
//! when the event is applied, so each id is hashed and probed once.
//!
//! A lookahead is only ever a memo: it names the ids it is for, a lookup of any other id
//! does the full work, and a guessed slot counts only if its record has the id.

use super::resident::Slot;
use super::{Event, Ledger};

/// Events between requesting an event's index buckets and applying it: far enough for a
/// cache miss (~100 ns) to complete, near enough that the lines are still cached.
pub(crate) const LOOKAHEAD_INDEX_EVENTS: usize = 16;
/// Events between requesting an event's account records and applying it.
pub(crate) const LOOKAHEAD_RECORDS_EVENTS: usize = 8;
const _: () = assert!(LOOKAHEAD_INDEX_EVENTS.is_power_of_two());
const _: () = assert!(LOOKAHEAD_RECORDS_EVENTS < LOOKAHEAD_INDEX_EVENTS);

/// What was learned about one event before it is applied.
#[derive(Clone, Copy, Default)]
pub(crate) struct Lookahead {
    /// A transfer's id and its tag in the transfer index (tag 0: none known).
    pub transfer_id: u128,
    pub transfer_tag: u64,
    /// The accounts the event names (a transfer's two, an account event's own): id, tag
    /// in the account index, guessed slot.
    pub accounts: [AccountAhead; 2],
}

#[derive(Clone, Copy, Default)]
pub(crate) struct AccountAhead {
    pub id: u128,
    pub tag: u64,
    pub slot_guess: Option<Slot>,
}

impl AccountAhead {
    #[inline]
    pub fn new(ledger: &Ledger, id: u128) -> AccountAhead {
        let tag = ledger.accounts.tag(id);
        ledger.accounts.prefetch_tagged(tag);
        AccountAhead {
            id,
            tag,
            slot_guess: None,
        }
    }
}

/// The lookaheads of the events in flight, by event index modulo the window.
pub(crate) struct Window {
    entries: [Lookahead; LOOKAHEAD_INDEX_EVENTS],
}

impl Window {
    /// Look ahead at the first events of a batch.
    pub fn start<E: Event>(ledger: &Ledger, events: &[E]) -> Window {
        let mut window = Window {
            entries: [Lookahead::default(); LOOKAHEAD_INDEX_EVENTS],
        };
        for (index, event) in events.iter().take(LOOKAHEAD_INDEX_EVENTS).enumerate() {
            *window.entry(index) = E::look_ahead(ledger, event);
        }
        for index in 0..events.len().min(LOOKAHEAD_RECORDS_EVENTS) {
            E::look_closer(ledger, window.entry(index));
        }
        window
    }

    /// The lookahead of event `index`, once the window has moved on past it: the
    /// events `LOOKAHEAD_INDEX_EVENTS` and `LOOKAHEAD_RECORDS_EVENTS` further on are
    /// looked at.
    #[inline]
    pub fn advance<E: Event>(&mut self, ledger: &Ledger, events: &[E], index: usize) -> Lookahead {
        // Taken before its entry is reused for the event a window further on.
        let current = *self.entry(index);
        if let Some(ahead) = events.get(index + LOOKAHEAD_INDEX_EVENTS) {
            *self.entry(index + LOOKAHEAD_INDEX_EVENTS) = E::look_ahead(ledger, ahead);
        }
        if index + LOOKAHEAD_RECORDS_EVENTS < events.len() {
            E::look_closer(ledger, self.entry(index + LOOKAHEAD_RECORDS_EVENTS));
        }
        current
    }

    fn entry(&mut self, index: usize) -> &mut Lookahead {
        &mut self.entries[index % LOOKAHEAD_INDEX_EVENTS]
    }
}

impl Ledger {
    /// The tag of transfer `id` in the transfer index, from the current event's lookahead
    /// when it is for this id.
    #[inline]
    pub(crate) fn transfer_tag(&self, id: u128) -> u64 {
        if self.lookahead.transfer_id == id && self.lookahead.transfer_tag != 0 {
            self.lookahead.transfer_tag
        } else {
            self.transfers.tag(id)
        }
    }

    /// The slot of account `id`, using the current event's lookahead when it is for this
    /// account: a guessed slot whose record has the id, else the index with the known tag.
    #[inline]
    pub(crate) fn account_slot(&self, id: u128) -> Option<Slot> {
        let ahead = self
            .lookahead
            .accounts
            .iter()
            .find(|ahead| ahead.id == id && ahead.tag != 0);
        let Some(ahead) = ahead else {
            return self.accounts.slot(id);
        };
        if let Some(slot) = ahead.slot_guess {
            if (slot as usize) < self.accounts.len() && self.accounts.get(slot).id == id {
                return Some(slot);
            }
        }
        self.accounts.slot_tagged(id, ahead.tag)
    }
}
