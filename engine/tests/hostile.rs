//! Broken and hostile clients over real TCP: clients that never read their replies, say
//! nothing, trickle bytes, go idle, send garbage, or open more connections than the
//! descriptors allow. Each must cost the daemon bounded memory and time, and every other
//! client must go on being served.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::{spawn_with_settings, Daemon};
use common::wire::{request_bytes, server_config, TestServer, Wire};
use protocol::frame::{encode_frame, handshake_body, ErrorCode, FrameKind};
use protocol::{
    Account, AccountFlags, CreateResult, Operation, QueryFilter, QueryFilterFlags, Transfer,
};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Accounts of one full reply: a `query_accounts` with this limit answers 1 MiB.
const ACCOUNTS: u128 = protocol::BATCH_EVENTS_MAX as u128;

async fn create_accounts(wire: &mut Wire, ids: std::ops::RangeInclusive<u128>) {
    let accounts: Vec<Account> = ids
        .map(|id| common::account(id, AccountFlags::empty()))
        .collect();
    for (chunk, request_id) in accounts
        .chunks(protocol::BATCH_EVENTS_MAX as usize)
        .zip(1..)
    {
        let results: Vec<CreateResult> = wire
            .call(Operation::CreateAccounts, request_id, chunk)
            .await;
        assert!(results.iter().all(|result| result.status == 0));
    }
}

fn query_all_accounts() -> QueryFilter {
    QueryFilter {
        limit: protocol::BATCH_EVENTS_MAX,
        flags: QueryFilterFlags(0),
        ..bytemuck::Zeroable::zeroed()
    }
}

fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A connection that handshakes, pipelines `requests` 1 MiB reads and never reads a byte
/// of the replies. Returns once its writes are in (or the server stopped reading it).
async fn pipeline_without_reading(addr: SocketAddr, requests: u64) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut handshake = Vec::new();
    let body = handshake_body(
        protocol::frame::PROTOCOL_VERSION,
        protocol::frame::PROTOCOL_VERSION,
    );
    encode_frame(&mut handshake, FrameKind::Handshake, 0, 0, 0, 0, &body);
    stream.write_all(&handshake).await.unwrap();
    let mut bytes = Vec::new();
    for request_id in 1..=requests {
        bytes.extend(request_bytes(
            Operation::QueryAccounts,
            request_id,
            &[query_all_accounts()],
        ));
    }
    // The server may stop reading this client before all of it is in: bounded wait.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&bytes)).await;
    stream
}

/// Read until EOF or reset; the bytes read. Panics if the server keeps it open.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> usize {
    let mut buffer = vec![0u8; 1 << 20];
    let mut read = 0;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => panic!("the server kept the connection open for {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return read,
            Ok(Ok(count)) => read += count,
        }
    }
}

