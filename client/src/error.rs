//! The one error type of the client.

use protocol::frame::ErrorCode;

/// Everything a call on [`Client`](crate::Client) can fail with.
///
/// What the caller can do about each:
/// - `Io`, `Disconnected`: the connection is gone; connect again. A write request that was
///   in flight may or may not have been applied: retry it with the same ids (ids are the
///   idempotency keys, so a retry returns `exists` rather than applying twice).
/// - `Handshake`: the server is not a settled server, or speaks no version in common.
/// - `Server`: the server refused this request (see [`ErrorCode::is_fatal`] for whether the
///   connection survived).
/// - `Protocol`: the server sent bytes that break the protocol; the connection was closed.
/// - `TooManyEvents`, `InvalidArgument`: the call was refused before anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake failed: {reason}")]
    Handshake { reason: String },
    #[error("server answered {code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("protocol violation by the server, connection closed: {reason}")]
    Protocol { reason: String },
    #[error("disconnected from the server")]
    Disconnected,
    #[error("too_many_events: {count} events, limit {max}")]
    TooManyEvents { count: u64, max: u32 },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
}

impl ClientError {
    /// True when the connection this error came from is closed for good.
    pub fn is_connection_closed(&self) -> bool {
        match self {
            ClientError::Io(_)
            | ClientError::Handshake { .. }
            | ClientError::Protocol { .. }
            | ClientError::Disconnected => true,
            ClientError::Server { code, .. } => code.is_fatal(),
            ClientError::TooManyEvents { .. } | ClientError::InvalidArgument { .. } => false,
        }
    }
}
