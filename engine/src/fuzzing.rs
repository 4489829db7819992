//! Checks shared by the `frame_header`, `request_body` and `wal_record` fuzz targets
//! (`fuzz/`, nightly) and the proptests of this crate (`make test`, stable): one property,
//! two drivers. Not part of the engine's API; it exists because the server's frame
//! parser and request decoders are crate-private.
//!
//! As in `protocol::fuzzing` and `wal::fuzzing`, the first input byte is a mode that
//! re-signs checksums, so inputs reach the checks behind them.

use bytes::BytesMut;
use protocol::frame::{
    FrameError, FrameKind, Header, BODY_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX,
    HANDSHAKE_BODY_BYTES_MAX, HEADER_BYTES,
};
use protocol::fuzzing::{resign, Resign};
use protocol::records::as_bytes;
use protocol::{Operation, TIMESTAMP_MAX};

use crate::core::record::{self, Entry, RecordBuilder};
use crate::core::Request;
use crate::ledger::{Ledger, OldTransfers};
use crate::server::codec;
use crate::server::frame_io::{parse, Parsed};

/// Mode bits of [`check_frame_stream`].
pub struct StreamMode;

impl StreamMode {
    /// The stream is a connection's first bytes: its first frame must be a handshake.
    pub const FIRST: u8 = 1 << 0;
    /// Each frame's checksums are recomputed where its body fits the stream.
    pub const RESIGN: u8 = 1 << 1;
    /// Bits 2..8: the stream arrives in pieces of (this + 1) bytes.
    pub const CHUNK_SHIFT: u8 = 2;
}

/// What the server's frame parser made of a stream.
#[derive(Debug, PartialEq, Eq)]
struct Parsing {
    frames: Vec<(Header, Vec<u8>)>,
    error: Option<FrameError>,
    /// Bytes buffered at the end (compared only when there was no error: an error stops
    /// reading wherever the last piece ended).
    left_bytes: usize,
}

/// `data` = mode byte ([`StreamMode`]), then the bytes of a connection. The incremental
/// parser (`server::frame_io::parse`) finds the same frames and the same error whether
/// the stream arrives whole or in pieces; each frame is exactly the next bytes of the
/// stream with a checked header and body; the first frame, when asked, is a handshake
/// of bounded size; and what is left unparsed is less than one frame.
pub fn check_frame_stream(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let mut stream = stream.to_vec();
    if mode & StreamMode::RESIGN != 0 {
        resign_frames(&mut stream);
    }
    let first = mode & StreamMode::FIRST != 0;
    let chunk_bytes = usize::from(mode >> StreamMode::CHUNK_SHIFT) + 1;
    let whole = parse_stream(&stream, first, stream.len().max(1));
    let pieces = parse_stream(&stream, first, chunk_bytes);
    assert_eq!(
        whole.frames, pieces.frames,
        "frames depend on how bytes arrive"
    );
    assert_eq!(
        whole.error, pieces.error,
        "errors depend on how bytes arrive"
    );
    let mut offset = 0;
    for (index, (header, body)) in whole.frames.iter().enumerate() {
        assert_eq!(&header.encode()[..], &stream[offset..offset + HEADER_BYTES]);
        offset += HEADER_BYTES;
        assert_eq!(&body[..], &stream[offset..offset + body.len()]);
        offset += body.len();
        header
            .check_body(body)
            .expect("a parsed frame's body is checked");
        if first && index == 0 {
            assert_eq!(header.kind, FrameKind::Handshake);
            assert!(header.body_bytes <= HANDSHAKE_BODY_BYTES_MAX);
        }
    }
    match &whole.error {
        Some(error) => assert!(error.code().is_fatal(), "{error}"),
        None => {
            assert_eq!(whole.left_bytes, pieces.left_bytes);
            assert_eq!(whole.left_bytes, stream.len() - offset);
            check_incomplete(&stream[offset..]);
        }
    }
}

/// Bytes the parser left for later are the start of one frame it cannot finish yet.
fn check_incomplete(left: &[u8]) {
    let Some(header) = left.first_chunk::<HEADER_BYTES>() else {
        return;
    };
    let header = Header::decode(header).expect("a buffered header was checked");
    assert!(left.len() < HEADER_BYTES + header.body_bytes as usize);
}

fn parse_stream(stream: &[u8], mut first: bool, chunk_bytes: usize) -> Parsing {
    let (mut buffer, mut header) = (BytesMut::new(), None);
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk_bytes) {
        buffer.extend_from_slice(piece);
        loop {
            match parse(&mut buffer, &mut header, first) {
                Ok(Parsed::Frame(frame)) => {
                    // The server calls handshake_done after the first frame.
                    first = false;
                    frames.push((frame.header, frame.body.to_vec()));
                }
                Ok(Parsed::Incomplete) => break,
                Err(error) => {
                    let left_bytes = buffer.len();
                    return Parsing {
                        frames,
                        error: Some(error),
                        left_bytes,
                    };
                }
            }
        }
    }
    Parsing {
        frames,
        error: None,
        left_bytes: buffer.len(),
    }
}

