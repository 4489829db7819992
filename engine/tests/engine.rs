//! The in-process engine end to end: submit, durable replies, read-your-writes,
//! backpressure, limits, expiry, checkpoints and restart.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{account, apply_reference, config, copy_files, transfer, Workload, START};
use protocol::{
    AccountFlags, CreateAccountResult, CreateResult, CreateTransferResult, QueryFilter,
    TransferFlags, BATCH_EVENTS_MAX, NS_PER_SECOND,
};
use settled_engine::core::{
    recover_ledger, Engine, EngineError, EngineHandle, OnReply, Reply, Request, ShutdownReport,
    WhenFull,
};
use settled_engine::ledger::{Ledger, PendingStatus};

fn created(reply: Reply) -> Vec<CreateResult> {
    match reply {
        Reply::Created(results) => results,
        other => panic!("expected create results, got {other:?}"),
    }
}

fn statuses_all(results: &[CreateResult], status: u32) -> bool {
    results.iter().all(|result| result.status == status)
}

/// Accounts 1 and 2 on ledger 1, which the transfers of these tests move money between.
fn create_accounts_1_and_2(handle: &EngineHandle) {
    let accounts = vec![
        account(1, AccountFlags::default()),
        account(2, AccountFlags::default()),
    ];
    let results = created(
        handle
            .submit_wait(Request::CreateAccounts(accounts))
            .unwrap(),
    );
    assert!(statuses_all(&results, CreateAccountResult::Created.code()));
}

#[test]
fn replies_are_durable_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let handle = engine.handle();
    create_accounts_1_and_2(&handle);
    let results = created(
        handle
            .submit_wait(Request::CreateTransfers(vec![transfer(10, 1, 2, 250)]))
            .unwrap(),
    );
    assert_eq!(results[0].status, CreateTransferResult::Created.code());
    assert!(results[0].timestamp >= START);

    // Read-your-writes: a lookup after the acknowledgement sees the transfer.
    let Reply::Accounts(found) = handle
        .submit_wait(Request::LookupAccounts(vec![1, 2]))
        .unwrap()
    else {
        panic!("lookup_accounts answers with accounts")
    };
    assert_eq!(
        (found[0].debits_posted, found[1].credits_posted),
        (250, 250)
    );

    let report = engine.shutdown().unwrap();
    assert_eq!(
        report.checkpoint_lsn, report.lsn_last,
        "shutdown checkpoints"
    );

    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.recovery_report().records_replayed, 0);
    let Reply::Transfers(found) = engine
        .handle()
        .submit_wait(Request::LookupTransfers(vec![10]))
        .unwrap()
    else {
        panic!("lookup_transfers answers with transfers")
    };
    assert_eq!(found[0].amount, 250);
    assert_eq!(found[0].timestamp, results[0].timestamp);
    let again = engine.shutdown().unwrap();
    assert_eq!(again.state_hash, report.state_hash);
}

/// Four threads submit pipelined requests at once; every request gets its own results
/// and the ledger ends up exactly as a serial application of the same requests would
/// (the frozen clock makes timestamps depend on order only, and each thread's transfers
/// are independent of the others').
#[test]
fn concurrent_submitters_each_get_their_replies() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let handle = engine.handle();
    let accounts = (1..=8)
        .map(|id| account(id, AccountFlags::default()))
        .collect();
    handle
        .submit_wait(Request::CreateAccounts(accounts))
        .unwrap();
    let threads: Vec<_> = (0..4u128)
        .map(|thread| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let pending: Vec<_> = (0..50u128)
                    .map(|request| {
                        let id = 1_000 * (thread + 1) + request;
                        let transfers = vec![transfer(id, thread * 2 + 1, thread * 2 + 2, 1)];
                        handle.submit(Request::CreateTransfers(transfers)).unwrap()
                    })
                    .collect();
                for reply in pending {
                    let results = created(reply.wait().unwrap());
                    assert_eq!(results.len(), 1);
                    assert_eq!(results[0].status, CreateTransferResult::Created.code());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let Reply::Accounts(found) = handle
        .submit_wait(Request::LookupAccounts((1..=8).collect()))
        .unwrap()
    else {
        panic!("accounts")
    };
    for pair in found.chunks(2) {
        assert_eq!((pair[0].debits_posted, pair[1].credits_posted), (50, 50));
    }
    let report = engine.shutdown().unwrap();
    let (recovered, _) = recover_ledger(&config(dir.path())).unwrap();
    assert_eq!(recovered.state_hash(), report.state_hash);
}

#[test]
fn requests_over_the_event_limit_are_refused_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let transfers = vec![transfer(1, 1, 2, 1); BATCH_EVENTS_MAX as usize + 1];
    let error = engine
        .handle()
        .submit(Request::CreateTransfers(transfers))
        .unwrap_err();
    assert!(matches!(
        error,
        EngineError::TooManyEvents {
            count: 8190,
            max: 8189,
            ..
        }
    ));
    assert!(error.to_string().contains("8189"), "{error}");
    engine.shutdown().unwrap();
}