// The daemon, as a process, so its memory is its own: 16 clients each pipeline 64 reads of
// 1 MiB and never read. Unbounded, the daemon would hold their 1 GiB of replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cost_bounded_memory_and_are_closed_by_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let settings = "write_timeout_seconds = 2\nreply_bytes_per_connection_max = 1048640\n";
    let (daemon, addr) = spawn_with_settings(dir.path(), None, settings);
    let pid = daemon.child.id();
    let mut wire = Wire::ready(addr).await;
    create_accounts(&mut wire, 1..=ACCOUNTS).await;
    let before = resident_bytes(pid);

    let hostile: Vec<_> = (0..16)
        .map(|_| tokio::spawn(pipeline_without_reading(addr, 64)))
        .collect();
    let mut peak = before;
    // A well-behaved client is served meanwhile, promptly.
    for round in 0..20u128 {
        let started = Instant::now();
        let found: Vec<Account> = wire
            .call(Operation::LookupAccounts, 100 + round as u64, &[round + 1])
            .await;
        assert_eq!(found.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a lookup took {:?} beside the hostile clients",
            started.elapsed()
        );
        peak = peak.max(resident_bytes(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut streams = Vec::new();
    for task in hostile {
        streams.push(task.await.unwrap());
    }
    peak = peak.max(resident_bytes(pid));
    let grown = peak.saturating_sub(before);
    eprintln!("daemon RSS grew by {} MiB", grown >> 20);
    assert!(
        grown < 256 << 20,
        "the daemon grew by {} MiB for 16 clients that do not read",
        grown >> 20
    );
    // Past the write timeout each is closed: reading now finds what the server wrote
    // before it gave up, then the end, far short of 64 replies of 1 MiB.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for stream in &mut streams {
        let read = read_to_close(stream, Duration::from_secs(10)).await;
        assert!(read < 32 << 20, "read {} MiB: not cut off", read >> 20);
    }
    let found: Vec<Account> = wire.call(Operation::LookupAccounts, 999, &[7u128]).await;
    assert_eq!(found.len(), 1, "still serving");
    drop(daemon);
}

fn short_timeouts(dir: &std::path::Path) -> settled_engine::config::Config {
    settled_engine::config::Config {
        handshake_timeout_seconds: 1,
        idle_timeout_seconds: 1,
        ..server_config(dir)
    }
}

async fn expect_error_then_close(wire: &mut Wire, code: ErrorCode) {
    let frame = wire.read().await;
    assert_eq!(frame.error_code(), Some(code), "{}", frame.message());
    wire.expect_closed().await;
}

#[tokio::test]
async fn silent_trickling_and_idle_clients_are_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(short_timeouts(dir.path())).await;

    // Says nothing at all.
    let started = Instant::now();
    let mut silent = Wire::connect(server.addr).await;
    expect_error_then_close(&mut silent, ErrorCode::HandshakeTimeout).await;
    assert!(started.elapsed() < Duration::from_secs(5));

    // Sends its handshake one byte every 200 ms: never whole within the second.
    let mut trickle = Wire::connect(server.addr).await;
    let mut handshake = Vec::new();
    let body = handshake_body(
        protocol::frame::PROTOCOL_VERSION,
        protocol::frame::PROTOCOL_VERSION,
    );
    encode_frame(&mut handshake, FrameKind::Handshake, 0, 0, 0, 0, &body);
    for byte in &handshake[..8] {
        trickle.write(&[*byte]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect_error_then_close(&mut trickle, ErrorCode::HandshakeTimeout).await;

    // Handshakes, makes one request, then goes quiet.
    let mut idle = Wire::ready(server.addr).await;
    let found: Vec<Transfer> = idle.call(Operation::LookupTransfers, 1, &[1u128]).await;
    assert!(found.is_empty());
    let quiet = Instant::now();
    expect_error_then_close(&mut idle, ErrorCode::IdleTimeout).await;
    assert!(quiet.elapsed() >= Duration::from_millis(900));

    // One that keeps asking is never idle.
    let mut busy = Wire::ready(server.addr).await;
    for request_id in 1..=8 {
        let found: Vec<Transfer> = busy
            .call(Operation::LookupTransfers, request_id, &[1u128])
            .await;
        assert!(found.is_empty());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn random_bytes_and_garbage_before_a_frame_are_refused_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut good = Wire::ready(server.addr).await;
    create_accounts(&mut good, 1..=2).await;

    let mut random = rand::rngs::StdRng::seed_from_u64(7);
    for case in 0..4 {
        // 10 MB of random bytes, after a good handshake or without one.
        let mut wire = Wire::connect(server.addr).await;
        if case % 2 == 1 {
            wire.handshake().await;
        }
        let mut bytes = vec![0u8; 10 * 1000 * 1000];
        random.fill(&mut bytes[..]);
        let (mut read_half, mut write_half) = wire.stream.into_split();
        // The server stops reading at the first bad header: do not wait for it to take all.
        let writer = tokio::spawn(async move {
            let _ = write_half.write_all(&bytes).await;
            write_half
        });
        let mut header = [0u8; protocol::frame::HEADER_BYTES];
        let answered =
            tokio::time::timeout(Duration::from_secs(10), read_half.read_exact(&mut header))
                .await
                .expect("an answer or a close within 10 s");
        if answered.is_ok() {
            let header = protocol::frame::Header::decode(&header).expect("a valid error frame");
            assert_eq!(header.kind, FrameKind::Error);
            assert!(header.error_code().is_some_and(ErrorCode::is_fatal));
        }
        writer.abort();
        let found: Vec<Account> = good
            .call(Operation::LookupAccounts, 10 + case, &[1u128, 2])
            .await;
        assert_eq!(found.len(), 2, "others are served");
    }

    // Garbage, then a valid frame: the garbage is the frame's start, so it is refused.
    let mut wire = Wire::ready(server.addr).await;
    let mut bytes = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    bytes.extend(request_bytes(Operation::LookupAccounts, 1, &[1u128]));
    wire.write(&bytes).await;
    expect_error_then_close(&mut wire, ErrorCode::BadMagic).await;
    server.stop().await;
}

/// `settled` under `ulimit -n limit` (soft and hard), config `settings`.
fn spawn_with_descriptor_limit(dir: &std::path::Path, limit: u32, settings: &str) -> Daemon {
    let config = dir.join("settled.toml");
    let text = format!(
        "data_dir = {:?}\nmetrics_listen = \"\"\nlisten = \"127.0.0.1:0\"\n{settings}",
        dir.join("data")
    );
    std::fs::write(&config, text).unwrap();
    let script = format!(
        "ulimit -n {limit} && exec {} --config {}",
        env!("CARGO_BIN_EXE_settled"),
        config.display()
    );
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &script]).env("RUST_LOG", "info");
    for variable in ["SETTLED_CONFIG", "SETTLED_LISTEN", "SETTLED_DATA_DIR"] {
        command.env_remove(variable);
    }
    Daemon::spawn_command(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_checked_against_the_descriptor_limit_and_the_wal_keeps_its_own() {
    // 10 000 connections cannot fit in 1000 descriptors: refused at start, naming both.
    let dir = tempfile::tempdir().unwrap();
    let mut refused = spawn_with_descriptor_limit(dir.path(), 1000, "connections_max = 10000\n");
    let status = refused.wait_exit_status();
    assert_eq!(status.code(), Some(1), "{:?}", refused.stderr);
    let line = refused.stderr.join("\n");
    assert!(
        line.contains("connections_max = 10000") && line.contains("is 1000"),
        "{line}"
    );

    // 150 fit. 400 clients try: 150 are served, the rest refused; meanwhile writes roll
    // the WAL over to new segments and checkpoints open RocksDB files, and all succeed.
    let dir = tempfile::tempdir().unwrap();
    let settings = "connections_max = 150\ncheckpoint_batches = 2\nwal_segment_bytes = 9437184\n";
    let mut daemon = spawn_with_descriptor_limit(dir.path(), 1000, settings);
    let addr = daemon.wait_listening();
    let mut writer = Wire::ready(addr).await;
    create_accounts(&mut writer, 1..=2).await;
    let mut crowd = Vec::new();
    for _ in 0..400 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            crowd.push(stream);
        }
    }
    let transfers_per_request = protocol::BATCH_EVENTS_MAX as u128;
    let mut id = 1_000_000u128;
    for request_id in 0..20u64 {
        let transfers: Vec<Transfer> = (0..transfers_per_request)
            .map(|_| {
                id += 1;
                common::transfer(id, 1, 2, 1)
            })
            .collect();
        let results: Vec<CreateResult> = writer
            .call(Operation::CreateTransfers, 100 + request_id, &transfers)
            .await;
        assert!(
            results.iter().all(|result| result.status == 0),
            "request {request_id} failed while the crowd held descriptors"
        );
    }
    drop(crowd);
    let log = daemon.log().join("\n");
    assert!(!log.contains("poison"), "{log}");
    let status = daemon.stop_with("TERM");
    assert_eq!(status.code(), Some(0), "{:?}", daemon.stderr);
}
