//! Frames: the unit of the TCP protocol (`docs/PROTOCOL.md` is the byte-by-byte reference).
//!
//! A frame is a 64-byte header followed by `body_bytes` of body. The header carries its own
//! CRC32C in its last 4 bytes and the CRC32C of the body, so a receiver can validate the
//! header, and the body size, *before* allocating or reading the body.
//!
//! Header layout (all integers little-endian):
//!
//! | offset | size | field                                                         |
//! |--------|------|---------------------------------------------------------------|
//! | 0      | 4    | magic `"STLD"` ([`MAGIC`])                                    |
//! | 4      | 2    | version                                                       |
//! | 6      | 1    | kind ([`FrameKind`])                                          |
//! | 7      | 1    | operation ([`crate::Operation`] code; 0 when none)            |
//! | 8      | 8    | reserved (zero)                                               |
//! | 16     | 8    | request_id                                                    |
//! | 24     | 4    | event_count                                                   |
//! | 28     | 4    | body_bytes                                                    |
//! | 32     | 2    | error ([`ErrorCode`]; 0 unless kind is Error)                 |
//! | 34     | 2    | reserved (zero; keeps body_checksum 4-byte aligned)           |
//! | 36     | 4    | body_checksum: CRC32C of the body                             |
//! | 40     | 20   | reserved (zero)                                               |
//! | 60     | 4    | header_checksum: CRC32C of bytes 0..60                        |
//!
//! This module is pure: no I/O. The server and the client read 64 bytes, call
//! [`Header::decode`], then read `body_bytes` and call [`Header::check_body`].

/// `"STLD"` read as a little-endian u32: the first four bytes of every frame.
pub const MAGIC: u32 = u32::from_le_bytes(*b"STLD");

/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Size of every frame header.
pub const HEADER_BYTES: usize = 64;

/// Largest body a frame may carry. Must hold the largest request: 8189 events of 128 bytes.
pub const BODY_BYTES_MAX: u32 = 1024 * 1024;

/// Largest message an Error frame carries (longer messages are cut at a char boundary).
pub const ERROR_MESSAGE_BYTES_MAX: u32 = 512;

/// Size of a handshake body without a token: version_min u16, version_max u16.
pub const HANDSHAKE_BODY_BYTES: u32 = 4;

/// Longest client token a handshake may carry. A token made by `settled token` is 64
/// bytes (32 random bytes in hex); the rest is room for other schemes.
pub const HANDSHAKE_TOKEN_BYTES_MAX: u32 = 128;

/// Largest handshake body: the versions, a u16 token length and the longest token. Before
/// the handshake is done a receiver refuses a larger `body_bytes` from the header alone,
/// so a peer that has not authenticated cannot make it reserve more than this.
pub const HANDSHAKE_BODY_BYTES_MAX: u32 = HANDSHAKE_BODY_BYTES + 2 + HANDSHAKE_TOKEN_BYTES_MAX;

// The token length travels as a u16, and `parse_handshake_body`'s message names 128.
const _: () = assert!(HANDSHAKE_TOKEN_BYTES_MAX == 128);

const _: () = assert!(
    BODY_BYTES_MAX as u64 >= crate::BATCH_EVENTS_MAX as u64 * 128,
    "the largest request must fit in one frame"
);

// Field offsets, in one place so encode and decode cannot disagree.
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 4;
const KIND_OFFSET: usize = 6;
const OPERATION_OFFSET: usize = 7;
const RESERVED_A: core::ops::Range<usize> = 8..16;
const REQUEST_ID_OFFSET: usize = 16;
const EVENT_COUNT_OFFSET: usize = 24;
const BODY_BYTES_OFFSET: usize = 28;
const ERROR_OFFSET: usize = 32;
const RESERVED_B: core::ops::Range<usize> = 34..36;
const BODY_CHECKSUM_OFFSET: usize = 36;
const RESERVED_C: core::ops::Range<usize> = 40..60;
const HEADER_CHECKSUM_OFFSET: usize = 60;

const _: () = assert!(HEADER_CHECKSUM_OFFSET + 4 == HEADER_BYTES);

/// What a frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// First frame in each direction: version negotiation.
    Handshake = 1,
    /// Client to server: `event_count` events of one operation.
    Request = 2,
    /// Server to client: the results of the request with the same `request_id`.
    Reply = 3,
    /// Server to client: a request (or the connection) failed; body is a UTF-8 message.
    Error = 4,
}

impl FrameKind {
    pub const ALL: [FrameKind; 4] = [
        FrameKind::Handshake,
        FrameKind::Request,
        FrameKind::Reply,
        FrameKind::Error,
    ];

    pub fn from_code(code: u8) -> Option<FrameKind> {
        Self::ALL.into_iter().find(|kind| *kind as u8 == code)
    }
}

