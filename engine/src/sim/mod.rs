//! Deterministic simulation of the engine's pipeline (issue 17, part 2). Not part of the
//! API: `engine/tests/simulation.rs` runs it (README "Simulation").
//!
//! One seed drives everything: the workload ([`workload`]), a simulated clock, the
//! core's [`Pipeline`] driven on one thread with the real ledger, record format, apply,
//! `execute_request` and read-stage reads, the real WAL over a simulated disk
//! ([`disk::SimDisk`]: torn writes, lost unsynced bytes, EIO, ENOSPC, delayed
//! completions, bit flips), the real RocksDB store in a temporary directory (a crash
//! either completed the checkpoint in flight, an atomic flush, or did not; rows damaged
//! at rest), crashes at random points and the real recovery (`core::recover`).
//!
//! After every batch: the engine's replies and state hash equal a reference ledger
//! that never evicts and applied the same records; every reply released is durable in
//! the WAL's own view. After every recovery: the recovered LSN covers every
//! acknowledged reply and is no later than what was appended; the recovered state
//! equals the reference's state after exactly that prefix of records (so nothing
//! unacknowledged appears out of order: a lost batch is lost whole, with every later
//! one); acknowledged transfers and accounts look up with their acknowledged
//! timestamps; per-ledger debits equal credits and no balance rule is broken; damaged
//! synced WAL bytes and damaged account rows are refused with an error, never accepted.
//!
//! Threads: the WAL's writer thread runs, but the simulation acts only when it is
//! stopped at the disk's gate, idle, or stopped for good (see `disk`), and recovery's
//! replay reader thread only reads ahead: the trace is a function of the seed.

mod disk;
mod workload;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::{AccountFlags, CreateAccountResult, CreateTransferResult, NS_PER_SECOND};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wal::{Wal, WalConfig, WalError};
use xxhash_rust::xxh3::Xxh3;

use crate::core::pipeline::{Pipeline, PipelineStart, Throttle, ThrottleInput};
use crate::core::record::{self, apply, RecordBuilder, Write};
use crate::core::{
    execute_request, read_for_request, recover, EngineConfig, EngineError, Reply, Request,
    StoreReadData, StoreReads, WalStorage,
};
use crate::ledger::{Changes, Ledger, OldTransfers};
use crate::store::{CheckpointMeta, Store, StoreConfig};

pub use disk::{GateOp, SimDisk, Stable, Verdict};
pub use workload::Workload;

/// Events of one core batch in the simulation: a few generated requests.
const BATCH_EVENTS_MAX: u32 = 32;
/// Transfers per ledger chunk, the unit of eviction: small, so that a few thousand
/// transfers are evicted and read back from the store many times.
const CHUNK_TRANSFERS: usize = 32;
/// The simulated clock starts here (ns since the epoch).
const CLOCK_START_NS: u64 = 1_700_000_000 * NS_PER_SECOND;
/// Records appended and not yet durable before the simulation stops delaying the disk.
const UNSYNCED_RECORDS_MAX: u64 = 8;
/// Transfers that may wait for a written checkpoint before the throttle holds.
const TRANSFERS_UNCHECKPOINTED_MAX: u64 = 40;
/// Checkpoints handed over and not yet written, at most: one being written, one waiting
/// (as the engine's `bounded(1)` queue plus the checkpointer).
const CHECKPOINTS_IN_FLIGHT_MAX: usize = 2;

#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    pub steps: u32,
    /// Per-mille chance that a step crashes the process.
    pub crash_per_mille: u32,
    /// Per-mille chance that a write or sync of the WAL fails (EIO or ENOSPC).
    pub disk_fault_per_mille: u32,
    /// Let bit flips hit the last whole record of the last WAL segment too. Off by
    /// default: recovery cannot tell that damage from a torn write and cuts it, so a
    /// synced, acknowledged record is dropped (a known limit of the WAL format,
    /// docs/INTERNALS.md "Simulation"); on, the simulation shows it.
    pub flip_last_record: bool,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            steps: 300,
            crash_per_mille: 15,
            disk_fault_per_mille: 8,
            flip_last_record: false,
        }
    }
}

/// What one seed did; `trace_hash` is the same for the same seed and options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimSummary {
    pub seed: u64,
    pub steps: u32,
    pub requests: u64,
    pub replies_acknowledged: u64,
    pub records_appended: u64,
    /// Records appended but lost at a crash (never acknowledged).
    pub records_lost: u64,
    pub crashes: u64,
    pub wal_faults: u64,
    pub torn_tails_cut: u64,
    pub wal_corruptions_refused: u64,
    pub store_corruptions_refused: u64,
    pub checkpoints_written: u64,
    /// Writes refused while checkpoints kept failing.
    pub writes_refused: u64,
    /// WAL truncations that failed (the checkpoint was then written again).
    pub truncations_failed: u64,
    pub transfers_evicted: u64,
    pub expiries: u64,
    /// Batches the throttle delayed (pace) or held back (too much not checkpointed).
    pub paced: u64,
    pub held: u64,
    pub trace_hash: u128,
}

