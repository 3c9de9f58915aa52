//! Idempotency by client token: the responses of completed requests, by token.
//!
//! A request with a token first looks its token up: the same token with the same parameters
//! gets the stored response again without running; the same token with other parameters is
//! refused. A request that succeeds records its response. Requests still running are tracked by
//! the server in memory (a retry that arrives while the first attempt runs is told to retry
//! later), so the common path costs one read and one grouped write. Records expire after
//! [`RETENTION_MILLIS`], as AWS's do (about eight hours).

use sqlx::Row;

use crate::{Result, Store, StoreError};

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

impl Store {
    /// The stored response for a token, if one was recorded within the retention window.
    pub async fn idempotency_lookup(&self, key: &TokenKey) -> Result<Option<StoredResponse>> {
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency \
             WHERE account_id = $1 AND operation = $2 AND token = $3 AND created_at >= $4",
        )
        .bind(&key.account_id)
        .bind(&key.operation)
        .bind(&key.token)
        .bind(self.now() - RETENTION_MILLIS)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let status: Option<i64> = row.try_get("status")?;
        Ok(Some(StoredResponse {
            request_hash: row.try_get("request_hash")?,
            status: status.unwrap_or(200) as u16,
            body: row.try_get::<Option<String>, _>("response")?.unwrap_or_default(),
        }))
    }

    /// Records a completed request's response. An expired record for the token is replaced.
    pub async fn idempotency_record(&self, key: &TokenKey, response: &StoredResponse) -> Result<()> {
        let (key, response, now) = (key.clone(), response.clone(), self.now());
        self.write_lazy(move |conn| {
            let (key, response) = (key.clone(), response.clone());
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO idempotency (account_id, operation, token, request_hash, status, response, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (account_id, operation, token) DO UPDATE SET request_hash = excluded.request_hash, \
                     status = excluded.status, response = excluded.response, created_at = excluded.created_at \
                     WHERE idempotency.created_at < $8",
                )
                .bind(&key.account_id)
                .bind(&key.operation)
                .bind(&key.token)
                .bind(&response.request_hash)
                .bind(i64::from(response.status))
                .bind(&response.body)
                .bind(now)
                .bind(now - RETENTION_MILLIS)
                .execute(&mut *conn)
                .await?;
                Ok::<_, StoreError>(())
            })
        })
        .await
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

/// A stable hash of a request's parameters (its JSON input without the token itself).
pub fn request_hash(input: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    // serde_json's Map is ordered by key, so equal inputs serialize identically.
    hex::encode(Sha256::digest(input.to_string().as_bytes()))
}
