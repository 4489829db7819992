//! Request frames to typed engine requests, and engine replies to frames.
//!
//! The frame layer has already checked both checksums; what is left are the per-request
//! rules of the protocol (known operation, event count within the operation's limit, a
//! body of whole events). Breaking them earns an Error frame for that request only: the
//! body was read in full, so the stream is still in step.

use bytes::Bytes;
use protocol::frame::{error_body, ErrorCode, FrameKind, Header, HEADER_BYTES};
use protocol::records::{as_bytes, from_bytes};
use protocol::{Operation, QueryFilter};

use crate::core::{Reply, Request};

/// A request refused before it reached the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: String) -> Refusal {
        Refusal { code, message }
    }
}

/// Check a request frame against its operation's limits; `Ok` means [`decode`] succeeds.
pub(crate) fn check(header: &Header) -> Result<Operation, Refusal> {
    let Some(operation) = header.operation() else {
        let message = format!("unknown_operation: code {}", header.operation);
        return Err(Refusal::new(ErrorCode::UnknownOperation, message));
    };
    let events_max = operation.events_max();
    if header.event_count > events_max {
        let message = format!(
            "too_many_events: {} events, limit {events_max} for {operation}",
            header.event_count
        );
        return Err(Refusal::new(ErrorCode::TooManyEvents, message));
    }
    let event_bytes = operation.event_bytes();
    // u64: event_count * event_bytes can pass u32 for a lying header.
    let expected = u64::from(header.event_count) * u64::from(event_bytes);
    if expected != u64::from(header.body_bytes) {
        let message = format!(
            "body_not_whole_events: {} bytes for {} events of {event_bytes} bytes",
            header.body_bytes, header.event_count
        );
        return Err(Refusal::new(ErrorCode::BodyNotWholeEvents, message));
    }
    // Filters are one record: an empty filter request has nothing to ask.
    if events_max == 1 && header.event_count == 0 {
        let message = format!("body_not_whole_events: {operation} takes exactly 1 filter, got 0");
        return Err(Refusal::new(ErrorCode::BodyNotWholeEvents, message));
    }
    Ok(operation)
}

/// The typed request of a checked body (one copy, out of the read buffer).
pub(crate) fn decode(operation: Operation, body: &[u8]) -> Result<Request, Refusal> {
    let refuse = |error: protocol::records::LengthError| {
        Refusal::new(
            ErrorCode::BodyNotWholeEvents,
            format!("body_not_whole_events: {error}"),
        )
    };
    let request = match operation {
        Operation::CreateAccounts => {
            Request::CreateAccounts(from_bytes(body).map_err(refuse)?.into_owned())
        }
        Operation::CreateTransfers => {
            Request::CreateTransfers(from_bytes(body).map_err(refuse)?.into_owned())
        }
        Operation::LookupAccounts => {
            Request::LookupAccounts(from_bytes(body).map_err(refuse)?.into_owned())
        }
        Operation::LookupTransfers => {
            Request::LookupTransfers(from_bytes(body).map_err(refuse)?.into_owned())
        }
        Operation::GetAccountTransfers => {
            Request::GetAccountTransfers(first(body).map_err(refuse)?)
        }
        Operation::GetAccountBalances => Request::GetAccountBalances(first(body).map_err(refuse)?),
        Operation::QueryAccounts => {
            Request::QueryAccounts(first::<QueryFilter>(body).map_err(refuse)?)
        }
        Operation::QueryTransfers => {
            Request::QueryTransfers(first::<QueryFilter>(body).map_err(refuse)?)
        }
    };
    Ok(request)
}

/// The most bytes the answer to `request` can take (header included), whether a Reply or
/// an Error frame: what the connection sets aside of its reply budget before submitting
/// it. A filter's `limit` is capped by the records one reply carries.
pub(crate) fn reply_bytes_bound(request: &Request) -> u32 {
    let records_max = u64::from(protocol::BATCH_EVENTS_MAX);
    let (records, record_bytes) = match request {
        Request::CreateAccounts(_) | Request::CreateTransfers(_) => (
            u64::from(request.events_count()),
            size_of::<protocol::CreateResult>(),
        ),
        Request::LookupAccounts(ids) | Request::LookupTransfers(ids) => {
            (ids.len() as u64, size_of::<protocol::Account>())
        }
        Request::GetAccountTransfers(filter) => {
            (u64::from(filter.limit), size_of::<protocol::Transfer>())
        }
        Request::GetAccountBalances(filter) => (
            u64::from(filter.limit),
            size_of::<protocol::AccountBalance>(),
        ),
        Request::QueryAccounts(filter) => (u64::from(filter.limit), size_of::<protocol::Account>()),
        Request::QueryTransfers(filter) => {
            (u64::from(filter.limit), size_of::<protocol::Transfer>())
        }
    };
    let body = (records.min(records_max) * record_bytes as u64)
        .min(u64::from(protocol::frame::BODY_BYTES_MAX))
        .max(u64::from(protocol::frame::ERROR_MESSAGE_BYTES_MAX));
    // At most BODY_BYTES_MAX + 64: fits u32 by the frame format's own limit.
    (body + HEADER_BYTES as u64) as u32
}

/// The single filter record of a filter request.
fn first<T: bytemuck::Pod>(body: &[u8]) -> Result<T, protocol::records::LengthError> {
    let records = from_bytes::<T>(body)?;
    records
        .first()
        .copied()
        .ok_or(protocol::records::LengthError {
            length_bytes: body.len() as u64,
            record_bytes: size_of::<T>() as u32,
        })
}

