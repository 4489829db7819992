//! The server over real TCP: an in-process server on 127.0.0.1:0 with a temporary data
//! directory, and hand-built frames (including malformed ones).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::wire::{request_bytes, server_config, Received, TestServer, Wire};
use protocol::frame::{
    ErrorCode, FrameKind, Header, BODY_BYTES_MAX, HANDSHAKE_BODY_BYTES_MAX, HEADER_BYTES,
    PROTOCOL_VERSION,
};
use protocol::records::as_bytes;
use protocol::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult,
    CreateResult, CreateTransferResult, Operation, QueryFilter, Transfer,
};

const LEDGER: u32 = common::LEDGER;

fn accounts(ids: impl IntoIterator<Item = u128>) -> Vec<Account> {
    ids.into_iter()
        .map(|id| common::account(id, AccountFlags::HISTORY))
        .collect()
}

fn statuses(results: &[CreateResult]) -> Vec<u32> {
    results.iter().map(|result| result.status).collect()
}

/// Create `ids` as accounts over `wire`, all must be created.
async fn create_accounts(wire: &mut Wire, request_id: u64, ids: impl IntoIterator<Item = u128>) {
    let created: Vec<CreateResult> = wire
        .call(Operation::CreateAccounts, request_id, &accounts(ids))
        .await;
    assert!(statuses(&created)
        .iter()
        .all(|status| *status == CreateAccountResult::Created.code()));
}

async fn lookup_accounts(wire: &mut Wire, request_id: u64, ids: &[u128]) -> Vec<Account> {
    wire.call(Operation::LookupAccounts, request_id, ids).await
}

#[tokio::test]
async fn every_operation_works_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut wire = Wire::ready(server.addr).await;

    let created: Vec<CreateResult> = wire
        .call(Operation::CreateAccounts, 1, &accounts([1, 2]))
        .await;
    assert_eq!(statuses(&created), [0, 0]);
    let transfers = [
        common::transfer(10, 1, 2, 300),
        common::transfer(11, 2, 1, 50),
    ];
    let created: Vec<CreateResult> = wire.call(Operation::CreateTransfers, 2, &transfers).await;
    assert_eq!(statuses(&created), [0, 0]);
    assert!(created[0].timestamp < created[1].timestamp);
    let again: Vec<CreateResult> = wire
        .call(Operation::CreateTransfers, 3, &transfers[..1])
        .await;
    assert_eq!(statuses(&again), [CreateTransferResult::Exists.code()]);

    let found = lookup_accounts(&mut wire, 4, &[1, 2, 99]).await;
    assert_eq!(found.len(), 2, "unknown ids are skipped");
    assert_eq!((found[0].debits_posted, found[0].credits_posted), (300, 50));
    assert_eq!((found[1].debits_posted, found[1].credits_posted), (50, 300));
    let found: Vec<Transfer> = wire
        .call(Operation::LookupTransfers, 5, &[11u128, 10])
        .await;
    assert_eq!(
        found.iter().map(|t| (t.id, t.amount)).collect::<Vec<_>>(),
        [(11, 50), (10, 300)]
    );

    let filter = AccountFilter {
        account_id: 1,
        limit: 10,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        ..AccountFilter::default()
    };
    let of_account: Vec<Transfer> = wire
        .call(Operation::GetAccountTransfers, 6, &[filter])
        .await;
    assert_eq!(
        of_account.iter().map(|t| t.id).collect::<Vec<_>>(),
        [10, 11]
    );
    let balances: Vec<AccountBalance> =
        wire.call(Operation::GetAccountBalances, 7, &[filter]).await;
    let last = balances.last().expect("history snapshots");
    assert_eq!(
        (balances.len(), last.debits_posted, last.credits_posted),
        (2, 300, 50)
    );

    let query = QueryFilter {
        ledger: LEDGER,
        limit: 10,
        ..QueryFilter::default()
    };
    let queried: Vec<Account> = wire.call(Operation::QueryAccounts, 8, &[query]).await;
    assert_eq!(queried.iter().map(|a| a.id).collect::<Vec<_>>(), [1, 2]);
    let queried: Vec<Transfer> = wire.call(Operation::QueryTransfers, 9, &[query]).await;
    assert_eq!(queried.iter().map(|t| t.id).collect::<Vec<_>>(), [10, 11]);
    drop(wire);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_by_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut wire = Wire::ready(server.addr).await;
    create_accounts(&mut wire, 1, 1..=2).await;
    let mut bytes = Vec::new();
    // 60 requests: within the default in-flight limit of 64.
    for request_id in 100..130u64 {
        let transfer = common::transfer(u128::from(request_id), 1, 2, 1);
        bytes.extend(request_bytes(
            Operation::CreateTransfers,
            request_id,
            &[transfer],
        ));
        bytes.extend(request_bytes(
            Operation::LookupAccounts,
            request_id + 1000,
            &[1u128],
        ));
    }
    wire.write(&bytes).await;
    let mut answered = HashSet::new();
    for _ in 0..60 {
        let reply = wire.read().await;
        assert_eq!(reply.header.kind, FrameKind::Reply, "{}", reply.message());
        assert!(
            answered.insert(reply.header.request_id),
            "one reply per request"
        );
    }
    let found = lookup_accounts(&mut wire, 2, &[1]).await;
    assert_eq!(found[0].debits_posted, 30);
    server.stop().await;
}

