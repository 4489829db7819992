//! The loopback floor of small requests: what request/reply over TCP on this machine
//! costs with no work behind it.
//!
//! A server process answers every 192-byte request (a 64-byte frame header and one
//! 128-byte transfer, what `settle-bench --batch-size 1` sends) with 72 bytes (a header
//! and one 8-byte result) at once: no decoding, no ledger, no WAL, no fsync. The client
//! keeps `--clients` connections with one request in flight each, like `settle-bench
//! --clients N --batch-size 1`, and counts answers for `--seconds`. Both are tokio
//! programs with the default multi-thread runtime and `TCP_NODELAY`, like the daemon and
//! the load generator, and run as two processes, as they do. Whatever this measures, the
//! daemon cannot beat for requests of one transfer on this machine: its every request
//! costs these same syscalls and wake-ups, and then its own work.
//!
//! With `--sync-dir DIR` the server also makes each request durable before it answers,
//! the least a ledger must do: one thread appends the requests that arrived while it was
//! busy to a file in `DIR` (over space written and synced ahead, as the WAL does), calls
//! `fdatasync` once for all of them (group commit), and writes each reply into its
//! socket itself. That is the floor of `settle-bench --batch-size 1` with the disk in.
//!
//! Run with `cargo run --release -p settled-bench --bin loopback-floor -- --clients 64`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUEST_BYTES: usize = 64 + 128;
const REPLY_BYTES: usize = 64 + 8;

#[derive(Parser)]
#[command(
    about = "Request/reply rate over loopback TCP with nothing behind it: the ceiling \
                   of settle-bench --batch-size 1 on this machine"
)]
struct Args {
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: u32,
    /// How long to count.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Make every request durable in a file in this directory before answering it: one
    /// `fdatasync` per group of requests, as the daemon's WAL does.
    #[arg(long)]
    sync_dir: Option<PathBuf>,
    /// Run as the server on this address (the client starts it this way).
    #[arg(long, hide = true)]
    serve: Option<SocketAddr>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("runtime: {error}"))?;
    match args.serve {
        Some(addr) => runtime.block_on(serve(addr, args.sync_dir.as_deref())),
        None => runtime.block_on(measure(&args)),
    }
}

