//! The `settled` binary as a child process: started with given flags and environment,
//! its stderr collected, stopped with a signal.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: the daemon recovers a small data dir in well under a second.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

const SETTLED_VARIABLES: [&str; 4] = [
    "SETTLED_CONFIG",
    "SETTLED_LISTEN",
    "SETTLED_DATA_DIR",
    "SETTLED_METRICS_LISTEN",
];

pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub stderr: Vec<String>,
}

/// `settled ARGS` with only the `SETTLED_*` variables given in `env`.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_settled"));
    command.args(args).env("RUST_LOG", "info");
    for variable in SETTLED_VARIABLES {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    command
}

impl Daemon {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = command(args, env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn settled");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Daemon {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Wait for the `listening on IP:PORT` line and return that address.
    pub fn wait_listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `listening on` line; stderr: {:?}", self.stderr));
            self.stderr.push(line.clone());
            if let Some((_, after)) = line.split_once("listening on ") {
                let addr = after.split_whitespace().next().expect("an address");
                return addr.parse().expect("a socket address");
            }
        }
    }

    /// Every stderr line so far (reads what has arrived without waiting).
    pub fn log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.stderr.push(line);
        }
        &self.stderr
    }

    /// Send `signal` (e.g. "TERM", "INT") and wait for the exit; stderr is collected.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
        let status = self.wait_exit();
        self.stderr.extend(self.lines.iter());
        status
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("settled did not exit; stderr: {:?}", self.stderr);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test must not leave a daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
