//! SQL of long-term extraction: sessions with events waiting, their events, and the failed
//! extraction jobs (`memory_extraction_jobs`).

use berth_store::sqlx::{self, Row, any::AnyRow};
use berth_store::{Result, Store};

use super::Tx;

/// A session with events waiting for extraction.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingSession {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    /// When its newest waiting event arrived, and how many wait.
    pub last_arrival: i64,
    pub waiting: i64,
}

/// An event to extract from.
#[derive(Clone, Debug)]
pub struct SourceEvent {
    pub seq: i64,
    pub event_id: String,
    pub event_time: i64,
    pub payload: String,
    pub namespace_variables: Option<String>,
    /// The event's metadata map as JSON.
    pub metadata: Option<String>,
}

/// A failed extraction.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRow {
    pub job_id: String,
    pub memory_id: String,
    pub strategy_id: String,
    pub actor_id: String,
    pub session_id: String,
    /// JSON array of `{eventId, messageIndex}`.
    pub messages: String,
    pub failure_reason: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Sessions with waiting events, up to `limit` (the partial index holds only waiting events).
pub async fn pending_sessions(store: &Store, limit: i64) -> Result<Vec<PendingSession>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT memory_id, actor_id, session_id, MAX(created_at) AS last_arrival, COUNT(*) AS waiting \
         FROM memory_events WHERE extraction_pending = 1 GROUP BY memory_id, actor_id, session_id LIMIT {limit}"
    )))
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PendingSession {
                memory_id: row.try_get("memory_id")?,
                actor_id: row.try_get("actor_id")?,
                session_id: row.try_get("session_id")?,
                last_arrival: row.try_get("last_arrival")?,
                waiting: row.try_get("waiting")?,
            })
        })
        .collect()
}

fn source_event(row: &AnyRow) -> Result<SourceEvent> {
    Ok(SourceEvent {
        seq: row.try_get("seq")?,
        event_id: row.try_get("event_id")?,
        event_time: row.try_get("event_time")?,
        payload: row.try_get("payload")?,
        namespace_variables: row.try_get("namespace_variables")?,
        metadata: row.try_get("metadata")?,
    })
}

const SOURCE_COLUMNS: &str = "seq, event_id, event_time, payload, namespace_variables, metadata";

/// A session's waiting events, oldest first, at most `limit`.
pub async fn pending_events(store: &Store, s: &PendingSession, limit: i64) -> Result<Vec<SourceEvent>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SOURCE_COLUMNS} FROM memory_events \
         WHERE memory_id = $1 AND actor_id = $2 AND session_id = $3 AND extraction_pending = 1 \
         ORDER BY event_time, seq LIMIT {limit}"
    )))
    .bind(&s.memory_id)
    .bind(&s.actor_id)
    .bind(&s.session_id)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(source_event).collect()
}

/// The events of a memory with these ids that still exist, oldest first.
pub async fn events_by_ids(store: &Store, memory_id: &str, event_ids: &[String]) -> Result<Vec<SourceEvent>> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (0..event_ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT {SOURCE_COLUMNS} FROM memory_events WHERE memory_id = $1 AND event_id IN ({}) ORDER BY event_time, seq",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(memory_id);
    for id in event_ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(store.reader()).await?;
    rows.iter().map(source_event).collect()
}

/// Marks events as extracted (or handed to a failed job).
pub async fn clear_pending(tx: &mut Tx, seqs: &[i64]) -> Result<()> {
    for chunk in seqs.chunks(500) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE memory_events SET extraction_pending = 0 WHERE seq IN ({})",
            list.join(", ")
        )))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Marks a record as replaced by `successor` at `at`.
