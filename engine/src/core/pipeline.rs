//! The core thread's decisions as a pure state machine: no threads, channels, clocks or
//! I/O (the raft-rs `RawNode`/`Ready` split of shared/STYLE.md).
//!
//! The driver (`CoreThread` in production, `crate::sim` under a seeded simulation) feeds
//! it events and performs the actions it returns:
//!
//! | event (method) | action (return value) |
//! |---|---|
//! | a request arrived: does it fit the batch? ([`Pipeline::batch_has_room`], [`Pipeline::fits`]) | take it, or carry it to the next batch |
//! | a batch begins at `now` ([`Pipeline::expiry_due`]) | log and apply an expiry step first |
//! | a batch was applied and appended as LSN `n` ([`Pipeline::batch_appended`]) | replies already releasable |
//! | the WAL is durable up to `n` ([`Pipeline::durable`]) | replies to send |
//! | the WAL failed ([`Pipeline::wal_failed`]) | every parked reply, with whether it is durable |
//! | a turn ended at `now` ([`Pipeline::checkpoint_due`]) | start a checkpoint at an LSN |
//! | the checkpoint was handed over ([`Pipeline::checkpoint_taken`]) | — |
//! | a checkpoint was written ([`Pipeline::checkpoint_written`]) | evict what its mark holds |
//! | checkpoints keep failing, or one was written again ([`Pipeline::checkpoints_failing`]) | refuse writes or take them again ([`Pipeline::writes_refused`]) |
//! | before taking requests ([`Pipeline::throttle`]) | go, pace for a while, hold, or force a checkpoint |
//! | idle ([`Pipeline::idle_timeout_ns`]) | how long to wait for a request |
//!
//! What stays in the driver: the ledger and its apply (itself pure, `crate::ledger`), the
//! WAL record builder, the store reads a request needs, the channels and the clock.
//!
//! Every hand-off asserts its side of the contract: appended LSNs are dense
//! (`lsn_last + 1`), parked LSNs never go back, the durable LSN never goes back nor
//! passes what was appended, no reply leaves before its LSN is durable, a written
//! checkpoint is one that was taken and is durable, and checkpoints are written in the
//! order they were taken (their changes are never dropped).

use std::collections::VecDeque;

use crate::ledger::CheckpointMark;

/// The limits the pipeline decides with (from `EngineConfig`).
#[derive(Clone, Copy, Debug)]
pub struct PipelineConfig {
    pub batch_events_max: u32,
    pub checkpoint_batches: u32,
    pub checkpoint_events: u64,
    pub checkpoint_interval_ns: u64,
    pub transfers_uncheckpointed_max: u64,
}

/// Where recovery left things.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineStart {
    /// LSN of the newest record applied (replayed).
    pub lsn_last: u64,
    /// LSN of the checkpoint the store holds (durable, written).
    pub checkpoint_lsn: u64,
    /// WAL records replayed on top of it: they count towards the next checkpoint.
    pub records_replayed: u64,
    /// Transfers the store's checkpoint holds.
    pub transfers_checkpointed: u64,
    /// The clock (ns) when the pipeline starts, for the checkpoint interval.
    pub now_ns: u64,
}

/// Replies of one batch, released once `lsn` is durable.
struct Parked<R> {
    lsn: u64,
    replies: Vec<R>,
}

/// A checkpoint handed to the checkpointer and not yet known to be written.
#[derive(Clone, Copy, Debug)]
struct Taken {
    lsn: u64,
    checkpoint_mark: CheckpointMark,
}

/// What to do before taking requests (see [`Pipeline::throttle`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Throttle {
    /// Take requests.
    Go,
    /// Take requests after waiting this long (ns), releasing replies meanwhile.
    Pace { delay_ns: u64 },
    /// Too much waits for a checkpoint: release replies, learn of written checkpoints,
    /// and ask again.
    Hold,
    /// As `Hold`, but no checkpoint is in flight: hand one over (waiting for room).
    ForceCheckpoint,
}

/// Facts the throttle decides on that live outside the pipeline.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThrottleInput {
    /// `Ledger::transfers_count`.
    pub transfers_count: u64,
    /// Transfers per second the newest checkpoint was written at (0: unknown).
    pub checkpoint_rate: u64,
    /// The checkpointer is gone: waiting for it would hang.
    pub checkpointer_gone: bool,
}

/// Longest pause [`Throttle::Pace`] asks for after one batch.
pub const PACE_DELAY_MAX_NS: u64 = 250_000_000;

