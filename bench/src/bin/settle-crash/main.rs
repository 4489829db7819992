//! `settle-crash`: crash cycles over TCP against the release daemon.
//!
//! Starts `settled` on a temporary data directory and creates two ledgers' accounts, then
//! runs `--cycles` cycles. Each cycle loads the daemon from several connections (plain,
//! pending, post and void transfers and linked chains, some failing on purpose), kills it
//! with SIGKILL at a chosen moment (a random instant of the load, just after a checkpoint
//! starts, or just after a WAL segment is created), sometimes again during its recovery or
//! right after it listens, and restarts it. After each restart it
//! - retries every request that got no reply, once, with the same ids: an event applied
//!   before the kill must answer `exists` (and not be applied again), one that was not is
//!   applied exactly when it answers `created`;
//! - looks up every transfer ever sent: each created one present with exactly the fields
//!   it must have (timestamp included), no other present; lists each ledger: no transfer
//!   that was not created, none twice;
//! - checks every account's balances against what the created transfers imply, and that
//!   debits equal credits per ledger.
//!
//! At the end a graceful stop must exit 0, and `settled verify` must pass on the data
//! directory. Exit status 0 when everything held, 1 with the seed and the problems
//! otherwise (the data directory is kept then).

mod check;
mod daemon;
mod load;
mod model;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use client::Client;
use protocol::{CreateAccountResult, Transfer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use daemon::{Daemon, START_TIMEOUT, STOP_TIMEOUT};
use load::Task;
use model::{Model, Outcome};

#[derive(Parser, Debug)]
#[command(
    name = "settle-crash",
    about = "Crash cycles: load settled over TCP, kill -9 it at chosen moments, restart, \
             retry what was not answered, and check that nothing acknowledged was lost or \
             applied twice."
)]
struct Args {
    /// Kill-and-restart cycles (each with a kill during load; some add a kill during
    /// recovery or right after the restart).
    #[arg(long, default_value_t = 20)]
    cycles: u32,
    /// Seed of the workload and of the kill moments [default: from the clock]; printed, so
    /// a failing run can be repeated (the kills land at the same kinds of moments, not at
    /// the same instructions).
    #[arg(long)]
    seed: Option<u64>,
    /// The settled binary [default: `settled` beside this executable].
    #[arg(long, value_name = "PATH")]
    settled: Option<PathBuf>,
    /// Connections to the daemon.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Load tasks, spread over the connections; each has one request in flight.
    #[arg(long, default_value_t = 8)]
    tasks: u32,
    /// Longest load before a kill at a random instant, in milliseconds.
    #[arg(long, default_value_t = 800)]
    load_ms_max: u64,
    /// Look up every transfer ever sent, and list each ledger, every this many cycles
    /// (and after the last); the cycles between look up the transfers not verified yet
    /// and a random sample of 8189 older ones. Every cycle checks every account's
    /// balances and debits == credits per ledger.
    #[arg(long, default_value_t = 5)]
    full_every: u32,
    /// Keep the data directory (it is always kept when a check fails).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let counts = [args.cycles, args.connections, args.tasks, args.full_every];
    if counts.contains(&0) || args.load_ms_max < 10 {
        eprintln!(
            "settle-crash: --cycles, --connections, --tasks and --full-every must be at \
             least 1, --load-ms-max at least 10"
        );
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    });
    println!("settle-crash: seed {seed}, {} cycles", args.cycles);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("settle-crash: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let dir = match tempfile::Builder::new().prefix("settle-crash-").tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("settle-crash: cannot create a temporary directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let outcome = runtime.block_on(run(&args, seed, dir.path()));
    match outcome {
        Ok(summary) => {
            println!(
                "settle-crash: passed in {:.1} s: {summary}",
                started.elapsed().as_secs_f64()
            );
            if args.keep {
                println!("data directory kept: {}", dir.keep().display());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("settle-crash: FAILED (seed {seed}): {message}");
            eprintln!("data directory kept: {}", dir.keep().display());
            ExitCode::FAILURE
        }
    }
}

/// Where a cycle's kill during load lands.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// A random instant of the load.
    Random { after_ms: u64 },
    /// Right after a checkpoint starts (writing to RocksDB, then truncating the WAL).
    Checkpoint { delay_us: u64 },
    /// Right after a new WAL segment is created.
    SegmentCreated { delay_us: u64 },
}