async fn serve(addr: SocketAddr, sync_dir: Option<&Path>) -> Result<(), String> {
    // The file is ready before the port opens: the client counts from its connections.
    let sync_file = sync_dir.map(prepare_sync_file).transpose()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| format!("bind {addr}: {error}"))?;
    if let Some(file) = sync_file {
        return serve_durable(listener, file).await;
    }
    loop {
        let mut stream = accept(&listener).await?;
        tokio::spawn(async move {
            let mut request = [0u8; REQUEST_BYTES];
            let reply = [0u8; REPLY_BYTES];
            while stream.read_exact(&mut request).await.is_ok() {
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The next connection, with `TCP_NODELAY` as the daemon sets it.
async fn accept(listener: &TcpListener) -> Result<TcpStream, String> {
    let (stream, _) = listener
        .accept()
        .await
        .map_err(|error| format!("accept: {error}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Bytes of the file the durable server appends to, written and synced before it listens,
/// so that a sync writes data and no file size; it wraps around when full.
const SYNC_FILE_BYTES: u64 = 64 << 20;

/// A request the syncer makes durable, and the socket its reply goes to.
struct Durable {
    request: [u8; REQUEST_BYTES],
    reply_to: Arc<std::net::TcpStream>,
}

/// The durable server's file in `dir`; the client removes it when the server is gone.
fn sync_file_path(dir: &Path) -> PathBuf {
    dir.join("loopback-floor.log")
}

/// Creates the file the durable server appends to: zeros written and synced ahead.
fn prepare_sync_file(dir: &Path) -> Result<std::fs::File, String> {
    let path = sync_file_path(dir);
    let failed = |error: std::io::Error| format!("{}: {error}", path.display());
    let file = std::fs::File::create(&path).map_err(failed)?;
    let zeros = vec![0u8; 1 << 20];
    for chunk in 0..SYNC_FILE_BYTES / zeros.len() as u64 {
        file.write_all_at(&zeros, chunk * zeros.len() as u64)
            .map_err(failed)?;
    }
    file.sync_all().map_err(failed)?;
    Ok(file)
}

async fn serve_durable(listener: TcpListener, file: std::fs::File) -> Result<(), String> {
    // Bounded: at most one request in flight per connection.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Durable>(64 * 1024);
    std::thread::spawn(move || sync_loop(&file, &receiver));
    loop {
        let mut stream = accept(&listener).await?;
        // The syncer writes replies through its own descriptor of the same socket, which
        // shares the socket's non-blocking mode.
        let duplicate = stream
            .as_fd()
            .try_clone_to_owned()
            .map_err(|error| format!("dup: {error}"))?;
        let reply_to = Arc::new(std::net::TcpStream::from(duplicate));
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut request = [0u8; REQUEST_BYTES];
            while stream.read_exact(&mut request).await.is_ok() {
                let reply_to = Arc::clone(&reply_to);
                if sender.send(Durable { request, reply_to }).is_err() {
                    return;
                }
            }
        });
    }
}

/// Group commit: append what arrived, one `fdatasync`, then every reply.
fn sync_loop(file: &std::fs::File, requests: &std::sync::mpsc::Receiver<Durable>) {
    let reply = [0u8; REPLY_BYTES];
    let mut offset = 0u64;
    let mut group = Vec::new();
    let mut bytes = Vec::new();
    while let Ok(first) = requests.recv() {
        group.push(first);
        group.extend(requests.try_iter());
        bytes.clear();
        for durable in &group {
            bytes.extend_from_slice(&durable.request);
        }
        if offset + bytes.len() as u64 > SYNC_FILE_BYTES {
            offset = 0;
        }
        file.write_all_at(&bytes, offset)
            .expect("append to the sync file");
        file.sync_data().expect("fdatasync the sync file");
        offset += bytes.len() as u64;
        for durable in group.drain(..) {
            // One request in flight per connection: its socket's buffer has room, but a
            // closed connection fails the write, which ends nothing here.
            let _ = write_blocking(&durable.reply_to, &reply);
        }
    }
}

/// Writes all of `bytes` into a non-blocking socket, waiting in `poll` when it is full.
fn write_blocking(mut socket: &std::net::TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match socket.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                let mut poll = libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for the length of the call.
                unsafe { libc::poll(&mut poll, 1, 100) };
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn measure(args: &Args) -> Result<(), String> {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?
    };
    if let Some(dir) = &args.sync_dir {
        if !dir.is_dir() {
            return Err(format!("--sync-dir {}: not a directory", dir.display()));
        }
    }
    let program = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut server = Command::new(program);
    server.arg("--serve").arg(addr.to_string());
    if let Some(dir) = &args.sync_dir {
        server.arg("--sync-dir").arg(dir);
    }
    let mut server = server
        .stdin(Stdio::null())
        .spawn()
        .map_err(|error| format!("start the server: {error}"))?;
    let outcome = load(addr, args).await;
    let _ = server.kill();
    let _ = server.wait();
    if let Some(dir) = &args.sync_dir {
        let _ = std::fs::remove_file(sync_file_path(dir));
    }
    let (answered, elapsed, latency) = outcome?;
    let quantile = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} connections x 1 in flight{}: {:.0} requests/s ({answered} in {:.2} s); latency p50 \
         {:.2} p99 {:.2} max {:.2} ms",
        args.clients,
        if args.sync_dir.is_some() {
            ", fdatasync per group"
        } else {
            ""
        },
        answered as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        quantile(0.5),
        quantile(0.99),
        latency.max() as f64 / 1000.0
    );
    Ok(())
}

async fn load(addr: SocketAddr, args: &Args) -> Result<(u64, Duration, Histogram<u64>), String> {
    let mut streams = Vec::new();
    for _ in 0..args.clients {
        streams.push(connect(addr).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram");
            let request = [1u8; REQUEST_BYTES];
            let mut reply = [0u8; REPLY_BYTES];
            let mut answered = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                stream.write_all(&request).await?;
                stream.read_exact(&mut reply).await?;
                latency.saturating_record(sent.elapsed().as_micros() as u64);
                answered += 1;
            }
            Ok::<_, std::io::Error>((answered, latency))
        });
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram");
    while let Some(joined) = tasks.join_next().await {
        let (count, histogram) = joined
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("a connection failed: {error}"))?;
        answered += count;
        latency.add(&histogram).map_err(|error| error.to_string())?;
    }
    Ok((answered, started.elapsed(), latency))
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    // The server process may still be starting (writing its file ahead, with --sync-dir).
    for _ in 0..3000 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            stream
                .set_nodelay(true)
                .map_err(|error| error.to_string())?;
            return Ok(stream);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("cannot connect to the server on {addr}"))
}
