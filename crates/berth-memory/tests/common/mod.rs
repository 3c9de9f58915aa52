//! Helpers shared by Memory's test suites.

#![allow(dead_code, reason = "each suite uses its own subset")]

use berth_core::{AccountId, Caller};
use berth_memory::MemoryService;
use berth_memory::model::*;
use berth_store::jobs::Worker;
use serde_json::json;

pub fn caller(account: &str) -> Caller {
    Caller {
        account: AccountId::try_from(account.to_string()).unwrap(),
        access_key_id: "AKIATEST".into(),
        bearer_token: None,
    }
}

pub fn create_input(name: &str) -> CreateMemoryInput {
    serde_json::from_value(json!({
        "name": name, "eventExpiryDuration": 3,
        "memoryStrategies": [{"semanticMemoryStrategy": {"name": "facts"}}]
    }))
    .unwrap()
}

/// A memory service on `store` with its job worker, which tests drive by hand.
pub fn service(store: &berth_store::Store) -> (MemoryService, Worker) {
    let mut worker = Worker::new(store.clone());
    let mut memory = MemoryService::new(store.clone(), "us-east-1");
    memory.attach_worker(&mut worker);
    (memory, worker)
}

/// Creates a memory and runs the worker so it is ACTIVE. Returns its id.
pub async fn active_memory(memory: &MemoryService, worker: &Worker, caller: &Caller, name: &str) -> String {
    let id = memory
        .create_memory(caller, create_input(name))
        .await
        .unwrap()
        .memory
        .id;
    worker.run_due().await.unwrap();
    id
}
