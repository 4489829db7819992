//! `Config`: every option of the `settled` daemon, where it comes from and its limits.
//!
//! Precedence, highest first: command-line flags, `SETTLED_*` environment variables,
//! the TOML file (`--config FILE` or `SETTLED_CONFIG`), then the defaults below. Flags and
//! environment variables exist for the options an operator changes per machine (`listen`,
//! `data_dir`, `metrics_listen`); every other option lives in the file. clap resolves
//! flag-over-environment ([`Flags`]); [`Config::load`] puts the result over the file.
//!
//! An invalid configuration stops the daemon at start with one line that names the key,
//! e.g. `listen = "abc": invalid socket address`. Nothing is guessed or clamped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::{ledgers_default, ledgers_validate, LedgerAsset};
use serde::{Deserialize, Serialize};

use crate::core::{EngineConfig, EngineError, WhenFull};
use crate::server::auth::{parse_sha256_hex, ClientAuth};

/// The smallest block cache accepted: below it the pinned index and filter blocks of a
/// few files would fill it.
const STORE_CACHE_BYTES_MIN: usize = 8 << 20;

/// `settled [--config FILE] [--listen IP:PORT] [--data-dir DIR] [--metrics-listen IP:PORT]`
#[derive(Clone, Debug, Default, clap::Parser)]
#[command(
    name = "settled",
    version,
    about = "settled: a double-entry settlement engine daemon",
    long_about = "settled: a double-entry settlement engine daemon.\n\n\
        Serves the settled TCP protocol (docs/PROTOCOL.md), makes every acknowledged \
        request durable in a write-ahead log before replying, and checkpoints to RocksDB.\n\n\
        Settings come from, highest precedence first: these flags, their SETTLED_* \
        environment variables, the TOML file, then built-in defaults \
        (config/settled.toml documents every option). SIGINT or SIGTERM shut down \
        gracefully: in-flight requests are answered, then a final checkpoint is written."
)]
pub struct Flags {
    /// TOML configuration file. Without one, every option not given by a flag or
    /// environment variable takes its default.
    #[arg(long, value_name = "FILE", env = "SETTLED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve the settled protocol on [default: 127.0.0.1:3000].
    #[arg(long, value_name = "IP:PORT", env = "SETTLED_LISTEN")]
    pub listen: Option<String>,
    /// Directory of the write-ahead log (wal/) and the checkpoints (store/)
    /// [default: ./data].
    #[arg(long, value_name = "DIR", env = "SETTLED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Prometheus endpoint (GET /metrics); an empty string turns it off
    /// [default: 127.0.0.1:9100].
    #[arg(long, value_name = "IP:PORT", env = "SETTLED_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Start even if the WAL does not go on from the last checkpoint (its directory was
    /// lost, emptied, or replaced by an older copy): the acknowledged requests it held are
    /// lost. Without this flag such a start is refused.
    #[arg(long)]
    pub accept_wal_loss: bool,
    /// Instead of serving, run a tool on a data directory.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tools that run instead of the daemon.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Check a data directory offline (stop the daemon first): recompute every account's
    /// balances from every checkpointed transfer and compare, and check that debits equal
    /// credits on every ledger. Streams the transfers; memory grows with the number of
    /// accounts, not with history. Exit status 0 when everything adds up, 1 naming the
    /// first row that does not. The WAL after the last checkpoint is not read here: the
    /// daemon checks it by replay when it starts.
    Verify {
        /// The data directory (the one holding store/ and wal/).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
    },
    /// Make a client token: 32 random bytes from the operating system, as 64 hex
    /// characters. Prints the token (give it to the client, e.g. as SETTLE_TOKEN) and the
    /// `[[clients]]` entry for the daemon's config, which holds only its SHA-256.
    Token {
        /// The client's name in the config entry (and in the daemon's logs).
        #[arg(long, default_value = "client")]
        name: String,
        /// Mark the entry read-only: its creates are answered `forbidden`.
        #[arg(long)]
        read_only: bool,
    },
}

