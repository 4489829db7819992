//! `settle`: the command line of settled, for operators and scripts.
//!
//! Machine commands read and write JSON Lines with the field names of SEMANTICS.md; human
//! commands take decimal amounts in the ledger's asset (scale from the config's
//! `[[ledgers]]`). Exit status: 0 when every request got a reply (a failed event is a
//! result, not an error), 1 with a one-line message on bad input, connection or protocol
//! failure.

mod amount;
mod batches;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use amount::{find_ledger, format_amount, parse_amount, parse_timeout_seconds};
use clap::{Args, Parser, Subcommand};
use protocol::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult, CreateResult,
    CreateTransferResult, LedgerAsset, QueryFilter, QueryFilterFlags, Transfer, TransferFlags,
    BATCH_EVENTS_MAX,
};
use serde_json::Value;
use settled_client::blocking::Client;
use settled_client::json;
use settled_client::{ClientOptions, TlsOptions};

#[derive(Parser)]
#[command(
    name = "settle",
    version,
    about = "Command line client of the settled ledger",
    after_help = "Examples:\n  settle account create --ledger USD\n  SETTLE_TOKEN=... settle --addr ledger.internal:3000 --tls-ca ca.pem balance 2\n  settle transfer --from 1 --to 2 --amount 12.34 --ledger USD\n  settle balance 2\n  settle create-transfers transfers.jsonl\n  settle lookup-accounts 1 2"
)]
struct Cli {
    #[command(flatten)]
    connect: Connect,
    /// Config file with the `[[ledgers]]` table (asset codes and decimal scales), for the
    /// human commands. Default: $SETTLED_CONFIG, else config/settled.toml if present. A
    /// file without `[[ledgers]]`, or no file, gives the daemon's built-in ledgers: USD
    /// (840, scale 2), JPY (392, 0), EUR (978, 2).
    #[arg(long, env = "SETTLED_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where the daemon is and how to reach it.
#[derive(Args)]
struct Connect {
    /// Address of the settled daemon.
    #[arg(
        long,
        env = "SETTLE_ADDR",
        default_value = "127.0.0.1:3000",
        global = true
    )]
    addr: String,
    /// Connect over TLS. Needs --tls-ca: settle trusts only the CA it is given.
    #[arg(long, global = true, requires = "tls_ca")]
    tls: bool,
    /// PEM file of the CA that signed the daemon's certificate (implies --tls).
    #[arg(long, value_name = "FILE", env = "SETTLE_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Name the daemon's certificate must carry [default: the host of --addr].
    #[arg(long, value_name = "NAME", global = true)]
    tls_server_name: Option<String>,
    /// Client certificate (PEM) for a daemon that requires one (tls_client_ca_file).
    #[arg(long, value_name = "FILE", global = true, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Client token for a daemon that lists [[clients]]. Prefer the environment variable,
    /// which keeps the token out of shell history and `ps`.
    #[arg(long, env = "SETTLE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create accounts from JSON Lines (FILE or - for stdin); one result line per event.
    CreateAccounts { file: String },
    /// Create transfers from JSON Lines (FILE or - for stdin); one result line per event.
    CreateTransfers { file: String },
    /// Print the accounts with these ids (missing ids print nothing).
    LookupAccounts {
        #[arg(required = true)]
        ids: Vec<u128>,
    },
    /// Print the transfers with these ids (missing ids print nothing).
    LookupTransfers {
        #[arg(required = true)]
        ids: Vec<u128>,
    },
    /// Transfers of one account, oldest first unless --reversed.
    GetAccountTransfers(AccountFilterArgs),
    /// Balance history of one account (accounts with the `history` flag).
    GetAccountBalances(AccountFilterArgs),
    /// Accounts matching a filter.
    QueryAccounts(QueryFilterArgs),
    /// Transfers matching a filter.
    QueryTransfers(QueryFilterArgs),
    /// Accounts in human terms.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Move an amount between two accounts, in the ledger's asset.
    Transfer(TransferArgs),
    /// Print an account's posted balance (credits - debits) in its asset, e.g. "123.45 USD".
    Balance { id: u128 },
}

