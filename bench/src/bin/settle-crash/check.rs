//! After a restart: retry what was never answered, then hold the daemon to the record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use client::{Client, ClientError, ErrorCode};
use protocol::{
    Account, CreateResult, CreateTransferResult, QueryFilter, Transfer, BATCH_EVENTS_MAX,
};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use settled_bench::pages::for_each_page;

use crate::model::{transfer_difference, Model, Outcome, LEDGERS};

/// Problems reported at most, per verification.
const PROBLEMS_KEPT: usize = 20;
/// Refusals (`busy`) of one retry before giving up.
const REFUSALS_MAX: u32 = 100;

#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    fn add(&mut self, problem: String) {
        if self.0.len() < PROBLEMS_KEPT {
            self.0.push(problem);
        }
    }

    fn into_result(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("\n"))
        }
    }
}

/// What the retries found.
#[derive(Clone, Copy, Default, Debug)]
pub struct Retried {
    pub requests: u64,
    pub events: u64,
    /// Applied before the kill: found before the retry, which answered `exists` (or
    /// `linked_event_failed` after its chain's `exists`).
    pub applied_before: u64,
    /// Not applied before the kill, created by the retry.
    pub created_by_retry: u64,
    /// Failed, by the retry or (`id_already_failed`) before the kill.
    pub failed: u64,
}

/// Send every unanswered request once more, with the same ids, and check each answer
/// against what the daemon held before the retry: an event already applied must answer
/// `exists` (with its stored timestamp), never be applied a second time; one not applied
/// is applied by the retry exactly when it answers `created`.
pub async fn retry(
    client: &Client,
    model: &mut Model,
    unanswered: &[Vec<Transfer>],
) -> Result<Retried, String> {
    let ids: Vec<u128> = unanswered.iter().flatten().map(|event| event.id).collect();
    let before = lookup_transfers(client, &ids).await?;
    let mut problems = Problems::default();
    check_chains_whole(model, &ids, &before, &mut problems);
    let mut retried = Retried::default();
    for events in unanswered {
        let results = create_transfers(client, events).await?;
        retried.requests += 1;
        for (event, result) in events.iter().zip(&results) {
            retried.events += 1;
            let outcome = retry_outcome(model, event.id, before.get(&event.id), result);
            match outcome {
                Ok(outcome) => {
                    match (before.contains_key(&event.id), outcome) {
                        (true, _) => retried.applied_before += 1,
                        (false, Outcome::Created { .. }) => retried.created_by_retry += 1,
                        (false, _) => retried.failed += 1,
                    }
                    model.set_outcome(event.id, outcome);
                }
                Err(problem) => problems.add(problem),
            }
        }
    }
    problems.into_result()?;
    Ok(retried)
}

/// The outcome an event's retry shows, or why the answer is wrong.
fn retry_outcome(
    model: &Model,
    id: u128,
    found_before: Option<&Transfer>,
    result: &CreateResult,
) -> Result<Outcome, String> {
    let status = result
        .transfer_status()
        .map_err(|code| format!("retry of transfer {id}: unknown result code {code}"))?;
    let entry = &model.transfers[&id];
    match (found_before, status) {
        (Some(found), CreateTransferResult::Exists) if result.timestamp == found.timestamp => {
            Ok(Outcome::Created {
                timestamp: found.timestamp,
            })
        }
        (Some(found), CreateTransferResult::LinkedEventFailed) if entry.chain_head.is_some() => {
            Ok(Outcome::Created {
                timestamp: found.timestamp,
            })
        }
        (Some(found), status) => Err(format!(
            "transfer {id} was applied before the kill (timestamp {}), yet its retry answered \
             {status} with timestamp {}",
            found.timestamp, result.timestamp
        )),
        (None, CreateTransferResult::Created) => Ok(Outcome::Created {
            timestamp: result.timestamp,
        }),
        (None, CreateTransferResult::Exists) => Err(format!(
            "transfer {id} was not found before its retry, yet the retry answered exists"
        )),
        (None, status) => Ok(Outcome::Failed {
            status: status.code(),
        }),
    }
}

