//! The engine's WAL payload: one record per core batch, holding the batch's *inputs*.
//!
//! Replay is re-execution: the ledger is deterministic, so the clock reading the core
//! used plus the events, in order, reproduce the state bit for bit. The WAL frames each
//! payload with its own length, LSN and CRC32C; this layout sits inside.
//!
//! ```text
//! payload  := header entry*
//! header   := magic u32 = 0x4254_4C53 ("SLTB" little-endian)
//!             version u16 = 1
//!             reserved u16 = 0
//!             now u64            the core's clock reading for the whole batch (ns)
//!             entry_count u32
//!             reserved u32 = 0                                         (24 bytes)
//! entry    := kind u8            1 = create_accounts, 2 = create_transfers, 3 = expire
//!             reserved [u8; 3] = 0
//!             event_count u32    0 for expire
//!             events             event_count 128-byte Account / Transfer records
//! ```
//! All integers little-endian. Entries apply in order, each with `now`: the ledger stamps
//! `max(now, last + 1)`, so later entries of the same batch get later timestamps.

use protocol::{Account, CreateResult, Transfer};

use crate::ledger::{Ledger, OldTransfers};

const MAGIC: u32 = 0x4254_4C53;
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 24;
const ENTRY_HEADER_BYTES: usize = 8;
const EVENT_BYTES: usize = 128;

const KIND_CREATE_ACCOUNTS: u8 = 1;
const KIND_CREATE_TRANSFERS: u8 = 2;
const KIND_EXPIRE: u8 = 3;

/// Largest payload of a batch of `events_max` events: every event in its own entry is the
/// worst case (empty requests are never logged), plus one expiry entry.
pub fn record_bytes_max(events_max: u32) -> u64 {
    let events = u64::from(events_max);
    (HEADER_BYTES + ENTRY_HEADER_BYTES) as u64 + events * (ENTRY_HEADER_BYTES + EVENT_BYTES) as u64
}

/// One state-changing input of a batch.
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    CreateAccounts(&'a [Account]),
    CreateTransfers(&'a [Transfer]),
    Expire,
}

/// Apply one input to the ledger. The core and WAL replay both run exactly this, which is
/// what makes replay reproduce the state.
///
/// `old` holds the evicted transfers the input names, read from the store at the
/// ledger's eviction watermark or later (see `read_stage`).
pub fn apply(
    ledger: &mut Ledger,
    now: u64,
    write: Write<'_>,
    old: &mut OldTransfers,
) -> Vec<CreateResult> {
    match write {
        Write::CreateAccounts(accounts) => ledger.create_accounts_with(now, accounts, old),
        Write::CreateTransfers(transfers) => ledger.create_transfers_with(now, transfers, old),
        Write::Expire => {
            ledger.expire(now);
            Vec::new()
        }
    }
}

/// Builds one payload in a reused buffer.
#[derive(Default)]
pub struct RecordBuilder {
    buffer: Vec<u8>,
    entry_count: u32,
}

impl RecordBuilder {
    pub fn begin(&mut self, now: u64) {
        self.buffer.clear();
        self.entry_count = 0;
        self.buffer.extend_from_slice(&MAGIC.to_le_bytes());
        self.buffer.extend_from_slice(&VERSION.to_le_bytes());
        self.buffer.extend_from_slice(&0u16.to_le_bytes());
        self.buffer.extend_from_slice(&now.to_le_bytes());
        self.buffer.extend_from_slice(&0u32.to_le_bytes());
        self.buffer.extend_from_slice(&0u32.to_le_bytes());
        debug_assert_eq!(self.buffer.len(), HEADER_BYTES);
    }

    pub fn push(&mut self, write: Write<'_>) {
        let (kind, events) = match write {
            Write::CreateAccounts(accounts) => {
                (KIND_CREATE_ACCOUNTS, protocol::records::as_bytes(accounts))
            }
            Write::CreateTransfers(transfers) => (
                KIND_CREATE_TRANSFERS,
                protocol::records::as_bytes(transfers),
            ),
            Write::Expire => (KIND_EXPIRE, &[][..]),
        };
        let event_count = (events.len() / EVENT_BYTES) as u32;
        self.buffer.extend_from_slice(&[kind, 0, 0, 0]);
        self.buffer.extend_from_slice(&event_count.to_le_bytes());
        self.buffer.extend_from_slice(events);
        self.entry_count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }

    /// The finished payload.
    pub fn finish(&mut self) -> &[u8] {
        self.buffer[16..20].copy_from_slice(&self.entry_count.to_le_bytes());
        &self.buffer
    }
}

/// Why a WAL payload could not be decoded. The WAL's CRC already passed, so this means a
/// bug or a record from another program: recovery stops rather than guess.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("payload of {bytes} bytes is shorter than the {HEADER_BYTES}-byte batch header")]
    Short { bytes: usize },
    #[error("bad magic {found:#010x} (expected {MAGIC:#010x})")]
    Magic { found: u32 },
    #[error("batch format version {found} is not supported (this build reads {VERSION})")]
    Version { found: u16 },
    #[error("entry {entry}: unknown kind {kind}")]
    Kind { entry: u32, kind: u8 },
    #[error("entry {entry}: truncated (needs {needed} bytes, {left} left)")]
    Truncated {
        entry: u32,
        needed: usize,
        left: usize,
    },
    #[error("{bytes} bytes left after the last entry")]
    Trailing { bytes: usize },
    #[error("reserved bytes are not zero")]
    Reserved,
    /// The clock reading plus the events stamped after it would pass the timestamp
    /// range: the engine never writes such a record (a CRC-valid record from elsewhere,
    /// or a ledger clock already near the end of the range).
    #[error(
        "clock {now} with {events} events passes the timestamp range (after {timestamp_last})"
    )]
    ClockOutOfRange {
        now: u64,
        events: u64,
        timestamp_last: u64,
    },
}

