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
//! Run with `cargo run --release -p settled-bench --bin loopback-floor -- --clients 64`.

use std::net::SocketAddr;
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
        Some(addr) => runtime.block_on(serve(addr)),
        None => runtime.block_on(measure(&args)),
    }
}

async fn serve(addr: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| format!("bind {addr}: {error}"))?;
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|error| format!("accept: {error}"))?;
        let _ = stream.set_nodelay(true);
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

async fn measure(args: &Args) -> Result<(), String> {
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?
    };
    let program = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut server = Command::new(program)
        .arg("--serve")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|error| format!("start the server: {error}"))?;
    let outcome = load(addr, args).await;
    let _ = server.kill();
    let _ = server.wait();
    let (answered, elapsed, latency) = outcome?;
    let quantile = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} connections x 1 in flight: {:.0} requests/s ({answered} in {:.2} s); latency p50 \
         {:.2} p99 {:.2} max {:.2} ms",
        args.clients,
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
            let mut latency = Histogram::<u64>::new(3).expect("histogram");
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
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
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
    // The server process may still be starting.
    for _ in 0..200 {
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
