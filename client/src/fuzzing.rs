//! The check of the `cli_events` fuzz target (`fuzz/`, nightly), also run as a proptest
//! in `make test`: one property, two drivers. Not part of the API.

use serde_json::Value;

use crate::json::{
    account_from_json, account_to_json, transfer_from_json, transfer_to_json, FieldError,
};

/// `data` as an event file of the `settle` CLI (JSON Lines): each non-blank line is read
/// as `settle create-accounts` and `settle create-transfers` read it (a JSON value, then
/// an account or a transfer). Reading never panics; an event read prints (`*_to_json`,
/// as `settle lookup-*` does) to JSON that reads back to the same event; an error names
/// what it refused.
pub fn check_event_lines(data: &[u8]) {
    // `settle` reads lines with `BufRead::lines`, which refuses bytes that are not UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        check_read_back(&value, account_from_json, account_to_json);
        check_read_back(&value, transfer_from_json, transfer_to_json);
    }
}

/// `value` reads as an event that prints to JSON reading back the same, or as an error
/// that says something.
fn check_read_back<T: PartialEq + std::fmt::Debug>(
    value: &Value,
    read: fn(&Value) -> Result<T, FieldError>,
    print: fn(&T) -> Value,
) {
    match read(value) {
        Ok(event) => {
            let read_back = read(&print(&event)).expect("a printed event reads back");
            assert_eq!(read_back, event);
        }
        Err(error) => assert!(!error.0.is_empty()),
    }
}