fn slow_clock() -> u64 {
    // Makes every core batch take a while, so the queue fills up deterministically.
    std::thread::sleep(Duration::from_millis(30));
    START
}

#[test]
fn full_queue_answers_busy_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.clock = slow_clock;
    config.queue_requests_max = 2;
    config.when_full = WhenFull::Busy;
    let engine = Engine::open(config).unwrap();
    let handle = engine.handle();
    let mut accepted = Vec::new();
    let mut busy = 0;
    for id in 1..=20u128 {
        match handle.submit(Request::CreateAccounts(vec![account(
            id,
            AccountFlags::default(),
        )])) {
            Ok(reply) => accepted.push((id, reply)),
            Err(EngineError::Busy {
                queue_requests_max: 2,
            }) => busy += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(busy > 0, "a queue of 2 cannot take 20 requests at once");
    let ids: Vec<u128> = accepted.iter().map(|(id, _)| *id).collect();
    for (_, reply) in accepted {
        let results = created(reply.wait().unwrap());
        assert_eq!(results[0].status, CreateAccountResult::Created.code());
    }
    let Reply::Accounts(found) = handle
        .submit_wait(Request::LookupAccounts(ids.clone()))
        .unwrap()
    else {
        panic!("accounts")
    };
    assert_eq!(found.len(), ids.len());
    engine.shutdown().unwrap();
}

static EXPIRY_CLOCK: AtomicU64 = AtomicU64::new(START);

fn expiry_clock() -> u64 {
    EXPIRY_CLOCK.load(Ordering::SeqCst)
}

#[test]
fn expiry_fires_on_the_engine_clock_and_replays_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.clock = expiry_clock;
    let engine = Engine::open(config.clone()).unwrap();
    let handle = engine.handle();
    create_accounts_1_and_2(&handle);
    let mut pending = transfer(5, 1, 2, 40);
    pending.flags = TransferFlags::PENDING;
    pending.timeout = 2;
    let results = created(
        handle
            .submit_wait(Request::CreateTransfers(vec![pending]))
            .unwrap(),
    );
    assert_eq!(results[0].status, CreateTransferResult::Created.code());

    // Nothing happens before the timeout, whatever traffic there is.
    EXPIRY_CLOCK.store(START + NS_PER_SECOND, Ordering::SeqCst);
    handle
        .submit_wait(Request::LookupAccounts(vec![1]))
        .unwrap();
    let Reply::Accounts(found) = handle
        .submit_wait(Request::LookupAccounts(vec![1]))
        .unwrap()
    else {
        panic!("accounts")
    };
    assert_eq!(found[0].debits_pending, 40);

    // After it, the idle core wakes up on its own and voids the transfer.
    EXPIRY_CLOCK.store(START + 3 * NS_PER_SECOND, Ordering::SeqCst);
    let mut debits_pending = 40;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(20));
        let query = QueryFilter {
            limit: 10,
            ..QueryFilter::default()
        };
        let Reply::Accounts(found) = handle.submit_wait(Request::QueryAccounts(query)).unwrap()
        else {
            panic!("accounts")
        };
        debits_pending = found[0].debits_pending;
        if debits_pending == 0 {
            break;
        }
    }
    assert_eq!(debits_pending, 0, "the pending transfer expired");
    // A write answered after the expiry: the WAL is durable through the expiry's record
    // once it is. Keep a copy of that WAL, since a graceful stop leaves it empty.
    let results = created(
        handle
            .submit_wait(Request::CreateTransfers(vec![transfer(6, 1, 2, 1)]))
            .unwrap(),
    );
    assert_eq!(results[0].status, CreateTransferResult::Created.code());
    let wal_dir = dir.path().join("wal");
    let wal_copy = tempfile::tempdir().unwrap();
    copy_files(&wal_dir, wal_copy.path());
    let report = engine.shutdown().unwrap();

    // Expiry was logged like any input: replay without the checkpoint reaches the same
    // state (the checkpoint is removed so that every record is re-executed).
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    std::fs::remove_dir_all(&wal_dir).unwrap();
    copy_files(wal_copy.path(), &wal_dir);
    EXPIRY_CLOCK.store(START, Ordering::SeqCst);
    let (recovered, recovery) = recover_ledger(&config).unwrap();
    assert!(recovery.records_replayed >= 3);
    assert_eq!(recovered.pending_status(5), Some(PendingStatus::Expired));
    assert_eq!(recovered.state_hash(), report.state_hash);
}

