//! Zero-copy conversion between byte buffers and slices of fixed-layout records.
//!
//! Every record type here is `Pod`: any bit pattern is a valid value, so decoding never
//! fails on content, only on length. Field-level validation (reserved bits, reserved
//! ids) is the ledger's job and yields a result code, never a decode error.

use bytemuck::Pod;

/// A buffer whose length is not a whole number of records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthError {
    pub length_bytes: u64,
    pub record_bytes: u32,
}

impl core::fmt::Display for LengthError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "body of {} bytes is not a whole number of {}-byte records",
            self.length_bytes, self.record_bytes
        )
    }
}

impl std::error::Error for LengthError {}

/// View records as their wire bytes (no copy).
pub fn as_bytes<T: Pod>(records: &[T]) -> &[u8] {
    bytemuck::cast_slice(records)
}

/// Borrow `bytes` as records when the buffer is suitably aligned, else copy them out.
/// Either way no per-field work is done.
pub fn from_bytes<T: Pod>(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [T]>, LengthError> {
    let record_bytes = core::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(record_bytes) {
        return Err(LengthError {
            length_bytes: bytes.len() as u64,
            record_bytes: record_bytes as u32,
        });
    }
    match bytemuck::try_cast_slice(bytes) {
        Ok(records) => Ok(std::borrow::Cow::Borrowed(records)),
        Err(_) => Ok(std::borrow::Cow::Owned(
            bytes
                .chunks_exact(record_bytes)
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Account, Transfer, TransferFlags};

    #[test]
    fn transfer_bytes_are_little_endian_at_documented_offsets() {
        let transfer = Transfer {
            id: 0x0102,
            amount: 7,
            timeout: 30,
            ledger: 840,
            code: 9,
            flags: TransferFlags::PENDING,
            timestamp: 0x1122_3344_5566_7788,
            ..Transfer::default()
        };
        let bytes = as_bytes(core::slice::from_ref(&transfer));
        assert_eq!(bytes.len(), 128);
        assert_eq!(&bytes[0..2], &[0x02, 0x01]);
        assert_eq!(bytes[48], 7);
        assert_eq!(&bytes[108..112], &30u32.to_le_bytes());
        assert_eq!(&bytes[112..116], &840u32.to_le_bytes());
        assert_eq!(&bytes[116..118], &9u16.to_le_bytes());
        assert_eq!(&bytes[118..120], &2u16.to_le_bytes());
        assert_eq!(&bytes[120..128], &0x1122_3344_5566_7788u64.to_le_bytes());
    }

    #[test]
    fn unaligned_buffers_decode_by_copy_and_bad_lengths_are_errors() {
        let accounts = [Account {
            id: 5,
            ledger: 1,
            ..Account::default()
        }; 3];
        let mut buffer = vec![0u8; 1];
        buffer.extend_from_slice(as_bytes(&accounts));
        let decoded = from_bytes::<Account>(&buffer[1..]).unwrap();
        assert_eq!(&decoded[..], &accounts[..]);
        let error = from_bytes::<Account>(&buffer[1..200]).unwrap_err();
        assert_eq!(
            error,
            LengthError {
                length_bytes: 199,
                record_bytes: 128
            }
        );
    }
}