/// A request the workload sent, with what the read stage read for it on arrival.
struct Submitted {
    index: u64,
    request: Request,
    store_reads: Option<Box<StoreReads>>,
}

/// A reply parked in the pipeline.
struct Answer {
    index: u64,
    lsn: u64,
    request: Request,
    result: Result<Reply, EngineError>,
}

/// One incarnation of the engine: what the core thread and the checkpointer hold.
struct Node {
    pipeline: Pipeline<Answer>,
    ledger: Ledger,
    wal: Wal,
    store: Store,
    record: RecordBuilder,
    /// Handed to the checkpointer, oldest first.
    checkpoints: VecDeque<(CheckpointMeta, Changes)>,
    disk: SimDisk,
}

impl Drop for Node {
    fn drop(&mut self) {
        // A writer stopped at the gate would never let the WAL close.
        self.disk.halt();
    }
}

/// The history every incarnation must agree with: the records of the current
/// timeline, and a ledger that applied them and never evicts.
struct Reference {
    ledger: Ledger,
    /// Payload of LSN `i + 1`.
    records: Vec<Vec<u8>>,
    /// `hashes[lsn]`: the state hash after LSN `lsn` (0: empty).
    hashes: Vec<u128>,
    acked_lsn_max: u64,
    /// (id, timestamp) of acknowledged `created` transfers and accounts.
    acked_transfers: Vec<(u128, u64)>,
    acked_accounts: Vec<(u128, u64)>,
}

pub struct Sim {
    options: SimOptions,
    rng: StdRng,
    clock_ns: u64,
    dir: PathBuf,
    disk: SimDisk,
    node: Option<Node>,
    reference: Reference,
    workload: Workload,
    queue: VecDeque<Submitted>,
    requests_next: u64,
    trace: Xxh3,
    summary: SimSummary,
    /// The simulation's own record of whether it made checkpoints fail (the oracle the
    /// pipeline's `writes_refused` and `throttle` are checked against).
    checkpoints_failing: bool,
}

/// Run one seed; panics with what broke (the caller prints the seed).
pub fn run(seed: u64, options: SimOptions) -> SimSummary {
    crate::ledger::set_chunk_transfers(CHUNK_TRANSFERS);
    let mut sim = Sim::new(seed, options);
    for step in 0..options.steps {
        sim.step(step);
    }
    // Every run ends with a crash and a recovery, checked like any other.
    sim.crash_and_recover();
    sim.finish()
}

