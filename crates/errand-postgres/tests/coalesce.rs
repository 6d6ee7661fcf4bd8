//! Single submits that arrive together are written together (group
//! commit), and each caller still gets its own answer: its job, or the
//! error that is its own.

use std::sync::Arc;

use errand_core::JobStatus;
use errand_postgres::PgStore;
use errand_store::{NewJob, Store, StoreError};
use serde_json::json;

mod common;

async fn store() -> Option<(Arc<PgStore>, common::database::TestDatabase)> {
    let (config, guard) = common::fresh_database().await?;
    let store = common::system_clock_store(config).await;
    Some((Arc::new(store), guard))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_each_get_their_own_durable_job() {
    let Some((store, _guard)) = store().await else {
        return;
    };
    const SUBMITS: usize = 400;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SUBMITS {
        let store = store.clone();
        tasks.spawn(async move {
            let receipt = store
                .submit(NewJob::new("a", "b", json!({"i": i})))
                .await
                .unwrap();
            (i, receipt)
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (i, receipt) = done.unwrap();
        assert!(receipt.created);
        // Answered only after its commit: the job and its event are there.
        let job = store.get(&receipt.job_id).await.unwrap();
        assert_eq!(
            (job.input["i"].as_u64(), job.status),
            (Some(i as u64), JobStatus::New)
        );
        assert_eq!(store.events(&receipt.job_id, 0, 10).await.unwrap().len(), 1);
        assert!(ids.insert(receipt.job_id));
    }
    assert_eq!(ids.len(), SUBMITS);
    let feed = store.feed(0, 10_000).await.unwrap();
    assert_eq!(feed.len(), SUBMITS, "one event per job, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_database_refuses_fails_alone() {
    let Some((store, _guard)) = store().await else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let store = store.clone();
        tasks.spawn(async move {
            // PostgreSQL's jsonb cannot hold \u0000; the job is valid to errand.
            let input = if i == 30 {
                json!({"text": "nul \u{0} here"})
            } else {
                json!({"i": i})
            };
            (i, store.submit(NewJob::new("a", "b", input)).await)
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (30, result) => assert!(
                matches!(result, Err(StoreError::Invalid(ref m)) if m.contains("Unicode")),
                "{result:?}"
            ),
            (i, result) => assert!(
                result.is_ok(),
                "job {i} failed with the refused one: {result:?}"
            ),
        }
    }
    assert_eq!(store.feed(0, 1000).await.unwrap().len(), 59);
}
