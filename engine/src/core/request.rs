//! What callers hand the engine and what they get back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crossbeam::channel::Sender;
use protocol::{
    Account, AccountBalance, AccountFilter, CreateResult, Operation, QueryFilter, Transfer,
};
use tokio::sync::oneshot;

use super::query_stage::{self, RecentPart};
use super::EngineError;

/// One request: an operation and its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
    LookupAccounts(Vec<u128>),
    LookupTransfers(Vec<u128>),
    GetAccountTransfers(AccountFilter),
    GetAccountBalances(AccountFilter),
    QueryAccounts(QueryFilter),
    QueryTransfers(QueryFilter),
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Request::CreateAccounts(_) => Operation::CreateAccounts,
            Request::CreateTransfers(_) => Operation::CreateTransfers,
            Request::LookupAccounts(_) => Operation::LookupAccounts,
            Request::LookupTransfers(_) => Operation::LookupTransfers,
            Request::GetAccountTransfers(_) => Operation::GetAccountTransfers,
            Request::GetAccountBalances(_) => Operation::GetAccountBalances,
            Request::QueryAccounts(_) => Operation::QueryAccounts,
            Request::QueryTransfers(_) => Operation::QueryTransfers,
        }
    }

    pub fn events_count(&self) -> u32 {
        let count = match self {
            Request::CreateAccounts(events) => events.len(),
            Request::CreateTransfers(events) => events.len(),
            Request::LookupAccounts(ids) | Request::LookupTransfers(ids) => ids.len(),
            _ => 1,
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// The answer to one request, in the order of its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// One result per event of `create_accounts` / `create_transfers`.
    Created(Vec<CreateResult>),
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
    Balances(Vec<AccountBalance>),
}

/// The reply to a submitted request, delivered once the batch that carried it is durable.
///
/// Await it from async code, or call [`PendingReply::wait`] from a thread.
#[derive(Debug)]
pub struct PendingReply {
    receiver: oneshot::Receiver<Result<Reply, EngineError>>,
}

/// Where the core sends a request's reply: a [`PendingReply`]'s channel, or a callback the
/// submitter gave (the server's, which writes a small reply into its socket or hands it
/// to its connection's writer).
///
/// Sending consumes it. One dropped unsent (a thread that died) answers
/// [`EngineError::Stopped`], so no submitter waits forever.
pub(crate) struct ReplySender(Option<Destination>);

enum Destination {
    Channel(oneshot::Sender<Result<Reply, EngineError>>),
    Callback(OnReply),
}

/// Called once, with a request's reply, on the WAL writer thread (right after the sync
/// that made it durable), the core thread or the read stage: it must only hand the reply
/// on (nothing slow, no blocking I/O; on the WAL writer it delays the next group commit).
/// The server's may make one non-blocking write of a frame of at most 4 KiB
/// (`server/direct.rs`). A panic there stops the WAL and fails the engine.
pub type OnReply = Box<dyn FnOnce(Result<Reply, EngineError>) + Send>;

impl ReplySender {
    pub(crate) fn callback(on_reply: OnReply) -> ReplySender {
        ReplySender(Some(Destination::Callback(on_reply)))
    }

    /// Drop without answering: for a submission refused before it was queued, whose
    /// submitter learns of the refusal from the error instead.
    pub(crate) fn disarm(mut self) {
        self.0.take();
    }

    /// Deliver `result`. `Err` gives it back when the receiver is gone (a channel whose
    /// [`PendingReply`] was dropped); a callback always takes it.
    pub(crate) fn send(
        mut self,
        result: Result<Reply, EngineError>,
    ) -> Result<(), Result<Reply, EngineError>> {
        match self.0.take() {
            Some(Destination::Channel(sender)) => sender.send(result),
            Some(Destination::Callback(on_reply)) => {
                on_reply(result);
                Ok(())
            }
            None => unreachable!("a reply is sent once: send consumes the sender"),
        }
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        if let Some(Destination::Callback(on_reply)) = self.0.take() {
            on_reply(Err(EngineError::Stopped));
        }
        // A dropped channel sender already reads as `Stopped` on the other side.
    }
}

impl std::fmt::Debug for ReplySender {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Some(Destination::Channel(_)) => "channel",
            Some(Destination::Callback(_)) => "callback",
            None => "sent",
        };
        formatter.debug_tuple("ReplySender").field(&kind).finish()
    }
}

/// Where the core sends a request's answer once its batch is durable.
pub(crate) enum ReplyTo {
    /// The submitter, through its [`PendingReply`].
    Caller(ReplySender),
    /// The query stage, which joins memory's part of range read `id`, read at the core's
    /// watermark `through`, with the store's before it answers the submitter (see
    /// `query_stage`).
    QueryStage { id: u64, through: u64 },
}

impl ReplyTo {
    /// Deliver the answer: to the submitter, or through `parts`, the core's channel to the
    /// query stage. A submitter that stopped waiting is its own business.
    pub fn send(self, result: Result<Reply, EngineError>, parts: &Sender<RecentPart>) {
        match self {
            ReplyTo::Caller(reply) => {
                let _ = reply.send(result);
            }
            ReplyTo::QueryStage { id, through } => query_stage::send_part(
                parts,
                RecentPart {
                    id,
                    through,
                    result,
                },
            ),
        }
    }
}

impl PendingReply {
    pub(crate) fn channel() -> (ReplySender, PendingReply) {
        let (sender, receiver) = oneshot::channel();
        let sender = ReplySender(Some(Destination::Channel(sender)));
        (sender, PendingReply { receiver })
    }

    /// Block the calling thread until the reply arrives. Not for async tasks: await the
    /// `PendingReply` there instead.
    pub fn wait(self) -> Result<Reply, EngineError> {
        self.receiver
            .blocking_recv()
            .unwrap_or(Err(EngineError::Stopped))
    }
}

impl Future for PendingReply {
    type Output = Result<Reply, EngineError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(context)
            .map(|received| received.unwrap_or(Err(EngineError::Stopped)))
    }
}
