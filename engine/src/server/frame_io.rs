//! Reading frames off a socket: buffered reads into a `BytesMut`, then check-then-parse.
//!
//! [`parse`] looks at what is buffered and either returns a whole, checked frame or says
//! [`Parsed::Incomplete`]; only then does [`FrameReader`] read more. The header is
//! validated (magic, checksum, kind, reserved bytes, `body_bytes <= BODY_BYTES_MAX`) as
//! soon as its 64 bytes are in, before any room is made for the body, so a hostile length
//! costs nothing. Until the handshake is done the first frame's header must also be a
//! Handshake of at most `HANDSHAKE_BODY_BYTES_MAX` bytes (`check_first_header`): a client
//! that has not shown its token cannot make the server reserve a megabyte. Bodies are
//! split off the buffer without copying.

use bytes::{Buf, Bytes, BytesMut};
use protocol::frame::{check_first_header, FrameError, Header, HEADER_BYTES};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes reserved per read when the buffer is empty: a handful of small requests. Bigger
/// bodies get exactly the room they need once their header has been checked.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// A whole frame whose header and body checksums hold.
#[derive(Debug)]
pub(crate) struct Frame {
    pub header: Header,
    pub body: Bytes,
}

#[derive(Debug)]
pub(crate) enum Parsed {
    Frame(Frame),
    /// More bytes are needed before anything can be said.
    Incomplete,
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The bytes broke the protocol: answer with an Error frame, then close.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer closed in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    ClosedMidFrame { buffered: usize },
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}

/// Take one frame from the front of `buffer` if it is all there. `header` caches the
/// decoded header of a frame whose body is still arriving, so it is checked once. `first`:
/// no handshake yet, so the header must pass `check_first_header` too.
pub(crate) fn parse(
    buffer: &mut BytesMut,
    header: &mut Option<Header>,
    first: bool,
) -> Result<Parsed, FrameError> {
    let checked = match *header {
        Some(checked) => checked,
        None => {
            let Some(bytes) = buffer.first_chunk::<HEADER_BYTES>() else {
                return Ok(Parsed::Incomplete);
            };
            let decoded = Header::decode(bytes)?;
            if first {
                check_first_header(&decoded)?;
            }
            *header = Some(decoded);
            decoded
        }
    };
    // Cannot overflow: body_bytes <= BODY_BYTES_MAX was checked by decode.
    let frame_bytes = HEADER_BYTES + checked.body_bytes as usize;
    if buffer.len() < frame_bytes {
        // Room for the rest of this frame only, now that its size is known to be sane.
        buffer.reserve(frame_bytes - buffer.len());
        return Ok(Parsed::Incomplete);
    }
    *header = None;
    buffer.advance(HEADER_BYTES);
    let body = buffer.split_to(checked.body_bytes as usize).freeze();
    checked.check_body(&body)?;
    Ok(Parsed::Frame(Frame {
        header: checked,
        body,
    }))
}

/// Frames from one socket's read half.
pub(crate) struct FrameReader<R> {
    stream: R,
    buffer: BytesMut,
    header: Option<Header>,
    /// Until [`FrameReader::handshake_done`]: the next frame is the connection's first.
    first: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(stream: R) -> FrameReader<R> {
        FrameReader {
            stream,
            buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            header: None,
            first: true,
        }
    }

    /// The handshake was accepted: later frames get the ordinary limits.
    pub fn handshake_done(&mut self) {
        self.first = false;
    }

