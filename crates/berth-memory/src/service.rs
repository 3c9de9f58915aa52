//! One `async fn` per Memory operation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use berth_core::{Arn, Caller, PageToken, Timestamp, ids};
use berth_models::{Embedder, Models};
use berth_store::jobs::{self, JobHandler, Notify, Worker};
use berth_store::{Store, StoreError};
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::error::{MemoryError, Result};
use crate::extraction::ExtractionSettings;
use crate::model::*;
use crate::records::RetrievalMode;
use crate::store::{self as db, BranchScope, EventQuery, EventRow, MemoryRow, MetadataCondition, StrategyRow};
use crate::strategies;
use crate::vector_index::VectorIndex;

const JOB_SETTLE: &str = "memory.settle";
const JOB_DELETE: &str = "memory.delete";
const DEFAULT_PAGE: i64 = 20;
/// How deep `includeParentBranches` follows branches of branches.
const MAX_BRANCH_DEPTH: usize = 32;

const ACTIVE: &str = "ACTIVE";
const CREATING: &str = "CREATING";
const UPDATING: &str = "UPDATING";
const DELETING: &str = "DELETING";

/// The Memory service.
#[derive(Clone)]
pub struct MemoryService {
    store: Store,
    region: String,
    wake_worker: Option<Arc<Notify>>,
    /// Sessions this process has seen recorded, so CreateEvent skips re-recording them. Entries
    /// never go stale: session rows are only removed with their memory, whose id is never reused.
    known_sessions: Arc<Mutex<HashSet<(String, String, String)>>>,
    /// Memories recently read for data-plane calls (see `cached_memory`).
    memories: Arc<Mutex<HashMap<String, CachedMemory>>>,
    /// The embedder of long-term records (without one, retrieval is lexical only) and the
    /// chat models extraction uses.
    models: Models,
    extraction: ExtractionSettings,
    retrieval: RetrievalMode,
    /// Record embeddings held in memory for dense retrieval.
    vectors: Arc<VectorIndex>,
    /// This process's name on extraction claims.
    extraction_owner: Arc<str>,
    /// Wakes the extractor when an event waits for extraction.
    extractor_wake: Arc<Notify>,
}

/// A memory as the data plane last read it.
#[derive(Clone)]
struct CachedMemory {
    row: MemoryRow,
    read_at: i64,
    /// Whether any of its strategies extracts records from events.
    extracting: bool,
}

/// How long a data-plane call may use a memory read earlier.
const MEMORY_CACHE_MILLIS: i64 = 2_000;
/// How many memories the data-plane cache holds before it starts over.
const MEMORY_CACHE_LIMIT: usize = 10_000;

/// How many sessions [`MemoryService`] remembers before it starts over.
const KNOWN_SESSIONS_LIMIT: usize = 100_000;

fn seconds(millis: i64) -> f64 {
    Timestamp(millis).epoch_seconds()
}

fn page_size(max_results: Option<i64>) -> i64 {
    max_results.unwrap_or(DEFAULT_PAGE).clamp(1, 100)
}

impl MemoryService {
    pub fn new(store: Store, region: impl Into<String>) -> Self {
        MemoryService {
            store,
            region: region.into(),
            wake_worker: None,
            known_sessions: Arc::new(Mutex::new(HashSet::new())),
            memories: Arc::new(Mutex::new(HashMap::new())),
            models: Models::default(),
            extraction: ExtractionSettings::default(),
            retrieval: RetrievalMode::default(),
            vectors: Arc::new(VectorIndex::default()),
            extraction_owner: ids::random_alphanumeric(20).into(),
            extractor_wake: Arc::new(Notify::new()),
        }
    }

