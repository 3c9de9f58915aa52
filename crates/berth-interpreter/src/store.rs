//! Code Interpreter's tables. Portable SQL (see `berth_store`): it runs unchanged on SQLite and
//! PostgreSQL.

use berth_store::sqlx::{self, Row, any::AnyRow};
use berth_store::{Result, StoreError};
use serde_json::{Map, Value};

#[derive(Clone, Debug)]
pub struct InterpreterRow {
    pub account_id: String,
    pub interpreter_id: String,
    pub name: String,
    pub arn: String,
    pub definition: Map<String, Value>,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl InterpreterRow {
    pub fn network_mode(&self) -> &str {
        self.definition
            .get("networkConfiguration")
            .and_then(|n| n.get("networkMode"))
            .and_then(Value::as_str)
            .unwrap_or("SANDBOX")
    }
}

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub account_id: String,
    pub interpreter_id: String,
    pub session_id: String,
    pub name: Option<String>,
    pub timeout_seconds: i64,
    pub status: String,
    pub node: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const INTERPRETER_COLUMNS: &str = "account_id, interpreter_id, name, arn, definition, status, created_at, updated_at";
const SESSION_COLUMNS: &str =
    "account_id, interpreter_id, session_id, name, timeout_seconds, status, node, created_at, updated_at";

fn interpreter_row(row: &AnyRow) -> Result<InterpreterRow> {
    let definition: String = row.try_get("definition")?;
    let Ok(Value::Object(definition)) = serde_json::from_str(&definition) else {
        return Err(StoreError::Corrupt(format!(
            "expected a JSON object, found `{definition}`"
        )));
    };
    Ok(InterpreterRow {
        account_id: row.try_get("account_id")?,
        interpreter_id: row.try_get("interpreter_id")?,
        name: row.try_get("name")?,
        arn: row.try_get("arn")?,
        definition,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn session_row(row: &AnyRow) -> Result<SessionRow> {
    Ok(SessionRow {
        account_id: row.try_get("account_id")?,
        interpreter_id: row.try_get("interpreter_id")?,
        session_id: row.try_get("session_id")?,
        name: row.try_get("name")?,
        timeout_seconds: row.try_get("timeout_seconds")?,
        status: row.try_get("status")?,
        node: row.try_get("node")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

// ---- interpreters ----------------------------------------------------------------------------

pub async fn insert_interpreter<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    r: &InterpreterRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO code_interpreters (account_id, interpreter_id, name, arn, definition, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&r.account_id)
    .bind(&r.interpreter_id)
    .bind(&r.name)
    .bind(&r.arn)
    .bind(Value::Object(r.definition.clone()).to_string())
    .bind(&r.status)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn interpreter<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    interpreter_id: &str,
) -> Result<Option<InterpreterRow>> {
    let sql =
        format!("SELECT {INTERPRETER_COLUMNS} FROM code_interpreters WHERE account_id = $1 AND interpreter_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id)
        .bind(interpreter_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(interpreter_row).transpose()
}

pub async fn list_interpreters<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<InterpreterRow>> {
    let (created, id) = after.unwrap_or((i64::MIN, String::new()));
    let sql = format!(
        "SELECT {INTERPRETER_COLUMNS} FROM code_interpreters WHERE account_id = $1 \
         AND (created_at > $2 OR (created_at = $2 AND interpreter_id > $3)) ORDER BY created_at, interpreter_id LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id)
        .bind(created)
        .bind(id)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(interpreter_row).collect()
}

pub async fn delete_interpreter<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    interpreter_id: &str,
) -> Result<()> {
    sqlx::query("DELETE FROM code_interpreters WHERE account_id = $1 AND interpreter_id = $2")
        .bind(account_id)
        .bind(interpreter_id)
        .execute(db)
        .await?;
    Ok(())
}

// ---- sessions --------------------------------------------------------------------------------

pub async fn insert_session<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(db: E, s: &SessionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO code_interpreter_sessions (account_id, interpreter_id, session_id, name, timeout_seconds, status, node, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&s.account_id)
    .bind(&s.interpreter_id)
    .bind(&s.session_id)
    .bind(&s.name)
    .bind(s.timeout_seconds)
    .bind(&s.status)
    .bind(&s.node)
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn session<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    interpreter_id: &str,
    session_id: &str,
) -> Result<Option<SessionRow>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM code_interpreter_sessions \
         WHERE account_id = $1 AND interpreter_id = $2 AND session_id = $3"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id)
        .bind(interpreter_id)
        .bind(session_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(session_row).transpose()
}

/// Newest first.
pub async fn list_sessions<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    interpreter_id: &str,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<SessionRow>> {
    let (created, id) = before.unwrap_or((i64::MAX, String::new()));
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM code_interpreter_sessions WHERE account_id = $1 AND interpreter_id = $2 \
         AND (created_at < $3 OR (created_at = $3 AND session_id < $4)) \
         ORDER BY created_at DESC, session_id DESC LIMIT $5"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id)
        .bind(interpreter_id)
        .bind(created)
        .bind(id)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(session_row).collect()
}

pub async fn terminate_session<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    interpreter_id: &str,
    session_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE code_interpreter_sessions SET status = 'TERMINATED', updated_at = $1 \
         WHERE account_id = $2 AND interpreter_id = $3 AND session_id = $4 AND status <> 'TERMINATED'",
    )
    .bind(now)
    .bind(account_id)
    .bind(interpreter_id)
    .bind(session_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Sessions a previous run of this node left READY: their sandboxes died with it.
pub async fn terminate_node_sessions<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    node: &str,
    now: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE code_interpreter_sessions SET status = 'TERMINATED', updated_at = $1 WHERE node = $2 AND status = 'READY'",
    )
    .bind(now)
    .bind(node)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
