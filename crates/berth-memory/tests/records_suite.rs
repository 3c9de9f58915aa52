//! Long-term memory records on SQLite and (with `BERTH_TEST_POSTGRES_URL`) PostgreSQL: batch
//! create with partial failures, get, list by namespace and path, delete, and hybrid retrieval,
//! with the embedded embedder when `BERTH_TEST_MODELS_DIR` names the models (as `make test` does).

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly on setup errors")]

use std::sync::Arc;

use berth_core::SystemClock;
use berth_memory::MemoryService;
use berth_memory::records::*;
use berth_store::testing::stores;
use serde_json::json;

mod common;
use common::{active_memory, caller};

fn embedder() -> Option<Arc<dyn berth_models::Embedder>> {
    let dir = std::env::var("BERTH_TEST_MODELS_DIR").ok()?;
    let model = berth_models::MiniLm::load(&std::path::Path::new(&dir).join(berth_models::MINILM_DIR)).unwrap();
    Some(Arc::new(model))
}

const FACTS: [(&str, &str); 5] = [
    (
        "/users/ana/",
        "Ana is allergic to peanuts and carries an epinephrine pen.",
    ),
    (
        "/users/ana/",
        "Ana loves spicy Thai green curry and eats it every Friday.",
    ),
    ("/users/ana/", "Ana's daughter is called Lucia and plays the violin."),
    (
        "/users/ana/trips/",
        "Ana flew to Lisbon in May and stayed near the Alfama district.",
    ),
    ("/users/bo/", "Bo prefers tea without sugar in the mornings."),
];

async fn memory_with_facts(memory: &MemoryService, worker: &berth_store::jobs::Worker) -> String {
    let account = caller("123456789012");
    let memory_id = active_memory(memory, worker, &account, "records").await;
    let records: Vec<_> = FACTS
        .iter()
        .enumerate()
        .map(|(i, (namespace, text))| {
            json!({"requestIdentifier": format!("r{i}"), "namespaces": [namespace],
                   "content": {"text": text}, "timestamp": 1_800_000_000.0 + i as f64})
        })
        .collect();
    let mut all = records.clone();
    // Partial failures: no namespace, and a strategy the memory does not have.
    all.push(json!({"requestIdentifier": "bad1", "namespaces": [], "content": {"text": "x"}, "timestamp": 1.0}));
    all.push(
        json!({"requestIdentifier": "bad2", "namespaces": ["/x/"], "content": {"text": "x"},
                    "timestamp": 1.0, "memoryStrategyId": "nope-AbCdEfGhIj"}),
    );
    let input: BatchCreateMemoryRecordsInput =
        serde_json::from_value(json!({"memoryId": memory_id, "records": all})).unwrap();
    let out = memory.batch_create_memory_records(&account, input).await.unwrap();
    assert_eq!(out.successful_records.len(), FACTS.len());
    let failed: Vec<_> = out
        .failed_records
        .iter()
        .map(|r| r.request_identifier.clone().unwrap())
        .collect();
    assert_eq!(failed, ["bad1", "bad2"]);
    assert!(
        out.successful_records
            .iter()
            .all(|r| r.memory_record_id.starts_with("mem-") && r.memory_record_id.len() == 40)
    );
    memory_id
}

async fn retrieve(memory: &MemoryService, memory_id: &str, query: &str, namespace_path: &str) -> Vec<String> {
    let input: RetrieveMemoryRecordsInput = serde_json::from_value(json!({
        "memoryId": memory_id, "namespacePath": namespace_path,
        "searchCriteria": {"searchQuery": query, "topK": 3}
    }))
    .unwrap();
    let out = memory
        .retrieve_memory_records(&caller("123456789012"), input)
        .await
        .unwrap();
    for pair in out.memory_record_summaries.windows(2) {
        assert!(pair[0].score >= pair[1].score, "best first");
    }
    out.memory_record_summaries
        .into_iter()
        .map(|r| r.content.text)
        .collect()
}

