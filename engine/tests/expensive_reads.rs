//! Expensive reads do not stall writes (issue 16): range reads whose filter matches
//! nothing walk the whole checkpointed history in RocksDB, and writes submitted meanwhile
//! are still answered within 50 ms (p99), while the reads still answer correctly.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{account, config, transfer};
use protocol::{
    AccountFilter, AccountFilterFlags, AccountFlags, CreateTransferResult, QueryFilter,
    QueryFilterFlags, BATCH_EVENTS_MAX,
};
use settled_engine::core::{Engine, EngineError, EngineHandle, Reply, Request};

const ACCOUNTS: u128 = 8;
/// No transfer has this code: a query for it scans its whole time range and finds nothing.
const CODE_NOWHERE: u16 = 2;
/// The history stops growing once a scan of it takes this long...
const SCAN_SLOW_ENOUGH: Duration = Duration::from_millis(150);
/// ...or once it holds this many transfers.
const HISTORY_TRANSFERS_MAX: u64 = 1_200_000;
const WRITES: u32 = 200;
const WRITE_LATENCY_P99_MAX: Duration = Duration::from_millis(50);

/// The tests of this file run one at a time: the latency test measures on a 2-core
/// machine, where another engine in the same process would take its CPU.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn transfers(reply: Reply) -> Vec<u128> {
    match reply {
        Reply::Transfers(transfers) => transfers.iter().map(|t| t.id).collect(),
        other => panic!("expected transfers, got {other:?}"),
    }
}

/// Transfer `id` moves 1 from account `id % 8 + 1` to the next one, with code 1.
fn history_transfer(id: u128) -> protocol::Transfer {
    let debit = id % ACCOUNTS + 1;
    transfer(id, debit, debit % ACCOUNTS + 1, 1)
}

/// Every row of the history, for a query that matches none of them.
fn query_nowhere() -> Request {
    Request::QueryTransfers(QueryFilter {
        code: CODE_NOWHERE,
        limit: 10,
        ..QueryFilter::default()
    })
}

/// Every transfer of account 1, for a filter that matches none of them.
fn account_nowhere() -> Request {
    Request::GetAccountTransfers(AccountFilter {
        account_id: 1,
        code: CODE_NOWHERE,
        limit: 10,
        flags: AccountFilterFlags(AccountFilterFlags::DEBITS.0 | AccountFilterFlags::CREDITS.0),
        ..AccountFilter::default()
    })
}

/// Create batches of history transfers until a query that matches nothing takes
/// `SCAN_SLOW_ENOUGH`, once all of them are checkpointed and evicted. Returns the number
/// of transfers and that scan's duration.
fn build_history(engine: &Engine) -> (u64, Duration) {
    let handle = engine.handle();
    let mut id_next: u128 = 1;
    loop {
        for _ in 0..8 {
            let events: Vec<_> = (0..u128::from(BATCH_EVENTS_MAX))
                .map(|offset| history_transfer(id_next + offset))
                .collect();
            id_next += u128::from(BATCH_EVENTS_MAX);
            let Reply::Created(results) = handle
                .submit_wait(Request::CreateTransfers(events))
                .unwrap()
            else {
                panic!("create results")
            };
            assert!(results
                .iter()
                .all(|r| r.transfer_status() == Ok(CreateTransferResult::Created)));
        }
        let count = (id_next - 1) as u64;
        wait_for_eviction(engine, count);
        let started = Instant::now();
        assert!(transfers(handle.submit_wait(query_nowhere()).unwrap()).is_empty());
        let scan = started.elapsed();
        if scan >= SCAN_SLOW_ENOUGH || count >= HISTORY_TRANSFERS_MAX {
            return (count, scan);
        }
    }
}