impl Sim {
    fn new(seed: u64, options: SimOptions) -> Sim {
        let dir = std::env::temp_dir().join(format!(
            "settled-sim-{}-{seed}-{}",
            std::process::id(),
            DIR_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut sim = Sim {
            options,
            rng: StdRng::seed_from_u64(seed),
            clock_ns: CLOCK_START_NS,
            dir,
            disk: SimDisk::driven_from_this_thread(),
            node: None,
            reference: Reference {
                ledger: Ledger::new(),
                records: Vec::new(),
                hashes: vec![Ledger::new().state_hash()],
                acked_lsn_max: 0,
                acked_transfers: Vec::new(),
                acked_accounts: Vec::new(),
            },
            workload: Workload::new(seed),
            queue: VecDeque::new(),
            requests_next: 0,
            trace: Xxh3::new(),
            summary: SimSummary {
                seed,
                steps: options.steps,
                ..SimSummary::default()
            },
            checkpoints_failing: false,
        };
        sim.start_node();
        sim
    }

    fn config(&self) -> EngineConfig {
        let mut config = EngineConfig::new(&self.dir);
        config.batch_events_max = BATCH_EVENTS_MAX;
        config.checkpoint_batches = 6;
        config.checkpoint_events = 150;
        config.checkpoint_interval = Duration::from_secs(2);
        config.transfers_resident_max = 0;
        config.transfers_uncheckpointed_max = TRANSFERS_UNCHECKPOINTED_MAX;
        config.disk_free_min_bytes = 0;
        let record_bytes = record::record_bytes_max(BATCH_EVENTS_MAX) as u32;
        config.wal = WalConfig {
            record_bytes_max: record_bytes,
            // A few records per segment: rolls and truncations happen often.
            segment_bytes: 3 * u64::from(record_bytes) + 4096,
            pending_bytes_max: 1 << 20,
            first_lsn: 1,
        };
        config.wal_storage = WalStorage(Arc::new(self.disk.clone()));
        config.store = StoreConfig {
            block_cache_bytes: 1 << 20,
            ..StoreConfig::default()
        };
        config
    }

    fn node(&mut self) -> &mut Node {
        self.node.as_mut().expect("a node runs")
    }

    fn finish(mut self) -> SimSummary {
        let hash = self.node().ledger.state_hash();
        self.trace.update(&hash.to_le_bytes());
        self.trace.update(&self.disk.digest().to_le_bytes());
        self.summary.trace_hash = self.trace.digest128();
        self.node = None;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.summary.clone()
    }

    /// One step: time passes, then requests arrive and a batch runs, the disk makes
    /// progress, the checkpointer works, or the process crashes.
    fn step(&mut self, step: u32) {
        self.clock_ns += match self.rng.random_range(0..10) {
            0 => self.rng.random_range(500..3000) * 1_000_000,
            _ => self.rng.random_range(0..40) * 1_000_000,
        };
        let roll = self.rng.random_range(0..1000);
        note(&mut self.trace, "step", &[u64::from(step), roll]);
        if roll < u64::from(self.options.crash_per_mille) {
            self.crash_and_recover();
            return;
        }
        match roll % 10 {
            0..=5 => {
                let arrivals = self.rng.random_range(1..=3);
                for _ in 0..arrivals {
                    self.arrive();
                }
                self.throttled_batch();
            }
            6 => self.throttled_batch(),
            7 => self.settle(true),
            _ => self.checkpointer(),
        }
        self.take_checkpoint_if_due(false);
    }

    fn arrive(&mut self) {
        let timestamp_last = self.reference.ledger.timestamp_last();
        let request = self.workload.next_request(timestamp_last);
        let node = self.node.as_ref().expect("a node runs");
        // The read stage reads at arrival; the core re-reads if eviction moved since.
        let store_reads = if is_range_read(&request) {
            None
        } else {
            read_for_request(
                &node.store,
                &request,
                node.ledger.evicted_through(),
                node.ledger.eviction_generation(),
            )
            .ok()
            .map(Box::new)
        };
        self.summary.requests += 1;
        self.requests_next += 1;
        self.queue.push_back(Submitted {
            index: self.requests_next,
            request,
            store_reads,
        });
    }

    /// Ask the pipeline's throttle first, as the core thread does.
    fn throttled_batch(&mut self) {
        let node = self.node.as_ref().expect("a node runs");
        let input = ThrottleInput {
            transfers_count: node.ledger.transfers_count(),
            checkpoint_rate: 1000,
            checkpointer_gone: false,
        };
        let decision = node.pipeline.throttle(input);
        if matches!(decision, Throttle::Go | Throttle::Pace { .. }) {
            // Memory stays bounded: past the bound the throttle holds (unless checkpoints
            // are failing, when writes are refused instead).
            let uncheckpointed = node
                .pipeline
                .transfers_uncheckpointed(node.ledger.transfers_count());
            assert!(
                self.checkpoints_failing || uncheckpointed <= TRANSFERS_UNCHECKPOINTED_MAX,
                "the throttle let a batch in with {uncheckpointed} transfers not checkpointed"
            );
        }
        match decision {
            Throttle::Go => {}
            Throttle::Pace { delay_ns } => {
                self.summary.paced += 1;
                note(&mut self.trace, "pace", &[delay_ns]);
                self.clock_ns += delay_ns;
            }
            Throttle::Hold | Throttle::ForceCheckpoint => {
                self.summary.held += 1;
                note(&mut self.trace, "hold", &[]);
                self.take_checkpoint_if_due(true);
                self.settle(false);
                self.checkpointer();
                return;
            }
        }
        self.run_batch();
    }

    /// One core batch: the requests that fit, an expiry step first when due, each
    /// applied and compared with the reference, the record appended, replies parked.
    fn run_batch(&mut self) {
        let now = self.clock_ns;
        let (batch, events) = self.take_batch();
        let expire = self.expire_if_due(now);
        if batch.is_empty() && !expire {
            return;
        }
        let answers = self.apply_batch(now, batch);
        self.append_and_park(events, expire, answers);
    }

    /// The queued requests that fit one batch (the rest are carried: never split).
    fn take_batch(&mut self) -> (Vec<Submitted>, u64) {
        let pipeline = &self.node.as_ref().expect("a node runs").pipeline;
        let mut batch = Vec::new();
        let mut events = 0u64;
        while let Some(front) = self.queue.front() {
            let count = u64::from(front.request.events_count());
            if !pipeline.batch_has_room(events) || !pipeline.fits(events, count) {
                break;
            }
            events += count;
            batch.push(self.queue.pop_front().expect("front exists"));
        }
        (batch, events)
    }

    /// Begin the batch's record, with an expiry step when the pipeline says it is due
    /// (applied to the reference too).
    fn expire_if_due(&mut self, now: u64) -> bool {
        let node = self.node.as_mut().expect("a node runs");
        node.record.begin(now);
        let expiry_next = node.ledger.expiry_timestamp_next();
        assert_eq!(
            expiry_next,
            self.reference.ledger.expiry_timestamp_next(),
            "the engine and the reference expire at different times"
        );
        let expire = node.pipeline.expiry_due(now, expiry_next);
        if expire {
            node.record.push(Write::Expire);
            let mut nothing = OldTransfers::new(node.ledger.evicted_through());
            apply(&mut node.ledger, now, Write::Expire, &mut nothing);
            self.reference.ledger.expire(now);
            self.summary.expiries += 1;
        }
        expire
    }

    /// Apply each request as the core does and as the reference does: the replies must
    /// be equal. Writes are refused, untouched, while checkpoints fail.
    fn apply_batch(&mut self, now: u64, batch: Vec<Submitted>) -> Vec<Answer> {
        let node = self.node.as_mut().expect("a node runs");
        assert_eq!(
            node.pipeline.writes_refused(),
            self.checkpoints_failing,
            "writes refused must follow checkpoints failing"
        );
        let mut answers = Vec::with_capacity(batch.len());
        for submitted in batch {
            let result = if node.pipeline.writes_refused() && is_write(&submitted.request) {
                self.summary.writes_refused += 1;
                Err(EngineError::Unavailable {
                    reason: "checkpoints to disk are failing".to_owned(),
                })
            } else {
                let expected = reference_reply(&mut self.reference.ledger, now, &submitted.request);
                let result = execute(node, now, submitted.request.clone(), submitted.store_reads);
                match &result {
                    Ok(reply) => assert_eq!(
                        reply,
                        &expected,
                        "request {} ({:?}) answered unlike the reference",
                        submitted.index,
                        submitted.request.operation()
                    ),
                    Err(error) => panic!("request {} failed: {error}", submitted.index),
                }
                result
            };
            answers.push(Answer {
                index: submitted.index,
                lsn: 0,
                request: submitted.request,
                result,
            });
        }
        answers
    }

    /// Append the batch's record (if it logged anything), check the state against the
    /// reference, and park the replies in the pipeline behind the newest record.
    fn append_and_park(&mut self, events: u64, expire: bool, mut answers: Vec<Answer>) {
        let node = self.node.as_mut().expect("a node runs");
        let appended = if node.record.is_empty() {
            None
        } else {
            match node.wal.append(node.record.finish()) {
                Ok(lsn) => Some(lsn),
                Err(error) => {
                    // The WAL failed earlier: this batch was applied but is not logged.
                    assert!(matches!(error, WalError::Poisoned { .. }), "{error}");
                    for answer in answers {
                        self.workload.unanswered(answer.request);
                    }
                    self.crash_and_recover();
                    return;
                }
            }
        };
        if let Some(lsn) = appended {
            self.reference.records.push(node.record.finish().to_vec());
            self.reference
                .hashes
                .push(self.reference.ledger.state_hash());
            assert_eq!(self.reference.records.len() as u64, lsn);
            self.summary.records_appended += 1;
        }
        assert_eq!(
            node.ledger.state_hash(),
            self.reference.ledger.state_hash(),
            "the engine's state differs from the reference after LSN {}",
            node.pipeline.lsn_last()
        );
        let lsn = appended.unwrap_or(node.pipeline.lsn_last());
        for answer in &mut answers {
            answer.lsn = lsn;
        }
        note(&mut self.trace, "batch", &[events, lsn, u64::from(expire)]);
        let released = node.pipeline.batch_appended(appended, events, answers);
        self.acknowledge(released);
        self.settle(false);
    }

    /// Replies leave the pipeline: check each against the WAL's own durable LSN, then
    /// count it acknowledged.
    fn acknowledge(&mut self, released: Vec<Answer>) {
        let durable_lsn = self.node().wal.durable_lsn();
        for answer in released {
            let digest = xxhash_rust::xxh3::xxh3_64(format!("{:?}", answer.result).as_bytes());
            note(&mut self.trace, "ack", &[answer.index, answer.lsn, digest]);
            let Ok(reply) = answer.result else {
                // An error (the WAL failed before this record was durable): not acknowledged.
                self.workload.unanswered(answer.request);
                continue;
            };
            assert!(
                answer.lsn <= durable_lsn,
                "request {} answered at LSN {} before it was durable (durable LSN {durable_lsn})",
                answer.index,
                answer.lsn
            );
            self.summary.replies_acknowledged += 1;
            self.reference.acked_lsn_max = self.reference.acked_lsn_max.max(answer.lsn);
            if let Reply::Created(results) = &reply {
                let created = |status: u32| match &answer.request {
                    Request::CreateTransfers(_) => status == CreateTransferResult::Created.code(),
                    _ => status == CreateAccountResult::Created.code(),
                };
                for (index, result) in results.iter().enumerate() {
                    if !created(result.status) {
                        continue;
                    }
                    match &answer.request {
                        Request::CreateTransfers(events) => self
                            .reference
                            .acked_transfers
                            .push((events[index].id, result.timestamp)),
                        Request::CreateAccounts(events) => self
                            .reference
                            .acked_accounts
                            .push((events[index].id, result.timestamp)),
                        _ => unreachable!("only creates answer Created"),
                    }
                }
            }
            self.workload.answered(answer.request);
        }
    }

    /// Let the WAL's writer run to a stable point, giving verdicts to its writes and
    /// syncs. Unless `drain`, it may stop early and leave an operation waiting (a
    /// delayed completion) while fewer than [`UNSYNCED_RECORDS_MAX`] records wait.
    fn settle(&mut self, drain: bool) {
        loop {
            let node = self.node.as_ref().expect("a node runs");
            let appended = node.pipeline.lsn_last();
            let stable = node.disk.wait_stable(&node.wal, appended);
            self.feed_durable();
            match stable {
                Stable::Idle => return,
                Stable::Poisoned => return self.wal_failed(),
                Stable::AtGate(op) => {
                    let node = self.node.as_ref().expect("a node runs");
                    let waiting = appended - node.wal.durable_lsn();
                    if !drain && waiting < UNSYNCED_RECORDS_MAX && self.rng.random_bool(0.4) {
                        return;
                    }
                    let verdict = self.verdict(op);
                    note(&mut self.trace, "verdict", &[verdict_code(verdict)]);
                    self.node().disk.decide(verdict);
                }
            }
        }
    }

    fn verdict(&mut self, op: GateOp) -> Verdict {
        if self.rng.random_range(0..1000u32) >= self.options.disk_fault_per_mille {
            return Verdict::Complete;
        }
        self.summary.wal_faults += 1;
        let written = match op {
            GateOp::Write { bytes } => self.rng.random_range(0..=bytes),
            GateOp::Sync | GateOp::Directory => 0,
        };
        if self.rng.random_bool(0.5) {
            Verdict::Io { written }
        } else {
            Verdict::NoSpace { written }
        }
    }

    fn feed_durable(&mut self) {
        let node = self.node();
        let durable_lsn = node.wal.durable_lsn();
        let released = node.pipeline.durable(durable_lsn);
        self.acknowledge(released);
    }

    /// The WAL is poisoned: replies of durable batches go out, the others get the
    /// error, and the engine must restart.
    fn wal_failed(&mut self) {
        note(&mut self.trace, "wal_failed", &[]);
        self.feed_durable();
        let failed = self.node().pipeline.wal_failed();
        let mut released = Vec::new();
        for (mut answer, durable) in failed {
            if !durable {
                answer.result = Err(EngineError::Stopped);
            }
            released.push(answer);
        }
        self.acknowledge(released);
        self.crash_and_recover();
    }

    fn take_checkpoint_if_due(&mut self, force: bool) {
        let now = self.clock_ns;
        let node = self.node();
        let room = node.checkpoints.len() < CHECKPOINTS_IN_FLIGHT_MAX;
        if !room {
            return;
        }
        let Some(lsn) = node.pipeline.checkpoint_due(now, room, force) else {
            return;
        };
        let meta = CheckpointMeta {
            lsn,
            timestamp_last: node.ledger.timestamp_last(),
        };
        let changes = node.ledger.take_changes();
        node.checkpoints.push_back((meta, changes));
        let mark = node.ledger.checkpoint_mark();
        node.pipeline.checkpoint_taken(lsn, mark, now);
        note(&mut self.trace, "checkpoint_taken", &[lsn]);
    }

    /// The checkpointer's turn: write the oldest checkpoint once the WAL holds it
    /// durably, truncate the WAL below it, then the core learns and evicts.
    fn checkpointer(&mut self) {
        let Some(lsn) = self.node().checkpoints.front().map(|(meta, _)| meta.lsn) else {
            return;
        };
        if self.node().wal.durable_lsn() < lsn {
            // The checkpointer waits for the WAL (which may fail: then a new node runs).
            self.settle(true);
            let node = self.node();
            let ready = node
                .checkpoints
                .front()
                .is_some_and(|(meta, _)| meta.lsn == lsn)
                && node.wal.durable_lsn() >= lsn;
            if !ready {
                return;
            }
        }
        if !self.checkpoint_attempt_succeeds() {
            return;
        }
        // Whether removing a segment or syncing the directory after it fails: the
        // checkpointer then retries the whole checkpoint later (it is idempotent).
        let fail = self.rng.random_range(0..1000u32) < self.options.disk_fault_per_mille * 4;
        let fail_after = self.rng.random_range(0..4);
        let node = self.node.as_mut().expect("a node runs");
        let (meta, changes) = node.checkpoints.pop_front().expect("front exists");
        node.store
            .write_checkpoint(meta, &changes)
            .unwrap_or_else(|error| panic!("checkpoint {lsn}: {error}"));
        assert!(node.wal.durable_lsn() >= meta.lsn);
        if fail {
            node.disk.fail_directory_operation(Some(fail_after));
        }
        let truncated = node.wal.truncate_before(meta.lsn + 1);
        node.disk.fail_directory_operation(None);
        if let Err(error) = truncated {
            assert!(fail, "truncate below {lsn}: {error}");
            node.checkpoints.push_front((meta, changes));
            self.summary.truncations_failed += 1;
            note(&mut self.trace, "truncate_failed", &[lsn]);
            return;
        }
        let durable_lsn = node.wal.durable_lsn();
        let released = node.pipeline.durable(durable_lsn);
        let mark = node.pipeline.checkpoint_written(meta.lsn);
        let evicted = mark.map_or(0, |mark| node.ledger.evict(mark, 0));
        node.ledger.recycle_changes(changes);
        self.summary.checkpoints_written += 1;
        self.summary.transfers_evicted += evicted;
        note(&mut self.trace, "checkpoint_written", &[lsn, evicted]);
        self.acknowledge(released);
    }

    /// Whether the store takes this checkpoint. Now and then checkpoints start failing
    /// for good (after the real checkpointer's retries: a full or failing disk) and the
    /// pipeline is told, so writes are refused; each later attempt may succeed again.
    fn checkpoint_attempt_succeeds(&mut self) -> bool {
        let failing = self.checkpoints_failing;
        if !failing && self.rng.random_range(0..1000u32) < self.options.disk_fault_per_mille * 3 {
            self.checkpoints_failing = true;
            self.node().pipeline.checkpoints_failing(true);
            note(&mut self.trace, "checkpoints_failing", &[]);
            return false;
        }
        if failing {
            if self.rng.random_bool(0.6) {
                return false;
            }
            self.checkpoints_failing = false;
            self.node().pipeline.checkpoints_failing(false);
            note(&mut self.trace, "checkpoints_recovered", &[]);
        }
        true
    }

    /// Kill the process: the checkpoint being written finished or not, unsynced WAL bytes
    /// are lost or torn, nothing in flight is answered. Then damage data at rest (it
    /// must be refused), repair it, recover, and check everything.
    fn crash_and_recover(&mut self) {
        self.summary.crashes += 1;
        if let Some(node) = self.node.as_mut() {
            if let Some((meta, changes)) = node.checkpoints.front() {
                // RocksDB's atomic flush: the whole checkpoint, or none of it.
                if node.wal.durable_lsn() >= meta.lsn && self.rng.random_bool(0.5) {
                    node.store
                        .write_checkpoint(*meta, changes)
                        .unwrap_or_else(|error| panic!("checkpoint at crash: {error}"));
                    note(&mut self.trace, "checkpoint_at_crash", &[meta.lsn]);
                }
            }
        }
        let survivor = self.disk.crash(&mut self.rng);
        if let Some(mut node) = self.node.take() {
            for (answer, _) in node.pipeline.wal_failed() {
                self.workload.unanswered(answer.request);
            }
            drop(node);
        }
        for submitted in std::mem::take(&mut self.queue) {
            self.workload.unanswered(submitted.request);
        }
        self.disk = survivor;
        note(&mut self.trace, "crash", &[]);
        if self.rng.random_bool(0.3) {
            self.flip_wal_bit_and_expect_refusal();
        }
        if self.rng.random_bool(0.15) {
            self.damage_store_and_expect_refusal();
        }
        self.start_node();
    }

    /// Flip a bit of the WAL's synced bytes: recovery must refuse to start.
    ///
    /// The last group of the last segment is left alone: damage there looks exactly like
    /// a torn write, and recovery cuts the group (the WAL's documented limit, see
    /// docs/INTERNALS.md "Simulation").
    fn flip_wal_bit_and_expect_refusal(&mut self) {
        let wal_dir = self.dir.join("wal");
        let segments = self.disk.synced_files(|path| {
            path.parent() == Some(wal_dir.as_path())
                && path.extension().is_some_and(|ext| ext == "log")
        });
        let mut candidates = Vec::new();
        for (index, (path, synced)) in segments.iter().enumerate() {
            let end = if index + 1 == segments.len() && !self.options.flip_last_record {
                let bytes = self.disk.read_synced(path).expect("listed file");
                last_group_start(&bytes)
            } else {
                *synced
            };
            if end > 0 {
                candidates.push((path.clone(), end));
            }
        }
        if candidates.is_empty() {
            return;
        }
        let (path, end) = candidates[self.rng.random_range(0..candidates.len())].clone();
        let offset = self.rng.random_range(0..end);
        let bit = self.rng.random_range(0..8u8);
        self.disk.flip_bit(&path, offset, bit);
        note(&mut self.trace, "flip", &[offset as u64, u64::from(bit)]);
        match recover(&self.config()) {
            Err(EngineError::Wal(error)) if matches!(*error, WalError::Corrupt { .. }) => {
                self.summary.wal_corruptions_refused += 1;
            }
            Err(other) => panic!(
                "a bit flipped at {}:{offset} was refused with an unexpected error: {other}",
                path.display()
            ),
            Ok(_) => panic!(
                "a bit flipped in synced WAL data at {}:{offset} was accepted",
                path.display()
            ),
        }
        self.disk.flip_bit(&path, offset, bit);
    }

    /// Damage one account row of the store: the start must refuse it.
    fn damage_store_and_expect_refusal(&mut self) {
        let store_dir = self.dir.join("store");
        let config = self.config();
        let damaged = {
            let store = Store::open(&store_dir, &config.store).expect("open the store");
            let pick = self.rng.random_range(0..1000);
            let bit = self.rng.random_range(0..1024);
            store.damage_account_row(pick, bit).expect("damage a row")
        };
        let Some((key, value)) = damaged else {
            return;
        };
        note(&mut self.trace, "damage_store", &[]);
        match recover(&config) {
            Err(EngineError::Store(_)) => self.summary.store_corruptions_refused += 1,
            Err(other) => panic!("a damaged account row was refused with {other}"),
            Ok(_) => panic!("a damaged account row was accepted at start"),
        }
        let store = Store::open(&store_dir, &config.store).expect("open the store");
        store.put_account_row(&key, &value).expect("repair the row");
    }

    /// Recover from the disk and the store, check the result, and run on it.
    fn start_node(&mut self) {
        let config = self.config();
        let recovered =
            recover(&config).unwrap_or_else(|error| panic!("recovery refused: {error}"));
        let report = recovered.report;
        if recovered.wal.recovery_report().torn_tail.is_some() {
            self.summary.torn_tails_cut += 1;
        }
        let lsn = report.lsn_last;
        note(
            &mut self.trace,
            "recovered",
            &[lsn, report.checkpoint_lsn, report.records_replayed],
        );
        let reference = &mut self.reference;
        assert!(
            lsn >= reference.acked_lsn_max,
            "recovered through LSN {lsn}, but LSN {} was acknowledged",
            reference.acked_lsn_max
        );
        assert!(
            lsn <= reference.records.len() as u64,
            "recovered LSN {lsn} was never appended ({} were)",
            reference.records.len()
        );
        assert_eq!(
            recovered.ledger.state_hash(),
            reference.hashes[lsn as usize],
            "the recovered state is not the reference's state after LSN {lsn}"
        );
        // The timeline goes on from the recovered prefix; what was lost was never answered.
        self.summary.records_lost += reference.records.len() as u64 - lsn;
        // Rebuilt also when a batch was applied but never logged (the WAL had failed).
        if reference.records.len() as u64 > lsn
            || reference.ledger.state_hash() != reference.hashes[lsn as usize]
        {
            reference.records.truncate(lsn as usize);
            reference.hashes.truncate(lsn as usize + 1);
            reference.ledger = replay_reference(&reference.records);
            assert_eq!(
                reference.ledger.state_hash(),
                reference.hashes[lsn as usize]
            );
        }
        let start = PipelineStart {
            lsn_last: lsn,
            checkpoint_lsn: report.checkpoint_lsn,
            records_replayed: report.records_replayed,
            transfers_checkpointed: recovered.transfers_checkpointed,
            now_ns: self.clock_ns,
        };
        // A new process: its checkpointer has not failed yet.
        self.checkpoints_failing = false;
        self.node = Some(Node {
            pipeline: Pipeline::new(config.pipeline(), start),
            ledger: recovered.ledger,
            wal: recovered.wal,
            store: recovered.store,
            record: RecordBuilder::default(),
            checkpoints: VecDeque::new(),
            disk: self.disk.clone(),
        });
        self.check_acknowledged();
        self.check_balances();
    }

    /// Acknowledged objects look up with their acknowledged timestamps, through the
    /// store for the evicted ones.
    fn check_acknowledged(&mut self) {
        let sample = 24;
        let transfers: Vec<(u128, u64)> = (0..sample)
            .filter_map(|_| {
                let acked = &self.reference.acked_transfers;
                (!acked.is_empty()).then(|| acked[self.rng.random_range(0..acked.len())])
            })
            .collect();
        let accounts: Vec<(u128, u64)> = (0..sample)
            .filter_map(|_| {
                let acked = &self.reference.acked_accounts;
                (!acked.is_empty()).then(|| acked[self.rng.random_range(0..acked.len())])
            })
            .collect();
        let now = self.clock_ns;
        let node = self.node();
        let ids: Vec<u128> = transfers.iter().map(|(id, _)| *id).collect();
        let found = execute(node, now, Request::LookupTransfers(ids), None);
        let Ok(Reply::Transfers(found)) = found else {
            panic!("lookup of acknowledged transfers failed: {found:?}");
        };
        assert_eq!(
            found.len(),
            transfers.len(),
            "acknowledged transfers missing"
        );
        for (transfer, (id, timestamp)) in found.iter().zip(&transfers) {
            assert_eq!(
                (transfer.id, transfer.timestamp),
                (*id, *timestamp),
                "acknowledged transfer changed"
            );
        }
        let ids: Vec<u128> = accounts.iter().map(|(id, _)| *id).collect();
        let found = node.ledger.lookup_accounts(&ids);
        assert_eq!(found.len(), accounts.len(), "acknowledged accounts missing");
        for (account, (id, timestamp)) in found.iter().zip(&accounts) {
            assert_eq!((account.id, account.timestamp), (*id, *timestamp));
        }
    }

    /// Per ledger, debits equal credits (posted and pending), and no balance rule is
    /// broken.
    fn check_balances(&mut self) {
        let ids = self.workload.account_ids().to_vec();
        let accounts = self.node().ledger.lookup_accounts(&ids);
        let mut sums = std::collections::BTreeMap::<u32, [u128; 4]>::new();
        for account in &accounts {
            let sum = sums.entry(account.ledger).or_default();
            sum[0] += account.debits_posted;
            sum[1] += account.credits_posted;
            sum[2] += account.debits_pending;
            sum[3] += account.credits_pending;
            let flags = account.flags;
            if flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) {
                assert!(
                    account.debits_pending + account.debits_posted <= account.credits_posted,
                    "account {} breaks debits_must_not_exceed_credits",
                    account.id
                );
            }
            if flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS) {
                assert!(
                    account.credits_pending + account.credits_posted <= account.debits_posted,
                    "account {} breaks credits_must_not_exceed_debits",
                    account.id
                );
            }
        }
        for (ledger, [debits, credits, debits_pending, credits_pending]) in sums {
            assert_eq!(debits, credits, "ledger {ledger}: posted debits != credits");
            assert_eq!(
                debits_pending, credits_pending,
                "ledger {ledger}: pending debits != credits"
            );
        }
    }
}

