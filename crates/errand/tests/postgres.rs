//! errand on PostgreSQL end to end: the worker runtime on a PgStore, and
//! the change feed across store instances (each one is what a separate
//! process holds) through LISTEN/NOTIFY. Skipped, with a message, without
//! `ERRAND_TEST_PG_URL`; a failure when it is set but unreachable.

use std::sync::Arc;
use std::time::Duration;

use errand::{JobStatus, NewJob, Queue, Store, WorkerConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod common;
use common::Database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_jobs_on_postgres_with_one_outcome_each() {
    let Some(db) = Database::create().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let queue = Queue::from_store(store.clone());
    let stop = CancellationToken::new();
    let config = WorkerConfig {
        max_tasks: 8,
        poll_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = queue.worker(errand::demo::registry().unwrap(), config);
    let worker = tokio::spawn(worker.run(stop.clone()));
    let ids = queue
        .submit_batch(
            (0..100)
                .map(|i| NewJob::new("demo", "echo", json!({"i": i})))
                .collect(),
        )
        .await
        .unwrap();
    let sleeper = queue
        .submit(NewJob::new(
            "demo",
            "sleep",
            json!({"secs": 60, "steps": 60}),
        ))
        .await
        .unwrap();
    for id in &ids {
        let job = queue.wait(id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(job.status, JobStatus::Completed);
        let results = queue
            .events(id, 0)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.is_terminal())
            .count();
        assert_eq!(results, 1);
    }
    for _ in 0..200 {
        if queue.status(&sleeper).await.unwrap().status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    queue.cancel(&sleeper).await.unwrap();
    let job = queue.wait(&sleeper, Duration::from_secs(30)).await.unwrap();
    assert_eq!(job.status, JobStatus::Canceled);
    stop.cancel();
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_sees_every_event_through_listen_notify() {
    let Some(db) = Database::create().await else {
        return;
    };
    let writer = db.store().await;
    let reader = db.store().await;
    let mut feed = reader.subscribe();
    // Let the reader's LISTEN connection start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = writer
        .submit(NewJob::new("demo", "echo", json!({})))
        .await
        .unwrap()
        .job_id;
    writer.cancel(&id).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("the other instance's events arrive")
            .unwrap();
        if event.job_id == id {
            seen.push((event.seq, event.status));
        }
    }
    assert_eq!(seen, vec![(1, JobStatus::New), (2, JobStatus::Canceled)]);
    // Nothing twice.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let event = feed.recv().await.unwrap();
            if event.job_id == id {
                return event;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "an event was delivered twice: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_the_polling_fallback_still_delivers_every_event() {
    let Some(db) = Database::create().await else {
        return;
    };
    let writer = db.store().await;
    let deaf = db
        .store_with(errand_postgres::PgOptions {
            notifications: false,
            ..errand_postgres::PgOptions::default()
        })
        .await;
    let mut feed = deaf.subscribe();
    let id = writer
        .submit(NewJob::new("demo", "echo", json!({})))
        .await
        .unwrap()
        .job_id;
    writer.cancel(&id).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("the poll finds the other instance's events")
            .unwrap();
        if event.job_id == id {
            seen.push((event.seq, event.status));
        }
    }
    assert_eq!(seen, vec![(1, JobStatus::New), (2, JobStatus::Canceled)]);
}
