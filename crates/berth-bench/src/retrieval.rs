//! `berth-bench --retrieval MODELS_DIR`: RetrieveMemoryRecords latency at 10k and 100k records
//! in one memory on SQLite, hybrid (the query embedded by the embedded model, every embedding in
//! scope compared) and full-text only.
//!
//! Records are written straight through the store with generated sentences and random unit
//! vectors: this measures the latency of retrieval, not its quality, and writing 100k real
//! embeddings would take ten minutes of model time on two cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::{AccountId, Caller, SystemClock};
use berth_memory::MemoryService;
use berth_memory::records::RetrieveMemoryRecordsInput;
use berth_memory::store::records::{self as db, RecordRow};
use berth_models::Embedder;
use berth_store::Store;
use berth_store::jobs::Worker;
use serde_json::json;

#[rustfmt::skip]
const SUBJECTS: [&str; 8] = ["The user", "Ana", "Bo", "Their manager", "The team", "Lucia", "The client", "Sam"];
#[rustfmt::skip]
const VERBS: [&str; 8] = ["prefers", "mentioned", "booked", "dislikes", "asked about", "bought", "planned", "reviewed"];
#[rustfmt::skip]
const OBJECTS: [&str; 12] = [
    "window seats", "vegetarian meals", "a trip to Lisbon", "the quarterly report", "green tea", "a violin lesson",
    "the new laptop", "spicy curry", "an early meeting", "the budget", "hiking boots", "a hotel near the beach",
];
#[rustfmt::skip]
const WHEN: [&str; 6] = ["on Monday", "last week", "in May", "every Friday", "before the launch", "after lunch"];
const QUERIES: [&str; 5] = [
    "What food does Ana like?",
    "Which trips were booked?",
    "budget review",
    "Who takes violin lessons?",
    "meeting times",
];

/// A small deterministic generator (xorshift), so runs write the same records.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[(self.next() % words.len() as u64) as usize]
    }

    fn unit_vector(&mut self, dimensions: usize) -> Vec<f32> {
        let raw: Vec<f32> = (0..dimensions)
            .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        raw.into_iter().map(|x| x / norm).collect()
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

pub async fn run(models: &std::path::Path) -> anyhow::Result<()> {
    let embedder = berth_models::MiniLm::load(&models.join(berth_models::MINILM_DIR))?;
    println!("| records | retrieval | queries | p50 ms | p95 ms |");
    println!("|---:|---|---:|---:|---:|");
    for count in [10_000, 100_000] {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
        let store = Store::open(&url, Arc::new(SystemClock)).await?;
        let mut worker = Worker::new(store.clone());
        let mut lexical = MemoryService::new(store.clone(), "us-east-1");
        lexical.attach_worker(&mut worker);
        let hybrid = lexical.clone().with_embedder(Arc::new(embedder.clone()));
        let caller = Caller {
            account: AccountId::try_from("123456789012".to_string()).map_err(anyhow::Error::msg)?,
            access_key_id: "AKIABENCHMARK0000001".into(),
            bearer_token: None,
        };
        let input = serde_json::from_value(json!({"name": "retrieval", "eventExpiryDuration": 30}))?;
        let memory_id = lexical.create_memory(&caller, input).await?.memory.id;
        worker.run_due().await?;

        let mut sequence = Sequence(0x9E37_79B9_7F4A_7C15);
        let now = store.now();
        for chunk_start in (0..count).step_by(1000) {
            let rows: Vec<(RecordRow, Option<Vec<f32>>)> = (chunk_start..chunk_start + 1000)
                .map(|i| {
                    let content = format!(
                        "{} {} {} {}.",
                        sequence.pick(&SUBJECTS),
                        sequence.pick(&VERBS),
                        sequence.pick(&OBJECTS),
                        sequence.pick(&WHEN)
                    );
                    let row = RecordRow {
                        record_id: format!("mem-{i:036}"),
                        memory_id: memory_id.clone(),
                        strategy_id: String::new(),
                        namespace: format!("/users/u{}/", i % 100),
                        content,
                        metadata: None,
                        record_time: now,
                        created_at: now,
                        updated_at: now,
                        expires_at: None,
                    };
                    (row, Some(sequence.unit_vector(embedder.dimensions())))
                })
                .collect();
            db::insert(&store, &rows, Some(embedder.name())).await?;
        }

        for (label, service) in [("hybrid (query embedded)", &hybrid), ("full text only", &lexical)] {
            let mut latencies = Vec::new();
            for round in 0..11 {
                for query in QUERIES {
                    let input: RetrieveMemoryRecordsInput = serde_json::from_value(json!({
                        "memoryId": memory_id, "namespacePath": "/users",
                        "searchCriteria": {"searchQuery": query, "topK": 10}
                    }))?;
                    let started = Instant::now();
                    let found = service.retrieve_memory_records(&caller, input).await?;
                    if round > 0 {
                        latencies.push(started.elapsed());
                    }
                    anyhow::ensure!(!found.memory_record_summaries.is_empty(), "`{query}` found nothing");
                }
            }
            latencies.sort();
            println!(
                "| {count} | {label} | {} | {:.1} | {:.1} |",
                latencies.len(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.95)
            );
        }
        store.close().await;
    }
    Ok(())
}