pub async fn supersede(tx: &mut Tx, memory_id: &str, record_id: &str, successor: &str, at: i64) -> Result<()> {
    sqlx::query(
        "UPDATE memory_records SET superseded_by = $1, valid_until = $2, updated_at = $2 \
         WHERE memory_id = $3 AND record_id = $4 AND superseded_by IS NULL",
    )
    .bind(successor)
    .bind(at)
    .bind(memory_id)
    .bind(record_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

const JOB_COLUMNS: &str = "job_id, memory_id, strategy_id, actor_id, session_id, messages, failure_reason, attempts, \
     next_attempt_at, created_at, updated_at";

fn job(row: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        job_id: row.try_get("job_id")?,
        memory_id: row.try_get("memory_id")?,
        strategy_id: row.try_get("strategy_id")?,
        actor_id: row.try_get("actor_id")?,
        session_id: row.try_get("session_id")?,
        messages: row.try_get("messages")?,
        failure_reason: row.try_get("failure_reason")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts a failed job, or updates it when it exists.
pub async fn save_job(tx: &mut Tx, j: &JobRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO memory_extraction_jobs (job_id, memory_id, strategy_id, actor_id, session_id, messages, failure_reason, \
         attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (job_id) DO UPDATE SET failure_reason = excluded.failure_reason, attempts = excluded.attempts, \
         next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
    )
    .bind(&j.job_id)
    .bind(&j.memory_id)
    .bind(&j.strategy_id)
    .bind(&j.actor_id)
    .bind(&j.session_id)
    .bind(&j.messages)
    .bind(&j.failure_reason)
    .bind(j.attempts)
    .bind(j.next_attempt_at)
    .bind(j.created_at)
    .bind(j.updated_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn delete_job(tx: &mut Tx, job_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM memory_extraction_jobs WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Jobs whose next automatic attempt is due.
pub async fn due_jobs(store: &Store, now: i64, limit: i64) -> Result<Vec<JobRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM memory_extraction_jobs WHERE next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT {limit}"
    )))
    .bind(now)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(job).collect()
}

pub async fn get_job(store: &Store, memory_id: &str, job_id: &str) -> Result<Option<JobRow>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM memory_extraction_jobs WHERE memory_id = $1 AND job_id = $2"
    )))
    .bind(memory_id)
    .bind(job_id)
    .fetch_optional(store.reader())
    .await?;
    row.as_ref().map(job).transpose()
}

/// Which jobs ListMemoryExtractionJobs shows.
#[derive(Debug, Default)]
pub struct JobFilter {
    pub strategy_id: Option<String>,
    pub actor_id: Option<String>,
    pub session_id: Option<String>,
}

/// A memory's failed jobs, oldest first, after the `(created_at, job_id)` cursor.
pub async fn list_jobs(
    store: &Store,
    memory_id: &str,
    filter: &JobFilter,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<JobRow>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM memory_extraction_jobs WHERE memory_id = $1");
    let mut values = vec![memory_id.to_string()];
    for (column, value) in [
        ("strategy_id", &filter.strategy_id),
        ("actor_id", &filter.actor_id),
        ("session_id", &filter.session_id),
    ] {
        if let Some(value) = value {
            values.push(value.clone());
            sql.push_str(&format!(" AND {column} = ${}", values.len()));
        }
    }
    if let Some((created, id)) = &after {
        values.push(id.clone());
        sql.push_str(&format!(
            " AND (created_at > {created} OR (created_at = {created} AND job_id > ${}))",
            values.len()
        ));
    }
    sql.push_str(&format!(" ORDER BY created_at, job_id LIMIT {limit}"));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in &values {
        query = query.bind(value);
    }
    let rows = query.fetch_all(store.reader()).await?;
    rows.iter().map(job).collect()
}

/// Claims `key` for `owner` until `until`, unless another owner holds an unexpired claim.
pub async fn claim(store: &Store, key: &str, owner: &str, now: i64, until: i64) -> Result<bool> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "INSERT INTO memory_extraction_claims (claim_key, owner, until) VALUES ($1, $2, $3) \
         ON CONFLICT (claim_key) DO UPDATE SET owner = excluded.owner, until = excluded.until \
         WHERE memory_extraction_claims.until < $4 OR memory_extraction_claims.owner = excluded.owner",
    )
    .bind(key)
    .bind(owner)
    .bind(until)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a claim up, in the transaction that wrote its work.
pub async fn release(tx: &mut Tx, key: &str, owner: &str) -> Result<()> {
    sqlx::query("DELETE FROM memory_extraction_claims WHERE claim_key = $1 AND owner = $2")
        .bind(key)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
