//! The client against a fake server written here with tokio: it answers the handshake, then
//! follows a per-test script of hand-built frames (out-of-order replies, error frames,
//! corrupt bodies, closing mid-request). End-to-end tests against the real daemon live with
//! the server.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use protocol::frame::{self, ErrorCode, FrameKind, Header, HEADER_BYTES};
use protocol::records;
use settled_client::{
    Account, Client, ClientError, ClientOptions, CreateResult, CreateTransferResult, Operation,
    QueryFilter, Transfer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bound on every wait in these tests: a hang is a failure, never a stuck suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame the fake server received.
type Frame = (Header, Vec<u8>);

/// The server side of one accepted connection.
struct Peer {
    stream: TcpStream,
}

impl Peer {
    /// The next frame, or `None` at EOF.
    async fn read(&mut self) -> Option<Frame> {
        let mut header_bytes = [0u8; HEADER_BYTES];
        self.stream.read_exact(&mut header_bytes).await.ok()?;
        let header = Header::decode(&header_bytes).expect("client sent a valid header");
        let mut body = vec![0u8; header.body_bytes as usize];
        self.stream.read_exact(&mut body).await.ok()?;
        header.check_body(&body).expect("client sent a valid body");
        Some((header, body))
    }

    async fn read_request(&mut self) -> Frame {
        let frame = tokio::time::timeout(TEST_TIMEOUT, self.read())
            .await
            .expect("a request within the test timeout")
            .expect("a request, not EOF");
        assert_eq!(frame.0.kind, FrameKind::Request);
        frame
    }

    /// Waits `wait` for a frame; `None` when none came (or the client closed).
    async fn read_within(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.read()).await.ok().flatten()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to client");
    }

    async fn reply<T: bytemuck::Pod>(&mut self, request: &Header, records: &[T]) {
        let body = records::as_bytes(records);
        let frame = frame_bytes(FrameKind::Reply, request, records.len() as u32, 0, body);
        self.send(&frame).await;
    }

    async fn error(&mut self, request: &Header, code: ErrorCode, message: &str) {
        let frame = frame_bytes(
            FrameKind::Error,
            request,
            0,
            code.code(),
            message.as_bytes(),
        );
        self.send(&frame).await;
    }

    async fn answer_handshake(&mut self) {
        let (header, body) = self.read().await.expect("handshake");
        assert_eq!(header.kind, FrameKind::Handshake);
        assert_eq!(header.request_id, 0);
        let handshake = frame::parse_handshake_body(&body).expect("a valid handshake body");
        assert_eq!((handshake.version_min, handshake.version_max), (1, 1));
        assert_eq!(handshake.token, None, "no token unless one is given");
        let mut bytes = Vec::new();
        let body = frame::handshake_body(1, 1);
        frame::encode_frame(&mut bytes, FrameKind::Handshake, 0, 0, 0, 0, &body);
        self.send(&bytes).await;
    }
}

fn frame_bytes(kind: FrameKind, request: &Header, count: u32, error: u16, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let operation = request.operation;
    frame::encode_frame(
        &mut bytes,
        kind,
        operation,
        request.request_id,
        count,
        error,
        body,
    );
    bytes
}

/// Listens on a free port; the script runs on the first connection after `greet`.
async fn serve_with<G, S, F>(greet: G, script: S) -> (SocketAddr, JoinHandle<()>)
where
    G: FnOnce(Peer) -> F + Send + 'static,
    F: Future<Output = Option<Peer>> + Send,
    S: AsyncScript,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        if let Some(peer) = greet(Peer { stream }).await {
            script.run(peer).await;
        }
    });
    (addr, task)
}

/// The common case: a server that answers the handshake, then runs `script`.
async fn serve<S: AsyncScript>(script: S) -> (SocketAddr, JoinHandle<()>) {
    serve_with(
        |mut peer| async move {
            peer.answer_handshake().await;
            Some(peer)
        },
        script,
    )
    .await
}

