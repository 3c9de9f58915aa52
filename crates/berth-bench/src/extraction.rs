//! `berth-bench --extraction MODELS_DIR`: the time from CreateEvent to the extracted record being
//! retrievable, with the embedded models only (SmolLM2-135M extracting, all-MiniLM-L6-v2
//! embedding) and a semantic strategy, on SQLite. The batching delay is set to zero, so this is
//! the pipeline's own time: model calls, consolidation, embedding and the commit. The first
//! event also pays for loading the chat model's weights and is reported apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::{AccountId, Caller, SystemClock};
use berth_memory::records::RetrieveMemoryRecordsInput;
use berth_memory::{ExtractionSettings, MemoryService};
use berth_models::Models;
use berth_store::Store;
use berth_store::jobs::Worker;
use serde_json::json;

#[rustfmt::skip]
const TURNS: [(&str, &str); 6] = [
    ("I live in Lisbon and I work as a nurse.", "Lisbon"),
    ("My sister Ana has two dogs.", "Ana"),
    ("I am allergic to peanuts.", "peanuts"),
    ("I play the cello in an orchestra.", "cello"),
    ("I drive a Volvo to work every day.", "Volvo"),
    ("I am learning Japanese for a trip to Kyoto.", "Japanese"),
];

pub async fn run(models_dir: &std::path::Path) -> anyhow::Result<()> {
    let config = berth_models::ModelsConfig::default();
    let models: Models = berth_models::providers::build(&config, models_dir).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        models.chat.is_some() && models.embedder.is_some(),
        "the embedded models are missing from {}",
        models_dir.display()
    );
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("extraction.db").display());
    let store = Store::open(&url, Arc::new(SystemClock)).await?;
    let mut worker = Worker::new(store.clone());
    let settings = ExtractionSettings {
        batch_delay: Duration::ZERO,
        ..ExtractionSettings::default()
    };
    let mut service = MemoryService::new(store.clone(), "us-east-1")
        .with_models(models)
        .with_extraction_settings(settings);
    service.attach_worker(&mut worker);
    let caller = Caller {
        account: AccountId::try_from("123456789012".to_string()).map_err(anyhow::Error::msg)?,
        access_key_id: "AKIABENCHMARK0000001".into(),
        bearer_token: None,
    };
    let input = serde_json::from_value(json!({"name": "extraction", "eventExpiryDuration": 30,
        "memoryStrategies": [{"semanticMemoryStrategy": {"name": "facts"}}]}))?;
    let memory = service.create_memory(&caller, input).await?.memory;
    worker.run_due().await?;
    let strategy_id = memory.strategies[0]["strategyId"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let mut times = Vec::new();
    for (i, (text, word)) in TURNS.iter().enumerate() {
        let actor = format!("user-{i}");
        let input = serde_json::from_value(json!({
            "memoryId": memory.id, "actorId": actor, "sessionId": "s-1", "eventTimestamp": 1_700_000_000.0,
            "payload": [{"conversational": {"role": "USER", "content": {"text": text}}},
                        {"conversational": {"role": "ASSISTANT", "content": {"text": "Thanks for telling me!"}}}]
        }))?;
        let started = Instant::now();
        service.create_event(&caller, input).await?;
        loop {
            service.extract_due().await?;
            let query: RetrieveMemoryRecordsInput = serde_json::from_value(json!({
                "memoryId": memory.id, "namespace": format!("/strategies/{strategy_id}/actors/{actor}/"),
                "searchCriteria": {"searchQuery": word, "topK": 5}
            }))?;
            let found = service
                .retrieve_memory_records(&caller, query)
                .await?
                .memory_record_summaries;
            if !found.is_empty() {
                let texts: Vec<&str> = found.iter().map(|r| r.content.text.as_str()).collect();
                println!("event {i}: {:.2} s {texts:?}", started.elapsed().as_secs_f64());
                times.push(started.elapsed());
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "no record for `{text}` after 120 s"
            );
        }
    }
    let cold = times.remove(0);
    times.sort();
    println!();
    println!("| CreateEvent → retrievable (embedded models, semantic strategy) | seconds |");
    println!("|---|---:|");
    println!("| first event (loads SmolLM2's weights) | {:.2} |", cold.as_secs_f64());
    println!(
        "| later events, median of {} [range] | {:.2} [{:.2}–{:.2}] |",
        times.len(),
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
    store.close().await;
    Ok(())
}
