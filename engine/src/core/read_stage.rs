//! The read stage: reads from RocksDB what a request needs of the transfers that left
//! memory, before the core applies it, so that the core itself stays off the disk.
//!
//! ```text
//! submitters ──queue──▶ read stage thread ──queue──▶ core
//!                         │ reads the core's eviction watermark W (an atomic), then
//!                         │ RocksDB: ids and pending ids named by create_transfers and
//!                         │ lookup_transfers, timestamps of imported accounts
//!                         └─ range reads: also a job for the query stage, which scans
//!                            their store part (see `query_stage`)
//! ```
//!
//! Everything this thread reads is a batch of point reads, bounded by the events of one
//! request, so the writes queued behind a request never wait long. Async creates of at
//! most `SUBMITTER_READS_EVENTS_MAX` events call [`read_for_request`] on their own task
//! and go straight to the core's inbox instead (see `submit`). Range reads
//! (`get_account_transfers`, `get_account_balances`, `query_transfers`) may scan years
//! of history: the query stage scans them, and when it has `queue_queries_max` of them
//! in flight the next one is answered `busy` here at once, never waited for.
//!
//! The core only evicts transfers a committed checkpoint holds, and publishes W and its
//! eviction generation (bumped whenever anything leaves memory, retained pending
//! transfers included) after it did, so a read that starts after loading them sees every
//! transfer evicted so far, with its final status. If anything left memory between the
//! read and the apply (the generation moved on), the core repeats the read itself,
//! synchronously: rare, since evictions happen once per checkpoint, and cheap, since
//! these are point reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam::channel::Receiver;
use protocol::{AccountBalance, AccountFlags, Transfer};

use super::core_thread::Submission;
use super::inbox::InboxSender;
use super::query_stage::{self, QueryAdmission};
use super::record::Write;
use super::request::{ReplyTo, Request};
use super::submit::Admitted;
use super::{store_error, EngineError};
use crate::ledger::OldTransfers;
use crate::store::{Store, StoreError};

/// What was read for one request, at eviction watermark `through` of eviction
/// `generation`: valid while the ledger's generation is still that one. (A range read's
/// store part, read by the query stage, depends on `through` alone; see `query_stage`.)
#[derive(Debug)]
pub(crate) struct StoreReads {
    pub through: u64,
    pub generation: u64,
    pub data: StoreReadData,
}

#[derive(Debug)]
pub(crate) enum StoreReadData {
    /// Evicted transfers named by id (and evicted transfers' timestamps).
    Transfers(OldTransfers),
    /// The store's part (at or before `through`) of a range read.
    RangeTransfers(Vec<Transfer>),
    RangeBalances(Vec<AccountBalance>),
    /// The request reads nothing that can be evicted.
    Nothing,
}

impl StoreReadData {
    /// Records of a range read's store part (0 for the other kinds).
    pub fn len(&self) -> usize {
        match self {
            StoreReadData::RangeTransfers(transfers) => transfers.len(),
            StoreReadData::RangeBalances(balances) => balances.len(),
            StoreReadData::Transfers(_) | StoreReadData::Nothing => 0,
        }
    }
}

/// The core's eviction watermark W and generation, as `(W, generation)`. The generation is
/// loaded first: the core publishes W before it, so W is at least that generation's.
pub(crate) fn load_watermark(
    evicted_through: &AtomicU64,
    eviction_generation: &AtomicU64,
) -> (u64, u64) {
    let generation = eviction_generation.load(Ordering::Acquire);
    (evicted_through.load(Ordering::Acquire), generation)
}

/// A failed read of evicted transfers, as its submitter hears it (nothing was applied).
pub(crate) fn read_failed(error: StoreError) -> EngineError {
    tracing::error!(%error, "reading evicted transfers failed");
    store_error(error)
}

/// Read what `request` needs of the transfers evicted through `through`.
pub(crate) fn read_for_request(
    store: &Store,
    request: &Request,
    through: u64,
    generation: u64,
) -> Result<StoreReads, StoreError> {
    let data = match request {
        Request::CreateAccounts(accounts) => StoreReadData::Transfers(read_for_write(
            store,
            Write::CreateAccounts(accounts),
            through,
        )?),
        Request::CreateTransfers(transfers) => StoreReadData::Transfers(read_for_write(
            store,
            Write::CreateTransfers(transfers),
            through,
        )?),
        Request::LookupTransfers(ids) => {
            let mut old = OldTransfers::new(through);
            if through != 0 {
                store.read_transfers_by_id(ids.clone(), &mut old)?;
            }
            StoreReadData::Transfers(old)
        }
        Request::GetAccountTransfers(filter) => {
            StoreReadData::RangeTransfers(store.read_account_transfers(filter, through)?)
        }
        Request::GetAccountBalances(filter) => {
            StoreReadData::RangeBalances(store.read_account_balances(filter, through)?)
        }
        Request::QueryTransfers(filter) => {
            StoreReadData::RangeTransfers(store.read_query_transfers(filter, through)?)
        }
        Request::LookupAccounts(_) | Request::QueryAccounts(_) => StoreReadData::Nothing,
    };
    Ok(StoreReads {
        through,
        generation,
        data,
    })
}