#[derive(Args)]
struct AccountFilterArgs {
    #[arg(long)]
    account_id: u128,
    #[arg(long, default_value_t = 0)]
    user_data_128: u128,
    #[arg(long, default_value_t = 0)]
    user_data_64: u64,
    #[arg(long, default_value_t = 0)]
    user_data_32: u32,
    #[arg(long, default_value_t = 0)]
    code: u16,
    /// Only objects at or after this timestamp (ns); 0 = no bound.
    #[arg(long, default_value_t = 0)]
    timestamp_min: u64,
    /// Only objects at or before this timestamp (ns); 0 = no bound.
    #[arg(long, default_value_t = 0)]
    timestamp_max: u64,
    #[arg(long, default_value_t = BATCH_EVENTS_MAX)]
    limit: u32,
    /// Transfers where the account is debited (default: both sides).
    #[arg(long)]
    debits: bool,
    /// Transfers where the account is credited (default: both sides).
    #[arg(long)]
    credits: bool,
    /// Newest first.
    #[arg(long)]
    reversed: bool,
}

#[derive(Args)]
struct QueryFilterArgs {
    #[arg(long, default_value_t = 0)]
    user_data_128: u128,
    #[arg(long, default_value_t = 0)]
    user_data_64: u64,
    #[arg(long, default_value_t = 0)]
    user_data_32: u32,
    #[arg(long, default_value_t = 0)]
    ledger: u32,
    #[arg(long, default_value_t = 0)]
    code: u16,
    #[arg(long, default_value_t = 0)]
    timestamp_min: u64,
    #[arg(long, default_value_t = 0)]
    timestamp_max: u64,
    #[arg(long, default_value_t = BATCH_EVENTS_MAX)]
    limit: u32,
    #[arg(long)]
    reversed: bool,
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account on a ledger (asset code or ledger id).
    Create {
        #[arg(long)]
        ledger: String,
        /// Account id (default: a new random id, printed).
        #[arg(long)]
        id: Option<u128>,
        #[arg(long, default_value_t = 1)]
        code: u16,
        /// Flag names, comma separated (e.g. debits_must_not_exceed_credits,history).
        #[arg(long, value_delimiter = ',')]
        flags: Vec<String>,
    },
}