/// A decoded frame header. `encode` and `decode` are exact inverses on valid headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version of the frame.
    pub version: u16,
    pub kind: FrameKind,
    /// `Operation` code for Request/Reply (and an Error about a request); 0 otherwise.
    pub operation: u8,
    /// Chosen by the client, echoed in the Reply/Error; 0 for the handshake.
    pub request_id: u64,
    /// Events in a request body, records in a reply body, 0 otherwise.
    pub event_count: u32,
    pub body_bytes: u32,
    /// `ErrorCode` for Error frames, 0 otherwise.
    pub error: u16,
    /// CRC32C of the body (an empty body has checksum `crc32c(&[])`, which is 0).
    pub body_checksum: u32,
}

impl Header {
    /// Header for `body` (fills body_bytes and body_checksum) at [`PROTOCOL_VERSION`].
    ///
    /// Panics when `body` is longer than [`BODY_BYTES_MAX`]: the sender owns its bodies and
    /// must check limits first, and a silently truncated length would corrupt the stream.
    pub fn new(
        kind: FrameKind,
        operation: u8,
        request_id: u64,
        event_count: u32,
        error: u16,
        body: &[u8],
    ) -> Header {
        assert!(
            body.len() <= BODY_BYTES_MAX as usize,
            "frame body of {} bytes exceeds BODY_BYTES_MAX {}",
            body.len(),
            BODY_BYTES_MAX
        );
        Header {
            version: PROTOCOL_VERSION,
            kind,
            operation,
            request_id,
            event_count,
            body_bytes: body.len() as u32,
            error,
            body_checksum: crc32c::crc32c(body),
        }
    }

    /// 64 bytes, header checksum (CRC32C of bytes 0..60) in the last 4 bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        put(&mut bytes, MAGIC_OFFSET, &MAGIC.to_le_bytes());
        put(&mut bytes, VERSION_OFFSET, &self.version.to_le_bytes());
        bytes[KIND_OFFSET] = self.kind as u8;
        bytes[OPERATION_OFFSET] = self.operation;
        put(
            &mut bytes,
            REQUEST_ID_OFFSET,
            &self.request_id.to_le_bytes(),
        );
        put(
            &mut bytes,
            EVENT_COUNT_OFFSET,
            &self.event_count.to_le_bytes(),
        );
        put(
            &mut bytes,
            BODY_BYTES_OFFSET,
            &self.body_bytes.to_le_bytes(),
        );
        put(&mut bytes, ERROR_OFFSET, &self.error.to_le_bytes());
        put(
            &mut bytes,
            BODY_CHECKSUM_OFFSET,
            &self.body_checksum.to_le_bytes(),
        );
        let checksum = crc32c::crc32c(&bytes[..HEADER_CHECKSUM_OFFSET]);
        put(&mut bytes, HEADER_CHECKSUM_OFFSET, &checksum.to_le_bytes());
        bytes
    }

    /// Checks, in this order: magic, header checksum, kind, reserved bytes zero,
    /// body_bytes <= [`BODY_BYTES_MAX`].
    ///
    /// Does NOT check the version (the caller does: handshake frames may carry another
    /// one), nor the operation or error code (their meaning depends on the kind and is
    /// answered per request, not by dropping the connection).
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<Header, FrameError> {
        let magic = read_u32(bytes, MAGIC_OFFSET);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        let expected = crc32c::crc32c(&bytes[..HEADER_CHECKSUM_OFFSET]);
        let found = read_u32(bytes, HEADER_CHECKSUM_OFFSET);
        if expected != found {
            return Err(FrameError::HeaderChecksum { expected, found });
        }
        let kind = FrameKind::from_code(bytes[KIND_OFFSET]).ok_or(FrameError::UnknownKind {
            kind: bytes[KIND_OFFSET],
        })?;
        let reserved = [RESERVED_A, RESERVED_B, RESERVED_C];
        if reserved
            .into_iter()
            .any(|range| bytes[range].iter().any(|&b| b != 0))
        {
            return Err(FrameError::ReservedNotZero);
        }
        let body_bytes = read_u32(bytes, BODY_BYTES_OFFSET);
        if body_bytes > BODY_BYTES_MAX {
            return Err(FrameError::BodyTooLarge {
                body_bytes,
                max: BODY_BYTES_MAX,
            });
        }
        Ok(Header {
            version: read_u16(bytes, VERSION_OFFSET),
            kind,
            operation: bytes[OPERATION_OFFSET],
            request_id: read_u64(bytes, REQUEST_ID_OFFSET),
            event_count: read_u32(bytes, EVENT_COUNT_OFFSET),
            body_bytes,
            error: read_u16(bytes, ERROR_OFFSET),
            body_checksum: read_u32(bytes, BODY_CHECKSUM_OFFSET),
        })
    }

    /// `body.len() == body_bytes` and `crc32c(body) == body_checksum`.
    pub fn check_body(&self, body: &[u8]) -> Result<(), FrameError> {
        if body.len() != self.body_bytes as usize {
            return Err(FrameError::BodyLength {
                expected: self.body_bytes,
                found: body.len(),
            });
        }
        let found = crc32c::crc32c(body);
        if found != self.body_checksum {
            return Err(FrameError::BodyChecksum {
                expected: self.body_checksum,
                found,
            });
        }
        Ok(())
    }

    /// The operation this frame names, if its code is known.
    pub fn operation(&self) -> Option<crate::Operation> {
        crate::Operation::from_code(self.operation)
    }

    /// The error code of an Error frame, if its code is known.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.error)
    }
}

