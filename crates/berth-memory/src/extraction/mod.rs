//! Long-term extraction: turning conversational events into memory records.
//!
//! CreateEvent marks an event that an extracting strategy should see (`extraction_pending`, in
//! the same row, so the hot path writes nothing extra). The extractor finds sessions whose
//! newest waiting event is older than the batching delay, runs each strategy of the memory over
//! the session's waiting turns, consolidates the candidates against the most similar stored
//! records, and writes the records, the supersessions and the cleared flags in one
//! transaction: a crash before the commit leaves the events waiting, so nothing is lost and
//! nothing is written twice. A strategy that fails becomes a row of `memory_extraction_jobs`
//! (its events and the reason), retried with backoff a few times, then kept for
//! StartMemoryExtractionJob; ListMemoryExtractionJobs shows it.
//!
//! Nodes sharing a database claim a session (or a job) before working on it
//! (`memory_extraction_claims`, with a lease a dead node's claim outlives by at most ten
//! minutes), so no events are extracted twice.

pub mod api;
mod metadata;
mod strategy;

use std::collections::HashSet;
use std::time::Duration;

use berth_core::ids;
use serde_json::{Map, Value, json};

use crate::error::{MemoryError, Result};
use crate::service::MemoryService;
use crate::store::StrategyRow;
use crate::store::extraction::{self as xdb, JobRow, PendingSession, SourceEvent};
use crate::store::records::{self as rdb, NamespaceMatch, RecordRow, Scope};
use strategy::{CONSOLIDATION_PROMPT, Override, Pipeline, Plan, StepModel};

/// How extraction batches and retries.
#[derive(Clone, Debug)]
pub struct ExtractionSettings {
    /// A session is extracted once its newest waiting event is this old, so turns that arrive
    /// together are extracted together.
    pub batch_delay: Duration,
    /// ...or as soon as this many events wait.
    pub max_batch_events: i64,
    /// The wait before a failed extraction's first retry; it doubles for each later one.
    pub retry_delay: Duration,
    /// Attempts (the first included) before a failed extraction waits for
    /// StartMemoryExtractionJob.
    pub max_attempts: i64,
}

impl Default for ExtractionSettings {
    fn default() -> Self {
        ExtractionSettings {
            batch_delay: Duration::from_secs(2),
            max_batch_events: 40,
            retry_delay: Duration::from_secs(30),
            max_attempts: 3,
        }
    }
}

/// How long a claim on a session or job holds; a node that dies mid-extraction loses it then.
const CLAIM_LEASE_MILLIS: i64 = 10 * 60 * 1000;

/// How often the extractor looks for due work when nobody woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The transcript a prompt carries, from the end of the run of turns.
const MAX_TRANSCRIPT_CHARS: usize = 6000;
/// How many stored records consolidation compares a candidate with, and how similar they must
/// be (cosine of unit vectors) to be worth asking the model about.
const NEIGHBOURS: usize = 3;
const NEIGHBOUR_SIMILARITY: f32 = 0.55;
/// Earlier episodes a reflection reads besides the new one.
const REFLECTION_EPISODES: i64 = 4;

/// Whether a strategy extracts records from events (self-managed ones do not).
pub fn extracts(strategy: &StrategyRow) -> bool {
    Plan::of(strategy).is_some()
}

/// Checks `extractionConfig.namespaceVariables` against the memory's `namespaceKeys`.
pub fn check_namespace_variables(attributes: &Map<String, Value>, variables: &Value) -> Result<()> {
    const FIELD: &str = "extractionConfig.namespaceVariables";
    let Some(variables) = variables.as_object() else {
        return Err(MemoryError::invalid(FIELD, "namespaceVariables must be a map"));
    };
    let keys = attributes.get("namespaceKeys").and_then(Value::as_array);
    for (name, value) in variables {
        let Some(key) = keys
            .into_iter()
            .flatten()
            .find(|k| k.get("key").and_then(Value::as_str) == Some(name))
        else {
            return Err(MemoryError::invalid(
                FIELD,
                format!("`{name}` is not one of the memory's namespaceKeys"),
            ));
        };
        let value = value.as_str().unwrap_or_default();
        if let Some(allowed) = key.pointer("/validation/allowedValues").and_then(Value::as_array)
            && !allowed.iter().any(|a| a.as_str() == Some(value))
        {
            return Err(MemoryError::invalid(
                FIELD,
                format!("`{value}` is not an allowed value of `{name}`"),
            ));
        }
        if let Some(pattern) = key.pointer("/validation/regexPattern").and_then(Value::as_str) {
            let anchored = format!("^(?:{pattern})$");
            let matches = fancy_regex::Regex::new(&anchored)
                .map_err(|e| MemoryError::invalid(FIELD, format!("the regexPattern of `{name}` is invalid: {e}")))?
                .is_match(value)
                .unwrap_or(false);
            if !matches {
                return Err(MemoryError::invalid(
                    FIELD,
                    format!("`{value}` does not match the regexPattern of `{name}`"),
                ));
            }
        }
    }
    Ok(())
}