/// A frame ready for the socket: the encoded header and a body that is either owned bytes
/// or the reply's records viewed as bytes (no copy of large replies).
pub(crate) struct OutFrame {
    pub header: [u8; HEADER_BYTES],
    pub body: OutBody,
}

pub(crate) enum OutBody {
    Bytes(Bytes),
    Reply(Reply),
}

impl OutBody {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            OutBody::Bytes(bytes) => bytes,
            OutBody::Reply(reply) => reply_bytes(reply),
        }
    }
}

fn reply_bytes(reply: &Reply) -> &[u8] {
    match reply {
        Reply::Created(results) => as_bytes(results),
        Reply::Accounts(accounts) => as_bytes(accounts),
        Reply::Transfers(transfers) => as_bytes(transfers),
        Reply::Balances(balances) => as_bytes(balances),
    }
}

fn reply_records(reply: &Reply) -> usize {
    match reply {
        Reply::Created(results) => results.len(),
        Reply::Accounts(accounts) => accounts.len(),
        Reply::Transfers(transfers) => transfers.len(),
        Reply::Balances(balances) => balances.len(),
    }
}

/// The Reply frame for `reply`. `None` if it would not fit one frame, which the engine's
/// limits rule out (at most 8189 results of at most 128 bytes): answer Internal then.
pub(crate) fn reply_frame(operation: Operation, request_id: u64, reply: Reply) -> Option<OutFrame> {
    let records = u32::try_from(reply_records(&reply)).ok()?;
    let body = reply_bytes(&reply);
    if body.len() > protocol::frame::BODY_BYTES_MAX as usize {
        return None;
    }
    let header = Header::new(
        FrameKind::Reply,
        operation.code(),
        request_id,
        records,
        0,
        body,
    );
    Some(OutFrame {
        header: header.encode(),
        body: OutBody::Reply(reply),
    })
}

/// An Error frame about request `request_id` (0 when about the connection).
pub(crate) fn error_frame(
    operation: u8,
    request_id: u64,
    code: ErrorCode,
    message: &str,
) -> OutFrame {
    let body = Bytes::copy_from_slice(error_body(message));
    let header = Header::new(
        FrameKind::Error,
        operation,
        request_id,
        0,
        code.code(),
        &body,
    );
    OutFrame {
        header: header.encode(),
        body: OutBody::Bytes(body),
    }
}

/// The Handshake frame agreeing on `version`: header at that version, body [version, version].
pub(crate) fn handshake_frame(version: u16) -> OutFrame {
    let body = protocol::frame::handshake_body(version, version);
    let mut header = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &body);
    header.version = version;
    OutFrame {
        header: header.encode(),
        body: OutBody::Bytes(Bytes::copy_from_slice(&body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Account, CreateResult};

    fn request_header(operation: u8, event_count: u32, body: &[u8]) -> Header {
        Header::new(FrameKind::Request, operation, 9, event_count, 0, body)
    }

    #[test]
    fn requests_over_a_limit_are_refused_with_the_limit_named() {
        let unknown = check(&request_header(42, 0, &[])).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::UnknownOperation);
        let ids = vec![0u8; 16 * 8190];
        let too_many = check(&request_header(3, 8190, &ids)).unwrap_err();
        assert_eq!(too_many.code, ErrorCode::TooManyEvents);
        assert!(too_many.message.contains("8189"), "{}", too_many.message);
        let ragged = check(&request_header(3, 2, &[0; 31])).unwrap_err();
        assert_eq!(ragged.code, ErrorCode::BodyNotWholeEvents);
        let two_filters = check(&request_header(7, 2, &[0; 128])).unwrap_err();
        assert_eq!(two_filters.code, ErrorCode::TooManyEvents);
        let no_filter = check(&request_header(7, 0, &[])).unwrap_err();
        assert_eq!(no_filter.code, ErrorCode::BodyNotWholeEvents);
    }

    #[test]
    fn bodies_decode_to_typed_requests() {
        let accounts = [Account {
            id: 3,
            ledger: 1,
            code: 1,
            ..Account::default()
        }; 2];
        let body = as_bytes(&accounts);
        let operation = check(&request_header(1, 2, body)).unwrap();
        assert_eq!(
            decode(operation, body).unwrap(),
            Request::CreateAccounts(accounts.to_vec())
        );
        // Unaligned bodies are copied out rather than refused.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&5u128.to_le_bytes());
        assert_eq!(
            decode(Operation::LookupAccounts, &shifted[1..]).unwrap(),
            Request::LookupAccounts(vec![5])
        );
        let filter = QueryFilter {
            ledger: 7,
            limit: 10,
            ..QueryFilter::default()
        };
        let request = decode(Operation::QueryTransfers, as_bytes(&[filter])).unwrap();
        assert_eq!(request, Request::QueryTransfers(filter));
    }

    #[test]
    fn reply_frames_carry_the_records_and_their_count() {
        let results = vec![CreateResult::default(); 3];
        let frame = reply_frame(
            Operation::CreateTransfers,
            77,
            Reply::Created(results.clone()),
        )
        .unwrap();
        let header = Header::decode(&frame.header).unwrap();
        assert_eq!(
            (header.request_id, header.event_count, header.body_bytes),
            (77, 3, 48)
        );
        header.check_body(frame.body.as_slice()).unwrap();
        assert_eq!(frame.body.as_slice(), as_bytes(&results));
    }
}