/// Every option of the daemon. Field names are the TOML keys; `config/settled.toml`
/// documents each one with its default.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the protocol listener, `IP:PORT` (port 0: any free port).
    pub listen: String,
    /// Holds `wal/` and `store/`.
    pub data_dir: PathBuf,
    /// Address of the Prometheus endpoint, `IP:PORT`; empty disables it.
    pub metrics_listen: String,
    /// Open client connections at most; one more is answered `busy` and closed.
    pub connections_max: u32,
    /// Requests one connection may have awaiting their reply; one more is answered
    /// `too_many_in_flight`.
    pub requests_in_flight_per_connection_max: u32,
    /// Requests waiting for the core thread at most, across all connections; when full,
    /// connections stop reading and wait for room in arrival order (backpressure).
    pub queue_requests_max: u32,
    /// Range reads (get_account_transfers, get_account_balances, query_transfers) waiting
    /// for the query thread's scan of checkpointed history at most; one more is answered
    /// `busy` at once, so that writes never wait behind queries.
    pub queue_queries_max: u32,
    /// How long a request waits (its connection reading nothing more) for room in a full
    /// queue before it is answered `busy`, in milliseconds.
    pub queue_full_wait_ms_max: u64,
    /// Bytes of replies one connection may have waiting to be written; past it the
    /// connection is not read until its client reads. At least one largest reply.
    pub reply_bytes_per_connection_max: u32,
    /// A write to a client that makes no progress this long closes its connection.
    pub write_timeout_seconds: u64,
    /// How long a new connection has to send its handshake.
    pub handshake_timeout_seconds: u64,
    /// A connection with nothing in flight that sends nothing this long is closed;
    /// 0 keeps idle connections open.
    pub idle_timeout_seconds: u64,
    /// Events the core applies in one batch (one WAL record) at most.
    pub batch_events_max: u32,
    /// Checkpoint to RocksDB after this many batches...
    pub checkpoint_batches: u32,
    /// ...or after this many events...
    pub checkpoint_events: u64,
    /// ...or after this many seconds with at least one batch, whichever comes first.
    pub checkpoint_interval_seconds: u64,
    /// Transfers kept in memory once a checkpoint holds them (the newest this many, plus
    /// pending ones); older ones are read back from RocksDB when a request names them.
    pub transfers_resident_max: u64,
    /// Transfers no checkpoint holds yet, at most; beyond it the core holds requests
    /// until the checkpointer catches up.
    pub transfers_uncheckpointed_max: u64,
    /// RocksDB's block cache, in bytes: data blocks read back, and the index and filter
    /// blocks of every file (which grow with history).
    pub store_cache_bytes: u64,
    /// Free bytes the data directory's filesystems must keep; below it writes are refused
    /// until there is room again (0: no guard).
    pub disk_free_min_bytes: u64,
    /// `--accept-wal-loss`: a flag only, never in the file.
    #[serde(skip)]
    pub accept_wal_loss: bool,
    /// Largest WAL segment file, in bytes.
    pub wal_segment_bytes: u64,
    /// Bytes the WAL buffers while the previous group is written and synced.
    pub wal_pending_bytes_max: u64,
    /// When the WAL syncs to disk. Only "always" is supported: no reply leaves before its
    /// request is on disk.
    pub fsync: String,
    /// How long a shutdown waits for connections to answer their in-flight requests.
    pub shutdown_timeout_seconds: u64,
    /// PEM certificate chain (leaf first) of the protocol listener; empty: no TLS. Set
    /// together with `tls_key_file`.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`'s certificate; empty: no TLS.
    pub tls_key_file: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of
    /// them. Needs TLS. Empty: no client certificates asked for.
    pub tls_client_ca_file: PathBuf,
    /// Clients that may connect, each by a token; empty: no token needed.
    pub clients: Vec<ClientEntry>,
    /// Ledger ids and the asset each one holds (the `settle` CLI reads the same table).
    pub ledgers: Vec<LedgerAsset>,
}

/// Default `reply_bytes_per_connection_max`: four largest replies.
const REPLY_BYTES_PER_CONNECTION_DEFAULT: u32 = 4 * REPLY_BYTES_MAX;