#[tokio::test]
async fn restart_on_the_same_data_dir_keeps_all_data() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<u128> = (1..=20).collect();
    let transfer_ids: Vec<u128> = (1000..1100).collect();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut wire = Wire::ready(server.addr).await;
    create_accounts(&mut wire, 1, ids.iter().copied()).await;
    for (index, id) in transfer_ids.iter().enumerate() {
        let transfer = common::transfer(*id, 1 + (*id % 20), 1 + ((*id + 1) % 20), 7);
        let created: Vec<CreateResult> = wire
            .call(Operation::CreateTransfers, 10 + index as u64, &[transfer])
            .await;
        assert_eq!(statuses(&created), [0]);
    }
    let accounts_before = lookup_accounts(&mut wire, 2, &ids).await;
    let transfers_before: Vec<Transfer> = wire
        .call(Operation::LookupTransfers, 3, &transfer_ids)
        .await;
    drop(wire);
    let report = server.stop().await;
    assert!(report.checkpoint_lsn > 0);

    let server = TestServer::start(server_config(dir.path())).await;
    let mut wire = Wire::ready(server.addr).await;
    assert_eq!(lookup_accounts(&mut wire, 2, &ids).await, accounts_before);
    let transfers_after: Vec<Transfer> = wire
        .call(Operation::LookupTransfers, 3, &transfer_ids)
        .await;
    assert_eq!(transfers_after, transfers_before);
    assert_eq!(transfers_after.len(), 100);
    server.stop().await;
}

/// A create_accounts request for `id`, to corrupt.
fn create_request(request_id: u64, id: u128) -> Vec<u8> {
    request_bytes(Operation::CreateAccounts, request_id, &accounts([id]))
}