fn put(bytes: &mut [u8; HEADER_BYTES], offset: usize, value: &[u8]) {
    bytes[offset..offset + value.len()].copy_from_slice(value);
}

fn read_u16(bytes: &[u8; HEADER_BYTES], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn read_u32(bytes: &[u8; HEADER_BYTES], offset: usize) -> u32 {
    let mut value = [0u8; 4];
    value.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(value)
}

fn read_u64(bytes: &[u8; HEADER_BYTES], offset: usize) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(value)
}

/// Append header + body to `out`. Panics like [`Header::new`] on an oversized body.
pub fn encode_frame(
    out: &mut Vec<u8>,
    kind: FrameKind,
    operation: u8,
    request_id: u64,
    event_count: u32,
    error: u16,
    body: &[u8],
) {
    let header = Header::new(kind, operation, request_id, event_count, error, body);
    out.reserve(HEADER_BYTES + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
}

macro_rules! error_codes {
    ($( $(#[$meta:meta])* $variant:ident = $code:literal => $text:literal, fatal: $fatal:literal; )*) => {
        /// Stable u16 codes carried by Error frames. Codes are never renumbered; new ones
        /// are only appended.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[$meta])* $variant = $code, )*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            pub fn from_code(code: u16) -> Option<ErrorCode> {
                match code {
                    $( $code => Some(ErrorCode::$variant), )*
                    _ => None,
                }
            }

            pub fn code(self) -> u16 {
                self as u16
            }

            /// The snake_case name used in messages, logs and metrics labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $text, )*
                }
            }

            /// Fatal errors are sent once, then the server closes the connection: after them
            /// the byte stream can no longer be trusted (or was never agreed on).
            pub fn is_fatal(self) -> bool {
                match self {
                    $( ErrorCode::$variant => $fatal, )*
                }
            }
        }
    };
}

error_codes! {
    /// The first 4 bytes of a frame were not `"STLD"`.
    BadMagic = 1 => "bad_magic", fatal: true;
    /// The header's CRC32C did not match.
    HeaderChecksum = 2 => "header_checksum", fatal: true;
    /// The body's CRC32C did not match the header's body_checksum.
    BodyChecksum = 3 => "body_checksum", fatal: true;
    /// No version in common (handshake), or a frame at a version other than the agreed one.
    UnsupportedVersion = 4 => "unsupported_version", fatal: true;
    /// Unknown kind, reserved bytes set, a frame kind the client may not send, a bad body.
    BadFrame = 5 => "bad_frame", fatal: true;
    /// body_bytes above BODY_BYTES_MAX: the body is not read, so the stream is lost.
    BodyTooLarge = 6 => "body_too_large", fatal: true;
    /// The first frame of a connection was not a Handshake.
    HandshakeRequired = 7 => "handshake_required", fatal: true;
    /// The request's operation code names no operation.
    UnknownOperation = 8 => "unknown_operation", fatal: false;
    /// More events than the operation allows (8189, or 1 for filters).
    TooManyEvents = 9 => "too_many_events", fatal: false;
    /// body_bytes != event_count * event_bytes.
    BodyNotWholeEvents = 10 => "body_not_whole_events", fatal: false;
    /// More requests in flight on this connection than the server allows.
    TooManyInFlight = 11 => "too_many_in_flight", fatal: false;
    /// The server's queue to the core is full; retry later.
    Busy = 12 => "busy", fatal: false;
    /// The server is shutting down and takes no new requests.
    ShuttingDown = 13 => "shutting_down", fatal: false;
    /// The server failed on its side; the request may or may not have been applied.
    Internal = 14 => "internal", fatal: false;
    /// The server cannot take writes now (its checkpoints to disk keep failing); the
    /// request was not applied. Reads are still served; retry writes later.
    Unavailable = 15 => "unavailable", fatal: false;
    /// The server requires a client token and the handshake carried none, or one that
    /// matches no configured client.
    Unauthorized = 16 => "unauthorized", fatal: true;
    /// The client's token does not allow this operation (a read-only client sent a
    /// create); nothing was applied.
    Forbidden = 17 => "forbidden", fatal: false;
    /// No whole first frame (the handshake) arrived within the server's handshake timeout.
    HandshakeTimeout = 18 => "handshake_timeout", fatal: true;
    /// Nothing in flight and no frame for the server's idle timeout.
    IdleTimeout = 19 => "idle_timeout", fatal: true;
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a header or body was rejected. Display starts with the [`ErrorCode`] name so it can
/// be sent as an Error frame's message as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad_magic: found {found:#010x}, expected {MAGIC:#010x}")]
    BadMagic { found: u32 },
    #[error("header_checksum: expected {expected:#010x}, found {found:#010x}")]
    HeaderChecksum { expected: u32, found: u32 },
    #[error("body_checksum: expected {expected:#010x}, found {found:#010x}")]
    BodyChecksum { expected: u32, found: u32 },
    #[error("bad_frame: unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("bad_frame: reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("body_too_large: {body_bytes} bytes, limit {max}")]
    BodyTooLarge { body_bytes: u32, max: u32 },
    #[error("bad_frame: body of {found} bytes, header says {expected}")]
    BodyLength { expected: u32, found: usize },
    /// The first frame of a connection, refused from its header: not a Handshake.
    #[error("handshake_required: the first frame must be a handshake, got a {kind:?} frame")]
    HandshakeRequired { kind: FrameKind },
    /// A handshake header whose body_bytes exceeds [`HANDSHAKE_BODY_BYTES_MAX`].
    #[error("body_too_large: handshake body of {body_bytes} bytes, limit {max}")]
    HandshakeTooLarge { body_bytes: u32, max: u32 },
    /// A handshake body of a length or token length the layout does not allow.
    #[error("bad_frame: handshake body of {body_bytes} bytes: {reason}")]
    HandshakeBody {
        body_bytes: usize,
        reason: &'static str,
    },
}

