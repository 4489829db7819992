//! Replies on their way out: the [`Pipeline`], shared by the core and the WAL writer, so
//! that whichever thread learns first that a record is durable sends its replies.
//!
//! The WAL writer releases them in its durability callback, right after a group's sync
//! returns: a reply leaves without waking the core, one thread hand-off fewer on every
//! request's path. While the core applies a batch it leaves them to the core, which
//! releases when the batch ends, moments later: that keeps the sends off the writer's
//! way to its next sync when the cores are busy (`docs/PERFORMANCE.md`, "fourth pass";
//! [`Outbox::end_applying`] for why no release is missed between the two). The core also
//! releases what its own batches find durable already, and everything at shutdown and
//! on failure. The pipeline stays the one place that decides what may leave; this lock
//! only lets two threads ask.
//!
//! Order: replies leave in the order the pipeline releases them. A releasing thread takes
//! the sending lock before it lets go of the pipeline's, so a later release never
//! overtakes an earlier one on the way to a connection. A release of nothing takes no
//! sending lock, so the core does not wait there while the writer sends a group's
//! replies.
//!
//! Panics: the release daemon aborts on any panic (`panic = "abort"`). Where panics
//! unwind (tests, an embedding), a reply callback or a pipeline assert that panics on the
//! WAL writer is caught there and stops the WAL (`WalError::CallbackPanicked`), which
//! fails the engine as a failed sync does. Once a panic has poisoned the pipeline's lock,
//! the writer releases nothing more; the core goes on only to fail and answer.
//!
//! The query stage's parts: only the core holds their channel's sender (the stage learns
//! that the core is gone when it disconnects), so the WAL writer leaves them here for the
//! core and says so; the core sends them, oldest first, before any part of its own.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam::channel::Sender;

use super::core_thread::Answer;
use super::pipeline::Pipeline;
use super::query_stage::RecentPart;
use super::request::ReplyTo;
use super::EngineError;

pub(crate) struct Outbox {
    pipeline: Mutex<Pipeline<Answer>>,
    /// Held while released replies are sent; holds the query stage's parts the WAL
    /// writer released, for the core to send.
    sending: Mutex<Vec<Answer>>,
    /// Set (under `sending`) while `sending` holds parts, so that the core takes that
    /// lock only when it has something to send.
    parts_left: AtomicBool,
    /// Set while the core applies a batch: the writer leaves releases to the core, which
    /// releases when the batch ends.
    applying: AtomicBool,
}

/// Who releases: the core sends the query stage's parts itself, the WAL writer leaves
/// them for the core.
pub(crate) enum Releaser<'a> {
    Core(&'a Sender<RecentPart>),
    WalWriter,
}

