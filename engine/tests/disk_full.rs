//! A real filesystem filling up under the checkpoint store: the daemon must refuse writes
//! with `unavailable` (nothing half-applied), keep serving reads, say on `/readyz` why it
//! is not ready, take writes again once the disk has room (without a restart), and lose
//! nothing acknowledged: a restart afterwards finds every acknowledged transfer.
//!
//! The data directory is a small tmpfs, mounted by the test (root needed: CI runs as
//! root). Without the right to mount, the test says so and passes, unless
//! `SETTLED_REQUIRE_SYSTEM_TESTS=1` (CI) makes that a failure too.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use client::blocking::Client;
use client::{ClientError, ErrorCode};
use common::daemon::{free_port, http_get, skip_without, spawn_with_settings, Daemon};
use common::{account, LEDGER};
use protocol::{Account, AccountFlags, CreateTransferResult, Transfer};

const ACCOUNTS: u128 = 10;
const PER_REQUEST: u64 = 1000;

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn spawn(dir: &Path, metrics: Option<SocketAddr>) -> (Daemon, SocketAddr) {
    // The guard keeps 12 MiB of the 40 free: writes stop there, checkpoints go on while
    // they leave 3 MiB. WAL segments of 9 MiB, so checkpoints can delete old ones.
    let settings = "checkpoint_events = 8192\ncheckpoint_interval_seconds = 1\n\
                    transfers_uncheckpointed_max = 65536\ndisk_free_min_bytes = 12582912\n\
                    wal_segment_bytes = 9437184\n";
    spawn_with_settings(dir, metrics, settings)
}

fn transfers(round: u64) -> Vec<Transfer> {
    (0..PER_REQUEST)
        .map(|index| Transfer {
            id: u128::from(round * PER_REQUEST + index + 1),
            debit_account_id: 1 + u128::from(index) % ACCOUNTS,
            credit_account_id: 1 + u128::from(index + 1) % ACCOUNTS,
            amount: 1 + u128::from(index % 7),
            ledger: LEDGER,
            code: 1,
            ..Transfer::default()
        })
        .collect()
}

/// Send batches from `round` on until one is refused, which must be `unavailable` for a
/// nearly full disk; every transfer of an answered batch was created.
fn fill_until_refused(client: &Client, round: &mut u64, acknowledged: &mut Vec<u128>) {
    let refused = loop {
        assert!(*round < 5_000, "the disk never filled");
        let batch = transfers(*round);
        *round += 1;
        match client.create_transfers(&batch) {
            Ok(results) => {
                for (transfer, result) in batch.iter().zip(&results) {
                    assert_eq!(result.transfer_status(), Ok(CreateTransferResult::Created));
                    acknowledged.push(transfer.id);
                }
            }
            Err(error) => break error,
        }
    };
    match &refused {
        ClientError::Server { code, message } => {
            assert_eq!(*code, ErrorCode::Unavailable, "{message}");
            assert!(message.contains("disk nearly full"), "{message}");
        }
        other => panic!("expected `unavailable` once the disk is full, got {other:?}"),
    }
}

