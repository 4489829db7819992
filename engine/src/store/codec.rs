//! Keys and values of the store's rows (layout in the module documentation of `store`).
//! Decoders return what is wrong as text; the caller names the column family and key.

use bytemuck::Pod;
use protocol::records;

use crate::ledger::PendingStatus;

pub const ID_KEY_BYTES: usize = 16;
pub const TIMELINE_KEY_BYTES: usize = ID_KEY_BYTES + 8;

pub fn id_key(id: u128) -> [u8; ID_KEY_BYTES] {
    id.to_be_bytes()
}

/// An account's row at one instant: account id, then timestamp, both big-endian, so that
/// one account's rows are contiguous and in time order.
pub fn timeline_key(account_id: u128, timestamp: u64) -> [u8; TIMELINE_KEY_BYTES] {
    let mut key = [0; TIMELINE_KEY_BYTES];
    key[..ID_KEY_BYTES].copy_from_slice(&account_id.to_be_bytes());
    key[ID_KEY_BYTES..].copy_from_slice(&timestamp.to_be_bytes());
    key
}

/// A transfer's key in the column families filed by time.
pub fn timestamp_key(timestamp: u64) -> [u8; 8] {
    timestamp.to_be_bytes()
}

pub fn parse_timestamp_key(key: &[u8]) -> Result<u64, String> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| format!("key is {} bytes, a timestamp key 8", key.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A transfer filed under its timestamp (`transfers`, `pending_transfers`): exactly one
/// record, and the key's timestamp is the record's.
pub fn decode_filed_transfer(key: &[u8], value: &[u8]) -> Result<protocol::Transfer, String> {
    let transfer: protocol::Transfer = decode_record(value)?;
    let timestamp = parse_timestamp_key(key)?;
    if timestamp != transfer.timestamp {
        let stored = transfer.timestamp;
        return Err(format!(
            "key timestamp {timestamp}, record timestamp {stored}"
        ));
    }
    Ok(transfer)
}

pub fn parse_id_key(key: &[u8]) -> Result<u128, String> {
    let bytes: [u8; ID_KEY_BYTES] = key
        .try_into()
        .map_err(|_| format!("key is {} bytes, an id key {ID_KEY_BYTES}", key.len()))?;
    Ok(u128::from_be_bytes(bytes))
}

pub fn parse_timeline_key(key: &[u8]) -> Result<(u128, u64), String> {
    if key.len() != TIMELINE_KEY_BYTES {
        let length = key.len();
        return Err(format!(
            "key is {length} bytes, a timeline key {TIMELINE_KEY_BYTES}"
        ));
    }
    let (id, timestamp) = key.split_at(ID_KEY_BYTES);
    let id = u128::from_be_bytes(id.try_into().expect("split at 16"));
    let timestamp = u64::from_be_bytes(timestamp.try_into().expect("8 bytes remain"));
    Ok((id, timestamp))
}

/// Keys in error messages, as hex.
pub fn key_hex(key: &[u8]) -> String {
    key.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A record's bytes as stored (the protocol's fixed layout, no copy).
pub fn record_bytes<T: Pod>(record: &T) -> &[u8] {
    records::as_bytes(std::slice::from_ref(record))
}

/// Exactly one record; any other length is corruption (a record type never changes size
/// within a format version).
pub fn decode_record<T: Pod>(value: &[u8]) -> Result<T, String> {
    let record_bytes = std::mem::size_of::<T>();
    if value.len() != record_bytes {
        let length = value.len();
        return Err(format!("value is {length} bytes, a record {record_bytes}"));
    }
    let records = records::from_bytes::<T>(value).map_err(|error| error.to_string())?;
    Ok(records[0])
}

/// The byte of a resolved status; `None` for the statuses that are stored as no row.
pub fn status_byte(status: PendingStatus) -> Option<u8> {
    match status {
        PendingStatus::NotPending | PendingStatus::Pending => None,
        PendingStatus::Posted | PendingStatus::Voided | PendingStatus::Expired => {
            Some(status as u8)
        }
    }
}

pub fn decode_status(value: &[u8]) -> Result<PendingStatus, String> {
    let status = match value {
        [2] => PendingStatus::Posted,
        [3] => PendingStatus::Voided,
        [4] => PendingStatus::Expired,
        [byte] => return Err(format!("status byte {byte} is not a resolved status")),
        _ => return Err(format!("status is {} bytes, not 1", value.len())),
    };
    debug_assert_eq!(status_byte(status), value.first().copied());
    Ok(status)
}
