//! Who may connect, over real TCP: TLS on the protocol port (server certificates, client
//! certificates), client tokens in the handshake (missing, wrong, read-only), the counter
//! of refused handshakes, and the config errors of the keys behind them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use client::{Client, ClientError, ClientOptions, ErrorCode, TlsOptions};
use common::daemon::{free_port, http_get, spawn_with_settings, Daemon};
use common::tls::TestPki;
use common::wire::{server_config, TestServer, Wire};
use protocol::frame::PROTOCOL_VERSION;
use protocol::{Account, AccountFlags, CreateAccountResult};
use settled_engine::config::{ClientEntry, Config};
use settled_engine::server::auth::{hex, token_sha256};
use tokio::io::AsyncReadExt;

const PAYOUTS_TOKEN: &str = "payouts-0123456789abcdef0123456789abcdef";
const REPORTS_TOKEN: &str = "reports-0123456789abcdef0123456789abcdef";

/// Far below the server's 10 s TLS handshake timeout: a refusal must come at once.
const REFUSAL_WITHIN: Duration = Duration::from_secs(5);

fn accounts(ids: impl IntoIterator<Item = u128>) -> Vec<Account> {
    ids.into_iter()
        .map(|id| common::account(id, AccountFlags::empty()))
        .collect()
}

fn tls_config(dir: &Path, pki: &TestPki) -> Config {
    Config {
        tls_cert_file: pki.cert_file.clone(),
        tls_key_file: pki.key_file.clone(),
        ..server_config(dir)
    }
}

/// payouts may write, reports may only read.
fn clients() -> Vec<ClientEntry> {
    vec![
        ClientEntry {
            name: "payouts".into(),
            token_sha256: hex(&token_sha256(PAYOUTS_TOKEN.as_bytes())),
            read_only: false,
        },
        ClientEntry {
            name: "reports".into(),
            token_sha256: hex(&token_sha256(REPORTS_TOKEN.as_bytes())),
            read_only: true,
        },
    ]
}

fn options(tls: Option<TlsOptions>, token: Option<&str>) -> ClientOptions {
    ClientOptions {
        tls,
        token: token.map(str::to_string),
        ..ClientOptions::default()
    }
}

async fn connect(addr: SocketAddr, options: ClientOptions) -> Result<Client, ClientError> {
    tokio::time::timeout(REFUSAL_WITHIN, Client::connect_with(addr, options))
        .await
        .expect("connected or refused within the bound")
}

/// Create accounts `ids` and read them back.
async fn create_and_look_up(client: &Client, ids: [u128; 2]) {
    let results = client.create_accounts(&accounts(ids)).await.unwrap();
    assert!(results
        .iter()
        .all(|result| result.account_status() == Ok(CreateAccountResult::Created)));
    let found = client.lookup_accounts(&ids).await.unwrap();
    assert_eq!(found.iter().map(|a| a.id).collect::<Vec<_>>(), ids);
}

/// Connect with `options`, which must be let in, and create and read back accounts `ids`.
async fn connect_and_create(addr: SocketAddr, options: ClientOptions, ids: [u128; 2]) -> Client {
    let client = connect(addr, options).await.expect("let in");
    create_and_look_up(&client, ids).await;
    client
}

/// A plaintext server that admits [`clients`] by their tokens.
async fn start_with_clients(dir: &Path) -> TestServer {
    let config = Config {
        clients: clients(),
        ..server_config(dir)
    };
    TestServer::start(config).await
}

/// Refused during TLS: as the client's handshake, or (TLS 1.3 lets the client finish its
/// side before the server has checked the client's certificate) as the failure to send or
/// read the settled handshake that follows.
fn assert_refused_by_tls(result: Result<Client, ClientError>) {
    assert!(
        matches!(
            result,
            Err(ClientError::Handshake { .. } | ClientError::Io(_))
        ),
        "{result:?}"
    );
}