/// A decoded batch: its clock reading and its entries, borrowed or copied from the payload.
#[derive(Debug)]
pub struct Batch {
    pub now: u64,
    pub entries: Vec<Entry>,
}

#[derive(Debug)]
pub enum Entry {
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
    Expire,
}

impl Entry {
    pub fn as_write(&self) -> Write<'_> {
        match self {
            Entry::CreateAccounts(accounts) => Write::CreateAccounts(accounts),
            Entry::CreateTransfers(transfers) => Write::CreateTransfers(transfers),
            Entry::Expire => Write::Expire,
        }
    }
}

pub fn decode(payload: &[u8]) -> Result<Batch, RecordError> {
    if payload.len() < HEADER_BYTES {
        return Err(RecordError::Short {
            bytes: payload.len(),
        });
    }
    let (header, mut rest) = payload.split_at(HEADER_BYTES);
    let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    if magic != MAGIC {
        return Err(RecordError::Magic { found: magic });
    }
    let version = u16::from_le_bytes(header[4..6].try_into().expect("2 bytes"));
    if version != VERSION {
        return Err(RecordError::Version { found: version });
    }
    if header[6..8] != [0, 0] || header[20..24] != [0; 4] {
        return Err(RecordError::Reserved);
    }
    let now = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let entry_count = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    // Never trust a count to size an allocation: each entry takes at least its header.
    let mut entries =
        Vec::with_capacity((entry_count as usize).min(rest.len() / ENTRY_HEADER_BYTES));
    for entry in 0..entry_count {
        let (decoded, after) = decode_entry(entry, rest)?;
        entries.push(decoded);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(RecordError::Trailing { bytes: rest.len() });
    }
    let batch = Batch { now, entries };
    batch.check_clock(0)?;
    Ok(batch)
}

impl Batch {
    /// Events the batch stamps with timestamps.
    fn events(&self) -> u64 {
        self.entries
            .iter()
            .map(|entry| match entry {
                Entry::CreateAccounts(accounts) => accounts.len() as u64,
                Entry::CreateTransfers(transfers) => transfers.len() as u64,
                Entry::Expire => 0,
            })
            .sum()
    }

    /// Applying the batch to a ledger whose clock stands at `timestamp_last` keeps every
    /// timestamp in range (the ledger asserts it does).
    pub fn check_clock(&self, timestamp_last: u64) -> Result<(), RecordError> {
        let events = self.events();
        let first = self.now.max(timestamp_last.saturating_add(1));
        if first.saturating_add(events) > protocol::TIMESTAMP_MAX {
            return Err(RecordError::ClockOutOfRange {
                now: self.now,
                events,
                timestamp_last,
            });
        }
        Ok(())
    }
}

