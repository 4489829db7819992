//! The query stage: the store's part of range reads (`get_account_transfers`,
//! `get_account_balances`, `query_transfers`) is read on a thread of its own, so that a
//! scan of years of checkpointed history never holds up the writes queued behind it.
//!
//! ```text
//! submitters ─queue─▶ read stage ─────────── queue (in order) ──────────▶ core
//!                       │ a range read: a job (full: busy at once)          │ memory's part, at the
//!                       ▼                                                   │ core's watermark W,
//!                     query stage ◀── parts (once durable, in order) ───────┘ parked like any reply
//!                       │ scans RocksDB through W, joins the two parts
//!                       └──▶ the submitter's reply
//! ```
//!
//! A range read splits at the eviction watermark W: the store answers for the transfers
//! at or before W, memory for those after it. The read stage sends each range read twice:
//! as a job to this stage, and, in its place in the order of requests, to the core. The
//! core answers memory's part right there (it never touches the disk for a range read),
//! with the watermark W it read at, and parks that answer until its batch is durable like
//! any other. This stage scans the store's part and joins the two: the reply is exactly
//! the one the core would have given had it read the store itself at that point, so a
//! range read sees every write submitted before it and none submitted after it, as every
//! other request does.
//!
//! The store's part may be read before the core's: the stage starts the scan at the
//! watermark the read stage saw, which is at or before W (the core's watermark only grows,
//! and the read stage loaded it before handing the request on). Transfer records and
//! balance snapshots never change once a checkpoint holds them (the status of a pending
//! transfer lives apart from its record), so a scan through an older watermark stays
//! valid; if W moved past it, the stage reads the gap and joins it in (`extend`).
//!
//! Bounds: at most `queue_queries_max` range reads are between the read stage and their
//! reply (jobs queued, scanned and waiting for the core, or parts waiting here); one
//! more is answered `busy` by the read stage, which never waits for this stage. The core
//! never waits for it either: the parts channel holds `queue_queries_max`, so it is never
//! full. One scan is bounded by the filter's time range and limit only; a filter that
//! matches nothing walks every stored row in its range (about 0.3 µs a transfer for
//! `query_transfers`, 5 µs for an account's, see docs/PERFORMANCE.md) on this thread,
//! holding up the range reads behind it, never a write.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam::channel::{Receiver, Sender, TrySendError};
use protocol::{AccountFilter, AccountFilterFlags, QueryFilter, QueryFilterFlags};

use super::core_thread::Submission;
use super::read_stage::{read_for_request, StoreReadData, StoreReads};
use super::request::{Reply, ReplySender, ReplyTo, Request};
use super::EngineError;
use crate::ledger::{join_split_read, QUERY_LIMIT_MAX};
use crate::store::{Store, StoreError};

/// Whether a request is a range read, whose store part this stage reads.
pub(crate) fn is_range_read(request: &Request) -> bool {
    matches!(
        request,
        Request::GetAccountTransfers(_)
            | Request::GetAccountBalances(_)
            | Request::QueryTransfers(_)
    )
}

/// A range read for this stage, from the read stage.
pub(crate) struct QueryJob {
    /// Numbers range reads in the order the read stage saw them (and the core applies them).
    id: u64,
    request: Request,
    reply: ReplySender,
    /// The watermark the read stage loaded before it handed the request to the core: at or
    /// before the one the core will read memory's part at.
    through_seen: u64,
}

/// Memory's part of range read `id`: the transfers (or balances) after `through`, as the
/// core answered them once its batch was durable; or why it did not.
pub(crate) struct RecentPart {
    pub id: u64,
    pub through: u64,
    pub result: Result<Reply, EngineError>,
}

/// The core's hand-off of memory's part. Only the core holds the parts channel's sender,
/// so the stage learns that the core is gone when the channel disconnects.
pub(crate) fn send_part(parts: &Sender<RecentPart>, part: RecentPart) {
    match parts.try_send(part) {
        // Gone only if this stage stopped; the submitter then hears `Stopped`.
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(_)) => {
            panic!("more range reads in flight than the parts channel holds")
        }
    }
}

/// The read stage's side of this stage: admits range reads up to `queue_queries_max`.
pub(crate) struct QueryAdmission {
    jobs: Sender<QueryJob>,
    in_flight: Arc<AtomicU32>,
    queue_queries_max: u32,
    id_next: u64,
}

