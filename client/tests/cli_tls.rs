//! The `settle` command line over TLS with a token: a fake server written here (rustls, a
//! certificate made at run time with rcgen) checks what `settle --tls-ca ... ` with
//! `SETTLE_TOKEN` sends and answers it; the real daemon's side is engine/tests/auth.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use protocol::frame::{self, ErrorCode, FrameKind, Header, HEADER_BYTES};
use protocol::{records, Account, Operation};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A CA certificate written to `dir/ca.pem`, and the server's rustls config signed by it
/// for `localhost` and `127.0.0.1`.
fn pki(dir: &Path) -> Arc<rustls::ServerConfig> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "settle test CA");
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(
        dir.join("ca.pem"),
        params.self_signed(&ca_key).unwrap().pem(),
    )
    .unwrap();
    let issuer = Issuer::new(params, ca_key);
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    Arc::new(config)
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> (Header, Vec<u8>) {
    let mut header = [0u8; HEADER_BYTES];
    stream.read_exact(&mut header).await.expect("a header");
    let header = Header::decode(&header).expect("a valid header");
    let mut body = vec![0u8; header.body_bytes as usize];
    stream.read_exact(&mut body).await.expect("a body");
    header.check_body(&body).expect("a valid body");
    (header, body)
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: FrameKind,
    request: &Header,
    count: u32,
    error: u16,
    body: &[u8],
) {
    let mut bytes = Vec::new();
    let id = request.request_id;
    frame::encode_frame(&mut bytes, kind, request.operation, id, count, error, body);
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();
}

/// One TLS connection: the handshake must carry `expected_token`, else `unauthorized`;
/// then one lookup_accounts is answered with account 5.
async fn fake_server(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    expected_token: &'static [u8],
) {
    let (tcp, _) = listener.accept().await.unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut stream = acceptor.accept(tcp).await.expect("a TLS handshake");
    let (header, body) = read_frame(&mut stream).await;
    assert_eq!(header.kind, FrameKind::Handshake);
    let handshake = frame::parse_handshake_body(&body).expect("a valid handshake body");
    if handshake.token != Some(expected_token) {
        let message = "unauthorized: the token matches no configured client";
        let error = ErrorCode::Unauthorized.code();
        let none = Header::new(FrameKind::Handshake, 0, 0, 0, 0, &[]);
        send(
            &mut stream,
            FrameKind::Error,
            &none,
            0,
            error,
            message.as_bytes(),
        )
        .await;
        let _ = stream.shutdown().await;
        return;
    }
    let reply = frame::handshake_body(1, 1);
    send(&mut stream, FrameKind::Handshake, &header, 0, 0, &reply).await;
    let (request, body) = read_frame(&mut stream).await;
    assert_eq!(request.operation, Operation::LookupAccounts.code());
    assert_eq!(body, 5u128.to_le_bytes());
    let account = Account {
        id: 5,
        ledger: 840,
        code: 1,
        credits_posted: 1234,
        ..Account::default()
    };
    let records = records::as_bytes(std::slice::from_ref(&account));
    send(&mut stream, FrameKind::Reply, &request, 1, 0, records).await;
    // Wait for the client to leave.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
}

/// `settle --addr ADDR --tls-ca ca.pem lookup-accounts 5`, with `token` in SETTLE_TOKEN.
async fn settle(addr: SocketAddr, dir: &Path, token: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_settle"));
    command
        .args(["--addr", &addr.to_string(), "--tls-ca"])
        .arg(dir.join("ca.pem"))
        .args(["lookup-accounts", "5"])
        .env_remove("SETTLE_ADDR")
        .env_remove("SETTLE_TOKEN")
        .env_remove("SETTLE_TLS_CA")
        .env_remove("SETTLED_CONFIG");
    if let Some(token) = token {
        command.env("SETTLE_TOKEN", token);
    }
    let run = tokio::task::spawn_blocking(move || command.output().expect("run settle"));
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .expect("settle finishes")
        .unwrap()
}

#[tokio::test]
async fn settle_over_tls_sends_the_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = pki(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(fake_server(listener, config, b"cli-token"));
    let output = settle(addr, dir.path(), Some("cli-token")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "settle failed: {stderr}");
    let line: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON line on stdout");
    assert_eq!(line["id"], "5");
    assert_eq!(line["credits_posted"], "1234");
    tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .expect("the fake server finishes")
        .unwrap();
}

#[tokio::test]
async fn settle_without_the_token_reports_unauthorized_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = pki(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(fake_server(listener, config, b"cli-token"));
    let output = settle(addr, dir.path(), None).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("settle: cannot reach settled at"),
        "{stderr}"
    );
    assert!(stderr.contains("unauthorized"), "{stderr}");
    tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .expect("the fake server finishes")
        .unwrap();
}