#[derive(Args)]
struct TransferArgs {
    /// Debit account id.
    #[arg(long)]
    from: u128,
    /// Credit account id.
    #[arg(long)]
    to: u128,
    /// Decimal amount in the ledger's asset, e.g. 12.34.
    #[arg(long)]
    amount: String,
    /// Asset code (USD) or ledger id.
    #[arg(long)]
    ledger: String,
    /// Reserve the amount (two-phase); post or void it later.
    #[arg(long)]
    pending: bool,
    /// With --pending: void automatically after this long (30s, 5m, 2h).
    #[arg(long, requires = "pending")]
    timeout: Option<String>,
    /// Transfer id (default: a new random id, printed).
    #[arg(long)]
    id: Option<u128>,
    #[arg(long, default_value_t = 1)]
    code: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("settle: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    // Input is validated before connecting: a typo never half-applies a file.
    match cli.command {
        Command::CreateAccounts { file } => {
            let accounts = read_events(&file, json::account_from_json)?;
            let linked = accounts
                .iter()
                .map(|a| a.flags.contains(AccountFlags::LINKED));
            let client = connect(&cli.connect)?;
            send_in_requests(
                &accounts,
                linked,
                |chunk| client.create_accounts(chunk),
                |event| event.id,
                create_account_name,
            )
        }
        Command::CreateTransfers { file } => {
            let transfers = read_events(&file, json::transfer_from_json)?;
            let linked = transfers
                .iter()
                .map(|t| t.flags.contains(TransferFlags::LINKED));
            let client = connect(&cli.connect)?;
            send_in_requests(
                &transfers,
                linked,
                |chunk| client.create_transfers(chunk),
                |event| event.id,
                create_transfer_name,
            )
        }
        Command::LookupAccounts { ids } => {
            let found = connect(&cli.connect)?
                .lookup_accounts(&ids)
                .map_err(|e| e.to_string())?;
            print_lines(found.iter().map(json::account_to_json))
        }
        Command::LookupTransfers { ids } => {
            let found = connect(&cli.connect)?
                .lookup_transfers(&ids)
                .map_err(|e| e.to_string())?;
            print_lines(found.iter().map(json::transfer_to_json))
        }
        Command::GetAccountTransfers(args) => {
            let found = connect(&cli.connect)?
                .get_account_transfers(account_filter(&args))
                .map_err(|e| e.to_string())?;
            print_lines(found.iter().map(json::transfer_to_json))
        }
        Command::GetAccountBalances(args) => {
            let found = connect(&cli.connect)?
                .get_account_balances(account_filter(&args))
                .map_err(|e| e.to_string())?;
            print_lines(found.iter().map(json::balance_to_json))
        }
        Command::QueryAccounts(args) => {
            let found = connect(&cli.connect)?
                .query_accounts(query_filter(&args))
                .map_err(|e| e.to_string())?;
            print_lines(found.iter().map(json::account_to_json))
        }
        Command::QueryTransfers(args) => {
            let found = connect(&cli.connect)?
                .query_transfers(query_filter(&args))
                .map_err(|e| e.to_string())?;
            print_lines(found.iter().map(json::transfer_to_json))
        }
        Command::Account(AccountCommand::Create {
            ledger,
            id,
            code,
            flags,
        }) => {
            let ledgers = load_ledgers(cli.config.as_ref())?;
            create_account(
                &cli.connect,
                find_ledger(&ledgers, &ledger)?,
                id,
                code,
                &flags,
            )
        }
        Command::Transfer(args) => {
            let ledgers = load_ledgers(cli.config.as_ref())?;
            transfer(&cli.connect, &ledgers, &args)
        }
        Command::Balance { id } => {
            let ledgers = load_ledgers(cli.config.as_ref())?;
            balance(&cli.connect, &ledgers, id)
        }
    }
}

fn connect(connect: &Connect) -> Result<Client, String> {
    let addr = &connect.addr;
    let options = client_options(connect)?;
    Client::connect_with(addr.as_str(), options)
        .map_err(|error| format!("cannot reach settled at {addr}: {error}"))
}

/// TLS (when --tls or --tls-ca) and the token, from the flags.
fn client_options(connect: &Connect) -> Result<ClientOptions, String> {
    let tls = match &connect.tls_ca {
        None => None,
        Some(ca) => {
            let server_name = match &connect.tls_server_name {
                Some(name) => name.clone(),
                None => host_of(&connect.addr).to_string(),
            };
            let mut tls = TlsOptions::from_ca_file(ca, &server_name)
                .map_err(|error| format!("--tls-ca: {error}"))?;
            if let (Some(cert), Some(key)) = (&connect.tls_cert, &connect.tls_key) {
                tls = tls
                    .with_client_identity_files(cert, key)
                    .map_err(|error| format!("--tls-cert/--tls-key: {error}"))?;
            }
            Some(tls)
        }
    };
    Ok(ClientOptions {
        tls,
        token: connect.token.clone().filter(|token| !token.is_empty()),
        ..ClientOptions::default()
    })
}

/// The host part of `HOST:PORT` (`[::1]:3000` gives `::1`).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host)
}

/// Parse every line of `file` (or stdin for `-`); blank lines are skipped, errors name
/// the line.
fn read_events<T>(
    file: &str,
    parse: impl Fn(&Value) -> Result<T, json::FieldError>,
) -> Result<Vec<T>, String> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file).map_err(|error| format!("{file}: {error}"))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let mut events = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|error| format!("{file}: {error}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line)
            .map_err(|error| format!("{file}:{}: not JSON: {error}", index + 1))?;
        events.push(parse(&value).map_err(|error| format!("{file}:{}: {error}", index + 1))?);
    }
    Ok(events)
}