/// The channels of the query stage: the read stage's side, the stage itself, and the
/// core's sender of memory's parts.
pub(crate) fn channels(queue_queries_max: u32) -> (QueryAdmission, QueryStage, Sender<RecentPart>) {
    let capacity = queue_queries_max as usize;
    let (jobs_sender, jobs) = crossbeam::channel::bounded(capacity);
    let (parts_sender, parts) = crossbeam::channel::bounded(capacity);
    let in_flight = Arc::new(AtomicU32::new(0));
    let admission = QueryAdmission {
        jobs: jobs_sender,
        in_flight: in_flight.clone(),
        queue_queries_max,
        id_next: 0,
    };
    let stage = QueryStage {
        jobs,
        parts,
        in_flight,
        scanned: VecDeque::new(),
    };
    (admission, stage, parts_sender)
}

impl QueryAdmission {
    /// Hand range read `request` to the query stage and return what goes to the core in
    /// its place; `None` when it was answered at once (`busy`: too many range reads in
    /// flight). `through_seen` is the watermark the read stage loaded.
    pub fn admit(
        &mut self,
        request: Request,
        reply: ReplySender,
        through_seen: u64,
    ) -> Option<Submission> {
        debug_assert!(is_range_read(&request));
        let max = self.queue_queries_max;
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < max).then_some(count + 1)
            })
            .is_ok();
        if !admitted {
            let _ = reply.send(Err(EngineError::QueriesBusy {
                queue_queries_max: max,
            }));
            return None;
        }
        let id = self.id_next;
        self.id_next += 1;
        let job = QueryJob {
            id,
            request: request.clone(),
            reply,
            through_seen,
        };
        // Room by construction: each job is counted in flight until it is answered.
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => panic!("query jobs past queue_queries_max"),
            Err(TrySendError::Disconnected(job)) => {
                let _ = job.reply.send(Err(EngineError::Stopped));
                return None;
            }
        }
        Some(Submission::Request {
            request,
            // The core notes its watermark here when it reads memory's part.
            reply: ReplyTo::QueryStage { id, through: 0 },
            store_reads: None,
        })
    }
}

/// A job whose store part is read (or failed), waiting for memory's part.
struct Scanned {
    job: QueryJob,
    store_part: Result<StoreReads, StoreError>,
}

/// The query stage thread's state.
pub(crate) struct QueryStage {
    jobs: Receiver<QueryJob>,
    parts: Receiver<RecentPart>,
    in_flight: Arc<AtomicU32>,
    /// Jobs scanned ahead of memory's part, in order.
    scanned: VecDeque<Scanned>,
}

impl QueryStage {
    /// The thread: scan jobs as they come, answer each once the core's part arrives. Ends
    /// when the read stage is gone and every job it sent is answered, or when the core is
    /// gone (nothing more will come back).
    pub fn run(mut self, store: Arc<Store>) {
        let no_more_jobs = crossbeam::channel::never();
        let mut jobs_open = true;
        while jobs_open || !self.scanned.is_empty() {
            let jobs = if jobs_open { &self.jobs } else { &no_more_jobs };
            crossbeam::select! {
                recv(self.parts) -> part => match part {
                    Ok(part) => self.answer(&store, part),
                    Err(_) => break,
                },
                recv(jobs) -> job => match job {
                    Ok(job) => {
                        let store_part = read(&store, &job.request, job.through_seen);
                        self.scanned.push_back(Scanned { job, store_part });
                    }
                    Err(_) => jobs_open = false,
                },
            }
        }
        // The core is gone: whoever still waits hears `Stopped` as their replies drop.
        for scanned in self.scanned.drain(..) {
            let _ = scanned.job.reply.send(Err(EngineError::Stopped));
        }
    }

    /// Join memory's part of the oldest range read with the store's, and answer it.
    fn answer(&mut self, store: &Store, part: RecentPart) {
        let Scanned { job, store_part } = match self.scanned.pop_front() {
            Some(scanned) => scanned,
            // The core was quicker than this stage's scans: the job is next in the queue
            // (the read stage queues it before it hands the request to the core).
            None => {
                let job = self
                    .jobs
                    .recv()
                    .expect("a range read's job is queued before the core sees the read");
                let store_part = read(store, &job.request, part.through);
                Scanned { job, store_part }
            }
        };
        assert_eq!(job.id, part.id, "memory's parts came back out of order");
        assert!(
            job.through_seen <= part.through,
            "the core read at watermark {} before the {} the read stage saw",
            part.through,
            job.through_seen
        );
        let result = match (part.result, store_part) {
            (Err(error), _) => Err(error),
            (Ok(recent), Ok(store_part)) => extend(store, &job.request, store_part, part.through)
                .map(|store_part| join(&job.request, store_part, recent))
                .map_err(store_error),
            (Ok(_), Err(error)) => Err(store_error(error)),
        };
        let _ = job.reply.send(result);
        let before = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "a range read answered twice");
    }
}

