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
        Daemon::spawn_command(&mut command(args, env))
    }

    /// Run `command` (which execs `settled` in the end), its stderr collected.
    pub fn spawn_command(command: &mut Command) -> Daemon {
        let mut child = command
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

    /// Wait for a daemon that exits on its own (a refused start); stderr is collected.
    pub fn wait_exit_status(&mut self) -> ExitStatus {
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

/// A daemon on `dir/data` with a config file holding `settings` (TOML lines) and the
/// metrics endpoint on `metrics` (or off), listening on a free port.
pub fn spawn_with_settings(
    dir: &std::path::Path,
    metrics: Option<SocketAddr>,
    settings: &str,
) -> (Daemon, SocketAddr) {
    let config = dir.join("settled.toml");
    let metrics = metrics.map_or(String::new(), |addr| addr.to_string());
    let text = format!(
        "data_dir = {:?}\nmetrics_listen = \"{metrics}\"\n{settings}",
        dir.join("data")
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::spawn(
        &["--listen", "127.0.0.1:0"],
        &[("SETTLED_CONFIG", config.to_str().unwrap())],
    );
    let addr = daemon.wait_listening();
    (daemon, addr)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// `GET path` on `addr` over HTTP/1.1: the status line and the body (chunks joined).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_string();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// A test that needs a part of the system it cannot have here (a package, the right to
/// mount) says so and passes, unless `SETTLED_REQUIRE_SYSTEM_TESTS=1` (CI), where the
/// missing part is a failure.
pub fn skip_without(message: &str) {
    assert!(
        std::env::var("SETTLED_REQUIRE_SYSTEM_TESTS").as_deref() != Ok("1"),
        "{message}"
    );
    eprintln!("SKIPPED: {message}");
}
