//! Long-term memory records: BatchCreateMemoryRecords, BatchUpdateMemoryRecords, GetMemoryRecord,
//! DeleteMemoryRecord, BatchDeleteMemoryRecords, ListMemoryRecords and RetrieveMemoryRecords.
//!
//! Retrieval is hybrid: full-text matches (BM25 on SQLite, `ts_rank` on PostgreSQL) and, when an
//! embedder is configured, the nearest embeddings, each ranked within the namespace scope first
//! and then fused by reciprocal rank (a record high in both lists wins; neither score scale
//! needs calibrating against the other).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_core::{Caller, PageToken, Timestamp, ids};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{MemoryError, Result};
use crate::record_filters;
use crate::service::MemoryService;
use crate::store::records::{self as db, NamespaceMatch, RecordRow, Scope};
use crate::vector_index::{Entry, MemoryVectors};

/// Reciprocal-rank fusion's constant (the value of the original paper and most engines).
const RRF_K: f64 = 60.0;
/// How many candidates each retriever contributes per record asked for.
const CANDIDATES_PER_RESULT: usize = 4;
const DEFAULT_TOP_K: usize = 10;
const DAY_MILLIS: i64 = 86_400_000;
/// Candidates each retriever contributes when metadata filters will thin them out.
const FILTERED_CANDIDATES: usize = 1000;
/// Rows ListMemoryRecords reads at a time while it filters by metadata.
const LIST_RUN: i64 = 200;

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct MemoryContent {
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRecordCreateInput {
    pub request_identifier: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    pub content: MemoryContent,
    pub timestamp: f64,
    pub memory_strategy_id: Option<String>,
    pub metadata: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchCreateMemoryRecordsInput {
    pub memory_id: String,
    pub records: Vec<MemoryRecordCreateInput>,
    pub client_token: Option<String>,
    pub record_expiry_specification: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRecordOutput {
    pub memory_record_id: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_identifier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRecordsOutput {
    pub successful_records: Vec<MemoryRecordOutput>,
    pub failed_records: Vec<MemoryRecordOutput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRecordUpdateInput {
    pub memory_record_id: String,
    pub timestamp: f64,
    pub content: Option<MemoryContent>,
    pub namespaces: Option<Vec<String>>,
    pub memory_strategy_id: Option<String>,
    pub metadata: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchUpdateMemoryRecordsInput {
    pub memory_id: String,
    pub records: Vec<MemoryRecordUpdateInput>,
    pub record_expiry_specification: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRecordDeleteInput {
    pub memory_record_id: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchDeleteMemoryRecordsInput {
    pub memory_id: String,
    pub records: Vec<MemoryRecordDeleteInput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordKeyInput {
    pub memory_id: String,
    pub memory_record_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRecord {
    pub memory_record_id: String,
    pub content: MemoryContent,
    pub memory_strategy_id: String,
    pub namespaces: Vec<String>,
    pub created_at: f64,
    pub timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetMemoryRecordOutput {
    pub memory_record: MemoryRecord,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteMemoryRecordOutput {
    pub memory_record_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMemoryRecordsInput {
    pub memory_id: String,
    pub namespace: Option<String>,
    pub namespace_path: Option<String>,
    pub memory_strategy_id: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    pub metadata_filters: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchCriteria {
    pub search_query: String,
    pub memory_strategy_id: Option<String>,
    pub top_k: Option<i64>,
    pub metadata_filters: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrieveMemoryRecordsInput {
    pub memory_id: String,
    pub namespace: Option<String>,
    pub namespace_path: Option<String>,
    pub search_criteria: SearchCriteria,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRecordsOutput {
    pub memory_record_summaries: Vec<MemoryRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn summary(row: RecordRow, score: Option<f64>) -> MemoryRecord {
    MemoryRecord {
        memory_record_id: row.record_id,
        content: MemoryContent { text: row.content },
        memory_strategy_id: row.strategy_id,
        namespaces: vec![row.namespace],
        created_at: Timestamp(row.created_at).epoch_seconds(),
        timestamp: Timestamp(row.record_time).epoch_seconds(),
        metadata: row.metadata.and_then(|m| serde_json::from_str(&m).ok()),
        expires_at: row.expires_at.map(|t| Timestamp(t).epoch_seconds()),
        score,
    }
}

/// What a read covers: `namespace` (matched as a prefix, as AWS still does) or `namespacePath`.
fn scope(
    memory_id: &str,
    namespace: Option<String>,
    namespace_path: Option<String>,
    strategy_id: Option<String>,
    now: i64,
) -> Result<Scope> {
    let namespace = match (namespace, namespace_path) {
        (Some(prefix), None) => NamespaceMatch::Prefix(prefix),
        (None, Some(path)) => NamespaceMatch::Path(path),
        (Some(_), Some(_)) => {
            return Err(MemoryError::invalid(
                "namespace",
                "give namespace or namespacePath, not both",
            ));
        }
        (None, None) => {
            return Err(MemoryError::invalid(
                "namespace",
                "namespace or namespacePath is required",
            ));
        }
    };
    Ok(Scope {
        memory_id: memory_id.to_string(),
        namespace,
        strategy_id,
        now,
    })
}

/// Fuses rankings: each list adds 1/(k + rank) for the records it holds. Best first, scores
/// scaled so that first place in every list is 1.
fn fuse(rankings: &[Vec<String>]) -> Vec<(String, f64)> {
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for ranking in rankings {
        for (rank, id) in ranking.iter().enumerate() {
            *scores.entry(id).or_default() += 1.0 / (RRF_K + 1.0 + rank as f64);
        }
    }
    let best = rankings.iter().filter(|r| !r.is_empty()).count() as f64 / (RRF_K + 1.0);
    let mut fused: Vec<(String, f64)> = scores
        .into_iter()
        .map(|(id, score)| (id.to_string(), score / best))
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    fused
}

impl MemoryService {
    pub async fn batch_create_memory_records(
        &self,
        caller: &Caller,
        input: BatchCreateMemoryRecordsInput,
    ) -> Result<BatchRecordsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let now = self.store().now();
        let expires_at = expiry(input.record_expiry_specification.as_ref(), now)?.flatten();
        let strategies = self.strategy_ids(&memory.memory_id).await?;
        let (mut rows, mut failed) = (Vec::new(), Vec::new());
        for record in input.records {
            // `mem-` and a UUID: 40 characters, as AWS's record ids are.
            let record_id = format!("mem-{}", ids::request_id());
            let refuse = |message: String| MemoryRecordOutput {
                memory_record_id: record_id.clone(),
                status: "FAILED",
                request_identifier: Some(record.request_identifier.clone()),
                error_code: Some(400),
                error_message: Some(message),
            };
            let Some(namespace) = record.namespaces.first().cloned() else {
                failed.push(refuse("a record needs one namespace".into()));
                continue;
            };
            let Some(time) = Timestamp::from_epoch_seconds(record.timestamp) else {
                failed.push(refuse("timestamp must be a time between 1970 and 9999".into()));
                continue;
            };
            let strategy_id = record.memory_strategy_id.clone().unwrap_or_default();
            if !strategy_id.is_empty() && !strategies.contains(&strategy_id) {
                failed.push(refuse(format!(
                    "memory strategy `{strategy_id}` is not a strategy of this memory"
                )));
                continue;
            }
            rows.push((
                record.request_identifier.clone(),
                RecordRow {
                    record_id,
                    memory_id: memory.memory_id.clone(),
                    strategy_id,
                    namespace,
                    content: record.content.text,
                    metadata: record.metadata.map(|m| serde_json::to_string(&m).unwrap_or_default()),
                    record_time: time.millis(),
                    created_at: now,
                    updated_at: now,
                    expires_at,
                },
            ));
        }
        let texts: Vec<String> = rows.iter().map(|(_, row)| row.content.clone()).collect();
        let embeddings = self.embed(texts).await?;
        let model = self.embedder().map(|e| e.name().to_string());
        let stored: Vec<(RecordRow, Option<Vec<f32>>)> = match embeddings {
            Some(vectors) => rows
                .iter()
                .map(|(_, r)| r.clone())
                .zip(vectors.into_iter().map(Some))
                .collect(),
            None => rows.iter().map(|(_, r)| (r.clone(), None)).collect(),
        };
        let version = db::insert(self.store(), &stored, model.as_deref()).await?;
        self.vector_index().apply(&memory.memory_id, version, |index| {
            for (row, vector) in &stored {
                if let Some(vector) = vector {
                    index.push(Entry::of(row), vector);
                }
            }
        });
        let successful_records = rows
            .into_iter()
            .map(|(request_identifier, row)| MemoryRecordOutput {
                memory_record_id: row.record_id,
                status: "SUCCEEDED",
                request_identifier: Some(request_identifier),
                error_code: None,
                error_message: None,
            })
            .collect();
        Ok(BatchRecordsOutput {
            successful_records,
            failed_records: failed,
        })
    }

    pub async fn get_memory_record(&self, caller: &Caller, input: RecordKeyInput) -> Result<GetMemoryRecordOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let row = db::get(self.store(), &memory.memory_id, &input.memory_record_id)
            .await?
            .filter(|row| row.expires_at.is_none_or(|t| t > self.store().now()))
            .ok_or(MemoryError::RecordNotFound(input.memory_record_id))?;
        Ok(GetMemoryRecordOutput {
            memory_record: summary(row, None),
        })
    }

    pub async fn delete_memory_record(
        &self,
        caller: &Caller,
        input: RecordKeyInput,
    ) -> Result<DeleteMemoryRecordOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let Some(version) = db::delete(self.store(), &memory.memory_id, &input.memory_record_id).await? else {
            return Err(MemoryError::RecordNotFound(input.memory_record_id));
        };
        self.vector_index().apply(&memory.memory_id, version, |index| {
            index.remove(&input.memory_record_id)
        });
        Ok(DeleteMemoryRecordOutput {
            memory_record_id: input.memory_record_id,
        })
    }

    /// Rewrites the given fields of each record (re-embedding changed content); unknown records
    /// and invalid changes are reported per record.
    pub async fn batch_update_memory_records(
        &self,
        caller: &Caller,
        input: BatchUpdateMemoryRecordsInput,
    ) -> Result<BatchRecordsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let new_expiry = expiry(input.record_expiry_specification.as_ref(), self.store().now())?;
        let strategies = self.strategy_ids(&memory.memory_id).await?;
        let (mut successful_records, mut failed_records) = (Vec::new(), Vec::new());
        for update in input.records {
            let id = update.memory_record_id.clone();
            let fail = |code: i64, message: String| MemoryRecordOutput {
                memory_record_id: id.clone(),
                status: "FAILED",
                request_identifier: None,
                error_code: Some(code),
                error_message: Some(message),
            };
            let Some(mut row) = db::get(self.store(), &memory.memory_id, &id).await? else {
                failed_records.push(fail(404, "no such memory record".into()));
                continue;
            };
            let Some(time) = Timestamp::from_epoch_seconds(update.timestamp) else {
                failed_records.push(fail(400, "timestamp must be a time between 1970 and 9999".into()));
                continue;
            };
            if let Some(strategy_id) = update.memory_strategy_id {
                if !strategies.contains(&strategy_id) {
                    failed_records.push(fail(
                        400,
                        format!("memory strategy `{strategy_id}` is not a strategy of this memory"),
                    ));
                    continue;
                }
                row.strategy_id = strategy_id;
            }
            if let Some(namespace) = update.namespaces.and_then(|n| n.into_iter().next()) {
                row.namespace = namespace;
            }
            if let Some(metadata) = update.metadata {
                row.metadata = Some(serde_json::to_string(&metadata).unwrap_or_default());
            }
            let new_content = update.content.map(|c| c.text).filter(|text| *text != row.content);
            let embedding = match &new_content {
                Some(text) => self.embed(vec![text.clone()]).await?.and_then(|mut v| v.pop()),
                None => None,
            };
            if let Some(text) = new_content {
                row.content = text;
            }
            row.record_time = time.millis();
            row.updated_at = self.store().now();
            if let Some(expires_at) = new_expiry {
                row.expires_at = expires_at;
            }
            let model = self.embedder().map(|e| e.name().to_string()).unwrap_or_default();
            let embedding = embedding.as_deref().map(|vector| (vector, model.as_str()));
            if let Some(version) = db::update(self.store(), &row, embedding).await? {
                self.vector_index().apply(&memory.memory_id, version, |index| {
                    index.update(Entry::of(&row), embedding.map(|(vector, _)| vector));
                });
                successful_records.push(MemoryRecordOutput {
                    memory_record_id: id,
                    status: "SUCCEEDED",
                    request_identifier: None,
                    error_code: None,
                    error_message: None,
                });
            } else {
                failed_records.push(fail(404, "no such memory record".into()));
            }
        }
        Ok(BatchRecordsOutput {
            successful_records,
            failed_records,
        })
    }

    /// Deletes each record that exists; the others are reported as failed with 404.
    pub async fn batch_delete_memory_records(
        &self,
        caller: &Caller,
        input: BatchDeleteMemoryRecordsInput,
    ) -> Result<BatchRecordsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let (mut successful_records, mut failed_records) = (Vec::new(), Vec::new());
        for record in input.records {
            let version = db::delete(self.store(), &memory.memory_id, &record.memory_record_id).await?;
            if let Some(version) = version {
                self.vector_index().apply(&memory.memory_id, version, |index| {
                    index.remove(&record.memory_record_id)
                });
            }
            let deleted = version.is_some();
            let outcome = MemoryRecordOutput {
                memory_record_id: record.memory_record_id,
                status: if deleted { "SUCCEEDED" } else { "FAILED" },
                request_identifier: None,
                error_code: (!deleted).then_some(404),
                error_message: (!deleted).then(|| "no such memory record".to_string()),
            };
            if deleted {
                successful_records.push(outcome);
            } else {
                failed_records.push(outcome);
            }
        }
        Ok(BatchRecordsOutput {
            successful_records,
            failed_records,
        })
    }

    pub async fn list_memory_records(
        &self,
        caller: &Caller,
        input: ListMemoryRecordsInput,
    ) -> Result<MemoryRecordsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let filters = record_filters::parse(
            input.metadata_filters.as_deref().unwrap_or_default(),
            memory.attributes.get("indexedKeys"),
            "metadataFilters",
        )?;
        let scope = scope(
            &memory.memory_id,
            input.namespace,
            input.namespace_path,
            input.memory_strategy_id,
            self.store().now(),
        )?;
        let mut after = match &input.next_token {
            Some(token) => {
                Some(PageToken::<(i64, String)>::decode("records", token).map_err(|_| MemoryError::BadToken)?)
            }
            None => None,
        };
        let limit = input.max_results.unwrap_or(20).clamp(1, 100) as usize;
        // Rows are read in runs and filtered here until a page (and one more, to know whether
        // another page follows) matches or the scope runs out.
        let mut rows = Vec::new();
        while rows.len() <= limit {
            let run = db::list(self.store(), &scope, after.clone(), LIST_RUN).await?;
            let exhausted = (run.len() as i64) < LIST_RUN;
            if let Some(last) = run.last() {
                after = Some((last.created_at, last.record_id.clone()));
            }
            rows.extend(
                run.into_iter()
                    .filter(|row| record_filters::matches(&filters, parsed_metadata(row).as_ref())),
            );
            if exhausted {
                break;
            }
        }
        let next_token = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            let last = rows.last().expect("a full page has a last row");
            PageToken::encode("records", (last.created_at, last.record_id.clone()))
        });
        Ok(MemoryRecordsOutput {
            memory_record_summaries: rows.into_iter().map(|row| summary(row, None)).collect(),
            next_token,
        })
    }

    pub async fn retrieve_memory_records(
        &self,
        caller: &Caller,
        input: RetrieveMemoryRecordsInput,
    ) -> Result<MemoryRecordsOutput> {
        let memory = self.memory_of(caller, &input.memory_id, false).await?;
        let criteria = input.search_criteria;
        let filters = record_filters::parse(
            criteria.metadata_filters.as_deref().unwrap_or_default(),
            memory.attributes.get("indexedKeys"),
            "searchCriteria.metadataFilters",
        )?;
        let scope = scope(
            &memory.memory_id,
            input.namespace,
            input.namespace_path,
            criteria.memory_strategy_id,
            self.store().now(),
        )?;
        let top_k = criteria.top_k.map_or(DEFAULT_TOP_K, |k| k.clamp(1, 100) as usize);
        // Filters apply to the candidates, so filtered searches rank a wider pool.
        let candidates = if filters.is_empty() {
            top_k * CANDIDATES_PER_RESULT
        } else {
            FILTERED_CANDIDATES
        };
        let mode = self.retrieval_mode();
        // The two rankings run at once: full text waits on the database, dense search on the
        // embedder and a scan of the memory's vectors.
        let lexical = async {
            if mode == RetrievalMode::Dense {
                return Ok(None);
            }
            db::lexical(self.store(), &scope, &criteria.search_query, candidates as i64)
                .await
                .map(Some)
                .map_err(MemoryError::from)
        };
        let dense = async {
            let Some(embedder) = self.embedder().filter(|_| mode != RetrievalMode::Lexical) else {
                return Ok(None);
            };
            let Some(query) = self.embed(vec![criteria.search_query.clone()]).await? else {
                return Ok(None);
            };
            let vectors = self.memory_vectors(&memory.memory_id, embedder.name()).await?;
            let nearest = vectors.nearest(&scope, &query[0], candidates);
            Ok::<_, MemoryError>(Some(nearest.into_iter().map(|(id, _)| id).collect::<Vec<_>>()))
        };
        let (lexical, dense) = tokio::join!(lexical, dense);
        let rankings: Vec<Vec<String>> = [lexical?, dense?].into_iter().flatten().collect();
        // Every candidate's row, so that metadata filters apply before topK cuts the list.
        let fused = fuse(&rankings);
        let ids: Vec<String> = fused.iter().map(|(id, _)| id.clone()).collect();
        let mut rows: HashMap<String, RecordRow> = db::by_ids(self.store(), &memory.memory_id, &ids)
            .await?
            .into_iter()
            .map(|row| (row.record_id.clone(), row))
            .collect();
        let ranked: Vec<MemoryRecord> = fused
            .into_iter()
            .filter_map(|(id, score)| rows.remove(&id).map(|row| (row, score)))
            .filter(|(row, _)| record_filters::matches(&filters, parsed_metadata(row).as_ref()))
            .take(top_k)
            .map(|(row, score)| summary(row, Some(score)))
            .collect();
        // topK bounds the ranked set; maxResults pages through it.
        let offset = match &input.next_token {
            Some(token) => PageToken::<usize>::decode("retrieve", token).map_err(|_| MemoryError::BadToken)?,
            None => 0,
        };
        let limit = input.max_results.unwrap_or(20).clamp(1, 100) as usize;
        let next_token = (offset + limit < ranked.len()).then(|| PageToken::encode("retrieve", offset + limit));
        Ok(MemoryRecordsOutput {
            memory_record_summaries: ranked.into_iter().skip(offset).take(limit).collect(),
            next_token,
        })
    }

    /// The memory's embeddings of `model`, from the in-memory index when it is current.
    pub(crate) async fn memory_vectors(&self, memory_id: &str, model: &str) -> Result<Arc<MemoryVectors>> {
        // The version is read before the vectors: a change between the two reads leaves the
        // entry behind its data's version, which costs a reload, never a stale answer.
        let version = db::version(self.store(), memory_id).await?;
        if let Some(current) = self.vector_index().current(memory_id, model, version) {
            return Ok(current);
        }
        let mut vectors = MemoryVectors {
            version,
            model: model.to_string(),
            ..MemoryVectors::default()
        };
        for (row, vector) in db::all_vectors(self.store(), memory_id, model).await? {
            vectors.push(Entry::of(&row), &vector);
        }
        Ok(self.vector_index().insert(memory_id, vectors))
    }

    /// Deletes records whose `recordExpirySpecification` has run out. Returns how many went.
    pub async fn sweep_expired_records(&self) -> Result<u64> {
        Ok(db::sweep_expired(self.store(), self.store().now()).await?)
    }

    /// Embeds with the configured embedder; `None` when there is none.
    pub(crate) async fn embed(&self, texts: Vec<String>) -> Result<Option<Vec<Vec<f32>>>> {
        match self.embedder() {
            Some(embedder) if !texts.is_empty() => embedder
                .embed(texts)
                .await
                .map(Some)
                .map_err(|e| MemoryError::Model(e.to_string())),
            _ => Ok(None),
        }
    }
}

/// Which rankings RetrieveMemoryRecords fuses. Hybrid is what Berth serves; the others exist to
/// measure each half (`berth-bench --quality`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetrievalMode {
    #[default]
    Hybrid,
    Lexical,
    Dense,
}

/// What `recordExpirySpecification` asks of the records it comes with: `None` to leave their
/// expiry as it is, `Some(None)` for none (`action: REMOVE`), `Some(Some(t))` to expire at `t`
/// (`recordExpiryDurationDays` from now; the model requires at least 31).
fn expiry(specification: Option<&Value>, now: i64) -> Result<Option<Option<i64>>> {
    let Some(specification) = specification else {
        return Ok(None);
    };
    if let Some(days) = specification.get("recordExpiryDurationDays").and_then(Value::as_i64) {
        return Ok(Some(Some(now.saturating_add(days.saturating_mul(DAY_MILLIS)))));
    }
    if specification.get("action").and_then(Value::as_str) == Some("REMOVE") {
        return Ok(Some(None));
    }
    Err(MemoryError::invalid(
        "recordExpirySpecification",
        "give recordExpiryDurationDays or action REMOVE",
    ))
}

/// A record's metadata map, parsed.
fn parsed_metadata(row: &RecordRow) -> Option<Value> {
    row.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_puts_records_high_in_both_rankings_first_and_scales_scores_to_one() {
        let lexical = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let dense = vec!["b".to_string(), "a".to_string(), "d".to_string()];
        let fused = fuse(&[lexical.clone(), dense]);
        let order: Vec<&str> = fused.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert!(fused.iter().all(|(_, s)| *s > 0.0 && *s <= 1.0));
        let alone = fuse(&[lexical, Vec::new()]);
        assert!((alone[0].1 - 1.0).abs() < 1e-12, "first of the only ranking scores 1");
    }
}
