//! A raw-TCP test client and an in-process server for the server tests: frames are built
//! by hand with `protocol::frame`, so tests can also send what no real client would.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytemuck::Pod;
use protocol::frame::{
    encode_frame, handshake_body, handshake_body_with_token, ErrorCode, FrameKind, Header,
    HEADER_BYTES, PROTOCOL_VERSION,
};
use protocol::records::{as_bytes, from_bytes};
use protocol::Operation;
use settled_engine::config::Config;
use settled_engine::core::ShutdownReport;
use settled_engine::server::{Server, ServerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest a test waits for one frame: far above any fsync, short enough to fail fast.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The daemon's config for a test: any free port, no metrics, frequent checkpoints.
pub fn server_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        metrics_listen: String::new(),
        checkpoint_batches: 3,
        ..Config::default()
    }
}

/// A server running on the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<ShutdownReport, ServerError>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer { addr, stop, task }
    }

    /// Ask for a graceful shutdown without waiting for it.
    pub fn begin_stop(self) -> JoinHandle<Result<ShutdownReport, ServerError>> {
        let _ = self.stop.send(());
        self.task
    }

    pub async fn stop(self) -> ShutdownReport {
        self.begin_stop()
            .await
            .expect("server task")
            .expect("clean shutdown")
    }
}

/// One frame as received.
#[derive(Debug)]
pub struct Received {
    pub header: Header,
    pub body: Vec<u8>,
}

impl Received {
    pub fn error_code(&self) -> Option<ErrorCode> {
        (self.header.kind == FrameKind::Error)
            .then(|| self.header.error_code())
            .flatten()
    }

    pub fn message(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn records<T: Pod>(&self) -> Vec<T> {
        assert_eq!(self.header.kind, FrameKind::Reply, "{}", self.message());
        let records = from_bytes::<T>(&self.body)
            .expect("whole records")
            .into_owned();
        assert_eq!(records.len() as u32, self.header.event_count);
        records
    }
}

pub struct Wire {
    pub stream: TcpStream,
}

impl Wire {
    pub async fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Wire { stream }
    }

    /// Connected and handshaken at the server's version.
    pub async fn ready(addr: SocketAddr) -> Wire {
        let mut wire = Wire::connect(addr).await;
        wire.handshake().await;
        wire
    }

    pub async fn handshake(&mut self) {
        self.send_handshake(PROTOCOL_VERSION, PROTOCOL_VERSION)
            .await;
        self.expect_handshake_reply().await;
    }

    /// Connected and handshaken with `token`.
    pub async fn ready_with_token(addr: SocketAddr, token: &[u8]) -> Wire {
        let mut wire = Wire::connect(addr).await;
        wire.send_handshake_with_token(token).await;
        wire.expect_handshake_reply().await;
        wire
    }

    pub async fn send_handshake_with_token(&mut self, token: &[u8]) {
        let mut out = Vec::new();
        let body = handshake_body_with_token(PROTOCOL_VERSION, PROTOCOL_VERSION, token)
            .expect("a token of 1 to 128 bytes");
        encode_frame(&mut out, FrameKind::Handshake, 0, 0, 0, 0, &body);
        self.write(&out).await;
    }

    async fn expect_handshake_reply(&mut self) {
        let reply = self.read().await;
        assert_eq!(
            reply.header.kind,
            FrameKind::Handshake,
            "{}",
            reply.message()
        );
        assert_eq!(reply.header.version, PROTOCOL_VERSION);
        assert_eq!(
            reply.body,
            handshake_body(PROTOCOL_VERSION, PROTOCOL_VERSION)
        );
    }

    pub async fn send_handshake(&mut self, version_min: u16, version_max: u16) {
        let mut out = Vec::new();
        let body = handshake_body(version_min, version_max);
        encode_frame(&mut out, FrameKind::Handshake, 0, 0, 0, 0, &body);
        self.write(&out).await;
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send<E: Pod>(&mut self, operation: Operation, request_id: u64, events: &[E]) {
        self.write(&request_bytes(operation, request_id, events))
            .await;
    }

    /// The next frame; panics on timeout or EOF.
    pub async fn read(&mut self) -> Received {
        self.try_read().await.expect("a frame, not EOF")
    }

    /// The next frame, or `None` at EOF.
    pub async fn try_read(&mut self) -> Option<Received> {
        tokio::time::timeout(READ_TIMEOUT, read_frame(&mut self.stream))
            .await
            .expect("frame within the read timeout")
    }

    /// Send one request and read its reply records (no other request may be in flight).
    pub async fn call<E: Pod, R: Pod>(
        &mut self,
        operation: Operation,
        request_id: u64,
        events: &[E],
    ) -> Vec<R> {
        self.send(operation, request_id, events).await;
        let reply = self.read().await;
        assert_eq!(reply.header.request_id, request_id);
        assert_eq!(reply.header.operation, operation.code());
        reply.records()
    }

    /// The server closed the connection (EOF, or reset, with no more frames).
    pub async fn expect_closed(&mut self) {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut byte))
            .await
            .expect("the server closes within the read timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "expected EOF, got {read:?}");
    }
}

/// A whole request frame.
pub fn request_bytes<E: Pod>(operation: Operation, request_id: u64, events: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    let count = events.len() as u32;
    let body = as_bytes(events);
    encode_frame(
        &mut out,
        FrameKind::Request,
        operation.code(),
        request_id,
        count,
        0,
        body,
    );
    out
}

/// Read one frame: `None` on a clean EOF before any byte of it.
async fn read_frame(stream: &mut TcpStream) -> Option<Received> {
    let mut header = [0u8; HEADER_BYTES];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(error) => panic!("read header: {error}"),
    }
    let header = Header::decode(&header).expect("server frames are valid");
    let mut body = vec![0u8; header.body_bytes as usize];
    stream.read_exact(&mut body).await.expect("read body");
    header.check_body(&body).expect("body checksum");
    Some(Received { header, body })
}