/// Send `events` in requests of up to `BATCH_EVENTS_MAX`, never splitting a linked chain,
/// and print one result line per event in file order.
fn send_in_requests<T>(
    events: &[T],
    linked: impl Iterator<Item = bool>,
    send: impl Fn(&[T]) -> Result<Vec<CreateResult>, settled_client::ClientError>,
    id: impl Fn(&T) -> u128,
    status_name: fn(u32) -> String,
) -> Result<(), String> {
    let linked: Vec<bool> = linked.collect();
    let ends = batches::request_ends(&linked, BATCH_EVENTS_MAX as usize).map_err(|start| {
        format!("linked chain starting at event {start} is longer than {BATCH_EVENTS_MAX} events")
    })?;
    let mut out = std::io::stdout().lock();
    let mut start = 0;
    for end in ends {
        let results = send(&events[start..end]).map_err(|error| error.to_string())?;
        for (offset, (event, result)) in events[start..end].iter().zip(&results).enumerate() {
            let line = serde_json::json!({
                "index": start + offset,
                "id": id(event).to_string(),
                "status": status_name(result.status),
                "timestamp": result.timestamp.to_string(),
            });
            writeln!(out, "{line}").map_err(|error| error.to_string())?;
        }
        start = end;
    }
    out.flush().map_err(|error| error.to_string())
}

fn create_account_name(code: u32) -> String {
    CreateAccountResult::from_code(code)
        .map_or_else(|_| format!("unknown_{code}"), |r| r.as_str().to_string())
}

fn create_transfer_name(code: u32) -> String {
    CreateTransferResult::from_code(code)
        .map_or_else(|_| format!("unknown_{code}"), |r| r.as_str().to_string())
}

fn print_lines(lines: impl Iterator<Item = Value>) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(|error| error.to_string())?;
    }
    out.flush().map_err(|error| error.to_string())
}

fn account_filter(args: &AccountFilterArgs) -> AccountFilter {
    let mut flags = 0;
    // Neither side given means both, as a person would expect.
    let both = !args.debits && !args.credits;
    if args.debits || both {
        flags |= AccountFilterFlags::DEBITS.0;
    }
    if args.credits || both {
        flags |= AccountFilterFlags::CREDITS.0;
    }
    if args.reversed {
        flags |= AccountFilterFlags::REVERSED.0;
    }
    AccountFilter {
        account_id: args.account_id,
        user_data_128: args.user_data_128,
        user_data_64: args.user_data_64,
        user_data_32: args.user_data_32,
        code: args.code,
        timestamp_min: args.timestamp_min,
        timestamp_max: args.timestamp_max,
        limit: args.limit,
        flags: AccountFilterFlags(flags),
        ..AccountFilter::default()
    }
}

fn query_filter(args: &QueryFilterArgs) -> QueryFilter {
    QueryFilter {
        user_data_128: args.user_data_128,
        user_data_64: args.user_data_64,
        user_data_32: args.user_data_32,
        ledger: args.ledger,
        code: args.code,
        timestamp_min: args.timestamp_min,
        timestamp_max: args.timestamp_max,
        limit: args.limit,
        flags: if args.reversed {
            QueryFilterFlags::REVERSED
        } else {
            QueryFilterFlags::default()
        },
        ..QueryFilter::default()
    }
}

/// The `[[ledgers]]` table of the config file (other keys are the daemon's business),
/// checked by the same rules the daemon applies; the built-in ledgers when the file lists
/// none or there is no file.
fn load_ledgers(path: Option<&PathBuf>) -> Result<Vec<LedgerAsset>, String> {
    #[derive(serde::Deserialize)]
    struct LedgersOnly {
        #[serde(default = "protocol::ledgers_default")]
        ledgers: Vec<LedgerAsset>,
    }
    let default_path = PathBuf::from("config/settled.toml");
    let path = match path {
        Some(path) => path.clone(),
        None if default_path.exists() => default_path,
        None => return Ok(protocol::ledgers_default()),
    };
    let text =
        std::fs::read_to_string(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    let parsed: LedgersOnly =
        toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))?;
    protocol::ledgers_validate(&parsed.ledgers)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(parsed.ledgers)
}

