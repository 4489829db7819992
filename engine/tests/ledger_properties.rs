//! Property tests of the ledger over random mixed batches (plain, pending, post, void,
//! linked, balancing, closing, retries, expiry, and failures of many kinds).
//!
//! After every step they check what SEMANTICS.md promises:
//! - per ledger, sum of debits == sum of credits, posted and pending;
//! - no balance rule is ever broken;
//! - every created transfer changes exactly its two accounts, by its amount (a model of
//!   the balances is advanced from the results and compared with the ledger);
//! - a failed linked chain leaves no trace (the state equals that of a history where the
//!   chain's events were no-ops), and events outside it get the same results;
//! - two ledgers fed the same inputs have the same results and state hash.

use std::collections::BTreeMap;

use proptest::prelude::*;
use protocol::{
    Account, AccountFlags, CreateResult, CreateTransferResult as Status, Transfer, TransferFlags,
    NS_PER_SECOND,
};
use settled_engine::ledger::{Ledger, PendingStatus};

const ACCOUNTS: u128 = 8;
const START: u64 = 1_700_000_000 * NS_PER_SECOND;

#[derive(Clone, Debug)]
enum Kind {
    Plain,
    Pending { timeout_seconds: u32, closing: bool },
    Post { target: usize, full: bool },
    Void { target: usize },
    Balancing { debit: bool, credit: bool },
    Retry { target: usize },
}

#[derive(Clone, Debug)]
struct EventSpec {
    kind: Kind,
    debit: u128,
    credit: u128,
    amount: u128,
    linked: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<EventSpec>),
    Expire { advance_ms: u64 },
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::Plain),
        3 => (0u32..3, prop::bool::weighted(0.2))
            .prop_map(|(timeout_seconds, closing)| Kind::Pending { timeout_seconds, closing }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(target, full)| Kind::Post { target, full }),
        2 => any::<usize>().prop_map(|target| Kind::Void { target }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(debit, credit)| Kind::Balancing { debit, credit }),
        1 => any::<usize>().prop_map(|target| Kind::Retry { target }),
    ]
}

fn event() -> impl Strategy<Value = EventSpec> {
    // Account 9 does not exist; accounts 7 and 8 are on another ledger.
    (
        kind(),
        1..=ACCOUNTS + 1,
        1..=ACCOUNTS + 1,
        0u128..200,
        prop::bool::weighted(0.3),
    )
        .prop_map(|(kind, debit, credit, amount, linked)| EventSpec {
            kind,
            debit,
            credit,
            amount,
            linked,
        })
}

/// How a batch ends: as generated, or with a linked chain left open at its last event
/// (at least two events long where the batch allows), with or without an event bound to
/// fail earlier in that chain.
#[derive(Clone, Copy, Debug)]
enum Tail {
    AsGenerated,
    OpenChain,
    OpenChainAfterFailure,
}