impl FrameError {
    /// The code of the Error frame that answers this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::BadMagic { .. } => ErrorCode::BadMagic,
            FrameError::HeaderChecksum { .. } => ErrorCode::HeaderChecksum,
            FrameError::BodyChecksum { .. } => ErrorCode::BodyChecksum,
            FrameError::UnknownKind { .. }
            | FrameError::ReservedNotZero
            | FrameError::BodyLength { .. }
            | FrameError::HandshakeBody { .. } => ErrorCode::BadFrame,
            FrameError::BodyTooLarge { .. } | FrameError::HandshakeTooLarge { .. } => {
                ErrorCode::BodyTooLarge
            }
            FrameError::HandshakeRequired { .. } => ErrorCode::HandshakeRequired,
        }
    }
}

/// The checks on the header of a connection's first frame, made before its body is read
/// or room is reserved for it: it must be a Handshake, with a body of at most
/// [`HANDSHAKE_BODY_BYTES_MAX`] (not [`BODY_BYTES_MAX`]), so a peer that has not yet
/// shown a token cannot make the receiver hold a megabyte.
pub fn check_first_header(header: &Header) -> Result<(), FrameError> {
    if header.kind != FrameKind::Handshake {
        return Err(FrameError::HandshakeRequired { kind: header.kind });
    }
    if header.body_bytes > HANDSHAKE_BODY_BYTES_MAX {
        return Err(FrameError::HandshakeTooLarge {
            body_bytes: header.body_bytes,
            max: HANDSHAKE_BODY_BYTES_MAX,
        });
    }
    Ok(())
}

/// Handshake body without a token (the server's answer always; a client's when the server
/// needs none): 4 bytes, version_min u16 LE, version_max u16 LE.
///
/// The client sends the `[min, max]` range it speaks; the server answers with a Handshake
/// frame whose `header.version` is the chosen version and body `[chosen, chosen]`, or with
/// an Error frame `unsupported_version` and closes.
pub fn handshake_body(version_min: u16, version_max: u16) -> [u8; 4] {
    let [min_low, min_high] = version_min.to_le_bytes();
    let [max_low, max_high] = version_max.to_le_bytes();
    [min_low, min_high, max_low, max_high]
}

/// A client's handshake body carrying `token`: the 4 bytes of [`handshake_body`], the
/// token's length as a u16 LE, then the token. `None` when the token is empty or longer
/// than [`HANDSHAKE_TOKEN_BYTES_MAX`] (an empty token is sent as no token instead).
pub fn handshake_body_with_token(
    version_min: u16,
    version_max: u16,
    token: &[u8],
) -> Option<Vec<u8>> {
    if token.is_empty() || token.len() > HANDSHAKE_TOKEN_BYTES_MAX as usize {
        return None;
    }
    let mut body = Vec::with_capacity(HANDSHAKE_BODY_BYTES as usize + 2 + token.len());
    body.extend_from_slice(&handshake_body(version_min, version_max));
    // Cannot truncate: checked against HANDSHAKE_TOKEN_BYTES_MAX above.
    body.extend_from_slice(&(token.len() as u16).to_le_bytes());
    body.extend_from_slice(token);
    Some(body)
}

/// A parsed handshake body; `token` borrows from the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake<'a> {
    pub version_min: u16,
    pub version_max: u16,
    /// The client's token, 1 to [`HANDSHAKE_TOKEN_BYTES_MAX`] bytes, when it sent one.
    pub token: Option<&'a [u8]>,
}