/// Recompute the checksums of each frame of `stream` whose body fits, walking frames by
/// their body_bytes; a frame whose body runs past the end gets its header checksum only.
fn resign_frames(stream: &mut [u8]) {
    let mut offset = 0;
    while let Some(rest) = stream.get_mut(offset..) {
        let Some((header, after)) = rest.split_first_chunk_mut::<HEADER_BYTES>() else {
            return;
        };
        let body_bytes = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
        let Some(body) = after.get(..body_bytes as usize) else {
            resign(Resign::HEADER_CHECKSUM, header, &[]);
            return;
        };
        resign(
            Resign::BODY_CHECKSUM | Resign::HEADER_CHECKSUM,
            header,
            body,
        );
        offset += HEADER_BYTES + body.len();
    }
}

/// `data` = mode byte (`protocol::fuzzing::Resign` bits), a 64-byte header, its body.
/// Every operation's decoder takes exactly the bodies of whole records and gives them
/// back unchanged; a request frame that passes the server's checks (`codec::check`)
/// decodes (its documented promise) to a request of the header's operation and event
/// count, whose reply fits the frame format; a refusal is not fatal and names its code.
pub fn check_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((header, body)) = rest.split_first_chunk::<HEADER_BYTES>() else {
        return;
    };
    for operation in Operation::ALL {
        check_decode(operation, body);
    }
    let mut header = *header;
    resign(mode, &mut header, body);
    let Ok(header) = Header::decode(&header) else {
        return;
    };
    if header.check_body(body).is_err() {
        return;
    }
    match codec::check(&header) {
        Ok(operation) => {
            assert_eq!(header.operation(), Some(operation));
            assert!(header.event_count <= operation.events_max());
            let request = codec::decode(operation, body).expect("a checked request decodes");
            assert_eq!(request.operation(), operation);
            assert_eq!(request.events_count(), header.event_count);
            let bound = codec::reply_bytes_bound(&request) as usize;
            assert!(bound >= HEADER_BYTES + ERROR_MESSAGE_BYTES_MAX as usize);
            assert!(bound <= HEADER_BYTES + BODY_BYTES_MAX as usize);
        }
        Err(refusal) => {
            assert!(!refusal.code.is_fatal(), "{refusal:?}");
            assert!(refusal.message.starts_with(refusal.code.as_str()));
        }
    }
}

/// `codec::decode` on any body: whole records only, and the very bytes they came from.
fn check_decode(operation: Operation, body: &[u8]) {
    let event_bytes = operation.event_bytes() as usize;
    let whole = body.len().is_multiple_of(event_bytes);
    let request = match codec::decode(operation, body) {
        Ok(request) => request,
        Err(refusal) => {
            let one_filter = operation.events_max() == 1 && body.is_empty();
            assert!(!whole || one_filter, "{refusal:?}");
            return;
        }
    };
    assert!(whole);
    assert_eq!(request.operation(), operation);
    let encoded = match &request {
        Request::CreateAccounts(accounts) => as_bytes(accounts),
        Request::CreateTransfers(transfers) => as_bytes(transfers),
        Request::LookupAccounts(ids) | Request::LookupTransfers(ids) => as_bytes(ids),
        Request::GetAccountTransfers(filter) | Request::GetAccountBalances(filter) => {
            as_bytes(std::slice::from_ref(filter))
        }
        Request::QueryAccounts(filter) | Request::QueryTransfers(filter) => {
            as_bytes(std::slice::from_ref(filter))
        }
    };
    // A filter request takes its first record (check refuses more than one).
    assert_eq!(encoded, &body[..encoded.len()]);
    if operation.events_max() > 1 {
        assert_eq!(encoded.len(), body.len());
    }
}

/// `data` as `wal::fuzzing::check_segment` reads it (mode byte, one segment): the WAL
/// record checks, then the payloads of the records that decode are replayed in order on
/// one ledger, as recovery does; the bytes after the mode byte are also decoded as one
/// payload on their own, so the payload decoder is reached without a valid record.
pub fn check_wal_records(data: &[u8]) {
    let mut ledger = Ledger::new();
    for payload in wal::fuzzing::check_segment(data) {
        replay_payload(&mut ledger, &payload);
    }
    if let Some(payload) = data.get(1..) {
        replay_payload(&mut Ledger::new(), payload);
    }
}

