//! Decimal amounts at the edge: "12.34" on a ledger of scale 2 is 1234 units inside.

use protocol::{ledger_find, LedgerAsset, LEDGER_SCALE_MAX};
use rust_decimal::Decimal;

/// The smallest units of `text` on a ledger of `scale`, refusing anything inexact.
pub fn parse_amount(text: &str, scale: u32) -> Result<u128, String> {
    let decimal = Decimal::from_str_exact(text.trim())
        .map_err(|error| format!("amount `{text}` is not a decimal number: {error}"))?;
    if decimal.is_sign_negative() {
        return Err(format!("amount `{text}` is negative"));
    }
    if decimal.scale() > scale {
        return Err(format!(
            "amount `{text}` has {} decimal places; this asset has {scale}",
            decimal.scale()
        ));
    }
    let mantissa =
        u128::try_from(decimal.mantissa()).map_err(|_| format!("amount `{text}` is negative"))?;
    10u128
        .checked_pow(scale - decimal.scale())
        .and_then(|factor| mantissa.checked_mul(factor))
        .ok_or_else(|| format!("amount `{text}` is too large"))
}

/// `units` (with `negative` sign) as a decimal with exactly `scale` places, exact for
/// every u128.
pub fn format_amount(negative: bool, units: u128, scale: u32) -> String {
    let digits = units.to_string();
    let scale = scale.min(u32::from(LEDGER_SCALE_MAX)) as usize;
    let sign = if negative && units != 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// Ledger by asset code (`USD`) or by numeric id.
pub fn find_ledger<'a>(ledgers: &'a [LedgerAsset], name: &str) -> Result<&'a LedgerAsset, String> {
    ledger_find(ledgers, name).ok_or_else(|| {
        let known: Vec<String> = ledgers
            .iter()
            .map(|l| format!("{} ({})", l.asset, l.id))
            .collect();
        format!("unknown ledger `{name}`; configured: {}", known.join(", "))
    })
}

/// "30s", "5m", "2h", "1d" or plain seconds.
pub fn parse_timeout_seconds(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (number, unit_seconds) = match text.char_indices().last() {
        Some((index, 's')) => (&text[..index], 1),
        Some((index, 'm')) => (&text[..index], 60),
        Some((index, 'h')) => (&text[..index], 3600),
        Some((index, 'd')) => (&text[..index], 86_400),
        _ => (text, 1),
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|count| count.checked_mul(unit_seconds))
        .ok_or_else(|| {
            format!("timeout `{text}` is not a duration like 30s, 5m, 2h (at most u32 seconds)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_exactly() {
        assert_eq!(parse_amount("12.34", 2), Ok(1234));
        assert_eq!(parse_amount("12.3", 2), Ok(1230));
        assert_eq!(parse_amount("12", 0), Ok(12));
        assert_eq!(parse_amount("0.00000001", 8), Ok(1));
        assert!(parse_amount("12.345", 2)
            .unwrap_err()
            .contains("3 decimal places"));
        assert!(parse_amount("-1", 2).unwrap_err().contains("negative"));
        assert!(parse_amount("abc", 2).is_err());
        assert!(parse_amount("4", 38).unwrap_err().contains("too large"));
        assert_eq!(format_amount(false, 1234, 2), "12.34");
        assert_eq!(format_amount(true, 5, 2), "-0.05");
        assert_eq!(format_amount(false, 0, 2), "0.00");
        assert_eq!(format_amount(false, 7, 0), "7");
        assert_eq!(
            format_amount(false, u128::MAX, 18),
            "340282366920938463463.374607431768211455"
        );
    }

    #[test]
    fn ledgers_and_timeouts() {
        let ledgers = vec![LedgerAsset {
            id: 840,
            asset: "USD".into(),
            scale: 2,
        }];
        assert_eq!(find_ledger(&ledgers, "usd").unwrap().id, 840);
        assert_eq!(find_ledger(&ledgers, "840").unwrap().asset, "USD");
        assert!(find_ledger(&ledgers, "EUR")
            .unwrap_err()
            .contains("USD (840)"));
        assert_eq!(parse_timeout_seconds("30s"), Ok(30));
        assert_eq!(parse_timeout_seconds("5m"), Ok(300));
        assert_eq!(parse_timeout_seconds("45"), Ok(45));
        assert!(parse_timeout_seconds("soon").is_err());
    }
}
