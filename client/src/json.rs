//! JSON Lines ⇄ records, with the field names of SEMANTICS.md: what the `settle` CLI reads
//! from event files and prints.
//!
//! Input: one object per line; u128/u64 fields as decimal strings or JSON numbers; `flags`
//! as a list of flag names; omitted fields are zero; unknown fields are an error (a typo
//! must not silently become a zero). Output: u128 and u64 as decimal strings, smaller
//! integers as numbers, flags as a list of names.

use protocol::{Account, AccountBalance, AccountFlags, Transfer, TransferFlags};
use serde_json::{Map, Value};

/// A field that could not be read, with the reason.
#[derive(Debug)]
pub struct FieldError(pub String);

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Fields<'a> {
    object: &'a Map<String, Value>,
    known: &'static [&'static str],
}

impl<'a> Fields<'a> {
    fn new(value: &'a Value, known: &'static [&'static str]) -> Result<Fields<'a>, FieldError> {
        let object = value
            .as_object()
            .ok_or_else(|| FieldError("expected a JSON object".into()))?;
        if let Some(unknown) = object.keys().find(|key| !known.contains(&key.as_str())) {
            return Err(FieldError(format!(
                "unknown field `{unknown}` (known: {})",
                known.join(", ")
            )));
        }
        Ok(Fields { object, known })
    }

    fn uint<T: TryFrom<u128>>(&self, name: &str) -> Result<T, FieldError> {
        debug_assert!(self.known.contains(&name));
        let Some(value) = self.object.get(name) else {
            return T::try_from(0).map_err(|_| FieldError("zero does not fit".into()));
        };
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Null => "0".to_string(),
            other => {
                return Err(FieldError(format!(
                    "`{name}`: expected an unsigned integer (number or decimal string), got {other}"
                )))
            }
        };
        let wide: u128 = text
            .parse()
            .map_err(|_| FieldError(format!("`{name}`: `{text}` is not an unsigned integer")))?;
        T::try_from(wide).map_err(|_| {
            FieldError(format!(
                "`{name}`: {wide} is out of range (at most {} bits)",
                8 * size_of::<T>()
            ))
        })
    }

    fn flags<F>(
        &self,
        from_name: impl Fn(&str) -> Option<F>,
        all: &[&str],
    ) -> Result<Vec<F>, FieldError> {
        let Some(value) = self.object.get("flags") else {
            return Ok(Vec::new());
        };
        let list = value.as_array().ok_or_else(|| {
            FieldError("`flags`: expected a list of flag names, e.g. [\"linked\"]".into())
        })?;
        list.iter()
            .map(|item| {
                let name = item.as_str().unwrap_or_default();
                from_name(name).ok_or_else(|| {
                    FieldError(format!(
                        "`flags`: unknown flag {item} (known: {})",
                        all.join(", ")
                    ))
                })
            })
            .collect()
    }
}

const ACCOUNT_FIELDS: &[&str] = &[
    "id",
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "ledger",
    "code",
    "flags",
    "timestamp",
];

const TRANSFER_FIELDS: &[&str] = &[
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "pending_id",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "timeout",
    "ledger",
    "code",
    "flags",
    "timestamp",
];

pub fn account_from_json(value: &Value) -> Result<Account, FieldError> {
    let fields = Fields::new(value, ACCOUNT_FIELDS)?;
    let names: Vec<&str> = AccountFlags::ALL.iter().map(|(_, name)| *name).collect();
    let mut flags = AccountFlags::default();
    for flag in fields.flags(AccountFlags::from_name, &names)? {
        flags |= flag;
    }
    Ok(Account {
        id: fields.uint("id")?,
        debits_pending: fields.uint("debits_pending")?,
        debits_posted: fields.uint("debits_posted")?,
        credits_pending: fields.uint("credits_pending")?,
        credits_posted: fields.uint("credits_posted")?,
        user_data_128: fields.uint("user_data_128")?,
        user_data_64: fields.uint("user_data_64")?,
        user_data_32: fields.uint("user_data_32")?,
        ledger: fields.uint("ledger")?,
        code: fields.uint("code")?,
        flags,
        timestamp: fields.uint("timestamp")?,
        ..Account::default()
    })
}

pub fn transfer_from_json(value: &Value) -> Result<Transfer, FieldError> {
    let fields = Fields::new(value, TRANSFER_FIELDS)?;
    let names: Vec<&str> = TransferFlags::ALL.iter().map(|(_, name)| *name).collect();
    let mut flags = TransferFlags::default();
    for flag in fields.flags(TransferFlags::from_name, &names)? {
        flags |= flag;
    }
    Ok(Transfer {
        id: fields.uint("id")?,
        debit_account_id: fields.uint("debit_account_id")?,
        credit_account_id: fields.uint("credit_account_id")?,
        amount: fields.uint("amount")?,
        pending_id: fields.uint("pending_id")?,
        user_data_128: fields.uint("user_data_128")?,
        user_data_64: fields.uint("user_data_64")?,
        user_data_32: fields.uint("user_data_32")?,
        timeout: fields.uint("timeout")?,
        ledger: fields.uint("ledger")?,
        code: fields.uint("code")?,
        flags,
        timestamp: fields.uint("timestamp")?,
    })
}

fn text(value: impl ToString) -> Value {
    Value::String(value.to_string())
}

fn flag_names<'a>(names: impl Iterator<Item = &'a str>) -> Value {
    Value::Array(names.map(|name| Value::String(name.to_string())).collect())
}