/// A new id: milliseconds since the epoch in the high bits (so ids sort by creation time,
/// which keeps RocksDB's key order close to insertion order) and 80 random bits.
fn new_id() -> u128 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    (millis << 80) | (rand::random::<u128>() >> 48)
}

fn create_account(
    addr: &Connect,
    ledger: &LedgerAsset,
    id: Option<u128>,
    code: u16,
    flag_names: &[String],
) -> Result<(), String> {
    let mut flags = AccountFlags::default();
    for name in flag_names {
        flags |= AccountFlags::from_name(name)
            .ok_or_else(|| format!("unknown account flag `{name}`"))?;
    }
    let id = id.unwrap_or_else(new_id);
    let account = Account {
        id,
        ledger: ledger.id,
        code,
        flags,
        ..Account::default()
    };
    let results = connect(addr)?
        .create_accounts(&[account])
        .map_err(|e| e.to_string())?;
    let status = create_account_name(results[0].status);
    println!("account {id} on {} ({}): {status}", ledger.asset, ledger.id);
    Ok(())
}

fn transfer(addr: &Connect, ledgers: &[LedgerAsset], args: &TransferArgs) -> Result<(), String> {
    let ledger = find_ledger(ledgers, &args.ledger)?;
    let amount = parse_amount(&args.amount, u32::from(ledger.scale))?;
    let timeout = args
        .timeout
        .as_deref()
        .map(parse_timeout_seconds)
        .transpose()?
        .unwrap_or(0);
    let id = args.id.unwrap_or_else(new_id);
    let transfer = Transfer {
        id,
        debit_account_id: args.from,
        credit_account_id: args.to,
        amount,
        timeout,
        ledger: ledger.id,
        code: args.code,
        flags: if args.pending {
            TransferFlags::PENDING
        } else {
            TransferFlags::default()
        },
        ..Transfer::default()
    };
    let results = connect(addr)?
        .create_transfers(&[transfer])
        .map_err(|e| e.to_string())?;
    let status = create_transfer_name(results[0].status);
    let shown = format_amount(false, amount, u32::from(ledger.scale));
    let kind = if args.pending {
        "pending transfer"
    } else {
        "transfer"
    };
    println!(
        "{kind} {id}: {shown} {} from {} to {}: {status}",
        ledger.asset, args.from, args.to
    );
    Ok(())
}

fn balance(addr: &Connect, ledgers: &[LedgerAsset], id: u128) -> Result<(), String> {
    let found = connect(addr)?
        .lookup_accounts(&[id])
        .map_err(|e| e.to_string())?;
    let account = found
        .first()
        .ok_or_else(|| format!("account {id} not found"))?;
    let (credits, debits) = (account.credits_posted, account.debits_posted);
    let (negative, units) = if credits >= debits {
        (false, credits - debits)
    } else {
        (true, debits - credits)
    };
    match ledgers.iter().find(|ledger| ledger.id == account.ledger) {
        Some(ledger) => println!(
            "{} {}",
            format_amount(negative, units, u32::from(ledger.scale)),
            ledger.asset
        ),
        None => println!(
            "{} (ledger {}, no asset configured)",
            format_amount(negative, units, 0),
            account.ledger
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host_of_the_address() {
        assert_eq!(host_of("ledger.internal:3000"), "ledger.internal");
        assert_eq!(host_of("127.0.0.1:3000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:3000"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn tls_flags_need_their_companions() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["settle", "--tls", "balance", "1"]).is_err());
        assert!(parse(&[
            "settle",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "balance",
            "1"
        ])
        .is_err());
        let cli = parse(&[
            "settle", "balance", "1", "--tls", "--tls-ca", "ca.pem", "--token", "t",
        ])
        .unwrap();
        assert!(cli.connect.tls);
        assert_eq!(cli.connect.tls_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(cli.connect.token.as_deref(), Some("t"));
    }
}