/// A payload decodes (`record::decode`) to a batch that re-encodes to the same bytes, or
/// to an error, never a panic; a batch whose clock the ledger can take
/// (`Batch::check_clock`, as replay asks) applies without a panic, one result per event,
/// every timestamp in range. Returns whether the batch was applied.
pub fn replay_payload(ledger: &mut Ledger, payload: &[u8]) -> bool {
    let Ok(batch) = record::decode(payload) else {
        return false;
    };
    let mut builder = RecordBuilder::default();
    builder.begin(batch.now);
    for entry in &batch.entries {
        builder.push(entry.as_write());
    }
    assert_eq!(
        builder.finish(),
        payload,
        "a decoded batch re-encodes to its bytes"
    );
    if batch.check_clock(ledger.timestamp_last()).is_err() {
        // Replay stops here with an error naming the record's LSN.
        return false;
    }
    for entry in &batch.entries {
        let mut old = OldTransfers::new(ledger.evicted_through());
        let results = record::apply(ledger, batch.now, entry.as_write(), &mut old);
        let events = match entry {
            Entry::CreateAccounts(accounts) => accounts.len(),
            Entry::CreateTransfers(transfers) => transfers.len(),
            Entry::Expire => 0,
        };
        assert_eq!(results.len(), events, "one result per event");
        assert!(results
            .iter()
            .all(|result| result.timestamp <= TIMESTAMP_MAX));
    }
    assert!(ledger.timestamp_last() <= TIMESTAMP_MAX);
    true
}

#[cfg(test)]
mod tests {
    //! The fuzz targets' checks as proptests: over random bytes, and over valid encodings
    //! with bytes changed and re-signed (random bytes almost never pass a CRC).

    use super::*;
    use crate::core::record::Write;
    use proptest::prelude::*;
    use protocol::frame::{encode_frame, handshake_body};
    use protocol::{Account, AccountFlags, Transfer, TransferFlags};

    type Mutations = Vec<(prop::sample::Index, u8)>;