/// One conversational message of an event.
#[derive(Clone, Debug)]
struct Turn {
    event_id: String,
    index: usize,
    role: String,
    text: String,
}

fn turns(events: &[SourceEvent]) -> Vec<Turn> {
    let mut out = Vec::new();
    for event in events {
        let payload: Vec<Value> = serde_json::from_str(&event.payload).unwrap_or_default();
        for (index, item) in payload.iter().enumerate() {
            let Some(message) = item.get("conversational") else {
                continue;
            };
            let text = message
                .pointer("/content/text")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if text.trim().is_empty() {
                continue;
            }
            out.push(Turn {
                event_id: event.event_id.clone(),
                index,
                role: message
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("OTHER")
                    .to_string(),
                text: text.to_string(),
            });
        }
    }
    out
}

fn transcript(turns: &[Turn]) -> String {
    let lines: Vec<String> = turns
        .iter()
        .map(|t| format!("{}: {}", t.role.to_lowercase(), t.text.trim()))
        .collect();
    let text = lines.join("\n");
    match text.char_indices().rev().nth(MAX_TRANSCRIPT_CHARS) {
        Some((cut, _)) => text[cut..].to_string(),
        None => text,
    }
}

fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches('.')
        .to_lowercase()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A record consolidation may compare a candidate with.
struct Known {
    id: String,
    content: String,
    vector: Vec<f32>,
}

/// What one run of extraction writes.
#[derive(Default)]
struct Outcome {
    /// New records (content, namespace, strategy) in order.
    records: Vec<RecordRow>,
    /// `(old, successor)` record ids.
    superseded: Vec<(String, String)>,
}

/// The events a run covers, and where its records go.
struct Run<'a> {
    memory_id: &'a str,
    actor_id: &'a str,
    session_id: &'a str,
    turns: Vec<Turn>,
    variables: Map<String, Value>,
    /// The time of the newest event: the records' `timestamp`.
    record_time: i64,
    /// The events' metadata, later events overriding earlier ones.
    event_metadata: Map<String, Value>,
}

/// The metadata of events merged, later events overriding earlier ones.
fn merged_metadata(events: &[SourceEvent]) -> Map<String, Value> {
    let mut merged = Map::new();
    for event in events {
        if let Some(Ok(Value::Object(map))) = event.metadata.as_deref().map(serde_json::from_str::<Value>) {
            merged.extend(map);
        }
    }
    merged
}

impl Run<'_> {
    fn messages(&self) -> String {
        let list: Vec<Value> = self
            .turns
            .iter()
            .map(|t| json!({"eventId": t.event_id, "messageIndex": t.index}))
            .collect();
        Value::Array(list).to_string()
    }

    fn sources(&self) -> String {
        let mut ids: Vec<&str> = self.turns.iter().map(|t| t.event_id.as_str()).collect();
        ids.dedup();
        json!(ids).to_string()
    }
}

