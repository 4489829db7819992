//! Checks shared by the `frame_header` fuzz target (`fuzz/`, nightly) and this crate's
//! proptests (`make test`, stable): one property, two drivers. Not part of the API.
//!
//! Each check takes arbitrary bytes and asserts what must hold for them, not only that
//! nothing panics: a header that decodes re-encodes to the same bytes, a body check agrees
//! with the length and CRC32C it was given, a parsed handshake re-encodes to its body.
//!
//! Random bytes almost never pass a CRC32C, so the first input byte is a set of
//! [`Resign`] bits that fix the checksums (and the body length) before the check: with
//! them, the checks behind the checksums (kind, reserved bytes, size limits) are reached.

use crate::frame::{
    check_first_header, handshake_body, handshake_body_with_token, parse_error_body,
    parse_handshake_body, FrameError, FrameKind, Header, BODY_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX,
    HANDSHAKE_BODY_BYTES_MAX, HANDSHAKE_TOKEN_BYTES_MAX, HEADER_BYTES, MAGIC,
};
use crate::{Account, AccountFilter, QueryFilter, Transfer};

/// Which fields of a header [`resign`] rewrites to match the bytes that follow it.
pub struct Resign;

impl Resign {
    /// body_bytes := the length of what follows (when it fits a u32).
    pub const BODY_BYTES: u8 = 1 << 0;
    /// body_checksum := CRC32C of the body.
    pub const BODY_CHECKSUM: u8 = 1 << 1;
    /// header_checksum := CRC32C of header bytes 0..60 (applied last).
    pub const HEADER_CHECKSUM: u8 = 1 << 2;
}

/// Offsets of the header fields [`resign`] rewrites (docs/PROTOCOL.md, `frame.rs`).
const BODY_BYTES_OFFSET: usize = 28;
const BODY_CHECKSUM_OFFSET: usize = 36;
const HEADER_CHECKSUM_OFFSET: usize = 60;

