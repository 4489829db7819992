//! A `settled` started for one run: a temporary data directory, a free loopback port, its
//! log kept (the last lines, for errors), its memory and disk measured, stopped with
//! SIGTERM (a graceful shutdown) and removed afterwards. The process itself is
//! [`settled_bench::daemon::Daemon`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use settled_bench::daemon::{self, Log};

/// How long start-up may take on an empty data directory.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a restart may take: today it reads every transfer, minutes at 100 M.
const RESTART_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a graceful shutdown may take (it writes a final checkpoint).
const STOP_TIMEOUT: Duration = Duration::from_secs(300);
/// Log lines kept to explain a failure.
const LOG_LINES_KEPT: usize = 40;

pub struct Daemon {
    binary: PathBuf,
    /// Declared before `data_dir`: dropping kills the process before its directory goes.
    process: daemon::Daemon,
    pub addr: SocketAddr,
    data_dir: tempfile::TempDir,
}

impl Daemon {
    /// `settled` from `binary` (default: beside this executable).
    pub fn start(binary: Option<&Path>) -> Result<Daemon, String> {
        let binary = match binary {
            Some(path) => path.to_path_buf(),
            None => daemon::sibling_settled(
                "pass --settled PATH, or load a running daemon with --addr",
            )?,
        };
        let data_dir = tempfile::Builder::new()
            .prefix("settle-bench-")
            .tempdir()
            .map_err(|error| format!("cannot create a temporary data directory: {error}"))?;
        let (process, addr) = spawn(&binary, data_dir.path(), START_TIMEOUT)?;
        Ok(Daemon {
            binary,
            process,
            addr,
            data_dir,
        })
    }

    /// Stop gracefully and start again on the same data directory: how long until it
    /// listened, and its peak resident memory by then (recovery included).
    pub fn restart(&mut self) -> Result<(Duration, Option<u64>), String> {
        self.process.stop(STOP_TIMEOUT)?;
        let started = Instant::now();
        let (process, addr) = spawn(&self.binary, self.data_dir.path(), RESTART_TIMEOUT)?;
        let took = started.elapsed();
        self.process = process;
        self.addr = addr;
        Ok((took, self.peak_rss_bytes()))
    }

    /// The daemon's last log lines.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Peak resident memory of the daemon so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        daemon::peak_rss_bytes(&self.process.id().to_string())
    }

    /// Bytes of every file under the data directory.
    pub fn data_bytes(&self) -> u64 {
        directory_bytes(self.data_dir.path())
    }

    /// SIGTERM, then wait for the graceful exit (answers in flight, final checkpoint).
    pub fn stop(mut self) -> Result<ExitStatus, String> {
        self.process.terminate(STOP_TIMEOUT)
    }
}

/// Start `binary` on `data_dir`, metrics on (as operators run it, on a free loopback
/// port), and wait up to `timeout` until it listens.
fn spawn(
    binary: &Path,
    data_dir: &Path,
    timeout: Duration,
) -> Result<(daemon::Daemon, SocketAddr), String> {
    let mut command = daemon::command(binary);
    command
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg("--metrics-listen=127.0.0.1:0")
        .env("RUST_LOG", "info");
    let mut process = daemon::Daemon::spawn(command, Log::Tail, LOG_LINES_KEPT)?;
    let addr = process.wait_listening(timeout)?;
    Ok((process, addr))
}

fn directory_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}
