//! WAL throughput with one fsync per group, against the raw sequential
//! write + fdatasync bandwidth of the same disk.
//!
//! Run: `cargo bench -p settled-wal`. Files go to a temporary directory
//! (`$TMPDIR`, default /tmp); set `WAL_BENCH_DIR` to use another disk.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use settled_wal::{Wal, WalConfig};

/// Payload sizes: 128 B x {1, 64, 8189}. The largest record plus its
/// 16-byte header stays within 1 MiB.
const RECORD_BYTES: [usize; 3] = [128, 128 * 64, 128 * 8189];
const MIB: usize = 1024 * 1024;
/// Size of one group in the 1 MiB-group comparison.
const GROUP_BYTES: usize = MIB;
/// Groups written per round by each side of the raw-versus-WAL comparison.
const COMPARISON_GROUPS: usize = 128;
/// Rounds, alternating raw and WAL so both see the same disk state.
const COMPARISON_ROUNDS: usize = 3;
/// Small synced writes timed to show what pre-allocation could save.
const SMALL_WRITE_BYTES: usize = 4096;
const SMALL_WRITES: usize = 500;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("WAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn mb_per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// Appends `writes` blocks of `block_bytes` to a new file, each followed by
/// fdatasync: the ceiling a WAL on this disk can reach. Returns the time.
fn raw_append(path: &Path, block_bytes: usize, writes: usize) -> Duration {
    let mut file = File::create(path).expect("create");
    let block = vec![0xA5u8; block_bytes];
    let start = Instant::now();
    for _ in 0..writes {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
    }
    start.elapsed()
}

/// Same, but overwriting a file written and synced beforehand: what
/// pre-allocating (zero-filling) or recycling segment files could gain, as
/// fdatasync then has no file size or extent change to journal.
fn raw_overwrite(path: &Path, block_bytes: usize, writes: usize) -> Duration {
    let block = vec![0x5Au8; block_bytes];
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    for _ in 0..writes {
        file.write_all(&block).expect("prefill");
    }
    file.sync_all().expect("sync");
    file.seek(SeekFrom::Start(0)).expect("seek");
    let start = Instant::now();
    for _ in 0..writes {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
    }
    start.elapsed()
}

/// Appends `groups` groups of ~1 MiB made of `record_bytes` records to
/// `wal`, waiting for each group to be durable. Returns (payload bytes, time).
fn wal_groups(wal: &Wal, record_bytes: usize, groups: usize) -> (usize, Duration) {
    let payload = vec![0x3Cu8; record_bytes];
    let records_per_group = (GROUP_BYTES / (record_bytes + 16)).max(1);
    let start = Instant::now();
    for _ in 0..groups {
        let mut lsn = 0;
        for _ in 0..records_per_group {
            lsn = wal.append(&payload).expect("append");
        }
        wal.wait_durable(lsn).expect("durable");
    }
    (records_per_group * groups * record_bytes, start.elapsed())
}

fn print_raw_comparison() {
    let dir = bench_dir();
    eprintln!("wal bench: files in {:?}", dir.path());
    let wal = Wal::open(dir.path().join("wal"), WalConfig::default()).expect("open wal");
    let record_bytes = *RECORD_BYTES.last().expect("sizes");
    let (mut raw_time, mut wal_time, mut wal_bytes) = (Duration::ZERO, Duration::ZERO, 0);
    for round in 0..COMPARISON_ROUNDS {
        raw_time += raw_append(
            &dir.path().join(format!("raw-{round}")),
            GROUP_BYTES,
            COMPARISON_GROUPS,
        );
        let (bytes, time) = wal_groups(&wal, record_bytes, COMPARISON_GROUPS);
        wal_bytes += bytes;
        wal_time += time;
    }
    let raw = mb_per_second(
        GROUP_BYTES * COMPARISON_GROUPS * COMPARISON_ROUNDS,
        raw_time,
    );
    let wal_mb_per_second = mb_per_second(wal_bytes, wal_time);
    eprintln!(
        "raw sequential 1 MiB write + fdatasync ({} MiB x {COMPARISON_ROUNDS} rounds): {raw:7.1} MB/s",
        COMPARISON_GROUPS
    );
    eprintln!(
        "wal 1 MiB groups (one {record_bytes} B record each, interleaved): {wal_mb_per_second:7.1} MB/s = {:5.1}% of raw",
        100.0 * wal_mb_per_second / raw
    );
    for record_bytes in RECORD_BYTES {
        let (bytes, time) = wal_groups(&wal, record_bytes, COMPARISON_GROUPS / 4);
        let records = bytes / record_bytes;
        eprintln!(
            "wal ~1 MiB groups of {record_bytes:>7} B records: {:7.1} MB/s, {:10.0} records/s",
            mb_per_second(bytes, time),
            records as f64 / time.as_secs_f64()
        );
    }
    let append = raw_append(
        &dir.path().join("small-append"),
        SMALL_WRITE_BYTES,
        SMALL_WRITES,
    );
    let overwrite = raw_overwrite(
        &dir.path().join("small-overwrite"),
        SMALL_WRITE_BYTES,
        SMALL_WRITES,
    );
    let overwrite_big = raw_overwrite(
        &dir.path().join("big-overwrite"),
        GROUP_BYTES,
        COMPARISON_GROUPS,
    );
    eprintln!(
        "pre-allocation check: 4 KiB write + fdatasync {:.0} us appending vs {:.0} us overwriting; \
         1 MiB overwrite + fdatasync {:.1} MB/s",
        append.as_secs_f64() * 1e6 / SMALL_WRITES as f64,
        overwrite.as_secs_f64() * 1e6 / SMALL_WRITES as f64,
        mb_per_second(GROUP_BYTES * COMPARISON_GROUPS, overwrite_big),
    );
}

/// One record per group: append, then wait for its fsync. Measures the
/// commit latency a lone writer sees, as records/s and MB/s.
fn bench_append_fsync_per_record(criterion: &mut Criterion) {
    print_raw_comparison();
    let dir = bench_dir();
    let wal = Wal::open(dir.path(), WalConfig::default()).expect("open wal");
    let mut group = criterion.benchmark_group("append_then_fsync_one_record_per_group");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for record_bytes in RECORD_BYTES {
        let payload = vec![0x7Eu8; record_bytes];
        group.throughput(Throughput::Bytes(record_bytes as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(record_bytes),
            &payload,
            |bencher, payload| {
                bencher.iter(|| {
                    let lsn = wal.append(black_box(payload)).expect("append");
                    wal.wait_durable(lsn).expect("durable");
                });
            },
        );
    }
    group.finish();
    eprintln!("wal stats after per-record bench: {:?}", wal.stats());
}

/// Groups of ~1 MiB made of records of each size, one fsync per group (as
/// the engine's core thread would log many batches per sync).
fn bench_group_commit_1mib(criterion: &mut Criterion) {
    let dir = bench_dir();
    let wal = Wal::open(dir.path(), WalConfig::default()).expect("open wal");
    let mut group = criterion.benchmark_group("group_commit_1mib_groups");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for record_bytes in RECORD_BYTES {
        let payload = vec![0x42u8; record_bytes];
        let records_per_group = (GROUP_BYTES / (record_bytes + 16)).max(1);
        group.throughput(Throughput::Elements(records_per_group as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(record_bytes),
            &payload,
            |bencher, payload| {
                bencher.iter(|| {
                    let mut lsn = 0;
                    for _ in 0..records_per_group {
                        lsn = wal.append(black_box(payload)).expect("append");
                    }
                    wal.wait_durable(lsn).expect("durable");
                });
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_append_fsync_per_record,
    bench_group_commit_1mib
);
criterion_main!(benches);