/// A linked chain is applied whole or not at all.
fn check_chains_whole(
    model: &Model,
    ids: &[u128],
    found: &BTreeMap<u128, Transfer>,
    problems: &mut Problems,
) {
    let mut chains: BTreeMap<u128, BTreeSet<bool>> = BTreeMap::new();
    for id in ids {
        if let Some(head) = model.transfers[id].chain_head {
            chains
                .entry(head)
                .or_default()
                .insert(found.contains_key(id));
        }
    }
    for (head, present) in chains {
        if present.len() > 1 {
            problems.add(format!(
                "the linked chain starting at transfer {head} is partly applied"
            ));
        }
    }
}

/// Counts of a verification that passed.
#[derive(Clone, Copy, Default, Debug)]
pub struct Verified {
    pub transfers_looked_up: u64,
    pub transfers_created: u64,
    pub transfers_listed: u64,
}

/// How much of the history a verification looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every transfer ever sent, and a listing of each ledger.
    Full,
    /// The transfers no verification has looked up yet, and a random sample of the others
    /// (the accounts' balances still stand for every created transfer).
    New { sample_seed: u64 },
}

/// Older transfers looked up by a [`Scope::New`] verification.
const SAMPLE_MAX: usize = BATCH_EVENTS_MAX as usize;

/// Every transfer looked up is present exactly when it was created, with exactly the
/// fields it must have; listing each ledger (in a full verification) shows no transfer
/// that was never created and none twice; every account holds exactly the balances the
/// created transfers imply; per ledger, debits equal credits. Marks the transfers looked
/// up as verified when everything held.
pub async fn verify(client: &Client, model: &mut Model, scope: Scope) -> Result<Verified, String> {
    let unknown = model.unknown_ids();
    if let Some(id) = unknown.first() {
        return Err(format!(
            "{} transfers (the first {id}) have no known outcome at verification",
            unknown.len()
        ));
    }
    let mut problems = Problems::default();
    let mut verified = Verified::default();
    let ids = ids_in_scope(model, scope);
    let found = lookup_transfers(client, &ids).await?;
    verified.transfers_looked_up = ids.len() as u64;
    for id in &ids {
        match (model.expected_transfer(*id), found.get(id)) {
            (Some(expected), Some(found)) => {
                verified.transfers_created += 1;
                if let Some(difference) = transfer_difference(found, &expected) {
                    problems.add(format!("transfer {id}: {difference}"));
                }
            }
            (Some(_), None) => problems.add(format!("transfer {id} was created but is missing")),
            (None, Some(_)) => problems.add(format!(
                "transfer {id} is present, yet its outcome was {:?}",
                model.outcome(*id)
            )),
            (None, None) => {}
        }
    }
    if scope == Scope::Full {
        verified.transfers_listed = check_listing(client, model, &mut problems).await?;
    }
    check_accounts(client, model, &mut problems).await?;
    problems.into_result()?;
    for id in &ids {
        model.transfers.get_mut(id).expect("sent").verified = true;
    }
    Ok(verified)
}

fn ids_in_scope(model: &Model, scope: Scope) -> Vec<u128> {
    let Scope::New { sample_seed } = scope else {
        return model.transfers.keys().copied().collect();
    };
    let mut ids = Vec::new();
    let mut older = Vec::new();
    for (id, entry) in &model.transfers {
        if entry.verified {
            older.push(*id);
        } else {
            ids.push(*id);
        }
    }
    let mut rng = StdRng::seed_from_u64(sample_seed);
    ids.extend(older.choose_multiple(&mut rng, SAMPLE_MAX).copied());
    ids.sort_unstable();
    ids
}

