//! `settled verify` on a real data directory: a clean history verifies, a balance changed
//! behind the daemon's back is named, and so is a damaged row.

mod common;

use std::path::Path;
use std::process::Command;

use common::{config, Workload};
use settled_engine::core::Engine;
use settled_engine::store::{CF_ACCOUNTS, CF_TRANSFERS};

fn verify(data_dir: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_settled"))
        .args(["verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run settled verify");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Open the store with RocksDB itself, as an outside tool (or a bad disk) would.
fn with_raw_store(data_dir: &Path, change: impl FnOnce(&rocksdb::DB)) {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), data_dir.join("store")).unwrap();
    let db =
        rocksdb::DB::open_cf(&rocksdb::Options::default(), data_dir.join("store"), names).unwrap();
    change(&db);
}

#[test]
fn verify_passes_a_real_history_and_names_what_was_changed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let handle = engine.handle();
    let mut workload = Workload::new(5, 20);
    for _ in 0..60 {
        handle.submit_wait(workload.next_request()).unwrap();
    }
    engine.shutdown().unwrap();

    let (ok, text) = verify(dir.path());
    assert!(ok, "{text}");
    assert!(
        text.starts_with("verified the checkpoint at LSN "),
        "{text}"
    );
    assert!(text.contains(" 20 accounts,"), "{text}");

    // Account 1 gains a posted debit no transfer explains.
    let key = 1u128.to_be_bytes();
    with_raw_store(dir.path(), |db| {
        let cf = db.cf_handle(CF_ACCOUNTS).unwrap();
        let mut value = db.get_cf(cf, key).unwrap().expect("account 1 row");
        // debits_posted is the u128 at bytes 32..48, little-endian.
        let debits_posted = u128::from_le_bytes(value[32..48].try_into().unwrap()) + 1;
        value[32..48].copy_from_slice(&debits_posted.to_le_bytes());
        db.put_cf(cf, key, value).unwrap();
    });
    let (ok, text) = verify(dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("account 1: debits_posted is"), "{text}");

    // A damaged transfer row is named by column family and key.
    with_raw_store(dir.path(), |db| {
        let cf = db.cf_handle(CF_TRANSFERS).unwrap();
        let (key, _) = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        db.put_cf(cf, key, [0u8; 5]).unwrap();
    });
    let (ok, text) = verify(dir.path());
    assert!(!ok, "{text}");
    assert!(text.contains("transfers"), "{text}");
}