#[tokio::test]
async fn records_are_created_listed_read_and_deleted_by_namespace() {
    for test in stores(Arc::new(SystemClock)).await {
        let (memory, worker) = common::service(&test.store);
        let memory_id = memory_with_facts(&memory, &worker).await;
        let account = caller("123456789012");
        let list = |namespace: serde_json::Value| {
            let mut input = json!({"memoryId": memory_id, "maxResults": 2});
            input
                .as_object_mut()
                .unwrap()
                .extend(namespace.as_object().unwrap().clone());
            serde_json::from_value::<ListMemoryRecordsInput>(input).unwrap()
        };
        // namespacePath is segment-aware: /users/ana covers /users/ana/trips/ but not /users/bo/.
        let mut seen = Vec::new();
        let mut input = list(json!({"namespacePath": "/users/ana"}));
        loop {
            let page = memory.list_memory_records(&account, input).await.unwrap();
            assert!(page.memory_record_summaries.len() <= 2);
            seen.extend(page.memory_record_summaries);
            let Some(token) = page.next_token else { break };
            input = list(json!({"namespacePath": "/users/ana", "nextToken": token}));
        }
        assert_eq!(seen.len(), 4);
        assert!(
            seen.windows(2).all(|w| w[0].created_at >= w[1].created_at),
            "newest first"
        );
        let bo = memory
            .list_memory_records(&account, list(json!({"namespace": "/users/bo/"})))
            .await
            .unwrap();
        assert_eq!(bo.memory_record_summaries.len(), 1);
        let none = memory.list_memory_records(&account, list(json!({}))).await;
        assert!(none.unwrap_err().to_string().contains("namespace"));

        let id = bo.memory_record_summaries[0].memory_record_id.clone();
        let key =
            || serde_json::from_value::<RecordKeyInput>(json!({"memoryId": memory_id, "memoryRecordId": id})).unwrap();
        let record = memory.get_memory_record(&account, key()).await.unwrap().memory_record;
        assert_eq!(record.content.text, FACTS[4].1);
        assert_eq!(record.namespaces, ["/users/bo/"]);
        assert_eq!(record.timestamp, 1_800_000_004.0);
        // Another account sees no such memory.
        assert!(memory.get_memory_record(&caller("210987654321"), key()).await.is_err());
        memory.delete_memory_record(&account, key()).await.unwrap();
        let gone = memory.get_memory_record(&account, key()).await.unwrap_err();
        assert!(gone.to_string().contains("not found"));
        assert!(memory.delete_memory_record(&account, key()).await.is_err());
        // The full-text index forgot it too.
        assert!(retrieve(&memory, &memory_id, "tea sugar", "/users/").await.is_empty());
    }
}

#[tokio::test]
async fn retrieval_ranks_within_the_namespace_by_words_and_by_meaning() {
    for test in stores(Arc::new(SystemClock)).await {
        let (memory, worker) = common::service(&test.store);
        let lexical_only = memory_with_facts(&memory, &worker).await;
        // Words: the record sharing the query's words comes first; namespaces bound the search.
        let found = retrieve(&memory, &lexical_only, "peanuts allergy", "/users/ana").await;
        assert_eq!(found.first().map(String::as_str), Some(FACTS[0].1));
        assert!(retrieve(&memory, &lexical_only, "tea", "/users/ana").await.is_empty());

        let Some(embedder) = embedder() else { continue };
        let memory = memory.with_embedder(embedder);
        let account = caller("123456789012");
        let input = serde_json::from_value(json!({"name": "records_dense", "eventExpiryDuration": 3})).unwrap();
        let memory_id = memory.create_memory(&account, input).await.unwrap().memory.id;
        worker.run_due().await.unwrap();
        let records: Vec<_> = FACTS
            .iter()
            .enumerate()
            .map(|(i, (ns, text))| {
                json!({"requestIdentifier": format!("r{i}"), "namespaces": [ns],
                                          "content": {"text": text}, "timestamp": 1_800_000_000.0})
            })
            .collect();
        let input = serde_json::from_value(json!({"memoryId": memory_id, "records": records})).unwrap();
        memory.batch_create_memory_records(&account, input).await.unwrap();
        // Meaning: no word in common with the record that answers.
        let found = retrieve(&memory, &memory_id, "What food does she enjoy?", "/users/ana").await;
        assert_eq!(found.first().map(String::as_str), Some(FACTS[1].1), "{found:?}");
        let found = retrieve(
            &memory,
            &memory_id,
            "Which city did she visit on holiday?",
            "/users/ana",
        )
        .await;
        assert_eq!(found.first().map(String::as_str), Some(FACTS[3].1), "{found:?}");
    }
}

