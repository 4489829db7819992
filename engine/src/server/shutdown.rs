//! The shutdown signal as each connection sees it (the mini-redis pattern).
//!
//! The server holds a `broadcast::Sender<()>`; every connection subscribes when it is
//! accepted. Dropping the sender (or sending) tells them all to stop reading. The flag
//! makes the signal sticky: after the first `recv` returns, every later one returns at
//! once, so a connection can watch for it in several places.

use tokio::sync::broadcast;

#[derive(Debug)]
pub(crate) struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Wait for the signal. Cancel-safe.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // A message, a lag or a closed channel all mean the same thing: stop.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
