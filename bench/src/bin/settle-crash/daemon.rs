//! One `settled` process on the run's data directory: started, watched through its log,
//! killed with SIGKILL.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a start (recovery included) may take on the small data directories of a run.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines kept to explain a failure.
const LOG_LINES_KEPT: usize = 60;

/// Info, plus the debug lines that mark a checkpoint's start and end and a new WAL
/// segment: the moments the kills aim at.
const LOG_FILTER: &str = "info,settled_engine::core::checkpointer=debug,settled_wal::writer=debug";
/// What those lines say.
pub const CHECKPOINT_STARTED: &str = "checkpoint started";
pub const SEGMENT_CREATED: &str = "WAL segment created";

pub struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    tail: VecDeque<String>,
}

impl Daemon {
    /// Start `binary` with `config` (which names the data directory), listening on a free
    /// loopback port. Returns at once: see [`Daemon::wait_listening`].
    pub fn spawn(binary: &Path, config: &Path) -> Result<Daemon, String> {
        let mut child = Command::new(binary)
            .arg(format!("--config={}", config.display()))
            .arg("--listen=127.0.0.1:0")
            .env("RUST_LOG", LOG_FILTER)
            .env("NO_COLOR", "1")
            .env_remove("SETTLED_CONFIG")
            .env_remove("SETTLED_LISTEN")
            .env_remove("SETTLED_DATA_DIR")
            .env_remove("SETTLED_METRICS_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        // Drains the log for the life of the process: a daemon blocked on a full pipe
        // would stop at a moment of our making, not of the kill's.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Daemon {
            child,
            lines,
            tail: VecDeque::with_capacity(LOG_LINES_KEPT),
        })
    }

    /// Wait for `listening on IP:PORT`; an exit or a timeout first is an error with the log.
    pub fn wait_listening(&mut self) -> Result<SocketAddr, String> {
        let line = self
            .wait_line("listening on ", START_TIMEOUT)
            .ok_or_else(|| self.failure("did not log `listening on`"))?;
        let (_, after) = line.split_once("listening on ").expect("matched");
        let addr = after.split_whitespace().next().unwrap_or_default();
        addr.parse()
            .map_err(|_| self.failure(&format!("logged an unreadable address {addr:?}")))
    }

    /// The next log line containing `needle` within `timeout`; `None` on timeout or exit.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            self.keep(&line);
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    /// Read what the daemon logged so far without waiting; true if a line contains `needle`.
    pub fn drain_log(&mut self, needle: &str) -> bool {
        let mut seen = false;
        while let Ok(line) = self.lines.try_recv() {
            seen |= line.contains(needle);
            self.keep(&line);
        }
        seen
    }

    /// SIGKILL and reap. A daemon that already exited is an error: nothing here stops it.
    pub fn kill(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(self.failure(&format!("exited on its own with {status}")));
        }
        // std's kill is SIGKILL on Unix.
        self.child
            .kill()
            .map_err(|error| format!("cannot kill settled: {error}"))?;
        self.child
            .wait()
            .map_err(|error| format!("waiting for settled: {error}"))?;
        Ok(())
    }

    /// SIGTERM and wait for the exit: a graceful stop must succeed.
    pub fn stop(&mut self) -> Result<(), String> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| "pid out of range")?;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "cannot signal settled: {}",
                std::io::Error::last_os_error()
            ));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    self.drain_log("");
                    return Err(self.failure(&format!("exited with {status} on SIGTERM")));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(error) => return Err(format!("waiting for settled: {error}")),
            }
        }
        Err(self.failure("did not exit within a minute of SIGTERM"))
    }

    /// `what` with the daemon's last log lines.
    pub fn failure(&mut self, what: &str) -> String {
        self.drain_log("");
        let tail = Vec::from(self.tail.clone()).join("\n");
        format!("settled {what}; its last log lines:\n{tail}")
    }

    fn keep(&mut self, line: &str) {
        if self.tail.len() == LOG_LINES_KEPT {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Never leave a daemon behind, whatever went wrong.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config of a run: small WAL segments and frequent checkpoints, so that kills land
/// in segment rotations, checkpoints and WAL truncations; no transfer kept in memory past
/// its checkpoint, so lookups read old transfers back from RocksDB; no metrics endpoint.
pub fn write_config(dir: &Path) -> Result<PathBuf, String> {
    let data_dir = dir.join("data");
    let text = format!(
        "data_dir = {data_dir:?}\n\
         metrics_listen = \"\"\n\
         batch_events_max = 8189\n\
         wal_segment_bytes = 9437184\n\
         checkpoint_batches = 8\n\
         checkpoint_events = 4096\n\
         checkpoint_interval_seconds = 1\n\
         transfers_resident_max = 0\n\
         transfers_uncheckpointed_max = 16384\n"
    );
    let path = dir.join("settled.toml");
    std::fs::write(&path, text)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    Ok(path)
}

/// `settled` beside this executable (both are built into the same target directory).
pub fn sibling_settled() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find myself: {error}"))?;
    let path = exe.with_file_name("settled");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no settled binary at {}: build it (cargo build --release -p settled-engine \
             --bin settled) or pass --settled PATH",
            path.display()
        ))
    }
}