fn assert_server_error(result: Result<Client, ClientError>, expected: ErrorCode) {
    match result {
        Err(ClientError::Server { code, message }) => {
            assert_eq!(code, expected, "{message}");
            assert!(message.starts_with(expected.as_str()), "{message}");
        }
        other => panic!("expected a {expected} error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tls_client_that_trusts_the_ca_creates_and_looks_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("settled test CA");
    let server = TestServer::start(tls_config(dir.path(), &pki)).await;
    for (name, ids) in [("localhost", [1, 2]), ("127.0.0.1", [3, 4])] {
        let tls = TlsOptions::new(pki.ca_pem(), name).unwrap();
        connect_and_create(server.addr, options(Some(tls), None), ids).await;
    }
    // The CA from a file, through the blocking client, as the CLI does it.
    let tls = TlsOptions::from_ca_file(&pki.ca_file, "localhost").unwrap();
    let addr = server.addr;
    let found = tokio::task::spawn_blocking(move || {
        let client = client::blocking::Client::connect_with(addr, options(Some(tls), None))?;
        client.lookup_accounts(&[1, 4])
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(found.len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn plaintext_clients_and_clients_trusting_another_ca_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("settled test CA");
    let server = TestServer::start(tls_config(dir.path(), &pki)).await;

    let started = Instant::now();
    let plaintext = connect(server.addr, ClientOptions::default()).await;
    assert!(
        matches!(plaintext, Err(ClientError::Handshake { .. })),
        "{plaintext:?}"
    );
    assert!(started.elapsed() < REFUSAL_WITHIN);

    let other = TestPki::new("another CA");
    let tls = TlsOptions::new(other.ca_pem(), "localhost").unwrap();
    let refused = connect(server.addr, options(Some(tls), None)).await;
    match refused {
        Err(ClientError::Handshake { reason }) => {
            assert!(reason.starts_with("TLS:"), "{reason}");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    // A certificate for another name than the one asked for is refused too.
    let tls = TlsOptions::new(pki.ca_pem(), "ledger.example").unwrap();
    let refused = connect(server.addr, options(Some(tls), None)).await;
    assert!(
        matches!(refused, Err(ClientError::Handshake { .. })),
        "{refused:?}"
    );

    // Nothing above disturbed the server.
    let tls = TlsOptions::new(pki.ca_pem(), "localhost").unwrap();
    connect_and_create(server.addr, options(Some(tls), None), [5, 6]).await;
    server.stop().await;
}

/// A client that connects to the TLS port and never speaks holds its connection slot only
/// until the TLS handshake timeout (10 s): with `connections_max = 1`, the next client is
/// told `busy` meanwhile and served afterwards.
#[tokio::test]
async fn a_client_that_never_finishes_the_tls_handshake_loses_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("settled test CA");
    let config = Config {
        connections_max: 1,
        ..tls_config(dir.path(), &pki)
    };
    let server = TestServer::start(config).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Let the server accept it (and take the one slot) before the next one comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tls = || Some(TlsOptions::new(pki.ca_pem(), "localhost").unwrap());
    assert_server_error(
        connect(server.addr, options(tls(), None)).await,
        ErrorCode::Busy,
    );

    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut byte))
        .await
        .expect("the server closes the silent connection within its handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(11));
    // The slot is free again (the close is seen a moment before the slot is released).
    let deadline = Instant::now() + Duration::from_secs(5);
    let client = loop {
        match connect(server.addr, options(tls(), None)).await {
            Ok(client) => break client,
            Err(error) if Instant::now() < deadline => {
                assert!(matches!(
                    error,
                    ClientError::Server {
                        code: ErrorCode::Busy,
                        ..
                    }
                ));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("slot never freed: {error}"),
        }
    };
    create_and_look_up(&client, [7, 8]).await;
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn with_client_certificates_required_only_clients_the_ca_signed_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("settled test CA");
    let config = Config {
        tls_client_ca_file: pki.ca_file.clone(),
        ..tls_config(dir.path(), &pki)
    };
    let server = TestServer::start(config).await;
    let tls = || TlsOptions::new(pki.ca_pem(), "localhost").unwrap();

    assert_refused_by_tls(connect(server.addr, options(Some(tls()), None)).await);

    let stranger = TestPki::new("another CA");
    let (cert, key) = stranger.client_identity("stranger");
    let foreign = tls().with_client_identity_files(&cert, &key).unwrap();
    assert_refused_by_tls(connect(server.addr, options(Some(foreign), None)).await);

    let (cert, key) = pki.client_identity("payouts");
    let signed = tls().with_client_identity_files(&cert, &key).unwrap();
    let client = connect_and_create(server.addr, options(Some(signed), None), [1, 2]).await;
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn tokens_admit_their_clients_and_refuse_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_clients(dir.path()).await;

    let payouts = connect_and_create(server.addr, options(None, Some(PAYOUTS_TOKEN)), [1, 2]).await;

    assert_server_error(
        connect(server.addr, options(None, None)).await,
        ErrorCode::Unauthorized,
    );
    let wrong = options(None, Some("payouts-0123456789abcdef0123456789abcdeF"));
    assert_server_error(connect(server.addr, wrong).await, ErrorCode::Unauthorized);

    // On the wire: an Error frame about the connection, then the close.
    for token in [None, Some(&b"not a token"[..])] {
        let mut wire = Wire::connect(server.addr).await;
        match token {
            None => {
                wire.send_handshake(PROTOCOL_VERSION, PROTOCOL_VERSION)
                    .await
            }
            Some(token) => wire.send_handshake_with_token(token).await,
        }
        let reply = wire.read().await;
        assert_eq!(
            reply.error_code(),
            Some(ErrorCode::Unauthorized),
            "{}",
            reply.message()
        );
        assert_eq!((reply.header.request_id, reply.header.operation), (0, 0));
        wire.expect_closed().await;
    }
    let mut wire = Wire::ready_with_token(server.addr, PAYOUTS_TOKEN.as_bytes()).await;
    let found: Vec<Account> = wire
        .call(protocol::Operation::LookupAccounts, 1, &[1u128, 2])
        .await;
    assert_eq!(found.len(), 2, "the refusals changed nothing");

    // The first client's connection never noticed.
    create_and_look_up(&payouts, [3, 4]).await;
    drop(payouts);
    server.stop().await;
}

#[tokio::test]
async fn a_read_only_client_reads_and_its_creates_are_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_clients(dir.path()).await;
    let payouts = connect_and_create(server.addr, options(None, Some(PAYOUTS_TOKEN)), [1, 2]).await;

    let reports = connect(server.addr, options(None, Some(REPORTS_TOKEN)))
        .await
        .unwrap();
    assert_eq!(reports.lookup_accounts(&[1, 2]).await.unwrap().len(), 2);
    let refused = reports.create_accounts(&accounts([3])).await.unwrap_err();
    match &refused {
        ClientError::Server { code, message } => {
            assert_eq!(*code, ErrorCode::Forbidden);
            assert!(message.contains("\"reports\" is read-only"), "{message}");
        }
        other => panic!("expected forbidden, got {other:?}"),
    }
    assert!(!refused.is_connection_closed());
    let transfer = common::transfer(10, 1, 2, 5);
    let refused = reports.create_transfers(&[transfer]).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::Server {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{refused:?}"
    );
    // Nothing was applied, and the connection still serves reads.
    assert!(reports.lookup_accounts(&[3]).await.unwrap().is_empty());
    assert!(reports.lookup_transfers(&[10]).await.unwrap().is_empty());
    assert!(reports.is_connected());
    drop((payouts, reports));
    server.stop().await;
}

#[tokio::test]
async fn without_clients_no_token_is_needed_and_one_sent_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(server_config(dir.path())).await;
    connect_and_create(server.addr, options(None, Some("anything")), [1, 2]).await;
    let client = connect(server.addr, options(None, None)).await.unwrap();
    assert_eq!(client.lookup_accounts(&[1, 2]).await.unwrap().len(), 2);
    drop(client);
    server.stop().await;
}

/// TLS and tokens together, from the client library as the `settle` CLI uses it.
#[tokio::test]
async fn tls_and_a_token_together() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("settled test CA");
    let config = Config {
        clients: clients(),
        ..tls_config(dir.path(), &pki)
    };
    let server = TestServer::start(config).await;
    let tls = || Some(TlsOptions::from_ca_file(&pki.ca_file, "127.0.0.1").unwrap());
    let client = connect_and_create(server.addr, options(tls(), Some(PAYOUTS_TOKEN)), [1, 2]).await;
    assert_server_error(
        connect(server.addr, options(tls(), None)).await,
        ErrorCode::Unauthorized,
    );
    drop(client);
    server.stop().await;
}

fn client_lines(name: &str, token: &str, read_only: bool) -> String {
    format!(
        "[[clients]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nread_only = {read_only}\n",
        hex(&token_sha256(token.as_bytes()))
    )
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The daemon counts refused handshakes and failed TLS handshakes (a process of its own:
/// the metrics recorder is process-wide).
#[tokio::test]
async fn the_daemon_counts_unauthorized_handshakes_and_failed_tls_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("settled test CA");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let settings = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n{}",
        pki.cert_file,
        pki.key_file,
        client_lines("payouts", PAYOUTS_TOKEN, false)
    );
    let (mut daemon, addr) = spawn_with_settings(dir.path(), Some(metrics), &settings);
    let counters = || {
        let (status, body) = http_get(metrics, "/metrics");
        assert!(status.contains("200"), "{status}");
        (
            metric(&body, "settled_connections_unauthorized_total"),
            metric(&body, "settled_tls_handshake_failures_total"),
        )
    };
    assert_eq!(counters(), (Some(0.0), Some(0.0)), "shown before any event");

    let tls = || Some(TlsOptions::new(pki.ca_pem(), "localhost").unwrap());
    assert_server_error(
        connect(addr, options(tls(), None)).await,
        ErrorCode::Unauthorized,
    );
    assert_server_error(
        connect(addr, options(tls(), Some(REPORTS_TOKEN))).await,
        ErrorCode::Unauthorized,
    );
    assert!(connect(addr, ClientOptions::default()).await.is_err());
    let client = connect(addr, options(tls(), Some(PAYOUTS_TOKEN)))
        .await
        .unwrap();
    create_and_look_up(&client, [1, 2]).await;
    drop(client);
    // The server counts a moment after the client sees the refusal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters() != (Some(2.0), Some(1.0)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counters(), (Some(2.0), Some(1.0)));
    let status = daemon.stop_with("TERM");
    assert!(status.success(), "{:?}", daemon.stderr);
}

#[test]
fn the_daemon_refuses_bad_tls_and_client_settings_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("settled test CA");
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "this is not PEM\n").unwrap();
    let other = TestPki::new("another CA");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("tls_cert_file = {:?}\n", pki.cert_file),
            "tls_key_file = \"\": required when tls_cert_file is set",
        ),
        (
            format!(
                "tls_cert_file = {missing:?}\ntls_key_file = {:?}\n",
                pki.key_file
            ),
            "tls_cert_file = \"",
        ),
        (
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {not_pem:?}\n",
                pki.cert_file
            ),
            "tls_key_file = \"",
        ),
        (
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                pki.cert_file, other.key_file
            ),
            "cannot be used with the certificate of tls_cert_file",
        ),
        (
            format!("tls_client_ca_file = {:?}\n", pki.ca_file),
            "tls_client_ca_file = \"",
        ),
        (
            "[[clients]]\nname = \"payouts\"\ntoken_sha256 = \"abc\"\n".to_string(),
            "clients[0].token_sha256 = \"abc\": must be 64 hex digits",
        ),
        (
            format!(
                "{}{}",
                client_lines("payouts", PAYOUTS_TOKEN, false),
                client_lines("payouts", REPORTS_TOKEN, true)
            ),
            "clients[1].name = \"payouts\": duplicate",
        ),
        (
            "[[clients]]\nname = \"payouts\"\ntoken = \"secret\"\n".to_string(),
            "clients[0].token",
        ),
    ];
    let file = dir.path().join("settled.toml");
    for (text, expected) in cases {
        std::fs::write(&file, &text).unwrap();
        let output = common::daemon::command(&["--config", file.to_str().unwrap()], &[])
            .output()
            .expect("run settled");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("settled: config error: "), "{stderr}");
        assert!(
            stderr.contains(expected),
            "{text}: expected {expected:?} in {stderr}"
        );
    }
}