/// Wait until no more than one chunk of the history is resident: the rest lives only
/// in RocksDB. A write now and then makes the core checkpoint and evict.
fn wait_for_eviction(engine: &Engine, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.transfers_resident() > 2 * 16384 {
        assert!(
            Instant::now() < deadline,
            "{} of {count} transfers still resident",
            engine.transfers_resident()
        );
        engine
            .handle()
            .submit_wait(Request::LookupAccounts(vec![1]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the reading client shows the writing one.
#[derive(Default)]
struct Reads {
    stop: AtomicBool,
    /// Set while an expensive read waits for its answer.
    scanning: AtomicBool,
    slowest_pair_ns: AtomicU64,
}

/// Expensive range reads in a loop until `stop`, each answer checked; returns how many ran.
fn query_loop(handle: &EngineHandle, reads: &Reads) -> u32 {
    let mut answered = 0;
    while !reads.stop.load(Ordering::Acquire) {
        let started = Instant::now();
        reads.scanning.store(true, Ordering::Release);
        assert!(transfers(handle.submit_wait(query_nowhere()).unwrap()).is_empty());
        assert!(transfers(handle.submit_wait(account_nowhere()).unwrap()).is_empty());
        reads.scanning.store(false, Ordering::Release);
        let pair_ns = started.elapsed().as_nanos() as u64;
        reads.slowest_pair_ns.fetch_max(pair_ns, Ordering::Relaxed);
        // Reads that find something still find the right transfers, old and new.
        let oldest = handle
            .submit_wait(Request::QueryTransfers(QueryFilter {
                code: 1,
                limit: 3,
                ..QueryFilter::default()
            }))
            .unwrap();
        assert_eq!(transfers(oldest), [1, 2, 3]);
        let debits_of_1 = handle
            .submit_wait(Request::GetAccountTransfers(AccountFilter {
                account_id: 1,
                limit: 3,
                flags: AccountFilterFlags::DEBITS,
                ..AccountFilter::default()
            }))
            .unwrap();
        assert_eq!(transfers(debits_of_1), [8, 16, 24]);
        answered += 4;
    }
    answered
}

/// Single-transfer writes, one at a time, each one's latency from submit to reply, and
/// how many of them were submitted while an expensive read was running.
fn timed_writes(handle: &EngineHandle, id_first: u128, reads: &Reads) -> (Vec<Duration>, u32) {
    let mut during_scans = 0;
    let latencies = (0..u128::from(WRITES))
        .map(|index| {
            during_scans += u32::from(reads.scanning.load(Ordering::Acquire));
            let started = Instant::now();
            let reply = handle
                .submit_wait(Request::CreateTransfers(vec![history_transfer(
                    id_first + index,
                )]))
                .unwrap();
            let latency = started.elapsed();
            let Reply::Created(results) = reply else {
                panic!("create results")
            };
            assert_eq!(
                results[0].transfer_status(),
                Ok(CreateTransferResult::Created)
            );
            latency
        })
        .collect();
    (latencies, during_scans)
}

#[test]
fn writes_stay_fast_while_range_reads_scan_the_whole_history() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    // Checkpoint after every batch and keep nothing checkpointed in memory but the chunk
    // being filled: the history lives in RocksDB.
    config.checkpoint_batches = 1;
    let engine = Engine::open(config).unwrap();
    let accounts = (1..=ACCOUNTS)
        .map(|id| account(id, AccountFlags::default()))
        .collect();
    engine
        .handle()
        .submit_wait(Request::CreateAccounts(accounts))
        .unwrap();
    let (history, scan) = build_history(&engine);
    eprintln!("history: {history} transfers; a query matching nothing takes {scan:?}");

    let reads = Reads::default();
    let (mut latencies, during_scans, queries) = std::thread::scope(|scope| {
        let querier = scope.spawn(|| query_loop(&engine.handle(), &reads));
        // Let the first scan start, so that the writes meet it.
        std::thread::sleep(Duration::from_millis(20));
        let (latencies, during_scans) =
            timed_writes(&engine.handle(), u128::from(history) + 1, &reads);
        reads.stop.store(true, Ordering::Release);
        (latencies, during_scans, querier.join().unwrap())
    });
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    let slowest_pair = Duration::from_nanos(reads.slowest_pair_ns.load(Ordering::Relaxed));
    eprintln!(
        "{WRITES} writes ({during_scans} submitted during a scan) next to {queries} range \
         reads (slowest scanning pair {slowest_pair:?}): write latency p50 {:?}, p99 {p99:?}, \
         max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert!(
        during_scans >= WRITES * 9 / 10,
        "only {during_scans} of {WRITES} writes met a scan"
    );
    assert!(
        p99 < WRITE_LATENCY_P99_MAX,
        "write latency p99 {p99:?} next to range reads scanning {history} transfers \
         ({scan:?} each)"
    );

    // Everything written is there, as the last write on the newest side shows.
    let newest = engine
        .handle()
        .submit_wait(Request::QueryTransfers(QueryFilter {
            limit: 1,
            flags: QueryFilterFlags::REVERSED,
            ..QueryFilter::default()
        }))
        .unwrap();
    assert_eq!(
        transfers(newest),
        [u128::from(history) + u128::from(WRITES)]
    );
    engine.shutdown().unwrap();
}

fn slow_clock() -> u64 {
    // Every core batch takes a while, so range reads stay in flight.
    std::thread::sleep(Duration::from_millis(30));
    common::START
}

/// Accounts and `count` history transfers, in requests of up to 8189.
fn small_history(handle: &EngineHandle, count: u128) {
    let accounts = (1..=ACCOUNTS)
        .map(|id| account(id, AccountFlags::default()))
        .collect();
    handle
        .submit_wait(Request::CreateAccounts(accounts))
        .unwrap();
    let ids: Vec<u128> = (1..=count).collect();
    for chunk in ids.chunks(BATCH_EVENTS_MAX as usize) {
        let events = chunk.iter().map(|id| history_transfer(*id)).collect();
        handle
            .submit_wait(Request::CreateTransfers(events))
            .unwrap();
    }
}

#[test]
fn range_reads_past_queue_queries_max_are_answered_busy_and_writes_go_on() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.clock = slow_clock;
    config.queue_queries_max = 2;
    let engine = Engine::open(config).unwrap();
    let handle = engine.handle();
    small_history(&handle, 100);
    let reads: Vec<_> = (0..12)
        .map(|_| handle.submit(account_nowhere()).unwrap())
        .collect();
    let write = handle
        .submit(Request::CreateTransfers(vec![history_transfer(101)]))
        .unwrap();
    let (mut answered, mut busy) = (0, 0);
    for read in reads {
        match read.wait() {
            Ok(reply) => {
                assert!(transfers(reply).is_empty());
                answered += 1;
            }
            Err(EngineError::QueriesBusy {
                queue_queries_max: 2,
            }) => busy += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    // The core takes 30 ms a batch: the read stage sees all twelve before the first two
    // are answered.
    assert!(
        answered >= 2 && busy >= 8,
        "answered {answered}, busy {busy}"
    );
    let Reply::Created(results) = write.wait().unwrap() else {
        panic!("create results")
    };
    assert_eq!(
        results[0].transfer_status(),
        Ok(CreateTransferResult::Created)
    );
    engine.shutdown().unwrap();
}

#[test]
fn range_reads_queued_before_a_shutdown_are_answered() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let handle = engine.handle();
    small_history(&handle, 40_000);
    let oldest = || {
        Request::QueryTransfers(QueryFilter {
            limit: 3,
            ..QueryFilter::default()
        })
    };
    let mut pending = Vec::new();
    for index in 0..20 {
        pending.push((true, handle.submit(oldest()).unwrap()));
        let write = vec![history_transfer(40_001 + index)];
        pending.push((
            false,
            handle.submit(Request::CreateTransfers(write)).unwrap(),
        ));
    }
    engine.shutdown().unwrap();
    for (read, reply) in pending {
        match reply.wait().unwrap() {
            Reply::Transfers(found) => {
                assert!(read);
                let ids: Vec<u128> = found.iter().map(|t| t.id).collect();
                assert_eq!(ids, [1, 2, 3]);
            }
            Reply::Created(results) => {
                assert!(!read);
                assert_eq!(
                    results[0].transfer_status(),
                    Ok(CreateTransferResult::Created)
                );
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
}
