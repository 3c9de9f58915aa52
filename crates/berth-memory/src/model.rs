//! Request and response types, named after the AgentCore operations. Inputs arrive already
//! validated against the service model by the wire layer; deep unions whose structure Berth only
//! stores and echoes (strategy configurations, record schemas) stay JSON values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub type Document = Value;

// ---- control plane -------------------------------------------------------------------------

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateMemoryInput {
    pub name: String,
    pub description: Option<String>,
    pub encryption_key_arn: Option<String>,
    pub memory_execution_role_arn: Option<String>,
    pub event_expiry_duration: i64,
    #[serde(default)]
    pub memory_strategies: Vec<Document>,
    pub indexed_keys: Option<Vec<Document>>,
    pub namespace_keys: Option<Vec<Document>>,
    pub stream_delivery_resources: Option<Document>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub client_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryIdInput {
    pub memory_id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModifyMemoryStrategies {
    #[serde(default)]
    pub add_memory_strategies: Vec<Document>,
    #[serde(default)]
    pub modify_memory_strategies: Vec<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub delete_memory_strategies: Vec<DeleteMemoryStrategyInput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteMemoryStrategyInput {
    pub memory_strategy_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMemoryInput {
    pub memory_id: String,
    pub description: Option<String>,
    pub event_expiry_duration: Option<i64>,
    pub memory_execution_role_arn: Option<String>,
    pub memory_strategies: Option<ModifyMemoryStrategies>,
    pub add_indexed_keys: Option<Vec<Document>>,
    pub namespace_keys: Option<Vec<Document>>,
    pub stream_delivery_resources: Option<Document>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMemoriesInput {
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

/// A memory as the API returns it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub arn: String,
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub attributes: serde_json::Map<String, Value>,
    pub event_expiry_duration: i64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    pub strategies: Vec<Document>,
}

#[derive(Debug, Serialize)]
pub struct MemoryOutput {
    pub memory: Memory,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteMemoryOutput {
    pub memory_id: String,
    pub status: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemorySummary {
    pub arn: String,
    pub id: String,
    pub status: String,
    pub created_at: f64,
    pub updated_at: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMemoriesOutput {
    pub memories: Vec<MemorySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

// ---- data plane ----------------------------------------------------------------------------

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Branch {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_event_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventInput {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: Option<String>,
    /// Epoch seconds; boto3 sends a float when the datetime has sub-second precision.
    pub event_timestamp: f64,
    pub payload: Vec<Document>,
    pub branch: Option<Branch>,
    pub metadata: Option<BTreeMap<String, MetadataValue>>,
    pub extraction_mode: Option<String>,
    pub extraction_config: Option<Document>,
}

/// `MetadataValue`: a union with one member today.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataValue {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
}

/// An event as the API returns it. Payload and metadata are passed through as stored.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub event_id: String,
    pub event_timestamp: f64,
    pub payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<Branch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<RawValue>>,
}

#[derive(Debug, Serialize)]
pub struct EventOutput {
    pub event: Event,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventKeyInput {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub event_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteEventOutput {
    pub event_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchFilter {
    pub name: String,
    #[serde(default)]
    pub include_parent_branches: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataFilter {
    pub left: MetadataLeft,
    pub operator: String,
    pub right: Option<MetadataRight>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataLeft {
    pub metadata_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataRight {
    pub metadata_value: MetadataValue,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    pub branch: Option<BranchFilter>,
    #[serde(default)]
    pub event_metadata: Vec<MetadataFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEventsInput {
    pub memory_id: String,
    pub actor_id: String,
    pub session_id: String,
    pub include_payloads: Option<bool>,
    pub filter: Option<EventFilter>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListEventsOutput {
    pub events: Vec<Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListActorsInput {
    pub memory_id: String,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorSummary {
    pub actor_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListActorsOutput {
    pub actor_summaries: Vec<ActorSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionFilter {
    pub event_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSessionsInput {
    pub memory_id: String,
    pub actor_id: String,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
    pub filter: Option<SessionFilter>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    pub session_id: String,
    pub actor_id: String,
    pub created_at: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSessionsOutput {
    pub session_summaries: Vec<SessionSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}
