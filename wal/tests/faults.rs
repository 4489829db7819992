//! Failed fsyncs, short writes and a full disk, through `FaultyStorage`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use settled_wal::fault::{FaultyStorage, WriteFault};
use settled_wal::{Wal, WalError};

const ERRNO_NO_SPACE: i32 = 28;

fn open_faulty(dir: &std::path::Path) -> (Wal, FaultyStorage) {
    let storage = FaultyStorage::new();
    let wal = Wal::open_with_storage(dir, small_config(), Arc::new(storage.clone())).expect("open");
    (wal, storage)
}

/// The innermost I/O error behind a poisoned WAL.
fn poison_cause(error: &WalError) -> &std::io::Error {
    match error {
        WalError::Poisoned { cause, .. } => match cause.as_ref() {
            WalError::Io { source, .. } => source,
            other => panic!("poisoned by non-I/O error {other}"),
        },
        other => panic!("expected Poisoned, got {other}"),
    }
}

/// Reopens on the real file system and checks the records are exactly
/// `payload(1..)`, at least `durable_lsn` of them, and appending works.
fn reopen_and_check(dir: &std::path::Path, durable_lsn: u64) -> u64 {
    let wal = Wal::open(dir, small_config()).expect("reopen after fault");
    let records = replay_all(&wal, 0).expect("replay");
    assert!(records.len() as u64 >= durable_lsn, "lost durable records");
    assert_records_are_payloads(&records, 1);
    let lsn = wal.append(b"after").expect("append after reopen");
    assert_eq!(lsn, records.len() as u64 + 1);
    wal.wait_durable(lsn).expect("durable after reopen");
    records.len() as u64
}

#[test]
fn a_failed_fsync_is_never_reported_durable_and_poisons_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, storage) = open_faulty(dir.path());
    let durable_before = append_durable(&wal, 1, 10);
    let notifications = wal.subscribe();
    storage.fail_syncs_from(storage.sync_data_count());
    let lsn = wal.append(&payload(11)).expect("append is buffered");
    let error = wal
        .wait_durable(lsn)
        .expect_err("a failed fsync must not count as durable");
    assert_eq!(poison_cause(&error).raw_os_error(), Some(5));
    assert_eq!(
        wal.durable_lsn(),
        durable_before,
        "durable LSN stays at the last good sync"
    );
    assert!(
        wal.wait_durable(durable_before).is_ok(),
        "earlier records really are durable"
    );
    assert!(matches!(
        wal.append(b"more"),
        Err(WalError::Poisoned {
            durable_lsn: 10,
            ..
        })
    ));
    assert!(wal.error().is_some());
    // The notification channel disconnects instead of announcing LSN 11.
    while let Ok(notified) = notifications.recv_timeout(Duration::from_secs(5)) {
        assert!(notified <= durable_before);
    }
    assert!(storage.sync_data_failed_count() >= 1);
    assert!(wal.close().is_err(), "close reports the poison");
    reopen_and_check(dir.path(), durable_before);
}

#[test]
fn a_failed_fsync_while_rolling_segments_does_not_advance_durability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, storage) = open_faulty(dir.path());
    let durable_before = append_durable(&wal, 1, 3);
    // Hold the writer so the next records form one group spanning segments
    // (small enough to fit the pending buffer: the writer is stuck).
    storage.pause_syncs();
    let lsn_held = wal.append(&payload(4)).expect("append");
    while storage.syncs_blocked() == 0 {
        std::thread::yield_now();
    }
    let mut lsn_last = lsn_held;
    for index in 5..=25 {
        lsn_last = wal.append(&payload(index)).expect("append");
    }
    // Let the held sync succeed, then fail the next one: the seal sync of
    // the big group, after part of it has already been written.
    storage.fail_sync_once(storage.sync_data_count() + 1);
    storage.resume_syncs();
    assert!(wal.wait_durable(lsn_held).is_ok());
    assert!(wal.wait_durable(lsn_last).is_err());
    assert_eq!(
        wal.durable_lsn(),
        lsn_held,
        "nothing of the failed group is durable"
    );
    drop(wal);
    reopen_and_check(dir.path(), lsn_held.max(durable_before));
}

#[test]
fn a_full_disk_gives_an_error_not_a_panic_or_a_corrupt_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, storage) = open_faulty(dir.path());
    let durable_before = append_durable(&wal, 1, 5);
    // Room for a few more records, then ENOSPC part-way through a write.
    storage.limit_write_bytes(700, WriteFault::NoSpace);
    let mut first_error = None;
    for index in 6..=200 {
        match wal
            .append(&payload(index))
            .and_then(|lsn| wal.wait_durable(lsn))
        {
            Ok(()) => {}
            Err(error) => {
                first_error = Some(error);
                break;
            }
        }
    }
    let error = first_error.expect("the disk filled up");
    assert_eq!(poison_cause(&error).raw_os_error(), Some(ERRNO_NO_SPACE));
    let durable_lsn = wal.durable_lsn();
    assert!(durable_lsn >= durable_before);
    drop(wal);
    let recovered = reopen_and_check(dir.path(), durable_lsn);
    assert!(recovered >= durable_lsn);
}

