//! The check of the `cli_events` fuzz target (`fuzz/`, nightly), also run as a proptest
//! in `make test`: one property, two drivers. Not part of the API.

use serde_json::Value;

use crate::json::{account_from_json, account_to_json, transfer_from_json, transfer_to_json};

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
        match account_from_json(&value) {
            Ok(account) => {
                let printed = account_to_json(&account);
                let read_back = account_from_json(&printed).expect("printed accounts read back");
                assert_eq!(read_back, account);
            }
            Err(error) => assert!(!error.0.is_empty()),
        }
        match transfer_from_json(&value) {
            Ok(transfer) => {
                let printed = transfer_to_json(&transfer);
                let read_back = transfer_from_json(&printed).expect("printed transfers read back");
                assert_eq!(read_back, transfer);
            }
            Err(error) => assert!(!error.0.is_empty()),
        }
    }
}