/// The core's lock: a panic that poisoned it stopped the WAL (on the writer) or the core
/// itself, and what is left to do is fail and answer.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outbox {
    pub fn new(pipeline: Pipeline<Answer>) -> Outbox {
        Outbox {
            pipeline: Mutex::new(pipeline),
            sending: Mutex::new(Vec::new()),
            parts_left: AtomicBool::new(false),
            applying: AtomicBool::new(false),
        }
    }

    /// The core starts a batch: until [`Outbox::end_applying`], the WAL writer may leave
    /// releases to it. (Should the writer miss this store, it releases itself: harmless.)
    pub fn begin_applying(&self) {
        self.applying.store(true, Ordering::Relaxed);
    }

    /// The core's batch ended; it releases next (`CoreThread::release_durable`), reading
    /// the durable LSN after this fence. The writer stores the LSN before its fence in
    /// [`Outbox::core_applying`]: either the core's read sees that LSN, or the writer sees
    /// the flag down and releases itself. No durable reply waits for a later event.
    pub fn end_applying(&self) {
        self.applying.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// For the WAL writer, after it published a durable LSN: whether the core is in a
    /// batch and will release when it ends.
    pub fn core_applying(&self) -> bool {
        fence(Ordering::SeqCst);
        self.applying.load(Ordering::Relaxed)
    }

    /// The pipeline, for the core's decisions. Hold it for one call: the WAL writer
    /// waits for it to release replies.
    pub fn pipeline(&self) -> MutexGuard<'_, Pipeline<Answer>> {
        lock(&self.pipeline)
    }

    /// The core appended a batch (`appended`: its LSN; `None`: nothing to log) and parks
    /// its replies; whatever is durable already (`durable_lsn`, read from the WAL after the
    /// append) leaves now.
    pub fn batch_appended(
        &self,
        appended: Option<u64>,
        events: u64,
        replies: Vec<Answer>,
        durable_lsn: impl FnOnce() -> u64,
        parts: &Sender<RecentPart>,
    ) {
        let mut pipeline = self.pipeline();
        let mut released = pipeline.batch_appended(appended, events, replies);
        // Read under the lock: the WAL writer publishes an LSN before it takes this lock
        // to release it, so a record that became durable between the append and here is
        // released by one of the two, whichever comes second.
        released.extend(Self::durable_locked(&mut pipeline, durable_lsn()));
        self.send(pipeline, released, Releaser::Core(parts), false);
    }

    /// The WAL is durable through `lsn`: send what that releases. Returns whether the
    /// query stage's parts wait for the core (only ever for [`Releaser::WalWriter`]).
    pub fn durable(&self, lsn: u64, releaser: Releaser<'_>) -> bool {
        let mut pipeline = match releaser {
            Releaser::Core(_) => self.pipeline(),
            // A pipeline a panic left behind decides nothing more on this thread.
            Releaser::WalWriter => match self.pipeline.lock() {
                Ok(pipeline) => pipeline,
                Err(_) => return false,
            },
        };
        let released = Self::durable_locked(&mut pipeline, lsn);
        self.send(pipeline, released, releaser, false)
    }

    /// The core's last release before it stops, with everything it appended durable
    /// through `lsn`: as [`Outbox::durable`], and it also waits for a release the WAL
    /// writer is still sending and sends the parts that one leaves. The writer rings the
    /// core for such parts, but a stopping core hears no more rings, and the query stage
    /// would answer their reads `Stopped` once the core is gone.
    pub fn last_release(&self, lsn: u64, parts: &Sender<RecentPart>) {
        let mut pipeline = self.pipeline();
        let released = Self::durable_locked(&mut pipeline, lsn);
        self.send(pipeline, released, Releaser::Core(parts), true);
    }

    /// The WAL failed: every parked reply leaves, with its result if its record is
    /// durable through `lsn` and with `error` otherwise, then `unparked` (the failed
    /// batch's replies) with `error`. The pipeline applies and releases nothing more.
    pub fn wal_failed(
        &self,
        lsn: u64,
        error: &EngineError,
        unparked: Vec<Answer>,
        parts: &Sender<RecentPart>,
    ) {
        let mut pipeline = self.pipeline();
        let mut released = Self::durable_locked(&mut pipeline, lsn);
        for ((reply, result), durable) in pipeline.wal_failed() {
            released.push((reply, if durable { result } else { Err(error.clone()) }));
        }
        released.extend(
            unparked
                .into_iter()
                .map(|(reply, _)| (reply, Err(error.clone()))),
        );
        // The core may release nothing more after this: it waits for what the writer
        // is still sending, as its last release does.
        self.send(pipeline, released, Releaser::Core(parts), true);
    }

    /// The pipeline's release for a durable `lsn` that two threads report: an LSN at or
    /// below the one already seen releases nothing, and one past the newest record the
    /// core has told the pipeline of (the WAL writer can report a record before the core
    /// parks its replies) counts up to that record only.
    fn durable_locked(pipeline: &mut Pipeline<Answer>, lsn: u64) -> Vec<Answer> {
        let lsn = lsn.min(pipeline.lsn_last());
        if lsn <= pipeline.lsn_durable() {
            return Vec::new();
        }
        pipeline.durable(lsn)
    }

    /// Send `released` in order, taking the sending lock before letting go of the
    /// pipeline's. Returns whether parts were left for the core. `wait_for_writer`: take
    /// the sending lock even with nothing to send, so that a release the writer began
    /// under the pipeline's lock has ended, and its parts are sent, when this returns
    /// (`parts_left` alone can still read false while the writer is sending).
    fn send(
        &self,
        pipeline: MutexGuard<'_, Pipeline<Answer>>,
        released: Vec<Answer>,
        releaser: Releaser<'_>,
        wait_for_writer: bool,
    ) -> bool {
        let nothing_left = match releaser {
            Releaser::Core(_) => !wait_for_writer && !self.parts_left.load(Ordering::Acquire),
            // Parts it left before already rang the core.
            Releaser::WalWriter => true,
        };
        if released.is_empty() && nothing_left {
            return false;
        }
        let mut left = lock(&self.sending);
        drop(pipeline);
        match releaser {
            Releaser::Core(parts) => {
                self.parts_left.store(false, Ordering::Release);
                for (reply, result) in left.drain(..).chain(released) {
                    reply.send(result, parts);
                }
                false
            }
            Releaser::WalWriter => {
                for (reply, result) in released {
                    match reply {
                        ReplyTo::Caller(reply) => {
                            let _ = reply.send(result);
                        }
                        part @ ReplyTo::QueryStage { .. } => left.push((part, result)),
                    }
                }
                self.parts_left.store(!left.is_empty(), Ordering::Release);
                !left.is_empty()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::core::pipeline::{PipelineConfig, PipelineStart};
    use crate::core::request::{Reply, ReplySender};

    fn outbox() -> Outbox {
        let config = PipelineConfig {
            batch_events_max: 8189,
            checkpoint_batches: u32::MAX,
            checkpoint_events: u64::MAX,
            checkpoint_interval_ns: u64::MAX,
            transfers_uncheckpointed_max: u64::MAX,
        };
        Outbox::new(Pipeline::new(config, PipelineStart::default()))
    }

    /// A reply that notes `(lsn, index)`, the durable LSN it left at, and whether it
    /// left on the thread that made it (1) or another (0).
    fn noting(
        lsn: u64,
        index: u64,
        durable: &Arc<AtomicU64>,
        sent: &Arc<Mutex<Vec<[u64; 4]>>>,
    ) -> Answer {
        let (durable, sent) = (durable.clone(), sent.clone());
        let maker = std::thread::current().id();
        let reply = ReplySender::callback(Box::new(move |_| {
            let at = durable.load(Ordering::SeqCst);
            let on_maker = u64::from(std::thread::current().id() == maker);
            lock(&sent).push([lsn, index, at, on_maker]);
        }));
        (ReplyTo::Caller(reply), Ok(Reply::Created(Vec::new())))
    }

    #[test]
    fn replies_leave_once_in_order_and_only_when_durable_whichever_thread_releases_them() {
        const BATCHES: u64 = 20_000;
        let outbox = Arc::new(outbox());
        // The WAL: what the core appended, and what its writer made durable (published
        // before it releases, as `publish_durable` does before calling back).
        let appended = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (outbox, appended, durable) = (outbox.clone(), appended.clone(), durable.clone());
            std::thread::spawn(move || loop {
                let lsn = appended.load(Ordering::SeqCst);
                if lsn > durable.load(Ordering::SeqCst) {
                    durable.store(lsn, Ordering::SeqCst);
                    assert!(!outbox.durable(lsn, Releaser::WalWriter), "no parts here");
                }
                if lsn == BATCHES {
                    return;
                }
                std::thread::yield_now();
            })
        };
        let (parts, _stage) = crossbeam::channel::bounded(1);
        for lsn in 1..=BATCHES {
            // Appended first, told to the pipeline after: the writer can report the
            // record before its replies are parked.
            appended.store(lsn, Ordering::SeqCst);
            let replies = (0..3)
                .map(|index| noting(lsn, index, &durable, &sent))
                .collect();
            outbox.batch_appended(
                Some(lsn),
                3,
                replies,
                || durable.load(Ordering::SeqCst),
                &parts,
            );
        }
        writer.join().expect("the writer thread");
        // Everything durable has left by now, through one thread or the other: no reply
        // parked as its record was reported durable was stranded.
        assert_eq!(lock(&sent).len() as u64, 3 * BATCHES, "each reply");
        let by_writer = lock(&sent).iter().filter(|sent| sent[3] == 0).count();
        assert!(by_writer > 0, "the writer released some");
        outbox.durable(durable.load(Ordering::SeqCst), Releaser::Core(&parts));
        let sent = lock(&sent);
        assert_eq!(sent.len() as u64, 3 * BATCHES, "none twice");
        for (order, [lsn, index, durable_at, _]) in sent.iter().enumerate() {
            let order = order as u64;
            assert_eq!([*lsn, *index], [order / 3 + 1, order % 3], "in order");
            assert!(
                lsn <= durable_at,
                "LSN {lsn} left with {durable_at} durable"
            );
        }
        assert!(!outbox.pipeline().has_parked());
    }

    #[test]
    fn a_record_reported_durable_before_its_replies_are_parked_sends_them_when_parked() {
        let outbox = outbox();
        let durable = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (parts, _stage) = crossbeam::channel::bounded(1);
        outbox.batch_appended(
            Some(1),
            1,
            vec![noting(1, 0, &durable, &sent)],
            || 0,
            &parts,
        );
        // The WAL made records 1 and 2 durable and says so before the core has told the
        // pipeline of record 2: only record 1's reply can leave.
        durable.store(2, Ordering::SeqCst);
        assert!(!outbox.durable(2, Releaser::WalWriter));
        assert_eq!(lock(&sent).len(), 1);
        // The core parks record 2's reply; the WAL's durable LSN, read then, sends it.
        let replies = vec![noting(2, 0, &durable, &sent)];
        outbox.batch_appended(Some(2), 1, replies, || 2, &parts);
        assert_eq!(lock(&sent).len(), 2, "not stranded until the next group");
        assert!(!outbox.pipeline().has_parked());
    }

    #[test]
    fn a_release_the_writer_leaves_to_an_applying_core_is_never_missed() {
        // The writer publishes, then releases unless the core applies a batch; the core
        // lowers its flag, then releases. Once the writer is done with a record, its
        // reply has left, with no later event to carry it.
        const BATCHES: u64 = 5_000;
        let outbox = Arc::new(outbox());
        let appended = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (outbox, appended, durable, done) = (
                outbox.clone(),
                appended.clone(),
                durable.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                for lsn in 1..=BATCHES {
                    while appended.load(Ordering::SeqCst) < lsn {
                        std::hint::spin_loop();
                    }
                    durable.store(lsn, Ordering::SeqCst);
                    if !outbox.core_applying() {
                        outbox.durable(lsn, Releaser::WalWriter);
                    }
                    done.store(lsn, Ordering::SeqCst);
                }
            })
        };
        let (parts, _stage) = crossbeam::channel::bounded(1);
        for lsn in 1..=BATCHES {
            outbox.begin_applying();
            appended.store(lsn, Ordering::SeqCst);
            let replies = vec![noting(lsn, 0, &durable, &sent)];
            outbox.batch_appended(
                Some(lsn),
                1,
                replies,
                || durable.load(Ordering::SeqCst),
                &parts,
            );
            outbox.end_applying();
            outbox.durable(durable.load(Ordering::SeqCst), Releaser::Core(&parts));
            while done.load(Ordering::SeqCst) < lsn {
                std::hint::spin_loop();
            }
            assert_eq!(
                lock(&sent).len() as u64,
                lsn,
                "the reply of {lsn} was left behind"
            );
        }
        writer.join().expect("the writer thread");
    }

    #[test]
    fn the_wal_writer_leaves_query_parts_for_the_core_which_sends_them_first() {
        let outbox = outbox();
        let durable = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (parts, stage) = crossbeam::channel::bounded(4);
        let part = |id| {
            (
                ReplyTo::QueryStage { id, through: 0 },
                Ok(Reply::Transfers(Vec::new())),
            )
        };
        outbox.batch_appended(
            Some(1),
            2,
            vec![part(7), noting(1, 0, &durable, &sent)],
            || 0,
            &parts,
        );
        outbox.batch_appended(Some(2), 1, vec![part(8)], || 0, &parts);
        durable.store(1, Ordering::SeqCst);
        assert!(
            outbox.durable(1, Releaser::WalWriter),
            "a part waits for the core"
        );
        assert_eq!(lock(&sent).len(), 1, "the caller's reply left at once");
        assert!(stage.try_recv().is_err(), "the writer sends no part");
        durable.store(2, Ordering::SeqCst);
        outbox.durable(2, Releaser::Core(&parts));
        let ids: Vec<u64> = stage.try_iter().map(|part| part.id).collect();
        assert_eq!(ids, vec![7, 8], "the left part first");
        // A part left while the core has nothing of its own to release goes too.
        outbox.batch_appended(Some(3), 1, vec![part(9)], || 2, &parts);
        durable.store(3, Ordering::SeqCst);
        assert!(outbox.durable(3, Releaser::WalWriter));
        outbox.durable(3, Releaser::Core(&parts));
        let ids: Vec<u64> = stage.try_iter().map(|part| part.id).collect();
        assert_eq!(ids, vec![9]);
    }

    #[test]
    fn the_cores_last_release_sends_the_parts_of_a_release_the_writer_is_still_sending() {
        // The core stops right after the WAL reports its last record durable: the
        // writer's callback for that record may hold the parts it leaves, not yet
        // flagged. The last release waits for it and sends them.
        const ROUNDS: u64 = 20_000;
        // Each round a fresh outbox with one record, made durable by the writer.
        let (rounds, writer_rounds) = crossbeam::channel::bounded::<Arc<Outbox>>(1);
        let published = Arc::new(AtomicU64::new(0));
        let writer = {
            let published = published.clone();
            std::thread::spawn(move || {
                for (round, outbox) in (1..).zip(writer_rounds) {
                    // Published before the callback runs, as the WAL writer does.
                    published.store(round, Ordering::SeqCst);
                    outbox.durable(1, Releaser::WalWriter);
                }
            })
        };
        let (parts, stage) = crossbeam::channel::bounded(1);
        for round in 1..=ROUNDS {
            let outbox = Arc::new(outbox());
            let part = (
                ReplyTo::QueryStage {
                    id: round,
                    through: 0,
                },
                Ok(Reply::Transfers(Vec::new())),
            );
            outbox.batch_appended(Some(1), 1, vec![part], || 0, &parts);
            rounds.send(outbox.clone()).expect("the writer thread");
            while published.load(Ordering::SeqCst) < round {
                std::hint::spin_loop();
            }
            outbox.last_release(1, &parts);
            let sent = stage.try_recv().map(|part| part.id);
            assert_eq!(sent, Ok(round), "the part of round {round}");
        }
        drop(rounds);
        writer.join().expect("the writer thread");
    }

    #[test]
    fn a_failed_wal_answers_durable_replies_with_their_result_and_the_rest_with_the_error() {
        let outbox = outbox();
        let (parts, _stage) = crossbeam::channel::bounded(1);
        let results = Arc::new(Mutex::new(Vec::new()));
        let reply = |lsn: u64| {
            let results = results.clone();
            let sender =
                ReplySender::callback(Box::new(move |result: Result<Reply, EngineError>| {
                    lock(&results).push((lsn, result.is_ok()));
                }));
            (ReplyTo::Caller(sender), Ok(Reply::Created(Vec::new())))
        };
        outbox.batch_appended(Some(1), 1, vec![reply(1)], || 0, &parts);
        outbox.batch_appended(Some(2), 1, vec![reply(2)], || 0, &parts);
        outbox.wal_failed(1, &EngineError::Stopped, vec![reply(3)], &parts);
        assert_eq!(*lock(&results), vec![(1, true), (2, false), (3, false)]);
        assert!(
            !outbox.durable(2, Releaser::WalWriter),
            "nothing left after a failure"
        );
        assert_eq!(lock(&results).len(), 3);
    }
}
