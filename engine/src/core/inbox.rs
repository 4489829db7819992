//! The core's inbox: the bounded queue every submission reaches the core through, and a
//! doorbell that wakes the core when a submission arrives or the WAL writer needs it.
//!
//! Why not crossbeam's blocking receive: before it parks, it spins and then calls
//! `sched_yield` up to four times. With small requests the core waits thousands of times a
//! second, and on a machine with more runnable threads than cores (tokio workers, the WAL
//! writer, a load generator beside the daemon) each yield is a context switch that hands
//! the core's core to someone else. A library shim that made `sched_yield` return at once
//! took `settle-bench --clients 64 --batch-size 1` from 51 k to 62 k transfers/s (medians
//! of four interleaved runs, 2026-11-28). The inbox parks the core with
//! `std::thread::park_timeout`, and whoever fills the queue unparks it, only when it sleeps.
//!
//! Lost wake-ups cannot happen: the core announces `sleeping` and then looks at the queue
//! once more, a sender pushes and then looks at `sleeping`, with a sequentially consistent
//! fence between the store and the load on both sides; so at least one of them sees the
//! other. `park`'s token covers an unpark that lands before the park.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, SendError, Sender, TryRecvError, TrySendError};

use super::submit::Admitted;

/// A bounded inbox for `capacity` submissions.
pub(crate) fn inbox(capacity: usize) -> (InboxSender, Inbox) {
    let (sender, receiver) = crossbeam::channel::bounded(capacity);
    let bell = Arc::new(Doorbell {
        sleeping: AtomicBool::new(false),
        core: OnceLock::new(),
    });
    (
        InboxSender {
            queue: Some(sender),
            bell: bell.clone(),
        },
        Inbox {
            queue: receiver,
            bell,
        },
    )
}

struct Doorbell {
    /// Set while the core is parked (or about to park).
    sleeping: AtomicBool,
    /// The core's thread, known from its first wait.
    core: OnceLock<Thread>,
}

impl Doorbell {
    fn ring(&self) {
        // Pairs with the fence in `Inbox::wait`: the push is visible before the load.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            if let Some(core) = self.core.get() {
                core.unpark();
            }
        }
    }
}

/// Rings the inbox's doorbell from any thread (see [`InboxSender::wake`]).
pub(crate) type Wake = Box<dyn Fn() + Send + Sync>;

/// The sending side: the read stage, async submitters, and (for its wake) the WAL.
#[derive(Clone)]
pub(crate) struct InboxSender {
    /// Taken only by `drop`.
    queue: Option<Sender<Admitted>>,
    bell: Arc<Doorbell>,
}

impl Drop for InboxSender {
    /// The last sender gone disconnects the inbox, which the core must hear at once, not
    /// at its next timeout: drop the channel's sender first, then ring.
    fn drop(&mut self) {
        drop(self.queue.take());
        self.bell.ring();
    }
}

impl InboxSender {
    fn queue(&self) -> &Sender<Admitted> {
        self.queue
            .as_ref()
            .expect("the queue is taken only when dropped")
    }

    /// Queue `admitted`, blocking while the inbox is full.
    // The error hands the submission back, as crossbeam's does, so its reply can be sent.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, admitted: Admitted) -> Result<(), SendError<Admitted>> {
        self.queue().send(admitted)?;
        self.bell.ring();
        Ok(())
    }

    /// Queue `admitted` if there is room.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, admitted: Admitted) -> Result<(), TrySendError<Admitted>> {
        self.queue().try_send(admitted)?;
        self.bell.ring();
        Ok(())
    }

    /// Wakes the core if it sleeps: for the WAL's durability callback.
    pub fn wake(&self) -> Wake {
        let bell = self.bell.clone();
        Box::new(move || bell.ring())
    }
}

/// The core's side.
pub(crate) struct Inbox {
    queue: Receiver<Admitted>,
    bell: Arc<Doorbell>,
}

/// Why [`Inbox::wait`] returned.
pub(crate) enum Woken {
    Submission(Admitted),
    /// A message on the durability channel: for the core, the WAL writer left it the
    /// query stage's parts (see `core_thread::hear_durability`).
    Durable,
    /// The durability channel disconnected: the WAL stopped or failed.
    DurableClosed,
    TimedOut,
    /// Every sender is gone: nobody can submit or shut down any more.
    Disconnected,
}

impl Inbox {
    pub fn try_recv(&self) -> Result<Admitted, TryRecvError> {
        self.queue.try_recv()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Wait up to `timeout` for a submission or, when `durable` is given, a durability
    /// notification on it (its WAL subscription must wake this inbox: see
    /// [`InboxSender::wake`]). Always called from the same thread.
    pub fn wait(&self, durable: Option<&Receiver<u64>>, timeout: Duration) -> Woken {
        let core = self.bell.core.get_or_init(std::thread::current);
        debug_assert_eq!(
            core.id(),
            std::thread::current().id(),
            "one thread waits on the inbox"
        );
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(woken) = self.poll(durable) {
                return woken;
            }
            self.bell.sleeping.store(true, Ordering::Relaxed);
            // Pairs with the fence in `Doorbell::ring`: `sleeping` is visible before the
            // queue is looked at again.
            fence(Ordering::SeqCst);
            let woken = self.poll(durable);
            let left = deadline.saturating_duration_since(Instant::now());
            if woken.is_none() && !left.is_zero() {
                std::thread::park_timeout(left);
            }
            self.bell.sleeping.store(false, Ordering::Relaxed);
            if let Some(woken) = woken {
                return woken;
            }
            if Instant::now() >= deadline {
                return self.poll(durable).unwrap_or(Woken::TimedOut);
            }
        }
    }