/// Bytes that break the protocol, and the error they must earn.
fn malformed_cases() -> Vec<(&'static str, bool, Vec<u8>, ErrorCode)> {
    let mut bad_magic = create_request(1, 501);
    bad_magic[0] = b'X';
    let mut bad_header = create_request(1, 502);
    bad_header[16] ^= 0xFF; // request_id: covered by the header checksum
    let mut bad_body = create_request(1, 503);
    bad_body[HEADER_BYTES] ^= 0xFF; // the account id: covered by the body checksum
    let mut too_large = Header::new(
        FrameKind::Request,
        Operation::CreateAccounts.code(),
        1,
        1,
        0,
        &[],
    );
    too_large.body_bytes = BODY_BYTES_MAX + 1;
    let mut too_large = too_large.encode().to_vec();
    // The body the server must not wait for: it answers from the header alone.
    too_large.extend(as_bytes(&accounts([504])));
    let mut wrong_version = Header::new(
        FrameKind::Request,
        Operation::CreateAccounts.code(),
        1,
        1,
        0,
        as_bytes(&accounts([505])),
    );
    wrong_version.version = PROTOCOL_VERSION + 1;
    let mut wrong_version = wrong_version.encode().to_vec();
    wrong_version.extend(as_bytes(&accounts([505])));
    // A first frame claiming a megabyte, header only: refused before its body is awaited.
    let mut huge_handshake = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &[]);
    huge_handshake.body_bytes = BODY_BYTES_MAX;
    let huge_handshake = huge_handshake.encode().to_vec();
    let mut huge_request = Header::new(
        FrameKind::Request,
        Operation::CreateAccounts.code(),
        1,
        1,
        0,
        &[],
    );
    huge_request.body_bytes = BODY_BYTES_MAX;
    let huge_request = huge_request.encode().to_vec();
    // Says 5 bytes of token follow, sends 3.
    let mut bad_token = Vec::new();
    let body = [1, 0, 1, 0, 5, 0, b'a', b'b', b'c'];
    protocol::frame::encode_frame(&mut bad_token, FrameKind::Handshake, 0, 0, 0, 0, &body);
    vec![
        ("bad magic", true, bad_magic, ErrorCode::BadMagic),
        (
            "bad header checksum",
            true,
            bad_header,
            ErrorCode::HeaderChecksum,
        ),
        ("bad body checksum", true, bad_body, ErrorCode::BodyChecksum),
        ("body too large", true, too_large, ErrorCode::BodyTooLarge),
        (
            "version other than the handshake's",
            true,
            wrong_version,
            ErrorCode::UnsupportedVersion,
        ),
        (
            "no handshake",
            false,
            create_request(1, 506),
            ErrorCode::HandshakeRequired,
        ),
        (
            "a first handshake above HANDSHAKE_BODY_BYTES_MAX",
            false,
            huge_handshake,
            ErrorCode::BodyTooLarge,
        ),
        (
            "a first request claiming a megabyte",
            false,
            huge_request,
            ErrorCode::HandshakeRequired,
        ),
        (
            "a handshake token shorter than its length",
            false,
            bad_token,
            ErrorCode::BadFrame,
        ),
    ]
}

/// Before the handshake the server holds at most a handshake's worth of a client's bytes:
/// a header claiming a 1 MiB handshake body is answered from the header, at once, while
/// the client sends nothing more; one byte over the limit is refused too, and the limit
/// itself is a body the server waits for.
#[tokio::test]
async fn a_handshake_header_claiming_a_megabyte_is_refused_without_waiting_for_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    for body_bytes in [BODY_BYTES_MAX, HANDSHAKE_BODY_BYTES_MAX + 1] {
        let mut header = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &[]);
        header.body_bytes = body_bytes;
        let mut wire = Wire::connect(server.addr).await;
        let started = std::time::Instant::now();
        wire.write(&header.encode()).await;
        let reply = wire.read().await;
        assert_eq!(
            reply.error_code(),
            Some(ErrorCode::BodyTooLarge),
            "{}",
            reply.message()
        );
        assert_eq!(reply.header.request_id, 0);
        assert!(
            reply
                .message()
                .contains(&format!("limit {HANDSHAKE_BODY_BYTES_MAX}")),
            "{}",
            reply.message()
        );
        wire.expect_closed().await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered from the header, not after waiting: {:?}",
            started.elapsed()
        );
    }
    // At the limit the header is fine: the server waits for the body (nothing comes back
    // while it is missing), and a body that breaks the layout is then a bad_frame.
    let mut wire = Wire::connect(server.addr).await;
    let body = vec![0u8; HANDSHAKE_BODY_BYTES_MAX as usize];
    let mut frame = Vec::new();
    protocol::frame::encode_frame(&mut frame, FrameKind::Handshake, 0, 0, 0, 0, &body);
    wire.write(&frame[..HEADER_BYTES]).await;
    let early = tokio::time::timeout(Duration::from_millis(200), wire.try_read()).await;
    assert!(early.is_err(), "the server waits for the body: {early:?}");
    wire.write(&frame[HEADER_BYTES..]).await;
    expect_fatal(
        &mut wire,
        ErrorCode::BadFrame,
        "zero versions and a zero token length",
    )
    .await;
    server.stop().await;
}

async fn expect_fatal(wire: &mut Wire, expected: ErrorCode, case: &str) {
    let reply = wire.read().await;
    assert_eq!(
        reply.error_code(),
        Some(expected),
        "{case}: {}",
        reply.message()
    );
    assert!(
        reply.message().starts_with(expected.as_str()),
        "{case}: {}",
        reply.message()
    );
    wire.expect_closed().await;
}

