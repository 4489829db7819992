//! Group commit: one fsync covers many records; appends never wait for an
//! fsync; a full pending buffer pushes back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use settled_wal::fault::FaultyStorage;
use settled_wal::{Wal, WalConfig};

#[test]
fn many_threads_share_few_fsyncs_and_every_record_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig {
        segment_bytes: 64 * 1024,
        ..small_config()
    };
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    let threads: u64 = 4;
    let batches: u64 = 50;
    let batch_records: u64 = 10;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let wal = &wal;
            scope.spawn(move || {
                for batch in 0..batches {
                    let mut lsn = 0;
                    for record in 0..batch_records {
                        let tag = [thread, batch, record].map(|part| part as u8);
                        lsn = wal.append(&tag).expect("append");
                    }
                    wal.wait_durable(lsn).expect("durable");
                }
            });
        }
    });
    let records_total = threads * batches * batch_records;
    let stats = wal.stats();
    assert_eq!(stats.records_appended, records_total);
    assert_eq!(stats.durable_lsn, records_total);
    // Without grouping there would be one fsync per record.
    assert!(
        stats.fsyncs * 4 <= records_total,
        "fsyncs {} for {records_total} records",
        stats.fsyncs
    );
    wal.close().expect("close");

    // Every thread's records come back, each thread's in its own order.
    let wal = Wal::open(dir.path(), config).expect("reopen");
    let records = replay_all(&wal, 0).expect("replay");
    assert_eq!(records.len() as u64, records_total);
    let mut next_per_thread = vec![(0u8, 0u8); threads as usize];
    for record in &records {
        let [thread, batch, index] = record.payload[..] else {
            panic!("payload {:?}", record.payload)
        };
        assert_eq!(next_per_thread[thread as usize], (batch, index));
        next_per_thread[thread as usize] = if u64::from(index) + 1 == batch_records {
            (batch + 1, 0)
        } else {
            (batch, index + 1)
        };
    }
}

#[test]
fn appends_do_not_wait_for_an_fsync_in_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FaultyStorage::new();
    let wal = Wal::open_with_storage(dir.path(), small_config(), Arc::new(storage.clone()))
        .expect("open");
    storage.pause_syncs();
    wal.append(b"first").expect("append");
    while storage.syncs_blocked() == 0 {
        std::thread::yield_now();
    }
    // The writer is stuck inside fdatasync; appends still complete.
    for index in 2..=20 {
        assert_eq!(wal.append(&payload(index)).expect("append"), index);
    }
    assert_eq!(
        wal.durable_lsn(),
        0,
        "nothing is durable while the fsync hangs"
    );
    assert!(!wal
        .wait_durable_timeout(1, Duration::from_millis(20))
        .expect("wait"));
    let groups_before = wal.stats().groups_written;
    storage.resume_syncs();
    wal.wait_durable(20).expect("durable");
    // Records 2..=20 went out together in (at most) one more group.
    assert!(wal.stats().groups_written - groups_before <= 2);
}

#[test]
fn a_full_pending_buffer_pushes_back_on_appenders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FaultyStorage::new();
    let config = WalConfig {
        segment_bytes: 64 * 1024,
        ..small_config()
    };
    let pending_bytes_max = config.pending_bytes_max;
    let wal = Wal::open_with_storage(dir.path(), config, Arc::new(storage.clone())).expect("open");
    storage.pause_syncs();
    let record = vec![5u8; 200];
    std::thread::scope(|scope| {
        let appender = scope.spawn(|| {
            for _ in 0..100 {
                wal.append(&record).expect("append");
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        // While the writer is stuck, buffered bytes stay bounded: one group
        // in flight plus one full pending buffer.
        let record_on_disk_bytes = 16 + record.len() as u64;
        let records_bound = 2 * (pending_bytes_max / record_on_disk_bytes) + 1;
        assert!(
            wal.lsn_next() - 1 <= records_bound,
            "{} records buffered",
            wal.lsn_next() - 1
        );
        assert!(!appender.is_finished());
        storage.resume_syncs();
    });
    wal.wait_durable(100).expect("durable");
    assert!(wal.stats().backpressure_waits > 0);
}