/// Parse a handshake body: exactly 4 bytes (no token), or 4 + 2 + n bytes where the u16 at
/// offset 4 is n, 1 <= n <= [`HANDSHAKE_TOKEN_BYTES_MAX`]. Anything else is an error
/// (`bad_frame`). A range with `min > max` parses, and then contains no version, so
/// negotiation answers `unsupported_version`.
pub fn parse_handshake_body(body: &[u8]) -> Result<Handshake<'_>, FrameError> {
    let refuse = |reason| FrameError::HandshakeBody {
        body_bytes: body.len(),
        reason,
    };
    let Some(([min_low, min_high, max_low, max_high], rest)) = body.split_first_chunk::<4>() else {
        return Err(refuse("shorter than the 4 bytes of the version range"));
    };
    let token = match rest {
        [] => None,
        [low, high, token @ ..] => {
            let token_bytes = u16::from_le_bytes([*low, *high]);
            if token_bytes == 0 || u32::from(token_bytes) > HANDSHAKE_TOKEN_BYTES_MAX {
                return Err(refuse("token length must be 1 to 128 bytes"));
            }
            if token.len() != usize::from(token_bytes) {
                return Err(refuse("token length does not match the body"));
            }
            Some(token)
        }
        [_] => return Err(refuse("a token needs its 2-byte length")),
    };
    Ok(Handshake {
        version_min: u16::from_le_bytes([*min_low, *min_high]),
        version_max: u16::from_le_bytes([*max_low, *max_high]),
        token,
    })
}

/// Error frame body: the UTF-8 `message` cut to at most [`ERROR_MESSAGE_BYTES_MAX`] bytes at
/// a char boundary. Messages name the limit they report, e.g.
/// `"too_many_events: 9000 events, limit 8189"`.
pub fn error_body(message: &str) -> &[u8] {
    let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX as usize);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message.as_bytes()[..end]
}

