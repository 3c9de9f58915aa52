//! The store suite: every test runs against SQLite and, when `BERTH_TEST_POSTGRES_URL` is set,
//! PostgreSQL.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly on setup errors")]

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_core::{ManualClock, Timestamp};
use berth_store::idempotency::{StoredResponse, TokenKey};
use berth_store::jobs::{self, Worker};
use berth_store::testing::stores;

fn clock() -> ManualClock {
    ManualClock::new(Timestamp(1_800_000_000_000))
}

#[tokio::test]
async fn migrations_apply_and_report_their_version() {
    for test in stores(Arc::new(clock())).await {
        assert!(
            test.store.schema_version().await.unwrap() >= 2,
            "{:?}",
            test.store.backend()
        );
        test.store.ping().await.unwrap();
    }
}

/// Records a token and waits until the record is durable.
async fn record(store: &berth_store::Store, key: &TokenKey, response: &StoredResponse) {
    let (done, written) = tokio::sync::oneshot::channel();
    store.idempotency_record(key, response, move |outcome| drop(done.send(outcome)));
    written.await.unwrap().unwrap();
}

#[tokio::test]
async fn idempotency_records_first_responses_and_expires_them() {
    let clock = clock();
    for test in stores(Arc::new(clock.clone())).await {
        let store = &test.store;
        let key = TokenKey {
            account_id: "123456789012".into(),
            operation: "CreateMemory".into(),
            token: "t-1".into(),
        };
        assert_eq!(store.idempotency_lookup(&key).await.unwrap(), None);
        let first = StoredResponse {
            request_hash: "h1".into(),
            status: 202,
            body: "{\"ok\":1}".into(),
        };
        record(store, &key, &first).await;
        assert_eq!(store.idempotency_lookup(&key).await.unwrap(), Some(first.clone()));
        // A second record for a live token does not overwrite the first.
        let second = StoredResponse {
            request_hash: "h2".into(),
            status: 202,
            body: "{}".into(),
        };
        record(store, &key, &second).await;
        assert_eq!(store.idempotency_lookup(&key).await.unwrap(), Some(first));

        clock.advance(berth_store::idempotency::RETENTION_MILLIS + 1);
        assert_eq!(store.idempotency_lookup(&key).await.unwrap(), None);
        record(store, &key, &second).await;
        assert_eq!(store.idempotency_lookup(&key).await.unwrap(), Some(second));
        assert_eq!(store.idempotency_sweep().await.unwrap(), 0);
        clock.set(Timestamp(1_800_000_000_000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_token_lookups_and_records_each_get_their_own_answer() {
    for test in stores(Arc::new(clock())).await {
        let store = test.store.clone();
        let key = |i: usize| TokenKey {
            account_id: format!("12345678901{}", i % 2),
            operation: "CreateEvent".into(),
            token: format!("token-{i}"),
        };
        let response = |i: usize| StoredResponse {
            request_hash: format!("hash-{i}"),
            status: 201,
            body: format!("{{\"n\":{i}}}"),
        };
        // Records and lookups of 300 tokens at once share batches (and, past 64 lookups or 256
        // records, several statements per batch); each caller must still get its own answer.
        let mut recorded = Vec::new();
        for i in 0..300 {
            let store = store.clone();
            recorded.push(tokio::spawn(async move { record(&store, &key(i), &response(i)).await }));
        }
        for handle in recorded {
            handle.await.unwrap();
        }
        let mut looked_up = Vec::new();
        for i in 0..400 {
            let store = store.clone();
            looked_up.push(tokio::spawn(
                async move { store.idempotency_lookup(&key(i)).await.unwrap() },
            ));
        }
        for (i, handle) in looked_up.into_iter().enumerate() {
            let expected = (i < 300).then(|| response(i));
            assert_eq!(handle.await.unwrap(), expected, "token {i}");
        }
    }
}

#[tokio::test]
async fn grouped_writes_are_durable_and_isolated_from_each_others_failures() {
    for test in stores(Arc::new(clock())).await {
        let store = test.store.clone();
        let mut handles = Vec::new();
        for i in 0..200_i64 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                store
                    .write(move |conn| {
                        Box::pin(async move {
                            if i % 10 == 0 {
                                // Every tenth write fails after writing something.
                                sqlx::query(
                                    "INSERT INTO tags (resource_arn, tag_key, tag_value) VALUES ($1, 'k', 'v')",
                                )
                                .bind(format!("failed-{i}"))
                                .execute(&mut *conn)
                                .await?;
                                return Err(berth_store::StoreError::Unavailable(format!("write {i} fails")));
                            }
                            sqlx::query("INSERT INTO tags (resource_arn, tag_key, tag_value) VALUES ($1, 'k', 'v')")
                                .bind(format!("ok-{i}"))
                                .execute(&mut *conn)
                                .await?;
                            Ok(i)
                        })
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.await.unwrap() {
                Ok(value) => {
                    assert_eq!(value, i as i64);
                    ok += 1;
                }
                Err(error) => assert!(i % 10 == 0, "write {i} failed: {error}"),
            }
        }
        assert_eq!(ok, 180);
        for i in 0..200 {
            let prefix = if i % 10 == 0 { "failed" } else { "ok" };
            let tags = store.tags(&format!("{prefix}-{i}")).await.unwrap();
            assert_eq!(tags.len(), usize::from(i % 10 != 0), "write {i}");
        }
    }
}

#[tokio::test]
async fn tags_and_policies_round_trip() {
    for test in stores(Arc::new(clock())).await {
        let store = &test.store;
        let arn = "arn:aws:bedrock-agentcore:us-east-1:123456789012:memory/m-AbCdEfGhIj";
        let tags: BTreeMap<String, String> = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        store.tag_resource(arn, &tags).await.unwrap();
        store
            .tag_resource(arn, &[("a".to_string(), "3".to_string())].into())
            .await
            .unwrap();
        store
            .untag_resource(arn, &["b".into(), "missing".into()])
            .await
            .unwrap();
        assert_eq!(
            store.tags(arn).await.unwrap(),
            [("a".to_string(), "3".to_string())].into()
        );

        assert_eq!(store.resource_policy(arn).await.unwrap(), None);
        store.put_resource_policy(arn, "{\"v\":1}").await.unwrap();
        store.put_resource_policy(arn, "{\"v\":2}").await.unwrap();
        assert_eq!(store.resource_policy(arn).await.unwrap().as_deref(), Some("{\"v\":2}"));
        assert!(store.delete_resource_policy(arn).await.unwrap());
        assert!(!store.delete_resource_policy(arn).await.unwrap());
    }
}

#[tokio::test]
async fn jobs_run_retry_with_backoff_and_survive_a_crashed_worker() {
    let clock = clock();
    for test in stores(Arc::new(clock.clone())).await {
        let store = test.store.clone();
        let mut tx = store.begin().await.unwrap();
        jobs::enqueue(&mut tx, "flaky", &serde_json::json!({"n": 1}), store.now())
            .await
            .unwrap();
        jobs::enqueue(&mut tx, "ok", &serde_json::json!({}), store.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut worker = Worker::new(store.clone());
        let counter = runs.clone();
        worker.register(
            "flaky",
            Arc::new(move |_| {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    if n == 0 {
                        Err("first try fails".to_string())
                    } else {
                        Ok(())
                    }
                })
            }),
        );
        worker.register("ok", Arc::new(|_| Box::pin(async { Ok(()) })));

        assert_eq!(worker.run_due().await.unwrap(), 2);
        let pending = store.pending_jobs().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].2.as_deref(), Some("first try fails"));
        // Not due again until the backoff has passed.
        assert_eq!(worker.run_due().await.unwrap(), 0);
        clock.advance(5_000);
        assert_eq!(worker.run_due().await.unwrap(), 1);
        assert!(store.pending_jobs().await.unwrap().is_empty());

        // A worker that claims a job and dies leaves it leased; it runs again after the lease.
        let mut tx = store.begin().await.unwrap();
        jobs::enqueue(&mut tx, "ok", &serde_json::json!({}), store.now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(store.claim_job().await.unwrap().is_some());
        assert_eq!(worker.run_due().await.unwrap(), 0);
        clock.advance(61_000);
        assert_eq!(worker.run_due().await.unwrap(), 1);
        clock.set(Timestamp(1_800_000_000_000));
    }
}
