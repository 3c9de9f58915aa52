//! Idempotency by client token: the responses of completed requests, by token.
//!
//! A request with a token first looks its token up: the same token with the same parameters
//! gets the stored response again without running; the same token with other parameters is
//! refused. A request that succeeds records its response. Requests still running are tracked by
//! the server in memory (a retry that arrives while the first attempt runs is told to retry
//! later), so the common path costs one read and one grouped write, and concurrent requests' reads
//! and writes are batched into a statement each. Records expire after
//! [`RETENTION_MILLIS`], as AWS's do (about eight hours).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyConnection, Row};

use crate::coalesce::Coalescer;
use crate::{Result, Store};

/// How long a token is remembered.
pub const RETENTION_MILLIS: i64 = 8 * 60 * 60 * 1000;

/// Identifies one token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub account_id: String,
    pub operation: String,
    pub token: String,
}

/// A completed request's response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// Lookups and records in flight, each batched while one batch runs (see [`crate::coalesce`]):
/// every request with a token makes one of each, so under load they are most of the store's
/// statements.
#[derive(Default)]
pub(crate) struct TokenBatches {
    lookups: Arc<Coalescer<TokenKey, Option<StoredResponse>>>,
    records: Arc<Coalescer<(TokenKey, StoredResponse), ()>>,
    /// The connection lookups run on, taken out of the reader pool: lookups run one batch at a
    /// time, and a pooled connection's every return to the pool costs a task.
    lookup_connection: tokio::sync::Mutex<Option<AnyConnection>>,
}

impl Store {
    /// The stored response for a token, if one was recorded within the retention window.
    pub async fn idempotency_lookup(&self, key: &TokenKey) -> Result<Option<StoredResponse>> {
        let store = self.clone();
        self.tokens
            .lookups
            .call(key.clone(), move |keys| {
                let store = store.clone();
                async move { store.lookup_tokens(keys).await }
            })
            .await
    }

    /// Records a completed request's response and tells `done` once it is durable (or could
    /// not be written); returns at once. An expired record for the token is replaced. Records
    /// go on the lazy write path, so they share the fsync of the writes they follow.
    pub fn idempotency_record(
        &self,
        key: &TokenKey,
        response: &StoredResponse,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let store = self.clone();
        let write = move |records: Vec<(TokenKey, StoredResponse)>| {
            let store = store.clone();
            async move {
                let (count, now) = (records.len(), store.now());
                let records = Arc::new(records);
                store
                    .write_lazy(move |conn| {
                        let records = records.clone();
                        Box::pin(async move { insert_records(conn, &records, now).await })
                    })
                    .await?;
                Ok(vec![(); count])
            }
        };
        self.tokens.records.submit((key.clone(), response.clone()), write, done);
    }

    /// One statement per [`TOKENS_PER_STATEMENT`] keys; answers in the order of `keys`.
    async fn lookup_tokens(&self, keys: Vec<TokenKey>) -> Result<Vec<Option<StoredResponse>>> {
        let mut found = HashMap::new();
        let oldest = self.now() - RETENTION_MILLIS;
        for chunk in keys.chunks(TOKENS_PER_STATEMENT) {
            // One primary-key probe per token: a plan neither engine can turn into a scan (an OR
            // of the same terms may be planned as a scan of the account's tokens). Age is checked
            // here rather than in SQL, where the age index could tempt the planner.
            let sql = (0..chunk.len())
                .map(|i| {
                    format!(
                        "SELECT account_id, operation, token, request_hash, status, response, created_at \
                         FROM idempotency WHERE account_id = ${} AND operation = ${} AND token = ${}",
                        3 * i + 1,
                        3 * i + 2,
                        3 * i + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for key in chunk {
                query = query.bind(&key.account_id).bind(&key.operation).bind(&key.token);
            }
            let mut connection = self.tokens.lookup_connection.lock().await;
            let conn = match connection.as_mut() {
                Some(conn) => conn,
                None => connection.insert(self.reader.acquire().await?.detach()),
            };
            let rows = query.fetch_all(&mut *conn).await;
            if rows.is_err() {
                // Perhaps broken: the next lookup takes a fresh one.
                *connection = None;
            }
            for row in rows? {
                if row.try_get::<i64, _>("created_at")? < oldest {
                    continue;
                }
                let key = TokenKey {
                    account_id: row.try_get("account_id")?,
                    operation: row.try_get("operation")?,
                    token: row.try_get("token")?,
                };
                let status: Option<i64> = row.try_get("status")?;
                let response = StoredResponse {
                    request_hash: row.try_get("request_hash")?,
                    status: status.unwrap_or(200) as u16,
                    body: row.try_get::<Option<String>, _>("response")?.unwrap_or_default(),
                };
                found.insert(key, response);
            }
        }
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    /// Forgets tokens older than the retention window. Returns how many went.
    pub async fn idempotency_sweep(&self) -> Result<u64> {
        let cutoff = self.now() - RETENTION_MILLIS;
        let done = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Records per statement: far below both engines' limits on bound parameters (7 per record).
const RECORDS_PER_STATEMENT: usize = 256;
/// Tokens looked up per statement (3 parameters and one index probe each).
const TOKENS_PER_STATEMENT: usize = 64;

/// Inserts `records` (replacing expired records of the same tokens), a few hundred per statement.
async fn insert_records(conn: &mut AnyConnection, records: &[(TokenKey, StoredResponse)], now: i64) -> Result<()> {
    // One process never has two records of one token in flight (the server marks a token as
    // running until its record is written), but PostgreSQL refuses a statement that would
    // update one row twice, so make sure.
    let mut seen = HashSet::new();
    let unique: Vec<_> = records.iter().rev().filter(|(key, _)| seen.insert(key)).collect();
    for chunk in unique.chunks(RECORDS_PER_STATEMENT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = 7 * i;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO idempotency (account_id, operation, token, request_hash, status, response, created_at) \
             VALUES {} ON CONFLICT (account_id, operation, token) DO UPDATE SET request_hash = excluded.request_hash, \
             status = excluded.status, response = excluded.response, created_at = excluded.created_at \
             WHERE idempotency.created_at < ${}",
            rows.join(", "),
            7 * chunk.len() + 1
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, response) in chunk {
            query = query
                .bind(&key.account_id)
                .bind(&key.operation)
                .bind(&key.token)
                .bind(&response.request_hash)
                .bind(i64::from(response.status))
                .bind(&response.body)
                .bind(now);
        }
        query.bind(now - RETENTION_MILLIS).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A stable hash of a request's parameters (its JSON input without the token itself).
pub fn request_hash(input: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's Map is ordered by key, so equal inputs serialize identically.
    hex::encode(Sha256::digest(input.to_string().as_bytes()))
}
