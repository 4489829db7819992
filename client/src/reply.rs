//! Pure checks of what the server sends back. Everything here is a function of the bytes
//! and of what was asked: no I/O, so each rule is unit-tested without a socket.

use protocol::frame::{self, ErrorCode, Header};
use protocol::records;
use protocol::Operation;

/// What the client remembers about a request until its reply arrives: enough to check that
/// the reply answers this request and has the right shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Expected {
    pub operation: Operation,
    pub event_count: u32,
}

/// Checks a Reply frame's header against the request it answers. The body checksum was
/// already checked when the frame was read.
pub(crate) fn check_reply(expected: Expected, header: &Header) -> Result<(), String> {
    if header.operation != expected.operation.code() {
        return Err(format!(
            "reply to request {} names operation {}, the request was {}",
            header.request_id, header.operation, expected.operation
        ));
    }
    let result_bytes = expected.operation.result_bytes();
    let body_bytes_expected = u64::from(header.event_count) * u64::from(result_bytes);
    if u64::from(header.body_bytes) != body_bytes_expected {
        return Err(format!(
            "reply to request {} has {} bytes for {} records of {} bytes",
            header.request_id, header.body_bytes, header.event_count, result_bytes
        ));
    }
    check_record_count(expected, header)
}

/// Creates answer every event exactly once; lookups answer each id at most once.
fn check_record_count(expected: Expected, header: &Header) -> Result<(), String> {
    let count_ok = match expected.operation {
        Operation::CreateAccounts | Operation::CreateTransfers => {
            header.event_count == expected.event_count
        }
        Operation::LookupAccounts | Operation::LookupTransfers => {
            header.event_count <= expected.event_count
        }
        // Filters return at most their limit, which the server caps at BATCH_EVENTS_MAX.
        Operation::GetAccountTransfers
        | Operation::GetAccountBalances
        | Operation::QueryAccounts
        | Operation::QueryTransfers => header.event_count <= protocol::BATCH_EVENTS_MAX,
    };
    if count_ok {
        return Ok(());
    }
    Err(format!(
        "reply to {} request {} has {} results for {} events",
        expected.operation, header.request_id, header.event_count, expected.event_count
    ))
}

/// The code and message of an Error frame, or why the frame is itself invalid.
pub(crate) fn parse_error(header: &Header, body: &[u8]) -> Result<(ErrorCode, String), String> {
    let message = frame::parse_error_body(body);
    match ErrorCode::from_code(header.error) {
        Some(code) => Ok((code, message)),
        None => Err(format!(
            "error frame with unknown code {} ({message})",
            header.error
        )),
    }
}

/// Checks that an Error frame about a request names that request's operation (or none:
/// the server may not have understood it).
pub(crate) fn check_error(expected: Expected, header: &Header) -> Result<(), String> {
    if header.operation == 0 || header.operation == expected.operation.code() {
        return Ok(());
    }
    Err(format!(
        "error frame for request {} names operation {}, the request was {}",
        header.request_id, header.operation, expected.operation
    ))
}

/// Records of a reply body whose size was checked by [`check_reply`].
pub(crate) fn decode_records<T: bytemuck::Pod>(body: &[u8]) -> Result<Vec<T>, String> {
    records::from_bytes::<T>(body)
        .map(|records| records.into_owned())
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::frame::FrameKind;

    fn reply(operation: Operation, event_count: u32, body_bytes: usize) -> Header {
        let body = vec![0u8; body_bytes];
        Header::new(FrameKind::Reply, operation.code(), 7, event_count, 0, &body)
    }

    const CREATE_TWO: Expected = Expected {
        operation: Operation::CreateTransfers,
        event_count: 2,
    };

    #[test]
    fn a_create_reply_needs_one_result_per_event() {
        assert_eq!(
            check_reply(CREATE_TWO, &reply(Operation::CreateTransfers, 2, 32)),
            Ok(())
        );
        assert!(check_reply(CREATE_TWO, &reply(Operation::CreateTransfers, 1, 16)).is_err());
        assert!(check_reply(CREATE_TWO, &reply(Operation::CreateTransfers, 3, 48)).is_err());
    }

    #[test]
    fn a_reply_must_be_whole_records_of_its_operation() {
        assert!(check_reply(CREATE_TWO, &reply(Operation::CreateTransfers, 2, 33)).is_err());
        assert!(check_reply(CREATE_TWO, &reply(Operation::CreateAccounts, 2, 32)).is_err());
        let lookup = Expected {
            operation: Operation::LookupAccounts,
            event_count: 3,
        };
        assert_eq!(
            check_reply(lookup, &reply(Operation::LookupAccounts, 1, 128)),
            Ok(())
        );
        assert!(check_reply(lookup, &reply(Operation::LookupAccounts, 4, 512)).is_err());
        assert!(check_reply(lookup, &reply(Operation::LookupAccounts, 1, 16)).is_err());
        let query = Expected {
            operation: Operation::QueryTransfers,
            event_count: 1,
        };
        assert_eq!(
            check_reply(query, &reply(Operation::QueryTransfers, 2, 256)),
            Ok(())
        );
        let over_cap = reply(Operation::QueryTransfers, 8190, 8190 * 128);
        assert!(check_reply(query, &over_cap).is_err());
    }

    #[test]
    fn error_frames_are_checked_for_code_and_operation() {
        let body = b"busy: queue full";
        let mut header = Header::new(FrameKind::Error, 2, 7, 0, ErrorCode::Busy.code(), body);
        assert_eq!(
            parse_error(&header, body),
            Ok((ErrorCode::Busy, "busy: queue full".to_string()))
        );
        assert_eq!(check_error(CREATE_TWO, &header), Ok(()));
        header.operation = 0;
        assert_eq!(check_error(CREATE_TWO, &header), Ok(()));
        header.operation = 3;
        assert!(check_error(CREATE_TWO, &header).is_err());
        header.error = 999;
        assert!(parse_error(&header, body).is_err());
    }
}
