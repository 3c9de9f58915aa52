//! Memory's tables. Portable SQL (see `berth_store`): it runs unchanged on SQLite and PostgreSQL.

pub mod extraction;
pub mod records;

use berth_store::sqlx::{self, Any, AnyConnection, Executor, Row, any::AnyRow};
use berth_store::{Backend, Result, Store, StoreError};
use serde_json::{Map, Value};

/// A connection inside a write transaction (`Store::begin` or `Store::write`).
pub type Tx = AnyConnection;

/// A `memories` row.
#[derive(Clone, Debug)]
pub struct MemoryRow {
    pub memory_id: String,
    pub account_id: String,
    pub name: String,
    pub arn: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub event_expiry_days: i64,
    pub attributes: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A `memory_strategies` row.
#[derive(Clone, Debug)]
pub struct StrategyRow {
    pub strategy_id: String,
    pub memory_id: String,
    pub position: i64,
    pub name: String,
    pub strategy_type: String,
    pub status: String,
    pub definition: Map<String, Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A `memory_events` row.
#[derive(Clone, Debug)]
pub struct EventRow {
    pub seq: i64,
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub event_id: String,
    pub event_time: i64,
    pub branch_name: Option<String>,
    pub root_event_id: Option<String>,
    pub payload: String,
    pub metadata: Option<String>,
}

fn json_object(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(StoreError::Corrupt(format!("expected a JSON object, found `{text}`"))),
    }
}

fn memory_row(row: &AnyRow) -> Result<MemoryRow> {
    Ok(MemoryRow {
        memory_id: row.try_get("memory_id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        arn: row.try_get("arn")?,
        status: row.try_get("status")?,
        failure_reason: row.try_get("failure_reason")?,
        event_expiry_days: row.try_get("event_expiry_days")?,
        attributes: json_object(&row.try_get::<String, _>("attributes")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn strategy_row(row: &AnyRow) -> Result<StrategyRow> {
    Ok(StrategyRow {
        strategy_id: row.try_get("strategy_id")?,
        memory_id: row.try_get("memory_id")?,
        position: row.try_get("position")?,
        name: row.try_get("name")?,
        strategy_type: row.try_get("strategy_type")?,
        status: row.try_get("status")?,
        definition: json_object(&row.try_get::<String, _>("definition")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn event_row(row: &AnyRow, with_payload: bool) -> Result<EventRow> {
    Ok(EventRow {
        seq: row.try_get("seq")?,
        memory_id: row.try_get("memory_id")?,
        actor_id: row.try_get("actor_id")?,
        session_id: row.try_get("session_id")?,
        event_id: row.try_get("event_id")?,
        event_time: row.try_get("event_time")?,
        branch_name: row.try_get("branch_name")?,
        root_event_id: row.try_get("root_event_id")?,
        payload: if with_payload {
            row.try_get("payload")?
        } else {
            "[]".to_string()
        },
        metadata: row.try_get("metadata")?,
    })
}

const MEMORY_COLUMNS: &str =
    "memory_id, account_id, name, arn, status, failure_reason, event_expiry_days, attributes, created_at, updated_at";
const STRATEGY_COLUMNS: &str =
    "strategy_id, memory_id, position, name, strategy_type, status, definition, created_at, updated_at";
const EVENT_COLUMNS: &str =
    "seq, memory_id, actor_id, session_id, event_id, event_time, branch_name, root_event_id, metadata";

// ---- memories and strategies ---------------------------------------------------------------

pub async fn insert_memory(tx: &mut Tx, m: &MemoryRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO memories (memory_id, account_id, name, arn, status, failure_reason, event_expiry_days, attributes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&m.memory_id)
    .bind(&m.account_id)
    .bind(&m.name)
    .bind(&m.arn)
    .bind(&m.status)
    .bind(&m.failure_reason)
    .bind(m.event_expiry_days)
    .bind(Value::Object(m.attributes.clone()).to_string())
    .bind(m.created_at)
    .bind(m.updated_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn update_memory(tx: &mut Tx, m: &MemoryRow) -> Result<()> {
    sqlx::query(
        "UPDATE memories SET status = $1, failure_reason = $2, event_expiry_days = $3, attributes = $4, updated_at = $5 \
         WHERE memory_id = $6",
    )
    .bind(&m.status)
    .bind(&m.failure_reason)
    .bind(m.event_expiry_days)
    .bind(Value::Object(m.attributes.clone()).to_string())
    .bind(m.updated_at)
    .bind(&m.memory_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn insert_strategy(tx: &mut Tx, s: &StrategyRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO memory_strategies (strategy_id, memory_id, position, name, strategy_type, status, definition, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&s.strategy_id)
    .bind(&s.memory_id)
    .bind(s.position)
    .bind(&s.name)
    .bind(&s.strategy_type)
    .bind(&s.status)
    .bind(Value::Object(s.definition.clone()).to_string())
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn update_strategy(tx: &mut Tx, s: &StrategyRow) -> Result<()> {
    sqlx::query("UPDATE memory_strategies SET status = $1, definition = $2, updated_at = $3 WHERE strategy_id = $4")
        .bind(&s.status)
        .bind(Value::Object(s.definition.clone()).to_string())
        .bind(s.updated_at)
        .bind(&s.strategy_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn delete_strategy(tx: &mut Tx, strategy_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM memory_strategies WHERE strategy_id = $1")
        .bind(strategy_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A memory by id, through a pool or inside a transaction (for read-modify-write).
pub async fn memory<'e>(db: impl Executor<'e, Database = Any>, memory_id: &str) -> Result<Option<MemoryRow>> {
    let sql = format!("SELECT {MEMORY_COLUMNS} FROM memories WHERE memory_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(memory_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(memory_row).transpose()
}

/// A memory's strategies in creation order.
pub async fn strategies<'e>(db: impl Executor<'e, Database = Any>, memory_id: &str) -> Result<Vec<StrategyRow>> {
    let sql = format!("SELECT {STRATEGY_COLUMNS} FROM memory_strategies WHERE memory_id = $1 ORDER BY position");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(memory_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(strategy_row).collect()
}

/// Memories of an account after the `(created_at, memory_id)` cursor, oldest first.
pub async fn list_memories(
    store: &Store,
    account_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<MemoryRow>> {
    let (after_time, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let sql = format!(
        "SELECT {MEMORY_COLUMNS} FROM memories WHERE account_id = $1 \
         AND (created_at > $2 OR (created_at = $2 AND memory_id > $3)) ORDER BY created_at, memory_id LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id)
        .bind(after_time)
        .bind(after_id)
        .bind(limit)
        .fetch_all(store.reader())
        .await?;
    rows.iter().map(memory_row).collect()
}

/// Removes a memory with its strategies, events, sessions, records, tags and policy.
pub async fn delete_memory(tx: &mut Tx, memory_id: &str, arn: &str) -> Result<()> {
    for sql in [
        "DELETE FROM memory_events WHERE memory_id = $1",
        // Explicitly rather than by cascade, so the full-text index's triggers surely run.
        "DELETE FROM memory_records WHERE memory_id = $1",
        "DELETE FROM memory_sessions WHERE memory_id = $1",
        "DELETE FROM memory_strategies WHERE memory_id = $1",
        "DELETE FROM memories WHERE memory_id = $1",
    ] {
        sqlx::query(sql).bind(memory_id).execute(&mut *tx).await?;
    }
    berth_store::tags::forget_resource(tx, arn).await
}

// ---- events --------------------------------------------------------------------------------

/// How an event waits for long-term extraction: `None` when it does not (no extracting
/// strategy, `extractionMode: SKIP`, nothing conversational), else its namespace variables.
pub type PendingExtraction<'a> = Option<Option<&'a str>>;

/// Inserts an event and, when `new_session` says the session may not be recorded yet, records
/// its session. Metadata stays in the event's JSON `metadata` column; filters read it there.
pub async fn insert_event(
    tx: &mut Tx,
    e: &EventRow,
    new_session: bool,
    now: i64,
    extraction: PendingExtraction<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memory_events (memory_id, actor_id, session_id, event_id, event_time, branch_name, root_event_id, payload, metadata, created_at, \
         extraction_pending, namespace_variables) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&e.memory_id)
    .bind(&e.actor_id)
    .bind(&e.session_id)
    .bind(&e.event_id)
    .bind(e.event_time)
    .bind(&e.branch_name)
    .bind(&e.root_event_id)
    .bind(&e.payload)
    .bind(&e.metadata)
    .bind(now)
    .bind(i64::from(extraction.is_some()))
    .bind(extraction.flatten())
    .execute(&mut *tx)
    .await?;
    if new_session {
        sqlx::query(
            "INSERT INTO memory_sessions (memory_id, actor_id, session_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (memory_id, actor_id, session_id) DO NOTHING",
        )
        .bind(&e.memory_id)
        .bind(&e.actor_id)
        .bind(&e.session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One event of a session, with its payload.
pub async fn event(
    store: &Store,
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    event_id: &str,
) -> Result<Option<EventRow>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, payload FROM memory_events \
         WHERE memory_id = $1 AND event_id = $2 AND actor_id = $3 AND session_id = $4"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(memory_id)
        .bind(event_id)
        .bind(actor_id)
        .bind(session_id)
        .fetch_optional(store.reader())
        .await?;
    row.as_ref().map(|r| event_row(r, true)).transpose()
}

/// An event anywhere in the memory (to resolve a branch root), in the caller's transaction.
pub async fn event_in_memory<'e>(
    db: impl Executor<'e, Database = Any>,
    memory_id: &str,
    event_id: &str,
) -> Result<Option<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM memory_events WHERE memory_id = $1 AND event_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(memory_id)
        .bind(event_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(|r| event_row(r, false)).transpose()
}

/// The root event id of a branch of a session, if the branch has events.
pub async fn branch_root<'e>(
    db: impl Executor<'e, Database = Any>,
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    branch: &str,
) -> Result<Option<Option<String>>> {
    let row = sqlx::query(
        "SELECT root_event_id FROM memory_events WHERE memory_id = $1 AND actor_id = $2 AND session_id = $3 AND branch_name = $4 \
         ORDER BY seq LIMIT 1",
    )
    .bind(memory_id)
    .bind(actor_id)
    .bind(session_id)
    .bind(branch)
    .fetch_optional(db)
    .await?;
    row.map(|r| r.try_get("root_event_id")).transpose().map_err(Into::into)
}

pub async fn delete_event(
    tx: &mut Tx,
    memory_id: &str,
    actor_id: &str,
    session_id: &str,
    event_id: &str,
) -> Result<bool> {
    let done = sqlx::query(
        "DELETE FROM memory_events WHERE memory_id = $1 AND event_id = $2 AND actor_id = $3 AND session_id = $4",
    )
    .bind(memory_id)
    .bind(event_id)
    .bind(actor_id)
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Which part of a branch a listing includes.
#[derive(Clone, Debug)]
pub enum BranchScope {
    /// Every event of the named branch (`None` = main).
    Whole(Option<String>),
    /// The events of a branch up to and including the position `(event_time, seq)`.
    UpTo(Option<String>, i64, i64),
}

/// A metadata condition on events.
#[derive(Clone, Debug)]
pub enum MetadataCondition {
    Equals(String, String),
    Exists(String),
    NotExists(String),
}

/// What [`list_events`] returns.
pub struct EventQuery<'a> {
    pub memory_id: &'a str,
    pub actor_id: &'a str,
    pub session_id: &'a str,
    /// Empty = every branch.
    pub branches: Vec<BranchScope>,
    pub metadata: Vec<MetadataCondition>,
    pub include_payloads: bool,
    /// Resume below this `(event_time, seq)`.
    pub before: Option<(i64, i64)>,
    pub limit: i64,
}

/// Events of one session, newest first.
pub async fn list_events(store: &Store, q: &EventQuery<'_>) -> Result<Vec<EventRow>> {
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS}{} FROM memory_events e WHERE memory_id = $1 AND actor_id = $2 AND session_id = $3",
        if q.include_payloads { ", payload" } else { "" }
    );
    // Arguments are bound in the order their placeholders first appear.
    let mut next = 4;
    enum Arg {
        Text(Option<String>),
        Int(i64),
    }
    let mut args: Vec<Arg> = Vec::new();
    let mut placeholder = |arg: Arg, args: &mut Vec<Arg>| {
        args.push(arg);
        let p = format!("${next}");
        next += 1;
        p
    };
    if !q.branches.is_empty() {
        let mut clauses = Vec::new();
        for scope in &q.branches {
            let (branch, upto) = match scope {
                BranchScope::Whole(b) => (b, None),
                BranchScope::UpTo(b, t, s) => (b, Some((*t, *s))),
            };
            let mut clause = match branch {
                Some(name) => format!(
                    "branch_name = {}",
                    placeholder(Arg::Text(Some(name.clone())), &mut args)
                ),
                None => "branch_name IS NULL".to_string(),
            };
            if let Some((time, seq)) = upto {
                let t = placeholder(Arg::Int(time), &mut args);
                let s = placeholder(Arg::Int(seq), &mut args);
                clause = format!("({clause} AND (event_time < {t} OR (event_time = {t} AND seq <= {s})))");
            }
            clauses.push(clause);
        }
        sql.push_str(&format!(" AND ({})", clauses.join(" OR ")));
    }
    // Metadata lives in the event's JSON column: `{"key": {"stringValue": "…"}}`. SQLite reads it
    // with a quoted JSON path (keys cannot contain quotes: the model's key pattern), PostgreSQL
    // as jsonb.
    let postgres = store.backend() == Backend::Postgres;
    for condition in &q.metadata {
        let (key, value, present) = match condition {
            MetadataCondition::Equals(k, v) => (k, Some(v), true),
            MetadataCondition::Exists(k) => (k, None, true),
            MetadataCondition::NotExists(k) => (k, None, false),
        };
        let clause = match (value, postgres) {
            (Some(value), true) => {
                let k = placeholder(Arg::Text(Some(key.clone())), &mut args);
                let v = placeholder(Arg::Text(Some(value.clone())), &mut args);
                format!("(e.metadata::jsonb -> {k} ->> 'stringValue') = {v}")
            }
            (Some(value), false) => {
                let path = placeholder(Arg::Text(Some(format!("$.\"{key}\".stringValue"))), &mut args);
                let v = placeholder(Arg::Text(Some(value.clone())), &mut args);
                format!("json_extract(e.metadata, {path}) = {v}")
            }
            (None, _) => {
                let entry = if postgres {
                    let k = placeholder(Arg::Text(Some(key.clone())), &mut args);
                    format!("(e.metadata::jsonb -> {k})")
                } else {
                    let path = placeholder(Arg::Text(Some(format!("$.\"{key}\""))), &mut args);
                    format!("json_extract(e.metadata, {path})")
                };
                format!("{entry} IS {}NULL", if present { "NOT " } else { "" })
            }
        };
        sql.push_str(&format!(" AND {clause}"));
    }

    if let Some((time, seq)) = q.before {
        let t = placeholder(Arg::Int(time), &mut args);
        let s = placeholder(Arg::Int(seq), &mut args);
        sql.push_str(&format!(" AND (event_time < {t} OR (event_time = {t} AND seq < {s}))"));
    }
    let l = placeholder(Arg::Int(q.limit), &mut args);
    sql.push_str(&format!(" ORDER BY event_time DESC, seq DESC LIMIT {l}"));

    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(q.memory_id)
        .bind(q.actor_id)
        .bind(q.session_id);
    for arg in args {
        query = match arg {
            Arg::Text(t) => query.bind(t),
            Arg::Int(i) => query.bind(i),
        };
    }
    let rows = query.fetch_all(store.reader()).await?;
    rows.iter().map(|r| event_row(r, q.include_payloads)).collect()
}

/// Actor ids of a memory after `after`, in order.
pub async fn list_actors(store: &Store, memory_id: &str, after: &str, limit: i64) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT actor_id FROM memory_sessions WHERE memory_id = $1 AND actor_id > $2 ORDER BY actor_id LIMIT $3",
    )
    .bind(memory_id)
    .bind(after)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(|r| r.try_get("actor_id").map_err(Into::into)).collect()
}

/// Sessions of an actor, newest first, below the `(created_at, session_id)` cursor.
pub async fn list_sessions(
    store: &Store,
    memory_id: &str,
    actor_id: &str,
    before: Option<(i64, String)>,
    with_events_only: bool,
    limit: i64,
) -> Result<Vec<(String, i64)>> {
    let (before_time, before_id) = before.unwrap_or((i64::MAX, String::new()));
    let has_events = if with_events_only {
        " AND EXISTS (SELECT 1 FROM memory_events e WHERE e.memory_id = s.memory_id AND e.actor_id = s.actor_id AND e.session_id = s.session_id)"
    } else {
        ""
    };
    let sql = format!(
        "SELECT session_id, created_at FROM memory_sessions s WHERE memory_id = $1 AND actor_id = $2 \
         AND (created_at < $3 OR (created_at = $3 AND session_id > $4)){has_events} \
         ORDER BY created_at DESC, session_id LIMIT $5"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(memory_id)
        .bind(actor_id)
        .bind(before_time)
        .bind(before_id)
        .bind(limit)
        .fetch_all(store.reader())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("session_id")?, r.try_get("created_at")?)))
        .collect()
}

/// Deletes events older than their memory's `eventExpiryDuration` (counted from when Berth
/// stored them). Returns how many went.
pub async fn sweep_expired_events(store: &Store, now: i64) -> Result<u64> {
    let mut tx = store.begin().await?;
    let expired = "SELECT e.seq FROM memory_events e JOIN memories m ON m.memory_id = e.memory_id \
                   WHERE e.created_at + m.event_expiry_days * 86400000 < $1";
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM memory_events WHERE seq IN ({expired})"
    )))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}