#[tokio::test]
async fn malformed_frames_get_their_error_then_the_connection_closes_and_nothing_applies() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    for (case, handshake, bytes, expected) in malformed_cases() {
        let mut wire = Wire::connect(server.addr).await;
        if handshake {
            wire.handshake().await;
        }
        wire.write(&bytes).await;
        expect_fatal(&mut wire, expected, case).await;
    }
    let mut wire = Wire::connect(server.addr).await;
    wire.send_handshake(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 5)
        .await;
    expect_fatal(
        &mut wire,
        ErrorCode::UnsupportedVersion,
        "handshake version",
    )
    .await;

    let mut wire = Wire::ready(server.addr).await;
    let found = lookup_accounts(&mut wire, 9, &[501, 502, 503, 504, 505, 506]).await;
    assert!(
        found.is_empty(),
        "a rejected frame applied something: {found:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn per_request_errors_answer_that_request_and_keep_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut wire = Wire::ready(server.addr).await;

    let mut unknown = Vec::new();
    protocol::frame::encode_frame(&mut unknown, FrameKind::Request, 200, 41, 0, 0, &[]);
    wire.write(&unknown).await;
    let too_many: Vec<u128> = (1..=8190).collect();
    wire.send(Operation::LookupAccounts, 42, &too_many).await;
    let mut ragged = Vec::new();
    let one_account = accounts([601]);
    let body = as_bytes(&one_account);
    protocol::frame::encode_frame(
        &mut ragged,
        FrameKind::Request,
        Operation::CreateAccounts.code(),
        43,
        2,
        0,
        body,
    );
    wire.write(&ragged).await;
    let two_filters = [QueryFilter {
        limit: 1,
        ..QueryFilter::default()
    }; 2];
    wire.send(Operation::QueryAccounts, 44, &two_filters).await;

    let expected = [
        (41, ErrorCode::UnknownOperation),
        (42, ErrorCode::TooManyEvents),
        (43, ErrorCode::BodyNotWholeEvents),
        (44, ErrorCode::TooManyEvents),
    ];
    for (request_id, code) in expected {
        let reply: Received = wire.read().await;
        assert_eq!(
            (reply.header.request_id, reply.error_code()),
            (request_id, Some(code)),
            "{}",
            reply.message()
        );
    }
    // Still open and in step: a good request on the same connection works.
    create_accounts(&mut wire, 45, [602]).await;
    let found = lookup_accounts(&mut wire, 46, &[601, 602]).await;
    assert_eq!(
        found.iter().map(|account| account.id).collect::<Vec<_>>(),
        [602]
    );
    server.stop().await;
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_are_refused_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = settled_engine::config::Config {
        requests_in_flight_per_connection_max: 1,
        ..server_config(dir.path())
    };
    let server = TestServer::start(config).await;
    let mut wire = Wire::ready(server.addr).await;
    // Writes wait for an fsync, so 50 pipelined creates overlap with the first in flight.
    let mut bytes = Vec::new();
    for request_id in 1..=50u64 {
        bytes.extend(create_request(request_id, u128::from(request_id)));
    }
    wire.write(&bytes).await;
    let (mut created, mut refused) = (Vec::new(), 0);
    for _ in 1..=50 {
        let reply = wire.read().await;
        match reply.error_code() {
            None => created.push(reply.header.request_id as u128),
            Some(ErrorCode::TooManyInFlight) => refused += 1,
            Some(other) => panic!("unexpected {other}: {}", reply.message()),
        }
    }
    assert!(refused > 0, "the limit of 1 was never reached");
    let ids: Vec<u128> = (1..=50).collect();
    let found = lookup_accounts(&mut wire, 99, &ids).await;
    assert_eq!(
        found.iter().map(|account| account.id).collect::<Vec<_>>(),
        created,
        "refused requests applied nothing"
    );
    server.stop().await;
}

