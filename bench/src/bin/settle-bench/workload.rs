//! The transfers a run sends, as a pure function of the seed and the knobs: any transfer
//! can be rebuilt from its sequence number, so verification needs to remember only which
//! ones were created.
//!
//! Sequence numbers `0..transfers` map to ids `id_base + seq + 1`. A transfer is plain,
//! pending, or (for a pending one issued `resolve_lag` transfers earlier) its post or void.
//! Pendings are issued only in even "epochs" of `resolve_lag` transfers and resolved in
//! the odd epoch after, so whether a slot resolves never depends on an earlier slot's
//! resolution.

use protocol::{Account, Transfer, TransferFlags};

use crate::args::{Args, Distribution};

/// Accounts of a run: ids `ACCOUNT_ID_BASE + 1 ..= ACCOUNT_ID_BASE + accounts`, out of the
/// way of small ids an operator may use by hand.
pub const ACCOUNT_ID_BASE: u128 = 1 << 64;
/// Account and transfer code of every event a run sends.
pub const CODE: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Pending,
    Post { pending_seq: u64 },
    Void { pending_seq: u64 },
}

pub struct Workload {
    seed: u64,
    pub accounts: u64,
    pub transfers: u64,
    pub batch_size: u32,
    pub ledger: u32,
    pending_per_mille: u64,
    linked_per_mille: u64,
    picker: Picker,
    /// Transfers between a pending one and its post or void.
    pub resolve_lag: u64,
    id_base: u128,
}