#[test]
fn checkpoints_truncate_the_wal_and_recovery_starts_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.checkpoint_batches = 2;
    config.wal.segment_bytes = 256 * 1024;
    config.wal.record_bytes_max = 128 * 1024;
    config.batch_events_max = BATCH_EVENTS_MAX;
    // A whole request must fit one record: keep requests small for this WAL.
    let engine = Engine::open(config.clone());
    // 8189 events do not fit a 128 KiB record: the config is refused, naming the key.
    let error = engine.err().expect("config refused");
    assert!(error.to_string().contains("batch_events_max"), "{error}");

    config.wal.record_bytes_max = 2 * 1024 * 1024;
    config.wal.segment_bytes = 2 * 1024 * 1024 + 4096;
    let engine = Engine::open(config.clone()).unwrap();
    let handle = engine.handle();
    let mut workload = Workload::new(7, 50);
    let mut reference = Ledger::new();
    for _ in 0..120 {
        let request = workload.next_request();
        apply_reference(&mut reference, &request);
        handle.submit_wait(request).unwrap();
    }
    // The checkpointer runs behind the core; give it a moment, then check that it wrote
    // and that the WAL dropped the segments it covers.
    for _ in 0..100 {
        if engine.checkpoint_lsn() >= 100 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        engine.checkpoint_lsn() >= 100,
        "checkpoint at {}",
        engine.checkpoint_lsn()
    );
    let report = engine.shutdown().unwrap();
    assert_eq!(report.state_hash, reference.state_hash());
    // The final checkpoint holds everything: the stop left one empty segment, which
    // starts at the next LSN, for the next start to verify instead of old records.
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(
        std::fs::metadata(&segments[0]).unwrap().len(),
        u64::from(wal::SEGMENT_HEADER_BYTES)
    );
    assert!(segments[0]
        .to_string_lossy()
        .ends_with(&wal::segment_file_name(report.lsn_last + 1)));

    let (recovered, recovery) = recover_ledger(&config).unwrap();
    assert_eq!(recovery.checkpoint_lsn, report.lsn_last);
    assert_eq!(recovery.records_replayed, 0);
    assert_eq!(recovered.state_hash(), reference.state_hash());
}

#[test]
fn a_checkpoint_is_due_after_checkpoint_events_whatever_the_batch_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.checkpoint_batches = 1_000_000;
    config.checkpoint_interval = Duration::from_secs(3600);
    config.checkpoint_events = 300;
    let engine = Engine::open(config).unwrap();
    let handle = engine.handle();
    let mut workload = Workload::new(11, 50);
    // Far fewer batches than checkpoint_batches, far sooner than the interval.
    for _ in 0..40 {
        handle.submit_wait(workload.next_request()).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.checkpoint_lsn() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        engine.checkpoint_lsn() > 0,
        "no checkpoint after checkpoint_events"
    );
    engine.shutdown().unwrap();
}

/// Open the engine on `config`, apply five requests of a workload, stop (which writes a
/// checkpoint).
fn run_workload_and_stop(config: &settled_engine::core::EngineConfig) -> ShutdownReport {
    let engine = Engine::open(config.clone()).unwrap();
    let mut workload = Workload::new(21, 10);
    for _ in 0..5 {
        engine
            .handle()
            .submit_wait(workload.next_request())
            .unwrap();
    }
    engine.shutdown().unwrap()
}

#[test]
fn a_lost_wal_after_a_checkpoint_is_refused_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let report = run_workload_and_stop(&config);
    assert!(report.checkpoint_lsn > 0);

    // The WAL directory is lost (a wrong mount, an operator's rm): starting on the store
    // alone would silently drop what the WAL held after the checkpoint.
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    match Engine::open(config.clone()) {
        Err(EngineError::WalLost { what }) => {
            assert!(what.contains("checkpoint at LSN"), "{what}");
        }
        Err(other) => panic!("expected WalLost, got {other}"),
        Ok(_) => panic!("a start without the WAL must be refused"),
    }
    let accepting = settled_engine::core::EngineConfig {
        accept_wal_loss: true,
        ..config.clone()
    };
    let engine = Engine::open(accepting).expect("the operator accepted the loss");
    assert_eq!(engine.shutdown().unwrap().state_hash, report.state_hash);
    // From then on the WAL goes on from the checkpoint: a plain start works again.
    Engine::open(config).unwrap().shutdown().unwrap();
}

