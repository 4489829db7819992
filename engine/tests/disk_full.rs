//! A real filesystem filling up under the checkpoint store: the daemon must refuse writes
//! with `unavailable` (nothing half-applied), keep serving reads, say on `/readyz` why it
//! is not ready, and lose nothing acknowledged: after the disk grows, a restart recovers
//! every acknowledged transfer from the WAL.
//!
//! The store directory is a small tmpfs, mounted by the test (root needed: CI runs as
//! root). Without the right to mount, the test says so and passes, unless
//! `SETTLED_REQUIRE_SYSTEM_TESTS=1` (CI) makes that a failure too.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let settings = "checkpoint_events = 8192\ncheckpoint_interval_seconds = 1\n\
                    transfers_uncheckpointed_max = 65536\n";
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

#[test]
fn a_full_disk_refuses_writes_serves_reads_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = Tmpfs::mount(&dir.path().join("data/store"), "12m") else {
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
    // answered request was created.
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for round in 0..5_000 {
        let batch = transfers(round);
        match client.create_transfers(&batch) {
            Ok(results) => {
                for (transfer, result) in batch.iter().zip(&results) {
                    assert_eq!(result.transfer_status(), Ok(CreateTransferResult::Created));
                    acknowledged.push(transfer.id);
                }
            }
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    match &refused {
        Some(ClientError::Server { code, message }) => {
            assert_eq!(*code, ErrorCode::Unavailable, "{message}");
            assert!(message.contains("checkpoints"), "{message}");
        }
        other => panic!("expected `unavailable` once the disk is full, got {other:?}"),
    }
    assert!(acknowledged.len() > 10_000, "the store filled too early");

    // Reads go on; the daemon says why it is not ready.
    let found = client.lookup_transfers(&acknowledged[..100]).unwrap();
    assert_eq!(found.len(), 100);
    assert_eq!(client.lookup_accounts(&[1, 2]).unwrap().len(), 2);
    let (status, body) = http_get(metrics, "/readyz");
    assert!(status.contains("503"), "{status}");
    assert!(body.contains("checkpointer failed"), "{body}");
    drop(client);
    // The final checkpoint cannot be written either: the daemon stops and says so.
    let status = daemon.stop_with("TERM");
    assert!(
        status.code().is_some(),
        "exited, not killed: {:?}",
        daemon.stderr
    );
    drop(daemon);

    // More room, a restart: everything acknowledged is back, from the WAL.
    store.grow("256m");
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