/// A server-side script over one connection (a closure returning a future).
trait AsyncScript: Send + 'static {
    fn run(self, peer: Peer) -> impl Future<Output = ()> + Send;
}

impl<S, F> AsyncScript for S
where
    S: FnOnce(Peer) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    fn run(self, peer: Peer) -> impl Future<Output = ()> + Send {
        self(peer)
    }
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("finished within the test timeout")
}

fn account(id: u128, ledger: u32) -> Account {
    Account {
        id,
        ledger,
        code: 1,
        ..Account::default()
    }
}

fn ids_of(body: &[u8]) -> Vec<u128> {
    records::from_bytes::<u128>(body)
        .expect("whole ids")
        .into_owned()
}

#[tokio::test]
async fn pipelined_requests_get_their_own_replies_in_any_order() {
    const REQUESTS: usize = 8;
    let (addr, server) = serve(|mut peer: Peer| async move {
        // Read every request before answering any: this only finishes if the client
        // really has them all in flight at once.
        let mut requests = Vec::new();
        for _ in 0..REQUESTS {
            requests.push(peer.read_request().await);
        }
        for (header, body) in requests.iter().rev() {
            assert_eq!(header.operation, Operation::LookupAccounts.code());
            let found: Vec<Account> = ids_of(body).iter().map(|&id| account(id, 7)).collect();
            peer.reply(header, &found).await;
        }
        assert!(
            peer.read_within(TEST_TIMEOUT).await.is_none(),
            "client closes"
        );
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let calls: Vec<_> = (0..REQUESTS as u128)
        .map(|index| {
            let client = client.clone();
            tokio::spawn(async move { (index, client.lookup_accounts(&[100 + index]).await) })
        })
        .collect();
    for call in calls {
        let (index, result) = within(call).await.expect("task");
        let accounts = result.expect("lookup");
        assert_eq!(accounts, [account(100 + index, 7)]);
    }
    drop(client);
    within(server).await.expect("server script");
}

#[tokio::test]
async fn create_results_come_back_one_per_event_in_order() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        let (header, body) = peer.read_request().await;
        assert_eq!(header.operation, Operation::CreateTransfers.code());
        assert_eq!(header.event_count, 3);
        let transfers = records::from_bytes::<Transfer>(&body).expect("transfers");
        assert_eq!(transfers[2].amount, 30);
        let results = [
            CreateResult::transfer(CreateTransferResult::Created, 11),
            CreateResult::transfer(CreateTransferResult::ExceedsCredits, 12),
            CreateResult::transfer(CreateTransferResult::Exists, 5),
        ];
        peer.reply(&header, &results).await;
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let transfers: Vec<Transfer> = (1..=3u128)
        .map(|id| Transfer {
            id,
            amount: id * 10,
            ..Transfer::default()
        })
        .collect();
    let results = within(client.create_transfers(&transfers))
        .await
        .expect("create");
    let statuses: Vec<_> = results.iter().map(|r| r.transfer_status()).collect();
    assert_eq!(
        statuses,
        [
            Ok(CreateTransferResult::Created),
            Ok(CreateTransferResult::ExceedsCredits),
            Ok(CreateTransferResult::Exists)
        ]
    );
    assert_eq!(results[0].timestamp, 11);
    within(server).await.expect("server script");
}

#[tokio::test]
async fn server_error_frames_map_to_server_errors_and_the_connection_stays_open() {
    let message = "too_many_in_flight: 65 requests, limit 64";
    let (addr, server) = serve(move |mut peer: Peer| async move {
        let (first, _) = peer.read_request().await;
        peer.error(&first, ErrorCode::TooManyInFlight, message)
            .await;
        let (second, body) = peer.read_request().await;
        peer.reply(&second, &[account(ids_of(&body)[0], 1)]).await;
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let error = within(client.lookup_accounts(&[1])).await.unwrap_err();
    match error {
        ClientError::Server {
            code,
            message: text,
        } => {
            assert_eq!(code, ErrorCode::TooManyInFlight);
            assert_eq!(text, message);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(client.is_connected());
    let accounts = within(client.lookup_accounts(&[2]))
        .await
        .expect("second request");
    assert_eq!(accounts, [account(2, 1)]);
    within(server).await.expect("server script");
}

#[tokio::test]
async fn a_fatal_error_frame_fails_every_request_in_flight() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        peer.read_request().await;
        peer.read_request().await;
        // Fatal errors about no particular request carry request id 0, then the server closes.
        let connection_level = Header::new(FrameKind::Request, 0, 0, 0, 0, &[]);
        peer.error(&connection_level, ErrorCode::BadFrame, "bad_frame: test")
            .await;
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let (first, second) =
        within(async { tokio::join!(client.lookup_accounts(&[1]), client.lookup_transfers(&[2])) })
            .await;
    for error in [first.unwrap_err(), second.unwrap_err()] {
        assert!(
            matches!(
                error,
                ClientError::Server {
                    code: ErrorCode::BadFrame,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.is_connection_closed());
    }
    assert!(!client.is_connected());
    within(server).await.expect("server script");
}

#[tokio::test]
async fn a_corrupt_reply_fails_every_waiter_and_closes_the_connection() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        let (first, _) = peer.read_request().await;
        peer.read_request().await;
        peer.read_request().await;
        let body = records::as_bytes(&[account(1, 1)]).to_vec();
        let mut bytes = frame_bytes(FrameKind::Reply, &first, 1, 0, &body);
        bytes[HEADER_BYTES + 5] ^= 0x40; // body no longer matches body_checksum
        peer.send(&bytes).await;
        // The client must hang up rather than keep reading a stream it cannot trust.
        assert!(peer.read_within(TEST_TIMEOUT).await.is_none());
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let results = within(async {
        tokio::join!(
            client.lookup_accounts(&[1]),
            client.lookup_accounts(&[2]),
            client.lookup_accounts(&[3])
        )
    })
    .await;
    for result in [results.0, results.1, results.2] {
        let error = result.unwrap_err();
        match &error {
            ClientError::Protocol { reason } => {
                assert!(reason.contains("body_checksum"), "{reason}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
    assert!(!client.is_connected());
    let after = within(client.lookup_accounts(&[4])).await.unwrap_err();
    assert!(matches!(after, ClientError::Disconnected), "{after:?}");
    within(server).await.expect("server script");
}

#[tokio::test]
async fn a_create_reply_with_too_few_results_is_a_protocol_error() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        let (header, _) = peer.read_request().await;
        let results = [CreateResult::transfer(CreateTransferResult::Created, 1)];
        peer.reply(&header, &results).await;
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let transfers = [Transfer::default(), Transfer::default()];
    let error = within(client.create_transfers(&transfers))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Protocol { .. }), "{error:?}");
    within(server).await.expect("server script");
}

#[tokio::test]
async fn a_reply_to_an_unknown_request_or_of_another_operation_is_a_protocol_error() {
    for mismatch in ["unknown_id", "other_operation"] {
        let (addr, server) = serve(move |mut peer: Peer| async move {
            let (mut header, _) = peer.read_request().await;
            match mismatch {
                "unknown_id" => header.request_id += 1000,
                _ => header.operation = Operation::LookupTransfers.code(),
            }
            peer.reply(&header, &[Transfer::default()]).await;
        })
        .await;
        let client = within(Client::connect(addr)).await.expect("connect");
        let error = within(client.lookup_accounts(&[1])).await.unwrap_err();
        assert!(
            matches!(error, ClientError::Protocol { .. }),
            "{mismatch}: {error:?}"
        );
        within(server).await.expect("server script");
    }
}

#[tokio::test]
async fn a_server_that_closes_mid_request_gives_disconnected() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        peer.read_request().await;
        drop(peer);
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let error = within(client.lookup_accounts(&[1])).await.unwrap_err();
    assert!(matches!(error, ClientError::Disconnected), "{error:?}");
    let after = within(client.lookup_accounts(&[1])).await.unwrap_err();
    assert!(matches!(after, ClientError::Disconnected), "{after:?}");
    within(server).await.expect("server script");
}

#[tokio::test]
async fn too_many_events_are_refused_without_sending() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        let frame = peer.read_within(TEST_TIMEOUT).await;
        assert!(frame.is_none(), "nothing may be sent: {frame:?}");
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let transfers = vec![Transfer::default(); 8190];
    let error = within(client.create_transfers(&transfers))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::TooManyEvents {
                count: 8190,
                max: 8189
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "too_many_events: 8190 events, limit 8189"
    );
    let filters = records::as_bytes(&[QueryFilter::default(); 2]).to_vec();
    let error = within(client.request(Operation::QueryAccounts, filters, 2))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::TooManyEvents { count: 2, max: 1 }),
        "{error:?}"
    );
    assert!(client.is_connected());
    drop(client);
    within(server).await.expect("server script");
}

/// The token travels in the handshake as its bytes; a server that refuses it answers
/// `unauthorized` in place of the handshake reply, and connecting fails with that error.
#[tokio::test]
async fn the_token_travels_in_the_handshake_and_unauthorized_fails_the_connect() {
    let (addr, server) = serve_with(
        |mut peer: Peer| async move {
            let (header, body) = peer.read().await.expect("handshake");
            assert_eq!(header.kind, FrameKind::Handshake);
            let handshake = frame::parse_handshake_body(&body).expect("a valid handshake body");
            assert_eq!(handshake.token, Some(&b"sesame"[..]));
            let none = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &[]);
            let message = "unauthorized: the token matches no configured client";
            peer.error(&none, ErrorCode::Unauthorized, message).await;
            None
        },
        |_peer: Peer| async {},
    )
    .await;
    let options = ClientOptions {
        token: Some("sesame".to_string()),
        ..ClientOptions::default()
    };
    let error = within(Client::connect_with(addr, options))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Server {
                code: ErrorCode::Unauthorized,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_connection_closed());
    within(server).await.expect("server script");

    let options = ClientOptions {
        token: Some("x".repeat(129)),
        ..ClientOptions::default()
    };
    let error = within(Client::connect_with(addr, options))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::InvalidArgument { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_refused_handshake_is_a_server_error() {
    let (addr, server) = serve_with(
        |mut peer: Peer| async move {
            peer.read().await.expect("handshake");
            let none = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &[]);
            let message = "unsupported_version: client speaks 1..=1, server 2..=2";
            peer.error(&none, ErrorCode::UnsupportedVersion, message)
                .await;
            None
        },
        |_peer: Peer| async {},
    )
    .await;
    let error = within(Client::connect(addr)).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Server {
                code: ErrorCode::UnsupportedVersion,
                ..
            }
        ),
        "{error:?}"
    );
    within(server).await.expect("server script");
}