/// CPU time (user + system, in clock ticks) of this process's thread named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    for task in tasks {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        // Fields after the command's closing parenthesis: state is field 3, utime 14.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields[11].parse().unwrap();
        let stime: u64 = fields[12].parse().unwrap();
        return utime + stime;
    }
    panic!("no thread named {name}");
}

#[test]
fn after_a_wal_failure_a_due_expiry_does_not_make_the_core_spin() {
    let dir = tempfile::tempdir().unwrap();
    let storage = std::sync::Arc::new(wal::fault::FaultyStorage::new());
    let mut config = config(dir.path());
    // Expiry needs time to pass.
    config.clock = settled_engine::core::system_clock_ns;
    config.wal_storage = settled_engine::core::WalStorage(storage.clone());
    let engine = Engine::open(config).unwrap();
    let handle = engine.handle();
    create_accounts_1_and_2(&handle);
    let pending = protocol::Transfer {
        flags: TransferFlags::PENDING,
        timeout: 1,
        ..transfer(10, 1, 2, 5)
    };
    let results = created(
        handle
            .submit_wait(Request::CreateTransfers(vec![pending]))
            .unwrap(),
    );
    assert_eq!(results[0].status, CreateTransferResult::Created.code());

    // The WAL fails: the engine acknowledges nothing more.
    storage.fail_syncs_from(storage.sync_data_count());
    let failed = handle.submit_wait(Request::CreateTransfers(vec![transfer(11, 1, 2, 1)]));
    assert!(matches!(failed, Err(EngineError::Wal(_))), "{failed:?}");

    // The pending transfer's expiry falls due; a failed core must sleep through it.
    std::thread::sleep(Duration::from_millis(1500));
    let before = thread_cpu_ticks("settled-core");
    std::thread::sleep(Duration::from_secs(1));
    let spent = thread_cpu_ticks("settled-core") - before;
    // Clock ticks are 1/100 s: a spinning core spends about 100 of them in this second.
    assert!(spent < 20, "the core spent {spent} ticks in one second");
    let _ = engine.shutdown();
}

// A WAL that ends behind the checkpoint (an old copy put back): refused by default; with
// --accept-wal-loss the start goes on from the checkpoint with a fresh WAL (the old one
// kept aside), and what it acknowledges from then on survives a restart.
#[test]
fn a_wal_behind_the_checkpoint_is_refused_or_set_aside_when_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let engine = Engine::open(config.clone()).unwrap();
    create_accounts_1_and_2(&engine.handle());
    let first = engine.shutdown().unwrap();
    let backup = dir.path().join("wal-backup");
    copy_files(&dir.path().join("wal"), &backup);
    let second = run_workload_and_stop(&config);
    assert!(
        second.checkpoint_lsn > first.lsn_last,
        "{first:?} {second:?}"
    );
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    std::fs::rename(&backup, dir.path().join("wal")).unwrap();

    let refused = Engine::open(config.clone());
    assert!(
        matches!(refused, Err(EngineError::WalLost { .. })),
        "{:?}",
        refused.err()
    );

    let accepting = settled_engine::core::EngineConfig {
        accept_wal_loss: true,
        ..config.clone()
    };
    let engine = Engine::open(accepting).expect("the operator accepted the loss");
    let reply = engine
        .handle()
        .submit_wait(Request::CreateAccounts(vec![account(
            777,
            AccountFlags::default(),
        )]));
    assert!(
        reply.is_ok(),
        "first write after an accepted WAL loss: {reply:?}"
    );
    engine.shutdown().unwrap();
    let set_aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("wal.lost-")
        })
        .count();
    assert_eq!(set_aside, 1, "the old WAL is kept aside");

    let engine = Engine::open(config).unwrap();
    let Reply::Accounts(found) = engine
        .handle()
        .submit_wait(Request::LookupAccounts(vec![1, 777]))
        .unwrap()
    else {
        panic!("lookup_accounts answers with accounts")
    };
    assert_eq!(
        found.len(),
        2,
        "the checkpoint's and the new acknowledged account"
    );
    engine.shutdown().unwrap();
}

