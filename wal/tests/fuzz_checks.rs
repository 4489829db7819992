//! The checks of the `wal_record` and `wal_recovery` fuzz targets (`fuzz/`, nightly), run
//! here as proptests on stable: over random bytes, and over valid WAL images with bytes
//! changed, with and without re-signing (`Mode`) so the checks behind the CRCs run too.

use std::sync::Arc;

use proptest::prelude::*;
use settled_wal::fuzzing::{self, MemStorage, Mode};
use settled_wal::{Wal, WalError};

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..5)
}

fn segments() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    prop::collection::vec(payloads(), 0..4)
}

/// `data` with `mutations` applied past the mode byte, and `mode` instead of its own.
fn mutated(mut data: Vec<u8>, mode: u8, mutations: &[(prop::sample::Index, u8)]) -> Vec<u8> {
    data[0] = mode;
    if data.len() > 1 {
        for (index, value) in mutations {
            let at = 1 + index.index(data.len() - 1);
            data[at] = *value;
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn record_checks_hold_for_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::check_segment(&data);
    }

    #[test]
    fn recovery_checks_hold_for_random_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::check_recovery(&data);
    }

    #[test]
    fn record_checks_hold_for_mutated_segments(
        payloads in payloads(),
        mode in any::<u8>(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        // valid_image's first segment, without its 2-byte length.
        let image = fuzzing::valid_image(&[payloads]);
        let mut data = vec![0u8];
        data.extend_from_slice(&image[3..]);
        fuzzing::check_segment(&mutated(data, mode, &mutations));
    }

    #[test]
    fn recovery_checks_hold_for_mutated_images(
        segments in segments(),
        mode in any::<u8>(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let data = fuzzing::valid_image(&segments);
        fuzzing::check_recovery(&mutated(data, mode | Mode::NAME_FROM_HEADER, &mutations));
    }

    /// One changed byte of a valid WAL: recovery refuses, or keeps every record before the
    /// damage with its payload, and loses records only at the end of the last segment.
    #[test]
    fn a_changed_byte_never_loses_a_record_silently(
        segments in prop::collection::vec(payloads(), 1..4),
        index in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        // The byte changes inside a segment file, not in the image's framing, and the file
        // keeps its name: a first LSN changed in a header must not rename its file (two files
        // of one name would make one of them vanish, which is a lost file, not a changed byte).
        let (_, mut images) = fuzzing::segment_images(&fuzzing::valid_image(&segments));
        let mut at = index.index(images.iter().map(|(_, bytes)| bytes.len()).sum());
        for (_, bytes) in &mut images {
            if at < bytes.len() {
                bytes[at] ^= xor;
                break;
            }
            at -= bytes.len();
        }
        let storage = MemStorage::default();
        for (name, bytes) in images {
            storage.insert(fuzzing::wal_dir().join(name), bytes);
        }
        let wal = match Wal::open_with_storage(fuzzing::wal_dir(), fuzzing::config(), Arc::new(storage)) {
            Ok(wal) => wal,
            Err(error) => {
                prop_assert!(matches!(error, WalError::Corrupt { .. }), "{}", error);
                return Ok(());
            }
        };
        let replayed: Vec<_> = wal.replay_after(0).unwrap().collect::<Result<_, _>>().unwrap();
        let written: Vec<&Vec<u8>> = segments.iter().flatten().collect();
        prop_assert!(replayed.len() <= written.len());
        for (record, payload) in replayed.iter().zip(&written) {
            prop_assert_eq!(&record.payload, *payload);
        }
        let last_segment_records = segments.last().map_or(0, Vec::len);
        prop_assert!(
            written.len() - replayed.len() <= last_segment_records,
            "records lost before the last segment"
        );
    }
}

/// The images the checks above mutate are logs the WAL reads whole: without a change,
/// every record comes back (so a refusal of a changed image is a refusal of the change).
#[test]
fn an_unchanged_valid_image_recovers_every_record() {
    let segments = vec![
        vec![b"one".to_vec(), Vec::new(), vec![7; 100]],
        vec![b"four".to_vec()],
        vec![vec![9; 300], b"six".to_vec()],
    ];
    let (_, images) = fuzzing::segment_images(&fuzzing::valid_image(&segments));
    let storage = MemStorage::default();
    for (name, bytes) in images {
        storage.insert(fuzzing::wal_dir().join(name), bytes);
    }
    let wal = Wal::open_with_storage(fuzzing::wal_dir(), fuzzing::config(), Arc::new(storage))
        .expect("a valid image recovers");
    assert_eq!(wal.recovery_report().torn_tail, None);
    let replayed: Vec<_> = wal
        .replay_after(0)
        .expect("replay")
        .collect::<Result<_, _>>()
        .expect("replay every record");
    let written: Vec<&Vec<u8>> = segments.iter().flatten().collect();
    assert_eq!(replayed.len(), written.len());
    for (record, payload) in replayed.iter().zip(written) {
        assert_eq!(&record.payload, payload);
    }
}