    /// Embeds long-term records with `embedder` from now on.
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.models.embedder = Some(embedder);
        self
    }

    /// Uses these models for embedding and extraction.
    pub fn with_models(mut self, models: Models) -> Self {
        self.models = models;
        self
    }

    pub fn with_retrieval_mode(mut self, mode: RetrievalMode) -> Self {
        self.retrieval = mode;
        self
    }

    pub(crate) fn extraction_owner(&self) -> &str {
        &self.extraction_owner
    }

    pub(crate) fn vector_index(&self) -> &VectorIndex {
        &self.vectors
    }

    pub(crate) fn retrieval_mode(&self) -> RetrievalMode {
        self.retrieval
    }

    pub fn with_extraction_settings(mut self, settings: ExtractionSettings) -> Self {
        self.extraction = settings;
        self
    }

    pub(crate) fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.models.embedder.as_ref()
    }

    /// What each chat model has used since start: calls, failures, tokens in and out.
    pub fn model_usage(&self) -> Vec<(String, berth_models::UsageTotals)> {
        self.models
            .chat_models()
            .iter()
            .map(|m| (m.name().to_string(), m.totals()))
            .collect()
    }

    pub(crate) fn models(&self) -> &Models {
        &self.models
    }

    pub(crate) fn extraction_settings(&self) -> &ExtractionSettings {
        &self.extraction
    }

    pub(crate) fn extractor_wake(&self) -> Arc<Notify> {
        self.extractor_wake.clone()
    }

    pub(crate) fn wake_extractor(&self) {
        self.extractor_wake.notify_one();
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The ids of a memory's strategies.
    pub(crate) async fn strategy_ids(&self, memory_id: &str) -> Result<Vec<String>> {
        Ok(db::strategies(self.store.reader(), memory_id)
            .await?
            .into_iter()
            .map(|s| s.strategy_id)
            .collect())
    }

    /// Registers Memory's background jobs and lets the service wake the worker after enqueueing.
    pub fn attach_worker(&mut self, worker: &mut Worker) {
        let settle = self.clone();
        let handler: JobHandler = Arc::new(move |payload| {
            let service = settle.clone();
            Box::pin(async move { service.settle(&payload).await.map_err(|e| e.to_string()) })
        });
        worker.register(JOB_SETTLE, handler);
        let delete = self.clone();
        let handler: JobHandler = Arc::new(move |payload| {
            let service = delete.clone();
            Box::pin(async move { service.finish_delete(&payload).await.map_err(|e| e.to_string()) })
        });
        worker.register(JOB_DELETE, handler);
        self.wake_worker = Some(worker.waker());
    }

    fn wake(&self) {
        if let Some(notify) = &self.wake_worker {
            notify.notify_one();
        }
    }

    // ---- shared helpers -------------------------------------------------------------------

    /// Resolves a `memoryId` path value (an id, or on the data plane an ARN) to a memory the
    /// caller owns. Memories being deleted are gone as far as callers are concerned, except for
    /// GetMemory and DeleteMemory, which pass `include_deleting`.
    pub(crate) async fn memory_of(
        &self,
        caller: &Caller,
        id_or_arn: &str,
        include_deleting: bool,
    ) -> Result<MemoryRow> {
        let memory_id = match id_or_arn.parse::<Arn>() {
            Ok(arn) if arn.resource_type() == "memory" && arn.account == caller.account.as_str() => {
                arn.resource_id().unwrap_or_default().to_string()
            }
            Ok(_) => return Err(MemoryError::MemoryNotFound(id_or_arn.to_string())),
            Err(_) => id_or_arn.to_string(),
        };
        let row = if include_deleting {
            db::memory(self.store.reader(), &memory_id).await?
        } else {
            self.cached_memory(&memory_id).await?
        };
        match row {
            Some(row) if row.account_id == caller.account.as_str() && (include_deleting || row.status != DELETING) => {
                Ok(row)
            }
            _ => Err(MemoryError::MemoryNotFound(id_or_arn.to_string())),
        }
    }

    /// A memory for a data-plane call, read at most every [`MEMORY_CACHE_MILLIS`]. This
    /// process forgets a memory as soon as it changes it; a change made by another node that
    /// shares the database is seen within the cache window.
    async fn cached_memory(&self, memory_id: &str) -> Result<Option<MemoryRow>> {
        Ok(self.cached(memory_id).await?.map(|cached| cached.row))
    }

    async fn cached(&self, memory_id: &str) -> Result<Option<CachedMemory>> {
        let now = self.store.now();
        if let Some(cached) = self.memories.lock().get(memory_id)
            && now - cached.read_at < MEMORY_CACHE_MILLIS
        {
            return Ok(Some(cached.clone()));
        }
        let Some(row) = db::memory(self.store.reader(), memory_id).await? else {
            return Ok(None);
        };
        let strategies = db::strategies(self.store.reader(), memory_id).await?;
        let cached = CachedMemory {
            row,
            read_at: now,
            extracting: strategies
                .iter()
                .any(|s| s.status != DELETING && crate::extraction::extracts(s)),
        };
        let mut memories = self.memories.lock();
        if memories.len() >= MEMORY_CACHE_LIMIT {
            memories.clear();
        }
        memories.insert(memory_id.to_string(), cached.clone());
        Ok(Some(cached))
    }

    /// Whether an event waits for extraction, and with which namespace variables (checked
    /// against the memory's `namespaceKeys`).
    async fn pending_extraction(&self, memory: &MemoryRow, input: &CreateEventInput) -> Result<Option<Option<String>>> {
        let conversational = input.payload.iter().any(|item| item.get("conversational").is_some());
        if input.extraction_mode.as_deref() == Some("SKIP") || !conversational {
            return Ok(None);
        }
        // memory_of has just cached the memory; reading the flag avoids cloning it again.
        let cached = self.memories.lock().get(&memory.memory_id).map(|c| c.extracting);
        let extracting = match cached {
            Some(extracting) => extracting,
            None => self.cached(&memory.memory_id).await?.is_some_and(|c| c.extracting),
        };
        if !extracting {
            return Ok(None);
        }
        let Some(variables) = input
            .extraction_config
            .as_ref()
            .and_then(|c| c.get("namespaceVariables"))
        else {
            return Ok(Some(None));
        };
        crate::extraction::check_namespace_variables(&memory.attributes, variables)?;
        Ok(Some(Some(variables.to_string())))
    }

    /// Drops a memory from the data-plane cache after this process changed it.
    fn forget_memory(&self, memory_id: &str) {
        self.memories.lock().remove(memory_id);
    }

    fn strategy_output(row: &StrategyRow) -> Value {
        let mut out = row.definition.clone();
        out.insert("strategyId".into(), json!(row.strategy_id));
        out.insert("name".into(), json!(row.name));
        out.insert("type".into(), json!(row.strategy_type));
        out.insert("status".into(), json!(row.status));
        out.insert("createdAt".into(), json!(seconds(row.created_at)));
        out.insert("updatedAt".into(), json!(seconds(row.updated_at)));
        Value::Object(out)
    }

    fn memory_output(row: &MemoryRow, strategies: &[StrategyRow]) -> Memory {
        Memory {
            arn: row.arn.clone(),
            id: row.memory_id.clone(),
            name: row.name.clone(),
            attributes: row.attributes.clone(),
            event_expiry_duration: row.event_expiry_days,
            status: row.status.clone(),
            failure_reason: row.failure_reason.clone(),
            created_at: seconds(row.created_at),
            updated_at: seconds(row.updated_at),
            strategies: strategies.iter().map(Self::strategy_output).collect(),
        }
    }

    fn namespace_keys(attributes: &Map<String, Value>) -> Vec<String> {
        attributes
            .get("namespaceKeys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.get("key").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn new_strategy_row(
        memory_id: &str,
        position: i64,
        input: &Value,
        namespace_keys: &[String],
        field: &str,
        now: i64,
    ) -> Result<StrategyRow> {
        let strategy = strategies::from_input(input, namespace_keys, field)?;
        Ok(StrategyRow {
            strategy_id: ids::resource_id(&strategy.name),
            memory_id: memory_id.to_string(),
            position,
            name: strategy.name,
            strategy_type: strategy.strategy_type.to_string(),
            status: CREATING.to_string(),
            definition: strategy.definition,
            created_at: now,
            updated_at: now,
        })
    }

    fn check_unique_strategy_names(strategies: &[StrategyRow], field: &str) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for strategy in strategies.iter().filter(|s| s.status != DELETING) {
            if !seen.insert(strategy.name.as_str()) {
                return Err(MemoryError::invalid(
                    field,
                    format!(
                        "a memory strategy named `{}` already exists in this memory",
                        strategy.name
                    ),
                ));
            }
        }
        Ok(())
    }

    // ---- control plane --------------------------------------------------------------------

    pub async fn create_memory(&self, caller: &Caller, input: CreateMemoryInput) -> Result<MemoryOutput> {
        let now = self.store.now();
        let memory_id = ids::resource_id(&input.name);
        let arn = Arn::new(&self.region, &caller.account, format!("memory/{memory_id}")).to_string();
        let mut attributes = Map::new();
        let optional = [
            ("description", input.description.map(Value::String)),
            ("encryptionKeyArn", input.encryption_key_arn.map(Value::String)),
            (
                "memoryExecutionRoleArn",
                input.memory_execution_role_arn.map(Value::String),
            ),
            ("indexedKeys", input.indexed_keys.map(Value::Array)),
            ("namespaceKeys", input.namespace_keys.map(Value::Array)),
            ("streamDeliveryResources", input.stream_delivery_resources),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.insert(key.to_string(), value);
            }
        }
        let namespace_keys = Self::namespace_keys(&attributes);
        let strategies = input
            .memory_strategies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Self::new_strategy_row(
                    &memory_id,
                    i as i64,
                    s,
                    &namespace_keys,
                    &format!("memoryStrategies[{i}]"),
                    now,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Self::check_unique_strategy_names(&strategies, "memoryStrategies")?;
        let row = MemoryRow {
            memory_id: memory_id.clone(),
            account_id: caller.account.to_string(),
            name: input.name.clone(),
            arn: arn.clone(),
            status: CREATING.to_string(),
            failure_reason: None,
            event_expiry_days: input.event_expiry_duration,
            attributes,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.store.begin().await?;
        if let Err(error) = db::insert_memory(&mut tx, &row).await {
            return Err(if error.is_unique_violation() {
                MemoryError::NameTaken(input.name)
            } else {
                error.into()
            });
        }
        for strategy in &strategies {
            db::insert_strategy(&mut tx, strategy).await?;
        }
        berth_store::tags::insert_tags(&mut tx, &arn, &input.tags).await?;
        jobs::enqueue(&mut tx, JOB_SETTLE, &json!({ "memoryId": memory_id }), now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.wake();
        Ok(MemoryOutput {
            memory: Self::memory_output(&row, &strategies),
        })
    }

    pub async fn get_memory(&self, caller: &Caller, input: MemoryIdInput) -> Result<MemoryOutput> {
        let row = self.memory_of(caller, &input.memory_id, true).await?;
        let strategies = db::strategies(self.store.reader(), &row.memory_id).await?;
        Ok(MemoryOutput {
            memory: Self::memory_output(&row, &strategies),
        })
    }

    pub async fn update_memory(&self, caller: &Caller, input: UpdateMemoryInput) -> Result<MemoryOutput> {
        let existing = self.memory_of(caller, &input.memory_id, false).await?;
        let now = self.store.now();
        let mut tx = self.store.begin().await?;
        let mut row = db::memory(&mut *tx, &existing.memory_id)
            .await?
            .ok_or_else(|| MemoryError::MemoryNotFound(input.memory_id.clone()))?;
        if row.status != ACTIVE && row.status != "FAILED" {
            return Err(MemoryError::NotActive(row.memory_id, row.status));
        }
        if let Some(description) = input.description {
            row.attributes.insert("description".into(), json!(description));
        }
        if let Some(role) = input.memory_execution_role_arn {
            row.attributes.insert("memoryExecutionRoleArn".into(), json!(role));
        }
        if let Some(days) = input.event_expiry_duration {
            row.event_expiry_days = days;
        }
        if let Some(keys) = input.namespace_keys {
            row.attributes.insert("namespaceKeys".into(), Value::Array(keys));
        }
        if let Some(resources) = input.stream_delivery_resources {
            row.attributes.insert("streamDeliveryResources".into(), resources);
        }
        if let Some(new_keys) = input.add_indexed_keys {
            let mut keys = row
                .attributes
                .get("indexedKeys")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for key in new_keys {
                let name = key.get("key").cloned();
                if keys.iter().any(|k| k.get("key") == name.as_ref()) {
                    return Err(MemoryError::invalid(
                        "addIndexedKeys",
                        format!("indexed key {} already exists", name.unwrap_or_default()),
                    ));
                }
                keys.push(key);
            }
            if keys.len() > 10 {
                return Err(MemoryError::invalid(
                    "addIndexedKeys",
                    "a memory has at most 10 indexed keys",
                ));
            }
            row.attributes.insert("indexedKeys".into(), Value::Array(keys));
        }
        let namespace_keys = Self::namespace_keys(&row.attributes);
        let mut strategies = db::strategies(&mut *tx, &row.memory_id).await?;
        let changes = input.memory_strategies.unwrap_or_default();
        for (i, delete) in changes.delete_memory_strategies.iter().enumerate() {
            let field = format!("memoryStrategies.deleteMemoryStrategies[{i}].memoryStrategyId");
            let strategy = strategies
                .iter_mut()
                .find(|s| s.strategy_id == delete.memory_strategy_id && s.status != DELETING)
                .ok_or_else(|| {
                    MemoryError::invalid(
                        &field,
                        format!("memory strategy `{}` not found", delete.memory_strategy_id),
                    )
                })?;
            strategy.status = DELETING.to_string();
            strategy.updated_at = now;
            db::update_strategy(&mut tx, strategy).await?;
        }
        for (i, modification) in changes.modify_memory_strategies.iter().enumerate() {
            let field = format!("memoryStrategies.modifyMemoryStrategies[{i}]");
            let id = modification
                .get("memoryStrategyId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let strategy = strategies
                .iter_mut()
                .find(|s| s.strategy_id == id && s.status != DELETING)
                .ok_or_else(|| {
                    MemoryError::invalid(
                        format!("{field}.memoryStrategyId"),
                        format!("memory strategy `{id}` not found"),
                    )
                })?;
            strategies::apply_modification(&mut strategy.definition, modification, &namespace_keys, &field)?;
            strategy.updated_at = now;
            db::update_strategy(&mut tx, strategy).await?;
        }
        let first_position = strategies.iter().map(|s| s.position + 1).max().unwrap_or(0);
        for (i, add) in changes.add_memory_strategies.iter().enumerate() {
            let field = format!("memoryStrategies.addMemoryStrategies[{i}]");
            let position = first_position + i as i64;
            let strategy = Self::new_strategy_row(&row.memory_id, position, add, &namespace_keys, &field, now)?;
            strategies.push(strategy);
            Self::check_unique_strategy_names(&strategies, &field)?;
            db::insert_strategy(&mut tx, strategies.last().expect("invariant: just pushed")).await?;
        }
        row.status = UPDATING.to_string();
        row.failure_reason = None;
        row.updated_at = now;
        db::update_memory(&mut tx, &row).await?;
        jobs::enqueue(&mut tx, JOB_SETTLE, &json!({ "memoryId": row.memory_id }), now).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.forget_memory(&row.memory_id);
        self.wake();
        Ok(MemoryOutput {
            memory: Self::memory_output(&row, &strategies),
        })
    }

    pub async fn delete_memory(&self, caller: &Caller, input: MemoryIdInput) -> Result<DeleteMemoryOutput> {
        let existing = self.memory_of(caller, &input.memory_id, true).await?;
        let now = self.store.now();
        let mut tx = self.store.begin().await?;
        let mut row = db::memory(&mut *tx, &existing.memory_id)
            .await?
            .ok_or_else(|| MemoryError::MemoryNotFound(input.memory_id.clone()))?;
        if row.status != DELETING {
            row.status = DELETING.to_string();
            row.updated_at = now;
            db::update_memory(&mut tx, &row).await?;
            jobs::enqueue(&mut tx, JOB_DELETE, &json!({ "memoryId": row.memory_id }), now).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.forget_memory(&row.memory_id);
        self.wake();
        Ok(DeleteMemoryOutput {
            memory_id: row.memory_id,
            status: row.status,
        })
    }

    pub async fn list_memories(&self, caller: &Caller, input: ListMemoriesInput) -> Result<ListMemoriesOutput> {
        let limit = page_size(input.max_results);
        let after = match &input.next_token {
            Some(token) => {
                Some(PageToken::<(i64, String)>::decode("memories", token).map_err(|_| MemoryError::BadToken)?)
            }
            None => None,
        };
        let mut rows = db::list_memories(&self.store, caller.account.as_str(), after, limit + 1).await?;
        let next_token = (rows.len() as i64 > limit).then(|| {
            rows.truncate(limit as usize);
            let last = rows.last().expect("invariant: a full page is not empty");
            PageToken::encode("memories", (last.created_at, last.memory_id.clone()))
        });
        Ok(ListMemoriesOutput {
            memories: rows
                .into_iter()
                .map(|r| MemorySummary {
                    arn: r.arn,
                    id: r.memory_id,
                    status: r.status,
                    created_at: seconds(r.created_at),
                    updated_at: seconds(r.updated_at),
                })
                .collect(),
            next_token,
        })
    }

    /// Whether `memory_id` is a memory of `account` (for tags and resource policies).
    pub async fn exists(&self, account: &str, memory_id: &str) -> Result<bool> {
        let row = db::memory(self.store.reader(), memory_id).await?;
        Ok(row.is_some_and(|m| m.account_id == account && m.status != DELETING))
    }

    /// Job: finishes a create or update. Idempotent.
    async fn settle(&self, payload: &Value) -> Result<()> {
        let memory_id = payload.get("memoryId").and_then(Value::as_str).unwrap_or_default();
        let now = self.store.now();
        let mut tx = self.store.begin().await?;
        let Some(mut row) = db::memory(&mut *tx, memory_id).await? else {
            return Ok(());
        };
        if row.status == DELETING {
            return Ok(());
        }
        for mut strategy in db::strategies(&mut *tx, memory_id).await? {
            match strategy.status.as_str() {
                DELETING => db::delete_strategy(&mut tx, &strategy.strategy_id).await?,
                CREATING => {
                    strategy.status = ACTIVE.to_string();
                    strategy.updated_at = now;
                    db::update_strategy(&mut tx, &strategy).await?;
                }
                _ => {}
            }
        }
        if row.status == CREATING || row.status == UPDATING {
            row.status = ACTIVE.to_string();
            row.updated_at = now;
            db::update_memory(&mut tx, &row).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.forget_memory(memory_id);
        tracing::info!(memory_id, "memory is active");
        Ok(())
    }

    /// Job: removes a deleted memory and everything in it. Idempotent.
    async fn finish_delete(&self, payload: &Value) -> Result<()> {
        let memory_id = payload.get("memoryId").and_then(Value::as_str).unwrap_or_default();
        let mut tx = self.store.begin().await?;
        if let Some(row) = db::memory(&mut *tx, memory_id).await? {
            db::delete_memory(&mut tx, memory_id, &row.arn).await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.forget_memory(memory_id);
        tracing::info!(memory_id, "memory deleted");
        Ok(())
    }

    // ---- data plane -----------------------------------------------------------------------

    fn event_output(row: EventRow) -> Result<Event> {
        let raw = |text: String| RawValue::from_string(text).map_err(|e| StoreError::Corrupt(e.to_string()));
        Ok(Event {
            memory_id: row.memory_id,
            actor_id: row.actor_id,
            session_id: row.session_id,
            event_id: row.event_id,
            event_timestamp: seconds(row.event_time),
            payload: raw(row.payload)?,
            branch: row.branch_name.map(|name| Branch {
                name,
                root_event_id: row.root_event_id,
            }),
            metadata: row.metadata.map(raw).transpose()?,
        })
    }

    /// The branch name and root event an event is stored with: `main` is no branch; a new branch
    /// needs a root event of the same actor and session; later events of a branch may omit it.
    async fn resolve_branch(
        &self,
        memory_id: &str,
        actor_id: &str,
        session_id: &str,
        branch: Option<Branch>,
    ) -> Result<(Option<String>, Option<String>)> {
        let reader = self.store.reader();
        Ok(match branch {
            Some(branch) if branch.name != "main" => {
                let existing = db::branch_root(reader, memory_id, actor_id, session_id, &branch.name).await?;
                let root = match (existing, branch.root_event_id) {
                    (Some(existing), Some(given)) if existing.as_deref() != Some(given.as_str()) => {
                        return Err(MemoryError::invalid(
                            "branch.rootEventId",
                            format!("branch `{}` already starts at another event", branch.name),
                        ));
                    }
                    (Some(existing), _) => existing,
                    (None, Some(given)) => Some(given),
                    (None, None) => {
                        return Err(MemoryError::invalid(
                            "branch.rootEventId",
                            format!("rootEventId is required to start branch `{}`", branch.name),
                        ));
                    }
                };
                if let Some(root) = &root {
                    let found = db::event_in_memory(reader, memory_id, root).await?;
                    if !found.is_some_and(|e| e.actor_id == actor_id && e.session_id == session_id) {
                        return Err(MemoryError::invalid(
                            "branch.rootEventId",
                            format!("root event `{root}` is not an event of this actor and session"),
                        ));
                    }
                }
                (Some(branch.name), root)
            }
            _ => (None, None),
        })
    }

    pub async fn create_event(&self, caller: &Caller, input: CreateEventInput) -> Result<EventOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let event_time = Timestamp::from_epoch_seconds(input.event_timestamp).ok_or_else(|| {
            MemoryError::invalid("eventTimestamp", "eventTimestamp must be a time between 1970 and 9999")
        })?;
        let extraction = self.pending_extraction(&memory, &input).await?;
        let session_id = input.session_id.unwrap_or_else(|| ids::random_alphanumeric(32));
        // Every check reads before the write, so the write itself only fails on I/O.
        let (branch_name, root_event_id) = self
            .resolve_branch(&memory.memory_id, &input.actor_id, &session_id, input.branch)
            .await?;
        let row = EventRow {
            seq: 0,
            memory_id: memory.memory_id.clone(),
            actor_id: input.actor_id,
            session_id,
            event_id: ids::event_id(event_time),
            event_time: event_time.millis(),
            branch_name,
            root_event_id,
            payload: Value::Array(input.payload).to_string(),
            metadata: input.metadata.map(|m| serde_json::to_string(&m).unwrap_or_default()),
        };
        let waits_for_extraction = extraction.is_some();
        let (stored, now) = (row.clone(), self.store.now());
        let session_key = (row.memory_id.clone(), row.actor_id.clone(), row.session_id.clone());
        let new_session = !self.known_sessions.lock().contains(&session_key);
        self.store
            .write(move |conn| {
                let row = stored.clone();
                let extraction = extraction.clone();
                Box::pin(async move {
                    db::insert_event(conn, &row, new_session, now, extraction.as_ref().map(|v| v.as_deref()))
                        .await
                        .map_err(MemoryError::from)
                })
            })
            .await?;
        if waits_for_extraction {
            self.wake_extractor();
        }
        if new_session {
            let mut known = self.known_sessions.lock();
            if known.len() >= KNOWN_SESSIONS_LIMIT {
                known.clear();
            }
            known.insert(session_key);
        }
        Ok(EventOutput {
            event: Self::event_output(row)?,
        })
    }

    pub async fn get_event(&self, caller: &Caller, input: EventKeyInput) -> Result<EventOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let row = db::event(
            &self.store,
            &memory.memory_id,
            &input.actor_id,
            &input.session_id,
            &input.event_id,
        )
        .await?
        .ok_or(MemoryError::EventNotFound(input.event_id))?;
        Ok(EventOutput {
            event: Self::event_output(row)?,
        })
    }

    pub async fn delete_event(&self, caller: &Caller, input: EventKeyInput) -> Result<DeleteEventOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let mut tx = self.store.begin().await?;
        let deleted = db::delete_event(
            &mut tx,
            &memory.memory_id,
            &input.actor_id,
            &input.session_id,
            &input.event_id,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        if !deleted {
            return Err(MemoryError::EventNotFound(input.event_id));
        }
        Ok(DeleteEventOutput {
            event_id: input.event_id,
        })
    }

    /// The branch scopes a branch filter selects: the branch itself and, when asked, each
    /// parent branch up to the event the child branched from.
    async fn branch_scopes(
        &self,
        memory_id: &str,
        actor_id: &str,
        session_id: &str,
        filter: &BranchFilter,
    ) -> Result<Option<Vec<BranchScope>>> {
        if filter.name == "main" {
            return Ok(Some(vec![BranchScope::Whole(None)]));
        }
        let mut scopes = vec![BranchScope::Whole(Some(filter.name.clone()))];
        if !filter.include_parent_branches {
            return Ok(Some(scopes));
        }
        let mut branch = filter.name.clone();
        for _ in 0..MAX_BRANCH_DEPTH {
            let Some(root) = db::branch_root(self.store.reader(), memory_id, actor_id, session_id, &branch).await?
            else {
                return Ok(None);
            };
            let Some(root) = root else { break };
            let root = db::event_in_memory(self.store.reader(), memory_id, &root).await?;
            let Some(root) = root.filter(|e| e.actor_id == actor_id && e.session_id == session_id) else {
                break;
            };
            let parent = root.branch_name;
            scopes.push(BranchScope::UpTo(parent.clone(), root.event_time, root.seq));
            match parent {
                Some(parent) => branch = parent,
                None => break,
            }
        }
        Ok(Some(scopes))
    }

    pub async fn list_events(&self, caller: &Caller, input: ListEventsInput) -> Result<ListEventsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let limit = page_size(input.max_results);
        let before = match &input.next_token {
            Some(token) => Some(PageToken::<(i64, i64)>::decode("events", token).map_err(|_| MemoryError::BadToken)?),
            None => None,
        };
        let filter = input.filter.unwrap_or_default();
        let branches = match &filter.branch {
            Some(branch) => match self
                .branch_scopes(&memory.memory_id, &input.actor_id, &input.session_id, branch)
                .await?
            {
                Some(scopes) => scopes,
                None => {
                    return Ok(ListEventsOutput {
                        events: Vec::new(),
                        next_token: None,
                    });
                }
            },
            None => Vec::new(),
        };
        let mut metadata = Vec::new();
        for (i, condition) in filter.event_metadata.iter().enumerate() {
            let key = condition.left.metadata_key.clone();
            metadata.push(match condition.operator.as_str() {
                "EQUALS_TO" => {
                    let value = condition
                        .right
                        .as_ref()
                        .and_then(|r| r.metadata_value.string_value.clone())
                        .ok_or_else(|| {
                            MemoryError::invalid(
                                format!("filter.eventMetadata[{i}].right"),
                                "EQUALS_TO needs right.metadataValue.stringValue",
                            )
                        })?;
                    MetadataCondition::Equals(key, value)
                }
                "EXISTS" => MetadataCondition::Exists(key),
                _ => MetadataCondition::NotExists(key),
            });
        }
        let query = EventQuery {
            memory_id: &memory.memory_id,
            actor_id: &input.actor_id,
            session_id: &input.session_id,
            branches,
            metadata,
            include_payloads: input.include_payloads.unwrap_or(true),
            before,
            limit: limit + 1,
        };
        let mut rows = db::list_events(&self.store, &query).await?;
        let next_token = (rows.len() as i64 > limit).then(|| {
            rows.truncate(limit as usize);
            let last = rows.last().expect("invariant: a full page is not empty");
            PageToken::encode("events", (last.event_time, last.seq))
        });
        Ok(ListEventsOutput {
            events: rows.into_iter().map(Self::event_output).collect::<Result<_>>()?,
            next_token,
        })
    }

    pub async fn list_actors(&self, caller: &Caller, input: ListActorsInput) -> Result<ListActorsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let limit = page_size(input.max_results);
        let after = match &input.next_token {
            Some(token) => PageToken::<String>::decode("actors", token).map_err(|_| MemoryError::BadToken)?,
            None => String::new(),
        };
        let mut actors = db::list_actors(&self.store, &memory.memory_id, &after, limit + 1).await?;
        let next_token = (actors.len() as i64 > limit).then(|| {
            actors.truncate(limit as usize);
            PageToken::encode("actors", actors.last().cloned().unwrap_or_default())
        });
        Ok(ListActorsOutput {
            actor_summaries: actors.into_iter().map(|actor_id| ActorSummary { actor_id }).collect(),
            next_token,
        })
    }

    pub async fn list_sessions(&self, caller: &Caller, input: ListSessionsInput) -> Result<ListSessionsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let limit = page_size(input.max_results);
        let before = match &input.next_token {
            Some(token) => {
                Some(PageToken::<(i64, String)>::decode("sessions", token).map_err(|_| MemoryError::BadToken)?)
            }
            None => None,
        };
        let with_events = input
            .filter
            .and_then(|f| f.event_filter)
            .is_some_and(|f| f == "HAS_EVENTS");
        let mut sessions = db::list_sessions(
            &self.store,
            &memory.memory_id,
            &input.actor_id,
            before,
            with_events,
            limit + 1,
        )
        .await?;
        let next_token = (sessions.len() as i64 > limit).then(|| {
            sessions.truncate(limit as usize);
            let (id, at) = sessions.last().cloned().unwrap_or_default();
            PageToken::encode("sessions", (at, id))
        });
        Ok(ListSessionsOutput {
            session_summaries: sessions
                .into_iter()
                .map(|(session_id, created_at)| SessionSummary {
                    session_id,
                    actor_id: input.actor_id.clone(),
                    created_at: seconds(created_at),
                })
                .collect(),
            next_token,
        })
    }

    /// Deletes expired events. Returns how many went.
    pub async fn sweep_expired_events(&self) -> Result<u64> {
        Ok(db::sweep_expired_events(&self.store, self.store.now()).await?)
    }
}