    /// The next frame, or `None` when the peer closed cleanly between frames.
    ///
    /// Cancel-safe: everything read so far stays in the buffer, so it can sit in a
    /// `select!` against the shutdown signal.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Parsed::Frame(frame) = parse(&mut self.buffer, &mut self.header, self.first)? {
                return Ok(Some(frame));
            }
            if self.buffer.capacity() == self.buffer.len() {
                self.buffer.reserve(READ_BUFFER_BYTES);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let buffered = self.buffer.len();
                return Err(ReadError::ClosedMidFrame { buffered });
            }
        }
    }

    pub fn into_inner(self) -> R {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::frame::{encode_frame, FrameKind, BODY_BYTES_MAX};

    fn frame_bytes(request_id: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, FrameKind::Request, 3, request_id, 1, 0, body);
        out
    }

    fn expect_frame(parsed: Parsed) -> Frame {
        match parsed {
            Parsed::Frame(frame) => frame,
            Parsed::Incomplete => panic!("incomplete"),
        }
    }

    #[test]
    fn frames_arriving_byte_by_byte_parse_once_whole() {
        let bytes = [frame_bytes(7, &[1; 16]), frame_bytes(8, &[2; 16])].concat();
        let (mut buffer, mut header) = (BytesMut::new(), None);
        let mut frames = Vec::new();
        for byte in bytes {
            buffer.extend_from_slice(&[byte]);
            if let Parsed::Frame(frame) = parse(&mut buffer, &mut header, false).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].header.request_id, 7);
        assert_eq!(&frames[1].body[..], &[2; 16]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn two_frames_in_one_buffer_come_out_in_order() {
        let bytes = [frame_bytes(1, &[]), frame_bytes(2, &[9; 32])].concat();
        let (mut buffer, mut header) = (BytesMut::from(&bytes[..]), None);
        let first = expect_frame(parse(&mut buffer, &mut header, false).unwrap());
        let second = expect_frame(parse(&mut buffer, &mut header, false).unwrap());
        assert_eq!((first.header.request_id, first.body.len()), (1, 0));
        assert_eq!((second.header.request_id, second.body.len()), (2, 32));
        assert!(matches!(
            parse(&mut buffer, &mut header, false).unwrap(),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn an_oversized_body_is_refused_from_the_header_without_reserving_it() {
        let mut header = Header::new(FrameKind::Request, 3, 1, 1, 0, &[]);
        header.body_bytes = BODY_BYTES_MAX + 1;
        let mut buffer = BytesMut::from(&header.encode()[..]);
        let error = parse(&mut buffer, &mut None, false).unwrap_err();
        assert!(matches!(error, FrameError::BodyTooLarge { .. }));
        assert!(buffer.capacity() < 1024, "no room was made for the body");
    }

    #[test]
    fn a_first_frame_is_refused_from_its_header_unless_a_small_handshake() {
        let mut header = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &[]);
        header.body_bytes = BODY_BYTES_MAX;
        // Legal for a later frame, but not before the handshake is done.
        let mut buffer = BytesMut::from(&header.encode()[..]);
        let error = parse(&mut buffer, &mut None, true).unwrap_err();
        assert!(matches!(error, FrameError::HandshakeTooLarge { .. }));
        assert!(buffer.capacity() < 1024, "no room was made for the body");

        let mut buffer = BytesMut::from(&frame_bytes(1, &[0; 16])[..HEADER_BYTES]);
        let error = parse(&mut buffer, &mut None, true).unwrap_err();
        assert!(matches!(error, FrameError::HandshakeRequired { .. }));

        let mut bytes = Vec::new();
        let body = protocol::frame::handshake_body(1, 1);
        encode_frame(&mut bytes, FrameKind::Handshake, 0, 0, 0, 0, &body);
        let parsed = parse(&mut BytesMut::from(&bytes[..]), &mut None, true).unwrap();
        assert_eq!(expect_frame(parsed).header.kind, FrameKind::Handshake);
    }

    #[test]
    fn corrupt_header_and_body_are_errors() {
        let mut bytes = frame_bytes(1, &[5; 16]);
        bytes[0] = b'X';
        let error = parse(&mut BytesMut::from(&bytes[..]), &mut None, false).unwrap_err();
        assert!(matches!(error, FrameError::BadMagic { .. }));

        let mut bytes = frame_bytes(1, &[5; 16]);
        bytes[20] ^= 1;
        let error = parse(&mut BytesMut::from(&bytes[..]), &mut None, false).unwrap_err();
        assert!(matches!(error, FrameError::HeaderChecksum { .. }));

        let mut bytes = frame_bytes(1, &[5; 16]);
        bytes[HEADER_BYTES + 3] ^= 1;
        let error = parse(&mut BytesMut::from(&bytes[..]), &mut None, false).unwrap_err();
        assert!(matches!(error, FrameError::BodyChecksum { .. }));
    }

    #[tokio::test]
    async fn reader_reports_clean_close_and_close_mid_frame() {
        let bytes = frame_bytes(4, &[3; 16]);
        let mut reader = FrameReader::new(&bytes[..]);
        reader.handshake_done();
        let frame = reader.read_frame().await.unwrap().unwrap();
        assert_eq!(frame.header.request_id, 4);
        assert!(reader.read_frame().await.unwrap().is_none());

        let mut reader = FrameReader::new(&bytes[..70]);
        reader.handshake_done();
        let error = reader.read_frame().await.unwrap_err();
        assert!(matches!(error, ReadError::ClosedMidFrame { buffered: 70 }));
    }
}
