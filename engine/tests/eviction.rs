//! Transfers leave memory once a checkpoint holds them, and nothing a client sees may
//! change because of it: an engine that evicts everything it can answers every create,
//! lookup and read exactly like a ledger that keeps everything, and recovers to the same
//! state.

mod common;

use common::{apply_reference, config, Workload, START};
use protocol::{
    AccountFilter, AccountFilterFlags, AccountFlags, CreateTransferResult, QueryFilter,
    QueryFilterFlags, Transfer, TransferFlags,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use settled_engine::core::{
    reads_on_submitting_task, recover_ledger, Engine, EngineConfig, EngineError, EngineHandle,
    OnReply, PendingReply, Reply, Request,
};
use settled_engine::ledger::Ledger;
use tempfile::TempDir;

const ACCOUNTS: u128 = 40;

/// Evict everything a checkpoint holds (but the chunk being filled), checkpoint every
/// other batch, and hold the core at the smallest uncheckpointed limit, so that eviction, the
/// read-stage race and the throttle all happen within a few thousand transfers.
fn evicting_config(dir: &TempDir) -> EngineConfig {
    let mut config = config(dir.path());
    config.checkpoint_batches = 2;
    config.transfers_resident_max = 0;
    config.transfers_uncheckpointed_max = u64::from(config.batch_events_max);
    config
}

/// A read whose answer depends on old transfers. With `small`, only lookups of at most 15
/// ids (and one unknown): requests that all take one path to the core (see `Submitter`).
fn random_read(rng: &mut StdRng, sent: &[u128], timestamp_last: u64, small: bool) -> Request {
    let time = |rng: &mut StdRng| START + rng.random_range(0..=timestamp_last - START + 10);
    let kind = if small { 0 } else { rng.random_range(0..4) };
    match kind {
        0 => Request::LookupTransfers(
            (0..rng.random_range(1..if small { 16 } else { 50 }))
                .map(|_| sent[rng.random_range(0..sent.len())])
                .chain([u128::MAX - 1])
                .collect(),
        ),
        kind @ (1 | 2) => {
            let mut flags = [
                AccountFilterFlags::DEBITS,
                AccountFilterFlags::CREDITS,
                AccountFilterFlags(AccountFilterFlags::DEBITS.0 | AccountFilterFlags::CREDITS.0),
            ][rng.random_range(0..3)];
            if rng.random_bool(0.5) {
                flags = AccountFilterFlags(flags.0 | AccountFilterFlags::REVERSED.0);
            }
            let (min, max) = if rng.random_bool(0.5) {
                (0, 0)
            } else {
                let (a, b) = (time(rng), time(rng));
                (a.min(b), a.max(b))
            };
            let filter = AccountFilter {
                // Every fifth account keeps balance history.
                account_id: if kind == 2 {
                    5 * rng.random_range(1..=ACCOUNTS / 5)
                } else {
                    rng.random_range(1..=ACCOUNTS)
                },
                timestamp_min: min,
                timestamp_max: max,
                limit: rng.random_range(1..3000),
                flags,
                ..AccountFilter::default()
            };
            if kind == 1 {
                Request::GetAccountTransfers(filter)
            } else {
                Request::GetAccountBalances(filter)
            }
        }
        _ => {
            let (a, b) = (time(rng), time(rng));
            Request::QueryTransfers(QueryFilter {
                timestamp_min: a.min(b),
                timestamp_max: if rng.random_bool(0.2) { 0 } else { a.max(b) },
                limit: rng.random_range(1..5000),
                code: if rng.random_bool(0.2) { 1 } else { 0 },
                flags: if rng.random_bool(0.5) {
                    QueryFilterFlags::REVERSED
                } else {
                    QueryFilterFlags::default()
                },
                ..QueryFilter::default()
            })
        }
    }
}

/// An imported request built against the reference's state: transfers stamped just after
/// the newest transfer (at or below the clock when failed events used timestamps up), or
/// accounts stamped at an old transfer's timestamp (refused) or an unused one.
fn random_import(rng: &mut StdRng, reference: &Ledger, id_next: &mut u128, small: bool) -> Request {
    let newest = reference.query_transfers(&QueryFilter {
        limit: 1,
        flags: QueryFilterFlags::REVERSED,
        ..QueryFilter::default()
    });
    let transfer_last = newest.first().map_or(START, |t| t.timestamp);
    if rng.random_bool(0.5) {
        let count = rng.random_range(1..if small { 17 } else { 40 });
        let events = (0..count)
            .map(|index| {
                *id_next += 1;
                let debit = rng.random_range(1..=ACCOUNTS);
                let credit = debit % ACCOUNTS + 1;
                let mut event = common::transfer(*id_next, debit, credit, 1);
                event.flags = TransferFlags::IMPORTED;
                event.timestamp = transfer_last + 1 + index;
                event
            })
            .collect();
        return Request::CreateTransfers(events);
    }
    let old = reference.query_transfers(&QueryFilter {
        timestamp_min: START + rng.random_range(0..=transfer_last - START),
        limit: 1,
        ..QueryFilter::default()
    });
    *id_next += 1;
    let mut account = common::account(*id_next, AccountFlags::IMPORTED);
    account.timestamp = match old.first() {
        Some(transfer) if rng.random_bool(0.5) => transfer.timestamp,
        _ => reference.timestamp_last() + 1,
    };
    Request::CreateAccounts(vec![account])
}

/// What the reference ledger (which never evicts) answers.
fn reference_reply(ledger: &mut Ledger, request: &Request) -> Reply {
    match request {
        Request::CreateAccounts(accounts) => {
            Reply::Created(ledger.create_accounts(START, accounts))
        }
        Request::CreateTransfers(transfers) => {
            Reply::Created(ledger.create_transfers(START, transfers))
        }
        Request::LookupAccounts(ids) => Reply::Accounts(ledger.lookup_accounts(ids)),
        Request::LookupTransfers(ids) => Reply::Transfers(ledger.lookup_transfers(ids)),
        Request::GetAccountTransfers(filter) => {
            Reply::Transfers(ledger.get_account_transfers(filter))
        }
        Request::GetAccountBalances(filter) => Reply::Balances(ledger.get_account_balances(filter)),
        Request::QueryAccounts(filter) => Reply::Accounts(ledger.query_accounts(filter)),
        Request::QueryTransfers(filter) => Reply::Transfers(ledger.query_transfers(filter)),
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Created(results) => format!("{} results", results.len()),
        Reply::Accounts(accounts) => format!("{} accounts", accounts.len()),
        Reply::Transfers(transfers) => {
            let ids: Vec<u128> = transfers.iter().map(|t: &Transfer| t.id).take(5).collect();
            format!("{} transfers, first ids {ids:?}", transfers.len())
        }
        Reply::Balances(balances) => format!("{} balances", balances.len()),
    }
}

/// How requests reach the engine: `submit` from a thread (through the read stage), or
/// `submit_async` (the server's way), where small creates do their own point reads and go
/// straight to the core (`reads_on_submitting_task`). Requests on the two paths may pass
/// each other (the protocol promises no order between requests in flight together)
/// while the reference applies them in the order sent, so the async run waits for the
/// reply of a request on the read stage's path (the first, which creates the accounts,
/// and lookups of transfers) before it sends anything else.
enum Submitter {
    Thread,
    Async(tokio::runtime::Runtime),
}

enum Waiting {
    Pending(PendingReply),
    Callback(std::sync::mpsc::Receiver<Result<Reply, EngineError>>),
    Answered(Reply),
}

impl Submitter {
    fn submit(&self, handle: &EngineHandle, request: Request) -> Waiting {
        let runtime = match self {
            Submitter::Thread => return Waiting::Pending(handle.submit(request).unwrap()),
            Submitter::Async(runtime) => runtime,
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        let on_reply: OnReply = Box::new(move |result| {
            let _ = sender.send(result);
        });
        let read_stage = !reads_on_submitting_task(&request);
        let submitted = runtime.block_on(handle.submit_async(
            request,
            on_reply,
            std::time::Duration::from_secs(30),
            std::future::pending(),
        ));
        assert!(matches!(submitted, Ok(Ok(()))), "submit_async refused");
        if read_stage {
            return Waiting::Answered(receiver.recv().unwrap().unwrap());
        }
        Waiting::Callback(receiver)
    }
}

impl Waiting {
    fn wait(self) -> Reply {
        match self {
            Waiting::Pending(pending) => pending.wait().unwrap(),
            Waiting::Callback(receiver) => receiver.recv().unwrap().unwrap(),
            Waiting::Answered(reply) => reply,
        }
    }
}

#[test]
fn an_evicting_engine_answers_like_a_ledger_that_keeps_everything() {
    evicting_engine_matches_the_reference(
        Submitter::Thread,
        Workload::new(11, ACCOUNTS),
        240,
        30_000,
    );
}

/// The same through `submit_async` with small requests: their point reads of evicted ids
/// happen on the submitting task, not the read stage, and must see the same transfers.
#[test]
fn small_async_requests_read_what_left_memory_themselves() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    evicting_engine_matches_the_reference(
        Submitter::Async(runtime),
        Workload::new(13, ACCOUNTS).with_events_max(16),
        480,
        5_000,
    );
}

fn evicting_engine_matches_the_reference(
    submitter: Submitter,
    mut workload: Workload,
    rounds: u32,
    transfers_min: u64,
) {
    let dir = TempDir::new().unwrap();
    let config = evicting_config(&dir);
    let small = matches!(submitter, Submitter::Async(_));
    let mut rng = StdRng::seed_from_u64(12);
    let mut reference = Ledger::new();
    let mut resident_min = u64::MAX;
    let mut compared = 0u64;
    let mut import_id_next: u128 = 1 << 100;
    // Imported events refused and created.
    let mut imports = [0u64; 2];
    // Retries of transiently failed ids answered after a restart: the failed ids left
    // memory with their checkpoint and come back from the store.
    let mut already_failed_after_restart = 0u64;
    let mut engine = Engine::open(config.clone()).unwrap();
    for round in 0..rounds {
        // A few creates and reads in flight at once, so that they share core batches
        // and the read stage runs ahead of the core.
        let mut in_flight: Vec<(Request, Waiting)> = Vec::new();
        for _ in 0..4 {
            let request = if round > 0 && rng.random_bool(0.08) {
                random_import(&mut rng, &reference, &mut import_id_next, small)
            } else if round > 0 && rng.random_bool(0.4) {
                let sent: Vec<u128> = workload.sent_ids().collect();
                random_read(&mut rng, &sent, reference.timestamp_last(), small)
            } else {
                workload.next_request()
            };
            let waiting = submitter.submit(&engine.handle(), request.clone());
            in_flight.push((request, waiting));
        }
        for (request, waiting) in in_flight {
            let expected = reference_reply(&mut reference, &request);
            let imported = match &request {
                Request::CreateTransfers(events) => {
                    events[0].flags.contains(TransferFlags::IMPORTED)
                }
                Request::CreateAccounts(events) => {
                    round > 0 && events[0].flags.contains(AccountFlags::IMPORTED)
                }
                _ => false,
            };
            if let (Request::CreateTransfers(_), Reply::Created(results)) = (&request, &expected) {
                let already_failed = CreateTransferResult::IdAlreadyFailed;
                already_failed_after_restart += results
                    .iter()
                    .filter(|r| round >= 60 && r.transfer_status() == Ok(already_failed))
                    .count() as u64;
            }
            if let (true, Reply::Created(results)) = (imported, &expected) {
                for result in results {
                    imports[usize::from(result.status == 0)] += 1;
                }
            }
            let reply = waiting.wait();
            assert!(
                reply == expected,
                "round {round}: {:?} answered {} where the reference has {}",
                request.operation(),
                describe(&reply),
                describe(&expected)
            );
            compared += 1;
        }
        if round > 120 {
            resident_min = resident_min.min(engine.transfers_resident());
        }
        // Restart now and then: recovery evicts too, and replays through the store.
        if round % 60 == 59 {
            engine.shutdown().unwrap();
            engine = Engine::open(config.clone()).unwrap();
        }
    }
    let transfers = reference.transfers_count();
    assert!(transfers > transfers_min, "only {transfers} transfers");
    assert!(
        resident_min < transfers / 2,
        "eviction never happened: {resident_min} of {transfers} resident"
    );
    assert!(compared > 400);
    assert!(
        already_failed_after_restart > 0,
        "no retry of a failed id after a restart"
    );
    assert!(
        imports[0] > 0 && imports[1] > 0,
        "imports refused/created: {imports:?}"
    );
    let report = engine.shutdown().unwrap();
    assert_eq!(report.state_hash, reference.state_hash());
    // More work, then a stop by drop: recovery from checkpoint + WAL agrees.
    let engine = Engine::open(config.clone()).unwrap();
    for _ in 0..20 {
        let request = workload.next_request();
        apply_reference(&mut reference, &request);
        engine.handle().submit_wait(request).unwrap();
    }
    drop(engine);
    let (recovered, _) = recover_ledger(&config).unwrap();
    assert_eq!(recovered.state_hash(), reference.state_hash());
}