/// The production path of "checkpoints keep failing": the checkpointer's status, read by
/// the core thread into its Pipeline, refuses writes (unavailable), serves reads, and takes
/// writes again once a checkpoint is written. The simulation refuses writes itself and does
/// not run this path.
#[test]
fn checkpoints_failing_refuse_writes_serve_reads_and_writes_come_back() {
    let dir = tempfile::tempdir().unwrap();
    // Every WAL truncation, the last step of a checkpoint, fails while removes fail.
    let storage = wal::fault::FaultyStorage::new();
    let mut config = config(dir.path());
    config.wal_storage = settled_engine::core::WalStorage(std::sync::Arc::new(storage.clone()));
    let engine = Engine::open(config).unwrap();
    let handle = engine.handle();
    create_accounts_1_and_2(&handle);
    storage.fail_removes(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut id = 100u128;
    let mut acknowledged = 0u128;
    loop {
        // About 1 MiB of WAL each: segments (4 MiB) roll, so checkpoints truncate.
        let transfers: Vec<_> = (0..8189).map(|i| transfer(id + i, 1, 2, 1)).collect();
        id += 8189;
        match handle.submit_wait(Request::CreateTransfers(transfers)) {
            Ok(reply) => {
                assert!(statuses_all(
                    &created(reply),
                    CreateTransferResult::Created.code()
                ));
                acknowledged += 8189;
            }
            Err(EngineError::Unavailable { .. }) => break,
            Err(other) => panic!("{other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoints failing for 40 s never refused a write"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Reads are served, and the refused write was not applied.
    let Ok(Reply::Accounts(accounts)) = handle.submit_wait(Request::LookupAccounts(vec![1])) else {
        panic!("a read was refused while checkpoints failed");
    };
    assert_eq!(accounts[0].debits_posted, acknowledged);
    storage.fail_removes(false);
    loop {
        match handle.submit_wait(Request::CreateTransfers(vec![transfer(id, 1, 2, 1)])) {
            Ok(reply) => {
                assert!(statuses_all(
                    &created(reply),
                    CreateTransferResult::Created.code()
                ));
                break;
            }
            Err(EngineError::Unavailable { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes never came back once checkpoints could be written"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    engine.shutdown().unwrap();
}

/// A shutdown while async submitters keep sending: every request `submit_async` let in
/// was queued before the shutdown message, so it is answered (with its result, not an
/// error) by the time `shutdown` returns, while the submitters still hold their handles.
/// A request let in after the core's last look at its queue would instead wait there
/// until the last handle is dropped.
#[test]
fn every_request_let_in_is_answered_before_shutdown_returns() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    engine
        .handle()
        .submit_wait(Request::CreateAccounts(vec![
            account(1, Default::default()),
            account(2, Default::default()),
        ]))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Ids answered with a reply (not an error), and ids let in.
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let tasks: Vec<_> = (0..8u128)
        .map(|task| {
            let (handle, answered) = (engine.handle(), answered.clone());
            runtime.spawn(async move {
                let mut let_in = Vec::new();
                for index in 0u128.. {
                    let id = 1_000_000 * (task + 1) + index;
                    let answered = answered.clone();
                    let on_reply: OnReply = Box::new(move |result| {
                        if result.is_ok() {
                            answered.lock().unwrap().insert(id);
                        }
                    });
                    let request = Request::CreateTransfers(vec![transfer(id, 1, 2, 1)]);
                    let forever = std::future::pending();
                    match handle
                        .submit_async(request, on_reply, Duration::from_secs(30), forever)
                        .await
                    {
                        Ok(Ok(())) => let_in.push(id),
                        Err(EngineError::ShuttingDown) => return (let_in, handle),
                        Err(error) => panic!("refused: {error}"),
                        Ok(Err(_)) => panic!("no queue slot within 30 s"),
                    }
                    tokio::task::yield_now().await;
                }
                unreachable!()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    engine.shutdown().unwrap();
    let answered_at_shutdown = answered.lock().unwrap().clone();
    let mut let_in_total = 0;
    for task in tasks {
        // The handle comes back with the ids: it is dropped only after the check.
        let (let_in, _handle) = runtime.block_on(task).unwrap();
        let_in_total += let_in.len();
        for id in let_in {
            assert!(
                answered_at_shutdown.contains(&id),
                "transfer {id} was let in but not answered when shutdown returned"
            );
        }
    }
    assert!(let_in_total > 100, "only {let_in_total} requests let in");
}
