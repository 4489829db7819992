//! The knobs of a run. The first four match TigerBeetle's `benchmark`, so that runs can be
//! compared like for like.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use protocol::BATCH_EVENTS_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every account equally likely.
    Uniform,
    /// Account k (1-based) drawn with probability proportional to 1/k^s
    /// (s = --zipf-exponent): a few accounts take most transfers.
    Zipf,
}

/// Load a settled daemon over TCP, measure it, and verify what it acknowledged.
///
/// Creates --accounts accounts, then sends --transfers transfers in requests of
/// --batch-size over --clients connections with --in-flight requests each, and reports
/// throughput, latency per request (p50 to max), results by name and, when it started the
/// daemon itself, the daemon's peak memory and data size. Then it verifies: every transfer
/// answered `created` is present with its amount, none that failed is, and per ledger the
/// debits equal the credits, with the change in balances equal to what was created. A
/// failed verification exits with status 1.
///
/// Without --addr it starts `settled` (next to this binary, or --settled) on a temporary
/// data directory and a free loopback port, and removes both afterwards.
#[derive(Clone, Debug, Parser)]
#[command(name = "settle-bench", version)]
pub struct Args {
    /// A running daemon to load (it should have no other writers during the run, or the
    /// balance check fails). Default: start one.
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<SocketAddr>,
    /// The `settled` binary to start when --addr is not given [default: `settled` in this
    /// binary's directory].
    #[arg(long, value_name = "PATH")]
    pub settled: Option<PathBuf>,
    /// Accounts to create (and draw transfers between).
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// Transfers to send.
    #[arg(long, default_value_t = 10_000_000)]
    pub transfers: u64,
    /// Transfers per request, 1 to 8189.
    #[arg(long, default_value_t = BATCH_EVENTS_MAX)]
    pub batch_size: u32,
    /// Connections, each a client sending requests.
    #[arg(long, default_value_t = 1)]
    pub clients: u32,
    /// Requests each connection keeps in flight (pipelined), 1 to 64.
    #[arg(long, default_value_t = 1)]
    pub in_flight: u32,
    /// How debit and credit accounts are drawn.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Exponent s of --distribution zipf (above 0; 1 is classic Zipf).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_exponent: f64,
    /// Size of a hot set: the first N accounts, drawn --hot-percent of the time.
    #[arg(long, default_value_t = 0)]
    pub hot_accounts: u64,
    /// Share of account draws that go to the hot set, 0 to 100.
    #[arg(long, default_value_t = 0)]
    pub hot_percent: u8,
    /// Share of transfers that are pending (two-phase), 0 to 50; each is posted or voided
    /// (half each) later in the run, in another request.
    #[arg(long, default_value_t = 0)]
    pub pending_percent: u8,
    /// Share of transfers linked to the next one of their request (chains of two or
    /// more), 0 to 100.
    #[arg(long, default_value_t = 0)]
    pub linked_percent: u8,
    /// After the load, this many get_account_transfers (random account, newest 100
    /// transfers) and as many lookup_transfers (one random id), each timed.
    #[arg(long, default_value_t = 0)]
    pub queries: u32,
    /// Seed of every random choice: the same seed and knobs send the same transfers.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Ledger (asset) id of the accounts and transfers.
    #[arg(long, default_value_t = 1)]
    pub ledger: u32,
    /// After the run, stop the daemon gracefully and start it again on the same data:
    /// report how long it took to listen and its peak memory, and check that a sample of
    /// the created transfers is still there. Only for a daemon started here (no --addr).
    #[arg(long)]
    pub restart: bool,
    /// Print the report as one JSON object on stdout (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Connect over TLS (a daemon given with --addr). Needs --tls-ca.
    #[arg(long, requires = "tls_ca")]
    pub tls: bool,
    /// PEM file of the CA that signed the daemon's certificate (implies --tls).
    #[arg(long, value_name = "FILE", requires = "addr")]
    pub tls_ca: Option<PathBuf>,
    /// Name the daemon's certificate must carry [default: the IP address of --addr].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Client token for a daemon that lists [[clients]] (it must not be read-only).
    /// Prefer the environment variable, which keeps it out of shell history and `ps`. A
    /// daemon started here lists none and ignores it.
    #[arg(long, env = "SETTLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Args {
    /// Every knob in range, or a message naming the one that is not.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |message: String| Err(message);
        if self.accounts < 2 {
            return fail(format!(
                "--accounts {}: a transfer needs two accounts",
                self.accounts
            ));
        }
        if self.transfers == 0 {
            return fail("--transfers 0: nothing to send".into());
        }
        if !(1..=BATCH_EVENTS_MAX).contains(&self.batch_size) {
            return fail(format!(
                "--batch-size {}: must be 1 to {BATCH_EVENTS_MAX}",
                self.batch_size
            ));
        }
        if self.clients == 0 || self.clients > 10_000 {
            return fail(format!("--clients {}: must be 1 to 10000", self.clients));
        }
        if !(1..=64).contains(&self.in_flight) {
            return fail(format!(
                "--in-flight {}: must be 1 to 64 (the server's default per-connection limit)",
                self.in_flight
            ));
        }
        if self.distribution == Distribution::Zipf
            && self.zipf_exponent.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return fail(format!(
                "--zipf-exponent {}: must be above 0",
                self.zipf_exponent
            ));
        }
        if self.hot_accounts > self.accounts {
            return fail(format!(
                "--hot-accounts {}: above --accounts {}",
                self.hot_accounts, self.accounts
            ));
        }
        if self.hot_percent > 100 || (self.hot_percent > 0 && self.hot_accounts == 0) {
            return fail(format!(
                "--hot-percent {}: must be 0 to 100, with --hot-accounts above 0",
                self.hot_percent
            ));
        }
        if self.pending_percent > 50 {
            return fail(format!(
                "--pending-percent {}: must be 0 to 50 (each pending transfer is later posted or \
                 voided by another transfer)",
                self.pending_percent
            ));
        }
        if self.linked_percent > 100 {
            return fail(format!(
                "--linked-percent {}: must be 0 to 100",
                self.linked_percent
            ));
        }
        if self.restart && self.addr.is_some() {
            return fail(
                "--restart needs the daemon settle-bench starts (leave out --addr)".into(),
            );
        }
        if self.ledger == 0 {
            return fail("--ledger 0: ledger 0 is reserved".into());
        }
        Ok(())
    }
}
