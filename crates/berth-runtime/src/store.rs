//! Runtime's tables. Portable SQL (see `berth_store`): it runs unchanged on SQLite and PostgreSQL.

use berth_store::sqlx::{self, AnyConnection, Row, any::AnyRow};
use berth_store::{Result, StoreError};
use serde_json::{Map, Value};

pub type Tx = AnyConnection;

#[derive(Clone, Debug)]
pub struct RuntimeRow {
    pub runtime_id: String,
    pub account_id: String,
    pub name: String,
    pub arn: String,
    pub latest_version: i64,
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug)]
pub struct VersionRow {
    pub runtime_id: String,
    pub version: i64,
    pub definition: Map<String, Value>,
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug)]
pub struct EndpointRow {
    pub runtime_id: String,
    pub name: String,
    pub arn: String,
    pub live_version: Option<i64>,
    pub target_version: i64,
    pub status: String,
    pub description: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug)]
pub struct ArtifactRow {
    pub sha256: String,
    pub size: i64,
}

fn json_object(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(StoreError::Corrupt(format!("expected a JSON object, found `{text}`"))),
    }
}

const RUNTIME_COLUMNS: &str =
    "runtime_id, account_id, name, arn, latest_version, status, failure_reason, created_at, updated_at";
const VERSION_COLUMNS: &str = "runtime_id, version, definition, status, failure_reason, created_at, updated_at";
const ENDPOINT_COLUMNS: &str = "runtime_id, name, arn, live_version, target_version, status, description, \
     failure_reason, created_at, updated_at";

