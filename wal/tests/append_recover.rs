//! Appending, durability, reopening and replay on a healthy disk.

mod common;

use common::*;
use settled_wal::{Wal, WalConfig, WalConfigField, WalError};

#[test]
fn appended_records_replay_identically_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    assert_eq!(wal.lsn_next(), 1);
    assert_eq!(wal.durable_lsn(), 0);
    let lsn_last = append_durable(&wal, 1, 60);
    assert_eq!(lsn_last, 60);
    assert_eq!(wal.durable_lsn(), 60);
    assert!(
        wal.stats().segments_created >= 3,
        "60 records of up to 200 B roll 1 KiB segments"
    );
    wal.close().expect("close");

    let wal = Wal::open(dir.path(), config).expect("reopen");
    assert_eq!(wal.durable_lsn(), 60);
    assert_eq!(wal.recovery_report().records_verified, 60);
    assert_eq!(wal.recovery_report().torn_tail, None);
    let records = replay_all(&wal, 0).expect("replay");
    assert_eq!(records.len(), 60);
    assert_records_are_payloads(&records, 1);
    // Appending continues at the next LSN, and replay sees old and new.
    assert_eq!(wal.append(&payload(61)).expect("append"), 61);
    wal.wait_durable(61).expect("durable");
    let records = replay_all(&wal, 55).expect("replay");
    assert_records_are_payloads(&records, 56);
    assert_eq!(records.len(), 6);
}

#[test]
fn segments_never_exceed_segment_bytes_and_names_sort_by_first_lsn() {
    let config = small_config();
    let dir = build_wal(&config, 80);
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    let mut lsn_previous = 0;
    for file in &files {
        let bytes = std::fs::metadata(file).expect("metadata").len();
        assert!(bytes <= config.segment_bytes, "{file:?} has {bytes} bytes");
        let name = file
            .file_name()
            .and_then(|name| name.to_str())
            .expect("name");
        let lsn: u64 = name["wal-".len().."wal-".len() + 20]
            .parse()
            .expect("lsn in name");
        assert!(lsn > lsn_previous, "names sort by first LSN");
        lsn_previous = lsn;
    }
}

#[test]
fn configured_first_lsn_is_the_first_record_and_earlier_replay_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig {
        first_lsn: 1000,
        ..small_config()
    };
    let wal = Wal::open(dir.path(), config).expect("open");
    assert_eq!(wal.durable_lsn(), 999);
    assert_eq!(wal.append(b"first").expect("append"), 1000);
    wal.wait_durable(1000).expect("durable");
    let records = replay_all(&wal, 999).expect("replay");
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].lsn, records[0].payload.as_slice()),
        (1000, &b"first"[..])
    );
    match wal.replay_after(500) {
        Err(WalError::RecordsMissing {
            after_lsn: 500,
            lsn_first_retained: 1000,
        }) => {}
        other => panic!("expected RecordsMissing, got {:?}", other.err()),
    }
    // The first LSN of an existing WAL comes from disk, not from config.
    wal.close().expect("close");
    let wal = Wal::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(wal.lsn_next(), 1001);
}