/// How long the core sleeps when idle and nothing is due: only bounds how late a
/// checkpoint can be, since requests (and the WAL writer, when it needs the core) wake
/// it at once.
pub const IDLE_WAKE_MAX_NS: u64 = 100_000_000;

pub struct Pipeline<R> {
    config: PipelineConfig,
    /// LSN of the newest record appended (or replayed).
    lsn_last: u64,
    /// The durable LSN the driver reported last.
    lsn_durable: u64,
    /// LSN of the newest record handed to the checkpointer.
    lsn_checkpoint_taken: u64,
    /// LSN of the newest checkpoint known written.
    lsn_checkpoint_written: u64,
    batches_since_checkpoint: u32,
    events_since_checkpoint: u64,
    /// Events of the newest batch, for pacing.
    events_last_batch: u64,
    checkpoint_taken_at_ns: u64,
    parked: VecDeque<Parked<R>>,
    taken: VecDeque<Taken>,
    /// Transfers the written checkpoints hold (the ledger's count when the newest one
    /// was taken): the eviction watermark's source.
    transfers_checkpointed: u64,
    /// Set once the WAL fails: nothing more is applied, answered or checkpointed.
    failed: bool,
    /// Checkpoints keep failing (after their retries): writes are refused so that
    /// memory and the WAL stay bounded, reads go on, nothing is throttled.
    checkpoints_failing: bool,
}

impl<R> Pipeline<R> {
    pub fn new(config: PipelineConfig, start: PipelineStart) -> Pipeline<R> {
        assert!(start.checkpoint_lsn <= start.lsn_last || start.lsn_last == 0);
        Pipeline {
            config,
            lsn_last: start.lsn_last,
            // Recovery replayed only what the WAL holds durably.
            lsn_durable: start.lsn_last,
            lsn_checkpoint_taken: start.checkpoint_lsn,
            lsn_checkpoint_written: start.checkpoint_lsn,
            batches_since_checkpoint: u32::try_from(start.records_replayed).unwrap_or(u32::MAX),
            events_since_checkpoint: 0,
            events_last_batch: 0,
            checkpoint_taken_at_ns: start.now_ns,
            parked: VecDeque::new(),
            taken: VecDeque::new(),
            transfers_checkpointed: start.transfers_checkpointed,
            failed: false,
            checkpoints_failing: false,
        }
    }

    pub fn lsn_last(&self) -> u64 {
        self.lsn_last
    }

    pub fn lsn_durable(&self) -> u64 {
        self.lsn_durable
    }

    pub fn lsn_checkpoint_taken(&self) -> u64 {
        self.lsn_checkpoint_taken
    }

    pub fn lsn_checkpoint_written(&self) -> u64 {
        self.lsn_checkpoint_written
    }