#[tokio::test]
async fn clients_leaving_mid_request_do_not_disturb_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut steady = Wire::ready(server.addr).await;
    create_accounts(&mut steady, 1, 1..=2).await;

    for round in 0..20u64 {
        // Half a frame, then gone.
        let mut half = Wire::ready(server.addr).await;
        let bytes = create_request(1, 10_000 + u128::from(round));
        half.write(&bytes[..bytes.len() / 2]).await;
        drop(half);
        // A whole request, gone before its reply.
        let mut hasty = Wire::ready(server.addr).await;
        hasty
            .write(&create_request(2, 20_000 + u128::from(round)))
            .await;
        drop(hasty);
        // Meanwhile the steady client is served normally.
        let transfer = common::transfer(u128::from(round) + 100, 1, 2, 1);
        let created: Vec<CreateResult> = steady
            .call(Operation::CreateTransfers, 100 + round, &[transfer])
            .await;
        assert_eq!(statuses(&created), [0]);
    }
    let found = lookup_accounts(&mut steady, 2, &[1]).await;
    assert_eq!(found[0].debits_posted, 20);
    let half_applied =
        lookup_accounts(&mut steady, 3, &(10_000..10_020).collect::<Vec<u128>>()).await;
    assert!(half_applied.is_empty(), "half a frame applied nothing");
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_connections_are_served() {
    const CONNECTIONS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut setup = Wire::ready(server.addr).await;
    create_accounts(&mut setup, 1, [7]).await;
    // All connected at once before any of them is used, so all are open concurrently.
    let mut wires = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        wires.push(Wire::connect(server.addr).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut wire) in wires.into_iter().enumerate() {
        tasks.spawn(async move {
            wire.handshake().await;
            let found = lookup_accounts(&mut wire, index as u64, &[7]).await;
            assert_eq!(found.len(), 1);
            wire
        });
    }
    let mut served = Vec::with_capacity(CONNECTIONS);
    while let Some(result) = tasks.join_next().await {
        served.push(result.expect("connection task"));
    }
    assert_eq!(served.len(), CONNECTIONS);
    drop(served);
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_told_busy_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = settled_engine::config::Config {
        connections_max: 2,
        ..server_config(dir.path())
    };
    let server = TestServer::start(config).await;
    let first = Wire::ready(server.addr).await;
    let mut second = Wire::ready(server.addr).await;
    let mut third = Wire::connect(server.addr).await;
    let reply = third.read().await;
    assert_eq!(reply.error_code(), Some(ErrorCode::Busy));
    assert!(
        reply.message().contains("connections_max"),
        "{}",
        reply.message()
    );
    third.expect_closed().await;
    assert!(
        lookup_accounts(&mut second, 1, &[1]).await.is_empty(),
        "the others still work"
    );
    drop(first);
    // The freed slot is taken by the next connection (the server notices the close
    // asynchronously, so allow it a moment).
    let mut admitted = None;
    for _ in 0..100 {
        let mut next = Wire::connect(server.addr).await;
        next.send_handshake(PROTOCOL_VERSION, PROTOCOL_VERSION)
            .await;
        let reply = next.read().await;
        if reply.header.kind == FrameKind::Handshake {
            admitted = Some(next);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut admitted = admitted.expect("a slot frees up when a connection closes");
    assert!(lookup_accounts(&mut admitted, 2, &[1]).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_answers_every_request_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let mut wire = Wire::ready(server.addr).await;
    create_accounts(&mut wire, 1, 1..=2).await;
    // 16 requests of 4000 transfers: several batches and fsyncs, so shutdown lands while
    // some are in flight and some are not read yet.
    let mut bytes = Vec::new();
    for request in 0..16u64 {
        let transfers: Vec<Transfer> = (0..4000u128)
            .map(|index| common::transfer(1_000_000 + u128::from(request) * 4000 + index, 1, 2, 1))
            .collect();
        bytes.extend(request_bytes(
            Operation::CreateTransfers,
            request + 10,
            &transfers,
        ));
    }
    let (mut reader, mut writer) = wire.stream.into_split();
    let sending = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // The server stops reading at shutdown: this write may never finish.
        let _ = writer.write_all(&bytes).await;
        writer
    });
    // Wait for the first reply so at least one request is known to be in the pipeline.
    let mut replies = vec![read_on(&mut reader).await.expect("first reply")];
    let stopping = server.begin_stop();
    while let Some(reply) = read_on(&mut reader).await {
        replies.push(reply);
    }
    stopping.await.unwrap().expect("clean shutdown");
    sending.abort();
    let mut answered = 0u128;
    for reply in &replies {
        // A request caught waiting for room in the queue is refused, not applied.
        if reply.error_code() == Some(ErrorCode::ShuttingDown) {
            continue;
        }
        assert_eq!(reply.header.kind, FrameKind::Reply, "{}", reply.message());
        assert!(reply
            .records::<CreateResult>()
            .iter()
            .all(|result| result.status == 0));
        answered += 4000;
    }
    // What was applied is exactly what was answered: nothing in flight was dropped.
    let server = TestServer::start(server_config(dir.path())).await;
    let mut wire = Wire::ready(server.addr).await;
    let found = lookup_accounts(&mut wire, 1, &[1]).await;
    assert_eq!(
        found[0].debits_posted,
        answered,
        "{} replies",
        replies.len()
    );
    server.stop().await;
}

async fn read_on(reader: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Received> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; HEADER_BYTES];
    let read = tokio::time::timeout(common::wire::READ_TIMEOUT, reader.read_exact(&mut header));
    if read.await.expect("read within the timeout").is_err() {
        return None;
    }
    let header = Header::decode(&header).expect("valid header");
    let mut body = vec![0u8; header.body_bytes as usize];
    reader.read_exact(&mut body).await.expect("body");
    Some(Received { header, body })
}