#[test]
fn a_full_disk_refuses_writes_serves_reads_resumes_once_freed_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The whole data directory, WAL and store, on a filesystem of 40 MiB.
    let Some(data) = Tmpfs::mount(&dir.path().join("data"), "40m") else {
        skip_without("cannot mount a tmpfs (needs root): disk-full test not run");
        return;
    };
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (mut daemon, addr) = spawn(dir.path(), Some(metrics));
    let client = Client::connect(addr).unwrap();
    let accounts: Vec<Account> = (1..=ACCOUNTS)
        .map(|id| account(id, AccountFlags::empty()))
        .collect();
    client.create_accounts(&accounts).unwrap();

    // Write until the store's disk is full and the daemon refuses; every transfer of an
    // answered request was created. The daemon then says on /readyz why it is not ready,
    // unless space came back between the refusal and the probe (a checkpoint lets the WAL
    // drop segments, compaction frees files): then it is ready, rightly, and filling
    // goes on until a probe finds it refusing.
    let mut acknowledged = Vec::new();
    let mut round = 0;
    let mut not_ready = None;
    for _ in 0..5 {
        fill_until_refused(&client, &mut round, &mut acknowledged);
        let (status, body) = http_get(metrics, "/readyz");
        if status.contains("503") {
            not_ready = Some(body);
            break;
        }
        assert!(status.contains("200"), "{status} {body}");
    }
    let body = not_ready.expect("/readyz never answered 503 right after a refused write");
    assert!(body.contains("disk nearly full"), "{body}");
    assert!(acknowledged.len() > 10_000, "the store filled too early");

    // Reads go on.
    let found = client.lookup_transfers(&acknowledged[..100]).unwrap();
    assert_eq!(found.len(), 100);
    assert_eq!(client.lookup_accounts(&[1, 2]).unwrap().len(), 2);

    // Room again: the daemon sees it and takes writes back without a restart (RocksDB
    // never met the full disk, so it needs no reopening).
    data.grow("256m");
    let deadline = Instant::now() + Duration::from_secs(60);
    let batch = transfers(5_000);
    loop {
        match client.create_transfers(&batch) {
            Ok(results) => {
                for (transfer, result) in batch.iter().zip(&results) {
                    assert_eq!(result.transfer_status(), Ok(CreateTransferResult::Created));
                    acknowledged.push(transfer.id);
                }
                break;
            }
            Err(ClientError::Server {
                code: ErrorCode::Unavailable,
                ..
            }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(error) => {
                let rocks =
                    std::fs::read_to_string(dir.path().join("data/store/LOG")).unwrap_or_default();
                let rocks: Vec<_> = rocks
                    .lines()
                    .filter(|line| {
                        line.contains("rror") || line.contains("ecover") || line.contains("pace")
                    })
                    .collect();
                panic!("writes did not come back: {error}; RocksDB: {rocks:#?}");
            }
        }
    }
    let (status, body) = http_get(metrics, "/readyz");
    assert!(status.contains("200"), "{status} {body}");
    for round in 5_001..5_010 {
        let batch = transfers(round);
        let results = client.create_transfers(&batch).unwrap();
        assert!(results
            .iter()
            .all(|r| r.transfer_status() == Ok(CreateTransferResult::Created)));
        acknowledged.extend(batch.iter().map(|transfer| transfer.id));
    }
    drop(client);
    assert_eq!(
        daemon.stop_with("TERM").code(),
        Some(0),
        "the final checkpoint is written now: {:?}",
        daemon.stderr
    );
    drop(daemon);

    // A restart finds everything acknowledged, before and after the disk filled.
    let (mut daemon, addr) = spawn(dir.path(), None);
    let client = Client::connect(addr).unwrap();
    for chunk in acknowledged.chunks(8189) {
        assert_eq!(client.lookup_transfers(chunk).unwrap().len(), chunk.len());
    }
    let accounts = client
        .lookup_accounts(&(1..=ACCOUNTS).collect::<Vec<_>>())
        .unwrap();
    let debits: u128 = accounts.iter().map(|a| a.debits_posted).sum();
    let credits: u128 = accounts.iter().map(|a| a.credits_posted).sum();
    assert_eq!(debits, credits);
    let expected: u128 = acknowledged
        .iter()
        .map(|id| 1 + (*id - 1) % u128::from(PER_REQUEST) % 7)
        .sum();
    assert_eq!(
        debits, expected,
        "balances hold exactly the acknowledged transfers"
    );
    // And it takes writes again.
    let results = client
        .create_transfers(&transfers(9_999))
        .unwrap_or_else(|error| panic!("{error}; daemon log: {:?}", daemon.log()));
    assert!(results
        .iter()
        .all(|r| r.transfer_status() == Ok(CreateTransferResult::Created)));
    drop(client);
    assert_eq!(
        daemon.stop_with("TERM").code(),
        Some(0),
        "{:?}",
        daemon.stderr
    );
}