/// Add one event to the trace.
fn note(trace: &mut Xxh3, tag: &str, values: &[u64]) {
    trace.update(tag.as_bytes());
    for value in values {
        trace.update(&value.to_le_bytes());
    }
}

static DIR_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn is_write(request: &Request) -> bool {
    matches!(
        request,
        Request::CreateAccounts(_) | Request::CreateTransfers(_)
    )
}

fn is_range_read(request: &Request) -> bool {
    matches!(
        request,
        Request::GetAccountTransfers(_)
            | Request::GetAccountBalances(_)
            | Request::QueryTransfers(_)
    )
}

/// The core's apply of one request; range reads join the store's part (read here at
/// the watermark, as the query stage does) with memory's.
fn execute(
    node: &mut Node,
    now: u64,
    request: Request,
    store_reads: Option<Box<StoreReads>>,
) -> Result<Reply, EngineError> {
    if !is_range_read(&request) {
        return execute_request(
            &mut node.ledger,
            &node.store,
            &mut node.record,
            now,
            request,
            store_reads,
        );
    }
    let ledger = &node.ledger;
    let through = ledger.evicted_through();
    let reads = read_for_request(&node.store, &request, through, ledger.eviction_generation())
        .map_err(|error| EngineError::Store(Arc::new(error)))?;
    Ok(match (request, reads.data) {
        (Request::GetAccountTransfers(filter), StoreReadData::RangeTransfers(old)) => {
            Reply::Transfers(ledger.get_account_transfers_with(&filter, through, old))
        }
        (Request::GetAccountBalances(filter), StoreReadData::RangeBalances(old)) => {
            Reply::Balances(ledger.get_account_balances_with(&filter, through, old))
        }
        (Request::QueryTransfers(filter), StoreReadData::RangeTransfers(old)) => {
            Reply::Transfers(ledger.query_transfers_with(&filter, through, old))
        }
        (request, data) => unreachable!("{:?} read {data:?}", request.operation()),
    })
}

