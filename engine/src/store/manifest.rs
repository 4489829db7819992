//! The checkpoint manifest: the one row of `meta`, written last in every checkpoint's
//! batch (its layout is in the module documentation of `store`).

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};

use super::codec::key_hex;
use super::{CheckpointMeta, StoreError, CF_META, META_KEY};

/// The layout this build writes and reads. Bump it on any change to a key or value
/// layout of any column family.
pub const FORMAT_VERSION: u32 = 2;

/// Encoded size of a [`Manifest`]: u32 + u64 + u64, fixed width.
pub const MANIFEST_BYTES: usize = 20;

#[derive(bincode::Encode, bincode::Decode)]
struct Manifest {
    format_version: u32,
    lsn: u64,
    timestamp_last: u64,
}

/// Fixed-width integers so the layout is the documented one byte for byte; the limit
/// bounds what a corrupt length could make the decoder do.
const CONFIG: Configuration<LittleEndian, Fixint, Limit<64>> = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<64>();

pub fn encode(meta: CheckpointMeta) -> Vec<u8> {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        lsn: meta.lsn,
        timestamp_last: meta.timestamp_last,
    };
    let bytes = bincode::encode_to_vec(manifest, CONFIG).expect("a manifest fits its limit");
    assert_eq!(bytes.len(), MANIFEST_BYTES);
    bytes
}

pub fn decode(bytes: &[u8]) -> Result<CheckpointMeta, StoreError> {
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
    Ok(CheckpointMeta {
        lsn: manifest.lsn,
        timestamp_last: manifest.timestamp_last,
    })
}