/// The evicted transfers a state-changing input may name: ids and pending ids of
/// transfers, and the timestamps imported accounts want. Used by the read stage and
/// by WAL replay alike.
pub(crate) fn read_for_write(
    store: &Store,
    write: Write<'_>,
    through: u64,
) -> Result<OldTransfers, StoreError> {
    let mut old = OldTransfers::new(through);
    match write {
        Write::CreateTransfers(transfers) => {
            // Failed ids leave memory once checkpointed, independently of transfers.
            if store.failed_ids_stored() {
                let ids = transfers.iter().map(|transfer| transfer.id).collect();
                store.read_failed_ids(ids, &mut old)?;
            }
            if through == 0 {
                return Ok(old);
            }
            let ids = transfers
                .iter()
                .flat_map(|transfer| [transfer.id, transfer.pending_id])
                .filter(|id| *id != 0)
                .collect();
            store.read_transfers_by_id(ids, &mut old)?;
        }
        Write::CreateAccounts(_) if through == 0 => {}
        Write::CreateAccounts(accounts) => {
            let timestamps: Vec<u64> = accounts
                .iter()
                .filter(|account| account.flags.contains(AccountFlags::IMPORTED))
                .map(|account| account.timestamp)
                .filter(|timestamp| (1..=through).contains(timestamp))
                .collect();
            if !timestamps.is_empty() {
                store.read_transfer_timestamps(timestamps, &mut old)?;
            }
        }
        Write::Expire => {}
    }
    Ok(old)
}

/// The read stage thread: forwards every submission in order, with what it read; range
/// reads go to the query stage too, which reads their store part off this path.
pub(crate) fn run(
    store: Arc<Store>,
    evicted_through: Arc<AtomicU64>,
    eviction_generation: Arc<AtomicU64>,
    input: Receiver<Admitted>,
    mut queries: QueryAdmission,
    output: InboxSender,
) {
    // A submission keeps its queue slot until the core takes it (see `submit`).
    while let Ok(Admitted { submission, slot }) = input.recv() {
        let forward = match submission {
            Submission::Request {
                request,
                reply: ReplyTo::Caller(reply),
                ..
            } => {
                let (through, generation) = load_watermark(&evicted_through, &eviction_generation);
                if query_stage::is_range_read(&request) {
                    match queries.admit(request, reply, through) {
                        Some(forward) => forward,
                        None => continue,
                    }
                } else {
                    match read_for_request(&store, &request, through, generation) {
                        Ok(store_reads) => Submission::Request {
                            request,
                            reply: ReplyTo::Caller(reply),
                            store_reads: Some(Box::new(store_reads)),
                        },
                        Err(error) => {
                            let _ = reply.send(Err(read_failed(error)));
                            continue;
                        }
                    }
                }
            }
            Submission::Request { .. } => unreachable!("submitters send their own replies"),
            Submission::Shutdown => {
                let _ = output.send(Admitted {
                    submission: Submission::Shutdown,
                    slot,
                });
                break;
            }
        };
        let forward = Admitted {
            submission: forward,
            slot,
        };
        if let Err(unsent) = output.send(forward) {
            if let Submission::Request { reply, .. } = unsent.into_inner().submission {
                refuse(reply, EngineError::Stopped);
            }
            break;
        }
    }
    // Requests that slipped in behind the shutdown are refused, as the core does.
    while let Ok(Admitted { submission, .. }) = input.try_recv() {
        if let Submission::Request { reply, .. } = submission {
            refuse(reply, EngineError::ShuttingDown);
        }
    }
}

/// Answer a request the core will never see. A range read's submitter waits in the query
/// stage, which answers it `Stopped` once the core is gone.
fn refuse(reply: ReplyTo, error: EngineError) {
    if let ReplyTo::Caller(reply) = reply {
        let _ = reply.send(Err(error));
    }
}
