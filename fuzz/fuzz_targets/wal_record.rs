//! The WAL record decoders (`decode_segment_header`, `decode_record*`, the torn-tail
//! search), then the engine's batch decoder (`core::record::decode`) on the payloads of
//! the records that decode, replayed on one ledger as recovery does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    engine::fuzzing::check_wal_records(data);
});
