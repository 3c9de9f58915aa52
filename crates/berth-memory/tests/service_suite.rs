//! Memory's service and store, on SQLite and (with `BERTH_TEST_POSTGRES_URL`) PostgreSQL, with
//! an injected clock and the job worker driven by hand.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly on setup errors")]

use std::sync::Arc;

use berth_core::{ManualClock, Timestamp};
use berth_memory::model::*;
use berth_store::testing::stores;
use serde_json::json;

mod common;
use common::{active_memory, caller, create_input, service};

const START: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn event(memory_id: &str, session: &str, text: &str, at_seconds: f64) -> CreateEventInput {
    serde_json::from_value(json!({
        "memoryId": memory_id, "actorId": "actor-1", "sessionId": session, "eventTimestamp": at_seconds,
        "payload": [{"conversational": {"content": {"text": text}, "role": "USER"}}]
    }))
    .unwrap()
}

fn list(memory_id: &str, session: &str) -> ListEventsInput {
    serde_json::from_value(json!({"memoryId": memory_id, "actorId": "actor-1", "sessionId": session})).unwrap()
}

#[tokio::test]
async fn create_settles_to_active_through_the_job_worker() {
    let clock = ManualClock::new(Timestamp(START));
    for test in stores(Arc::new(clock.clone())).await {
        let (memory, worker) = service(&test.store);
        let alice = caller("111111111111");

        let created = memory
            .create_memory(&alice, create_input("notes"))
            .await
            .unwrap()
            .memory;
        assert_eq!(created.status, "CREATING");
        assert_eq!(created.strategies[0]["status"], "CREATING");
        let got = memory
            .get_memory(
                &alice,
                MemoryIdInput {
                    memory_id: created.id.clone(),
                },
            )
            .await
            .unwrap()
            .memory;
        assert_eq!(got.status, "CREATING", "nothing moves until the worker runs");

        assert_eq!(worker.run_due().await.unwrap(), 1);
        let got = memory
            .get_memory(
                &alice,
                MemoryIdInput {
                    memory_id: created.id.clone(),
                },
            )
            .await
            .unwrap()
            .memory;
        assert_eq!(got.status, "ACTIVE");
        assert_eq!(got.strategies[0]["status"], "ACTIVE");

        // Another account sees nothing, and the name is free there.
        let bob = caller("222222222222");
        assert!(
            memory
                .get_memory(
                    &bob,
                    MemoryIdInput {
                        memory_id: created.id.clone()
                    }
                )
                .await
                .is_err()
        );
        assert!(memory.create_memory(&bob, create_input("notes")).await.is_ok());
        assert!(matches!(
            memory.create_memory(&alice, create_input("notes")).await,
            Err(berth_memory::MemoryError::NameTaken(_))
        ));
    }
}

#[tokio::test]
async fn events_expire_after_the_memory_retention() {
    let clock = ManualClock::new(Timestamp(START));
    for test in stores(Arc::new(clock.clone())).await {
        clock.set(Timestamp(START));
        let (memory, worker) = service(&test.store);
        let alice = caller("111111111111");
        let id = active_memory(&memory, &worker, &alice, "expiring").await;

        memory
            .create_event(&alice, event(&id, "s1", "old", 1_700_000_000.0))
            .await
            .unwrap();
        clock.advance(2 * DAY);
        memory
            .create_event(&alice, event(&id, "s1", "new", 1_700_000_001.0))
            .await
            .unwrap();
        assert_eq!(memory.sweep_expired_events().await.unwrap(), 0);
        clock.advance(DAY + 1);
        assert_eq!(
            memory.sweep_expired_events().await.unwrap(),
            1,
            "only the first event is older than 3 days"
        );
        let left = memory.list_events(&alice, list(&id, "s1")).await.unwrap().events;
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].payload.get(),
            r#"[{"conversational":{"content":{"text":"new"},"role":"USER"}}]"#
        );
    }
}

#[tokio::test]
async fn events_order_newest_first_with_ties_broken_by_arrival() {
    let clock = ManualClock::new(Timestamp(START));
    for test in stores(Arc::new(clock.clone())).await {
        let (memory, worker) = service(&test.store);
        let alice = caller("111111111111");
        let id = active_memory(&memory, &worker, &alice, "ordering").await;
        let mut ids = Vec::new();
        for (text, at) in [("a", 10.0), ("b", 10.0), ("c", 5.0), ("d", 20.0)] {
            ids.push(
                memory
                    .create_event(&alice, event(&id, "s", text, at))
                    .await
                    .unwrap()
                    .event
                    .event_id,
            );
        }
        let listed: Vec<String> = memory
            .list_events(&alice, list(&id, "s"))
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(
            listed,
            vec![ids[3].clone(), ids[1].clone(), ids[0].clone(), ids[2].clone()]
        );
        assert!(ids[2].starts_with("0000000000000005000#"));
    }
}

#[tokio::test]
async fn delete_removes_the_memory_and_its_events() {
    let clock = ManualClock::new(Timestamp(START));
    for test in stores(Arc::new(clock.clone())).await {
        let (memory, worker) = service(&test.store);
        let alice = caller("111111111111");
        let id = active_memory(&memory, &worker, &alice, "doomed").await;
        memory.create_event(&alice, event(&id, "s", "x", 1.0)).await.unwrap();
        let deleted = memory
            .delete_memory(&alice, MemoryIdInput { memory_id: id.clone() })
            .await
            .unwrap();
        assert_eq!(deleted.status, "DELETING");
        assert!(
            memory.list_events(&alice, list(&id, "s")).await.is_err(),
            "a deleting memory takes no data calls"
        );
        worker.run_due().await.unwrap();
        assert!(
            memory
                .get_memory(&alice, MemoryIdInput { memory_id: id.clone() })
                .await
                .is_err()
        );
        // The name is free again once the deletion finished.
        assert!(memory.create_memory(&alice, create_input("doomed")).await.is_ok());
    }
}
