//! Creates two accounts and one transfer between them, then prints the results and the
//! balances. Run a daemon first, then:
//!
//! ```text
//! SETTLE_ADDR=127.0.0.1:3000 cargo run -p settled-client --example transfer
//! ```
//!
//! Ids are fixed, so a second run shows the idempotency rule: every result is `exists`
//! and the balances do not move.

use settled_client::{Account, Client, ClientError, Transfer};

const LEDGER_USD: u32 = 840;
const CODE_DEFAULT: u16 = 1;
const ALICE: u128 = 1_001;
const BOB: u128 = 1_002;
const TRANSFER_ID: u128 = 5_001;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let addr = std::env::var("SETTLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_string());
    let client = Client::connect(addr.as_str()).await?;
    println!("connected to {addr}");

    let accounts = [ALICE, BOB].map(|id| Account {
        id,
        ledger: LEDGER_USD,
        code: CODE_DEFAULT,
        ..Account::default()
    });
    for (account, result) in accounts
        .iter()
        .zip(client.create_accounts(&accounts).await?)
    {
        println!(
            "account {}: {}",
            account.id,
            status_name(result.account_status())
        );
    }

    let transfer = Transfer {
        id: TRANSFER_ID,
        debit_account_id: ALICE,
        credit_account_id: BOB,
        amount: 1_250, // $12.50 in cents
        ledger: LEDGER_USD,
        code: CODE_DEFAULT,
        ..Transfer::default()
    };
    for result in client.create_transfers(&[transfer]).await? {
        println!(
            "transfer {}: {}",
            transfer.id,
            status_name(result.transfer_status())
        );
    }

    for account in client.lookup_accounts(&[ALICE, BOB]).await? {
        println!(
            "account {}: debits_posted {} credits_posted {} (pending: {} / {})",
            account.id,
            account.debits_posted,
            account.credits_posted,
            account.debits_pending,
            account.credits_pending
        );
    }
    Ok(())
}

/// A result's name, or its raw code when this build does not know it.
fn status_name<T: std::fmt::Display>(
    status: Result<T, settled_client::protocol::UnknownResultCode>,
) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(unknown) => unknown.to_string(),
    }
}
