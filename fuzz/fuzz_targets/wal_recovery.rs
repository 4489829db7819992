//! WAL recovery (`Wal::open_with_storage`) over segment files made of the input, held in
//! memory: Ok or an error, never a panic or a hang; then replay, append and reopen.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wal::fuzzing::check_recovery(data);
});