fn batch() -> impl Strategy<Value = Vec<EventSpec>> {
    let tail = prop_oneof![
        3 => Just(Tail::AsGenerated),
        1 => Just(Tail::OpenChain),
        1 => Just(Tail::OpenChainAfterFailure),
    ];
    (prop::collection::vec(event(), 1..24), tail).prop_map(|(mut events, tail)| {
        let last = events.len() - 1;
        if !matches!(tail, Tail::AsGenerated) {
            events[last].linked = true;
            if last > 0 {
                events[last - 1].linked = true;
            }
        }
        if matches!(tail, Tail::OpenChainAfterFailure) && last > 0 {
            // Account 9 does not exist: a plain transfer from it always fails.
            events[last - 1].kind = Kind::Plain;
            events[last - 1].debit = ACCOUNTS + 1;
        }
        events
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => batch().prop_map(Step::Batch),
        1 => (0u64..2_500).prop_map(|advance_ms| Step::Expire { advance_ms }),
    ]
}

fn accounts() -> Vec<Account> {
    let flags = |id: u128| match id {
        1 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        2 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        3 => AccountFlags::HISTORY,
        4 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY,
        _ => AccountFlags::empty(),
    };
    (1..=ACCOUNTS)
        .map(|id| Account {
            id,
            ledger: if id >= 7 { 2 } else { 1 },
            code: 1,
            flags: flags(id),
            ..Account::default()
        })
        .collect()
}

/// Turns specs into concrete transfers, remembering what exists to aim posts and retries.
#[derive(Default)]
struct Generator {
    next_id: u128,
    pendings: Vec<u128>,
    sent: Vec<Transfer>,
    batch_ids: std::collections::HashSet<u128>,
}

impl Generator {
    fn transfer(&mut self, spec: &EventSpec) -> Transfer {
        self.next_id += 1;
        let base = Transfer {
            id: 1_000 + self.next_id,
            debit_account_id: spec.debit,
            credit_account_id: spec.credit,
            amount: spec.amount,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        let transfer = match spec.kind {
            Kind::Plain => base,
            Kind::Pending {
                timeout_seconds,
                closing,
            } => {
                let mut flags = TransferFlags::PENDING;
                flags.set(TransferFlags::CLOSING_DEBIT, closing);
                Transfer {
                    timeout: timeout_seconds,
                    flags,
                    ..base
                }
            }
            Kind::Post { target, full } => {
                self.resolve(base, target, TransferFlags::POST_PENDING_TRANSFER, full)
            }
            Kind::Void { target } => {
                self.resolve(base, target, TransferFlags::VOID_PENDING_TRANSFER, true)
            }
            Kind::Balancing { debit, credit } => {
                let mut flags = TransferFlags::empty();
                flags.set(TransferFlags::BALANCING_DEBIT, debit);
                flags.set(TransferFlags::BALANCING_CREDIT, credit);
                Transfer { flags, ..base }
            }
            // A failed chain remembers its transiently failing id, so an id repeated
            // inside one batch would see that trace: retries aim at earlier batches only,
            // and at most once per batch.
            Kind::Retry { target }
                if !self.sent.is_empty()
                    && !self
                        .batch_ids
                        .contains(&self.sent[target % self.sent.len()].id) =>
            {
                self.sent[target % self.sent.len()]
            }
            Kind::Retry { .. } => base,
        };
        self.batch_ids.insert(transfer.id);
        let mut flags = transfer.flags;
        flags.set(TransferFlags::LINKED, spec.linked);
        Transfer { flags, ..transfer }
    }

    fn resolve(&self, base: Transfer, target: usize, flag: TransferFlags, full: bool) -> Transfer {
        let pending_id = if self.pendings.is_empty() {
            77
        } else {
            self.pendings[target % self.pendings.len()]
        };
        let amount = if full {
            if flag == TransferFlags::POST_PENDING_TRANSFER {
                u128::MAX
            } else {
                0
            }
        } else {
            base.amount
        };
        Transfer {
            id: base.id,
            pending_id,
            amount,
            flags: flag,
            ..Transfer::default()
        }
    }

    /// Remember a batch once sent.
    fn remember(&mut self, transfers: &[Transfer]) {
        self.batch_ids.clear();
        for transfer in transfers {
            if transfer.flags.contains(TransferFlags::PENDING) {
                self.pendings.push(transfer.id);
            }
            self.sent.push(*transfer);
        }
    }
}

/// Balances per account id: [debits_pending, debits_posted, credits_pending, credits_posted].
type Model = BTreeMap<u128, [u128; 4]>;

fn snapshot(ledger: &Ledger) -> Model {
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    ledger
        .lookup_accounts(&ids)
        .iter()
        .map(|a| {
            (
                a.id,
                [
                    a.debits_pending,
                    a.debits_posted,
                    a.credits_pending,
                    a.credits_posted,
                ],
            )
        })
        .collect()
}

/// Advance the model by the effect each created transfer must have had.
fn apply_to_model(
    model: &mut Model,
    ledger: &Ledger,
    events: &[Transfer],
    results: &[CreateResult],
) {
    for (event, result) in events.iter().zip(results) {
        if result.transfer_status() != Ok(Status::Created) {
            continue;
        }
        let created = ledger.lookup_transfers(&[event.id])[0];
        let (debit, credit) = (created.debit_account_id, created.credit_account_id);
        if created
            .flags
            .intersects(TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER)
        {
            let pending = ledger.lookup_transfers(&[created.pending_id])[0];
            model.get_mut(&debit).unwrap()[0] -= pending.amount;
            model.get_mut(&credit).unwrap()[2] -= pending.amount;
        }
        let (debit_field, credit_field) = if created.flags.contains(TransferFlags::PENDING) {
            (0, 2)
        } else {
            (1, 3)
        };
        if !created.flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
            model.get_mut(&debit).unwrap()[debit_field] += created.amount;
            model.get_mut(&credit).unwrap()[credit_field] += created.amount;
        }
    }
}

fn check_invariants(ledger: &Ledger) -> Result<(), TestCaseError> {
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    let accounts = ledger.lookup_accounts(&ids);
    for ledger_id in [1, 2] {
        let on_ledger = accounts.iter().filter(|a| a.ledger == ledger_id);
        let sums = on_ledger.fold([0u128; 4], |s, a| {
            [
                s[0] + a.debits_pending,
                s[1] + a.debits_posted,
                s[2] + a.credits_pending,
                s[3] + a.credits_posted,
            ]
        });
        prop_assert_eq!(
            sums[0],
            sums[2],
            "pending debits != pending credits on ledger {}",
            ledger_id
        );
        prop_assert_eq!(
            sums[1],
            sums[3],
            "posted debits != posted credits on ledger {}",
            ledger_id
        );
    }
    for a in &accounts {
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        {
            prop_assert!(
                a.debits_pending + a.debits_posted <= a.credits_posted,
                "rule broken: {:?}",
                a
            );
        }
        if a.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            prop_assert!(
                a.credits_pending + a.credits_posted <= a.debits_posted,
                "rule broken: {:?}",
                a
            );
        }
    }
    Ok(())
}