    pub fn transfers_checkpointed(&self) -> u64 {
        self.transfers_checkpointed
    }

    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    pub fn checkpoints_in_flight(&self) -> usize {
        self.taken.len()
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The checkpointer reports that checkpoints keep failing (`true`, after its
    /// retries) or that one was written again (`false`).
    pub fn checkpoints_failing(&mut self, failing: bool) {
        self.checkpoints_failing = failing;
    }

    /// Writes are refused before they touch the ledger while checkpoints keep failing:
    /// nothing more could be checkpointed. Reads are served.
    pub fn writes_refused(&self) -> bool {
        self.checkpoints_failing
    }

    /// A batch holding `events` may take more requests.
    pub fn batch_has_room(&self, events: u64) -> bool {
        events < u64::from(self.config.batch_events_max)
    }

    /// A request of `count` events fits a batch holding `events` (requests are never
    /// split: one that does not fit is carried to the next batch).
    pub fn fits(&self, events: u64, count: u64) -> bool {
        events + count <= u64::from(self.config.batch_events_max)
    }

    /// A batch starting at `now` begins with an expiry step. Never after a failure.
    pub fn expiry_due(&self, now: u64, expiry_next: Option<u64>) -> bool {
        !self.failed && expiry_next.is_some_and(|at| at <= now)
    }

    /// How long to wait for a request when idle: until the next expiry, at most
    /// [`IDLE_WAKE_MAX_NS`]. A failed pipeline applies nothing more, expiries included: a
    /// due expiry must not make every wait return at once (the driver would spin).
    pub fn idle_timeout_ns(&self, now: u64, expiry_next: Option<u64>) -> u64 {
        if self.failed {
            return IDLE_WAKE_MAX_NS;
        }
        expiry_next
            .map_or(IDLE_WAKE_MAX_NS, |at| at.saturating_sub(now))
            .min(IDLE_WAKE_MAX_NS)
    }

    /// A batch of `events` was applied; `appended` is the LSN its record got (`None`:
    /// nothing to log, e.g. reads only). Its replies are parked behind the newest record
    /// (reads too: they may have seen effects not yet durable). Returns those already
    /// releasable.
    pub fn batch_appended(
        &mut self,
        appended: Option<u64>,
        events: u64,
        replies: Vec<R>,
    ) -> Vec<R> {
        assert!(!self.failed, "a failed pipeline applies nothing");
        self.events_last_batch = events;
        if let Some(lsn) = appended {
            // The core is the WAL's only writer: records are dense.
            assert_eq!(lsn, self.lsn_last + 1, "the WAL skipped or repeated an LSN");
            self.lsn_last = lsn;
            self.batches_since_checkpoint = self.batches_since_checkpoint.saturating_add(1);
            self.events_since_checkpoint += events;
        }
        self.park(self.lsn_last, replies);
        self.release()
    }

    fn park(&mut self, lsn: u64, replies: Vec<R>) {
        if replies.is_empty() {
            return;
        }
        // Replies leave in LSN order: a later batch is never parked before an earlier one.
        assert!(
            self.parked.back().is_none_or(|last| last.lsn <= lsn),
            "parked LSNs go back: {lsn} after {:?}",
            self.parked.back().map(|last| last.lsn)
        );
        assert!(lsn <= self.lsn_last, "parked under an LSN not yet appended");
        match self.parked.back_mut() {
            Some(last) if last.lsn == lsn => last.replies.extend(replies),
            _ => self.parked.push_back(Parked { lsn, replies }),
        }
    }

    /// The WAL is durable up to `lsn`: the replies parked at or below it may leave.
    pub fn durable(&mut self, lsn: u64) -> Vec<R> {
        assert!(
            lsn >= self.lsn_durable,
            "durable LSN went back: {lsn} after {}",
            self.lsn_durable
        );
        assert!(
            lsn <= self.lsn_last,
            "durable LSN {lsn} past the last appended {}",
            self.lsn_last
        );
        self.lsn_durable = lsn;
        if self.failed {
            return Vec::new();
        }
        self.release()
    }

    fn release(&mut self) -> Vec<R> {
        let mut released = Vec::new();
        while self
            .parked
            .front()
            .is_some_and(|parked| parked.lsn <= self.lsn_durable)
        {
            let parked = self.parked.pop_front().expect("front exists");
            // Nothing is answered before the record that produced it is on disk.
            assert!(parked.lsn <= self.lsn_durable);
            released.extend(parked.replies);
        }
        released
    }

    /// The WAL failed: state in memory may be ahead of the log, so nothing more is
    /// applied or checkpointed. Returns every parked reply with whether its record is
    /// durable (only those may carry their result; the others get the error).
    pub fn wal_failed(&mut self) -> Vec<(R, bool)> {
        self.failed = true;
        let durable_lsn = self.lsn_durable;
        std::mem::take(&mut self.parked)
            .into_iter()
            .flat_map(|parked| {
                let durable = parked.lsn <= durable_lsn;
                parked
                    .replies
                    .into_iter()
                    .map(move |reply| (reply, durable))
            })
            .collect()
    }

    /// Is a checkpoint due at `now_ns`? `Some(lsn)`: hand the changes up to the newest
    /// record, `lsn`, to the checkpointer, then call [`Pipeline::checkpoint_taken`].
    /// Unless `force`, not while the checkpointer's queue is full (changes accumulate).
    pub fn checkpoint_due(&self, now_ns: u64, queue_has_room: bool, force: bool) -> Option<u64> {
        if self.failed || self.lsn_last == self.lsn_checkpoint_taken {
            return None;
        }
        let due = force
            || self.batches_since_checkpoint >= self.config.checkpoint_batches
            || self.events_since_checkpoint >= self.config.checkpoint_events
            || now_ns.saturating_sub(self.checkpoint_taken_at_ns)
                >= self.config.checkpoint_interval_ns;
        (due && (force || queue_has_room)).then_some(self.lsn_last)
    }

    /// The checkpoint of `lsn` (with the ledger's mark when its changes were taken) is
    /// in the checkpointer's hands.
    pub fn checkpoint_taken(&mut self, lsn: u64, checkpoint_mark: CheckpointMark, now_ns: u64) {
        assert_eq!(
            lsn, self.lsn_last,
            "a checkpoint holds every change applied"
        );
        assert!(
            lsn > self.lsn_checkpoint_taken,
            "checkpoint LSNs go forward"
        );
        assert!(
            self.taken
                .back()
                .is_none_or(|last| last.checkpoint_mark.transfers <= checkpoint_mark.transfers),
            "checkpoint marks go forward"
        );
        self.taken.push_back(Taken {
            lsn,
            checkpoint_mark,
        });
        self.lsn_checkpoint_taken = lsn;
        self.batches_since_checkpoint = 0;
        self.events_since_checkpoint = 0;
        self.checkpoint_taken_at_ns = now_ns;
    }

    /// The checkpointer reports checkpoints written up to `lsn` (the newest it wrote).
    /// Returns the mark of the newest one newly written: what the ledger may evict.
    pub fn checkpoint_written(&mut self, lsn: u64) -> Option<CheckpointMark> {
        if lsn <= self.lsn_checkpoint_written {
            return None;
        }
        // The checkpointer waited for the log first: the WAL is truncated below a
        // checkpoint only once its LSN is durable.
        assert!(
            lsn <= self.lsn_durable,
            "checkpoint {lsn} written past the durable LSN {}",
            self.lsn_durable
        );
        // Only taken checkpoints are written, in the order taken: none is skipped, so
        // no checkpoint's changes are dropped.
        assert!(
            self.taken.iter().any(|taken| taken.lsn == lsn),
            "checkpoint {lsn} written but never taken"
        );
        let mut written = None;
        while self.taken.front().is_some_and(|taken| taken.lsn <= lsn) {
            written = self.taken.pop_front();
        }
        let written = written.expect("a taken checkpoint was written");
        self.lsn_checkpoint_written = lsn;
        assert!(written.checkpoint_mark.transfers >= self.transfers_checkpointed);
        self.transfers_checkpointed = written.checkpoint_mark.transfers;
        Some(written.checkpoint_mark)
    }

    /// Transfers applied that no written checkpoint holds yet.
    pub fn transfers_uncheckpointed(&self, transfers_count: u64) -> u64 {
        transfers_count - self.transfers_checkpointed
    }

    /// Before taking requests: above half of `transfers_uncheckpointed_max`, pace
    /// towards the checkpointer's measured rate (a share of the time it needs to write
    /// the last batch, growing from nothing at half to twice that at the bound); above
    /// the bound, hold requests until a checkpoint is written. Never after a failure or
    /// while checkpoints fail: nothing would catch up, and reads must not wait.
    pub fn throttle(&self, input: ThrottleInput) -> Throttle {
        if self.failed || self.checkpoints_failing || input.checkpointer_gone {
            return Throttle::Go;
        }
        let max = self.config.transfers_uncheckpointed_max;
        let uncheckpointed = self.transfers_uncheckpointed(input.transfers_count);
        if uncheckpointed > max {
            if !self.taken.is_empty() {
                return Throttle::Hold;
            }
            if self.lsn_last == self.lsn_checkpoint_taken {
                // Everything logged is in a checkpoint in flight or written: nothing to hold for.
                return Throttle::Go;
            }
            return Throttle::ForceCheckpoint;
        }
        let soft = max / 2;
        if uncheckpointed <= soft || input.checkpoint_rate == 0 {
            return Throttle::Go;
        }
        let fraction = ((uncheckpointed - soft) as f64 / (max - soft).max(1) as f64).min(1.0);
        let delay_seconds =
            self.events_last_batch as f64 / input.checkpoint_rate as f64 * 2.0 * fraction;
        let delay_ns = ((delay_seconds * 1e9) as u64).min(PACE_DELAY_MAX_NS);
        if delay_ns == 0 {
            return Throttle::Go;
        }
        Throttle::Pace { delay_ns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PipelineConfig {
        PipelineConfig {
            batch_events_max: 100,
            checkpoint_batches: 3,
            checkpoint_events: 1000,
            checkpoint_interval_ns: 1_000,
            transfers_uncheckpointed_max: 10,
        }
    }

    fn mark(transfers: u64) -> CheckpointMark {
        CheckpointMark {
            transfers,
            resolutions: 0,
            failures: 0,
        }
    }

    #[test]
    fn replies_leave_only_once_their_lsn_is_durable() {
        let mut pipeline = Pipeline::new(config(), PipelineStart::default());
        assert!(pipeline.batch_appended(Some(1), 1, vec!["a"]).is_empty());
        assert!(pipeline.batch_appended(Some(2), 1, vec!["b"]).is_empty());
        // A read behind record 2 waits for it too.
        assert!(pipeline.batch_appended(None, 1, vec!["read"]).is_empty());
        assert_eq!(pipeline.durable(1), vec!["a"]);
        assert_eq!(pipeline.durable(2), vec!["b", "read"]);
        // Nothing appended since: a read leaves at once.
        assert_eq!(pipeline.batch_appended(None, 1, vec!["c"]), vec!["c"]);
    }

    #[test]
    #[should_panic(expected = "skipped or repeated")]
    fn an_lsn_gap_is_refused() {
        let mut pipeline = Pipeline::<u8>::new(config(), PipelineStart::default());
        pipeline.batch_appended(Some(2), 1, Vec::new());
    }

    #[test]
    #[should_panic(expected = "past the last appended")]
    fn durable_past_the_appended_is_refused() {
        let mut pipeline = Pipeline::<u8>::new(config(), PipelineStart::default());
        pipeline.batch_appended(Some(1), 1, Vec::new());
        pipeline.durable(2);
    }

    #[test]
    fn a_failed_wal_answers_only_durable_replies_with_their_result() {
        let mut pipeline = Pipeline::new(config(), PipelineStart::default());
        pipeline.batch_appended(Some(1), 1, vec!["a"]);
        pipeline.batch_appended(Some(2), 1, vec!["b"]);
        pipeline.durable(1);
        pipeline.batch_appended(Some(3), 1, vec!["c"]);
        assert_eq!(pipeline.wal_failed(), vec![("b", false), ("c", false)]);
        assert_eq!(pipeline.checkpoint_due(u64::MAX, true, true), None);
    }

    #[test]
    fn checkpoints_are_due_by_batches_or_time_and_evict_once_written() {
        let mut pipeline = Pipeline::<u8>::new(config(), PipelineStart::default());
        assert_eq!(pipeline.checkpoint_due(0, true, false), None);
        pipeline.batch_appended(Some(1), 1, Vec::new());
        assert_eq!(pipeline.checkpoint_due(0, true, false), None);
        assert_eq!(pipeline.checkpoint_due(1_000, true, false), Some(1));
        pipeline.batch_appended(Some(2), 1, Vec::new());
        pipeline.batch_appended(Some(3), 1, Vec::new());
        assert_eq!(pipeline.checkpoint_due(0, false, false), None);
        assert_eq!(pipeline.checkpoint_due(0, true, false), Some(3));
        pipeline.checkpoint_taken(3, mark(7), 0);
        assert_eq!(pipeline.checkpoint_due(0, true, true), None);
        pipeline.durable(3);
        assert_eq!(pipeline.checkpoint_written(3), Some(mark(7)));
        assert_eq!(pipeline.transfers_checkpointed(), 7);
        assert_eq!(pipeline.checkpoint_written(3), None);
    }

    #[test]
    #[should_panic(expected = "past the durable LSN")]
    fn a_checkpoint_written_before_durable_is_refused() {
        let mut pipeline = Pipeline::<u8>::new(config(), PipelineStart::default());
        pipeline.batch_appended(Some(1), 1, Vec::new());
        pipeline.checkpoint_taken(1, mark(1), 0);
        pipeline.checkpoint_written(1);
    }

    #[test]
    fn throttle_paces_from_half_and_holds_past_the_bound() {
        let mut pipeline = Pipeline::<u8>::new(config(), PipelineStart::default());
        let input = |transfers_count| ThrottleInput {
            transfers_count,
            checkpoint_rate: 1000,
            ..ThrottleInput::default()
        };
        pipeline.batch_appended(Some(1), 100, Vec::new());
        assert_eq!(pipeline.throttle(input(5)), Throttle::Go);
        assert!(matches!(pipeline.throttle(input(8)), Throttle::Pace { .. }));
        assert_eq!(pipeline.throttle(input(11)), Throttle::ForceCheckpoint);
        pipeline.checkpoint_taken(1, mark(11), 0);
        assert_eq!(pipeline.throttle(input(11)), Throttle::Hold);
        pipeline.checkpoints_failing(true);
        assert!(pipeline.writes_refused());
        assert_eq!(pipeline.throttle(input(11)), Throttle::Go);
        pipeline.checkpoints_failing(false);
        assert_eq!(pipeline.throttle(input(11)), Throttle::Hold);
    }
}
