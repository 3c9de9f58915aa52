//! The extraction operations of the data plane: StartMemoryExtractionJob and
//! ListMemoryExtractionJobs over failed extractions, and IngestData.

use berth_core::{Caller, PageToken, Timestamp, ids};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{MemoryError, Result};
use crate::model::{CreateEventInput, Document, MetadataValue};
use crate::service::MemoryService;
use crate::store::extraction::{self as xdb, JobFilter};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMemoryExtractionJobInput {
    pub memory_id: String,
    pub extraction_job: ExtractionJob,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractionJob {
    pub job_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMemoryExtractionJobOutput {
    pub job_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMemoryExtractionJobsInput {
    pub memory_id: String,
    pub max_results: Option<i64>,
    pub filter: Option<ExtractionJobFilter>,
    pub next_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractionJobFilter {
    pub strategy_id: Option<String>,
    pub session_id: Option<String>,
    pub actor_id: Option<String>,
    /// Only `FAILED` exists: every listed job failed.
    pub status: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMemoryExtractionJobsOutput {
    pub jobs: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestDataInput {
    pub memory_id: String,
    pub source: Document,
    pub content_timestamp: f64,
    pub actor_id: String,
    pub session_id: Option<String>,
    pub extraction_config: Option<Document>,
    pub metadata: Option<std::collections::BTreeMap<String, MetadataValue>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestDataOutput {
    pub session_id: String,
}

impl MemoryService {
    /// Re-drives a failed extraction now.
    pub async fn start_memory_extraction_job(
        &self,
        caller: &Caller,
        input: StartMemoryExtractionJobInput,
    ) -> Result<StartMemoryExtractionJobOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let job_id = input.extraction_job.job_id;
        let Some(mut job) = xdb::get_job(self.store(), &memory.memory_id, &job_id).await? else {
            return Err(MemoryError::JobNotFound(job_id));
        };
        let now = self.store().now();
        job.next_attempt_at = Some(now);
        job.updated_at = now;
        let mut tx = self.store().begin().await?;
        xdb::save_job(&mut tx, &job).await?;
        tx.commit().await.map_err(berth_store::StoreError::from)?;
        self.wake_extractor();
        Ok(StartMemoryExtractionJobOutput { job_id })
    }

    pub async fn list_memory_extraction_jobs(
        &self,
        caller: &Caller,
        input: ListMemoryExtractionJobsInput,
    ) -> Result<ListMemoryExtractionJobsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let filter = input.filter.unwrap_or_default();
        if filter.status.as_deref().is_some_and(|s| s != "FAILED") {
            return Err(MemoryError::invalid("filter.status", "status must be FAILED"));
        }
        let after = match &input.next_token {
            Some(token) => Some(PageToken::<(i64, String)>::decode("jobs", token).map_err(|_| MemoryError::BadToken)?),
            None => None,
        };
        let limit = input.max_results.unwrap_or(20).clamp(1, 50);
        let filter = JobFilter {
            strategy_id: filter.strategy_id,
            actor_id: filter.actor_id,
            session_id: filter.session_id,
        };
        let mut rows = xdb::list_jobs(self.store(), &memory.memory_id, &filter, after, limit + 1).await?;
        let next_token = (rows.len() as i64 > limit).then(|| {
            rows.truncate(limit as usize);
            let last = rows.last().expect("a full page has a last row");
            PageToken::encode("jobs", (last.created_at, last.job_id.clone()))
        });
        let jobs = rows
            .into_iter()
            .map(|job| {
                let messages: Value = serde_json::from_str(&job.messages).unwrap_or_else(|_| json!([]));
                json!({
                    "jobID": job.job_id,
                    "messages": {"messagesList": messages},
                    "status": "FAILED",
                    "failureReason": job.failure_reason,
                    "strategyId": job.strategy_id,
                    "sessionId": job.session_id,
                    "actorId": job.actor_id,
                })
            })
            .collect();
        Ok(ListMemoryExtractionJobsOutput { jobs, next_token })
    }

    /// Feeds inline content to long-term extraction. It is stored as a conversational event of
    /// the session (JSON content as a USER message holding its text), so it is extracted like
    /// any other turn and can be listed and deleted like one.
    pub async fn ingest_data(&self, caller: &Caller, input: IngestDataInput) -> Result<IngestDataOutput> {
        let items = input
            .source
            .pointer("/inline/payload")
            .and_then(Value::as_array)
            .filter(|items| !items.is_empty())
            .ok_or_else(|| {
                MemoryError::invalid(
                    "source.inline.payload",
                    "source needs inline.payload with 1 to 100 items",
                )
            })?;
        let mut payload = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(message) = item.get("conversational") {
                payload.push(json!({"conversational": message}));
            } else if let Some(content) = item.pointer("/json/content") {
                let text = match content {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                payload.push(json!({"conversational": {"role": "USER", "content": {"text": text}}}));
            } else {
                return Err(MemoryError::invalid(
                    format!("source.inline.payload[{i}]"),
                    "an item is either conversational or json",
                ));
            }
        }
        if Timestamp::from_epoch_seconds(input.content_timestamp).is_none() {
            return Err(MemoryError::invalid(
                "contentTimestamp",
                "contentTimestamp must be a time between 1970 and 9999",
            ));
        }
        let session_id = input.session_id.unwrap_or_else(|| ids::random_alphanumeric(32));
        let event = CreateEventInput {
            memory_id: input.memory_id,
            actor_id: input.actor_id,
            session_id: Some(session_id.clone()),
            event_timestamp: input.content_timestamp,
            payload,
            branch: None,
            metadata: input.metadata,
            extraction_mode: None,
            extraction_config: input.extraction_config,
        };
        self.create_event(caller, event).await?;
        Ok(IngestDataOutput { session_id })
    }
}