#[tokio::test]
async fn updates_rewrite_records_and_both_indexes() {
    for test in stores(Arc::new(SystemClock)).await {
        let (memory, worker) = common::service(&test.store);
        let memory = match embedder() {
            Some(embedder) => memory.with_embedder(embedder),
            None => memory,
        };
        let memory_id = memory_with_facts(&memory, &worker).await;
        let account = caller("123456789012");
        let listed = memory
            .list_memory_records(
                &account,
                serde_json::from_value(json!({"memoryId": memory_id, "namespace": "/users/bo/"})).unwrap(),
            )
            .await
            .unwrap();
        let id = listed.memory_record_summaries[0].memory_record_id.clone();
        let input = serde_json::from_value(json!({"memoryId": memory_id, "records": [
            {"memoryRecordId": id, "timestamp": 1_900_000_000.0, "content": {"text": "Bo switched to black coffee."},
             "namespaces": ["/users/bo/drinks/"]},
            {"memoryRecordId": "mem-00000000-0000-0000-0000-000000000000", "timestamp": 1.0},
            {"memoryRecordId": id, "timestamp": 1.0, "memoryStrategyId": "nope-AbCdEfGhIj"}
        ]}))
        .unwrap();
        let out = memory.batch_update_memory_records(&account, input).await.unwrap();
        assert_eq!(out.successful_records.len(), 1);
        let codes: Vec<_> = out.failed_records.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [Some(404), Some(400)]);
        let key = serde_json::from_value(json!({"memoryId": memory_id, "memoryRecordId": id})).unwrap();
        let record = memory.get_memory_record(&account, key).await.unwrap().memory_record;
        assert_eq!(record.content.text, "Bo switched to black coffee.");
        assert_eq!(record.namespaces, ["/users/bo/drinks/"]);
        assert_eq!(record.timestamp, 1_900_000_000.0);
        // The full-text index follows the new content; the old words find nothing (asked of a
        // service without an embedder, which would rank every record in scope).
        let lexical = common::service(&test.store).0;
        assert!(retrieve(&lexical, &memory_id, "sugar", "/users/bo").await.is_empty());
        assert_eq!(
            retrieve(&lexical, &memory_id, "coffee", "/users/bo").await,
            ["Bo switched to black coffee."]
        );
        if memory_has_embedder() {
            let found = retrieve(&memory, &memory_id, "What does Bo drink now?", "/users").await;
            assert_eq!(
                found.first().map(String::as_str),
                Some("Bo switched to black coffee."),
                "{found:?}"
            );
        }
    }
}

fn memory_has_embedder() -> bool {
    std::env::var("BERTH_TEST_MODELS_DIR").is_ok()
}

