//! One `async fn` per Runtime operation, plus the build and delete jobs and artifact uploads.

use std::path::PathBuf;
use std::sync::Arc;

use berth_core::{Arn, Caller, PageToken, Timestamp, ids};
use berth_sandbox::Tier;
use berth_store::Store;
use berth_store::jobs::{self, JobHandler, Notify, Worker};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::authorizer::JwtVerifier;
use crate::build::{self, BuildContext, BuiltVersion};
use crate::command::{self, CommandEvent, CommandRequest};
use crate::error::{Result, RuntimeError};
use crate::model::*;
use crate::sessions::{AgentRequest, AgentResponse, RequestBody, Session, SessionManager, SessionTarget};
use crate::store::{self as db, ArtifactRow, EndpointRow, RuntimeRow, VersionRow};

const JOB_BUILD: &str = "runtime.build";

/// A connection to an agent's WebSocket endpoint, before the handshake.
pub struct AgentSocket {
    pub stream: tokio::net::UnixStream,
    pub port: u16,
    pub headers: Vec<(String, String)>,
    pub activity: crate::sessions::SessionActivity,
}
/// The tag that picks a runtime's isolation tier.
pub const ISOLATION_TAG: &str = "berth:isolation";
const JOB_DELETE: &str = "runtime.delete";
const DEFAULT_PAGE: i64 = 20;
/// Request members that are not part of a version's definition.
const NOT_DEFINITION: &[&str] = &["agentRuntimeName", "agentRuntimeId", "clientToken", "tags"];

#[derive(Clone)]
pub struct RuntimeService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    region: String,
    data_dir: PathBuf,
    sessions: SessionManager,
    build_timeout: std::time::Duration,
    pip_index_url: Option<String>,
    wake_worker: parking_lot::Mutex<Option<Arc<Notify>>>,
    jwt: JwtVerifier,
}

fn iso(millis: i64) -> String {
    Timestamp(millis).to_iso8601()
}

fn page_size(max_results: Option<i64>) -> i64 {
    max_results.unwrap_or(DEFAULT_PAGE).clamp(1, 100)
}

fn text(input: &Value, name: &str) -> Option<String> {
    input.get(name).and_then(Value::as_str).map(str::to_string)
}

fn parse_version(value: &str) -> Result<i64> {
    value
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| RuntimeError::invalid("agentRuntimeVersion", format!("`{value}` is not a version number")))
}

impl RuntimeService {
    pub fn new(
        store: Store,
        region: impl Into<String>,
        data_dir: PathBuf,
        sessions: SessionManager,
        pip_index_url: Option<String>,
    ) -> Self {
        RuntimeService {
            inner: Arc::new(Inner {
                store,
                region: region.into(),
                data_dir,
                sessions,
                build_timeout: std::time::Duration::from_secs(15 * 60),
                pip_index_url,
                wake_worker: parking_lot::Mutex::new(None),
                jwt: JwtVerifier::default(),
            }),
        }
    }

    pub fn sessions(&self) -> &SessionManager {
        &self.inner.sessions
    }

    /// Registers Runtime's background jobs.
    pub fn attach_worker(&self, worker: &mut Worker) {
        let build = self.clone();
        let handler: JobHandler = Arc::new(move |payload| {
            let service = build.clone();
            Box::pin(async move { service.run_build(&payload).await.map_err(|e| e.to_string()) })
        });
        worker.register(JOB_BUILD, handler);
        let delete = self.clone();
        let handler: JobHandler = Arc::new(move |payload| {
            let service = delete.clone();
            Box::pin(async move { service.finish_delete(&payload).await.map_err(|e| e.to_string()) })
        });
        worker.register(JOB_DELETE, handler);
        *self.inner.wake_worker.lock() = Some(worker.waker());
    }

    fn wake(&self) {
        if let Some(notify) = self.inner.wake_worker.lock().as_ref() {
            notify.notify_one();
        }
    }

    fn runtimes_dir(&self) -> PathBuf {
        self.inner.data_dir.join("runtimes")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.inner.data_dir.join("artifacts")
    }

    fn arn(&self, caller: &Caller, resource: String) -> String {
        Arn::new(&self.inner.region, &caller.account, resource).to_string()
    }

    /// A runtime the caller owns, by id or (data plane) ARN.
    async fn runtime_of(&self, caller: &Caller, id_or_arn: &str, include_deleting: bool) -> Result<RuntimeRow> {
        let runtime_id = match id_or_arn.parse::<Arn>() {
            Ok(arn) if arn.resource_type() == "runtime" && arn.account == caller.account.as_str() => {
                arn.resource_id().unwrap_or_default().to_string()
            }
            Ok(_) => return Err(RuntimeError::RuntimeNotFound(id_or_arn.to_string())),
            Err(_) => id_or_arn.to_string(),
        };
        match db::runtime(self.inner.store.reader(), &runtime_id).await? {
            Some(row) if row.account_id == caller.account.as_str() && (include_deleting || row.status != DELETING) => {
                Ok(row)
            }
            _ => Err(RuntimeError::RuntimeNotFound(id_or_arn.to_string())),
        }
    }

    fn definition_of(input: &Value) -> Map<String, Value> {
        let mut definition = input.as_object().cloned().unwrap_or_default();
        for name in NOT_DEFINITION {
            definition.remove(*name);
        }
        definition
    }