/// What a ledger that never evicts answers.
fn reference_reply(ledger: &mut Ledger, now: u64, request: &Request) -> Reply {
    match request {
        Request::CreateAccounts(events) => Reply::Created(ledger.create_accounts(now, events)),
        Request::CreateTransfers(events) => Reply::Created(ledger.create_transfers(now, events)),
        Request::LookupAccounts(ids) => Reply::Accounts(ledger.lookup_accounts(ids)),
        Request::LookupTransfers(ids) => Reply::Transfers(ledger.lookup_transfers(ids)),
        Request::QueryAccounts(filter) => Reply::Accounts(ledger.query_accounts(filter)),
        Request::QueryTransfers(filter) => Reply::Transfers(ledger.query_transfers(filter)),
        Request::GetAccountTransfers(filter) => {
            Reply::Transfers(ledger.get_account_transfers(filter))
        }
        Request::GetAccountBalances(filter) => Reply::Balances(ledger.get_account_balances(filter)),
    }
}

/// A fresh ledger that applied `records` (LSN 1 on) with the core's apply.
fn replay_reference(records: &[Vec<u8>]) -> Ledger {
    let mut ledger = Ledger::new();
    for payload in records {
        let batch = record::decode(payload).expect("the simulation's own records decode");
        for entry in &batch.entries {
            let mut nothing = OldTransfers::new(0);
            apply(&mut ledger, batch.now, entry.as_write(), &mut nothing);
        }
    }
    ledger
}