/// The largest answer one request can get: a full frame.
const REPLY_BYTES_MAX: u32 = protocol::frame::BODY_BYTES_MAX + protocol::frame::HEADER_BYTES as u32;

/// One `[[clients]]` entry: a client that may connect, known by the SHA-256 of its token
/// (`settled token` makes a token and prints the entry).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// For logs and people; unique.
    pub name: String,
    /// SHA-256 of the token as sent in the handshake, 64 hex digits.
    pub token_sha256: String,
    /// May read but not create: creates are answered `forbidden`.
    #[serde(default)]
    pub read_only: bool,
}

/// Keys that an earlier version read, with the key that replaced them: a file that still
/// uses one is refused with a message naming the new key.
const KEYS_RENAMED: [(&str, &str); 1] =
    [("transfers_unsettled_max", "transfers_uncheckpointed_max")];

/// Why the configuration was refused. Display is one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{path} line {line}: {key}{message}")]
    Parse {
        path: String,
        line: usize,
        /// `key: ` when the key could be found, else empty.
        key: String,
        message: String,
    },
    #[error("{path}: `{old}` was renamed to `{new}` (same meaning): use the new name")]
    Renamed {
        path: String,
        old: &'static str,
        new: &'static str,
    },
    #[error("{key} = {value}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

/// Defaults: the engine's own ([`EngineConfig::new`], which takes the WAL's from
/// `WalConfig::default`) for everything the engine reads, so that each default is written
/// once; the daemon's for the rest. `config/settled.toml` repeats them all for readers,
/// and a test holds it to these.
impl Default for Config {
    fn default() -> Config {
        let engine = EngineConfig::new("./data");
        Config {
            listen: "127.0.0.1:3000".into(),
            data_dir: engine.data_dir,
            metrics_listen: "127.0.0.1:9100".into(),
            connections_max: 10_000,
            requests_in_flight_per_connection_max: 64,
            queue_requests_max: engine.queue_requests_max,
            queue_queries_max: engine.queue_queries_max,
            queue_full_wait_ms_max: 5000,
            reply_bytes_per_connection_max: REPLY_BYTES_PER_CONNECTION_DEFAULT,
            write_timeout_seconds: 30,
            handshake_timeout_seconds: 10,
            idle_timeout_seconds: 0,
            batch_events_max: engine.batch_events_max,
            checkpoint_batches: engine.checkpoint_batches,
            checkpoint_events: engine.checkpoint_events,
            checkpoint_interval_seconds: engine.checkpoint_interval.as_secs(),
            transfers_resident_max: engine.transfers_resident_max,
            transfers_uncheckpointed_max: engine.transfers_uncheckpointed_max,
            store_cache_bytes: engine.store.block_cache_bytes as u64,
            accept_wal_loss: false,
            disk_free_min_bytes: engine.disk_free_min_bytes,
            wal_segment_bytes: engine.wal.segment_bytes,
            wal_pending_bytes_max: engine.wal.pending_bytes_max,
            fsync: "always".into(),
            shutdown_timeout_seconds: 10,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            tls_client_ca_file: PathBuf::new(),
            clients: Vec::new(),
            ledgers: ledgers_default(),
        }
    }
}

impl Config {
    /// The file named by `flags.config` (defaults when none), with the flags (already
    /// merged with their environment variables by clap) on top, validated.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let mut config = match &flags.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(flags);
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Parse TOML `text`; `path` only names it in errors. Not validated.
    pub fn from_toml(text: &str, path: &str) -> Result<Config, ConfigError> {
        if let Ok(table) = text.parse::<toml::Table>() {
            if let Some((old, new)) = KEYS_RENAMED
                .into_iter()
                .find(|(old, _)| table.contains_key(*old))
            {
                let path = path.to_string();
                return Err(ConfigError::Renamed { path, old, new });
            }
        }
        toml::from_str(text).map_err(|error| parse_error(text, path, &error))
    }

