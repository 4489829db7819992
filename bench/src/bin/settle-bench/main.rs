//! `settle-bench`: load a settled daemon over TCP, measure it, verify it. `--help` explains
//! every knob; README.md shows the default run and its output.

mod args;
mod daemon;
mod load;
mod report;
mod verify;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use client::{Client, ClientOptions, TlsOptions};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::{AccountFilter, AccountFilterFlags, CreateAccountResult};

use args::Args;
use daemon::Daemon;
use load::histogram;
use report::{Queries, Report};
use workload::{mix, Workload};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(message) = args.validate() {
        eprintln!("settle-bench: {message}");
        return ExitCode::from(2);
    }
    let daemon = match args.addr {
        Some(_) => None,
        None => match Daemon::start(args.settled.as_deref()) {
            Ok(daemon) => Some(daemon),
            Err(message) => {
                eprintln!("settle-bench: {message}");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("settle-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = args.addr.or(daemon.as_ref().map(|daemon| daemon.addr));
    let outcome = runtime.block_on(run(&args, addr.expect("an address either way"), daemon));
    match outcome {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("report serialises")
                );
            } else {
                print!("{}", report.text());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => {
            eprintln!("settle-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    args: &Args,
    addr: std::net::SocketAddr,
    daemon: Option<Daemon>,
) -> Result<Report, String> {
    let result = drive(args, addr).await;
    let mut sample = Vec::new();
    let result = result.map(|(report, sampled)| {
        sample = sampled;
        report
    });
    let (daemon_peak_rss_bytes, daemon_data_bytes) = match &daemon {
        Some(daemon) => (daemon.peak_rss_bytes(), Some(daemon.data_bytes())),
        None => (None, None),
    };
    let mut report = match result {
        Ok(report) => report,
        Err(message) => {
            let log = daemon.as_ref().map(Daemon::log_tail).unwrap_or_default();
            return Err(if log.is_empty() {
                message
            } else {
                format!("{message}\nthe daemon's last log lines:\n{log}")
            });
        }
    };
    report.daemon_peak_rss_bytes = daemon_peak_rss_bytes;
    report.daemon_data_bytes = daemon_data_bytes;
    let mut daemon = daemon;
    if let (true, Some(daemon)) = (args.restart && report.ok(), daemon.as_mut()) {
        // A failed restart is a finding of the run, reported with its load figures.
        match daemon.restart() {
            Ok((took, peak)) => {
                report.restart_seconds = Some(took.as_secs_f64());
                report.restart_peak_rss_bytes = peak;
                match check_after_restart(daemon.addr, &sample).await {
                    Ok(checked) => report.restart_transfers_checked = Some(checked),
                    Err(message) => report.restart_error = Some(message),
                }
            }
            Err(message) => report.restart_error = Some(message),
        }
    }
    if let Some(daemon) = daemon {
        let status = daemon.stop()?;
        report.daemon_exit_ok = Some(status.success());
    }
    Ok(report)
}

/// Load, query and verify; also returns a sample of created transfer ids (every 997th
/// sequence number, at most 8189) for the check after a restart.
async fn drive(args: &Args, addr: std::net::SocketAddr) -> Result<(Report, Vec<u128>), String> {
    let options = ClientOptions {
        in_flight_max: args.in_flight,
        ..client_options(args, addr)?
    };
    let mut clients = Vec::with_capacity(args.clients as usize);
    for _ in 0..args.clients {
        let client = Client::connect_with(addr, options.clone())
            .await
            .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
        clients.push(client);
    }
    // Transfer ids of this run start above any earlier run's (the clock's nanoseconds in
    // the high 64 bits), so that reruns against one daemon never collide.
    let id_base = u128::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64),
    ) << 64;
    let workload = Arc::new(Workload::new(args, id_base));
    create_accounts(&clients[0], &workload).await?;
    let before = verify::ledger_totals(&clients[0], workload.ledger).await?;
    let progress = progress_bar(args);
    let load = load::run(&clients, args.in_flight, Arc::clone(&workload), progress).await?;
    let queries = run_queries(&clients[0], &workload, &load.created, args.queries).await?;
    let verification = verify::verify(&clients[0], &workload, &load.created, before).await?;
    let sample = (0..workload.transfers)
        .step_by(997)
        .filter(|seq| load.created.contains(*seq))
        .map(|seq| workload.transfer_id(seq))
        .take(protocol::BATCH_EVENTS_MAX as usize)
        .collect();
    Ok((Report::new(args, &load, queries, verification), sample))
}

/// TLS (with --tls-ca) and the token (--token or SETTLE_TOKEN), from the arguments.
fn client_options(args: &Args, addr: std::net::SocketAddr) -> Result<ClientOptions, String> {
    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => {
            let server_name = args
                .tls_server_name
                .clone()
                .unwrap_or_else(|| addr.ip().to_string());
            let tls = TlsOptions::from_ca_file(ca, &server_name)
                .map_err(|error| format!("--tls-ca: {error}"))?;
            Some(tls)
        }
    };
    Ok(ClientOptions {
        tls,
        token: args.token.clone().filter(|token| !token.is_empty()),
        ..ClientOptions::default()
    })
}

/// The sampled created transfers are all still there after the restart.
async fn check_after_restart(addr: std::net::SocketAddr, sample: &[u128]) -> Result<u64, String> {
    let client = Client::connect(addr)
        .await
        .map_err(|error| format!("cannot reconnect after the restart: {error}"))?;
    let found = client
        .lookup_transfers(sample)
        .await
        .map_err(|error| format!("lookup_transfers after the restart: {error}"))?;
    if found.len() != sample.len() {
        return Err(format!(
            "after the restart {} of {} sampled created transfers are missing",
            sample.len() - found.len(),
            sample.len()
        ));
    }
    Ok(sample.len() as u64)
}

/// The run's accounts, created (or found identical from an earlier run).
async fn create_accounts(client: &Client, workload: &Workload) -> Result<(), String> {
    let accounts = workload.accounts();
    for chunk in accounts.chunks(protocol::BATCH_EVENTS_MAX as usize) {
        let results = client
            .create_accounts(chunk)
            .await
            .map_err(|error| format!("create_accounts: {error}"))?;
        for (account, result) in chunk.iter().zip(&results) {
            let status = result.account_status();
            if !matches!(
                status,
                Ok(CreateAccountResult::Created | CreateAccountResult::Exists)
            ) {
                return Err(format!(
                    "account {} could not be created: {}",
                    account.id,
                    status.map_or_else(|code| code.to_string(), |status| status.to_string())
                ));
            }
        }
    }
    Ok(())
}

fn progress_bar(args: &Args) -> ProgressBar {
    if args.json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(args.transfers);
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} transfers, {per_sec}, eta {eta}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// `count` get_account_transfers and `count` lookup_transfers, one at a time, timed.
async fn run_queries(
    client: &Client,
    workload: &Workload,
    created: &load::Created,
    count: u32,
) -> Result<Option<Queries>, String> {
    if count == 0 {
        return Ok(None);
    }
    let mut queries = Queries {
        count,
        account_transfers_us: histogram(),
        lookup_transfer_us: histogram(),
        account_transfers_rows: 0,
        lookups_found: 0,
    };
    for query in 0..u64::from(count) {
        let account = workload.account_id(mix(workload.seed(), query, 9) % workload.accounts);
        let filter = AccountFilter {
            account_id: account,
            limit: 100,
            flags: AccountFilterFlags::DEBITS
                | AccountFilterFlags::CREDITS
                | AccountFilterFlags::REVERSED,
            ..bytemuck::Zeroable::zeroed()
        };
        let started = Instant::now();
        let rows = client
            .get_account_transfers(filter)
            .await
            .map_err(|error| format!("get_account_transfers: {error}"))?;
        queries
            .account_transfers_us
            .saturating_record((started.elapsed().as_micros() as u64).max(1));
        queries.account_transfers_rows += rows.len() as u64;

        let seq = mix(workload.seed(), query, 10) % workload.transfers;
        let started = Instant::now();
        let found = client
            .lookup_transfers(&[workload.transfer_id(seq)])
            .await
            .map_err(|error| format!("lookup_transfers: {error}"))?;
        queries
            .lookup_transfer_us
            .saturating_record((started.elapsed().as_micros() as u64).max(1));
        if found.len() as u64 != u64::from(created.contains(seq)) {
            return Err(format!(
                "lookup of transfer {} disagrees with its result",
                workload.transfer_id(seq)
            ));
        }
        queries.lookups_found += found.len() as u64;
    }
    Ok(Some(queries))
}
