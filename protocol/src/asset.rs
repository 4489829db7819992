//! Ledgers as assets: which asset a ledger id holds and the decimal scale of its amounts.
//!
//! The engine never needs this (amounts are integers in the asset's smallest unit); the
//! edges do: the daemon's config file lists `[[ledgers]]`, and the `settle` CLI reads the
//! same table to show "12.34 USD" for 1234 units on ledger 840. One type, one set of
//! rules, for both.

use std::collections::HashSet;

/// One ledger (asset): its id, asset code and decimal scale (amount 1234 at scale 2 is
/// 12.34).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerAsset {
    pub id: u32,
    pub asset: String,
    pub scale: u8,
}

/// Largest decimal scale: a u128 amount has at most 39 decimal digits, so 10^38 is the
/// largest power of ten that fits; a larger scale could not show one whole unit.
pub const LEDGER_SCALE_MAX: u8 = 38;

/// Ledgers known when a config file lists none: US dollars, Japanese yen, euros, under
/// their ISO 4217 numeric codes.
pub fn ledgers_default() -> Vec<LedgerAsset> {
    [(840, "USD", 2), (392, "JPY", 0), (978, "EUR", 2)]
        .into_iter()
        .map(|(id, asset, scale)| LedgerAsset {
            id,
            asset: asset.to_string(),
            scale,
        })
        .collect()
}

/// Why a ledger table was refused: the `index`-th entry's `field` holds `value`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ledgers[{index}].{field} = {value}: {reason}")]
pub struct LedgerAssetError {
    pub index: usize,
    pub field: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Ids are non-zero and unique, asset codes non-empty and unique, scales at most
/// [`LEDGER_SCALE_MAX`].
pub fn ledgers_validate(ledgers: &[LedgerAsset]) -> Result<(), LedgerAssetError> {
    let mut ids = HashSet::new();
    let mut assets = HashSet::new();
    for (index, ledger) in ledgers.iter().enumerate() {
        let error = |field, value: String, reason| LedgerAssetError {
            index,
            field,
            value,
            reason,
        };
        if ledger.id == 0 {
            return Err(error("id", "0".into(), "ledger 0 is reserved"));
        }
        if !ids.insert(ledger.id) {
            return Err(error("id", ledger.id.to_string(), "duplicate ledger id"));
        }
        if ledger.asset.is_empty() {
            return Err(error("asset", "\"\"".into(), "must not be empty"));
        }
        if !assets.insert(ledger.asset.as_str()) {
            let value = format!("{:?}", ledger.asset);
            return Err(error("asset", value, "duplicate asset code"));
        }
        if ledger.scale > LEDGER_SCALE_MAX {
            let value = ledger.scale.to_string();
            return Err(error("scale", value, "must be at most 38"));
        }
    }
    Ok(())
}

/// The ledger named by asset code (any case) or by numeric id.
pub fn ledger_find<'a>(ledgers: &'a [LedgerAsset], name: &str) -> Option<&'a LedgerAsset> {
    ledgers.iter().find(|ledger| {
        ledger.asset.eq_ignore_ascii_case(name) || name.parse::<u32>() == Ok(ledger.id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ledgers_validate(&ledgers_default()).unwrap();
    }

    #[test]
    fn each_rule_names_the_entry_and_field() {
        let usd = LedgerAsset {
            id: 840,
            asset: "USD".into(),
            scale: 2,
        };
        let with = |second: LedgerAsset| ledgers_validate(&[usd.clone(), second]).unwrap_err();
        let zero = with(LedgerAsset {
            id: 0,
            ..usd.clone()
        });
        assert_eq!(zero.to_string(), "ledgers[1].id = 0: ledger 0 is reserved");
        let id = with(LedgerAsset {
            asset: "EUR".into(),
            ..usd.clone()
        });
        assert_eq!((id.index, id.field), (1, "id"));
        let asset = with(LedgerAsset {
            id: 1,
            ..usd.clone()
        });
        assert_eq!(
            asset.to_string(),
            "ledgers[1].asset = \"USD\": duplicate asset code"
        );
        let scale = with(LedgerAsset {
            id: 1,
            asset: "X".into(),
            scale: 39,
        });
        assert_eq!(
            scale.to_string(),
            "ledgers[1].scale = 39: must be at most 38"
        );
        let empty = with(LedgerAsset {
            id: 1,
            asset: String::new(),
            scale: 0,
        });
        assert_eq!(empty.field, "asset");
    }

    #[test]
    fn find_by_code_or_id() {
        let ledgers = ledgers_default();
        assert_eq!(ledger_find(&ledgers, "usd").unwrap().id, 840);
        assert_eq!(ledger_find(&ledgers, "392").unwrap().asset, "JPY");
        assert!(ledger_find(&ledgers, "GBP").is_none());
    }
}
