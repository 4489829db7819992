//! A `settled` started for one run: a temporary data directory, a free loopback port, its
//! log kept (the last lines, for errors), its memory and disk measured, stopped with
//! SIGTERM (a graceful shutdown) and removed afterwards.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

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
    child: Child,
    pub addr: SocketAddr,
    /// The last lines of the daemon's log, kept by the thread that drains its stderr
    /// (which must never stop reading, or the daemon would block on logging).
    log_tail: LogTail,
    data_dir: tempfile::TempDir,
}

impl Daemon {
    /// `settled` from `binary` (default: beside this executable).
    pub fn start(binary: Option<&Path>) -> Result<Daemon, String> {
        let binary = match binary {
            Some(path) => path.to_path_buf(),
            None => sibling_settled()?,
        };
        let data_dir = tempfile::Builder::new()
            .prefix("settle-bench-")
            .tempdir()
            .map_err(|error| format!("cannot create a temporary data directory: {error}"))?;
        let (child, log_tail, addr) = spawn(&binary, data_dir.path(), START_TIMEOUT)?;
        Ok(Daemon {
            binary,
            child,
            addr,
            log_tail,
            data_dir,
        })
    }

    /// Stop gracefully and start again on the same data directory: how long until it
    /// listened, and its peak resident memory by then (recovery included).
    pub fn restart(&mut self) -> Result<(Duration, Option<u64>), String> {
        let status = self.terminate()?;
        if !status.success() {
            return Err(format!(
                "settled exited with {status} on SIGTERM; its log:\n{}",
                self.log_tail()
            ));
        }
        let started = Instant::now();
        let (child, log_tail, addr) = spawn(&self.binary, self.data_dir.path(), RESTART_TIMEOUT)?;
        let took = started.elapsed();
        self.child = child;
        self.log_tail = log_tail;
        self.addr = addr;
        Ok((took, self.peak_rss_bytes()))
    }

    /// The daemon's last log lines.
    pub fn log_tail(&self) -> String {
        let tail = self
            .log_tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Vec::from(tail.clone()).join("\n")
    }

    /// Peak resident memory of the daemon so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Bytes of every file under the data directory.
    pub fn data_bytes(&self) -> u64 {
        directory_bytes(self.data_dir.path())
    }

    /// SIGTERM, then wait for the graceful exit (answers in flight, final checkpoint).
    pub fn stop(mut self) -> Result<ExitStatus, String> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<ExitStatus, String> {
        // Already gone (killed, crashed, or a failed restart reaped it): say how it ended.
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| "pid out of range")?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "cannot signal settled: {}",
                std::io::Error::last_os_error()
            ));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(error) => return Err(format!("waiting for settled: {error}")),
            }
        }
        Err(format!(
            "settled did not exit within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
            self.log_tail()
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Never leave a daemon behind, whatever went wrong.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type LogTail = Arc<Mutex<VecDeque<String>>>;

/// Start `binary` on `data_dir` and wait until it listens.
fn spawn(
    binary: &Path,
    data_dir: &Path,
    timeout: Duration,
) -> Result<(Child, LogTail, SocketAddr), String> {
    let mut child = Command::new(binary)
        .arg("--listen=127.0.0.1:0")
        .arg(format!("--data-dir={}", data_dir.display()))
        // Metrics on, as operators run it, on a free loopback port.
        .arg("--metrics-listen=127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("SETTLED_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let log_tail: LogTail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES_KEPT)));
    let (listening, announced) = mpsc::channel();
    let tail = Arc::clone(&log_tail);
    std::thread::spawn(move || {
        let mut listening = Some(listening);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some((_, after)) = line.split_once("listening on ") {
                let addr = after.split_whitespace().next().unwrap_or_default();
                if let Some(sender) = listening.take() {
                    let _ = sender.send(addr.to_string());
                }
            }
            let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if tail.len() == LOG_LINES_KEPT {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
    let addr = match announced.recv_timeout(timeout) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let tail = log_tail
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            return Err(format!(
                "settled did not log `listening on` within {timeout:?}; its log:\n{}",
                Vec::from(tail.clone()).join("\n")
            ));
        }
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("settled logged an unreadable address: {addr}"))?;
    Ok((child, log_tail, addr))
}

fn sibling_settled() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find myself: {error}"))?;
    let path = exe.with_file_name("settled");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no settled binary at {}: build it (cargo build --release -p settled-engine), or \
             pass --settled PATH, or load a running daemon with --addr",
            path.display()
        ))
    }
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