#[test]
fn a_daemon_listening_beyond_loopback_without_tls_or_tokens_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("settled.toml");
    let text = format!(
        "data_dir = {:?}\nmetrics_listen = \"\"\n",
        dir.path().join("data")
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::spawn(
        &["--listen", "0.0.0.0:0"],
        &[("SETTLED_CONFIG", config.to_str().unwrap())],
    );
    daemon.wait_listening();
    let status = daemon.stop_with("TERM");
    assert!(status.success());
    let warnings: Vec<&String> = daemon
        .stderr
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("UNPROTECTED"))
        .collect();
    assert_eq!(warnings.len(), 2, "{:?}", daemon.stderr);
    assert!(warnings[0].contains("TLS is off"), "{warnings:?}");
    assert!(warnings[1].contains("no [[clients]]"), "{warnings:?}");
}

#[test]
fn settled_token_prints_a_token_and_the_entry_that_admits_it() {
    let output = common::daemon::command(&["token", "--name", "payouts", "--read-only"], &[])
        .output()
        .expect("run settled token");
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout
        .lines()
        .find(|line| line.len() == 64 && line.bytes().all(|b| b.is_ascii_hexdigit()))
        .expect("a 64-hex-digit token line");
    let entry = &stdout[stdout.find("[[clients]]").expect("a [[clients]] entry")..];
    let config = Config::from_toml(entry, "entry").unwrap();
    assert_eq!(
        config.clients,
        [ClientEntry {
            name: "payouts".into(),
            token_sha256: hex(&token_sha256(token.as_bytes())),
            read_only: true,
        }]
    );
    config.validate().unwrap();
}