fn runtime_row(row: &AnyRow) -> Result<RuntimeRow> {
    Ok(RuntimeRow {
        runtime_id: row.try_get("runtime_id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        arn: row.try_get("arn")?,
        latest_version: row.try_get("latest_version")?,
        status: row.try_get("status")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn version_row(row: &AnyRow) -> Result<VersionRow> {
    Ok(VersionRow {
        runtime_id: row.try_get("runtime_id")?,
        version: row.try_get("version")?,
        definition: json_object(&row.try_get::<String, _>("definition")?)?,
        status: row.try_get("status")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn endpoint_row(row: &AnyRow) -> Result<EndpointRow> {
    Ok(EndpointRow {
        runtime_id: row.try_get("runtime_id")?,
        name: row.try_get("name")?,
        arn: row.try_get("arn")?,
        live_version: row.try_get("live_version")?,
        target_version: row.try_get("target_version")?,
        status: row.try_get("status")?,
        description: row.try_get("description")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

// ---- runtimes ------------------------------------------------------------------------------

pub async fn insert_runtime(tx: &mut Tx, r: &RuntimeRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO agent_runtimes (runtime_id, account_id, name, arn, latest_version, status, failure_reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&r.runtime_id)
    .bind(&r.account_id)
    .bind(&r.name)
    .bind(&r.arn)
    .bind(r.latest_version)
    .bind(&r.status)
    .bind(&r.failure_reason)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn update_runtime(tx: &mut Tx, r: &RuntimeRow) -> Result<()> {
    sqlx::query(
        "UPDATE agent_runtimes SET latest_version = $1, status = $2, failure_reason = $3, updated_at = $4 WHERE runtime_id = $5",
    )
    .bind(r.latest_version)
    .bind(&r.status)
    .bind(&r.failure_reason)
    .bind(r.updated_at)
    .bind(&r.runtime_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn runtime<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(db: E, id: &str) -> Result<Option<RuntimeRow>> {
    let sql = format!("SELECT {RUNTIME_COLUMNS} FROM agent_runtimes WHERE runtime_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(runtime_row).transpose()
}

/// A page of an account's runtimes after `(created_at, runtime_id)`.
pub async fn list_runtimes<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<RuntimeRow>> {
    let (created, id) = after.unwrap_or((i64::MIN, String::new()));
    let sql = format!(
        "SELECT {RUNTIME_COLUMNS} FROM agent_runtimes WHERE account_id = $1 \
         AND (created_at > $2 OR (created_at = $2 AND runtime_id > $3)) ORDER BY created_at, runtime_id LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(account_id)
        .bind(created)
        .bind(id)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(runtime_row).collect()
}

pub async fn delete_runtime(tx: &mut Tx, id: &str) -> Result<()> {
    // Children first: SQLite enforces the cascade, but explicit deletes keep both backends alike.
    for table in ["agent_runtime_endpoints", "agent_runtime_versions", "agent_runtimes"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE runtime_id = $1"
        )))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

// ---- versions ------------------------------------------------------------------------------

pub async fn insert_version(tx: &mut Tx, v: &VersionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO agent_runtime_versions (runtime_id, version, definition, status, failure_reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&v.runtime_id)
    .bind(v.version)
    .bind(Value::Object(v.definition.clone()).to_string())
    .bind(&v.status)
    .bind(&v.failure_reason)
    .bind(v.created_at)
    .bind(v.updated_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn set_version_status(
    tx: &mut Tx,
    runtime_id: &str,
    version: i64,
    status: &str,
    failure_reason: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE agent_runtime_versions SET status = $1, failure_reason = $2, updated_at = $3 WHERE runtime_id = $4 AND version = $5",
    )
    .bind(status)
    .bind(failure_reason)
    .bind(now)
    .bind(runtime_id)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn version<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    runtime_id: &str,
    version: i64,
) -> Result<Option<VersionRow>> {
    let sql = format!("SELECT {VERSION_COLUMNS} FROM agent_runtime_versions WHERE runtime_id = $1 AND version = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(runtime_id)
        .bind(version)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(version_row).transpose()
}

/// A page of a runtime's versions, newest first, below `before`.
pub async fn list_versions<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    runtime_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<VersionRow>> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM agent_runtime_versions WHERE runtime_id = $1 AND version < $2 \
         ORDER BY version DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(runtime_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(version_row).collect()
}

pub async fn delete_version(tx: &mut Tx, runtime_id: &str, version: i64) -> Result<()> {
    sqlx::query("DELETE FROM agent_runtime_versions WHERE runtime_id = $1 AND version = $2")
        .bind(runtime_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

// ---- endpoints -----------------------------------------------------------------------------

pub async fn upsert_endpoint(tx: &mut Tx, e: &EndpointRow, insert: bool) -> Result<()> {
    let sql = if insert {
        "INSERT INTO agent_runtime_endpoints (live_version, target_version, status, description, failure_reason, updated_at, \
         runtime_id, name, arn, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    } else {
        "UPDATE agent_runtime_endpoints SET live_version = $1, target_version = $2, status = $3, description = $4, \
         failure_reason = $5, updated_at = $6 WHERE runtime_id = $7 AND name = $8 AND arn = $9 AND created_at = $10"
    };
    sqlx::query(sql)
        .bind(e.live_version)
        .bind(e.target_version)
        .bind(&e.status)
        .bind(&e.description)
        .bind(&e.failure_reason)
        .bind(e.updated_at)
        .bind(&e.runtime_id)
        .bind(&e.name)
        .bind(&e.arn)
        .bind(e.created_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn endpoint<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    runtime_id: &str,
    name: &str,
) -> Result<Option<EndpointRow>> {
    let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM agent_runtime_endpoints WHERE runtime_id = $1 AND name = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(runtime_id)
        .bind(name)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(endpoint_row).transpose()
}

pub async fn endpoints<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    runtime_id: &str,
) -> Result<Vec<EndpointRow>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM agent_runtime_endpoints WHERE runtime_id = $1 ORDER BY created_at, name"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(runtime_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(endpoint_row).collect()
}

pub async fn delete_endpoint(tx: &mut Tx, runtime_id: &str, name: &str) -> Result<()> {
    sqlx::query("DELETE FROM agent_runtime_endpoints WHERE runtime_id = $1 AND name = $2")
        .bind(runtime_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

// ---- artifacts -----------------------------------------------------------------------------

pub async fn put_artifact(
    tx: &mut Tx,
    account_id: &str,
    bucket: &str,
    key: &str,
    a: &ArtifactRow,
    now: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM artifacts WHERE account_id = $1 AND bucket = $2 AND object_key = $3")
        .bind(account_id)
        .bind(bucket)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO artifacts (account_id, bucket, object_key, sha256, size, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(account_id)
    .bind(bucket)
    .bind(key)
    .bind(&a.sha256)
    .bind(a.size)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn artifact<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    account_id: &str,
    bucket: &str,
    key: &str,
) -> Result<Option<ArtifactRow>> {
    let row =
        sqlx::query("SELECT sha256, size FROM artifacts WHERE account_id = $1 AND bucket = $2 AND object_key = $3")
            .bind(account_id)
            .bind(bucket)
            .bind(key)
            .fetch_optional(db)
            .await?;
    row.map(|row| {
        Ok(ArtifactRow {
            sha256: row.try_get("sha256")?,
            size: row.try_get("size")?,
        })
    })
    .transpose()
}