/// Each ledger's transfers, listed by timestamp: only created ones, each once, as many as
/// were created.
async fn check_listing(
    client: &Client,
    model: &Model,
    problems: &mut Problems,
) -> Result<u64, String> {
    let created = model.created_per_ledger();
    let mut listed_total = 0;
    for ledger in LEDGERS {
        let mut seen = BTreeSet::new();
        for_each_page(client, ledger, |timestamp_min, page: &[Transfer]| {
            for transfer in page {
                if !seen.insert(transfer.id) {
                    problems.add(format!("transfer {} is listed twice", transfer.id));
                }
                if model.expected_transfer(transfer.id).is_none() {
                    problems.add(format!(
                        "ledger {ledger} lists transfer {}, which was never created",
                        transfer.id
                    ));
                }
                if transfer.timestamp < timestamp_min {
                    problems.add(format!(
                        "ledger {ledger}: transfer {} listed out of timestamp order",
                        transfer.id
                    ));
                }
            }
        })
        .await?;
        let expected = created.get(&ledger).copied().unwrap_or(0);
        if seen.len() as u64 != expected {
            problems.add(format!(
                "ledger {ledger} lists {} transfers, {expected} were created",
                seen.len()
            ));
        }
        listed_total += seen.len() as u64;
    }
    Ok(listed_total)
}

/// Every account exactly as expected, and per ledger debits == credits (over a query of
/// the ledger's accounts, so an account nobody created would count too).
async fn check_accounts(
    client: &Client,
    model: &Model,
    problems: &mut Problems,
) -> Result<(), String> {
    let balances = model.expected_balances();
    let ids: Vec<u128> = model.accounts.keys().copied().collect();
    let found = client
        .lookup_accounts(&ids)
        .await
        .map_err(|error| format!("lookup_accounts: {error}"))?;
    let found: BTreeMap<u128, Account> = found.into_iter().map(|a| (a.id, a)).collect();
    for id in &ids {
        let expected = model.expected_account(*id, &balances);
        match found.get(id) {
            None => problems.add(format!("account {id} is missing")),
            Some(found) if *found != expected => problems.add(format!(
                "account {id}: found {}, expected {}",
                account_text(found),
                account_text(&expected)
            )),
            Some(_) => {}
        }
    }
    for ledger in LEDGERS {
        let filter = QueryFilter {
            ledger,
            limit: BATCH_EVENTS_MAX,
            ..QueryFilter::default()
        };
        let accounts = client
            .query_accounts(filter)
            .await
            .map_err(|error| format!("query_accounts on ledger {ledger}: {error}"))?;
        let sum = |field: fn(&Account) -> u128| accounts.iter().map(field).sum::<u128>();
        let debits = (sum(|a| a.debits_posted), sum(|a| a.debits_pending));
        let credits = (sum(|a| a.credits_posted), sum(|a| a.credits_pending));
        if debits != credits {
            problems.add(format!(
                "ledger {ledger}: debits (posted, pending) {debits:?} != credits {credits:?}"
            ));
        }
    }
    Ok(())
}

fn account_text(account: &Account) -> String {
    format!(
        "debits pending {} posted {}, credits pending {} posted {}, flags {:#x}, timestamp {}",
        account.debits_pending,
        account.debits_posted,
        account.credits_pending,
        account.credits_posted,
        account.flags.bits(),
        account.timestamp
    )
}

/// The transfers that exist among `ids`, by id.
pub async fn lookup_transfers(
    client: &Client,
    ids: &[u128],
) -> Result<BTreeMap<u128, Transfer>, String> {
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(BATCH_EVENTS_MAX as usize) {
        let transfers = client
            .lookup_transfers(chunk)
            .await
            .map_err(|error| format!("lookup_transfers: {error}"))?;
        for transfer in transfers {
            if found.insert(transfer.id, transfer).is_some() {
                return Err(format!("lookup_transfers returned {} twice", transfer.id));
            }
        }
    }
    Ok(found)
}

/// One request, sent again while the daemon answers `busy` (not applied).
pub async fn create_transfers(
    client: &Client,
    events: &[Transfer],
) -> Result<Vec<CreateResult>, String> {
    let mut refusals = 0;
    loop {
        match client.create_transfers(events).await {
            Ok(results) => return Ok(results),
            Err(ClientError::Server {
                code: ErrorCode::Busy,
                ..
            }) if refusals < REFUSALS_MAX => {
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => return Err(format!("create_transfers after the restart: {error}")),
        }
    }
}