/// Totals over the run.
#[derive(Default)]
struct Totals {
    kills: u32,
    kills_during_load: [u32; 3],
    kills_in_recovery: u32,
    kills_after_listening: u32,
    requests_answered: u64,
    requests_unanswered: u64,
    retried: check::Retried,
    restart_ms_max: u128,
    /// Errors of requests other than a lost connection (refusals such as `busy`).
    other_errors: std::collections::BTreeSet<String>,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [random, checkpoint, segment] = self.kills_during_load;
        write!(
            f,
            "{} kills (during load: {random} at random, {checkpoint} in a checkpoint, \
             {segment} at a new WAL segment; {} during recovery, {} right after listening); \
             {} requests answered, {} not; their retry: {} events applied before the kill, \
             {} created by the retry, {} failed; slowest restart {} ms",
            self.kills,
            self.kills_in_recovery,
            self.kills_after_listening,
            self.requests_answered,
            self.requests_unanswered,
            self.retried.applied_before,
            self.retried.created_by_retry,
            self.retried.failed,
            self.restart_ms_max
        )?;
        if !self.other_errors.is_empty() {
            write!(
                f,
                "; errors other than a lost connection: {:?}",
                self.other_errors
            )?;
        }
        Ok(())
    }
}

struct Run<'a> {
    args: &'a Args,
    rng: StdRng,
    binary: PathBuf,
    config: PathBuf,
    model: Model,
    tasks: Vec<Task>,
    /// Requests with no reply, retried after the next restart.
    unanswered: Vec<Vec<Transfer>>,
    /// The newest timestamp of any created transfer verified so far: later ones must be
    /// newer (timestamps are never taken twice, even across restarts).
    timestamp_max: u64,
    restart_ms_last: u128,
    totals: Totals,
}

async fn run(args: &Args, seed: u64, dir: &std::path::Path) -> Result<String, String> {
    let binary = match &args.settled {
        Some(path) => path.clone(),
        None => daemon::sibling_settled()?,
    };
    let config = daemon::write_config(dir)?;
    let mut run = Run {
        args,
        rng: StdRng::seed_from_u64(seed),
        binary,
        config,
        model: Model::default(),
        tasks: (0..args.tasks)
            .map(|index| Task::new(index, seed))
            .collect(),
        unanswered: Vec::new(),
        timestamp_max: 0,
        restart_ms_last: 0,
        totals: Totals::default(),
    };
    let (mut daemon, addr) = run.start()?;
    run.create_accounts(addr).await?;
    let mut addr = addr;
    for cycle in 1..=args.cycles {
        let (next, next_addr, kills) = run
            .cycle(daemon, addr)
            .await
            .map_err(|error| format!("cycle {cycle}: {error}"))?;
        (daemon, addr) = (next, next_addr);
        let full = cycle % args.full_every == 0 || cycle == args.cycles;
        let verified = run
            .after_restart(addr, full)
            .await
            .map_err(|error| format!("cycle {cycle}, after the restart: {error}"))?;
        println!("cycle {cycle}/{}: {kills}; {verified}", args.cycles);
    }
    run.finish(daemon).await?;
    Ok(run.totals.to_string())
}

