//! One `settled` process on the run's data directory: started with the log lines the
//! kills aim at, watched through its log, killed with SIGKILL (the process itself is
//! [`settled_bench::daemon::Daemon`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use settled_bench::daemon::Daemon;
use settled_bench::daemon::{self, Log};

/// How long a start (recovery included) may take on the small data directories of a run.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop (a final checkpoint of a small directory) may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Log lines kept to explain a failure.
const LOG_LINES_KEPT: usize = 60;

/// Info, plus the debug lines that mark a checkpoint's start and end and a new WAL
/// segment: the moments the kills aim at.
const LOG_FILTER: &str = "info,settled_engine::core::checkpointer=debug,settled_wal::writer=debug";
/// What those lines say.
pub const CHECKPOINT_STARTED: &str = "checkpoint started";
pub const SEGMENT_CREATED: &str = "WAL segment created";

/// Start `binary` with `config` (which names the data directory), every log line handed
/// over for the kills to aim at. Returns at once: see [`Daemon::wait_listening`].
pub fn spawn(binary: &Path, config: &Path) -> Result<Daemon, String> {
    let mut command = daemon::command(binary);
    command
        .arg(format!("--config={}", config.display()))
        .env("RUST_LOG", LOG_FILTER)
        .env("NO_COLOR", "1");
    Daemon::spawn(command, Log::EveryLine, LOG_LINES_KEPT)
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

/// `settled` beside this executable.
pub fn sibling_settled() -> Result<PathBuf, String> {
    daemon::sibling_settled("pass --settled PATH")
}
