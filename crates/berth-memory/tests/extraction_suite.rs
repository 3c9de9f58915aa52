//! Long-term extraction on SQLite and (with `BERTH_TEST_POSTGRES_URL`) PostgreSQL, with the
//! OpenAI-compatible provider talking to a real local HTTP server whose answers each test
//! scripts: consolidation that supersedes a record, failures that become jobs (invalid JSON, an
//! empty answer, a timeout) and are re-driven, and events that survive a restart.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly on setup errors")]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use berth_core::SystemClock;
use berth_memory::extraction::api::{ListMemoryExtractionJobsInput, StartMemoryExtractionJobInput};
use berth_memory::records::*;
use berth_memory::{ExtractionSettings, MemoryService};
use berth_models::{HttpSettings, Models, OpenAi, OpenAiSettings};
use berth_store::Store;
use berth_store::sqlx::{self, Row};
use berth_store::testing::stores;
use parking_lot::Mutex;
use serde_json::{Value, json};

mod common;
use common::{active_memory, caller};

/// What the model server answers for each schema name: the message content, or `None` to
/// wait two seconds first (longer than the provider's timeout).
type Script = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn chat(State(script): State<Script>, body: String) -> axum::Json<Value> {
    let request: Value = serde_json::from_str(&body).unwrap();
    let name = request["response_format"]["json_schema"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let answer = script.lock().iter().find(|(n, _)| *n == name).map(|(_, a)| a.clone());
    let content = match answer {
        Some(Some(content)) => {
            // Slow enough that two extractors running at once overlap.
            tokio::time::sleep(Duration::from_millis(100)).await;
            content
        }
        Some(None) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            String::new()
        }
        None => panic!("no scripted answer for {name}"),
    };
    axum::Json(
        json!({"choices": [{"message": {"content": content}}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
    )
}

async fn model_server(script: Script) -> String {
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn set(script: &Script, name: &str, answer: Option<Value>) {
    let mut script = script.lock();
    script.retain(|(n, _)| n != name);
    script.push((
        name.to_string(),
        Some(answer.map_or_else(|| "not json at all".to_string(), |v| v.to_string())),
    ));
}

fn service(store: &Store, url: &str) -> (MemoryService, berth_store::jobs::Worker) {
    let chat = OpenAi::new(
        "test",
        OpenAiSettings {
            base_url: url.to_string(),
            chat_model: "m".into(),
            embedding_model: None,
            api_key: None,
            http: HttpSettings {
                timeout: Duration::from_secs(1),
                max_retries: 0,
                ..HttpSettings::default()
            },
        },
    )
    .unwrap();
    let settings = ExtractionSettings {
        batch_delay: Duration::ZERO,
        retry_delay: Duration::from_secs(3600),
        ..ExtractionSettings::default()
    };
    let mut worker = berth_store::jobs::Worker::new(store.clone());
    let mut memory = MemoryService::new(store.clone(), "us-east-1")
        .with_models(Models::with(Some(Arc::new(chat)), None))
        .with_extraction_settings(settings);
    memory.attach_worker(&mut worker);
    (memory, worker)
}

async fn say(memory: &MemoryService, memory_id: &str, session: &str, text: &str) -> String {
    let input = serde_json::from_value(json!({
        "memoryId": memory_id, "actorId": "u1", "sessionId": session, "eventTimestamp": 1_700_000_000.0,
        "payload": [{"conversational": {"role": "USER", "content": {"text": text}}}]
    }))
    .unwrap();
    memory
        .create_event(&caller("111111111111"), input)
        .await
        .unwrap()
        .event
        .event_id
}

async fn facts(memory: &MemoryService, memory_id: &str) -> Vec<MemoryRecord> {
    let input: ListMemoryRecordsInput =
        serde_json::from_value(json!({"memoryId": memory_id, "namespacePath": "/strategies/"})).unwrap();
    memory
        .list_memory_records(&caller("111111111111"), input)
        .await
        .unwrap()
        .memory_record_summaries
}

async fn jobs(memory: &MemoryService, memory_id: &str) -> Vec<Value> {
    let input: ListMemoryExtractionJobsInput = serde_json::from_value(json!({"memoryId": memory_id})).unwrap();
    memory
        .list_memory_extraction_jobs(&caller("111111111111"), input)
        .await
        .unwrap()
        .jobs
}

#[tokio::test]
async fn consolidation_supersedes_instead_of_deleting() {
    let script = Script::default();
    let url = model_server(script.clone()).await;
    for test_store in stores(Arc::new(SystemClock)).await {
        let store = test_store.store.clone();
        let (memory, worker) = service(&store, &url);
        let memory_id = active_memory(&memory, &worker, &caller("111111111111"), "consolidate").await;
        set(
            &script,
            "memories",
            Some(json!({"memories": ["The user lives in Lisbon."]})),
        );
        let first_event = say(&memory, &memory_id, "s1", "I live in Lisbon.").await;
        memory.extract_due().await.unwrap();
        let first = facts(&memory, &memory_id).await;
        assert_eq!(first.len(), 1, "{}", store.backend().name());

        set(
            &script,
            "memories",
            Some(json!({"memories": ["The user lives in Porto."]})),
        );
        set(
            &script,
            "decision",
            Some(
                json!({"action": "UPDATE", "existing": 1, "memory": "The user lives in Porto, having moved from Lisbon."}),
            ),
        );
        let second_event = say(&memory, &memory_id, "s2", "I moved to Porto.").await;
        memory.extract_due().await.unwrap();
        let now = facts(&memory, &memory_id).await;
        assert_eq!(now.len(), 1);
        assert_eq!(
            now[0].content.text,
            "The user lives in Porto, having moved from Lisbon."
        );

        // The old record is kept, marked with its end and successor; each knows its events.
        let row =
            sqlx::query("SELECT superseded_by, valid_until, source_event_ids FROM memory_records WHERE record_id = $1")
                .bind(&first[0].memory_record_id)
                .fetch_one(store.reader())
                .await
                .unwrap();
        assert_eq!(
            row.try_get::<Option<String>, _>("superseded_by").unwrap().as_deref(),
            Some(now[0].memory_record_id.as_str())
        );
        assert!(row.try_get::<Option<i64>, _>("valid_until").unwrap().is_some());
        assert_eq!(
            row.try_get::<String, _>("source_event_ids").unwrap(),
            json!([first_event]).to_string()
        );
        let successor: String = sqlx::query("SELECT source_event_ids FROM memory_records WHERE record_id = $1")
            .bind(&now[0].memory_record_id)
            .fetch_one(store.reader())
            .await
            .unwrap()
            .try_get("source_event_ids")
            .unwrap();
        assert_eq!(successor, json!([second_event]).to_string());
        // Still readable by id, for audit.
        let input = serde_json::from_value(json!({"memoryId": memory_id, "memoryRecordId": first[0].memory_record_id}))
            .unwrap();
        assert!(memory.get_memory_record(&caller("111111111111"), input).await.is_ok());

        // A NOOP and an exact repeat add nothing.
        set(
            &script,
            "decision",
            Some(json!({"action": "NOOP", "existing": 1, "memory": ""})),
        );
        set(
            &script,
            "memories",
            Some(
                json!({"memories": ["The user lives in Porto now.", "The user lives in Porto, having moved from Lisbon."]}),
            ),
        );
        say(
            &memory,
            &memory_id,
            "s3",
            "Yes, I live in Porto now, I moved from Lisbon.",
        )
        .await;
        memory.extract_due().await.unwrap();
        assert_eq!(facts(&memory, &memory_id).await.len(), 1);
    }
}

#[tokio::test]
async fn failed_extractions_become_jobs_and_lose_no_event() {
    let script = Script::default();
    let url = model_server(script.clone()).await;
    for test_store in stores(Arc::new(SystemClock)).await {
        let store = test_store.store.clone();
        let (memory, worker) = service(&store, &url);
        let memory_id = active_memory(&memory, &worker, &caller("111111111111"), "failures").await;
        let cases = [
            (Some("not json at all".to_string()), "not JSON"),
            (Some(String::new()), "returned nothing"),
            (
                Some(json!({"memories": "one"}).to_string()),
                "$.memories: expected array",
            ),
            (None, "did not answer in time"),
        ];
        for (i, (answer, reason)) in cases.into_iter().enumerate() {
            script.lock().retain(|(n, _)| n != "memories");
            script.lock().push(("memories".into(), answer));
            say(&memory, &memory_id, &format!("s{i}"), &format!("I have {i} cats.")).await;
            memory.extract_due().await.unwrap();
            let jobs = jobs(&memory, &memory_id).await;
            assert_eq!(jobs.len(), i + 1, "{reason}");
            let job = jobs.iter().find(|j| j["sessionId"] == format!("s{i}")).unwrap();
            assert!(job["failureReason"].as_str().unwrap().contains(reason), "{job}");
            assert_eq!(job["status"], "FAILED");
        }
        assert!(facts(&memory, &memory_id).await.is_empty());
        // Nothing waits twice: the events now belong to their jobs.
        memory.extract_due().await.unwrap();
        assert_eq!(jobs(&memory, &memory_id).await.len(), 4);

        // With the model healthy again, re-driving each job extracts its events.
        set(&script, "memories", Some(json!({"memories": ["The user has cats."]})));
        set(
            &script,
            "decision",
            Some(json!({"action": "ADD", "existing": 0, "memory": ""})),
        );
        for job in jobs(&memory, &memory_id).await {
            let input: StartMemoryExtractionJobInput =
                serde_json::from_value(json!({"memoryId": memory_id, "extractionJob": {"jobId": job["jobID"]}}))
                    .unwrap();
            memory
                .start_memory_extraction_job(&caller("111111111111"), input)
                .await
                .unwrap();
        }
        memory.extract_due().await.unwrap();
        assert!(jobs(&memory, &memory_id).await.is_empty());
        assert_eq!(
            facts(&memory, &memory_id).await.len(),
            1,
            "one fact; its repeats were consolidated"
        );
    }
}

#[tokio::test]
async fn waiting_events_survive_a_restart() {
    let script = Script::default();
    let url = model_server(script.clone()).await;
    for test_store in stores(Arc::new(SystemClock)).await {
        let store = test_store.store.clone();
        let (memory, worker) = service(&store, &url);
        let memory_id = active_memory(&memory, &worker, &caller("111111111111"), "restart").await;
        say(&memory, &memory_id, "s1", "I collect stamps.").await;
        drop(memory);
        // A new process on the same database finds the event still waiting.
        let (restarted, _worker) = service(&store, &url);
        set(
            &script,
            "memories",
            Some(json!({"memories": ["The user collects stamps."]})),
        );
        restarted.extract_due().await.unwrap();
        assert_eq!(
            facts(&restarted, &memory_id).await[0].content.text,
            "The user collects stamps."
        );
        // SKIP events and blob-only events never wait.
        let skip = serde_json::from_value(json!({
            "memoryId": memory_id, "actorId": "u1", "sessionId": "s2", "eventTimestamp": 1_700_000_000.0,
            "extractionMode": "SKIP",
            "payload": [{"conversational": {"role": "USER", "content": {"text": "I collect coins."}}}]
        }))
        .unwrap();
        restarted.create_event(&caller("111111111111"), skip).await.unwrap();
        let waiting: i64 = sqlx::query("SELECT COUNT(*) AS n FROM memory_events WHERE extraction_pending = 1")
            .fetch_one(store.reader())
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(waiting, 0);
    }
}

#[tokio::test]
async fn two_nodes_never_extract_the_same_events_twice() {
    let script = Script::default();
    let url = model_server(script.clone()).await;
    for test_store in stores(Arc::new(SystemClock)).await {
        let store = test_store.store.clone();
        let (node_a, worker) = service(&store, &url);
        let (node_b, _) = service(&store, &url);
        let memory_id = active_memory(&node_a, &worker, &caller("111111111111"), "two-nodes").await;
        set(
            &script,
            "memories",
            Some(json!({"memories": ["The user keeps bees.", "The user sells honey."]})),
        );
        set(
            &script,
            "decision",
            Some(json!({"action": "ADD", "existing": 0, "memory": ""})),
        );
        say(&node_a, &memory_id, "s1", "I keep bees and sell honey.").await;
        let (a, b) = tokio::join!(node_a.extract_due(), node_b.extract_due());
        a.unwrap();
        b.unwrap();
        let texts: Vec<String> = facts(&node_a, &memory_id)
            .await
            .into_iter()
            .map(|r| r.content.text)
            .collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        // The claim is released: the next batch of the session is extracted.
        set(
            &script,
            "memories",
            Some(json!({"memories": ["The user has three hives."]})),
        );
        say(&node_a, &memory_id, "s1", "I have three hives.").await;
        node_b.extract_due().await.unwrap();
        assert_eq!(facts(&node_a, &memory_id).await.len(), 3);
    }
}

#[tokio::test]
async fn records_get_the_metadata_their_schema_asks_for() {
    let script = Script::default();
    let url = model_server(script.clone()).await;
    for test_store in stores(Arc::new(SystemClock)).await {
        let store = test_store.store.clone();
        let (memory, worker) = service(&store, &url);
        let account = caller("111111111111");
        let input = serde_json::from_value(json!({
            "name": "labelled", "eventExpiryDuration": 3,
            "memoryStrategies": [{"semanticMemoryStrategy": {"name": "facts", "memoryRecordSchema": {"metadataSchema": [
                {"key": "topic", "type": "STRING", "extractionType": "LLM_INFERRED",
                 "extractionConfig": {"llmExtractionConfig": {"definition": "What the fact is about",
                    "validation": {"stringValidation": {"allowedValues": ["pets", "food", "work"]}}}}},
                {"key": "channel", "type": "STRING", "extractionType": "STRICTLY_CONSISTENT"}
            ]}}}]
        }))
        .unwrap();
        let memory_id = memory.create_memory(&account, input).await.unwrap().memory.id;
        worker.run_due().await.unwrap();
        set(
            &script,
            "memories",
            Some(json!({"memories": ["The user has a parrot."]})),
        );
        set(&script, "metadata", Some(json!({"topic": "pets"})));
        let event = serde_json::from_value(json!({
            "memoryId": memory_id, "actorId": "u1", "sessionId": "s1", "eventTimestamp": 1_700_000_000.0,
            "metadata": {"channel": {"stringValue": "mobile"}},
            "payload": [{"conversational": {"role": "USER", "content": {"text": "I have a parrot."}}}]
        }))
        .unwrap();
        memory.create_event(&account, event).await.unwrap();
        memory.extract_due().await.unwrap();
        let found = facts(&memory, &memory_id).await;
        assert_eq!(found.len(), 1);
        let metadata = serde_json::to_value(&found[0].metadata).unwrap();
        assert_eq!(
            metadata,
            json!({"topic": {"stringValue": "pets"}, "channel": {"stringValue": "mobile"}})
        );
        // Metadata is part of the strategy's extraction: nothing failed.
        assert!(jobs(&memory, &memory_id).await.is_empty());
    }
}