    /// Put the options given as flags or environment variables over the file's.
    pub fn apply(&mut self, flags: &Flags) {
        if let Some(listen) = &flags.listen {
            self.listen.clone_from(listen);
        }
        if let Some(data_dir) = &flags.data_dir {
            self.data_dir.clone_from(data_dir);
        }
        if let Some(metrics_listen) = &flags.metrics_listen {
            self.metrics_listen.clone_from(metrics_listen);
        }
        self.accept_wal_loss = flags.accept_wal_loss;
    }

    /// Every check that does not need the network; the engine's own limits (WAL sizes
    /// against the batch size) included, so they are reported with our keys. The TLS files
    /// are read and parsed here, so a missing or bad one stops the start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.metrics_addr()?;
        let counts = [
            ("connections_max", self.connections_max),
            (
                "requests_in_flight_per_connection_max",
                self.requests_in_flight_per_connection_max,
            ),
            ("queue_requests_max", self.queue_requests_max),
            ("queue_queries_max", self.queue_queries_max),
            ("checkpoint_batches", self.checkpoint_batches),
        ];
        for (key, value) in counts {
            if value == 0 {
                return Err(invalid(key, value, "must be at least 1"));
            }
        }
        // tokio's semaphore holds at most usize::MAX >> 3 permits; far above any real
        // fd limit, so only absurd values are refused.
        if u64::from(self.connections_max) > (usize::MAX >> 3) as u64 {
            return Err(invalid(
                "connections_max",
                self.connections_max,
                "too large",
            ));
        }
        for (key, value) in [
            (
                "checkpoint_interval_seconds",
                self.checkpoint_interval_seconds,
            ),
            ("shutdown_timeout_seconds", self.shutdown_timeout_seconds),
            ("write_timeout_seconds", self.write_timeout_seconds),
            ("handshake_timeout_seconds", self.handshake_timeout_seconds),
        ] {
            if value == 0 {
                return Err(invalid(key, value, "must be at least 1"));
            }
        }
        if self.reply_bytes_per_connection_max < REPLY_BYTES_MAX {
            return Err(invalid(
                "reply_bytes_per_connection_max",
                self.reply_bytes_per_connection_max,
                &format!("must hold the largest reply, {REPLY_BYTES_MAX} bytes"),
            ));
        }
        if self.fsync != "always" {
            return Err(invalid(
                "fsync",
                format!("{:?}", self.fsync),
                "only \"always\" is supported: every reply waits until its request is on disk",
            ));
        }
        ledgers_validate(&self.ledgers).map_err(|error| ConfigError::Invalid {
            key: format!("ledgers[{}].{}", error.index, error.field),
            value: error.value,
            reason: error.reason.to_string(),
        })?;
        self.tls_config()?;
        self.client_auth()?;
        self.engine_config().map(|_| ())
    }

    /// The listener's TLS configuration, read from the PEM files now; `None` when
    /// `tls_cert_file` and `tls_key_file` are both empty (plain TCP).
    pub fn tls_config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
        let set = |path: &Path| !path.as_os_str().is_empty();
        let (cert, key, client_ca) = (
            &self.tls_cert_file,
            &self.tls_key_file,
            &self.tls_client_ca_file,
        );
        match (set(cert), set(key)) {
            (false, false) => {
                if set(client_ca) {
                    return Err(invalid(
                        "tls_client_ca_file",
                        format!("{:?}", client_ca.display().to_string()),
                        "needs tls_cert_file and tls_key_file: client certificates are \
                         checked inside TLS",
                    ));
                }
                Ok(None)
            }
            (true, false) => Err(invalid(
                "tls_key_file",
                "\"\"",
                "required when tls_cert_file is set (the private key of its certificate)",
            )),
            (false, true) => Err(invalid(
                "tls_cert_file",
                "\"\"",
                "required when tls_key_file is set (the certificate chain of that key)",
            )),
            (true, true) => {
                let client_ca = set(client_ca).then_some(client_ca.as_path());
                crate::server::tls::server_config(cert, key, client_ca).map(Some)
            }
        }
    }

    /// The `[[clients]]` as the server checks tokens against them: each name non-empty
    /// and unique, each hash 64 hex digits and unique.
    pub fn client_auth(&self) -> Result<ClientAuth, ConfigError> {
        let mut clients: Vec<(String, [u8; 32], bool)> = Vec::with_capacity(self.clients.len());
        for (index, entry) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("clients[{index}].{field}");
            let name = format!("{:?}", entry.name);
            if entry.name.trim().is_empty() {
                return Err(invalid(&key("name"), name, "must not be empty"));
            }
            if let Some(other) = clients.iter().position(|(n, _, _)| *n == entry.name) {
                let reason = format!("duplicate: clients[{other}] has the same name");
                return Err(invalid(&key("name"), name, &reason));
            }
            // The hash is not secret, but a line of the file is no place to echo 64
            // characters of it back either: its length and first digits say enough.
            let shown = format!(
                "{:?}",
                entry.token_sha256.chars().take(8).collect::<String>()
            ) + if entry.token_sha256.chars().count() > 8 {
                "..."
            } else {
                ""
            };
            let Some(hash) = parse_sha256_hex(&entry.token_sha256) else {
                return Err(invalid(
                    &key("token_sha256"),
                    shown,
                    &format!(
                        "must be 64 hex digits, the SHA-256 of the token ({} characters given; \
                         `settled token` prints a token and its hash)",
                        entry.token_sha256.chars().count()
                    ),
                ));
            };
            if let Some(other) = clients.iter().position(|(_, h, _)| *h == hash) {
                let reason = format!(
                    "duplicate: clients[{other}] has the same token, so a connection could \
                     not tell the two apart"
                );
                return Err(invalid(&key("token_sha256"), shown, &reason));
            }
            clients.push((entry.name.clone(), hash, entry.read_only));
        }
        Ok(ClientAuth::new(clients))
    }

    /// The protocol listener's address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("listen", &self.listen)
    }

    /// The metrics endpoint's address, `None` when disabled (empty string).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        parse_addr("metrics_listen", &self.metrics_listen).map(Some)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }

    /// The engine's configuration. Submissions never block (`WhenFull::Busy`): they come
    /// from tokio worker threads, which must stay free to run other connections. The
    /// engine names what it refuses by our keys.
    pub fn engine_config(&self) -> Result<EngineConfig, ConfigError> {
        let mut engine = EngineConfig::new(&self.data_dir);
        engine.queue_requests_max = self.queue_requests_max;
        engine.queue_queries_max = self.queue_queries_max;
        engine.when_full = WhenFull::Busy;
        engine.batch_events_max = self.batch_events_max;
        engine.checkpoint_batches = self.checkpoint_batches;
        engine.checkpoint_events = self.checkpoint_events;
        engine.checkpoint_interval = Duration::from_secs(self.checkpoint_interval_seconds);
        engine.transfers_resident_max = self.transfers_resident_max;
        engine.transfers_uncheckpointed_max = self.transfers_uncheckpointed_max;
        engine.accept_wal_loss = self.accept_wal_loss;
        engine.disk_free_min_bytes = self.disk_free_min_bytes;
        engine.store.block_cache_bytes = usize::try_from(self.store_cache_bytes)
            .map_err(|_| invalid("store_cache_bytes", self.store_cache_bytes, "too large"))?;
        if engine.store.block_cache_bytes < STORE_CACHE_BYTES_MIN {
            return Err(invalid(
                "store_cache_bytes",
                self.store_cache_bytes,
                &format!("below the minimum {STORE_CACHE_BYTES_MIN}"),
            ));
        }
        engine.wal.segment_bytes = self.wal_segment_bytes;
        engine.wal.pending_bytes_max = self.wal_pending_bytes_max;
        engine
            .fit_wal_records_to_batch()
            .and_then(|()| engine.validate())
            .map_err(|error| match error {
                EngineError::ConfigInvalid { key, value, reason } => ConfigError::Invalid {
                    key: key.to_string(),
                    value,
                    reason,
                },
                other => invalid("data_dir", self.data_dir.display(), &other.to_string()),
            })?;
        Ok(engine)
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?}"),
            "invalid socket address (expected IP:PORT, e.g. 127.0.0.1:3000)",
        )
    })
}