fn decode_entry(entry: u32, bytes: &[u8]) -> Result<(Entry, &[u8]), RecordError> {
    let truncated = |needed: usize| RecordError::Truncated {
        entry,
        needed,
        left: bytes.len(),
    };
    if bytes.len() < ENTRY_HEADER_BYTES {
        return Err(truncated(ENTRY_HEADER_BYTES));
    }
    let kind = bytes[0];
    if bytes[1..4] != [0, 0, 0] {
        return Err(RecordError::Reserved);
    }
    let event_count = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let events_bytes = event_count
        .checked_mul(EVENT_BYTES)
        .ok_or(truncated(usize::MAX))?;
    let needed = ENTRY_HEADER_BYTES + events_bytes;
    if bytes.len() < needed {
        return Err(truncated(needed));
    }
    let events = &bytes[ENTRY_HEADER_BYTES..needed];
    let decoded = match kind {
        KIND_CREATE_ACCOUNTS => Entry::CreateAccounts(records(events)),
        KIND_CREATE_TRANSFERS => Entry::CreateTransfers(records(events)),
        KIND_EXPIRE if event_count == 0 => Entry::Expire,
        _ => return Err(RecordError::Kind { entry, kind }),
    };
    Ok((decoded, &bytes[needed..]))
}

fn records<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    protocol::records::from_bytes(bytes)
        .expect("length checked to be whole records")
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(id: u128) -> Transfer {
        Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 10,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        }
    }

    fn sample() -> Vec<u8> {
        let mut builder = RecordBuilder::default();
        builder.begin(42);
        builder.push(Write::Expire);
        builder.push(Write::CreateTransfers(&[transfer(7), transfer(8)]));
        builder.push(Write::CreateAccounts(&[Account {
            id: 3,
            ..Account::default()
        }]));
        builder.finish().to_vec()
    }

    #[test]
    fn round_trip() {
        let batch = decode(&sample()).expect("decodes");
        assert_eq!(batch.now, 42);
        assert_eq!(batch.entries.len(), 3);
        assert!(matches!(batch.entries[0], Entry::Expire));
        match &batch.entries[1] {
            Entry::CreateTransfers(transfers) => {
                assert_eq!(transfers, &vec![transfer(7), transfer(8)]);
            }
            other => panic!("unexpected entry {other:?}"),
        }
        match &batch.entries[2] {
            Entry::CreateAccounts(accounts) => assert_eq!(accounts[0].id, 3),
            other => panic!("unexpected entry {other:?}"),
        }
    }

    #[test]
    fn every_truncation_and_bad_field_is_an_error() {
        let payload = sample();
        for length in 0..payload.len() {
            assert!(
                decode(&payload[..length]).is_err(),
                "prefix of {length} bytes"
            );
        }
        let mut trailing = payload.clone();
        trailing.push(0);
        assert_eq!(
            decode(&trailing).unwrap_err(),
            RecordError::Trailing { bytes: 1 }
        );
        let mut magic = payload.clone();
        magic[0] ^= 1;
        assert!(matches!(decode(&magic), Err(RecordError::Magic { .. })));
        let mut version = payload.clone();
        version[4] = 9;
        assert_eq!(
            decode(&version).unwrap_err(),
            RecordError::Version { found: 9 }
        );
        let mut kind = payload.clone();
        kind[HEADER_BYTES] = 77;
        assert_eq!(
            decode(&kind).unwrap_err(),
            RecordError::Kind { entry: 0, kind: 77 }
        );
        let mut huge = payload;
        huge[HEADER_BYTES + ENTRY_HEADER_BYTES + 4..HEADER_BYTES + ENTRY_HEADER_BYTES + 8]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(RecordError::Truncated { .. })));
    }

    #[test]
    fn a_clock_past_the_timestamp_range_is_an_error() {
        let mut builder = RecordBuilder::default();
        builder.begin(protocol::TIMESTAMP_MAX - 1);
        builder.push(Write::CreateTransfers(&[transfer(7), transfer(8)]));
        let payload = builder.finish().to_vec();
        assert!(matches!(
            decode(&payload),
            Err(RecordError::ClockOutOfRange { events: 2, .. })
        ));
        // In range alone, but not after a ledger clock near the end of the range.
        let batch = decode(&sample()).unwrap();
        assert!(batch.check_clock(protocol::TIMESTAMP_MAX - 1).is_err());
        assert!(batch.check_clock(1_000).is_ok());
    }

    #[test]
    fn record_bound_covers_the_worst_batch() {
        let mut builder = RecordBuilder::default();
        builder.begin(1);
        builder.push(Write::Expire);
        let one = [transfer(1)];
        for _ in 0..100 {
            builder.push(Write::CreateTransfers(&one));
        }
        assert!(builder.finish().len() as u64 <= record_bytes_max(100));
    }
}
