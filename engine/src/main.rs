//! `settled`: the settlement engine daemon. See `settled --help` and config/settled.toml.
//!
//! Start-up errors (bad config, address in use, unreadable data directory) print one line
//! on stderr and exit with status 1; SIGINT or SIGTERM shut down gracefully (exit 0).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use settled_engine::config::{Config, Flags};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let flags = Flags::parse();
    init_logging();
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