/// One line from a TOML error: toml's own message names unknown keys and types, and the
/// key path is recovered from where the error points.
fn parse_error(text: &str, path: &str, error: &toml::de::Error) -> ConfigError {
    let mut offset = error.span().map_or(0, |span| span.start).min(text.len());
    // Slicing below needs a char boundary; a span should be one, but never panic on it.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let line = text[..offset].matches('\n').count() + 1;
    let key = key_at(text, offset).map_or(String::new(), |key| format!("{key}: "));
    ConfigError::Parse {
        path: path.to_string(),
        line,
        key,
        message: error.message().replace('\n', " "),
    }
}

/// The dotted key path (`ledgers[1].scale`) of the `key = value` line holding `offset`,
/// if that line is one. Good enough for the flat file settled reads: top-level keys and
/// `[[ledgers]]` tables.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |at| at + 1);
    let line_end = text[offset..]
        .find('\n')
        .map_or(text.len(), |at| offset + at);
    let (key, _) = text[line_start..line_end].split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    Some(match table_at(&text[..line_start]) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// The table header in force at the end of `before`: `name[i]` for the i-th `[[name]]`,
/// `name` for `[name]`.
fn table_at(before: &str) -> Option<String> {
    let headers: Vec<&str> = before
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('['))
        .collect();
    let last = *headers.last()?;
    if let Some(name) = last
        .strip_prefix("[[")
        .and_then(|rest| rest.split("]]").next())
    {
        let name = name.trim();
        let index = headers
            .iter()
            .filter(|header| header.starts_with("[[") && header[2..].trim_start().starts_with(name))
            .count()
            - 1;
        return Some(format!("{name}[{index}]"));
    }
    last.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .map(|name| name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeSet;

    fn flags() -> Flags {
        Flags::default()
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.listen_addr().unwrap().to_string(), "127.0.0.1:3000");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(
            config.metrics_addr().unwrap().unwrap().to_string(),
            "127.0.0.1:9100"
        );
        assert_eq!(config.connections_max, 10_000);
        assert_eq!(config.requests_in_flight_per_connection_max, 64);
        assert_eq!(config.queue_requests_max, 256);
        assert_eq!(config.batch_events_max, 4 * 8189);
        let engine = config.engine_config().unwrap();
        assert_eq!(engine.when_full, WhenFull::Busy);
        assert_eq!(engine.checkpoint_interval, Duration::from_secs(30));
    }

    /// config/settled.toml claims to set every option to its default: hold it to that,
    /// both ways (no option missing from the file, no value other than the default).
    #[test]
    fn the_shipped_file_sets_every_option_to_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/settled.toml");
        let config = Config::from_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config, Config::default());
        let text = std::fs::read_to_string(&path).unwrap();
        let file_keys: BTreeSet<String> = text
            .parse::<toml::Table>()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let defaults = toml::to_string(&Config::default()).unwrap();
        let option_keys: BTreeSet<String> = defaults
            .parse::<toml::Table>()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            file_keys, option_keys,
            "options missing from the file or unknown"
        );
    }

    #[test]
    fn a_renamed_key_names_its_new_name() {
        let error = error_of("transfers_unsettled_max = 4194304\n");
        assert_eq!(
            error,
            "settled.toml: `transfers_unsettled_max` was renamed to \
             `transfers_uncheckpointed_max` (same meaning): use the new name"
        );
    }

    #[test]
    fn file_overrides_defaults_and_flags_override_file() {
        let text = "listen = \"127.0.0.1:4000\"\ndata_dir = \"/srv/settled\"\n\
                    connections_max = 50\n";
        let mut config = Config::from_toml(text, "test.toml").unwrap();
        assert_eq!(config.listen, "127.0.0.1:4000");
        assert_eq!(config.connections_max, 50);
        assert_eq!(config.queue_requests_max, 256, "absent keys keep defaults");
        config.apply(&Flags {
            listen: Some("0.0.0.0:5000".into()),
            metrics_listen: Some(String::new()),
            ..flags()
        });
        assert_eq!(config.listen, "0.0.0.0:5000");
        assert_eq!(
            config.data_dir,
            PathBuf::from("/srv/settled"),
            "not overridden"
        );
        assert_eq!(
            config.metrics_addr().unwrap(),
            None,
            "empty disables metrics"
        );
    }

    #[test]
    fn load_reads_the_named_file_then_applies_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settled.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:4000\"\nmetrics_listen = \"\"\n",
        )
        .unwrap();
        let from_file = Config::load(&Flags {
            config: Some(path.clone()),
            ..flags()
        })
        .unwrap();
        assert_eq!(from_file.listen, "127.0.0.1:4000");
        let overridden = Config::load(&Flags {
            config: Some(path),
            listen: Some("127.0.0.1:4001".into()),
            ..flags()
        })
        .unwrap();
        assert_eq!(overridden.listen, "127.0.0.1:4001");
    }

    #[test]
    fn flags_parse_from_the_command_line() {
        let flags = Flags::try_parse_from([
            "settled",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "/tmp/x",
            "--metrics-listen",
            "",
        ])
        .unwrap();
        assert_eq!(flags.listen.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(flags.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(flags.metrics_listen.as_deref(), Some(""));
    }

    fn error_of(text: &str) -> String {
        let config = Config::from_toml(text, "settled.toml");
        let error = config.and_then(|config| config.validate());
        error.unwrap_err().to_string()
    }

    #[test]
    fn invalid_values_name_their_key() {
        assert_eq!(
            error_of("listen = \"abc\""),
            "listen = \"abc\": invalid socket address (expected IP:PORT, e.g. 127.0.0.1:3000)"
        );
        assert!(error_of("metrics_listen = \"x:1\"").starts_with("metrics_listen = \"x:1\""));
        assert!(error_of("connections_max = 0").starts_with("connections_max = 0: "));
        let fsync = error_of("fsync = \"never\"");
        assert!(
            fsync.starts_with("fsync = \"never\": only \"always\""),
            "{fsync}"
        );
        let batch = error_of("batch_events_max = 100");
        assert!(batch.starts_with("batch_events_max = 100: "), "{batch}");
        let segment = error_of("wal_segment_bytes = 1024");
        assert!(
            segment.starts_with("wal_segment_bytes = 1024: "),
            "{segment}"
        );
        let cache = error_of("store_cache_bytes = 1000");
        assert!(
            cache.starts_with("store_cache_bytes = 1000: below the minimum"),
            "{cache}"
        );
        let interval = error_of("checkpoint_interval_seconds = 0");
        assert!(
            interval.starts_with("checkpoint_interval_seconds = 0"),
            "{interval}"
        );
        // Refused by the engine's own checks, reported under the same keys.
        let lag = error_of("transfers_uncheckpointed_max = 10");
        assert!(
            lag.starts_with("transfers_uncheckpointed_max = 10: below batch_events_max 32756"),
            "{lag}"
        );
        let pending = error_of("wal_pending_bytes_max = 1024");
        assert!(
            pending.starts_with("wal_pending_bytes_max = 1024: must hold one record"),
            "{pending}"
        );
    }

    #[test]
    fn ledger_errors_name_the_ledger() {
        let two = |second: &str| {
            format!("[[ledgers]]\nid = 1\nasset = \"USD\"\nscale = 2\n\n[[ledgers]]\n{second}\n")
        };
        let scale = error_of(&two("id = 2\nasset = \"BTC\"\nscale = 39"));
        assert!(
            scale.starts_with("ledgers[1].scale = 39: must be at most 38"),
            "{scale}"
        );
        let id = error_of(&two("id = 1\nasset = \"EUR\"\nscale = 2"));
        assert!(id.starts_with("ledgers[1].id = 1: duplicate"), "{id}");
        let asset = error_of(&two("id = 2\nasset = \"USD\"\nscale = 2"));
        assert!(
            asset.starts_with("ledgers[1].asset = \"USD\": duplicate"),
            "{asset}"
        );
        let zero = error_of("[[ledgers]]\nid = 0\nasset = \"X\"\nscale = 0\n");
        assert!(zero.starts_with("ledgers[0].id = 0: "), "{zero}");
    }

    #[test]
    fn tls_keys_come_in_pairs_and_name_the_missing_one() {
        let no_key = error_of("tls_cert_file = \"server.pem\"\n");
        assert_eq!(
            no_key,
            "tls_key_file = \"\": required when tls_cert_file is set (the private key of its \
             certificate)"
        );
        let no_cert = error_of("tls_key_file = \"server.key\"\n");
        assert!(
            no_cert.starts_with("tls_cert_file = \"\": required"),
            "{no_cert}"
        );
        let ca_alone = error_of("tls_client_ca_file = \"ca.pem\"\n");
        assert!(
            ca_alone.starts_with("tls_client_ca_file = \"ca.pem\": needs tls_cert_file"),
            "{ca_alone}"
        );
        let missing = error_of(
            "tls_cert_file = \"/nonexistent/server.pem\"\ntls_key_file = \"/nonexistent/k\"\n",
        );
        assert!(
            missing.starts_with("tls_cert_file = \"/nonexistent/server.pem\": cannot read: "),
            "{missing}"
        );
        assert!(!missing.contains('\n'));
    }

    #[test]
    fn client_entries_are_checked_and_name_their_index() {
        let hash = crate::server::auth::hex(&[7; 32]);
        let entry = |name: &str, hash: &str| {
            format!("[[clients]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n")
        };
        let config = Config::from_toml(&entry("payouts", &hash), "settled.toml").unwrap();
        config.validate().unwrap();
        assert!(config.client_auth().unwrap().is_required());
        assert!(!config.clients[0].read_only, "read_only defaults to false");

        let short = error_of(&entry("payouts", "abc"));
        assert!(
            short.starts_with("clients[0].token_sha256 = \"abc\": must be 64 hex digits"),
            "{short}"
        );
        let not_hex = error_of(&entry("payouts", &"g".repeat(64)));
        assert!(
            not_hex.starts_with("clients[0].token_sha256 = \"gggggggg\"...: must be 64"),
            "{not_hex}"
        );
        let empty = error_of(&entry(" ", &hash));
        assert!(
            empty.starts_with("clients[0].name = \" \": must not be empty"),
            "{empty}"
        );
        let other_hash = crate::server::auth::hex(&[8; 32]);
        let same_name = error_of(&(entry("a", &hash) + &entry("a", &other_hash)));
        assert!(
            same_name.starts_with("clients[1].name = \"a\": duplicate"),
            "{same_name}"
        );
        let same_token = error_of(&(entry("a", &hash) + &entry("b", &hash.to_uppercase())));
        assert!(
            same_token.starts_with("clients[1].token_sha256 = ")
                && same_token.contains("same token"),
            "{same_token}"
        );
        let unknown = error_of("[[clients]]\nname = \"a\"\ntoken = \"secret\"\n");
        assert!(unknown.contains("line 3: clients[0].token: "), "{unknown}");
    }

    #[test]
    fn type_errors_and_unknown_keys_name_the_key_and_line() {
        let wrong_type = error_of("# comment\nlisten = 5\n");
        assert!(
            wrong_type.starts_with("settled.toml line 2: listen: "),
            "{wrong_type}"
        );
        let nested = error_of("[[ledgers]]\nid = 1\nasset = \"USD\"\nscale = \"two\"\n");
        assert!(
            nested.starts_with("settled.toml line 4: ledgers[0].scale: "),
            "{nested}"
        );
        let unknown = error_of("listen = \"127.0.0.1:1\"\nlisten_port = 5\n");
        assert!(unknown.contains("line 2"), "{unknown}");
        assert!(unknown.contains("listen_port"), "{unknown}");
        assert!(!unknown.contains('\n'), "one line: {unknown}");
        let range = error_of("[[ledgers]]\nid = 1\nasset = \"USD\"\nscale = 300\n");
        assert!(range.contains("ledgers[0].scale"), "{range}");
    }
}