fn store_error(error: StoreError) -> EngineError {
    tracing::error!(%error, "reading a range of checkpointed transfers failed");
    EngineError::Store(Arc::new(error))
}

/// The store part of a range read through `through`, from scratch.
fn read(store: &Store, request: &Request, through: u64) -> Result<StoreReads, StoreError> {
    // A range read's validity depends on the watermark alone: the generation is unused.
    let reads = read_for_request(store, request, through, 0)?;
    check_store_part(request, &reads);
    Ok(reads)
}

/// `reads`, the store part of `request` through `reads.through`, extended to `through`:
/// the gap `(reads.through, through]` is read with the filter narrowed to it and joined in
/// the filter's order, within its limit. The result equals a read through `through` from
/// scratch, because what the store holds at or before `reads.through` never changes.
fn extend(
    store: &Store,
    request: &Request,
    reads: StoreReads,
    through: u64,
) -> Result<StoreReads, StoreError> {
    assert!(
        reads.through <= through,
        "a range read through {} cannot shrink to {through}",
        reads.through
    );
    if reads.through == through {
        return Ok(reads);
    }
    let (reversed, limit) = order_and_limit(request);
    // Oldest first and already full: nothing in the gap can make the page.
    if !reversed && reads.data.len() >= limit.min(QUERY_LIMIT_MAX) as usize {
        return Ok(StoreReads { through, ..reads });
    }
    let after = reads.through;
    let gap = match request {
        Request::GetAccountTransfers(filter) => {
            Request::GetAccountTransfers(narrow_account_filter(filter, after))
        }
        Request::GetAccountBalances(filter) => {
            Request::GetAccountBalances(narrow_account_filter(filter, after))
        }
        Request::QueryTransfers(filter) => Request::QueryTransfers(QueryFilter {
            timestamp_min: filter.timestamp_min.max(after + 1),
            ..*filter
        }),
        other => unreachable!("{:?} is not a range read", other.operation()),
    };
    let gap = read_for_request(store, &gap, through, 0)?;
    let data = match (reads.data, gap.data) {
        (StoreReadData::RangeTransfers(old), StoreReadData::RangeTransfers(gap)) => {
            StoreReadData::RangeTransfers(join_split_read(old, gap, reversed, limit))
        }
        (StoreReadData::RangeBalances(old), StoreReadData::RangeBalances(gap)) => {
            StoreReadData::RangeBalances(join_split_read(old, gap, reversed, limit))
        }
        (old, gap) => unreachable!("joining {old:?} with {gap:?}"),
    };
    let reads = StoreReads {
        through,
        generation: reads.generation,
        data,
    };
    check_store_part(request, &reads);
    Ok(reads)
}

/// An account filter narrowed to the transfers after `after`.
fn narrow_account_filter(filter: &AccountFilter, after: u64) -> AccountFilter {
    AccountFilter {
        timestamp_min: filter.timestamp_min.max(after + 1),
        ..*filter
    }
}

/// Whether the range read is newest first, and its limit.
fn order_and_limit(request: &Request) -> (bool, u32) {
    match request {
        Request::GetAccountTransfers(filter) | Request::GetAccountBalances(filter) => (
            filter.flags.contains(AccountFilterFlags::REVERSED),
            filter.limit,
        ),
        Request::QueryTransfers(filter) => (
            filter.flags.contains(QueryFilterFlags::REVERSED),
            filter.limit,
        ),
        other => unreachable!("{:?} is not a range read", other.operation()),
    }
}