#[tokio::test]
async fn metadata_filters_apply_to_listing_and_retrieval_on_indexed_keys_only() {
    for test in stores(Arc::new(SystemClock)).await {
        let (memory, worker) = common::service(&test.store);
        let account = caller("123456789012");
        let input = serde_json::from_value(json!({
            "name": "filtered", "eventExpiryDuration": 3,
            "indexedKeys": [{"key": "priority", "type": "NUMBER"}, {"key": "topic", "type": "STRING"}]
        }))
        .unwrap();
        let memory_id = memory.create_memory(&account, input).await.unwrap().memory.id;
        worker.run_due().await.unwrap();
        // 250 records (more than one run of the listing's scan), every tenth of priority 9.
        let records: Vec<_> = (0..250)
            .map(|i| {
                let priority = if i % 10 == 0 { 9 } else { 1 };
                json!({"requestIdentifier": format!("r{i}"), "namespaces": ["/notes/"],
                       "content": {"text": format!("note number {i} about the garden")},
                       "timestamp": 1_800_000_000.0 + i as f64,
                       "metadata": {"priority": {"numberValue": priority}, "topic": {"stringValue": "garden"}}})
            })
            .collect();
        for chunk in records.chunks(100) {
            let input = serde_json::from_value(json!({"memoryId": memory_id, "records": chunk})).unwrap();
            memory.batch_create_memory_records(&account, input).await.unwrap();
        }
        let urgent = json!([{"left": {"metadataKey": "priority"}, "operator": "GREATER_THAN",
                             "right": {"metadataValue": {"numberValue": 5}}}]);
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut input = json!({"memoryId": memory_id, "namespace": "/notes/", "maxResults": 10,
                                   "metadataFilters": urgent});
            if let Some(token) = &token {
                input["nextToken"] = json!(token);
            }
            let page = memory
                .list_memory_records(&account, serde_json::from_value(input).unwrap())
                .await
                .unwrap();
            listed.extend(page.memory_record_summaries);
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(listed.len(), 25, "every tenth of 250");
        assert!(
            listed
                .iter()
                .all(|r| r.metadata.as_ref().unwrap()["priority"]["numberValue"] == 9)
        );

        let input = serde_json::from_value(json!({"memoryId": memory_id, "namespace": "/notes/",
            "searchCriteria": {"searchQuery": "garden note", "topK": 5, "metadataFilters": urgent}}))
        .unwrap();
        let found = memory.retrieve_memory_records(&account, input).await.unwrap();
        assert_eq!(found.memory_record_summaries.len(), 5);
        assert!(
            found
                .memory_record_summaries
                .iter()
                .all(|r| r.metadata.as_ref().unwrap()["priority"]["numberValue"] == 9)
        );

        let unindexed = serde_json::from_value(json!({"memoryId": memory_id, "namespace": "/notes/",
            "metadataFilters": [{"left": {"metadataKey": "colour"}, "operator": "EXISTS"}]}))
        .unwrap();
        let refused = memory.list_memory_records(&account, unindexed).await.unwrap_err();
        assert!(refused.to_string().contains("indexedKeys"), "{refused}");
    }
}