/// The message of an Error frame body. Invalid UTF-8 is replaced rather than rejected: the
/// message is for people, and the error code already says what happened.
pub fn parse_error_body(body: &[u8]) -> String {
    let end = body.len().min(ERROR_MESSAGE_BYTES_MAX as usize);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The version this build chooses for a peer that speaks `[version_min, version_max]`:
/// the highest version both sides speak, or `None` (answer `unsupported_version`).
pub fn negotiate_version(version_min: u16, version_max: u16) -> Option<u16> {
    (version_min..=version_max)
        .contains(&PROTOCOL_VERSION)
        .then_some(PROTOCOL_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(kind: FrameKind) -> (Header, Vec<u8>) {
        let body = match kind {
            FrameKind::Handshake => handshake_body(1, 1).to_vec(),
            FrameKind::Request | FrameKind::Reply => vec![0xAB; 256],
            FrameKind::Error => error_body("too_many_events: 9000 events, limit 8189").to_vec(),
        };
        let error = if kind == FrameKind::Error {
            ErrorCode::TooManyEvents.code()
        } else {
            0
        };
        let header = Header::new(kind, 2, 0x0102_0304_0506_0708, 2, error, &body);
        (header, body)
    }

    #[test]
    fn every_kind_round_trips_with_its_body() {
        for kind in FrameKind::ALL {
            let (header, body) = sample(kind);
            let bytes = header.encode();
            let decoded = Header::decode(&bytes).expect("valid header");
            assert_eq!(decoded, header);
            assert_eq!(decoded.version, PROTOCOL_VERSION);
            assert_eq!(decoded.body_bytes as usize, body.len());
            decoded.check_body(&body).expect("valid body");

            let mut frame = Vec::new();
            encode_frame(
                &mut frame,
                kind,
                2,
                header.request_id,
                2,
                header.error,
                &body,
            );
            assert_eq!(&frame[..HEADER_BYTES], &bytes[..]);
            assert_eq!(&frame[HEADER_BYTES..], &body[..]);
        }
    }

    #[test]
    fn fields_sit_at_documented_offsets() {
        let header = Header::new(FrameKind::Reply, 7, 0x1122_3344_5566_7788, 9, 3, b"abc");
        let bytes = header.encode();
        assert_eq!(&bytes[0..4], b"STLD");
        assert_eq!(&bytes[4..6], &1u16.to_le_bytes());
        assert_eq!(bytes[6], FrameKind::Reply as u8);
        assert_eq!(bytes[7], 7);
        assert_eq!(&bytes[16..24], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&bytes[24..28], &9u32.to_le_bytes());
        assert_eq!(&bytes[28..32], &3u32.to_le_bytes());
        assert_eq!(&bytes[32..34], &3u16.to_le_bytes());
        assert_eq!(&bytes[36..40], &crc32c::crc32c(b"abc").to_le_bytes());
        assert_eq!(&bytes[60..64], &crc32c::crc32c(&bytes[..60]).to_le_bytes());
        assert!(bytes[8..16]
            .iter()
            .chain(&bytes[34..36])
            .chain(&bytes[40..60])
            .all(|&b| b == 0));
    }

    #[test]
    fn every_flipped_header_byte_is_an_error() {
        let (header, _) = sample(FrameKind::Request);
        let bytes = header.encode();
        for offset in 0..HEADER_BYTES {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut corrupt = bytes;
                corrupt[offset] ^= mask;
                let result = Header::decode(&corrupt);
                assert!(
                    result.is_err(),
                    "offset {offset} mask {mask:#x} decoded as {result:?}"
                );
            }
        }
    }

    #[test]
    fn decode_reports_each_check_in_order() {
        let (header, _) = sample(FrameKind::Request);
        let mut bytes = header.encode();
        bytes[0] = b'X';
        assert!(matches!(
            Header::decode(&bytes),
            Err(FrameError::BadMagic { .. })
        ));

        let mut bytes = header.encode();
        bytes[20] ^= 1;
        assert!(matches!(
            Header::decode(&bytes),
            Err(FrameError::HeaderChecksum { .. })
        ));

        // Past the checksum, a header must still be well-formed: resign after each change.
        let resign = |mut bytes: [u8; HEADER_BYTES]| {
            let checksum = crc32c::crc32c(&bytes[..60]);
            bytes[60..].copy_from_slice(&checksum.to_le_bytes());
            bytes
        };
        let mut bytes = header.encode();
        bytes[6] = 9;
        assert_eq!(
            Header::decode(&resign(bytes)),
            Err(FrameError::UnknownKind { kind: 9 })
        );
        for offset in [8, 15, 34, 35, 40, 59] {
            let mut bytes = header.encode();
            bytes[offset] = 1;
            assert_eq!(
                Header::decode(&resign(bytes)),
                Err(FrameError::ReservedNotZero)
            );
        }
        let mut bytes = header.encode();
        bytes[28..32].copy_from_slice(&(BODY_BYTES_MAX + 1).to_le_bytes());
        let error = Header::decode(&resign(bytes)).unwrap_err();
        assert_eq!(
            error,
            FrameError::BodyTooLarge {
                body_bytes: BODY_BYTES_MAX + 1,
                max: BODY_BYTES_MAX
            }
        );
        assert_eq!(error.code(), ErrorCode::BodyTooLarge);
        assert_eq!(
            error.to_string(),
            "body_too_large: 1048577 bytes, limit 1048576"
        );
    }

    #[test]
    fn decode_leaves_version_to_the_caller() {
        let (mut header, _) = sample(FrameKind::Handshake);
        header.version = 7;
        assert_eq!(Header::decode(&header.encode()).map(|h| h.version), Ok(7));
    }

    #[test]
    fn check_body_catches_length_and_content() {
        let (header, body) = sample(FrameKind::Reply);
        assert_eq!(
            header.check_body(&body[1..]),
            Err(FrameError::BodyLength {
                expected: 256,
                found: 255
            })
        );
        let mut corrupt = body.clone();
        corrupt[100] ^= 0x10;
        let error = header.check_body(&corrupt).unwrap_err();
        assert!(matches!(error, FrameError::BodyChecksum { .. }));
        assert_eq!(error.code(), ErrorCode::BodyChecksum);
        let empty = Header::new(FrameKind::Reply, 1, 1, 0, 0, &[]);
        assert_eq!(empty.body_checksum, 0);
        empty.check_body(&[]).expect("empty body");
    }

    #[test]
    fn error_codes_round_trip_with_snake_case_names() {
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.code() as usize, index + 1, "codes are dense from 1");
            assert_eq!(ErrorCode::from_code(code.code()), Some(*code));
            let name = code.as_str();
            assert!(!name.is_empty());
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert!(!name.starts_with('_') && !name.ends_with('_') && !name.contains("__"));
            assert_eq!(code.to_string(), name);
        }
        assert_eq!(ErrorCode::ALL.len(), 19);
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(20), None);
        let fatal: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| c.is_fatal())
            .map(|c| c.code())
            .collect();
        assert_eq!(fatal, [1, 2, 3, 4, 5, 6, 7, 16, 18, 19]);
    }

    #[test]
    fn frame_error_messages_start_with_their_code_name() {
        let errors = [
            FrameError::BadMagic { found: 1 },
            FrameError::HeaderChecksum {
                expected: 1,
                found: 2,
            },
            FrameError::BodyChecksum {
                expected: 1,
                found: 2,
            },
            FrameError::UnknownKind { kind: 9 },
            FrameError::ReservedNotZero,
            FrameError::BodyTooLarge {
                body_bytes: 2,
                max: 1,
            },
            FrameError::BodyLength {
                expected: 1,
                found: 2,
            },
            FrameError::HandshakeRequired {
                kind: FrameKind::Request,
            },
            FrameError::HandshakeTooLarge {
                body_bytes: 2,
                max: 1,
            },
            FrameError::HandshakeBody {
                body_bytes: 3,
                reason: "short",
            },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(message.starts_with(error.code().as_str()), "{message}");
        }
    }

    #[test]
    fn handshake_body_round_trips_and_negotiates() {
        assert_eq!(handshake_body(1, 3), [1, 0, 3, 0]);
        let body = handshake_body(1, 3);
        let parsed = parse_handshake_body(&body).unwrap();
        assert_eq!(
            (parsed.version_min, parsed.version_max, parsed.token),
            (1, 3, None)
        );
        assert!(matches!(
            parse_handshake_body(&[1, 0, 1]),
            Err(FrameError::HandshakeBody { body_bytes: 3, .. })
        ));
        assert_eq!(negotiate_version(1, 3), Some(1));
        assert_eq!(negotiate_version(2, 3), None);
        assert_eq!(negotiate_version(1, 0), None);
    }

    #[test]
    fn handshake_token_round_trips_within_its_limit() {
        let body = handshake_body_with_token(1, 1, b"secret").unwrap();
        assert_eq!(body, [1, 0, 1, 0, 6, 0, b's', b'e', b'c', b'r', b'e', b't']);
        let parsed = parse_handshake_body(&body).unwrap();
        assert_eq!(parsed.token, Some(&b"secret"[..]));
        assert_eq!((parsed.version_min, parsed.version_max), (1, 1));

        let longest = vec![7u8; HANDSHAKE_TOKEN_BYTES_MAX as usize];
        let body = handshake_body_with_token(1, 1, &longest).unwrap();
        assert_eq!(body.len(), HANDSHAKE_BODY_BYTES_MAX as usize);
        assert_eq!(
            parse_handshake_body(&body).unwrap().token,
            Some(&longest[..])
        );
        assert_eq!(handshake_body_with_token(1, 1, &[7; 129]), None);
        assert_eq!(handshake_body_with_token(1, 1, &[]), None);
    }

    #[test]
    fn malformed_handshake_bodies_are_bad_frames() {
        let bad = |body: &[u8]| {
            let error = parse_handshake_body(body).unwrap_err();
            assert_eq!(error.code(), ErrorCode::BadFrame, "{body:?}");
            assert!(error.to_string().starts_with("bad_frame: handshake body"));
        };
        bad(&[]);
        bad(&[1, 0, 1, 0, 6]); // half a length
        bad(&[1, 0, 1, 0, 0, 0]); // a zero-length token
        bad(&[1, 0, 1, 0, 3, 0, b'a', b'b']); // shorter than its length
        bad(&[1, 0, 1, 0, 1, 0, b'a', b'b']); // longer than its length
        let mut too_long = vec![1, 0, 1, 0, 129, 0];
        too_long.extend([b'x'; 129]);
        bad(&too_long);
    }

    #[test]
    fn the_first_header_must_be_a_handshake_of_bounded_size() {
        let handshake = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &handshake_body(1, 1));
        assert_eq!(check_first_header(&handshake), Ok(()));
        let mut large = handshake;
        large.body_bytes = HANDSHAKE_BODY_BYTES_MAX;
        assert_eq!(check_first_header(&large), Ok(()));
        large.body_bytes = HANDSHAKE_BODY_BYTES_MAX + 1;
        let error = check_first_header(&large).unwrap_err();
        assert_eq!(error.code(), ErrorCode::BodyTooLarge);
        assert_eq!(
            error.to_string(),
            "body_too_large: handshake body of 135 bytes, limit 134"
        );
        let request = Header::new(FrameKind::Request, 3, 1, 0, 0, &[]);
        let error = check_first_header(&request).unwrap_err();
        assert_eq!(error.code(), ErrorCode::HandshakeRequired);
    }

    /// docs/PROTOCOL.md §7 lists every error code with its number, name and whether it is
    /// fatal: hold the table and the code to each other, both ways.
    #[test]
    fn the_error_code_table_of_docs_protocol_md_matches_the_code() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let rows: Vec<(u16, String, bool)> = doc
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                // | code | `name` | fatal | meaning |
                let code = cells.get(1)?.parse::<u16>().ok()?;
                let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
                let fatal = match *cells.get(3)? {
                    "yes" => true,
                    "no" => false,
                    _ => return None,
                };
                Some((code, name.to_string(), fatal))
            })
            .collect();
        let expected: Vec<(u16, String, bool)> = ErrorCode::ALL
            .iter()
            .map(|code| (code.code(), code.as_str().to_string(), code.is_fatal()))
            .collect();
        assert_eq!(rows, expected);
    }

    #[test]
    fn error_body_is_cut_at_a_char_boundary() {
        let long = "é".repeat(400); // 800 bytes of two-byte chars
        let body = error_body(&long);
        assert!(body.len() <= ERROR_MESSAGE_BYTES_MAX as usize);
        assert_eq!(parse_error_body(body), "é".repeat(256));
        assert_eq!(parse_error_body(b"busy: \xFF"), "busy: \u{FFFD}");
    }

    /// Parses the hex dumps of docs/PROTOCOL.md §9 (offset, 16 bytes, comment).
    fn hex_dump(dump: &str) -> Vec<u8> {
        dump.lines()
            .flat_map(|line| line.split_whitespace().skip(1).take_while(|t| t.len() == 2))
            .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
            .collect()
    }

    #[test]
    fn worked_example_matches_docs_protocol_md() {
        let handshake = hex_dump(
            "0000  53 54 4c 44 01 00 01 00 00 00 00 00 00 00 00 00
             0010  00 00 00 00 00 00 00 00 00 00 00 00 04 00 00 00
             0020  00 00 00 00 08 79 80 86 00 00 00 00 00 00 00 00
             0030  00 00 00 00 00 00 00 00 00 00 00 00 00 03 ca df
             0040  01 00 01 00",
        );
        let mut frame = Vec::new();
        let body = handshake_body(1, 1);
        encode_frame(&mut frame, FrameKind::Handshake, 0, 0, 0, 0, &body);
        assert_eq!(frame, handshake);

        let request = hex_dump(
            "0000  53 54 4c 44 01 00 02 03 00 00 00 00 00 00 00 00
             0010  01 00 00 00 00 00 00 00 02 00 00 00 20 00 00 00
             0020  00 00 00 00 6c 8b c3 56 00 00 00 00 00 00 00 00
             0030  00 00 00 00 00 00 00 00 00 00 00 00 fb 71 19 8f
             0040  01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             0050  02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
        );
        let ids = crate::records::as_bytes(&[1u128, 2]).to_vec();
        let lookup = crate::Operation::LookupAccounts.code();
        let mut frame = Vec::new();
        encode_frame(&mut frame, FrameKind::Request, lookup, 1, 2, 0, &ids);
        assert_eq!(frame, request);

        let message = "too_many_in_flight: limit 64 (requests_in_flight_per_connection_max)";
        let code = ErrorCode::TooManyInFlight.code();
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            FrameKind::Error,
            lookup,
            1,
            0,
            code,
            message.as_bytes(),
        );
        let header = Header::decode(frame[..HEADER_BYTES].try_into().expect("64 bytes"));
        let header = header.expect("valid");
        assert_eq!((header.body_bytes, header.body_checksum), (68, 0x8b24_fe5c));
        assert_eq!(&frame[60..64], &[0xf3, 0xea, 0xfc, 0x65]);
    }

    fn arbitrary_header() -> impl Strategy<Value = Header> {
        (
            any::<u16>(),
            0..FrameKind::ALL.len(),
            any::<u8>(),
            any::<u64>(),
            any::<u32>(),
            0..=BODY_BYTES_MAX,
            any::<u16>(),
            any::<u32>(),
        )
            .prop_map(
                |(
                    version,
                    kind,
                    operation,
                    request_id,
                    event_count,
                    body_bytes,
                    error,
                    body_checksum,
                )| Header {
                    version,
                    kind: FrameKind::ALL[kind],
                    operation,
                    request_id,
                    event_count,
                    body_bytes,
                    error,
                    body_checksum,
                },
            )
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_accepts_only_encoded_headers(
            bytes in proptest::collection::vec(any::<u8>(), HEADER_BYTES)
        ) {
            let mut header_bytes = [0u8; HEADER_BYTES];
            header_bytes.copy_from_slice(&bytes);
            if let Ok(header) = Header::decode(&header_bytes) {
                prop_assert_eq!(header.encode(), header_bytes);
            }
        }

        #[test]
        fn encode_then_decode_is_identity(header in arbitrary_header()) {
            prop_assert_eq!(Header::decode(&header.encode()), Ok(header));
        }

        #[test]
        fn resigned_random_headers_decode_only_when_well_formed(header in arbitrary_header(), offset in 0usize..60, value in any::<u8>()) {
            // Random bytes almost never pass the checksum; re-sign them so the checks behind
            // it (kind, reserved, body size) are exercised too.
            let mut bytes = header.encode();
            bytes[offset] = value;
            let checksum = crc32c::crc32c(&bytes[..60]);
            bytes[60..].copy_from_slice(&checksum.to_le_bytes());
            if let Ok(decoded) = Header::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }

        /// The `frame_header` fuzz target's check, over random bytes.
        #[test]
        fn frame_checks_hold_for_random_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..HEADER_BYTES * 3)
        ) {
            crate::fuzzing::check_frame(&data);
        }

        /// The same check over valid frames (handshakes with and without a token, requests
        /// of records) with a few bytes changed, re-signed as the mode byte says so that
        /// the checks behind the checksums are reached.
        #[test]
        fn frame_checks_hold_for_mutated_frames(
            frame in arbitrary_frame(),
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            mode in any::<u8>(),
        ) {
            let mut data = vec![mode];
            data.extend_from_slice(&frame);
            for (index, value) in mutations {
                let at = 1 + index.index(frame.len());
                data[at] = value;
            }
            crate::fuzzing::check_frame(&data);
        }
    }

    /// An encoded frame of any kind whose body is a handshake (with or without a token),
    /// records, or an error message.
    fn arbitrary_frame() -> impl Strategy<Value = Vec<u8>> {
        let body = prop_oneof![
            (any::<u16>(), any::<u16>()).prop_map(|(min, max)| handshake_body(min, max).to_vec()),
            (
                any::<u16>(),
                proptest::collection::vec(any::<u8>(), 1..=130)
            )
                .prop_map(|(version, token)| handshake_body_with_token(
                    version, version, &token
                )
                .unwrap_or_default()),
            (0usize..4).prop_map(|records| vec![7u8; records * 128]),
            "[a-z_: 0-9é]{0,40}".prop_map(String::into_bytes),
        ];
        (arbitrary_header(), body).prop_map(|(header, body)| {
            let mut frame = Vec::new();
            encode_frame(
                &mut frame,
                header.kind,
                header.operation,
                header.request_id,
                header.event_count,
                header.error,
                &body,
            );
            frame
        })
    }
}
