//! The server's request decoders (`server::codec::check` and `decode`) on a header and a
//! body made of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    engine::fuzzing::check_request(data);
});
