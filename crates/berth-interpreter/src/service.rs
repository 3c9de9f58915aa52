//! Code Interpreter's operations: custom interpreters (control plane), sessions and tool calls
//! (data plane). One `async fn` per operation; the server maps errors onto the wire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::{Arn, Caller, Clock, PageToken, Timestamp, ids};
use berth_store::Store;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::error::{InterpreterError, Result};
use crate::session::{SessionKey, StreamEvent};
use crate::sessions::{OpenError, Sessions};
use crate::store::{self as db, InterpreterRow, SessionRow};
use crate::tools::Invocation;

/// The interpreter every account has.
pub const SYSTEM_INTERPRETER: &str = "aws.codeinterpreter.v1";
const DEFAULT_SESSION_TIMEOUT: i64 = 900;
const READY: &str = "READY";
const TERMINATED: &str = "TERMINATED";
/// Members of CreateCodeInterpreter kept and shown by GetCodeInterpreter.
const DEFINITION_MEMBERS: &[&str] = &[
    "description",
    "executionRoleArn",
    "networkConfiguration",
    "certificates",
    "filesystemConfigurations",
];

#[derive(Clone)]
pub struct InterpreterService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    region: String,
    /// Names this process in session rows, so a restart can end the sessions it left.
    node: String,
    /// The network mode of the system interpreter (`SANDBOX` unless configured `PUBLIC`).
    system_network_mode: String,
    sessions: Sessions,
}

fn iso(millis: i64) -> String {
    Timestamp(millis).to_iso8601()
}

fn text(input: &Value, name: &str) -> Option<String> {
    input.get(name).and_then(Value::as_str).map(str::to_string)
}

fn page_size(max_results: Option<i64>) -> i64 {
    max_results.unwrap_or(10).clamp(1, 100)
}

/// An interpreter named by id or by ARN (`…:code-interpreter(-custom)/{id}`).
fn interpreter_id(identifier: &str) -> &str {
    if identifier.starts_with("arn:") {
        identifier.rsplit('/').next().unwrap_or(identifier)
    } else {
        identifier
    }
}

impl InterpreterService {
    pub fn new(store: Store, region: &str, node: String, system_network_mode: String, sessions: Sessions) -> Self {
        InterpreterService {
            inner: Arc::new(Inner {
                clock: store.clock().clone(),
                store,
                region: region.to_string(),
                node,
                system_network_mode,
                sessions,
            }),
        }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    fn now(&self) -> i64 {
        self.inner.clock.now().millis()
    }

    fn system_arn(&self) -> String {
        format!(
            "arn:aws:bedrock-agentcore:{}:aws:code-interpreter/{SYSTEM_INTERPRETER}",
            self.inner.region
        )
    }

    // ---- control plane -------------------------------------------------------------------

    pub async fn create_code_interpreter(&self, caller: &Caller, input: Value) -> Result<Value> {
        let name = text(&input, "name").unwrap_or_default();
        let mode = input
            .pointer("/networkConfiguration/networkMode")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if mode == "VPC" {
            return Err(InterpreterError::invalid(
                "networkConfiguration.networkMode",
                "VPC mode needs an AWS VPC; on Berth use SANDBOX (no network) or PUBLIC (egress through the proxy)",
            ));
        }
        let definition: Map<String, Value> = DEFINITION_MEMBERS
            .iter()
            .filter_map(|k| input.get(*k).map(|v| ((*k).to_string(), v.clone())))
            .collect();
        let now = self.now();
        let id = ids::resource_id(&name);
        let row = InterpreterRow {
            account_id: caller.account.to_string(),
            arn: Arn::new(
                &self.inner.region,
                &caller.account,
                format!("code-interpreter-custom/{id}"),
            )
            .to_string(),
            interpreter_id: id.clone(),
            name: name.clone(),
            definition,
            status: READY.into(),
            created_at: now,
            updated_at: now,
        };
        let tags: BTreeMap<String, String> = input
            .get("tags")
            .and_then(Value::as_object)
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let mut tx = self.inner.store.begin().await?;
        match db::insert_interpreter(&mut *tx, &row).await {
            Err(e) if e.is_unique_violation() => {
                return Err(InterpreterError::Conflict(format!(
                    "a code interpreter named `{name}` already exists"
                )));
            }
            other => other?,
        }
        berth_store::tags::insert_tags(&mut tx, &row.arn, &tags).await?;
        tx.commit().await.map_err(berth_store::StoreError::from)?;
        // Nothing to build: every interpreter runs on the shared environment, so it is READY.
        Ok(json!({
            "codeInterpreterId": id,
            "codeInterpreterArn": row.arn,
            "createdAt": iso(now),
            "status": READY,
        }))
    }

    async fn custom(&self, caller: &Caller, identifier: &str) -> Result<InterpreterRow> {
        let id = interpreter_id(identifier);
        db::interpreter(self.inner.store.reader(), caller.account.as_str(), id)
            .await?
            .ok_or_else(|| InterpreterError::InterpreterNotFound(id.to_string()))
    }

    pub async fn get_code_interpreter(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "codeInterpreterId").unwrap_or_default();
        if id == SYSTEM_INTERPRETER {
            return Ok(json!({
                "codeInterpreterId": SYSTEM_INTERPRETER,
                "codeInterpreterArn": self.system_arn(),
                "name": SYSTEM_INTERPRETER,
                "description": "Berth's built-in code interpreter",
                "networkConfiguration": {"networkMode": self.inner.system_network_mode},
                "status": READY,
                "createdAt": iso(0),
                "lastUpdatedAt": iso(0),
            }));
        }
        let row = self.custom(caller, &id).await?;
        let mut out = json!({
            "codeInterpreterId": row.interpreter_id,
            "codeInterpreterArn": row.arn,
            "name": row.name,
            "status": row.status,
            "createdAt": iso(row.created_at),
            "lastUpdatedAt": iso(row.updated_at),
        });
        for (key, value) in row.definition {
            out[key] = value;
        }
        Ok(out)
    }