impl Run<'_> {
    fn start(&mut self) -> Result<(Daemon, SocketAddr), String> {
        let started = Instant::now();
        let mut daemon = daemon::spawn(&self.binary, &self.config)?;
        let addr = daemon.wait_listening(START_TIMEOUT)?;
        self.restart_ms_last = started.elapsed().as_millis();
        self.totals.restart_ms_max = self.totals.restart_ms_max.max(self.restart_ms_last);
        Ok((daemon, addr))
    }

    async fn create_accounts(&mut self, addr: SocketAddr) -> Result<(), String> {
        let client = connect(addr).await?;
        let accounts = model::accounts();
        let results = client
            .create_accounts(&accounts)
            .await
            .map_err(|error| format!("create_accounts: {error}"))?;
        for (account, result) in accounts.iter().zip(&results) {
            if result.account_status() != Ok(CreateAccountResult::Created) {
                return Err(format!(
                    "account {} not created: {:?}",
                    account.id,
                    result.account_status()
                ));
            }
            let mut account = *account;
            account.timestamp = result.timestamp;
            self.model.accounts.insert(account.id, account);
        }
        Ok(())
    }

    /// Load, kill at the chosen moment, sometimes kill again during recovery or right
    /// after listening, and restart; returns the daemon that now listens and what the
    /// kills were.
    async fn cycle(
        &mut self,
        mut daemon: Daemon,
        addr: SocketAddr,
    ) -> Result<(Daemon, SocketAddr, String), String> {
        let kill_at = self.kill_at();
        let handles = self.start_load(addr).await?;
        let load_started = Instant::now();
        let mut hit = self.wait_for_kill(&mut daemon, kill_at);
        daemon.kill()?;
        self.totals.kills += 1;
        for handle in handles {
            let task = handle
                .await
                .map_err(|error| format!("a load task failed: {error}"))?;
            self.tasks.push(task);
        }
        self.tasks.sort_by_key(|task| task.index);
        let (answered, unanswered) = self.absorb()?;
        hit.push_str(&format!(
            " after {} ms of load: {answered} requests answered, {unanswered} not",
            load_started.elapsed().as_millis()
        ));
        drop(daemon);
        self.kill_during_restart(&mut hit)?;
        let (daemon, addr) = self.start()?;
        hit.push_str(&format!("; restarted in {} ms", self.restart_ms_last));
        Ok((daemon, addr, hit))
    }

    fn kill_at(&mut self) -> KillAt {
        match self.rng.random_range(0..10) {
            0..4 => KillAt::Random {
                after_ms: self.rng.random_range(10..=self.args.load_ms_max),
            },
            4..7 => KillAt::Checkpoint {
                delay_us: self.rng.random_range(0..5_000),
            },
            _ => KillAt::SegmentCreated {
                delay_us: self.rng.random_range(0..2_000),
            },
        }
    }

    /// One task per `--tasks` on `--connections` connections, all sending.
    async fn start_load(
        &mut self,
        addr: SocketAddr,
    ) -> Result<Vec<tokio::task::JoinHandle<Task>>, String> {
        let mut clients = Vec::new();
        for _ in 0..self.args.connections {
            clients.push(connect(addr).await?);
        }
        let tasks = std::mem::take(&mut self.tasks);
        Ok(tasks
            .into_iter()
            .enumerate()
            .map(|(index, task)| {
                let client = clients[index % clients.len()].clone();
                tokio::spawn(task.run(client))
            })
            .collect())
    }

    /// Block until the moment `kill_at` names; returns what it was, for the report.
    fn wait_for_kill(&mut self, daemon: &mut Daemon, kill_at: KillAt) -> String {
        let (index, needle, delay_us) = match kill_at {
            KillAt::Random { after_ms } => {
                std::thread::sleep(Duration::from_millis(after_ms));
                self.totals.kills_during_load[0] += 1;
                return "killed at random".to_string();
            }
            KillAt::Checkpoint { delay_us } => (1, daemon::CHECKPOINT_STARTED, delay_us),
            KillAt::SegmentCreated { delay_us } => (2, daemon::SEGMENT_CREATED, delay_us),
        };
        self.totals.kills_during_load[index] += 1;
        // Some load first, then the next such moment.
        let warm_up_ms = self.rng.random_range(0..=self.args.load_ms_max / 2);
        std::thread::sleep(Duration::from_millis(warm_up_ms));
        daemon.drain_log("");
        let seen = daemon.wait_line(needle, Duration::from_secs(10)).is_some();
        std::thread::sleep(Duration::from_micros(delay_us));
        if seen {
            format!("killed {delay_us} us after `{needle}`")
        } else {
            format!("killed without `{needle}` in 10 s")
        }
    }

    /// Fold the cycle's requests into the model; unanswered ones wait for their retry.
    fn absorb(&mut self) -> Result<(u64, u64), String> {
        let (mut answered, mut unanswered) = (0, 0);
        let timestamp_max = self.timestamp_max;
        for task in &mut self.tasks {
            for sent in std::mem::take(&mut task.sent) {
                self.model.sent(&sent.events);
                let Some(results) = sent.results else {
                    // A lost connection is what a kill does; anything else is reported.
                    let error = sent.error.unwrap_or_default();
                    if !error.starts_with("disconnected") && !error.starts_with("i/o error") {
                        self.totals.other_errors.insert(error);
                    }
                    unanswered += 1;
                    self.unanswered.push(sent.events);
                    continue;
                };
                answered += 1;
                for (event, result) in sent.events.iter().zip(&results) {
                    let outcome = match result.transfer_status() {
                        Ok(protocol::CreateTransferResult::Created) => {
                            if result.timestamp <= timestamp_max {
                                return Err(format!(
                                    "transfer {} created with timestamp {}, not after the \
                                     newest before the kill, {timestamp_max}",
                                    event.id, result.timestamp
                                ));
                            }
                            Outcome::Created {
                                timestamp: result.timestamp,
                            }
                        }
                        _ => Outcome::Failed {
                            status: result.status,
                        },
                    };
                    self.model.set_outcome(event.id, outcome);
                }
            }
        }
        self.totals.requests_answered += answered;
        self.totals.requests_unanswered += unanswered;
        Ok((answered, unanswered))
    }

    /// Sometimes kill the restarting daemon during its recovery (a random instant up to
    /// about how long the last start took), sometimes right after it listens: before any
    /// retry, so the next start recovers the same directory again.
    fn kill_during_restart(&mut self, hit: &mut String) -> Result<(), String> {
        if self.rng.random_bool(0.3) {
            let limit_us = (self.restart_ms_last as u64 * 1000).max(2_000) * 3 / 2;
            let delay_us = self.rng.random_range(0..limit_us);
            let mut daemon = daemon::spawn(&self.binary, &self.config)?;
            std::thread::sleep(Duration::from_micros(delay_us));
            let listening = daemon.drain_log("listening on ");
            daemon.kill()?;
            self.totals.kills += 1;
            self.totals.kills_in_recovery += 1;
            let when = if listening { "after" } else { "before" };
            hit.push_str(&format!(
                "; killed again {delay_us} us into the start ({when} listening)"
            ));
        }
        if self.rng.random_bool(0.2) {
            let (mut daemon, _) = self.start()?;
            daemon.kill()?;
            self.totals.kills += 1;
            self.totals.kills_after_listening += 1;
            hit.push_str("; killed again right after listening");
        }
        Ok(())
    }

    /// Retry the unanswered requests, then verify everything; the report line's end.
    async fn after_restart(&mut self, addr: SocketAddr, full: bool) -> Result<String, String> {
        let client = connect(addr).await?;
        let unanswered = std::mem::take(&mut self.unanswered);
        let retried = check::retry(&client, &mut self.model, &unanswered).await?;
        for events in &unanswered {
            for event in events {
                let created = matches!(self.model.outcome(event.id), Outcome::Created { .. });
                if created && event.flags.contains(protocol::TransferFlags::PENDING) {
                    self.tasks[load::task_of(event.id) as usize].pending_created(*event);
                }
            }
        }
        let total = &mut self.totals.retried;
        total.requests += retried.requests;
        total.events += retried.events;
        total.applied_before += retried.applied_before;
        total.created_by_retry += retried.created_by_retry;
        total.failed += retried.failed;
        let verify_started = Instant::now();
        let scope = if full {
            check::Scope::Full
        } else {
            check::Scope::New {
                sample_seed: self.rng.random(),
            }
        };
        let verified = check::verify(&client, &mut self.model, scope).await?;
        let verify_ms = verify_started.elapsed().as_millis();
        self.timestamp_max = self
            .model
            .transfers
            .values()
            .filter_map(|entry| match entry.outcome {
                Outcome::Created { timestamp } => Some(timestamp),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let listed = if full {
            format!(", listed {} (a full check)", verified.transfers_listed)
        } else {
            String::new()
        };
        Ok(format!(
            "retried {} requests ({} events: {} applied before the kill, {} created by the \
             retry, {} failed); looked up {} transfers ({} created){listed}; checked in \
             {verify_ms} ms",
            retried.requests,
            retried.events,
            retried.applied_before,
            retried.created_by_retry,
            retried.failed,
            verified.transfers_looked_up,
            verified.transfers_created
        ))
    }

    /// A graceful stop exits 0; a start after it holds everything; `settled verify`
    /// passes on the directory.
    async fn finish(&mut self, mut daemon: Daemon) -> Result<(), String> {
        daemon.stop(STOP_TIMEOUT)?;
        let (mut daemon, addr) = self.start()?;
        let client = connect(addr).await?;
        check::verify(&client, &mut self.model, check::Scope::Full)
            .await
            .map_err(|error| format!("after a graceful stop and start: {error}"))?;
        drop(client);
        daemon.stop(STOP_TIMEOUT)?;
        let data_dir = self.config.with_file_name("data");
        let output = std::process::Command::new(&self.binary)
            .arg("verify")
            .arg(format!("--data-dir={}", data_dir.display()))
            .output()
            .map_err(|error| format!("cannot run settled verify: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "settled verify failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        println!(
            "graceful stop, start and `settled verify`: passed ({} transfers created in all)",
            self.model.created_count()
        );
        Ok(())
    }
}

async fn connect(addr: SocketAddr) -> Result<Client, String> {
    Client::connect(addr)
        .await
        .map_err(|error| format!("cannot connect to {addr}: {error}"))
}