/// The reply: the store's part and memory's, joined as the ledger joins them.
fn join(request: &Request, store_part: StoreReads, recent: Reply) -> Reply {
    let (reversed, limit) = order_and_limit(request);
    let through = store_part.through;
    match (store_part.data, recent) {
        (StoreReadData::RangeTransfers(old), Reply::Transfers(recent)) => {
            assert!(
                recent.iter().all(|transfer| transfer.timestamp > through),
                "memory's part holds transfers at or before the watermark {through}"
            );
            Reply::Transfers(join_split_read(old, recent, reversed, limit))
        }
        (StoreReadData::RangeBalances(old), Reply::Balances(recent)) => {
            assert!(
                recent.iter().all(|balance| balance.timestamp > through),
                "memory's part holds balances at or before the watermark {through}"
            );
            Reply::Balances(join_split_read(old, recent, reversed, limit))
        }
        (data, recent) => panic!(
            "{:?}: a store part of {data:?} cannot join memory's {recent:?}",
            request.operation()
        ),
    }
}

/// What must hold of a store part before it is joined: it answers this kind of request,
/// within its limit, every record at or before its watermark, in the filter's order.
fn check_store_part(request: &Request, reads: &StoreReads) {
    let (reversed, limit) = order_and_limit(request);
    let timestamps: Vec<u64> = match (request, &reads.data) {
        (Request::GetAccountBalances(_), StoreReadData::RangeBalances(balances)) => {
            balances.iter().map(|balance| balance.timestamp).collect()
        }
        (
            Request::GetAccountTransfers(_) | Request::QueryTransfers(_),
            StoreReadData::RangeTransfers(transfers),
        ) => transfers
            .iter()
            .map(|transfer| transfer.timestamp)
            .collect(),
        (request, data) => panic!("{:?} read a store part of {data:?}", request.operation()),
    };
    assert!(timestamps.len() <= limit.min(QUERY_LIMIT_MAX) as usize);
    assert!(
        timestamps
            .iter()
            .all(|timestamp| *timestamp <= reads.through),
        "store part holds records after its watermark {}",
        reads.through
    );
    debug_assert!(
        timestamps
            .windows(2)
            .all(|pair| (pair[0] < pair[1]) != reversed),
        "store part out of the filter's order"
    );
}

#[cfg(test)]
mod tests {
    use protocol::{Account, AccountFlags, Transfer, NS_PER_SECOND};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tempfile::TempDir;

    use super::*;
    use crate::ledger::Ledger;
    use crate::store::{CheckpointMeta, StoreConfig};

    const START: u64 = 1_700_000_000 * NS_PER_SECOND;
    const ACCOUNTS: u128 = 6;

    /// A ledger of a few thousand transfers (user data and codes from a small set, so that
    /// filters match some), all of it checkpointed into a store.
    fn stored_history(dir: &TempDir) -> (Ledger, Store, Vec<u64>) {
        let mut rng = StdRng::seed_from_u64(7);
        let mut ledger = Ledger::new();
        let accounts: Vec<Account> = (1..=ACCOUNTS)
            .map(|id| Account {
                id,
                ledger: 1,
                code: 1,
                flags: AccountFlags::HISTORY,
                ..Account::default()
            })
            .collect();
        ledger.create_accounts(START, &accounts);
        let mut id_next = 1;
        for batch in 0..40 {
            let events: Vec<Transfer> = (0..100)
                .map(|_| {
                    id_next += 1;
                    let debit = rng.random_range(1..=ACCOUNTS);
                    Transfer {
                        id: id_next,
                        debit_account_id: debit,
                        credit_account_id: debit % ACCOUNTS + 1,
                        amount: rng.random_range(1..10),
                        user_data_64: rng.random_range(0..4),
                        ledger: 1,
                        code: rng.random_range(1..4),
                        ..Transfer::default()
                    }
                })
                .collect();
            ledger.create_transfers(START + batch * NS_PER_SECOND, &events);
        }
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let meta = CheckpointMeta {
            lsn: 1,
            timestamp_last: ledger.timestamp_last(),
        };
        store
            .write_checkpoint(meta, &ledger.take_changes())
            .unwrap();
        let timestamps = ledger
            .query_transfers(&QueryFilter {
                limit: QUERY_LIMIT_MAX,
                ..QueryFilter::default()
            })
            .iter()
            .map(|transfer| transfer.timestamp)
            .collect();
        (ledger, store, timestamps)
    }