    fn check_definition(definition: &Map<String, Value>) -> Result<()> {
        let typed: Definition = serde_json::from_value(Value::Object(definition.clone()))
            .map_err(|e| RuntimeError::invalid("agentRuntimeArtifact", e.to_string()))?;
        let (idle, max) = typed.lifecycle();
        if idle > max {
            return Err(RuntimeError::invalid(
                "lifecycleConfiguration.idleRuntimeSessionTimeout",
                "must not exceed maxLifetime",
            ));
        }
        if let Some(authorizer) = typed.jwt_authorizer() {
            authorizer
                .check()
                .map_err(|(field, message)| RuntimeError::invalid(field, message))?;
        }
        if let Some(container) = &typed.agent_runtime_artifact.container_configuration {
            crate::image::ImageSource::parse(&container.container_uri)
                .map_err(|e| RuntimeError::invalid("agentRuntimeArtifact.containerConfiguration.containerUri", e))?;
        }
        if let Some(code) = &typed.agent_runtime_artifact.code_configuration
            && code.code.s3.is_none()
        {
            return Err(RuntimeError::invalid(
                "agentRuntimeArtifact.codeConfiguration.code",
                "an s3 location is required",
            ));
        }
        Ok(())
    }

    // ---- control plane: runtimes ---------------------------------------------------------