/// Rewrite the header's length and checksums to agree with `body`, as `mode` says.
pub fn resign(mode: u8, header: &mut [u8; HEADER_BYTES], body: &[u8]) {
    if mode & Resign::BODY_BYTES != 0 {
        if let Ok(body_bytes) = u32::try_from(body.len()) {
            header[BODY_BYTES_OFFSET..][..4].copy_from_slice(&body_bytes.to_le_bytes());
        }
    }
    if mode & Resign::BODY_CHECKSUM != 0 {
        let checksum = crc32c::crc32c(body);
        header[BODY_CHECKSUM_OFFSET..][..4].copy_from_slice(&checksum.to_le_bytes());
    }
    if mode & Resign::HEADER_CHECKSUM != 0 {
        let checksum = crc32c::crc32c(&header[..HEADER_CHECKSUM_OFFSET]);
        header[HEADER_CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
    }
}

/// `data` = mode byte ([`Resign`] bits), a 64-byte header, its body. Checks the header
/// decoder and the body checks on them, and the body parsers on whatever follows the mode
/// byte when there is no whole header.
pub fn check_frame(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((header, body)) = rest.split_first_chunk::<HEADER_BYTES>() else {
        check_bodies(rest);
        return;
    };
    let mut header = *header;
    resign(mode, &mut header, body);
    check_header(&header, body);
    check_bodies(body);
}

/// [`Header::decode`] accepts exactly the bytes [`Header::encode`] makes, and what it
/// accepts is within the limits; `check_body` and `check_first_header` say yes exactly
/// when their rules hold.
pub fn check_header(bytes: &[u8; HEADER_BYTES], body: &[u8]) {
    let header = match Header::decode(bytes) {
        Ok(header) => header,
        Err(error) => {
            check_frame_error(&error);
            let (magic, _) = bytes.split_first_chunk::<4>().expect("64 bytes");
            let found = u32::from_le_bytes(*magic);
            if found != MAGIC {
                assert_eq!(error, FrameError::BadMagic { found });
            }
            return;
        }
    };
    assert_eq!(
        &header.encode(),
        bytes,
        "a decoded header re-encodes to its bytes"
    );
    assert!(header.body_bytes <= BODY_BYTES_MAX);
    let whole = body.len() == header.body_bytes as usize;
    let checksum_holds = crc32c::crc32c(body) == header.body_checksum;
    match header.check_body(body) {
        Ok(()) => assert!(whole && checksum_holds),
        Err(error) => {
            check_frame_error(&error);
            assert!(!(whole && checksum_holds), "{error}");
        }
    }
    let first_allowed =
        header.kind == FrameKind::Handshake && header.body_bytes <= HANDSHAKE_BODY_BYTES_MAX;
    match check_first_header(&header) {
        Ok(()) => assert!(first_allowed),
        Err(error) => {
            check_frame_error(&error);
            assert!(!first_allowed, "{error}");
        }
    }
}

/// Every frame error closes the connection, and its message starts with its code's name
/// (it is sent as the Error frame's message as is).
fn check_frame_error(error: &FrameError) {
    assert!(error.code().is_fatal(), "{error}");
    assert!(error.to_string().starts_with(error.code().as_str()));
}

/// The body parsers: handshake, error message, and the fixed-size records of requests
/// and replies.
pub fn check_bodies(body: &[u8]) {
    check_handshake_body(body);
    check_error_body(body);
    check_records::<Account>(body);
    check_records::<Transfer>(body);
    check_records::<AccountFilter>(body);
    check_records::<QueryFilter>(body);
    check_records::<u128>(body);
}

/// A parsed handshake re-encodes to the very body it came from; anything else is a
/// `bad_frame`.
fn check_handshake_body(body: &[u8]) {
    match parse_handshake_body(body) {
        Ok(handshake) => {
            let encoded = match handshake.token {
                None => handshake_body(handshake.version_min, handshake.version_max).to_vec(),
                Some(token) => {
                    assert!(!token.is_empty());
                    assert!(token.len() <= HANDSHAKE_TOKEN_BYTES_MAX as usize);
                    let encoded = handshake_body_with_token(
                        handshake.version_min,
                        handshake.version_max,
                        token,
                    );
                    encoded.expect("a parsed token is within the limits")
                }
            };
            assert_eq!(encoded, body);
            assert!(body.len() <= HANDSHAKE_BODY_BYTES_MAX as usize);
        }
        Err(error) => {
            check_frame_error(&error);
            assert!(
                matches!(error, FrameError::HandshakeBody { body_bytes, .. } if body_bytes == body.len())
            );
        }
    }
}

/// An Error frame's message reads at most [`ERROR_MESSAGE_BYTES_MAX`] bytes, is exact
/// when they are UTF-8, and [`crate::frame::error_body`] cuts it back within the limit.
fn check_error_body(body: &[u8]) {
    let message = parse_error_body(body);
    let kept = &body[..body.len().min(ERROR_MESSAGE_BYTES_MAX as usize)];
    if let Ok(text) = std::str::from_utf8(kept) {
        assert_eq!(message, text);
    }
    let cut = crate::frame::error_body(&message);
    assert!(cut.len() <= ERROR_MESSAGE_BYTES_MAX as usize);
    assert!(message.as_bytes().starts_with(cut));
}

/// Records decode from whole multiples of their size only, and back to the same bytes.
fn check_records<T: bytemuck::Pod>(body: &[u8]) {
    match crate::records::from_bytes::<T>(body) {
        Ok(records) => {
            assert_eq!(records.len() * size_of::<T>(), body.len());
            assert_eq!(crate::records::as_bytes(&records), body);
        }
        Err(error) => {
            assert_ne!(body.len() % size_of::<T>(), 0);
            assert_eq!(error.length_bytes, body.len() as u64);
        }
    }
}