#[tokio::test]
async fn a_handshake_choosing_another_version_is_refused() {
    let (addr, server) = serve_with(
        |mut peer: Peer| async move {
            peer.read().await.expect("handshake");
            let body = frame::handshake_body(2, 2);
            let mut header = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &body);
            header.version = 2;
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(&body);
            peer.send(&bytes).await;
            None
        },
        |_peer: Peer| async {},
    )
    .await;
    let error = within(Client::connect(addr)).await.unwrap_err();
    assert!(matches!(error, ClientError::Handshake { .. }), "{error:?}");
    within(server).await.expect("server script");
}

#[tokio::test]
async fn a_silent_server_times_the_handshake_out() {
    let (addr, server) = serve_with(
        |mut peer: Peer| async move {
            peer.read().await.expect("handshake");
            // Say nothing until the client gives up and hangs up.
            assert!(peer.read_within(TEST_TIMEOUT).await.is_none());
            None
        },
        |_peer: Peer| async {},
    )
    .await;
    let options = ClientOptions {
        connect_timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let error = within(Client::connect_with(addr, options))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Handshake { .. }), "{error:?}");
    within(server).await.expect("server script");
}

#[tokio::test]
async fn the_client_keeps_no_more_than_in_flight_max_requests_in_flight() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        let first = peer.read_request().await;
        let second = peer.read_request().await;
        let third = peer.read_within(Duration::from_millis(200)).await;
        assert!(third.is_none(), "a third request while two are unanswered");
        let mut unanswered = vec![first, second];
        let mut answered = 0;
        while let Some((header, body)) = unanswered.pop() {
            peer.reply(&header, &[account(ids_of(&body)[0], 1)]).await;
            answered += 1;
            if answered <= 3 {
                unanswered.insert(0, peer.read_request().await);
            }
        }
        assert_eq!(answered, 5);
    })
    .await;
    let options = ClientOptions {
        in_flight_max: 2,
        ..ClientOptions::default()
    };
    let client = within(Client::connect_with(addr, options))
        .await
        .expect("connect");
    let calls: Vec<_> = (1..=5u128)
        .map(|id| {
            let client = client.clone();
            tokio::spawn(async move { client.lookup_accounts(&[id]).await })
        })
        .collect();
    for call in calls {
        within(call).await.expect("task").expect("lookup");
    }
    within(server).await.expect("server script");
}