#[test]
fn a_short_write_leaves_a_torn_tail_that_recovery_cuts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, storage) = open_faulty(dir.path());
    append_durable(&wal, 1, 5);
    // Half of the next record's 16-byte header reaches the file.
    storage.limit_write_bytes(8, WriteFault::Io);
    let lsn = wal.append(&payload(6)).expect("append");
    let error = wal.wait_durable(lsn).expect_err("short write");
    assert_eq!(poison_cause(&error).raw_os_error(), Some(5));
    assert_eq!(wal.durable_lsn(), 5);
    drop(wal);
    let wal = Wal::open(dir.path(), small_config()).expect("reopen");
    let torn = wal
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail cut");
    // The 8 bytes, and the zeros the file system storage reserved after the records.
    assert_eq!(torn.lsn, 6);
    assert!(torn.bytes_dropped >= 8, "{} bytes cut", torn.bytes_dropped);
    drop(wal);
    assert_eq!(reopen_and_check(dir.path(), 5), 5);
}

#[test]
fn a_full_disk_while_creating_a_segment_is_recoverable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, storage) = open_faulty(dir.path());
    // Fill the first segment nearly to its 1 KiB limit with durable records:
    // 32 + 3 * (16 + 240) = 800 bytes.
    let filler = [1u8; 240];
    for _ in 0..3 {
        let lsn = wal.append(&filler).expect("append");
        wal.wait_durable(lsn).expect("durable");
    }
    // The next record needs a new segment; its header write hits ENOSPC.
    storage.limit_write_bytes(10, WriteFault::NoSpace);
    let lsn = wal.append(&[2u8; 240]).expect("append");
    assert!(wal.wait_durable(lsn).is_err());
    assert_eq!(wal.durable_lsn(), 3);
    assert!(dir.path().read_dir().expect("dir").any(|entry| {
        entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with(".log.tmp")
    }));
    drop(wal);
    let wal = Wal::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(wal.lsn_next(), 4, "the half-created segment held nothing");
    assert_eq!(segment_files(dir.path()).len(), 1);
    let records = replay_all(&wal, 0).expect("replay");
    assert!(records.iter().all(|record| record.payload == filler));
}

#[test]
fn a_durability_callback_hears_the_end_when_a_failed_fsync_stops_the_writer() {
    use settled_wal::Durability;
    use std::sync::Mutex;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, storage) = open_faulty(dir.path());
    let durable_before = append_durable(&wal, 1, 3);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let hearing = heard.clone();
    wal.on_durable(Box::new(move |event| hearing.lock().unwrap().push(event)));
    storage.fail_syncs_from(storage.sync_data_count());
    let lsn = wal.append(&payload(4)).expect("append is buffered");
    wal.wait_durable(lsn).expect_err("the sync failed");
    // Waiters hear of the poison before the writer ends the subscriptions: wait for the
    // end (no group became durable after it subscribed).
    let started = std::time::Instant::now();
    while !heard.lock().unwrap().contains(&Durability::Stopped) {
        assert!(started.elapsed() < Duration::from_secs(10), "never told");
        std::thread::yield_now();
    }
    // Nothing announced past the last good sync, and the end came last.
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.last(), Some(&Durability::Stopped));
    for event in &heard[..heard.len() - 1] {
        assert!(matches!(event, Durability::Durable(lsn) if *lsn <= durable_before));
    }
    // A callback added after the end hears it at once.
    let late = Arc::new(Mutex::new(Vec::new()));
    let hearing = late.clone();
    wal.on_durable(Box::new(move |event| hearing.lock().unwrap().push(event)));
    assert_eq!(*late.lock().unwrap(), vec![Durability::Stopped]);
}

#[test]
fn a_panicking_durability_callback_stops_the_writer_instead_of_hanging_its_waiters() {
    use settled_wal::Durability;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _storage) = open_faulty(dir.path());
    let durable_before = append_durable(&wal, 1, 3);
    wal.on_durable(Box::new(|event| {
        if let Durability::Durable(lsn) = event {
            panic!("callback told LSN {lsn}");
        }
    }));
    let notifications = wal.subscribe();
    // The group's LSN is published before the callback runs, so this wait can succeed
    // or fail; it must not hang.
    let lsn = wal.append(&payload(4)).expect("append is buffered");
    let _ = wal.wait_durable(lsn);
    let started = std::time::Instant::now();
    while wal.error().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "never stopped");
        std::thread::yield_now();
    }
    assert!(matches!(
        wal.error(),
        Some(WalError::Poisoned { cause, .. }) if matches!(*cause, WalError::CallbackPanicked)
    ));
    assert!(wal.durable_lsn() >= durable_before);
    assert!(wal.append(&payload(5)).is_err(), "appends are refused");
    // Subscribers hear the end: the channel disconnects.
    while notifications.try_recv().is_ok() {}
    assert_eq!(
        notifications.recv_timeout(Duration::from_secs(10)),
        Err(crossbeam::channel::RecvTimeoutError::Disconnected)
    );
}
