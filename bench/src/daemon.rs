//! A `settled` child process for the measurement tools (`settle-bench`, `settle-crash`):
//! started on a free loopback port, its log drained for the life of the process (the last
//! lines kept to explain a failure), stopped with SIGTERM or killed with SIGKILL, and
//! never left behind.
//!
//! What a tool starts it on (data directory, config, log filter) and how long it lets it
//! take stays in the tool.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The variables `settled` reads its settings from: removed, so that a tool's run depends
/// only on the flags and config it passes, not on the shell it was started from.
const SETTLED_VARIABLES: [&str; 4] = [
    "SETTLED_CONFIG",
    "SETTLED_LISTEN",
    "SETTLED_DATA_DIR",
    "SETTLED_METRICS_LISTEN",
];

/// What the daemon logs once its protocol port is bound, before `IP:PORT`.
const LISTENING_ON: &str = "listening on ";

/// How often a stop looks whether the daemon has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Peak resident memory (VmHWM) of the process `/proc/<process>` names ("self" or a pid),
/// in bytes; `None` where /proc does not say.
pub fn peak_rss_bytes(process: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `settled` beside this executable (both are built into the same target directory);
/// `otherwise` ends the error that says how else to get one.
pub fn sibling_settled(otherwise: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| format!("cannot find myself: {error}"))?;
    let path = exe.with_file_name("settled");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no settled binary at {}: build it (cargo build --release -p settled-engine \
             --bin settled), or {otherwise}",
            path.display()
        ))
    }
}

/// `binary` listening on a free loopback port, with none of the `SETTLED_*` variables:
/// the caller adds the rest of its flags and environment, then [`Daemon::spawn`]s it.
pub fn command(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command.arg("--listen=127.0.0.1:0");
    for variable in SETTLED_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// Whether the caller reads the daemon's log line by line ([`Daemon::wait_line`],
/// [`Daemon::drain_log`]) or only needs its last lines for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// Only the last lines are kept.
    Tail,
    /// Every line is handed over too, in order, until the caller reads it.
    EveryLine,
}

type LogTail = Arc<Mutex<VecDeque<String>>>;

pub struct Daemon {
    child: Child,
    /// The address from the first `listening on` line, once logged.
    listening: mpsc::Receiver<String>,
    /// Every log line, with [`Log::EveryLine`]; never sends otherwise.
    lines: mpsc::Receiver<String>,
    /// The last lines of the log, kept by the thread that drains stderr (which must never
    /// stop reading: a daemon blocked on a full pipe would stop at a moment of nobody's
    /// choosing).
    tail: LogTail,
}

impl Daemon {
    /// Start `command` (from [`command`]) with its stderr drained, keeping the last
    /// `log_lines_kept` lines. Returns at once: see [`Daemon::wait_listening`].
    pub fn spawn(mut command: Command, log: Log, log_lines_kept: usize) -> Result<Daemon, String> {
        assert!(
            log_lines_kept > 0,
            "keep at least the line that explains a failure"
        );
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                let binary = Path::new(command.get_program());
                format!("cannot start {}: {error}", binary.display())
            })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let tail: LogTail = Arc::new(Mutex::new(VecDeque::with_capacity(log_lines_kept)));
        let (listening_sender, listening) = mpsc::channel();
        let (line_sender, lines) = mpsc::channel();
        let line_sender = (log == Log::EveryLine).then_some(line_sender);
        let reader_tail = Arc::clone(&tail);
        std::thread::spawn(move || {
            read_log(
                stderr,
                listening_sender,
                line_sender,
                &reader_tail,
                log_lines_kept,
            );
        });
        Ok(Daemon {
            child,
            listening,
            lines,
            tail,
        })
    }

    /// The process id, while the daemon runs.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Wait for `listening on IP:PORT`; an exit or `timeout` first is an error with the log.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr, String> {
        let addr = match self.listening.recv_timeout(timeout) {
            Ok(addr) => addr,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(self.failure(&format!("did not log `listening on` within {timeout:?}")))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(self.failure("exited before it logged `listening on`"))
            }
        };
        addr.parse()
            .map_err(|_| self.failure(&format!("logged an unreadable address {addr:?}")))
    }

    /// The next log line containing `needle` within `timeout`; `None` on timeout or exit.
    /// Needs [`Log::EveryLine`].
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    /// Read what the daemon logged so far without waiting; true if a line contains
    /// `needle`. Needs [`Log::EveryLine`].
    pub fn drain_log(&mut self, needle: &str) -> bool {
        let mut seen = false;
        while let Ok(line) = self.lines.try_recv() {
            seen |= line.contains(needle);
        }
        seen
    }

    /// The daemon's last log lines.
    pub fn log_tail(&self) -> String {
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Vec::from(tail.clone()).join("\n")
    }

    /// `settled {what}`, with the daemon's last log lines.
    pub fn failure(&self, what: &str) -> String {
        format!("settled {what}; its last log lines:\n{}", self.log_tail())
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

    /// SIGTERM, then wait up to `timeout` for the graceful exit (answers in flight, final
    /// checkpoint): how it exited. A daemon already gone says how it ended.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| "pid out of range")?;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped (try_wait above).
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "cannot signal settled: {}",
                std::io::Error::last_os_error()
            ));
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => std::thread::sleep(EXIT_POLL_INTERVAL),
                Err(error) => return Err(format!("waiting for settled: {error}")),
            }
        }
        Err(self.failure(&format!("did not exit within {timeout:?} of SIGTERM")))
    }

    /// [`Daemon::terminate`], where anything but a clean exit is an error with the log.
    pub fn stop(&mut self, timeout: Duration) -> Result<(), String> {
        let status = self.terminate(timeout)?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(&format!("exited with {status} on SIGTERM")))
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Never leave a daemon behind, whatever went wrong.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reader thread: every line into the tail (and to `lines`, when given), the first
/// `listening on` address to `listening`; until the daemon closes its stderr.
fn read_log(
    stderr: ChildStderr,
    listening: mpsc::Sender<String>,
    mut lines: Option<mpsc::Sender<String>>,
    tail: &Mutex<VecDeque<String>>,
    log_lines_kept: usize,
) {
    let mut listening = Some(listening);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { return };
        // Into the tail first: an error about this line shows it.
        {
            let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if tail.len() == log_lines_kept {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        if let Some((_, after)) = line.split_once(LISTENING_ON) {
            if let Some(sender) = listening.take() {
                let addr = after.split_whitespace().next().unwrap_or_default();
                let _ = sender.send(addr.to_string());
            }
        }
        // A caller that dropped its daemon reads no more; the tail is still kept.
        if let Some(sender) = &lines {
            if sender.send(line).is_err() {
                lines = None;
            }
        }
    }
}
