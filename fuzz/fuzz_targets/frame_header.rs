//! The frame decoder: `protocol::frame::Header::decode`, the body checks and parsers
//! (`check_body`, `check_first_header`, `parse_handshake_body`, `parse_error_body`), then
//! the server's incremental frame parser on the same bytes as a connection's stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    protocol::fuzzing::check_frame(data);
    engine::fuzzing::check_frame_stream(data);
});