    fn mutations() -> impl Strategy<Value = Mutations> {
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3)
    }

    /// `mode`, then `bytes` with `mutations` applied.
    fn input(mode: u8, mut bytes: Vec<u8>, mutations: &Mutations) -> Vec<u8> {
        if !bytes.is_empty() {
            for (index, value) in mutations {
                let at = index.index(bytes.len());
                bytes[at] = *value;
            }
        }
        [vec![mode], bytes].concat()
    }

    /// A request frame whose body is `events` whole records of its operation.
    fn request_frame() -> impl Strategy<Value = Vec<u8>> {
        (0..Operation::ALL.len(), 0u32..4, any::<u64>(), any::<u8>()).prop_map(
            |(operation, events, request_id, fill)| {
                let operation = Operation::ALL[operation];
                let body = vec![fill; (events * operation.event_bytes()) as usize];
                let mut frame = Vec::new();
                let code = operation.code();
                encode_frame(
                    &mut frame,
                    FrameKind::Request,
                    code,
                    request_id,
                    events,
                    0,
                    &body,
                );
                frame
            },
        )
    }

    /// A connection's bytes: a handshake, then requests.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(request_frame(), 0..4).prop_map(|requests| {
            let mut stream = Vec::new();
            let body = handshake_body(1, 1);
            encode_frame(&mut stream, FrameKind::Handshake, 0, 0, 0, 0, &body);
            stream.extend(requests.concat());
            stream
        })
    }

    /// A few accounts and transfers among ids 1..=4 so that the ledger's rules (not
    /// only its "not found" paths) are reached; any flags, amounts near the limits,
    /// timestamps for imported events.
    fn account() -> impl Strategy<Value = Account> {
        (1u128..5, 1u32..3, 0u16..2, any::<u16>(), any::<u64>()).prop_map(
            |(id, ledger, code, flags, timestamp)| Account {
                id,
                ledger,
                code,
                flags: AccountFlags(flags & AccountFlags::KNOWN_BITS),
                timestamp: timestamp % 4,
                ..Account::default()
            },
        )
    }

    fn transfer() -> impl Strategy<Value = Transfer> {
        let amount = prop_oneof![0u128..100, Just(u128::MAX), Just(u128::MAX - 1)];
        (
            (1u128..9, 1u128..5, 1u128..5, 0u128..9),
            (amount, 0u32..3, 1u32..3, 0u16..2),
            (any::<u16>(), any::<u64>()),
        )
            .prop_map(
                |(
                    (id, debit, credit, pending_id),
                    (amount, timeout, ledger, code),
                    (flags, timestamp),
                )| {
                    Transfer {
                        id,
                        debit_account_id: debit,
                        credit_account_id: credit,
                        amount,
                        pending_id,
                        timeout,
                        ledger,
                        code,
                        flags: TransferFlags(flags & TransferFlags::KNOWN_BITS),
                        timestamp: timestamp % 4,
                        ..Transfer::default()
                    }
                },
            )
    }

    #[derive(Clone, Debug)]
    enum Input {
        Accounts(Vec<Account>),
        Transfers(Vec<Transfer>),
        Expire,
    }

    fn entry() -> impl Strategy<Value = Input> {
        prop_oneof![
            prop::collection::vec(account(), 0..4).prop_map(Input::Accounts),
            prop::collection::vec(transfer(), 0..6).prop_map(Input::Transfers),
            Just(Input::Expire),
        ]
    }

    /// A payload as the core writes it; the clock is small, or near the end of the range.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let now = prop_oneof![1u64..1_000, (TIMESTAMP_MAX - 8)..=u64::MAX];
        (now, prop::collection::vec(entry(), 0..4)).prop_map(|(now, entries)| {
            let mut builder = RecordBuilder::default();
            builder.begin(now);
            for entry in &entries {
                builder.push(match entry {
                    Input::Accounts(accounts) => Write::CreateAccounts(accounts),
                    Input::Transfers(transfers) => Write::CreateTransfers(transfers),
                    Input::Expire => Write::Expire,
                });
            }
            builder.finish().to_vec()
        })
    }

    /// `check_wal_records`'s input: mode byte, one segment of WAL records holding `payloads`.
    fn segment(payloads: &[Vec<u8>]) -> Vec<u8> {
        let image = wal::fuzzing::valid_image(&[payloads.to_vec()]);
        // valid_image: a mode byte and a 2-byte segment length in front of the segment.
        image[3..].to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn frame_stream_checks_hold_for_random_bytes(
            mode in any::<u8>(),
            bytes in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            check_frame_stream(&input(mode, bytes, &Vec::new()));
        }

        #[test]
        fn frame_stream_checks_hold_for_mutated_streams(
            mode in any::<u8>(), bytes in stream(), mutations in mutations(),
        ) {
            check_frame_stream(&input(mode, bytes, &mutations));
        }

        #[test]
        fn request_checks_hold_for_random_bytes(
            mode in any::<u8>(),
            bytes in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            check_request(&input(mode, bytes, &Vec::new()));
        }

        #[test]
        fn request_checks_hold_for_mutated_requests(
            mode in any::<u8>(), bytes in request_frame(), mutations in mutations(),
        ) {
            check_request(&input(mode, bytes, &mutations));
        }

        #[test]
        fn wal_record_checks_hold_for_random_bytes(
            mode in any::<u8>(),
            bytes in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            check_wal_records(&input(mode, bytes, &Vec::new()));
        }

        /// Records as the core writes them, some with a clock at the end of the range, with
        /// bytes changed and (as the mode says) re-signed: decode, then replay on one ledger.
        #[test]
        fn wal_record_checks_hold_for_mutated_batches(
            payloads in prop::collection::vec(payload(), 1..4),
            mode in any::<u8>(),
            mutations in mutations(),
        ) {
            check_wal_records(&input(mode, segment(&payloads), &mutations));
        }

        /// Unchanged batches replay in order on one ledger until one whose clock the
        /// ledger cannot take, which decode or check_clock refuses.
        #[test]
        fn batches_replay_until_a_clock_out_of_range(payloads in prop::collection::vec(payload(), 1..4)) {
            let mut ledger = Ledger::new();
            for payload in &payloads {
                let timestamp_last = ledger.timestamp_last();
                let decoded = record::decode(payload);
                let applied = replay_payload(&mut ledger, payload);
                match decoded {
                    Ok(batch) => prop_assert_eq!(applied, batch.check_clock(timestamp_last).is_ok()),
                    Err(error) => {
                        prop_assert!(!applied);
                        let is_clock = matches!(error, record::RecordError::ClockOutOfRange { .. });
                        prop_assert!(is_clock, "{}", error);
                    }
                }
            }
        }
    }

    /// A record with a valid CRC whose clock passes the timestamp range: decode refuses it
    /// with ClockOutOfRange, and replay stops there without a panic.
    #[test]
    fn a_valid_record_with_an_out_of_range_clock_is_an_error() {
        let transfers = [Transfer {
            id: 1,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 1,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        }];
        for now in [TIMESTAMP_MAX, TIMESTAMP_MAX + 1, u64::MAX] {
            let mut builder = RecordBuilder::default();
            builder.begin(now);
            builder.push(Write::CreateTransfers(&transfers));
            let payload = builder.finish().to_vec();
            let error = record::decode(&payload).unwrap_err();
            assert!(
                matches!(error, record::RecordError::ClockOutOfRange { now: found, events: 1, .. } if found == now),
                "{error}"
            );
            check_wal_records(&[[0u8].as_slice(), &segment(&[payload])].concat());
        }
    }
}
