//! `settled`: the settlement engine daemon. See `settled --help` and config/settled.toml.
//!
//! Start-up errors (bad config, address in use, unreadable data directory) print one line
//! on stderr and exit with status 1; SIGINT or SIGTERM shut down gracefully (exit 0).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use settled_engine::config::{Command, Config, Flags};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging();
    match &flags.command {
        Some(Command::Verify { data_dir }) => return verify(data_dir),
        Some(Command::Token { name, read_only }) => return token(name, *read_only),
        None => {}
    }
    let config = match Config::load(&flags) {
        Ok(config) => config,
        Err(error) => return fail(&format!("config error: {error}")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(settled_engine::server::run(config, shutdown_signal())) {
        Ok(_report) => ExitCode::SUCCESS,
        Err(error) => fail(&error.to_string()),
    }
}

/// Logs go to stderr; `RUST_LOG` picks what is shown (info by default). Colours only on a
/// terminal, so that log files and pipes get plain text.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `settled verify`: the full offline check of a data directory's store.
fn verify(data_dir: &std::path::Path) -> ExitCode {
    let store_dir = data_dir.join("store");
    if !store_dir.is_dir() {
        return fail(&format!("verify: no store at {}", store_dir.display()));
    }
    let config = settled_engine::store::StoreConfig::default();
    let store = match settled_engine::store::Store::open(&store_dir, &config) {
        Ok(store) => store,
        Err(error) => {
            return fail(&format!(
                "verify: cannot open {} (is settled still running on it?): {error}",
                store_dir.display()
            ))
        }
    };
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {human_pos} transfers checked, {per_sec}",
        )
        .expect("a valid template"),
    );
    let started = std::time::Instant::now();
    let report = store.verify(|transfers| progress.set_position(transfers));
    progress.finish_and_clear();
    match report {
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "verified the checkpoint at LSN {}: {} accounts, {} transfers in {seconds:.1} s \
                 ({:.0} transfers/s); every balance is what its transfers add up to, and \
                 debits equal credits on every ledger",
                report.checkpoint_lsn,
                report.accounts,
                report.transfers,
                report.transfers as f64 / seconds.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&format!("verify: {error}")),
    }
}

/// `settled token`: a new client token and the config entry that admits it.
fn token(name: &str, read_only: bool) -> ExitCode {
    use settled_engine::server::auth::{hex, new_token, token_sha256};
    let token = match new_token() {
        Ok(token) => token,
        Err(error) => return fail(&format!("token: the OS random source failed: {error}")),
    };
    let hash = hex(&token_sha256(token.as_bytes()));
    // The name goes into TOML: let the TOML serialiser quote it.
    let quoted = toml::Value::String(name.to_string()).to_string();
    println!("token (give it to the client, e.g. SETTLE_TOKEN=...; keep it secret):");
    println!("{token}");
    println!();
    println!("config entry for settled.toml (holds only the token's SHA-256):");
    println!("[[clients]]");
    println!("name = {quoted}");
    println!("token_sha256 = \"{hash}\"");
    println!("read_only = {read_only}");
    ExitCode::SUCCESS
}

/// One line on stderr, exit status 1.
fn fail(message: &str) -> ExitCode {
    eprintln!("settled: {}", message.replace('\n', " "));
    ExitCode::from(1)
}

/// Completes on the first SIGINT or SIGTERM. If the handlers cannot be installed the
/// daemon still runs; it then stops only when killed, which it survives (the WAL).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT shuts down");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
