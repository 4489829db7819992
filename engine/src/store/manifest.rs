//! The checkpoint manifest: the one row of `meta`, written last in every checkpoint's
//! batch (its layout is in the module documentation of `store`).

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};

use super::codec::key_hex;
use super::{CheckpointMeta, StoreError, CF_META, META_KEY};
use crate::ledger::CheckpointTotals;

/// The layout this build writes and reads. Bump it on any change to a key or value
/// layout of any column family.
pub const FORMAT_VERSION: u32 = 4;

/// Encoded size of a [`Manifest`]: fixed-width fields, see the module documentation.
pub const MANIFEST_BYTES: usize = 148;

#[derive(bincode::Encode, bincode::Decode)]
struct Manifest {
    format_version: u32,
    lsn: u64,
    timestamp_last: u64,
    accounts_count: u64,
    accounts: u128,
    transfers_count: u64,
    transfers_timestamp_last: u64,
    transfers: u128,
    pending_count: u64,
    pending: u128,
    history_count: u64,
    history: u128,
    failed_ids_count: u64,
    failed_ids: u128,
}

/// Fixed-width integers so the layout is the documented one byte for byte; the limit
/// bounds what a corrupt length could make the decoder do.
const CONFIG: Configuration<LittleEndian, Fixint, Limit<256>> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<256>();

pub fn encode(meta: CheckpointMeta, totals: &CheckpointTotals) -> Vec<u8> {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        lsn: meta.lsn,
        timestamp_last: meta.timestamp_last,
        accounts_count: totals.accounts_count,
        accounts: totals.accounts,
        transfers_count: totals.transfers_count,
        transfers_timestamp_last: totals.transfers_timestamp_last,
        transfers: totals.transfers,
        pending_count: totals.pending_count,
        pending: totals.pending,
        history_count: totals.history_count,
        history: totals.history,
        failed_ids_count: totals.failed_ids_count,
        failed_ids: totals.failed_ids,
    };
    let bytes = bincode::encode_to_vec(manifest, CONFIG).expect("a manifest fits its limit");
    assert_eq!(bytes.len(), MANIFEST_BYTES);
    bytes
}

pub fn decode(bytes: &[u8]) -> Result<(CheckpointMeta, CheckpointTotals), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        cf: CF_META,
        key: key_hex(META_KEY),
        reason,
    };
    // The version first: a manifest of another layout must be reported as that, not as
    // garbage, whatever its length.
    let (format_version, _) = bincode::decode_from_slice::<u32, _>(bytes, CONFIG)
        .map_err(|error| corrupt(format!("no format version: {error}")))?;
    if format_version != FORMAT_VERSION {
        return Err(StoreError::FormatVersion {
            found: format_version,
            expected: FORMAT_VERSION,
        });
    }
    if bytes.len() != MANIFEST_BYTES {
        let length = bytes.len();
        return Err(corrupt(format!(
            "manifest is {length} bytes, not {MANIFEST_BYTES}"
        )));
    }
    let (manifest, _) = bincode::decode_from_slice::<Manifest, _>(bytes, CONFIG)
        .map_err(|error| corrupt(error.to_string()))?;
    let meta = CheckpointMeta {
        lsn: manifest.lsn,
        timestamp_last: manifest.timestamp_last,
    };
    let totals = CheckpointTotals {
        accounts_count: manifest.accounts_count,
        accounts: manifest.accounts,
        transfers_count: manifest.transfers_count,
        transfers_timestamp_last: manifest.transfers_timestamp_last,
        transfers: manifest.transfers,
        pending_count: manifest.pending_count,
        pending: manifest.pending,
        history_count: manifest.history_count,
        history: manifest.history,
        failed_ids_count: manifest.failed_ids_count,
        failed_ids: manifest.failed_ids,
    };
    if totals.pending_count > totals.transfers_count
        || totals.transfers_timestamp_last > meta.timestamp_last
    {
        return Err(corrupt(format!(
            "manifest fields disagree: {meta:?}, {totals:?}"
        )));
    }
    Ok((meta, totals))
}