#[tokio::test]
async fn daemon_serves_until_a_signal_and_flags_beat_environment_beats_file() {
    use common::daemon::Daemon;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();
    // The flag's listen beats the (invalid) environment's; data dir and metrics come
    // from the environment.
    let mut daemon = Daemon::spawn(
        &["--listen", "127.0.0.1:0"],
        &[
            ("SETTLED_LISTEN", "not-an-address"),
            ("SETTLED_DATA_DIR", data_dir),
            ("SETTLED_METRICS_LISTEN", ""),
        ],
    );
    let addr = daemon.wait_listening();
    let mut wire = Wire::ready(addr).await;
    create_accounts(&mut wire, 1, [77]).await;
    drop(wire);
    let status = daemon.stop_with("TERM");
    assert_eq!(status.code(), Some(0), "stderr: {:?}", daemon.stderr);
    let listening = daemon
        .stderr
        .iter()
        .filter(|line| line.contains("listening on"))
        .count();
    assert_eq!(listening, 1, "{:?}", daemon.stderr);
    drop(daemon);

    // The environment's listen beats the file's (invalid) one; the data dir comes from the
    // file, so the account created above is found again after the restart.
    let file = dir.path().join("settled.toml");
    let text = format!("listen = \"abc\"\ndata_dir = {data_dir:?}\nmetrics_listen = \"\"\n");
    std::fs::write(&file, text).unwrap();
    let mut daemon = Daemon::spawn(
        &[],
        &[
            ("SETTLED_CONFIG", file.to_str().unwrap()),
            ("SETTLED_LISTEN", "127.0.0.1:0"),
        ],
    );
    let addr = daemon.wait_listening();
    let mut wire = Wire::ready(addr).await;
    assert_eq!(lookup_accounts(&mut wire, 1, &[77]).await.len(), 1);
    drop(wire);
    let status = daemon.stop_with("INT");
    assert_eq!(status.code(), Some(0), "stderr: {:?}", daemon.stderr);
}

#[test]
fn daemon_refuses_bad_config_with_one_line_naming_the_key_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settled.toml");
    let file_arg = file.to_str().unwrap().to_string();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap().to_string();
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "listen = \"abc\"\n",
            vec![],
            "config error: listen = \"abc\": invalid socket address",
        ),
        (
            "fsync = \"never\"\n",
            vec![],
            "config error: fsync = \"never\": only \"always\"",
        ),
        ("listen_port = 5\n", vec![], "listen_port"),
        (
            "connections_max = \"many\"\n",
            vec![],
            "line 1: connections_max: invalid type",
        ),
        (
            "metrics_listen = \"\"\n",
            vec!["--listen", &taken, "--data-dir", &data_dir],
            "cannot bind",
        ),
    ];
    for (text, extra, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let mut args = vec!["--config", file_arg.as_str()];
        args.extend(extra);
        let output = common::daemon::command(&args, &[])
            .output()
            .expect("run settled");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("settled: "), "{text}: {stderr}");
        assert!(
            last.contains(expected),
            "{text}: expected {expected:?} in {last:?}"
        );
        if !text.starts_with("metrics") {
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        }
    }
}