    pub async fn create_agent_runtime(&self, caller: &Caller, input: Value) -> Result<Value> {
        let name = text(&input, "agentRuntimeName").unwrap_or_default();
        let definition = Self::definition_of(&input);
        Self::check_definition(&definition)?;
        let now = self.inner.store.now();
        let runtime_id = ids::resource_id(&name);
        let runtime = RuntimeRow {
            arn: self.arn(caller, format!("runtime/{runtime_id}")),
            runtime_id: runtime_id.clone(),
            account_id: caller.account.to_string(),
            name: name.clone(),
            latest_version: 1,
            status: CREATING.into(),
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        let version = VersionRow {
            runtime_id: runtime_id.clone(),
            version: 1,
            definition,
            status: CREATING.into(),
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        let endpoint = EndpointRow {
            runtime_id: runtime_id.clone(),
            name: DEFAULT_ENDPOINT.into(),
            arn: format!("{}/runtime-endpoint/{DEFAULT_ENDPOINT}", runtime.arn),
            live_version: None,
            target_version: 1,
            status: CREATING.into(),
            description: None,
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        let tags = input.get("tags").cloned();
        let arn = runtime.arn.clone();
        let result = self
            .inner
            .store
            .write(move |tx| {
                let (runtime, version, endpoint, tags) =
                    (runtime.clone(), version.clone(), endpoint.clone(), tags.clone());
                Box::pin(async move {
                    db::insert_runtime(tx, &runtime).await?;
                    db::insert_version(tx, &version).await?;
                    db::upsert_endpoint(tx, &endpoint, true).await?;
                    if let Some(Value::Object(tags)) = tags {
                        let tags: std::collections::BTreeMap<String, String> = tags
                            .into_iter()
                            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                            .collect();
                        berth_store::tags::insert_tags(tx, &runtime.arn, &tags).await?;
                    }
                    let job = json!({"runtimeId": runtime.runtime_id, "version": 1});
                    jobs::enqueue(tx, JOB_BUILD, &job, runtime.created_at).await?;
                    Ok::<_, berth_store::StoreError>(())
                })
            })
            .await;
        match result {
            Ok(()) => {}
            Err(e) if e.is_unique_violation() => {
                return Err(RuntimeError::Conflict(format!(
                    "an agent runtime named `{name}` already exists"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.wake();
        Ok(json!({
            "agentRuntimeArn": arn,
            "agentRuntimeId": runtime_id,
            "agentRuntimeVersion": "1",
            "createdAt": iso(now),
            "status": CREATING,
            "workloadIdentityDetails": {"workloadIdentityArn": self.arn(caller, format!("workload-identity-directory/default/workload-identity/{name}"))},
        }))
    }

    pub async fn update_agent_runtime(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let mut runtime = self.runtime_of(caller, &id, false).await?;
        if runtime.status == CREATING || runtime.status == UPDATING {
            return Err(RuntimeError::Conflict(format!(
                "agent runtime `{id}` is {}; update it when it is READY",
                runtime.status
            )));
        }
        let definition = Self::definition_of(&input);
        Self::check_definition(&definition)?;
        let now = self.inner.store.now();
        runtime.latest_version += 1;
        runtime.status = UPDATING.into();
        runtime.failure_reason = None;
        runtime.updated_at = now;
        let version = VersionRow {
            runtime_id: runtime.runtime_id.clone(),
            version: runtime.latest_version,
            definition,
            status: CREATING.into(),
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        let stored = runtime.clone();
        self.inner
            .store
            .write(move |tx| {
                let (runtime, version) = (stored.clone(), version.clone());
                Box::pin(async move {
                    db::update_runtime(tx, &runtime).await?;
                    db::insert_version(tx, &version).await?;
                    let job = json!({"runtimeId": runtime.runtime_id, "version": version.version});
                    jobs::enqueue(tx, JOB_BUILD, &job, runtime.updated_at).await?;
                    Ok::<_, berth_store::StoreError>(())
                })
            })
            .await?;
        self.wake();
        Ok(json!({
            "agentRuntimeArn": runtime.arn,
            "agentRuntimeId": runtime.runtime_id,
            "agentRuntimeVersion": runtime.latest_version.to_string(),
            "createdAt": iso(runtime.created_at),
            "lastUpdatedAt": iso(now),
            "status": UPDATING,
            "workloadIdentityDetails": {"workloadIdentityArn": self.arn(caller, format!("workload-identity-directory/default/workload-identity/{}", runtime.name))},
        }))
    }

    pub async fn get_agent_runtime(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let runtime = self.runtime_of(caller, &id, true).await?;
        let number = match text(&input, "agentRuntimeVersion") {
            Some(v) => parse_version(&v)?,
            None => runtime.latest_version,
        };
        let version = db::version(self.inner.store.reader(), &runtime.runtime_id, number)
            .await?
            .ok_or_else(|| RuntimeError::VersionNotFound(id.clone(), number.to_string()))?;
        let status = if number == runtime.latest_version {
            runtime.status.clone()
        } else {
            version.status.clone()
        };
        let mut out = version.definition.clone();
        let typed: Definition = serde_json::from_value(Value::Object(out.clone())).unwrap_or_default();
        let (idle, max) = typed.lifecycle();
        out.insert(
            "lifecycleConfiguration".into(),
            json!({"idleRuntimeSessionTimeout": idle, "maxLifetime": max}),
        );
        for (key, value) in [
            ("agentRuntimeArn", json!(runtime.arn)),
            ("agentRuntimeName", json!(runtime.name)),
            ("agentRuntimeId", json!(runtime.runtime_id)),
            ("agentRuntimeVersion", json!(number.to_string())),
            ("createdAt", json!(iso(runtime.created_at))),
            ("lastUpdatedAt", json!(iso(version.updated_at.max(runtime.updated_at)))),
            ("status", json!(status)),
            (
                "workloadIdentityDetails",
                json!({"workloadIdentityArn": self.arn(caller, format!("workload-identity-directory/default/workload-identity/{}", runtime.name))}),
            ),
        ] {
            out.insert(key.into(), value);
        }
        let reason = if number == runtime.latest_version {
            runtime.failure_reason.or(version.failure_reason)
        } else {
            version.failure_reason
        };
        if let Some(reason) = reason {
            out.insert("failureReason".into(), json!(reason));
        }
        Ok(Value::Object(out))
    }

    fn summary(runtime: &RuntimeRow, version: &VersionRow, status: &str) -> Value {
        json!({
            "agentRuntimeArn": runtime.arn,
            "agentRuntimeId": runtime.runtime_id,
            "agentRuntimeVersion": version.version.to_string(),
            "agentRuntimeName": runtime.name,
            "description": version.definition.get("description").and_then(Value::as_str).unwrap_or(""),
            "lastUpdatedAt": iso(version.updated_at),
            "status": status,
        })
    }

    pub async fn list_agent_runtimes(&self, caller: &Caller, input: Value) -> Result<Value> {
        let limit = page_size(input.get("maxResults").and_then(Value::as_i64));
        let after = match text(&input, "nextToken") {
            Some(token) => Some(PageToken::decode("ListAgentRuntimes", &token).map_err(|_| RuntimeError::BadToken)?),
            None => None,
        };
        let reader = self.inner.store.reader();
        let rows = db::list_runtimes(reader, caller.account.as_str(), after, limit + 1).await?;
        let mut items = Vec::new();
        for runtime in rows.iter().take(limit as usize) {
            if let Some(version) = db::version(reader, &runtime.runtime_id, runtime.latest_version).await? {
                items.push(Self::summary(runtime, &version, &runtime.status));
            }
        }
        let mut out = json!({"agentRuntimes": items});
        if rows.len() as i64 > limit
            && let Some(last) = rows.get(limit as usize - 1)
        {
            out["nextToken"] = json!(PageToken::encode(
                "ListAgentRuntimes",
                (last.created_at, last.runtime_id.clone())
            ));
        }
        Ok(out)
    }

    pub async fn list_agent_runtime_versions(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let runtime = self.runtime_of(caller, &id, false).await?;
        let limit = page_size(input.get("maxResults").and_then(Value::as_i64));
        let before = match text(&input, "nextToken") {
            Some(token) => {
                Some(PageToken::decode("ListAgentRuntimeVersions", &token).map_err(|_| RuntimeError::BadToken)?)
            }
            None => None,
        };
        let rows = db::list_versions(self.inner.store.reader(), &runtime.runtime_id, before, limit + 1).await?;
        let items: Vec<Value> = rows
            .iter()
            .take(limit as usize)
            .map(|v| Self::summary(&runtime, v, &v.status))
            .collect();
        let mut out = json!({"agentRuntimes": items});
        if rows.len() as i64 > limit
            && let Some(last) = rows.get(limit as usize - 1)
        {
            out["nextToken"] = json!(PageToken::encode("ListAgentRuntimeVersions", last.version));
        }
        Ok(out)
    }

    pub async fn delete_agent_runtime(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let mut runtime = self.runtime_of(caller, &id, true).await?;
        if let Some(version) = text(&input, "agentRuntimeVersion") {
            return self.delete_version(runtime, parse_version(&version)?).await;
        }
        if runtime.status != DELETING {
            runtime.status = DELETING.into();
            runtime.updated_at = self.inner.store.now();
            let stored = runtime.clone();
            self.inner
                .store
                .write(move |tx| {
                    let runtime = stored.clone();
                    Box::pin(async move {
                        db::update_runtime(tx, &runtime).await?;
                        jobs::enqueue(
                            tx,
                            JOB_DELETE,
                            &json!({"runtimeId": runtime.runtime_id}),
                            runtime.updated_at,
                        )
                        .await?;
                        Ok::<_, berth_store::StoreError>(())
                    })
                })
                .await?;
            self.wake();
        }
        Ok(json!({"status": DELETING, "agentRuntimeId": runtime.runtime_id}))
    }

    async fn delete_version(&self, runtime: RuntimeRow, version: i64) -> Result<Value> {
        let reader = self.inner.store.reader();
        if db::version(reader, &runtime.runtime_id, version).await?.is_none() {
            return Err(RuntimeError::VersionNotFound(runtime.runtime_id, version.to_string()));
        }
        let endpoints = db::endpoints(reader, &runtime.runtime_id).await?;
        if version == runtime.latest_version
            || endpoints
                .iter()
                .any(|e| e.live_version == Some(version) || e.target_version == version)
        {
            return Err(RuntimeError::Conflict(format!(
                "version {version} is the latest or is served by an endpoint; move the endpoints first"
            )));
        }
        let runtime_id = runtime.runtime_id.clone();
        self.inner
            .store
            .write(move |tx| {
                let runtime_id = runtime_id.clone();
                Box::pin(async move { db::delete_version(tx, &runtime_id, version).await })
            })
            .await?;
        let _ =
            tokio::fs::remove_dir_all(BuiltVersion::new(&self.runtimes_dir(), &runtime.runtime_id, version).dir).await;
        Ok(
            json!({"status": DELETING, "agentRuntimeId": runtime.runtime_id, "agentRuntimeVersion": version.to_string()}),
        )
    }

    async fn finish_delete(&self, payload: &Value) -> Result<()> {
        let runtime_id = text(payload, "runtimeId").unwrap_or_default();
        self.inner.sessions.stop_runtime(&runtime_id).await;
        let arn = db::runtime(self.inner.store.reader(), &runtime_id)
            .await?
            .map(|r| r.arn);
        self.inner
            .store
            .write(move |tx| {
                let (runtime_id, arn) = (runtime_id.clone(), arn.clone());
                Box::pin(async move {
                    db::delete_runtime(tx, &runtime_id).await?;
                    if let Some(arn) = arn {
                        berth_store::tags::forget_resource(tx, &arn).await?;
                    }
                    Ok::<_, berth_store::StoreError>(())
                })
            })
            .await?;
        let _ =
            tokio::fs::remove_dir_all(self.runtimes_dir().join(text(payload, "runtimeId").unwrap_or_default())).await;
        Ok(())
    }

    // ---- builds --------------------------------------------------------------------------

    async fn run_build(&self, payload: &Value) -> Result<()> {
        let runtime_id = text(payload, "runtimeId").unwrap_or_default();
        let number = payload.get("version").and_then(Value::as_i64).unwrap_or(1);
        let reader = self.inner.store.reader();
        let (Some(runtime), Some(version)) = (
            db::runtime(reader, &runtime_id).await?,
            db::version(reader, &runtime_id, number).await?,
        ) else {
            return Ok(()); // deleted meanwhile
        };
        if version.status != CREATING {
            return Ok(()); // a retried job whose work is done
        }
        let definition: Definition = serde_json::from_value(Value::Object(version.definition.clone()))
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let bundle = match definition
            .agent_runtime_artifact
            .code_configuration
            .as_ref()
            .and_then(|c| c.code.s3.as_ref())
        {
            Some(s3) => db::artifact(reader, &runtime.account_id, &s3.bucket, &s3.prefix)
                .await?
                .map(|a| self.blobs_dir().join(&a.sha256)),
            None => None,
        };
        let target = BuiltVersion::new(&self.runtimes_dir(), &runtime_id, number);
        let sessions = &self.inner.sessions;
        let tier = match self.tier_of(&runtime.arn).await {
            Ok(tier) => tier,
            Err(e) => {
                tracing::warn!(runtime = %runtime_id, error = %e, "unknown isolation tier; building on the default");
                None
            }
        };
        let backend = match sessions.backend(tier) {
            Ok(backend) => backend.clone(),
            Err(_) => sessions.backend(None)?.clone(),
        };
        let context = BuildContext {
            backend,
            egress: sessions.settings().egress_for(definition.network_mode()),
            timeout: self.inner.build_timeout,
            pip_index_url: self.inner.pip_index_url.clone(),
        };
        let started = std::time::Instant::now();
        let outcome = build::build(&context, &definition, bundle, &target, &runtime_id).await;
        tracing::info!(runtime = %runtime_id, version = number, elapsed_ms = started.elapsed().as_millis() as u64,
            ok = outcome.is_ok(), "runtime build finished");
        let now = self.inner.store.now();
        self.inner
            .store
            .write(move |tx| {
                let (runtime_id, outcome) = (runtime_id.clone(), outcome.clone());
                Box::pin(async move {
                    let Some(mut runtime) = db::runtime(&mut *tx, &runtime_id).await? else {
                        return Ok(());
                    };
                    let (status, reason) = match &outcome {
                        Ok(()) => (READY, None),
                        Err(reason) => (CREATE_FAILED, Some(reason.as_str())),
                    };
                    db::set_version_status(tx, &runtime_id, number, status, reason, now).await?;
                    if runtime.latest_version == number && runtime.status != DELETING {
                        runtime.status = match (&outcome, number) {
                            (Ok(()), _) => READY,
                            (Err(_), 1) => CREATE_FAILED,
                            (Err(_), _) => UPDATE_FAILED,
                        }
                        .into();
                        runtime.failure_reason = reason.map(str::to_string);
                        runtime.updated_at = now;
                        db::update_runtime(tx, &runtime).await?;
                    }
                    // DEFAULT follows the latest version that built.
                    if outcome.is_ok()
                        && let Some(mut default) = db::endpoint(&mut *tx, &runtime_id, DEFAULT_ENDPOINT).await?
                    {
                        default.live_version = Some(number.max(default.live_version.unwrap_or(0)));
                        default.target_version = default.live_version.unwrap_or(number);
                        default.status = READY.into();
                        default.updated_at = now;
                        db::upsert_endpoint(tx, &default, false).await?;
                    } else if number == 1
                        && let Some(mut default) = db::endpoint(&mut *tx, &runtime_id, DEFAULT_ENDPOINT).await?
                    {
                        default.status = CREATE_FAILED.into();
                        default.failure_reason = reason.map(str::to_string);
                        default.updated_at = now;
                        db::upsert_endpoint(tx, &default, false).await?;
                    }
                    // Named endpoints waiting for this version go live with it.
                    for mut endpoint in db::endpoints(&mut *tx, &runtime_id).await? {
                        if endpoint.name != DEFAULT_ENDPOINT
                            && endpoint.target_version == number
                            && endpoint.status != READY
                        {
                            match &outcome {
                                Ok(()) => {
                                    endpoint.live_version = Some(number);
                                    endpoint.status = READY.into();
                                }
                                Err(reason) => {
                                    endpoint.status = UPDATE_FAILED.into();
                                    endpoint.failure_reason = Some(reason.clone());
                                }
                            }
                            endpoint.updated_at = now;
                            db::upsert_endpoint(tx, &endpoint, false).await?;
                        }
                    }
                    Ok::<_, berth_store::StoreError>(())
                })
            })
            .await?;
        Ok(())
    }

    // ---- endpoints -------------------------------------------------------------------------

    fn endpoint_json(runtime: &RuntimeRow, e: &EndpointRow) -> Value {
        let mut out = json!({
            "name": e.name,
            "id": runtime.runtime_id,
            "agentRuntimeEndpointArn": e.arn,
            "agentRuntimeArn": runtime.arn,
            "status": e.status,
            "targetVersion": e.target_version.to_string(),
            "createdAt": iso(e.created_at),
            "lastUpdatedAt": iso(e.updated_at),
        });
        if let Some(live) = e.live_version {
            out["liveVersion"] = json!(live.to_string());
        }
        if let Some(description) = &e.description {
            out["description"] = json!(description);
        }
        if let Some(reason) = &e.failure_reason {
            out["failureReason"] = json!(reason);
        }
        out
    }

    /// Checks that `version` exists and says whether it is built.
    async fn endpoint_target(&self, runtime: &RuntimeRow, version: Option<String>) -> Result<(i64, bool)> {
        let number = match version {
            Some(v) => parse_version(&v)?,
            None => runtime.latest_version,
        };
        let row = db::version(self.inner.store.reader(), &runtime.runtime_id, number)
            .await?
            .ok_or_else(|| RuntimeError::VersionNotFound(runtime.runtime_id.clone(), number.to_string()))?;
        if row.status == CREATE_FAILED {
            return Err(RuntimeError::invalid(
                "agentRuntimeVersion",
                format!("version {number} failed to build"),
            ));
        }
        Ok((number, row.status == READY))
    }

    pub async fn create_agent_runtime_endpoint(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let runtime = self.runtime_of(caller, &id, false).await?;
        let name = text(&input, "name").unwrap_or_default();
        if name == DEFAULT_ENDPOINT
            || db::endpoint(self.inner.store.reader(), &runtime.runtime_id, &name)
                .await?
                .is_some()
        {
            return Err(RuntimeError::Conflict(format!("endpoint `{name}` already exists")));
        }
        let (version, built) = self
            .endpoint_target(&runtime, text(&input, "agentRuntimeVersion"))
            .await?;
        let now = self.inner.store.now();
        let endpoint = EndpointRow {
            runtime_id: runtime.runtime_id.clone(),
            name: name.clone(),
            arn: format!("{}/runtime-endpoint/{name}", runtime.arn),
            live_version: built.then_some(version),
            target_version: version,
            status: if built { READY } else { CREATING }.into(),
            description: text(&input, "description"),
            failure_reason: None,
            created_at: now,
            updated_at: now,
        };
        let stored = endpoint.clone();
        self.inner
            .store
            .write(move |tx| {
                let endpoint = stored.clone();
                Box::pin(async move { db::upsert_endpoint(tx, &endpoint, true).await })
            })
            .await?;
        Ok(json!({
            "targetVersion": version.to_string(),
            "agentRuntimeEndpointArn": endpoint.arn,
            "agentRuntimeArn": runtime.arn,
            "agentRuntimeId": runtime.runtime_id,
            "endpointName": name,
            "status": CREATING,
            "createdAt": iso(now),
        }))
    }

    pub async fn get_agent_runtime_endpoint(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let runtime = self.runtime_of(caller, &id, true).await?;
        let name = text(&input, "endpointName").unwrap_or_default();
        let endpoint = db::endpoint(self.inner.store.reader(), &runtime.runtime_id, &name)
            .await?
            .ok_or_else(|| RuntimeError::EndpointNotFound(id.clone(), name.clone()))?;
        Ok(Self::endpoint_json(&runtime, &endpoint))
    }

    pub async fn update_agent_runtime_endpoint(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let runtime = self.runtime_of(caller, &id, false).await?;
        let name = text(&input, "endpointName").unwrap_or_default();
        let mut endpoint = db::endpoint(self.inner.store.reader(), &runtime.runtime_id, &name)
            .await?
            .ok_or_else(|| RuntimeError::EndpointNotFound(id.clone(), name.clone()))?;
        if let Some(version) = text(&input, "agentRuntimeVersion") {
            if name == DEFAULT_ENDPOINT {
                return Err(RuntimeError::invalid(
                    "agentRuntimeVersion",
                    "the DEFAULT endpoint follows the latest version",
                ));
            }
            let (version, built) = self.endpoint_target(&runtime, Some(version)).await?;
            endpoint.target_version = version;
            if built {
                endpoint.live_version = Some(version);
                endpoint.status = READY.into();
            } else {
                endpoint.status = UPDATING.into();
            }
        }
        if let Some(description) = text(&input, "description") {
            endpoint.description = Some(description);
        }
        endpoint.updated_at = self.inner.store.now();
        let stored = endpoint.clone();
        self.inner
            .store
            .write(move |tx| {
                let endpoint = stored.clone();
                Box::pin(async move { db::upsert_endpoint(tx, &endpoint, false).await })
            })
            .await?;
        let mut out = Self::endpoint_json(&runtime, &endpoint);
        out["status"] = json!(UPDATING);
        if let Some(map) = out.as_object_mut() {
            for key in ["name", "id", "description", "failureReason"] {
                map.remove(key);
            }
        }
        Ok(out)
    }

    pub async fn delete_agent_runtime_endpoint(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let runtime = self.runtime_of(caller, &id, true).await?;
        // DEFAULT may be deleted too (the SDK's teardown_endpoint_and_runtime does so first);
        // the runtime then answers only qualified invocations.
        let name = text(&input, "endpointName").unwrap_or_default();
        if db::endpoint(self.inner.store.reader(), &runtime.runtime_id, &name)
            .await?
            .is_none()
        {
            return Err(RuntimeError::EndpointNotFound(id, name));
        }
        let runtime_id = runtime.runtime_id.clone();
        let endpoint_name = name.clone();
        self.inner
            .store
            .write(move |tx| {
                let (runtime_id, name) = (runtime_id.clone(), endpoint_name.clone());
                Box::pin(async move { db::delete_endpoint(tx, &runtime_id, &name).await })
            })
            .await?;
        Ok(json!({"status": DELETING, "agentRuntimeId": runtime.runtime_id, "endpointName": name}))
    }

    pub async fn list_agent_runtime_endpoints(&self, caller: &Caller, input: Value) -> Result<Value> {
        let id = text(&input, "agentRuntimeId").unwrap_or_default();
        let runtime = self.runtime_of(caller, &id, false).await?;
        let limit = page_size(input.get("maxResults").and_then(Value::as_i64)) as usize;
        let skip = match text(&input, "nextToken") {
            Some(token) => {
                PageToken::decode("ListAgentRuntimeEndpoints", &token).map_err(|_| RuntimeError::BadToken)?
            }
            None => 0usize,
        };
        let all = db::endpoints(self.inner.store.reader(), &runtime.runtime_id).await?;
        let items: Vec<Value> = all
            .iter()
            .skip(skip)
            .take(limit)
            .map(|e| Self::endpoint_json(&runtime, e))
            .collect();
        let mut out = json!({"runtimeEndpoints": items});
        if all.len() > skip + limit {
            out["nextToken"] = json!(PageToken::encode("ListAgentRuntimeEndpoints", skip + limit));
        }
        Ok(out)
    }

    /// Whether an ARN names a runtime or runtime endpoint the caller owns (tags, policies).
    pub async fn resource_exists(&self, caller: &Caller, arn: &Arn) -> Result<bool> {
        let Some(rest) = arn.resource.strip_prefix("runtime/") else {
            return Ok(false);
        };
        let (runtime_id, endpoint) = match rest.split_once("/runtime-endpoint/") {
            Some((id, name)) => (id, Some(name)),
            None => (rest, None),
        };
        let Ok(runtime) = self.runtime_of(caller, runtime_id, false).await else {
            return Ok(false);
        };
        match endpoint {
            None => Ok(true),
            Some(name) => Ok(db::endpoint(self.inner.store.reader(), &runtime.runtime_id, name)
                .await?
                .is_some()),
        }
    }

    // ---- artifacts -------------------------------------------------------------------------

    /// Stores an uploaded code bundle under `bucket`/`key` for the caller's account.
    pub async fn put_artifact(&self, caller: &Caller, bucket: &str, key: &str, data: Bytes) -> Result<Value> {
        if bucket.is_empty() || key.is_empty() || key.len() > 1024 || bucket.len() > 63 {
            return Err(RuntimeError::invalid(
                "key",
                "an artifact needs a bucket (≤63 chars) and a key (1..1024 chars)",
            ));
        }
        let sha256 = hex::encode(sha2::Sha256::digest(&data));
        let dir = self.blobs_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let path = dir.join(&sha256);
        if !path.exists() {
            // Write then rename, so a crash never leaves a partial blob under its final name.
            let partial = dir.join(format!("{sha256}.partial-{}", ids::random_alphanumeric(8)));
            tokio::fs::write(&partial, &data)
                .await
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
            tokio::fs::rename(&partial, &path)
                .await
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        }
        let row = ArtifactRow {
            sha256: sha256.clone(),
            size: data.len() as i64,
        };
        let (account, bucket_owned, key_owned) = (caller.account.to_string(), bucket.to_string(), key.to_string());
        let now = self.inner.store.now();
        self.inner
            .store
            .write(move |tx| {
                let (account, bucket, key, row) =
                    (account.clone(), bucket_owned.clone(), key_owned.clone(), row.clone());
                Box::pin(async move { db::put_artifact(tx, &account, &bucket, &key, &row, now).await })
            })
            .await?;
        Ok(json!({"bucket": bucket, "key": key, "sha256": sha256, "size": data.len()}))
    }

    // ---- data plane ------------------------------------------------------------------------

    /// The isolation tier a runtime's `berth:isolation` tag asks for (`namespace`, `gvisor`).
    async fn tier_of(&self, arn: &str) -> Result<Option<Tier>> {
        let tags = self.inner.store.tags(arn).await?;
        match tags.get(ISOLATION_TAG) {
            None => Ok(None),
            Some(name) => Tier::parse(name).map(Some).ok_or_else(|| {
                RuntimeError::invalid(
                    "tags.berth:isolation",
                    format!("`{name}` is not an isolation tier; use namespace or gvisor"),
                )
            }),
        }
    }

    /// Resolves the runtime, endpoint and version an invocation targets.
    async fn invocation_target(&self, caller: &Caller, input: &Value) -> Result<(RuntimeRow, VersionRow)> {
        let arn = text(input, "agentRuntimeArn").unwrap_or_default();
        let runtime = match text(input, "accountId") {
            Some(account) if account != caller.account.as_str() => {
                return Err(RuntimeError::RuntimeNotFound(arn));
            }
            _ => self.runtime_of(caller, &arn, false).await?,
        };
        let qualifier = text(input, "qualifier").unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let reader = self.inner.store.reader();
        let endpoint = db::endpoint(reader, &runtime.runtime_id, &qualifier)
            .await?
            .ok_or_else(|| RuntimeError::EndpointNotFound(runtime.runtime_id.clone(), qualifier.clone()))?;
        let Some(live) = endpoint.live_version else {
            return Err(RuntimeError::Conflict(format!(
                "endpoint `{qualifier}` is {} and serves no version yet",
                endpoint.status
            )));
        };
        let version = db::version(reader, &runtime.runtime_id, live)
            .await?
            .ok_or_else(|| RuntimeError::VersionNotFound(runtime.runtime_id.clone(), live.to_string()))?;
        Ok((runtime, version))
    }

    /// Checks the request's credential against the runtime's authorizer: a JWT-authorized
    /// runtime takes bearer tokens only, any other runtime SigV4 signatures only.
    async fn authorize(&self, caller: &Caller, definition: &Definition) -> Result<()> {
        match (definition.jwt_authorizer(), caller.bearer_token.as_deref()) {
            (None, None) => Ok(()),
            (Some(authorizer), Some(token)) => self
                .inner
                .jwt
                .verify(authorizer, token)
                .await
                .map(drop)
                .map_err(RuntimeError::AccessDenied),
            (Some(_), None) => Err(RuntimeError::AccessDenied(
                "Authorization method mismatch: this runtime is authorized with OAuth bearer tokens \
                 (customJWTAuthorizer); send `Authorization: Bearer <token>` instead of a SigV4 signature"
                    .into(),
            )),
            (None, Some(_)) => Err(RuntimeError::AccessDenied(
                "Authorization method mismatch: this runtime is authorized with SigV4; bearer tokens are \
                 accepted only by runtimes with a customJWTAuthorizer"
                    .into(),
            )),
        }
    }

    /// The caller a bearer-token request acts as: the account the runtime's ARN (or
    /// `accountId`) names, once that runtime's JWT authorizer accepts the token.
    pub async fn authorize_bearer(&self, input: &Value, token: &str) -> Result<Caller> {
        let arn = text(input, "agentRuntimeArn").unwrap_or_default();
        let account = match (arn.parse::<Arn>(), text(input, "accountId")) {
            (Ok(parsed), _) => parsed.account.to_string(),
            (Err(_), Some(account)) => account,
            (Err(_), None) => {
                return Err(RuntimeError::AccessDenied(
                    "a bearer-token request names its runtime by ARN (or adds ?accountId=)".into(),
                ));
            }
        };
        let account =
            berth_core::AccountId::try_from(account).map_err(|_| RuntimeError::RuntimeNotFound(arn.clone()))?;
        let caller = Caller {
            account,
            access_key_id: String::new(),
            bearer_token: Some(token.to_string()),
        };
        self.authorized_target(&caller, input).await?;
        Ok(caller)
    }

    /// The runtime version an invocation targets, once the caller is authorized for it.
    async fn authorized_target(&self, caller: &Caller, input: &Value) -> Result<(RuntimeRow, VersionRow, Definition)> {
        let (runtime, version) = self.invocation_target(caller, input).await?;
        let definition: Definition = serde_json::from_value(Value::Object(version.definition.clone()))
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        self.authorize(caller, &definition).await?;
        Ok((runtime, version, definition))
    }

    /// The session an invocation or command names, started if it is not running.
    async fn session_for(&self, caller: &Caller, input: &Value) -> Result<(Arc<Session>, Definition)> {
        let session_id = text(input, "runtimeSessionId")
            .ok_or_else(|| RuntimeError::invalid("runtimeSessionId", "a session id is required"))?;
        let (runtime, version, definition) = self.authorized_target(caller, input).await?;
        let program = BuiltVersion::new(&self.runtimes_dir(), &runtime.runtime_id, version.version)
            .program(&definition)
            .map_err(RuntimeError::Agent)?;
        let target = SessionTarget {
            tier: self.tier_of(&runtime.arn).await?,
            account: &caller.account,
            runtime_id: &runtime.runtime_id,
            runtime_arn: &runtime.arn,
            version: version.version,
            definition: &definition,
            program,
        };
        let session = self.inner.sessions.session(target, &session_id).await?;
        Ok((session, definition))
    }

    pub async fn invoke_agent_runtime(
        &self,
        caller: &Caller,
        input: &Value,
        mut headers: Vec<(String, String)>,
        caller_headers: &[(String, String)],
        payload: RequestBody,
    ) -> Result<AgentResponse> {
        let (session, definition) = self.session_for(caller, input).await?;
        headers.extend(crate::headers::forwarded(
            caller_headers,
            definition.header_allowlist(),
            definition.jwt_authorizer().is_some(),
        ));
        session.invoke(AgentRequest { headers, body: payload }).await
    }

    /// A WebSocket connection to the session's agent (`/runtimes/{arn}/ws`, spec §3.6): the
    /// stream to the agent's port, the headers its `/ws` handshake carries, and a guard that
    /// keeps the session busy while the socket is open.
    pub async fn open_agent_socket(
        &self,
        caller: &Caller,
        input: &Value,
        caller_headers: &[(String, String)],
    ) -> Result<AgentSocket> {
        let (session, definition) = self.session_for(caller, input).await?;
        let mut headers = vec![(
            "x-amzn-bedrock-agentcore-runtime-session-id".to_string(),
            text(input, "runtimeSessionId").unwrap_or_default(),
        )];
        headers.extend(crate::headers::forwarded(
            caller_headers,
            definition.header_allowlist(),
            definition.jwt_authorizer().is_some(),
        ));
        let (stream, activity) = session.connect_agent().await?;
        Ok(AgentSocket {
            stream,
            port: session.port(),
            headers,
            activity,
        })
    }

    /// An interactive shell in the session's sandbox (`/runtimes/{arn}/ws/shells`).
    pub async fn open_shell(
        &self,
        caller: &Caller,
        input: &Value,
        shell_id: &str,
    ) -> Result<(
        berth_sandbox::guest::ShellStream,
        bool,
        crate::sessions::SessionActivity,
    )> {
        let (session, _) = self.session_for(caller, input).await?;
        session.open_shell(shell_id).await
    }

    /// GetAgentCard: the A2A agent's card, from the session named (one is started if needed).
    pub async fn get_agent_card(&self, caller: &Caller, mut input: Value) -> Result<Value> {
        if text(&input, "runtimeSessionId").is_none() {
            input["runtimeSessionId"] = json!(format!("{}-{}", ids::request_id(), ids::random_alphanumeric(8)));
        }
        let (session, _) = self.session_for(caller, &input).await?;
        let card = session.agent_card().await?;
        Ok(json!({"runtimeSessionId": input["runtimeSessionId"], "agentCard": card}))
    }

    /// InvokeAgentRuntimeCommand: the request is checked before a session starts for it.
    pub async fn invoke_agent_runtime_command(
        &self,
        caller: &Caller,
        input: &Value,
    ) -> Result<tokio::sync::mpsc::Receiver<CommandEvent>> {
        let request = CommandRequest::parse(input)?;
        let (session, _) = self.session_for(caller, input).await?;
        command::run(session, request).await
    }

    pub async fn stop_runtime_session(&self, caller: &Caller, input: Value) -> Result<Value> {
        let session_id = text(&input, "runtimeSessionId").unwrap_or_default();
        let (runtime, ..) = self.authorized_target(caller, &input).await?;
        self.inner.sessions.stop(&runtime.runtime_id, &session_id).await?;
        Ok(json!({"runtimeSessionId": session_id}))
    }
}