#[tokio::test]
async fn a_late_reply_to_an_abandoned_request_does_not_break_the_connection() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        let (abandoned, _) = peer.read_request().await;
        let (second, body) = peer.read_request().await;
        peer.reply(&abandoned, &[account(1, 1)]).await;
        peer.reply(&second, &[account(ids_of(&body)[0], 2)]).await;
        // Stay connected until the client hangs up, so it can check it is still connected.
        assert!(peer.read_within(TEST_TIMEOUT).await.is_none());
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let gave_up =
        tokio::time::timeout(Duration::from_millis(50), client.lookup_accounts(&[1])).await;
    assert!(
        gave_up.is_err(),
        "the server does not answer the first request in time"
    );
    let accounts = within(client.lookup_accounts(&[2]))
        .await
        .expect("second request");
    assert_eq!(accounts, [account(2, 2)]);
    assert!(client.is_connected());
    drop(client);
    within(server).await.expect("server script");
}

#[tokio::test]
async fn dropping_the_last_clone_closes_the_connection() {
    let (addr, server) = serve(|mut peer: Peer| async move {
        assert!(
            peer.read_within(TEST_TIMEOUT).await.is_none(),
            "EOF after drop"
        );
    })
    .await;
    let client = within(Client::connect(addr)).await.expect("connect");
    let clone = client.clone();
    drop(client);
    assert!(clone.is_connected());
    drop(clone);
    within(server).await.expect("server script");
}

#[test]
fn the_blocking_client_has_the_same_calls() {
    let server_runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (addr, server) = server_runtime.block_on(serve(|mut peer: Peer| async move {
        let (header, body) = peer.read_request().await;
        let found: Vec<Account> = ids_of(&body).iter().map(|&id| account(id, 3)).collect();
        peer.reply(&header, &found).await;
        let (header, _) = peer.read_request().await;
        peer.error(&header, ErrorCode::Busy, "busy: queue full")
            .await;
    }));
    let client = settled_client::blocking::Client::connect(addr).expect("connect");
    let accounts = client.lookup_accounts(&[5, 6]).expect("lookup");
    assert_eq!(accounts, [account(5, 3), account(6, 3)]);
    let error = client.create_accounts(&[account(7, 3)]).unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Server {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{error:?}"
    );
    server_runtime
        .block_on(within(server))
        .expect("server script");
}
