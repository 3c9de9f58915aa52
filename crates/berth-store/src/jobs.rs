//! Durable background jobs.
//!
//! Work that must outlive the request that caused it (finishing a memory's creation, deleting a
//! memory's events) is a row in `jobs`, written in the same transaction as the state change.
//! Workers claim due jobs with a lease, so a crashed worker's job is picked up again when its
//! lease runs out, and several Berth nodes can share one PostgreSQL. Failures retry with
//! exponential backoff and stay visible in `last_error`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Row};
pub use tokio::sync::Notify;

use crate::{Result, Store};

/// How long a claimed job is reserved for its worker.
const LEASE_MILLIS: i64 = 60_000;
/// How often workers look for due jobs when nobody notified them.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A claimed job.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempts: i64,
}

/// Adds a job in the caller's transaction, due at `run_at` (milliseconds).
pub async fn enqueue(tx: &mut AnyConnection, kind: &str, payload: &serde_json::Value, run_at: i64) -> Result<()> {
    sqlx::query("INSERT INTO jobs (kind, payload, run_at, attempts, created_at) VALUES ($1, $2, $3, 0, $4)")
        .bind(kind)
        .bind(payload.to_string())
        .bind(run_at)
        .bind(run_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

impl Store {
    /// Claims the oldest due job, if any.
    pub async fn claim_job(&self) -> Result<Option<Job>> {
        let now = self.now();
        let row = sqlx::query(
            "UPDATE jobs SET lease_until = $1, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM jobs WHERE run_at <= $2 AND (lease_until IS NULL OR lease_until < $2) \
                         ORDER BY run_at, id LIMIT 1) \
               AND (lease_until IS NULL OR lease_until < $2) \
             RETURNING id, kind, payload, attempts",
        )
        .bind(now + LEASE_MILLIS)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get("payload")?;
        Ok(Some(Job {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            attempts: row.try_get("attempts")?,
        }))
    }

    /// Removes a finished job.
    pub async fn complete_job(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Records a failure and schedules the next attempt with exponential backoff (capped at ten
    /// minutes).
    pub async fn fail_job(&self, job: &Job, error: &str) -> Result<()> {
        let backoff = 1_000_i64.saturating_mul(1 << job.attempts.clamp(0, 10)).min(600_000);
        sqlx::query("UPDATE jobs SET last_error = $1, lease_until = NULL, run_at = $2 WHERE id = $3")
            .bind(error)
            .bind(self.now() + backoff)
            .bind(job.id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Jobs still waiting or retrying, oldest first: `(kind, attempts, last_error)`.
    pub async fn pending_jobs(&self) -> Result<Vec<(String, i64, Option<String>)>> {
        let rows = sqlx::query("SELECT kind, attempts, last_error FROM jobs ORDER BY run_at, id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("attempts")?, r.try_get("last_error")?)))
            .collect()
    }
}

/// The future a job handler returns.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs one kind of job. A handler must be idempotent: a job may run more than once when a
/// worker dies after finishing it but before recording that.
pub type JobHandler = Arc<dyn Fn(serde_json::Value) -> JobFuture + Send + Sync>;

/// The worker loop: claims due jobs and runs them with the handler registered for their kind.
pub struct Worker {
    store: Store,
    handlers: HashMap<String, JobHandler>,
    wake: Arc<Notify>,
}

impl Worker {
    pub fn new(store: Store) -> Self {
        Worker {
            store,
            handlers: HashMap::new(),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn register(&mut self, kind: &str, handler: JobHandler) {
        self.handlers.insert(kind.to_string(), handler);
    }

    /// A handle that wakes the worker at once (after enqueueing a job).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs every due job until none is left. Returns how many ran (tests drive the worker with it).
    pub async fn run_due(&self) -> Result<usize> {
        let mut ran = 0;
        while let Some(job) = self.store.claim_job().await? {
            ran += 1;
            let outcome = match self.handlers.get(&job.kind) {
                Some(handler) => handler(job.payload.clone()).await,
                None => Err(format!("no handler for job kind `{}`", job.kind)),
            };
            match outcome {
                Ok(()) => self.store.complete_job(job.id).await?,
                Err(error) => {
                    tracing::warn!(job_id = job.id, kind = %job.kind, attempts = job.attempts, %error, "job failed; will retry");
                    self.store.fail_job(&job, &error).await?;
                }
            }
        }
        Ok(ran)
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.run_due().await {
                tracing::error!(%error, "job worker could not reach the store");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}