#[tokio::test]
async fn deleting_a_memory_takes_its_records_and_their_index_entries() {
    use berth_store::sqlx;
    for test in stores(Arc::new(SystemClock)).await {
        let (memory, worker) = common::service(&test.store);
        let memory_id = memory_with_facts(&memory, &worker).await;
        let input = serde_json::from_value(json!({"memoryId": memory_id})).unwrap();
        memory.delete_memory(&caller("123456789012"), input).await.unwrap();
        worker.run_due().await.unwrap();
        let count = |sql: &'static str| {
            let store = test.store.clone();
            async move {
                let row = sqlx::query(sql).fetch_one(store.reader()).await.unwrap();
                sqlx::Row::try_get::<i64, _>(&row, 0).unwrap()
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM memory_records").await, 0);
        if test.store.backend() == berth_store::Backend::Sqlite {
            // Through the index itself: a stale entry would still match.
            let matches = "SELECT COUNT(*) FROM memory_records_fts WHERE memory_records_fts MATCH 'ana OR bo OR tea'";
            assert_eq!(count(matches).await, 0);
        }
    }
}

#[tokio::test]
async fn records_expire_as_their_expiry_specification_says() {
    use berth_core::{ManualClock, Timestamp};
    const DAY: i64 = 86_400_000;
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    for test in stores(Arc::new(clock.clone())).await {
        clock.set(Timestamp(1_800_000_000_000));
        let (memory, worker) = common::service(&test.store);
        let account = caller("123456789012");
        let memory_id = active_memory(&memory, &worker, &account, "expiring").await;
        let create = |id: &str, expiry: serde_json::Value| {
            serde_json::from_value::<BatchCreateMemoryRecordsInput>(json!({
                "memoryId": memory_id, "recordExpirySpecification": expiry,
                "records": [{"requestIdentifier": id, "namespaces": ["/n/"], "content": {"text": id}, "timestamp": 1.0}]
            }))
            .unwrap()
        };
        let short = memory
            .batch_create_memory_records(&account, create("short", json!({"recordExpiryDurationDays": 31})))
            .await
            .unwrap();
        let kept = memory
            .batch_create_memory_records(&account, create("kept", json!({"recordExpiryDurationDays": 31})))
            .await
            .unwrap();
        let short_id = short.successful_records[0].memory_record_id.clone();
        let kept_id = kept.successful_records[0].memory_record_id.clone();
        let key = |id: &str| {
            serde_json::from_value::<RecordKeyInput>(json!({"memoryId": memory_id, "memoryRecordId": id})).unwrap()
        };
        let record = memory
            .get_memory_record(&account, key(&short_id))
            .await
            .unwrap()
            .memory_record;
        assert_eq!(record.expires_at, Some(1_800_000_000.0 + 31.0 * 86_400.0));
        // `action: REMOVE` takes the expiry away.
        let update = serde_json::from_value(
            json!({"memoryId": memory_id, "recordExpirySpecification": {"action": "REMOVE"},
            "records": [{"memoryRecordId": kept_id, "timestamp": 1.0}]}),
        )
        .unwrap();
        memory.batch_update_memory_records(&account, update).await.unwrap();

        clock.advance(32 * DAY);
        assert!(
            memory.get_memory_record(&account, key(&short_id)).await.is_err(),
            "expired records are not read"
        );
        let listed = memory
            .list_memory_records(
                &account,
                serde_json::from_value(json!({"memoryId": memory_id, "namespace": "/n/"})).unwrap(),
            )
            .await
            .unwrap();
        let ids: Vec<_> = listed
            .memory_record_summaries
            .iter()
            .map(|r| r.memory_record_id.clone())
            .collect();
        assert_eq!(ids, std::slice::from_ref(&kept_id));
        assert_eq!(memory.sweep_expired_records().await.unwrap(), 1);
        assert!(memory.get_memory_record(&account, key(&kept_id)).await.is_ok());
    }
}

/// Dense retrieval reads embeddings held in memory; a change made by another process sharing
/// the database (another node) is seen at once, and this process's own changes apply in place.
#[tokio::test]
async fn dense_retrieval_sees_changes_from_every_process() {
    let Some(embedder) = embedder() else {
        eprintln!("skipped: BERTH_TEST_MODELS_DIR is not set");
        return;
    };
    for test in stores(Arc::new(SystemClock)).await {
        let (plain, worker) = common::service(&test.store);
        let node_a = plain
            .clone()
            .with_retrieval_mode(RetrievalMode::Dense)
            .with_embedder(embedder.clone());
        let node_b = MemoryService::new(test.store.clone(), "us-east-1").with_embedder(embedder.clone());
        let memory_id = memory_with_facts(&node_a, &worker).await;
        let question = "Who plays a string instrument?";
        assert_eq!(
            retrieve(&node_a, &memory_id, question, "/users/ana").await[0],
            "Ana's daughter is called Lucia and plays the violin."
        );

        // Node B adds a better answer; node A, which holds the embeddings, finds it.
        let input: BatchCreateMemoryRecordsInput = serde_json::from_value(json!({"memoryId": memory_id, "records": [
            {"requestIdentifier": "c", "namespaces": ["/users/ana/"], "content": {"text": "Ana plays the cello in a string quartet."}, "timestamp": 1.0e9}
        ]}))
        .unwrap();
        let cello = node_b
            .batch_create_memory_records(&caller("123456789012"), input)
            .await
            .unwrap()
            .successful_records[0]
            .memory_record_id
            .clone();
        assert_eq!(
            retrieve(&node_a, &memory_id, question, "/users/ana").await[0],
            "Ana plays the cello in a string quartet."
        );

        // Node A deletes it itself; its own index drops it in place.
        let input = serde_json::from_value(json!({"memoryId": memory_id, "memoryRecordId": cello})).unwrap();
        node_a
            .delete_memory_record(&caller("123456789012"), input)
            .await
            .unwrap();
        let found = retrieve(&node_a, &memory_id, question, "/users/ana").await;
        assert!(!found.iter().any(|t| t.contains("cello")), "{found:?}");
        assert_eq!(found[0], "Ana's daughter is called Lucia and plays the violin.");
    }
}
