//! A whole ledger read back through `query_accounts` or `query_transfers`, page after
//! page in timestamp order: how the tools check what the daemon holds against what it
//! acknowledged.

use std::future::Future;

use client::{Client, ClientError};
use protocol::{Account, QueryFilter, Transfer, BATCH_EVENTS_MAX};

/// What the query operations list: rows ordered by a timestamp that no two share.
pub trait Listed: Sized {
    /// The operation, for errors.
    const QUERY: &'static str;

    fn timestamp(&self) -> u64;

    fn query(
        client: &Client,
        filter: QueryFilter,
    ) -> impl Future<Output = Result<Vec<Self>, ClientError>> + Send;
}

impl Listed for Account {
    const QUERY: &'static str = "query_accounts";

    fn timestamp(&self) -> u64 {
        self.timestamp
    }

    fn query(
        client: &Client,
        filter: QueryFilter,
    ) -> impl Future<Output = Result<Vec<Account>, ClientError>> + Send {
        client.query_accounts(filter)
    }
}

impl Listed for Transfer {
    const QUERY: &'static str = "query_transfers";

    fn timestamp(&self) -> u64 {
        self.timestamp
    }

    fn query(
        client: &Client,
        filter: QueryFilter,
    ) -> impl Future<Output = Result<Vec<Transfer>, ClientError>> + Send {
        client.query_transfers(filter)
    }
}

/// Every row of `ledger`, in pages of `BATCH_EVENTS_MAX` by timestamp: `visit` gets each
/// page with the timestamp it was asked from (no row of it may be older). A page shorter
/// than the limit is the last.
pub async fn for_each_page<T: Listed>(
    client: &Client,
    ledger: u32,
    mut visit: impl FnMut(u64, &[T]),
) -> Result<(), String> {
    let mut timestamp_min = 0;
    loop {
        let filter = QueryFilter {
            ledger,
            timestamp_min,
            limit: BATCH_EVENTS_MAX,
            ..QueryFilter::default()
        };
        let page = T::query(client, filter)
            .await
            .map_err(|error| format!("{} on ledger {ledger}: {error}", T::QUERY))?;
        visit(timestamp_min, &page);
        match page.last() {
            Some(last) if page.len() == BATCH_EVENTS_MAX as usize => {
                timestamp_min = last.timestamp() + 1;
            }
            _ => return Ok(()),
        }
    }
}
