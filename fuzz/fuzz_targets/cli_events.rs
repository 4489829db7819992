//! The `settle` CLI's JSON event parser (`settled_client::json`) on the input as an event
//! file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    client::fuzzing::check_event_lines(data);
});
