//! After the load: what the daemon acknowledged must be what it holds.
//!
//! - every transfer answered `created` is found by id with its amount and accounts, and
//!   none that failed is found;
//! - per ledger, debits equal credits (posted and pending) over every account of the
//!   ledger;
//! - the ledger's balances moved by exactly what was created: posted by the plain
//!   transfers and posts, pending by the pending transfers minus the ones resolved.

use client::Client;
use protocol::{Account, BATCH_EVENTS_MAX};
use settled_bench::pages::for_each_page;

use crate::load::Created;
use crate::workload::{Kind, Workload};

/// Sums over every account of one ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub accounts: u64,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
}

/// Every account of `ledger`, in pages of 8189 by timestamp.
pub async fn ledger_totals(client: &Client, ledger: u32) -> Result<Totals, String> {
    let mut totals = Totals::default();
    for_each_page(client, ledger, |_, page: &[Account]| {
        for account in page {
            totals.accounts += 1;
            totals.debits_pending += account.debits_pending;
            totals.debits_posted += account.debits_posted;
            totals.credits_pending += account.credits_pending;
            totals.credits_posted += account.credits_posted;
        }
    })
    .await?;
    Ok(totals)
}

/// The verdict, with the first problems found (at most a few of each kind).
#[derive(Debug, Default, serde::Serialize)]
pub struct Verification {
    pub transfers_checked: u64,
    pub created_found: u64,
    pub problems: Vec<String>,
}

const PROBLEMS_KEPT: usize = 10;

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < PROBLEMS_KEPT {
            self.problems.push(text);
        }
    }
}

pub async fn verify(
    client: &Client,
    workload: &Workload,
    created: &Created,
    before: Totals,
) -> Result<Verification, String> {
    let mut verification = Verification::default();
    check_transfers(client, workload, created, &mut verification).await?;
    let after = ledger_totals(client, workload.ledger).await?;
    check_totals(workload, created, before, after, &mut verification);
    Ok(verification)
}

async fn check_transfers(
    client: &Client,
    workload: &Workload,
    created: &Created,
    verification: &mut Verification,
) -> Result<(), String> {
    let chunk = u64::from(BATCH_EVENTS_MAX);
    let mut start = 0;
    while start < workload.transfers {
        let end = (start + chunk).min(workload.transfers);
        let ids: Vec<u128> = (start..end).map(|seq| workload.transfer_id(seq)).collect();
        let found = client
            .lookup_transfers(&ids)
            .await
            .map_err(|error| format!("lookup_transfers: {error}"))?;
        // Replies list the transfers that exist, in the order asked.
        let mut found = found.into_iter().peekable();
        for seq in start..end {
            let id = workload.transfer_id(seq);
            let transfer = found.next_if(|transfer| transfer.id == id);
            verification.transfers_checked += 1;
            match (created.contains(seq), transfer) {
                (true, Some(transfer)) => {
                    verification.created_found += 1;
                    let expected = workload.transfer(seq);
                    if transfer.amount != expected.amount
                        || transfer.debit_account_id != expected.debit_account_id
                        || transfer.credit_account_id != expected.credit_account_id
                    {
                        verification.problem(format!(
                            "transfer {id}: found amount {} from {} to {}, sent {} from {} to {}",
                            transfer.amount,
                            transfer.debit_account_id,
                            transfer.credit_account_id,
                            expected.amount,
                            expected.debit_account_id,
                            expected.credit_account_id
                        ));
                    }
                }
                (true, None) => verification
                    .problem(format!("transfer {id} was answered created but is missing")),
                (false, Some(_)) => {
                    verification.problem(format!("transfer {id} failed yet exists"))
                }
                (false, None) => {}
            }
        }
        if let Some(extra) = found.next() {
            verification.problem(format!(
                "lookup returned transfer {} out of order",
                extra.id
            ));
        }
        start = end;
    }
    Ok(())
}

fn check_totals(
    workload: &Workload,
    created: &Created,
    before: Totals,
    after: Totals,
    verification: &mut Verification,
) {
    let ledger = workload.ledger;
    if after.debits_posted != after.credits_posted {
        verification.problem(format!(
            "ledger {ledger}: debits posted {} != credits posted {}",
            after.debits_posted, after.credits_posted
        ));
    }
    if after.debits_pending != after.credits_pending {
        verification.problem(format!(
            "ledger {ledger}: debits pending {} != credits pending {}",
            after.debits_pending, after.credits_pending
        ));
    }
    let (mut posted, mut pending_added, mut pending_released) = (0u128, 0u128, 0u128);
    for seq in (0..workload.transfers).filter(|seq| created.contains(*seq)) {
        let amount = workload.amount_expected(seq);
        match workload.kind(seq) {
            Kind::Plain => posted += amount,
            Kind::Pending => pending_added += amount,
            Kind::Post { .. } => {
                posted += amount;
                pending_released += amount;
            }
            Kind::Void { .. } => pending_released += amount,
        }
    }
    let posted_moved = after.debits_posted.wrapping_sub(before.debits_posted);
    if posted_moved != posted {
        verification.problem(format!(
            "ledger {ledger}: debits posted moved by {posted_moved}, the created transfers \
             add up to {posted}"
        ));
    }
    let pending_expected = before.debits_pending + pending_added - pending_released;
    if after.debits_pending != pending_expected {
        verification.problem(format!(
            "ledger {ledger}: debits pending {} != {} before + {pending_added} pending created \
             - {pending_released} resolved",
            after.debits_pending, before.debits_pending
        ));
    }
}
