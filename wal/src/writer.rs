//! The writer thread: takes the whole pending buffer, writes it, syncs it
//! once (group commit), publishes the durable LSN. Appends keep filling a
//! fresh buffer meanwhile.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crate::error::WalError;
use crate::format::{
    decode_record_any_lsn, encode_group_marker, group_first_lsn, group_prefix_fitting, GroupMarker,
    GROUP_MARKER_BYTES,
};
use crate::segment::{create_segment, ActiveSegment, SegmentMeta};
use crate::wal::{lock, Durability, DurableCallback, GroupDurable, Shared, Subscriber};

pub(crate) fn run_writer(shared: Arc<Shared>, mut active: ActiveSegment, lsn_next: u64) {
    let mut lsn_next = lsn_next;
    let mut spare = Vec::new();
    let mut scratch = Vec::with_capacity(WRITE_COPY_BYTES_MAX + GROUP_MARKER_BYTES as usize);
    while let Some(group) = take_group(&shared, std::mem::take(&mut spare)) {
        let mut synced = Synced::default();
        let written = write_group(
            &shared,
            &mut active,
            &group,
            lsn_next,
            &mut synced,
            &mut scratch,
        );
        match written {
            Ok(lsn_last) => {
                if let Err(error) = publish_durable(&shared, lsn_last) {
                    poison(&shared, error);
                    break;
                }
                if let Some(observer) = shared.observer.get() {
                    observer.group_durable(&GroupDurable {
                        records: lsn_last + 1 - lsn_next,
                        bytes: group.len() as u64,
                        fsyncs: synced.calls,
                        sync_duration: synced.duration,
                        durable_lsn: lsn_last,
                    });
                }
                lsn_next = lsn_last + 1;
            }
            Err(error) => {
                poison(&shared, error);
                break;
            }
        }
        spare = group;
        spare.clear();
    }
    // A clean end leaves the segment ending at its last group; after a failure the
    // reserved zeros stay, and recovery cuts them like a torn tail. A seal that fails
    // poisons the log, so that `close_covered` never seals it off behind a new segment
    // with its zeros in (recovery refuses zeros in a sealed segment).
    if shared.poison.get().is_none() {
        if let Err(error) = active.seal() {
            poison(&shared, error);
        }
    }
    let _guard = lock(&shared.durable_mutex);
    shared.writer_stopped.store(true, Ordering::Release);
    shared.durable_changed.notify_all();
    // Channels disconnect, callbacks hear the end; a subscriber added from now on is given
    // back to its caller (`Wal::add_subscriber`).
    let ended = std::mem::take(&mut *lock(&shared.subscribers));
    for subscriber in ended {
        if let Subscriber::Callback(callback) = subscriber {
            if call(&callback, Durability::Stopped).is_err() {
                tracing::error!("a durability callback panicked when told the WAL stopped");
            }
        }
    }
}

/// Waits for records, then swaps the whole pending buffer for `spare`.
/// Returns `None` when closing and nothing is left to write.
fn take_group(shared: &Shared, spare: Vec<u8>) -> Option<Vec<u8>> {
    let mut pending = lock(&shared.pending);
    while pending.buffer.is_empty() && !pending.closing {
        pending.writer_waiting = true;
        pending = shared
            .pending_filled
            .wait(pending)
            .unwrap_or_else(PoisonError::into_inner);
    }
    pending.writer_waiting = false;
    if pending.buffer.is_empty() {
        return None;
    }
    let group = std::mem::replace(&mut pending.buffer, spare);
    let appenders_waiting = pending.appenders_waiting > 0;
    drop(pending);
    if appenders_waiting {
        shared.pending_drained.notify_all();
    }
    Some(group)
}

/// Writes one group, rolling to new segments as they fill, and syncs it.
/// Returns the LSN of the group's last record, durable on return.
/// The syncs of one group, for the observer.
#[derive(Default)]
struct Synced {
    calls: u32,
    duration: Duration,
}

fn write_group(
    shared: &Shared,
    active: &mut ActiveSegment,
    group: &[u8],
    lsn_next: u64,
    synced: &mut Synced,
    scratch: &mut Vec<u8>,
) -> Result<u64, WalError> {
    // LSNs are dense: the group continues exactly where the last one ended.
    assert_eq!(
        group_first_lsn(group),
        lsn_next,
        "WAL group does not continue the LSN sequence"
    );
    debug_assert!(group_is_dense(
        group,
        lsn_next,
        shared.config.record_bytes_max
    ));
    let segment_bytes = shared.config.segment_bytes;
    let marker_bytes = u64::from(GROUP_MARKER_BYTES);
    let mut rest = group;
    let mut records = 0u64;
    loop {
        // Each segment's part of the group is written after its own marker.
        let bytes_budget = segment_bytes
            .saturating_sub(active.file_bytes)
            .saturating_sub(marker_bytes);
        let (prefix_bytes, prefix_records) = group_prefix_fitting(rest, bytes_budget);
        if prefix_bytes > 0 {
            let marker = GroupMarker {
                first_lsn: group_first_lsn(rest),
                bytes: prefix_bytes as u64,
                records: u32::try_from(prefix_records).expect("a group's records fit u32"),
            };
            write_marked(
                active,
                &encode_group_marker(&marker),
                &rest[..prefix_bytes],
                scratch,
            )?;
        }
        records += prefix_records;
        rest = &rest[prefix_bytes..];
        if rest.is_empty() {
            break;
        }
        // A fresh segment always fits a marker and one record (checked by config).
        assert!(
            prefix_bytes > 0 || active.file_bytes > u64::from(crate::format::SEGMENT_HEADER_BYTES)
        );
        // Seal the full segment before its successor exists, so only the last
        // segment can ever hold a torn tail (or reserved zeros).
        sync(shared, active, synced)?;
        active.seal()?;
        *active = add_segment(shared, group_first_lsn(rest))?;
    }
    sync(shared, active, synced)?;
    shared.stats.groups_written.fetch_add(1, Ordering::Relaxed);
    Ok(lsn_next + records - 1)
}