#[tokio::test]
async fn the_rust_client_drives_every_operation_and_pipelines_from_many_tasks() {
    // The workspace names the settled-client crate `client`.
    use ::client::{Client, ClientError};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    let client = Client::connect(server.addr).await.expect("connect");
    let created = client.create_accounts(&accounts([1, 2])).await.unwrap();
    assert_eq!(statuses(&created), [0, 0]);
    // 32 tasks share the connection: their requests are in flight together.
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..32u128 {
        let client = client.clone();
        tasks.spawn(async move {
            let transfer = common::transfer(100 + id, 1, 2, 10);
            client.create_transfers(&[transfer]).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(statuses(&result.unwrap().unwrap()), [0]);
    }
    let found = client.lookup_accounts(&[1, 2]).await.unwrap();
    assert_eq!(
        (found[0].debits_posted, found[1].credits_posted),
        (320, 320)
    );
    assert_eq!(client.lookup_transfers(&[100, 131]).await.unwrap().len(), 2);
    let filter = AccountFilter {
        account_id: 2,
        limit: 100,
        flags: AccountFilterFlags::CREDITS,
        ..AccountFilter::default()
    };
    assert_eq!(
        client.get_account_transfers(filter).await.unwrap().len(),
        32
    );
    assert_eq!(client.get_account_balances(filter).await.unwrap().len(), 32);
    let query = QueryFilter {
        ledger: LEDGER,
        limit: 100,
        ..QueryFilter::default()
    };
    assert_eq!(client.query_accounts(query).await.unwrap().len(), 2);
    assert_eq!(client.query_transfers(query).await.unwrap().len(), 32);
    // An invalid filter (limit 0) selects nothing; it is not an error.
    let invalid_filter = client.query_accounts(QueryFilter::default()).await.unwrap();
    assert!(invalid_filter.is_empty());
    // A malformed request is refused (by the client or the server); the connection lives.
    let ragged = client
        .request(Operation::LookupAccounts, vec![0; 15], 1)
        .await;
    assert!(
        matches!(
            ragged,
            Err(ClientError::Server { .. } | ClientError::InvalidArgument { .. })
        ),
        "{ragged:?}"
    );
    assert_eq!(client.lookup_accounts(&[1]).await.unwrap().len(), 1);
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_full_engine_queue_slows_clients_down_without_failing_them() {
    let dir = tempfile::tempdir().unwrap();
    // A queue of one request: concurrent connections must find it full and wait.
    let config = settled_engine::config::Config {
        queue_requests_max: 1,
        ..server_config(dir.path())
    };
    let server = TestServer::start(config).await;
    let mut setup = Wire::ready(server.addr).await;
    create_accounts(&mut setup, 1, 1..=2).await;
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..20u128 {
        let addr = server.addr;
        tasks.spawn(async move {
            let mut wire = Wire::ready(addr).await;
            let mut bytes = Vec::new();
            for request in 0..10u128 {
                let transfers: Vec<Transfer> = (0..100u128)
                    .map(|index| {
                        let id = 1_000_000 + connection * 10_000 + request * 100 + index;
                        common::transfer(id, 1, 2, 1)
                    })
                    .collect();
                let request_id = request as u64;
                bytes.extend(request_bytes(
                    Operation::CreateTransfers,
                    request_id,
                    &transfers,
                ));
            }
            wire.write(&bytes).await;
            for _ in 0..10 {
                let reply = wire.read().await;
                assert_eq!(reply.header.kind, FrameKind::Reply, "{}", reply.message());
                let results = reply.records::<CreateResult>();
                assert!(results.iter().all(|result| result.status == 0));
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("every connection served");
    }
    let found = lookup_accounts(&mut setup, 2, &[1]).await;
    assert_eq!(found[0].debits_posted, 20 * 10 * 100);
    server.stop().await;
}