pub fn account_to_json(account: &Account) -> Value {
    serde_json::json!({
        "id": text(account.id),
        "debits_pending": text(account.debits_pending),
        "debits_posted": text(account.debits_posted),
        "credits_pending": text(account.credits_pending),
        "credits_posted": text(account.credits_posted),
        "user_data_128": text(account.user_data_128),
        "user_data_64": text(account.user_data_64),
        "user_data_32": account.user_data_32,
        "ledger": account.ledger,
        "code": account.code,
        "flags": flag_names(account.flags.names()),
        "timestamp": text(account.timestamp),
    })
}

pub fn transfer_to_json(transfer: &Transfer) -> Value {
    serde_json::json!({
        "id": text(transfer.id),
        "debit_account_id": text(transfer.debit_account_id),
        "credit_account_id": text(transfer.credit_account_id),
        "amount": text(transfer.amount),
        "pending_id": text(transfer.pending_id),
        "user_data_128": text(transfer.user_data_128),
        "user_data_64": text(transfer.user_data_64),
        "user_data_32": transfer.user_data_32,
        "timeout": transfer.timeout,
        "ledger": transfer.ledger,
        "code": transfer.code,
        "flags": flag_names(transfer.flags.names()),
        "timestamp": text(transfer.timestamp),
    })
}

pub fn balance_to_json(balance: &AccountBalance) -> Value {
    serde_json::json!({
        "debits_pending": text(balance.debits_pending),
        "debits_posted": text(balance.debits_posted),
        "credits_pending": text(balance.credits_pending),
        "credits_posted": text(balance.credits_posted),
        "timestamp": text(balance.timestamp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_read_strings_numbers_flags_and_defaults() {
        let line = r#"{"id":"340282366920938463463374607431768211454","debit_account_id":1,
            "credit_account_id":"2","amount":12,"ledger":840,"code":1,"flags":["pending","linked"]}"#;
        let transfer = transfer_from_json(&serde_json::from_str(line).unwrap()).unwrap();
        assert_eq!(transfer.id, u128::MAX - 1);
        assert_eq!(
            (transfer.debit_account_id, transfer.credit_account_id),
            (1, 2)
        );
        assert_eq!(
            transfer.flags,
            TransferFlags::PENDING | TransferFlags::LINKED
        );
        assert_eq!((transfer.timeout, transfer.pending_id), (0, 0));
        let back = transfer_to_json(&transfer);
        assert_eq!(back["id"], "340282366920938463463374607431768211454");
        assert_eq!(back["flags"], serde_json::json!(["linked", "pending"]));
        assert_eq!(transfer_from_json(&back).unwrap(), transfer);
    }

    #[test]
    fn bad_fields_name_the_field() {
        let cases = [
            (r#"{"id":1,"amout":5}"#, "unknown field `amout`"),
            (r#"{"id":-1}"#, "`id`"),
            (r#"{"id":1.5}"#, "`id`"),
            (r#"{"code":70000}"#, "`code`: 70000 is out of range"),
            (r#"{"flags":["pendng"]}"#, "unknown flag \"pendng\""),
            (r#"{"flags":"pending"}"#, "expected a list"),
            ("[1]", "expected a JSON object"),
        ];
        for (line, expected) in cases {
            let error = transfer_from_json(&serde_json::from_str(line).unwrap()).unwrap_err();
            assert!(error.0.contains(expected), "{line}: {error}");
        }
    }
}

#[cfg(test)]
mod fuzz_tests {
    //! The `cli_events` fuzz target's check as a proptest: over random text, and over
    //! lines made of the known field names with values of every JSON shape.

    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u128>().prop_map(|n| n.to_string()),
            any::<u128>().prop_map(|n| format!("\"{n}\"")),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("340282366920938463463374607431768211456".to_string()),
            Just("1e3".to_string()),
            Just("1.0".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("\"\"".to_string()),
            Just("[\"linked\",\"pending\",\"history\"]".to_string()),
            Just("[1]".to_string()),
            Just("{}".to_string()),
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        let name = prop::sample::select(
            [super::ACCOUNT_FIELDS, super::TRANSFER_FIELDS, &["amout"]].concat(),
        );
        prop::collection::vec((name, value()), 0..6).prop_map(|fields| {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("\"{name}\":{value}"))
                .collect();
            format!("{{{}}}", fields.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn event_lines_checks_hold_for_random_text(text in "\\PC{0,200}") {
            crate::fuzzing::check_event_lines(text.as_bytes());
        }

        #[test]
        fn event_lines_checks_hold_for_lines_of_known_fields(
            lines in prop::collection::vec(line(), 1..4),
        ) {
            crate::fuzzing::check_event_lines(lines.join("\n").as_bytes());
        }
    }
}