    pub async fn delete_code_interpreter(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "codeInterpreterId").unwrap_or_default();
        if id == SYSTEM_INTERPRETER {
            return Err(InterpreterError::invalid(
                "codeInterpreterId",
                "the system code interpreter cannot be deleted",
            ));
        }
        let row = self.custom(caller, &id).await?;
        let now = self.now();
        for key in self.inner.sessions.live_keys() {
            if key.account_id == row.account_id && key.interpreter_id == row.interpreter_id {
                self.end_session(&key, now).await?;
            }
        }
        let mut tx = self.inner.store.begin().await?;
        db::delete_interpreter(&mut *tx, &row.account_id, &row.interpreter_id).await?;
        berth_store::tags::forget_resource(&mut tx, &row.arn).await?;
        tx.commit().await.map_err(berth_store::StoreError::from)?;
        Ok(json!({"codeInterpreterId": row.interpreter_id, "status": "DELETED", "lastUpdatedAt": iso(now)}))
    }

    pub async fn list_code_interpreters(&self, caller: &Caller, input: Value) -> Result<Value> {
        let limit = page_size(input.get("maxResults").and_then(Value::as_i64));
        let kind = text(&input, "type");
        let after = match text(&input, "nextToken") {
            Some(token) => {
                Some(PageToken::decode("ListCodeInterpreters", &token).map_err(|_| InterpreterError::BadToken)?)
            }
            None => None,
        };
        let mut items = Vec::new();
        if after.is_none() && kind.as_deref() != Some("CUSTOM") {
            items.push(json!({
                "codeInterpreterId": SYSTEM_INTERPRETER,
                "codeInterpreterArn": self.system_arn(),
                "name": SYSTEM_INTERPRETER,
                "status": READY,
                "createdAt": iso(0),
                "lastUpdatedAt": iso(0),
            }));
        }
        if kind.as_deref() == Some("SYSTEM") {
            return Ok(json!({"codeInterpreterSummaries": items}));
        }
        let room = limit - items.len() as i64;
        let rows = db::list_interpreters(self.inner.store.reader(), caller.account.as_str(), after, room + 1).await?;
        for row in rows.iter().take(room as usize) {
            let mut summary = json!({
                "codeInterpreterId": row.interpreter_id,
                "codeInterpreterArn": row.arn,
                "name": row.name,
                "status": row.status,
                "createdAt": iso(row.created_at),
                "lastUpdatedAt": iso(row.updated_at),
            });
            if let Some(description) = row.definition.get("description") {
                summary["description"] = description.clone();
            }
            items.push(summary);
        }
        let mut out = json!({"codeInterpreterSummaries": items});
        if rows.len() as i64 > room
            && let Some(last) = rows.get(room as usize - 1)
        {
            out["nextToken"] = json!(PageToken::encode(
                "ListCodeInterpreters",
                (last.created_at, last.interpreter_id.clone())
            ));
        }
        Ok(out)
    }

    /// Whether an ARN names a custom interpreter the caller owns (tags, policies).
    pub async fn resource_exists(&self, caller: &Caller, arn: &Arn) -> Result<bool> {
        let Some(id) = arn.resource.strip_prefix("code-interpreter-custom/") else {
            return Ok(false);
        };
        Ok(self.custom(caller, id).await.is_ok())
    }

    // ---- sessions ------------------------------------------------------------------------

    /// The interpreter's id and network mode, checking that the caller may use it.
    async fn usable(&self, caller: &Caller, identifier: &str) -> Result<(String, String)> {
        let id = interpreter_id(identifier);
        if id == SYSTEM_INTERPRETER {
            return Ok((id.to_string(), self.inner.system_network_mode.clone()));
        }
        let row = self.custom(caller, id).await?;
        Ok((row.interpreter_id.clone(), row.network_mode().to_string()))
    }

    pub async fn start_code_interpreter_session(&self, caller: &Caller, input: Value) -> Result<Value> {
        let identifier = text(&input, "codeInterpreterIdentifier").unwrap_or_default();
        let (id, network_mode) = self.usable(caller, &identifier).await?;
        let timeout = input
            .get("sessionTimeoutSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_SESSION_TIMEOUT);
        let key = SessionKey {
            account_id: caller.account.to_string(),
            interpreter_id: id,
            session_id: ids::random_alphanumeric(26),
        };
        let lifetime = Duration::from_secs(timeout.max(1) as u64);
        let opened = self.inner.sessions.open(key.clone(), &network_mode, lifetime).await;
        match opened {
            Ok(_) => {}
            Err(OpenError::Quota(max)) => {
                return Err(InterpreterError::Quota(format!(
                    "this server already runs {max} code interpreter sessions; stop one first"
                )));
            }
            Err(OpenError::Sandbox(reason)) => return Err(InterpreterError::Internal(reason)),
        }
        let now = self.now();
        let row = SessionRow {
            account_id: key.account_id.clone(),
            interpreter_id: key.interpreter_id.clone(),
            session_id: key.session_id.clone(),
            name: text(&input, "name"),
            timeout_seconds: timeout,
            status: READY.into(),
            node: self.inner.node.clone(),
            created_at: now,
            updated_at: now,
        };
        let stored = async {
            let mut tx = self.inner.store.begin().await?;
            db::insert_session(&mut *tx, &row).await?;
            tx.commit().await.map_err(berth_store::StoreError::from)
        };
        if let Err(e) = stored.await {
            self.inner.sessions.close(&key).await;
            return Err(e.into());
        }
        Ok(json!({
            "codeInterpreterIdentifier": identifier,
            "sessionId": key.session_id,
            "createdAt": iso(now),
        }))
    }

    async fn session_row(&self, caller: &Caller, input: &Value) -> Result<SessionRow> {
        let identifier = text(input, "codeInterpreterIdentifier").unwrap_or_default();
        let session_id = text(input, "sessionId").unwrap_or_default();
        let (id, _) = self.usable(caller, &identifier).await?;
        db::session(self.inner.store.reader(), caller.account.as_str(), &id, &session_id)
            .await?
            .ok_or(InterpreterError::SessionNotFound(session_id))
    }

    /// A READY row whose timeout has passed ended with its sandbox (even if its node is gone).
    fn status(&self, row: &SessionRow) -> &'static str {
        let expired = row.created_at + row.timeout_seconds * 1000 <= self.now();
        if row.status == READY && !expired {
            READY
        } else {
            TERMINATED
        }
    }

    fn session_view(&self, identifier: &str, row: &SessionRow) -> Value {
        let mut out = json!({
            "codeInterpreterIdentifier": identifier,
            "sessionId": row.session_id,
            "createdAt": iso(row.created_at),
            "lastUpdatedAt": iso(row.updated_at),
            "sessionTimeoutSeconds": row.timeout_seconds,
            "status": self.status(row),
        });
        if let Some(name) = &row.name {
            out["name"] = json!(name);
        }
        out
    }

    pub async fn get_code_interpreter_session(&self, caller: &Caller, input: Value) -> Result<Value> {
        let row = self.session_row(caller, &input).await?;
        let mut out = self.session_view(&text(&input, "codeInterpreterIdentifier").unwrap_or_default(), &row);
        if let Some(object) = out.as_object_mut() {
            object.remove("lastUpdatedAt");
        }
        Ok(out)
    }

    async fn end_session(&self, key: &SessionKey, now: i64) -> Result<()> {
        self.inner.sessions.close(key).await;
        let mut tx = self.inner.store.begin().await?;
        db::terminate_session(&mut *tx, &key.account_id, &key.interpreter_id, &key.session_id, now).await?;
        tx.commit().await.map_err(berth_store::StoreError::from)?;
        Ok(())
    }

    pub async fn stop_code_interpreter_session(&self, caller: &Caller, input: Value) -> Result<Value> {
        let row = self.session_row(caller, &input).await?;
        let now = self.now();
        let key = SessionKey {
            account_id: row.account_id.clone(),
            interpreter_id: row.interpreter_id.clone(),
            session_id: row.session_id.clone(),
        };
        self.end_session(&key, now).await?;
        Ok(json!({
            "codeInterpreterIdentifier": text(&input, "codeInterpreterIdentifier").unwrap_or_default(),
            "sessionId": row.session_id,
            "lastUpdatedAt": iso(now),
        }))
    }

    pub async fn list_code_interpreter_sessions(&self, caller: &Caller, input: Value) -> Result<Value> {
        let identifier = text(&input, "codeInterpreterIdentifier").unwrap_or_default();
        let (id, _) = self.usable(caller, &identifier).await?;
        let limit = page_size(input.get("maxResults").and_then(Value::as_i64));
        let wanted = text(&input, "status");
        let mut before = match text(&input, "nextToken") {
            Some(token) => {
                Some(PageToken::decode("ListCodeInterpreterSessions", &token).map_err(|_| InterpreterError::BadToken)?)
            }
            None => None,
        };
        // The status filter applies to the derived status, so rows are read until a page is full.
        let mut items = Vec::new();
        let mut next = None;
        loop {
            let rows = db::list_sessions(
                self.inner.store.reader(),
                caller.account.as_str(),
                &id,
                before.clone(),
                limit,
            )
            .await?;
            let exhausted = (rows.len() as i64) < limit;
            for row in &rows {
                if items.len() as i64 == limit {
                    next = before.clone();
                    break;
                }
                before = Some((row.created_at, row.session_id.clone()));
                if wanted.as_deref().is_none_or(|w| w == self.status(row)) {
                    items.push(self.session_view(&identifier, row));
                }
            }
            if next.is_some() || exhausted {
                break;
            }
            if items.len() as i64 == limit {
                next = before.clone();
                break;
            }
        }
        let mut out = json!({"items": items});
        if let Some(position) = next {
            out["nextToken"] = json!(PageToken::encode("ListCodeInterpreterSessions", position));
        }
        Ok(out)
    }

    /// Ends sessions past their timeout (and those whose sandbox died); ends the sessions a
    /// previous run of this node left behind when it starts. Runs until `stop` resolves.
    pub async fn run_reaper(self, stop: impl std::future::Future<Output = ()>) {
        let ended = async {
            let mut tx = self.inner.store.begin().await?;
            let n = db::terminate_node_sessions(&mut *tx, &self.inner.node, self.now()).await?;
            tx.commit().await.map_err(berth_store::StoreError::from)?;
            Ok::<_, berth_store::StoreError>(n)
        };
        match ended.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                sessions = n,
                "code interpreter sessions of a previous run marked TERMINATED"
            ),
            Err(error) => tracing::warn!(%error, "could not end the previous run's code interpreter sessions"),
        }
        let pool = self.inner.sessions.run_pool(std::future::pending::<()>());
        tokio::pin!(stop);
        tokio::pin!(pool);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = &mut pool => {}
                _ = tick.tick() => {}
            }
            let now = self.now();
            for key in self.inner.sessions.reap().await {
                if let Err(error) = self.end_session(&key, now).await {
                    tracing::warn!(%error, session = %key.session_id, "could not record an expired session");
                }
            }
        }
        self.inner.sessions.close_all().await;
    }

    // ---- tools ---------------------------------------------------------------------------

    /// Starts a tool call; bad arguments and unknown sessions fail before any event.
    pub async fn invoke_code_interpreter(
        &self,
        caller: &Caller,
        input: Value,
    ) -> Result<(String, mpsc::Receiver<StreamEvent>)> {
        let identifier = text(&input, "codeInterpreterIdentifier").unwrap_or_default();
        let Some(session_id) = text(&input, "sessionId") else {
            return Err(InterpreterError::invalid(
                "sessionId",
                "the x-amzn-code-interpreter-session-id header is required; start a session first",
            ));
        };
        let (id, _) = self.usable(caller, &identifier).await?;
        let name = text(&input, "name").unwrap_or_default();
        let arguments = input.get("arguments").cloned().unwrap_or_else(|| json!({}));
        let invocation = Invocation::parse(&name, &arguments, self.inner.sessions.environment())?;
        let key = SessionKey {
            account_id: caller.account.to_string(),
            interpreter_id: id,
            session_id: session_id.clone(),
        };
        let Some(session) = self.inner.sessions.get(&key) else {
            return Err(InterpreterError::NotRunning(session_id));
        };
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move { session.run(invocation, sender).await });
        Ok((session_id, receiver))
    }
}