#[test]
fn limits_give_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let wal = Wal::open(dir.path(), config.clone()).expect("open");
    let too_large = vec![0u8; config.record_bytes_max as usize + 1];
    match wal.append(&too_large) {
        Err(WalError::RecordTooLarge {
            record_bytes: 257,
            record_bytes_max: 256,
        }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // The largest allowed record still fits a segment of its own.
    let lsn = wal
        .append(&vec![7u8; config.record_bytes_max as usize])
        .expect("max record");
    wal.wait_durable(lsn).expect("durable");
    match wal.wait_durable(lsn + 1) {
        Err(WalError::LsnNotAppended {
            lsn: 2,
            lsn_next: 2,
        }) => {}
        other => panic!("expected LsnNotAppended, got {other:?}"),
    }
    match wal.replay_after(5) {
        Err(WalError::ReplayPastEnd {
            after_lsn: 5,
            durable_lsn: 1,
        }) => {}
        other => panic!("expected ReplayPastEnd, got {:?}", other.err()),
    }
    let bad = WalConfig {
        segment_bytes: 100,
        ..config
    };
    assert!(matches!(
        Wal::open(dir.path(), bad),
        Err(WalError::ConfigInvalid {
            field: WalConfigField::SegmentBytes,
            ..
        })
    ));
}

#[test]
fn subscribers_are_told_the_durable_lsn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), small_config()).expect("open");
    let durable = wal.subscribe();
    let lsn = append_durable(&wal, 1, 5);
    let notified = durable
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("notification");
    assert!(notified >= 1 && notified <= lsn);
    assert_eq!(wal.durable_lsn(), lsn);
    wal.close().expect("close");
    // Closing disconnects the channel so a select loop notices.
    while durable.try_recv().is_ok() {}
    assert!(matches!(durable.recv(), Err(crossbeam::channel::RecvError)));
}

#[test]
fn a_durability_callback_hears_durable_lsns_in_order_then_the_end() {
    use settled_wal::Durability;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), small_config()).expect("open");
    let heard = Arc::new(Mutex::new(Vec::new()));
    let hearing = heard.clone();
    wal.on_durable(Box::new(move |event| hearing.lock().unwrap().push(event)));
    let lsn = append_durable(&wal, 1, 5);
    // `wait_durable` returns once the LSN is published; the callback comes right after,
    // on the writer thread: wait for it.
    let started = std::time::Instant::now();
    while !heard.lock().unwrap().contains(&Durability::Durable(lsn)) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never told"
        );
        std::thread::yield_now();
    }
    wal.close().expect("close");
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.last(), Some(&Durability::Stopped), "{heard:?}");
    let lsns: Vec<u64> = heard
        .iter()
        .filter_map(|event| match event {
            Durability::Durable(lsn) => Some(*lsn),
            Durability::Stopped => None,
        })
        .collect();
    assert!(lsns.windows(2).all(|pair| pair[0] < pair[1]), "{lsns:?}");
    assert!(lsns.iter().all(|&told| (1..=lsn).contains(&told)));
    assert_eq!(heard.len(), lsns.len() + 1, "one end, last: {heard:?}");
}

#[test]
fn wait_durable_timeout_reports_durability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), small_config()).expect("open");
    let lsn = wal.append(b"x").expect("append");
    assert!(wal
        .wait_durable_timeout(lsn, std::time::Duration::from_secs(10))
        .expect("wait"));
}

/// Sums what the writer reports, as a metrics recorder would.
#[derive(Default)]
struct Observed {
    groups: std::sync::Mutex<Vec<settled_wal::GroupDurable>>,
}

impl settled_wal::WalObserver for Observed {
    fn group_durable(&self, group: &settled_wal::GroupDurable) {
        self.groups.lock().unwrap().push(*group);
    }
}

#[test]
fn the_observer_hears_of_every_durable_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(dir.path(), small_config()).expect("open");
    let observed = std::sync::Arc::new(Observed::default());
    assert!(wal.observe(observed.clone()).is_ok(), "first observer");
    assert!(wal.observe(observed.clone()).is_err(), "only one observer");
    let lsn_last = append_durable(&wal, 1, 60);
    let stats = wal.stats();
    wal.close().expect("close");
    let groups = observed.groups.lock().unwrap();
    let records: u64 = groups.iter().map(|group| group.records).sum();
    assert_eq!(records, 60, "every record in exactly one group");
    assert_eq!(groups.last().map(|group| group.durable_lsn), Some(lsn_last));
    assert!(groups
        .windows(2)
        .all(|pair| pair[0].durable_lsn < pair[1].durable_lsn));
    let fsyncs: u64 = groups.iter().map(|group| u64::from(group.fsyncs)).sum();
    // The WAL also syncs once at open, before any group.
    assert_eq!(fsyncs + 1, stats.fsyncs);
    assert!(groups
        .iter()
        .all(|group| group.bytes > 0 && group.fsyncs >= 1));
}