/// Index ranges of the linked chains of a batch whose events all failed.
fn failed_chains(events: &[Transfer], results: &[CreateResult]) -> Vec<std::ops::Range<usize>> {
    let mut chains = Vec::new();
    let mut start = None;
    for (index, event) in events.iter().enumerate() {
        let linked = event.flags.contains(TransferFlags::LINKED);
        if linked && start.is_none() {
            start = Some(index);
        }
        if let Some(first) = start {
            if !linked || index + 1 == events.len() {
                if results[first].status != Status::Created.code() {
                    chains.push(first..index + 1);
                }
                start = None;
            }
        }
    }
    chains
}

/// Within a failed chain the first failing event carries its own result and every other
/// event `linked_event_failed`, except that a chain still open at the batch's last event
/// answers `linked_event_chain_open` there, whether or not an earlier event failed.
fn check_chain_results(events: &[Transfer], results: &[CreateResult]) -> Result<(), TestCaseError> {
    let failed = Status::LinkedEventFailed.code();
    for chain in failed_chains(events, results) {
        let last = chain.end - 1;
        let open = last + 1 == events.len() && events[last].flags.contains(TransferFlags::LINKED);
        let own_results = if open {
            prop_assert_eq!(
                results[last].status,
                Status::LinkedEventChainOpen.code(),
                "open chain {:?}: last event",
                chain
            );
            results[chain.start..last]
                .iter()
                .filter(|r| r.status != failed)
                .count()
        } else {
            results[chain.clone()]
                .iter()
                .filter(|r| r.status != failed)
                .count()
        };
        let expected = if open { 0..=1 } else { 1..=1 };
        prop_assert!(
            expected.contains(&own_results),
            "chain {:?}: {} events with their own result: {:?}",
            chain,
            own_results,
            &results[chain.clone()]
        );
        prop_assert!(
            results[chain.clone()]
                .iter()
                .all(|r| r.status != Status::Created.code()),
            "chain {:?} failed yet an event was created",
            chain
        );
    }
    Ok(())
}

/// Replay the batch on the state before it with each failed chain replaced by no-ops;
/// state (bar the remembered failed ids) and all other results must match.
fn check_no_trace(
    before: &Ledger,
    after: &Ledger,
    now: u64,
    events: &[Transfer],
    results: &[CreateResult],
) -> Result<(), TestCaseError> {
    let chains = failed_chains(events, results);
    if chains.is_empty() {
        return Ok(());
    }
    let mut replaced = events.to_vec();
    for chain in &chains {
        for event in &mut replaced[chain.clone()] {
            *event = Transfer::default(); // id 0: fails alone, changes nothing
        }
    }
    let mut reference = before.clone();
    let reference_results = reference.create_transfers(now, &replaced);
    for (index, (ours, theirs)) in results.iter().zip(&reference_results).enumerate() {
        if !chains.iter().any(|chain| chain.contains(&index)) {
            prop_assert_eq!(
                ours,
                theirs,
                "event {} outside the failed chains differs",
                index
            );
        }
    }
    prop_assert_eq!(
        after.state_hash_excluding_failed_ids(),
        reference.state_hash_excluding_failed_ids()
    );
    Ok(())
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut ledger = Ledger::new();
    let mut twin = Ledger::new();
    let mut generator = Generator::default();
    let mut now = START;
    ledger.create_accounts(now, &accounts());
    twin.create_accounts(now, &accounts());
    let mut model = snapshot(&ledger);
    for step in steps {
        now += 1_000;
        match step {
            Step::Batch(specs) => {
                let events: Vec<Transfer> =
                    specs.iter().map(|spec| generator.transfer(spec)).collect();
                let before = ledger.clone();
                let results = ledger.create_transfers(now, &events);
                prop_assert_eq!(&results, &twin.create_transfers(now, &events));
                apply_to_model(&mut model, &ledger, &events, &results);
                check_chain_results(&events, &results)?;
                check_no_trace(&before, &ledger, now, &events, &results)?;
                generator.remember(&events);
            }
            Step::Expire { advance_ms } => {
                now += advance_ms * 1_000_000;
                let expired = ledger.expire(now);
                prop_assert_eq!(&expired, &twin.expire(now));
                for pending in ledger.lookup_transfers(&expired) {
                    model.get_mut(&pending.debit_account_id).unwrap()[0] -= pending.amount;
                    model.get_mut(&pending.credit_account_id).unwrap()[2] -= pending.amount;
                }
            }
        }
        prop_assert_eq!(&snapshot(&ledger), &model, "balances differ from the model");
        check_invariants(&ledger)?;
        let sent_pending: std::collections::BTreeSet<u128> =
            generator.pendings.iter().copied().collect();
        let pending = sent_pending
            .iter()
            .filter(|id| ledger.pending_status(**id) == Some(PendingStatus::Pending))
            .count() as u64;
        prop_assert_eq!(ledger.transfers_pending(), pending, "pending count");
        prop_assert_eq!(ledger.state_hash(), twin.state_hash());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_keep_every_invariant(steps in prop::collection::vec(step(), 1..30)) {
        run(&steps)?;
    }
}
