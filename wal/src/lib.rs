//! `settled-wal`: a segmented write-ahead log that makes records durable
//! before anyone acknowledges them.
//!
//! The WAL stores opaque byte records; it knows nothing about ledgers. The
//! engine logs each core batch's inputs as one record, waits until that
//! record is durable, and only then releases the batch's replies.
//!
//! # Walk-through
//!
//! ```no_run
//! use settled_wal::{Wal, WalConfig};
//! # fn main() -> Result<(), settled_wal::WalError> {
//! let checkpoint_lsn = 0; // from the engine's last checkpoint
//! let wal = Wal::open("/var/lib/settled/wal", WalConfig::default())?;
//! // 1. Replay what the checkpoint does not cover, through the same apply code.
//! for record in wal.replay_after(checkpoint_lsn)? {
//!     let record = record?;
//!     // apply(record.lsn, &record.payload)
//! }
//! // 2. Log a batch; `append` returns at once with the record's LSN.
//! let lsn = wal.append(b"batch inputs")?;
//! // 3. Release replies once it is durable: block, poll `durable_lsn()`, or
//! //    select on `wal.subscribe()` from the core thread.
//! wal.wait_durable(lsn)?;
//! // 4. After a checkpoint at LSN c is safely stored, drop what it covers.
//! wal.truncate_before(lsn + 1)?;
//! # Ok(()) }
//! ```
//!
//! * **Append** ([`Wal::append`]) encodes the record into an in-memory
//!   *pending buffer* under a short mutex and returns its LSN. LSNs are
//!   dense: each record gets the previous one plus 1, starting at
//!   [`WalConfig::first_lsn`] for a new WAL.
//! * **Group commit.** A dedicated writer thread takes the *whole* pending
//!   buffer (swapping in an empty one, so appends never wait for a sync),
//!   writes it after its group marker with one `write` (two for groups over
//!   64 KiB), makes it durable with one `fdatasync`, then
//!   publishes the new durable LSN: it stores [`Wal::durable_lsn`], wakes
//!   [`Wal::wait_durable`] callers, and sends the LSN on every
//!   [`Wal::subscribe`] channel and calls every [`Wal::on_durable`] callback.
//!   While it syncs, the next group fills. If the
//!   writer falls behind and the pending buffer reaches
//!   [`WalConfig::pending_bytes_max`], appends block (backpressure).
//! * **Segments.** The log is a directory of segment files named
//!   `wal-{first_lsn:020}.log`, so names sort by LSN. A record that would
//!   push the active segment past [`WalConfig::segment_bytes`] goes to a new
//!   segment; records never span segments (a group that fills a segment
//!   goes on in the next one after a marker of its own). A full segment is
//!   synced and sealed (its reserved zeros cut off) before its successor is
//!   created, so only the last segment can have a torn tail. A new segment is written under a `.log.tmp` name, synced, renamed,
//!   and the directory synced: a segment under its final name always has a
//!   durable header.
//! * **Poisoning.** A failed write or sync poisons the WAL for good: the
//!   durable LSN stays at the last successful sync, and every later append
//!   or wait returns [`WalError::Poisoned`]. After a failed `fsync` the page
//!   cache cannot be trusted (Linux may drop the dirty pages and report
//!   success next time), so the only way on is to reopen, ideally from a
//!   fresh process.
//! * **Recovery** ([`Wal::open`]) verifies every segment header and every
//!   record CRC, checks that LSNs are dense within and across segments, and
//!   cuts a *torn tail* (a crash mid-write) off the last segment with a
//!   `tracing::warn!`. Everything else is [`WalError::Corrupt`] with file,
//!   byte offset and LSN: the WAL never silently drops a durable record.
//!   In a segment of the current format, records come in groups, each after
//!   a *group marker* saying where the group ends; a group is one write and
//!   one `fdatasync`, and the writer starts a group only after the previous
//!   one's sync returned. Damage is a torn tail only when all of these hold:
//!   it is in the last segment; its CRC (or length) is what is wrong — a
//!   CRC-valid record or marker with the wrong LSN is a gap, and the expected
//!   record's own header (its LSN in place) claiming more than
//!   `record_bytes_max` is damage, since bytes that never reached the disk
//!   read as zeros and never make a length larger; and nothing of a later
//!   group follows it: no CRC-valid marker after it at any byte offset and,
//!   when the damaged group's marker was read, no CRC-valid record past that
//!   group's end. Valid records of the damaged group itself after a hole do
//!   not count: segments are written over reserved zeros (see
//!   [`SEGMENT_RESERVE_BYTES`]), where the pages of one group can reach the
//!   disk in any order when power fails mid-sync. A torn group is cut whole,
//!   at its marker (none of it was acknowledged). Known limit: a bit flipped
//!   in the last group after it was synced looks exactly like a torn group
//!   and is cut with it; only a later write could tell them apart.
//!   Segments of the first format (no markers) are read with the first
//!   format's rule (no CRC-valid record with a later LSN after the damage),
//!   and a log whose last segment has the first format goes on in a new one.
//! * **Replay** ([`Wal::replay_after`]) streams the durable records after a
//!   given LSN, one segment in memory at a time, re-verifying each.
//! * **Truncation** ([`Wal::truncate_before`]) deletes whole segments below
//!   a checkpoint, oldest first, syncing the directory after each, so a
//!   crash leaves a contiguous suffix. The active segment is never deleted,
//!   so the next LSN survives a restart.
//! * **Storage seam.** All file I/O goes through [`Storage`] and
//!   [`SegmentFile`]; [`FsStorage`] is the real file system and
//!   [`fault::FaultyStorage`] injects short writes, failed syncs and ENOSPC.
//!
//! # On-disk format
//!
//! All integers are little-endian. CRCs are CRC32C (Castagnoli).
//!
//! ## Segment header (32 bytes, at offset 0 of every segment file)
//!
//! | offset | size | field       | value                                         |
//! |-------:|-----:|-------------|-----------------------------------------------|
//! | 0      | 8    | magic       | `"SETLWAL\0"` (`53 45 54 4C 57 41 4C 00`)      |
//! | 8      | 4    | version     | u32, [`FORMAT_VERSION`] = 2 (1: [`FORMAT_VERSION_UNGROUPED`], still read) |
//! | 12     | 4    | reserved    | zero                                          |
//! | 16     | 8    | first_lsn   | u64, LSN of the segment's first record (>= 1) |
//! | 24     | 4    | reserved    | zero                                          |
//! | 28     | 4    | header_crc  | u32, CRC32C of bytes 0..28                     |
//!
//! `first_lsn` must equal the number in the file name and, for every
//! segment but the oldest, one past the last LSN of the previous segment.
//!
//! ## Record (16-byte header + payload)
//!
//! | offset | size          | field         | value                                        |
//! |-------:|--------------:|---------------|----------------------------------------------|
//! | 0      | 8             | lsn           | u64, previous record's LSN + 1               |
//! | 8      | 4             | payload_bytes | u32, <= [`WalConfig::record_bytes_max`]       |
//! | 12     | 4             | crc           | u32, CRC32C of the payload followed by record bytes 0..12 |
//! | 16     | payload_bytes | payload       | opaque bytes                                 |
//!
//! The CRC covers the LSN and length, so a flipped bit anywhere in a record
//! is detected. The payload comes first in the CRC so appenders hash it
//! before taking the lock that assigns LSNs.
//!
//! ## Group marker (40 bytes: a record header and a 24-byte payload)
//!
//! From offset 32, a segment of format 2 holds groups back to back: a marker,
//! then exactly the records it announces.
//!
//! | offset | size | field       | value                                               |
//! |-------:|-----:|-------------|-----------------------------------------------------|
//! | 0      | 8    | lsn         | u64::MAX ([`GROUP_MARKER_LSN`]; no record has it)   |
//! | 8      | 4    | payload_bytes | 24                                                |
//! | 12     | 4    | crc         | as a record's                                       |
//! | 16     | 8    | first_lsn   | u64, LSN of the group's first record                |
//! | 24     | 8    | bytes       | u64, bytes of the group's records after the marker  |
//! | 32     | 4    | records     | u32, records in the group (>= 1)                    |
//! | 36     | 4    | reserved    | zero                                                |
//!
//! There is no end marker: a segment ends after its last group, at end of
//! file, or, while it is written, before the zeros reserved ahead of it
//! (cut by recovery, dropped when the segment is sealed). In format 1,
//! records follow each other from offset 32 with no markers.
//!
//! ## Limits
//!
//! [`WalConfig`] names every limit and [`WalConfig::validate`] checks it at
//! open: `record_bytes_max` (<= [`RECORD_BYTES_LIMIT`]), `segment_bytes`
//! (<= [`SEGMENT_BYTES_LIMIT`], and at least header + one maximal record),
//! `pending_bytes_max` (at least one maximal record). Recovery and replay
//! hold one whole segment in memory at a time.

mod config;
mod error;
pub mod fault;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod recovery;
mod replay;
mod segment;
mod storage;
mod wal;
mod writer;

pub use config::{
    WalConfig, WalConfigField, PENDING_BYTES_LIMIT, RECORD_BYTES_LIMIT, SEGMENT_BYTES_LIMIT,
};
pub use error::{CorruptionKind, WalError};
pub use format::{
    encode_group_marker, encode_segment_header_of_version, segment_file_name, GroupMarker,
    FORMAT_VERSION, FORMAT_VERSION_UNGROUPED, GROUP_MARKER_BYTES, GROUP_MARKER_LSN,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};
pub use recovery::{RecoveryReport, TornTail};
pub use replay::{Record, Replay};
pub use storage::{FsStorage, SegmentFile, Storage, SEGMENT_RESERVE_BYTES};
pub use wal::{Durability, DurableCallback, GroupDurable, Wal, WalObserver, WalStats};