impl Workload {
    pub fn new(args: &Args, id_base: u128) -> Workload {
        // A post must come after its pending transfer was applied: later than every
        // request that can be in flight with it, twice over.
        let in_flight_transfers =
            u64::from(args.clients) * u64::from(args.in_flight) * u64::from(args.batch_size);
        Workload {
            seed: args.seed,
            accounts: args.accounts,
            transfers: args.transfers,
            batch_size: args.batch_size,
            ledger: args.ledger,
            pending_per_mille: u64::from(args.pending_percent) * 10,
            linked_per_mille: u64::from(args.linked_percent) * 10,
            picker: Picker::new(args),
            resolve_lag: (2 * in_flight_transfers).max(u64::from(args.batch_size)),
            id_base,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn accounts(&self) -> Vec<Account> {
        (1..=u128::from(self.accounts))
            .map(|index| Account {
                id: ACCOUNT_ID_BASE + index,
                ledger: self.ledger,
                code: CODE,
                ..Account::default()
            })
            .collect()
    }

    pub fn account_id(&self, index: u64) -> u128 {
        ACCOUNT_ID_BASE + 1 + u128::from(index)
    }

    pub fn transfer_id(&self, seq: u64) -> u128 {
        self.id_base + 1 + u128::from(seq)
    }

    /// Number of requests of at most `batch_size` transfers.
    pub fn batches(&self) -> u64 {
        self.transfers.div_ceil(u64::from(self.batch_size))
    }

    /// Sequence numbers of batch `batch`.
    pub fn batch_range(&self, batch: u64) -> std::ops::Range<u64> {
        let start = batch * u64::from(self.batch_size);
        start..(start + u64::from(self.batch_size)).min(self.transfers)
    }

    pub fn kind(&self, seq: u64) -> Kind {
        let epoch = seq / self.resolve_lag;
        if !epoch.is_multiple_of(2) {
            let pending_seq = seq - self.resolve_lag;
            if self.issues_pending(pending_seq) {
                return if mix(self.seed, seq, 3).is_multiple_of(2) {
                    Kind::Post { pending_seq }
                } else {
                    Kind::Void { pending_seq }
                };
            }
            return Kind::Plain;
        }
        if self.issues_pending(seq) {
            Kind::Pending
        } else {
            Kind::Plain
        }
    }

    /// Pendings are issued in even epochs only, at twice the asked rate, so that the
    /// share of pending transfers over the run is what was asked.
    fn issues_pending(&self, seq: u64) -> bool {
        (seq / self.resolve_lag).is_multiple_of(2)
            && mix(self.seed, seq, 1) % 1000 < (2 * self.pending_per_mille).min(1000)
    }

    /// Amount of a plain or pending transfer, in the asset's smallest unit: 1..=1000.
    pub fn amount(&self, seq: u64) -> u128 {
        u128::from(mix(self.seed, seq, 2) % 1000 + 1)
    }

    /// The amount a created transfer must show when looked up.
    pub fn amount_expected(&self, seq: u64) -> u128 {
        match self.kind(seq) {
            Kind::Plain | Kind::Pending => self.amount(seq),
            Kind::Post { pending_seq } | Kind::Void { pending_seq } => self.amount(pending_seq),
        }
    }

    /// Debit and credit account indexes of a plain or pending transfer: different.
    pub fn parties(&self, seq: u64) -> (u64, u64) {
        let debit = self
            .picker
            .pick(mix(self.seed, seq, 4), mix(self.seed, seq, 5));
        let mut credit = self
            .picker
            .pick(mix(self.seed, seq, 6), mix(self.seed, seq, 7));
        if credit == debit {
            credit = (debit + 1) % self.accounts;
        }
        (debit, credit)
    }

    pub fn transfer(&self, seq: u64) -> Transfer {
        let (debit, credit) = match self.kind(seq) {
            Kind::Post { pending_seq } | Kind::Void { pending_seq } => self.parties(pending_seq),
            Kind::Plain | Kind::Pending => self.parties(seq),
        };
        let mut transfer = Transfer {
            id: self.transfer_id(seq),
            debit_account_id: self.account_id(debit),
            credit_account_id: self.account_id(credit),
            amount: self.amount_expected(seq),
            ledger: self.ledger,
            code: CODE,
            ..Transfer::default()
        };
        match self.kind(seq) {
            Kind::Plain => {}
            Kind::Pending => transfer.flags = TransferFlags::PENDING,
            Kind::Post { pending_seq } => {
                transfer.flags = TransferFlags::POST_PENDING_TRANSFER;
                transfer.pending_id = self.transfer_id(pending_seq);
            }
            Kind::Void { pending_seq } => {
                transfer.flags = TransferFlags::VOID_PENDING_TRANSFER;
                transfer.pending_id = self.transfer_id(pending_seq);
            }
        }
        if self.linked(seq) {
            transfer.flags |= TransferFlags::LINKED;
        }
        transfer
    }

    /// Linked to the next transfer of the same request (never the last of one).
    fn linked(&self, seq: u64) -> bool {
        let last_of_batch =
            (seq + 1).is_multiple_of(u64::from(self.batch_size)) || seq + 1 == self.transfers;
        !last_of_batch && mix(self.seed, seq, 8) % 1000 < self.linked_per_mille
    }

    pub fn batch(&self, batch: u64) -> Vec<Transfer> {
        self.batch_range(batch)
            .map(|seq| self.transfer(seq))
            .collect()
    }
}

/// How account indexes are drawn: a hot set first, then the distribution.
struct Picker {
    accounts: u64,
    hot_accounts: u64,
    hot_per_mille: u64,
    zipf: Option<rand_distr::Zipf<f64>>,
}

impl Picker {
    fn new(args: &Args) -> Picker {
        let zipf = match args.distribution {
            Distribution::Uniform => None,
            Distribution::Zipf => Some(
                rand_distr::Zipf::new(args.accounts as f64, args.zipf_exponent)
                    .expect("zipf parameters checked by Args::validate"),
            ),
        };
        Picker {
            accounts: args.accounts,
            hot_accounts: args.hot_accounts,
            hot_per_mille: u64::from(args.hot_percent) * 10,
            zipf,
        }
    }

    /// An account index from two independent random words.
    fn pick(&self, choose: u64, value: u64) -> u64 {
        if self.hot_accounts > 0 && choose % 1000 < self.hot_per_mille {
            return value % self.hot_accounts;
        }
        match &self.zipf {
            None => value % self.accounts,
            Some(zipf) => {
                use rand::{rngs::SmallRng, SeedableRng};
                use rand_distr::Distribution as _;
                let mut rng = SmallRng::seed_from_u64(value);
                // Zipf samples 1..=n, most often 1: index 0 is the hottest account.
                (zipf.sample(&mut rng) as u64 - 1).min(self.accounts - 1)
            }
        }
    }
}

/// A random-looking word from (seed, sequence number, stream): splitmix64 over their mix.
pub fn mix(seed: u64, seq: u64, stream: u64) -> u64 {
    let mut x =
        seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