    fn poll(&self, durable: Option<&Receiver<u64>>) -> Option<Woken> {
        match self.queue.try_recv() {
            Ok(admitted) => return Some(Woken::Submission(admitted)),
            Err(TryRecvError::Disconnected) => return Some(Woken::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        match durable?.try_recv() {
            Ok(_) => Some(Woken::Durable),
            Err(TryRecvError::Disconnected) => Some(Woken::DurableClosed),
            Err(TryRecvError::Empty) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::core_thread::Submission;

    fn shutdown() -> Admitted {
        Admitted {
            submission: Submission::Shutdown,
            slot: None,
        }
    }

    #[test]
    fn a_submission_from_another_thread_wakes_a_parked_core() {
        let (sender, inbox) = inbox(4);
        let started = Instant::now();
        let sending = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sender.try_send(shutdown()).map_err(|_| "full").unwrap();
            sender
        });
        let woken = inbox.wait(None, Duration::from_secs(30));
        assert!(matches!(woken, Woken::Submission(_)));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken, not timed out"
        );
        drop(sending.join().unwrap());
        assert!(matches!(
            inbox.wait(None, Duration::from_secs(30)),
            Woken::Disconnected
        ));
    }

    #[test]
    fn a_durability_notification_wakes_and_its_end_reads_closed() {
        let (sender, inbox) = inbox(4);
        let (durable, notifications) = crossbeam::channel::bounded(1);
        let wake = sender.wake();
        let notifying = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            durable.try_send(7).unwrap();
            wake();
            std::thread::sleep(Duration::from_millis(20));
            drop(durable);
            wake();
        });
        // Woken, not found at the timeout: each wait ends long before it.
        let started = Instant::now();
        assert!(matches!(
            inbox.wait(Some(&notifications), Duration::from_secs(30)),
            Woken::Durable
        ));
        assert!(matches!(
            inbox.wait(Some(&notifications), Duration::from_secs(30)),
            Woken::DurableClosed
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
        notifying.join().unwrap();
        drop(sender);
    }

    #[test]
    fn every_single_send_wakes_a_parked_core() {
        // Ping-pong: each send comes while the core is parked (or about to park) with
        // nothing else queued, so a lost wake-up would leave a wait to time out.
        let (sender, inbox) = inbox(4);
        let (ack, acks) = crossbeam::channel::bounded::<()>(1);
        let pinging = std::thread::spawn(move || {
            for round in 0..2_000u32 {
                // Now and then let the core get all the way into its park.
                if round % 8 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                sender.try_send(shutdown()).map_err(|_| "full").unwrap();
                acks.recv().unwrap();
            }
        });
        for round in 0..2_000 {
            // A lost wake-up shows as a wait that lasts until its timeout (the message
            // is found then), so the bound is on the time waited.
            let started = Instant::now();
            let woken = inbox.wait(None, Duration::from_secs(5));
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the wake-up of send {round} was lost"
            );
            assert!(matches!(woken, Woken::Submission(_)));
            ack.send(()).unwrap();
        }
        pinging.join().unwrap();
    }

    #[test]
    fn the_last_sender_dropped_wakes_a_parked_core() {
        let (sender, inbox) = inbox(4);
        let dropping = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(sender);
        });
        let started = Instant::now();
        assert!(matches!(
            inbox.wait(None, Duration::from_secs(30)),
            Woken::Disconnected
        ));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken, not timed out"
        );
        dropping.join().unwrap();
    }

    #[test]
    fn nothing_arriving_times_out() {
        let (_sender, inbox) = inbox(1);
        let started = Instant::now();
        assert!(matches!(
            inbox.wait(None, Duration::from_millis(30)),
            Woken::TimedOut
        ));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn many_senders_never_lose_a_wake() {
        // Every send, and the drop of the last sender, must wake the core: a lost wake-up
        // would stall this test until the 30 s timeout of some wait, which the elapsed
        // bound catches.
        let (sender, inbox) = inbox(64);
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        while sender.try_send(shutdown()).is_err() {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(sender);
        let started = Instant::now();
        let mut received = 0;
        loop {
            match inbox.wait(None, Duration::from_secs(30)) {
                Woken::Submission(_) => received += 1,
                Woken::Disconnected => break,
                Woken::TimedOut => panic!("a wake-up was lost after {received} submissions"),
                Woken::Durable | Woken::DurableClosed => unreachable!(),
            }
        }
        for sending in senders {
            sending.join().unwrap();
        }
        assert_eq!(received, 8_000);
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
