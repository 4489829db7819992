//! What a run measured and verified, as text for people and as JSON for scripts.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use protocol::CreateTransferResult;
use serde::Serialize;

use crate::args::{Args, Distribution};
use crate::load::Load;
use crate::verify::Verification;

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p999 {:.2}  max {:.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// The query phase (`--queries`).
pub struct Queries {
    pub count: u32,
    pub account_transfers_us: Histogram<u64>,
    pub lookup_transfer_us: Histogram<u64>,
    pub account_transfers_rows: u64,
    pub lookups_found: u64,
}

#[derive(Debug, Serialize)]
pub struct QueriesReport {
    pub count: u32,
    pub get_account_transfers: Latency,
    pub get_account_transfers_rows: u64,
    pub lookup_transfers: Latency,
    pub lookup_transfers_found: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub accounts: u64,
    pub transfers: u64,
    pub batch_size: u32,
    pub clients: u32,
    pub in_flight: u32,
    pub distribution: &'static str,
    pub seconds: f64,
    pub transfers_per_second: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub request_latency: Latency,
    /// Events by result name.
    pub results: std::collections::BTreeMap<String, u64>,
    pub queries: Option<QueriesReport>,
    pub daemon_peak_rss_bytes: Option<u64>,
    pub daemon_data_bytes: Option<u64>,
    pub daemon_exit_ok: Option<bool>,
    pub verification: Verification,
    /// `--restart`: seconds from start to listening, and peak RSS by then.
    pub restart_seconds: Option<f64>,
    pub restart_peak_rss_bytes: Option<u64>,
    /// `--restart`: created transfers looked up after the restart, all found.
    pub restart_transfers_checked: Option<u64>,
    /// `--restart`: why the restart or the check after it failed.
    pub restart_error: Option<String>,
}

impl Report {
    pub fn new(
        args: &Args,
        load: &Load,
        queries: Option<Queries>,
        verification: Verification,
    ) -> Report {
        let seconds = load.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let results = load
            .results
            .iter()
            .map(|(code, count)| {
                let name = CreateTransferResult::from_code(*code)
                    .map_or_else(|_| format!("unknown_{code}"), |status| status.to_string());
                (name, *count)
            })
            .collect();
        Report {
            accounts: args.accounts,
            transfers: args.transfers,
            batch_size: args.batch_size,
            clients: args.clients,
            in_flight: args.in_flight,
            distribution: match args.distribution {
                Distribution::Uniform => "uniform",
                Distribution::Zipf => "zipf",
            },
            seconds,
            transfers_per_second: args.transfers as f64 / seconds,
            requests: load.requests,
            requests_per_second: load.requests as f64 / seconds,
            request_latency: Latency::of(&load.latency_us),
            results,
            queries: queries.map(|queries| QueriesReport {
                count: queries.count,
                get_account_transfers: Latency::of(&queries.account_transfers_us),
                get_account_transfers_rows: queries.account_transfers_rows,
                lookup_transfers: Latency::of(&queries.lookup_transfer_us),
                lookup_transfers_found: queries.lookups_found,
            }),
            daemon_peak_rss_bytes: None,
            daemon_data_bytes: None,
            daemon_exit_ok: None,
            verification,
            restart_seconds: None,
            restart_peak_rss_bytes: None,
            restart_transfers_checked: None,
            restart_error: None,
        }
    }

    /// Verified, and the daemon (when started here) shut down cleanly.
    pub fn ok(&self) -> bool {
        self.verification.ok() && self.daemon_exit_ok != Some(false) && self.restart_error.is_none()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} accounts, {} transfers in requests of {}, {} client(s) x {} in flight, {}",
            self.accounts,
            self.transfers,
            self.batch_size,
            self.clients,
            self.in_flight,
            self.distribution
        );
        let _ = writeln!(
            out,
            "load:     {:.0} transfers/s, {:.1} requests/s ({} requests in {:.2} s)",
            self.transfers_per_second, self.requests_per_second, self.requests, self.seconds
        );
        let _ = writeln!(out, "latency:  {} per request", self.request_latency.text());
        let results: Vec<String> = self
            .results
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        let _ = writeln!(out, "results:  {}", results.join(", "));
        if let Some(queries) = &self.queries {
            let _ = writeln!(
                out,
                "queries:  get_account_transfers {} ({} rows in {})",
                queries.get_account_transfers.text(),
                queries.get_account_transfers_rows,
                queries.count
            );
            let _ = writeln!(
                out,
                "          lookup_transfers      {} ({} of {} found)",
                queries.lookup_transfers.text(),
                queries.lookup_transfers_found,
                queries.count
            );
        }
        if let (Some(rss), Some(data)) = (self.daemon_peak_rss_bytes, self.daemon_data_bytes) {
            let _ = writeln!(
                out,
                "daemon:   peak RSS {:.0} MiB, data directory {:.0} MiB ({:.0} bytes per transfer)",
                rss as f64 / 1048576.0,
                data as f64 / 1048576.0,
                data as f64 / self.transfers as f64
            );
        }
        let verification = &self.verification;
        if verification.ok() {
            let _ = writeln!(
                out,
                "verified: {} transfers looked up, {} created ones present with their amounts; \
                 debits == credits; balances moved by exactly what was created",
                verification.transfers_checked, verification.created_found
            );
        } else {
            let _ = writeln!(out, "VERIFICATION FAILED:");
            for problem in &verification.problems {
                let _ = writeln!(out, "  {problem}");
            }
        }
        if let (Some(seconds), Some(checked)) =
            (self.restart_seconds, self.restart_transfers_checked)
        {
            let rss = self.restart_peak_rss_bytes.unwrap_or(0) as f64 / 1048576.0;
            let _ = writeln!(
                out,
                "restart:  listening after {seconds:.2} s, peak RSS {rss:.0} MiB; {checked} \
                 created transfers looked up again, all present"
            );
        }
        if let Some(error) = &self.restart_error {
            let _ = writeln!(out, "RESTART FAILED: {error}");
        }
        if self.daemon_exit_ok == Some(false) {
            let _ = writeln!(out, "the daemon did not shut down cleanly");
        }
        out
    }
}