/// Frames smaller than this are copied behind their marker and written with it in one
/// call; larger ones are written from where they are, after the marker.
const WRITE_COPY_BYTES_MAX: usize = 64 * 1024;

/// Writes a group marker and the records it announces, back to back.
fn write_marked(
    active: &mut ActiveSegment,
    marker: &[u8],
    records: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), WalError> {
    if records.len() <= WRITE_COPY_BYTES_MAX {
        scratch.clear();
        scratch.extend_from_slice(marker);
        scratch.extend_from_slice(records);
        active.write(scratch)
    } else {
        active.write(marker)?;
        active.write(records)
    }
}

fn sync(shared: &Shared, active: &mut ActiveSegment, synced: &mut Synced) -> Result<(), WalError> {
    shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let result = active.sync();
    synced.calls += 1;
    synced.duration += started.elapsed();
    result
}

/// Creates the segment whose first record will be `first_lsn` and appends it to the
/// WAL's list: the newest segment, where records go from now on.
pub(crate) fn add_segment(shared: &Shared, first_lsn: u64) -> Result<ActiveSegment, WalError> {
    let segment = create_segment(shared.storage.as_ref(), &shared.dir, first_lsn)?;
    lock(&shared.segments).push_back(SegmentMeta {
        path: segment.path.clone(),
        first_lsn,
    });
    shared
        .stats
        .segments_created
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(path = %segment.path.display(), first_lsn, "WAL segment created");
    Ok(segment)
}

/// Calls `callback`; a panic comes back as an error instead of unwinding the writer,
/// which would leave `wait_durable` callers and appenders waiting forever.
fn call(callback: &DurableCallback, event: Durability) -> Result<(), WalError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(event)))
        .map_err(|_| WalError::CallbackPanicked)
}

fn publish_durable(shared: &Shared, lsn: u64) -> Result<(), WalError> {
    assert!(
        lsn >= shared.durable_lsn.load(Ordering::Relaxed),
        "durable LSN never goes back"
    );
    {
        let waiters = lock(&shared.durable_mutex);
        shared.durable_lsn.store(lsn, Ordering::Release);
        if *waiters > 0 {
            shared.durable_changed.notify_all();
        }
    }
    // A full channel already holds a wake-up; the receiver reads the latest
    // durable LSN itself. Dropped receivers are forgotten, and so is a callback
    // that panicked (after which the writer stops).
    let mut result = Ok(());
    lock(&shared.subscribers).retain(|subscriber| match subscriber {
        Subscriber::Channel(sender) => !matches!(
            sender.try_send(lsn),
            Err(crossbeam::channel::TrySendError::Disconnected(_))
        ),
        Subscriber::Callback(callback) => match call(callback, Durability::Durable(lsn)) {
            Ok(()) => true,
            Err(error) => {
                result = Err(error);
                false
            }
        },
    });
    result
}

/// After a failed write or sync nothing past the durable LSN can be trusted
/// (the kernel may have dropped the dirty pages and will not report it
/// again), so the WAL stops for good: every waiter and appender gets the
/// error, the durable LSN stays where the last successful sync left it.
fn poison(shared: &Shared, error: WalError) {
    tracing::error!(%error, durable_lsn = shared.durable_lsn.load(Ordering::Acquire), "WAL poisoned");
    // Only this thread poisons, once; a second set cannot happen.
    let _ = shared.poison.set(Arc::new(error));
    {
        let _pending = lock(&shared.pending);
        shared.pending_drained.notify_all();
    }
    let _guard = lock(&shared.durable_mutex);
    shared.durable_changed.notify_all();
}

/// Expensive check (debug builds only): every record of the group decodes
/// and LSNs are dense.
fn group_is_dense(group: &[u8], lsn_first: u64, record_bytes_max: u32) -> bool {
    let mut offset = 0u64;
    let mut lsn = lsn_first;
    while offset < group.len() as u64 {
        match decode_record_any_lsn(group, offset, record_bytes_max) {
            Ok(record) if record.lsn == lsn => {
                offset = record.end_offset();
                lsn += 1;
            }
            _ => return false,
        }
    }
    true
}