impl MemoryService {
    /// Runs the extractor until `stop` completes.
    pub async fn run_extractor(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let wake = self.extractor_wake();
        loop {
            match self.extract_due().await {
                Ok(0) => {}
                Ok(_) => continue,
                Err(error) => tracing::warn!(%error, "memory extraction pass failed"),
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// One pass: every due session and every due retry. Returns how many it handled.
    pub async fn extract_due(&self) -> Result<usize> {
        let now = self.store().now();
        let settings = self.extraction_settings();
        let delay = settings.batch_delay.as_millis() as i64;
        let mut handled = 0;
        for session in xdb::pending_sessions(self.store(), 100).await? {
            if session.last_arrival <= now - delay || session.waiting >= settings.max_batch_events {
                // One session's failure (the database, not the model: those become jobs) must
                // not hold up the others; it is tried again on the next pass.
                match self.extract_session(&session).await {
                    Ok(()) => handled += 1,
                    Err(error) => tracing::warn!(%error, memory_id = %session.memory_id, "extracting a session failed"),
                }
            }
        }
        for job in xdb::due_jobs(self.store(), now, 20).await? {
            let job_id = job.job_id.clone();
            match self.retry_job(job).await {
                Ok(()) => handled += 1,
                Err(error) => tracing::warn!(%error, %job_id, "re-running an extraction job failed"),
            }
        }
        Ok(handled)
    }

    /// Claims `key` for this process; false when another process is working on it.
    async fn claim(&self, key: &str) -> Result<bool> {
        let now = self.store().now();
        Ok(xdb::claim(
            self.store(),
            key,
            self.extraction_owner(),
            now,
            now + CLAIM_LEASE_MILLIS,
        )
        .await?)
    }

    async fn release(&self, key: &str) -> Result<()> {
        let mut tx = self.store().begin().await?;
        xdb::release(&mut tx, key, self.extraction_owner()).await?;
        tx.commit().await.map_err(berth_store::StoreError::from)?;
        Ok(())
    }

    async fn extract_session(&self, session: &PendingSession) -> Result<()> {
        let key = format!(
            "session/{}/{}/{}",
            session.memory_id, session.actor_id, session.session_id
        );
        if !self.claim(&key).await? {
            return Ok(());
        }
        let result = self.extract_claimed(session).await;
        self.release(&key).await?;
        result
    }

    async fn extract_claimed(&self, session: &PendingSession) -> Result<()> {
        // Read after claiming: another process may have finished these events meanwhile.
        let events = xdb::pending_events(self.store(), session, self.extraction_settings().max_batch_events).await?;
        let plans = self.plans(&session.memory_id, None).await?;
        // Events that set different namespace variables go to different namespaces, so each
        // run of equal variables is extracted by itself.
        let mut start = 0;
        while start < events.len() {
            let variables = &events[start].namespace_variables;
            let end = events[start..]
                .iter()
                .position(|e| &e.namespace_variables != variables)
                .map_or(events.len(), |n| start + n);
            let group = &events[start..end];
            let seqs: Vec<i64> = group.iter().map(|e| e.seq).collect();
            let run = Run {
                memory_id: &session.memory_id,
                actor_id: &session.actor_id,
                session_id: &session.session_id,
                turns: turns(group),
                variables: variables
                    .as_deref()
                    .and_then(|v| serde_json::from_str(v).ok())
                    .unwrap_or_default(),
                record_time: group.iter().map(|e| e.event_time).max().unwrap_or_default(),
                event_metadata: merged_metadata(group),
            };
            let mut outcome = Outcome::default();
            let mut failed = Vec::new();
            if !run.turns.is_empty() {
                for plan in &plans {
                    match self.run_plan(plan, &run).await {
                        Ok(done) => {
                            outcome.records.extend(done.records);
                            outcome.superseded.extend(done.superseded);
                        }
                        Err(reason) => {
                            tracing::warn!(memory_id = run.memory_id, strategy_id = %plan.strategy_id, %reason, "extraction failed; it will be retried");
                            failed.push(self.failed_job(plan, &run, reason));
                        }
                    }
                }
            }
            self.commit(&run, outcome, &seqs, &failed, None).await?;
            start = end;
        }
        Ok(())
    }

    fn failed_job(&self, plan: &Plan, run: &Run<'_>, reason: String) -> JobRow {
        let now = self.store().now();
        JobRow {
            job_id: format!("job-{}", ids::request_id()),
            memory_id: run.memory_id.to_string(),
            strategy_id: plan.strategy_id.clone(),
            actor_id: run.actor_id.to_string(),
            session_id: run.session_id.to_string(),
            messages: run.messages(),
            failure_reason: reason,
            attempts: 1,
            next_attempt_at: self.next_attempt(1, now),
            created_at: now,
            updated_at: now,
        }
    }

    /// When attempt `attempts + 1` is due, or `None` when automatic attempts are used up.
    fn next_attempt(&self, attempts: i64, now: i64) -> Option<i64> {
        let settings = self.extraction_settings();
        (attempts < settings.max_attempts)
            .then(|| now + settings.retry_delay.as_millis() as i64 * (1 << (attempts - 1).clamp(0, 16)))
    }

    /// The plans of a memory's live strategies (or of one of them).
    async fn plans(&self, memory_id: &str, only: Option<&str>) -> Result<Vec<Plan>> {
        let Some(memory) = crate::store::memory(self.store().reader(), memory_id).await? else {
            return Ok(Vec::new());
        };
        if memory.status == "DELETING" {
            return Ok(Vec::new());
        }
        Ok(crate::store::strategies(self.store().reader(), memory_id)
            .await?
            .iter()
            .filter(|s| s.status != "DELETING" && only.is_none_or(|id| id == s.strategy_id))
            .filter_map(Plan::of)
            .collect())
    }

    async fn retry_job(&self, job: JobRow) -> Result<()> {
        let key = format!("job/{}", job.job_id);
        if !self.claim(&key).await? {
            return Ok(());
        }
        // The job may have been finished by the process that held the claim before.
        let Some(job) = xdb::get_job(self.store(), &job.memory_id, &job.job_id).await? else {
            return self.release(&key).await;
        };
        let result = self.run_job(job).await;
        self.release(&key).await?;
        result
    }

    async fn run_job(&self, job: JobRow) -> Result<()> {
        let messages: Vec<Value> = serde_json::from_str(&job.messages).unwrap_or_default();
        let mut event_ids: Vec<String> = messages
            .iter()
            .filter_map(|m| m.get("eventId").and_then(Value::as_str).map(String::from))
            .collect();
        event_ids.dedup();
        let events = xdb::events_by_ids(self.store(), &job.memory_id, &event_ids).await?;
        let plan = self.plans(&job.memory_id, Some(&job.strategy_id)).await?.pop();
        let run = Run {
            memory_id: &job.memory_id,
            actor_id: &job.actor_id,
            session_id: &job.session_id,
            turns: turns(&events),
            variables: events
                .last()
                .and_then(|e| e.namespace_variables.as_deref())
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
            record_time: events.iter().map(|e| e.event_time).max().unwrap_or_default(),
            event_metadata: merged_metadata(&events),
        };
        // A deleted strategy, or events deleted since, leave nothing to do.
        let (Some(plan), false) = (plan, run.turns.is_empty()) else {
            return self.commit(&run, Outcome::default(), &[], &[], Some(&job.job_id)).await;
        };
        match self.run_plan(&plan, &run).await {
            Ok(outcome) => self.commit(&run, outcome, &[], &[], Some(&job.job_id)).await,
            Err(reason) => {
                let now = self.store().now();
                let attempts = job.attempts + 1;
                let failed = JobRow {
                    attempts,
                    failure_reason: reason,
                    next_attempt_at: self.next_attempt(attempts, now),
                    updated_at: now,
                    ..job.clone()
                };
                self.commit(&run, Outcome::default(), &[], &[failed], None).await
            }
        }
    }

    /// Writes what a run produced, all or nothing.
    async fn commit(
        &self,
        run: &Run<'_>,
        outcome: Outcome,
        seqs: &[i64],
        jobs: &[JobRow],
        done_job: Option<&str>,
    ) -> Result<()> {
        let texts: Vec<String> = outcome.records.iter().map(|r| r.content.clone()).collect();
        let vectors = self.embed(texts).await?;
        let model = self.embedder().map(|e| e.name().to_string());
        let rows: Vec<(RecordRow, Option<Vec<f32>>)> = match vectors {
            Some(vectors) => outcome.records.into_iter().zip(vectors.into_iter().map(Some)).collect(),
            None => outcome.records.into_iter().map(|r| (r, None)).collect(),
        };
        let now = self.store().now();
        let mut tx = self.store().begin().await?;
        let version = rdb::insert_in(&mut tx, &rows, model.as_deref(), Some(&run.sources())).await?;
        for (old, successor) in &outcome.superseded {
            xdb::supersede(&mut tx, run.memory_id, old, successor, now).await?;
        }
        xdb::clear_pending(&mut tx, seqs).await?;
        for job in jobs {
            xdb::save_job(&mut tx, job).await?;
        }
        if let Some(job_id) = done_job {
            xdb::delete_job(&mut tx, job_id).await?;
        }
        tx.commit().await.map_err(berth_store::StoreError::from)?;
        if let Some(version) = version {
            self.vector_index().apply(run.memory_id, version, |index| {
                for (old, _) in &outcome.superseded {
                    index.remove(old);
                }
                for (row, vector) in &rows {
                    if let Some(vector) = vector {
                        index.push(crate::vector_index::Entry::of(row), vector);
                    }
                }
            });
        }
        if !rows.is_empty() {
            tracing::info!(
                memory_id = run.memory_id,
                records = rows.len(),
                "memory records extracted"
            );
        }
        Ok(())
    }

    fn new_record(&self, plan: &Plan, run: &Run<'_>, namespace: &str, content: String) -> RecordRow {
        let now = self.store().now();
        RecordRow {
            record_id: format!("mem-{}", ids::request_id()),
            memory_id: run.memory_id.to_string(),
            strategy_id: plan.strategy_id.clone(),
            namespace: namespace.to_string(),
            content,
            metadata: None,
            record_time: run.record_time,
            created_at: now,
            updated_at: now,
            expires_at: plan.expiry_days.map(|days| now + days * 86_400_000),
        }
    }

    fn scope(&self, run: &Run<'_>, plan: &Plan, namespace: &str) -> Scope {
        Scope {
            memory_id: run.memory_id.to_string(),
            namespace: NamespaceMatch::Prefix(namespace.to_string()),
            strategy_id: Some(plan.strategy_id.clone()),
            now: self.store().now(),
        }
    }

    /// Runs one strategy over a run of turns. Errors are reasons for the failed job.
    async fn run_plan(&self, plan: &Plan, run: &Run<'_>) -> std::result::Result<Outcome, String> {
        let namespace = strategy::resolve_namespace(
            &plan.namespace_template,
            run.actor_id,
            run.session_id,
            &plan.strategy_id,
            &run.variables,
        )?;
        let models = self.models();
        let step = strategy::step_model(models, &plan.extraction)?;
        let conversation = transcript(&run.turns);
        let user_text: String = run
            .turns
            .iter()
            .filter(|t| t.role == "USER")
            .map(|t| format!("{}\n", t.text))
            .collect();
        let mut outcome = Outcome::default();
        let stored_error = |e: berth_store::StoreError| format!("reading stored records: {e}");
        match plan.pipeline {
            Pipeline::Semantic | Pipeline::UserPreference => {
                let candidates = strategy::extract(&step, plan, &conversation, &user_text, None).await?;
                let consolidation = strategy::step_model(models, &plan.consolidation)?;
                self.consolidate(
                    plan,
                    run,
                    &namespace,
                    candidates,
                    &consolidation,
                    &plan.consolidation,
                    &mut outcome,
                )
                .await?;
            }
            Pipeline::Summary => {
                let previous = rdb::list(self.store(), &self.scope(run, plan, &namespace), None, 1)
                    .await
                    .map_err(stored_error)?
                    .pop();
                let summary = strategy::extract(
                    &step,
                    plan,
                    &conversation,
                    &user_text,
                    previous.as_ref().map(|r| r.content.as_str()),
                )
                .await?;
                if let Some(text) = summary.into_iter().next() {
                    let record = self.new_record(plan, run, &namespace, text);
                    if let Some(previous) = previous {
                        outcome.superseded.push((previous.record_id, record.record_id.clone()));
                    }
                    outcome.records.push(record);
                }
            }
            Pipeline::Episodic => {
                let episodes = strategy::extract(&step, plan, &conversation, &user_text, None).await?;
                let Some(episode) = episodes.into_iter().next() else {
                    return Ok(outcome);
                };
                let earlier = rdb::list(
                    self.store(),
                    &self.scope(run, plan, &namespace),
                    None,
                    REFLECTION_EPISODES,
                )
                .await
                .map_err(stored_error)?;
                outcome
                    .records
                    .push(self.new_record(plan, run, &namespace, episode.clone()));
                if let Some((template, how)) = &plan.reflection {
                    let reflection_namespace = strategy::resolve_namespace(
                        template,
                        run.actor_id,
                        run.session_id,
                        &plan.strategy_id,
                        &run.variables,
                    )?;
                    let mut all: Vec<String> = earlier.into_iter().rev().map(|r| r.content).collect();
                    all.push(episode);
                    let reflect_step = strategy::step_model(models, how)?;
                    let lessons = strategy::reflect(&reflect_step, how, &all).await?;
                    let consolidation = strategy::step_model(models, &plan.consolidation)?;
                    self.consolidate(
                        plan,
                        run,
                        &reflection_namespace,
                        lessons,
                        &consolidation,
                        &plan.consolidation,
                        &mut outcome,
                    )
                    .await?;
                }
            }
        }
        self.fill_metadata(plan, run, &step, &conversation, &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// Gives each new record the metadata its strategy's `memoryRecordSchema` asks for.
    async fn fill_metadata(
        &self,
        plan: &Plan,
        run: &Run<'_>,
        step: &StepModel,
        conversation: &str,
        outcome: &mut Outcome,
    ) -> std::result::Result<(), String> {
        if plan.metadata.is_empty() {
            return Ok(());
        }
        let inferred: Vec<&metadata::Field> = plan.metadata.iter().filter(|f| !f.strict).collect();
        for record in &mut outcome.records {
            let answer = if inferred.is_empty() {
                None
            } else {
                let user = metadata::request(&inferred, &record.content, conversation);
                let schema = metadata::schema(&inferred);
                Some(strategy::ask(step, metadata::PROMPT, &plan.extraction, user, "metadata", schema, 120).await?)
            };
            record.metadata = metadata::record_metadata(&plan.metadata, answer.as_ref(), &run.event_metadata);
        }
        Ok(())
    }

    /// Adds each candidate, merges it into a similar stored record (the old one is kept,
    /// superseded), or drops it as already known.
    #[allow(clippy::too_many_arguments)]
    async fn consolidate(
        &self,
        plan: &Plan,
        run: &Run<'_>,
        namespace: &str,
        candidates: Vec<String>,
        step: &StepModel,
        how: &Override,
        outcome: &mut Outcome,
    ) -> std::result::Result<(), String> {
        let mut seen = HashSet::new();
        let candidates: Vec<String> = candidates.into_iter().filter(|c| seen.insert(normalized(c))).collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let scope = self.scope(run, plan, namespace);
        let vectors = self
            .embed(candidates.clone())
            .await
            .map_err(|e| format!("embedding: {e}"))?;
        // Stored records with vectors, plus those this run adds.
        let mut known: Vec<Known> = Vec::new();
        if let (Some(_), Some(embedder)) = (&vectors, self.embedder()) {
            let stored = rdb::vectors(self.store(), &scope, embedder.name())
                .await
                .map_err(|e| e.to_string())?;
            let ids: Vec<String> = stored.iter().map(|(id, _)| id.clone()).collect();
            let contents = rdb::by_ids(self.store(), run.memory_id, &ids)
                .await
                .map_err(|e| e.to_string())?;
            for (id, vector) in stored {
                if let Some(row) = contents.iter().find(|r| r.record_id == id) {
                    known.push(Known {
                        id,
                        content: row.content.clone(),
                        vector,
                    });
                }
            }
        }
        let mut added: Vec<usize> = Vec::new();
        for (i, candidate) in candidates.into_iter().enumerate() {
            let neighbours: Vec<(String, String)> = match &vectors {
                Some(vectors) => {
                    let mut scored: Vec<(f32, &Known)> = known
                        .iter()
                        .map(|k| (dot(&vectors[i], &k.vector), k))
                        .filter(|(s, _)| *s >= NEIGHBOUR_SIMILARITY)
                        .collect();
                    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                    scored
                        .into_iter()
                        .take(NEIGHBOURS)
                        .map(|(_, k)| (k.id.clone(), k.content.clone()))
                        .collect()
                }
                None => {
                    let ids = rdb::lexical(self.store(), &scope, &candidate, NEIGHBOURS as i64)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut rows = rdb::by_ids(self.store(), run.memory_id, &ids)
                        .await
                        .map_err(|e| e.to_string())?;
                    rows.sort_by_key(|r| ids.iter().position(|id| *id == r.record_id));
                    let mut found: Vec<(String, String)> = rows.into_iter().map(|r| (r.record_id, r.content)).collect();
                    found.extend(
                        added
                            .iter()
                            .map(|&a| (outcome.records[a].record_id.clone(), outcome.records[a].content.clone())),
                    );
                    found
                }
            };
            let wanted = normalized(&candidate);
            if neighbours.iter().any(|(_, content)| normalized(content) == wanted) {
                continue;
            }
            let (text, replaces) = if neighbours.is_empty() {
                (candidate, None)
            } else {
                let listing: Vec<String> = neighbours
                    .iter()
                    .enumerate()
                    .map(|(n, (_, c))| format!("{}. {c}", n + 1))
                    .collect();
                let user = format!("Existing memories:\n{}\n\nNew memory: {candidate}", listing.join("\n"));
                let answer = strategy::ask(
                    step,
                    CONSOLIDATION_PROMPT,
                    how,
                    user,
                    "decision",
                    strategy::consolidation_schema(),
                    120,
                )
                .await?;
                let merged = answer
                    .get("memory")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|t| !t.is_empty());
                let target = answer
                    .get("existing")
                    .and_then(Value::as_u64)
                    .and_then(|n| neighbours.get((n as usize).checked_sub(1)?));
                match (answer.get("action").and_then(Value::as_str), target) {
                    (Some("NOOP"), _) => continue,
                    (Some("UPDATE"), Some((id, _))) => {
                        (merged.map_or(candidate.clone(), String::from), Some(id.clone()))
                    }
                    _ => (candidate, None),
                }
            };
            let record = self.new_record(plan, run, namespace, text);
            if let Some(old) = replaces {
                // A record this run added is replaced in place; a stored one is superseded.
                match outcome.records.iter().position(|r| r.record_id == old) {
                    Some(position) => {
                        outcome.records[position].content = record.content.clone();
                        continue;
                    }
                    None => outcome.superseded.push((old, record.record_id.clone())),
                }
            }
            if let Some(vectors) = &vectors {
                known.push(Known {
                    id: record.record_id.clone(),
                    content: record.content.clone(),
                    vector: vectors[i].clone(),
                });
            }
            added.push(outcome.records.len());
            outcome.records.push(record);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_keep_the_end_of_long_runs() {
        let turn = |text: &str| Turn {
            event_id: "e".into(),
            index: 0,
            role: "USER".into(),
            text: text.into(),
        };
        assert_eq!(transcript(&[turn("hi"), turn(" there ")]), "user: hi\nuser: there");
        let long = transcript(&[turn(&"a".repeat(10_000)), turn("last")]);
        assert!(long.ends_with("user: last") && long.chars().count() <= MAX_TRANSCRIPT_CHARS + 1);
    }

    #[test]
    fn only_conversational_text_is_extracted() {
        let event = SourceEvent {
            seq: 1,
            event_id: "e1".into(),
            event_time: 0,
            payload: r#"[{"blob": "x"}, {"conversational": {"role": "USER", "content": {"text": "I like tea"}}}, {"conversational": {"role": "ASSISTANT", "content": {"text": " "}}}]"#.into(),
            namespace_variables: None,
            metadata: None,
        };
        let found = turns(&[event]);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].index, found[0].text.as_str()), (1, "I like tea"));
    }

    #[test]
    fn namespace_variables_are_checked_against_the_keys() {
        let attributes: Map<String, Value> = serde_json::from_value(json!({"namespaceKeys": [
            {"key": "tenant", "validation": {"allowedValues": ["acme", "globex"]}},
            {"key": "region", "validation": {"regexPattern": "[a-z]{2}-[0-9]"}}
        ]}))
        .expect("map");
        assert!(check_namespace_variables(&attributes, &json!({"tenant": "acme", "region": "eu-1"})).is_ok());
        for (bad, message) in [
            (json!({"team": "x"}), "not one of the memory's namespaceKeys"),
            (json!({"tenant": "initech"}), "not an allowed value"),
            (json!({"region": "eu-1x"}), "does not match"),
        ] {
            let error = check_namespace_variables(&attributes, &bad)
                .expect_err("refused")
                .to_string();
            assert!(error.contains(message), "{error}");
        }
    }
}
