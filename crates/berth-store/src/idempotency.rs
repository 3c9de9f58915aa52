//! Idempotency by client token.
//!
//! The first request with a token reserves it together with a hash of its parameters; when it
//! succeeds the response is stored. A retry with the same token and parameters gets the stored
//! response again without running; the same token with other parameters is refused. A failed
//! request releases its reservation so the client can retry. Records expire after
//! [`RETENTION_MILLIS`], as AWS's do (about eight hours).

use sqlx::Row;

use crate::{Result, Store};

/// How long a token is remembered.
pub const RETENTION_MILLIS: i64 = 8 * 60 * 60 * 1000;
/// How long an unfinished reservation blocks retries before it is considered abandoned.
const ABANDONED_MILLIS: i64 = 5 * 60 * 1000;

/// What the store knows about a token.
#[derive(Debug, PartialEq, Eq)]
pub enum Reservation {
    /// First use: run the request, then [`Store::idempotency_complete`] or `_release`.
    New,
    /// Seen before with the same parameters: answer with this status and JSON body.
    Replay { status: u16, body: String },
    /// Seen before with different parameters.
    Mismatch,
    /// A request with this token is still running.
    InProgress,
}

/// Identifies one token.
#[derive(Clone, Debug)]
pub struct TokenKey<'a> {
    pub account_id: &'a str,
    pub operation: &'a str,
    pub token: &'a str,
}

impl Store {
    pub async fn idempotency_reserve(&self, key: &TokenKey<'_>, request_hash: &str) -> Result<Reservation> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let existing = sqlx::query(
            "SELECT request_hash, status, response, created_at FROM idempotency \
             WHERE account_id = $1 AND operation = $2 AND token = $3",
        )
        .bind(key.account_id)
        .bind(key.operation)
        .bind(key.token)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            let created_at: i64 = row.try_get("created_at")?;
            let status: Option<i64> = row.try_get("status")?;
            let expired = now - created_at > RETENTION_MILLIS;
            let abandoned = status.is_none() && now - created_at > ABANDONED_MILLIS;
            if !expired && !abandoned {
                let stored_hash: String = row.try_get("request_hash")?;
                return Ok(if stored_hash != request_hash {
                    Reservation::Mismatch
                } else if let Some(status) = status {
                    Reservation::Replay {
                        status: status as u16,
                        body: row.try_get::<Option<String>, _>("response")?.unwrap_or_default(),
                    }
                } else {
                    Reservation::InProgress
                });
            }
            sqlx::query("DELETE FROM idempotency WHERE account_id = $1 AND operation = $2 AND token = $3")
                .bind(key.account_id)
                .bind(key.operation)
                .bind(key.token)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO idempotency (account_id, operation, token, request_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.account_id)
        .bind(key.operation)
        .bind(key.token)
        .bind(request_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Reservation::New)
    }

    pub async fn idempotency_complete(&self, key: &TokenKey<'_>, status: u16, body: &str) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency SET status = $1, response = $2 WHERE account_id = $3 AND operation = $4 AND token = $5",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(key.account_id)
        .bind(key.operation)
        .bind(key.token)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn idempotency_release(&self, key: &TokenKey<'_>) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency WHERE account_id = $1 AND operation = $2 AND token = $3 AND status IS NULL",
        )
        .bind(key.account_id)
        .bind(key.operation)
        .bind(key.token)
        .execute(&self.writer)
        .await?;
        Ok(())
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