/// Offset of the last whole record of a segment's bytes (the header's end if none):
/// the WAL's format, `wal/src/lib.rs` (32-byte segment header, 16-byte record headers
/// with the payload length at bytes 8..12).
/// Where the last group of a segment starts (its marker): recovery cuts a damaged last
/// group whole, as it would a torn one.
fn last_group_start(bytes: &[u8]) -> usize {
    let header = wal::SEGMENT_HEADER_BYTES as usize;
    let record_header = wal::RECORD_HEADER_BYTES as usize;
    let mut offset = header.min(bytes.len());
    let mut last = offset;
    while let Some(head) = bytes.get(offset..offset + record_header) {
        let lsn = u64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
        let length = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
        let end = offset + record_header + length;
        if end > bytes.len() {
            break;
        }
        if lsn == wal::GROUP_MARKER_LSN {
            last = offset;
        }
        offset = end;
    }
    last
}

fn verdict_code(verdict: Verdict) -> u64 {
    match verdict {
        Verdict::Complete => 0,
        Verdict::Io { written } => 1 + 4 * written as u64,
        Verdict::NoSpace { written } => 2 + 4 * written as u64,
    }
}

/// The reproduction command printed with a failing seed.
pub fn reproduce_command(seed: u64, options: SimOptions) -> String {
    let mut command = format!(
        "SETTLED_SIM_SEED={seed} SETTLED_SIM_STEPS={}",
        options.steps
    );
    if options.flip_last_record {
        command.push_str(" SETTLED_SIM_FLIP_LAST_RECORD=1");
    }
    command.push_str(" cargo test -p settled-engine --test simulation every_seed -- --nocapture");
    command
}