    fn random_range_read(rng: &mut StdRng, timestamps: &[u64]) -> Request {
        let time = |rng: &mut StdRng| timestamps[rng.random_range(0..timestamps.len())];
        let (timestamp_min, timestamp_max) = match rng.random_range(0..3) {
            0 => (0, 0),
            1 => (time(rng), 0),
            _ => {
                let (a, b) = (time(rng), time(rng));
                (a.min(b), a.max(b))
            }
        };
        let limit = [1, 7, 100, 5000][rng.random_range(0..4)];
        let reversed = rng.random_bool(0.5);
        let user_data_64 = [0, 0, 2][rng.random_range(0..3)];
        let code = [0, 0, 1][rng.random_range(0..3)];
        if rng.random_bool(0.4) {
            let mut flags = AccountFilterFlags(
                [1, 2, 3][rng.random_range(0..3)] | if reversed { 4 } else { 0 },
            );
            flags.0 &= AccountFilterFlags::KNOWN_BITS;
            let filter = AccountFilter {
                account_id: rng.random_range(1..=ACCOUNTS),
                user_data_64,
                code,
                timestamp_min,
                timestamp_max,
                limit,
                flags,
                ..AccountFilter::default()
            };
            return if rng.random_bool(0.5) {
                Request::GetAccountTransfers(filter)
            } else {
                Request::GetAccountBalances(filter)
            };
        }
        Request::QueryTransfers(QueryFilter {
            user_data_64,
            code,
            timestamp_min,
            timestamp_max,
            limit,
            flags: if reversed {
                QueryFilterFlags::REVERSED
            } else {
                QueryFilterFlags::default()
            },
            ..QueryFilter::default()
        })
    }

    /// What a ledger that keeps everything answers.
    fn whole(ledger: &Ledger, request: &Request) -> Reply {
        match request {
            Request::GetAccountTransfers(filter) => {
                Reply::Transfers(ledger.get_account_transfers(filter))
            }
            Request::GetAccountBalances(filter) => {
                Reply::Balances(ledger.get_account_balances(filter))
            }
            Request::QueryTransfers(filter) => Reply::Transfers(ledger.query_transfers(filter)),
            other => unreachable!("{:?}", other.operation()),
        }
    }

    /// Memory's part after `through`, as the core reads it.
    fn recent(ledger: &Ledger, request: &Request, through: u64) -> Reply {
        match request {
            Request::GetAccountTransfers(filter) => {
                Reply::Transfers(ledger.get_account_transfers_with(filter, through, Vec::new()))
            }
            Request::GetAccountBalances(filter) => {
                Reply::Balances(ledger.get_account_balances_with(filter, through, Vec::new()))
            }
            Request::QueryTransfers(filter) => {
                Reply::Transfers(ledger.query_transfers_with(filter, through, Vec::new()))
            }
            other => unreachable!("{:?}", other.operation()),
        }
    }

    /// A store part read through an older watermark and extended to the core's, joined
    /// with memory's part after it, is the whole answer: for every split, filter, order
    /// and limit, the gap included.
    #[test]
    fn a_store_part_extended_to_the_core_watermark_joins_into_the_whole_answer() {
        let dir = TempDir::new().unwrap();
        let (ledger, store, timestamps) = stored_history(&dir);
        let mut rng = StdRng::seed_from_u64(8);
        let (mut gaps, mut nonempty) = (0, 0);
        for _ in 0..600 {
            let request = random_range_read(&mut rng, &timestamps);
            let (a, b) = (
                timestamps[rng.random_range(0..timestamps.len())],
                timestamps[rng.random_range(0..timestamps.len())],
            );
            let (seen, through) = if rng.random_bool(0.2) {
                (a, a)
            } else {
                (a.min(b), a.max(b))
            };
            let scanned = read(&store, &request, seen).unwrap();
            let extended = extend(&store, &request, scanned, through).unwrap();
            let from_scratch = read(&store, &request, through).unwrap();
            assert_eq!(
                format!("{:?}", extended.data),
                format!("{:?}", from_scratch.data),
                "{request:?} split at {seen} then {through}"
            );
            gaps += u32::from(seen < through);
            let expected = whole(&ledger, &request);
            nonempty += u32::from(expected != Reply::Transfers(Vec::new()));
            let joined = join(&request, extended, recent(&ledger, &request, through));
            assert_eq!(joined, expected, "{request:?} split at {through}");
        }
        assert!(
            gaps > 300 && nonempty > 300,
            "gaps {gaps}, nonempty {nonempty}"
        );
    }
}
