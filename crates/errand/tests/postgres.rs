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

/// Submits and cancels a job through `writer`; `feed` (another instance's)
/// must deliver both events, in order, exactly as stored.
async fn submit_cancel_and_see_both(
    writer: &errand_postgres::PgStore,
    feed: &mut errand_store::ChangeFeed,
) -> errand::JobId {
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
            seen.push((*event).clone());
        }
    }
    let order: Vec<(i64, JobStatus)> = seen.iter().map(|e| (e.seq, e.status)).collect();
    assert_eq!(order, vec![(1, JobStatus::New), (2, JobStatus::Canceled)]);
    // Announced exactly as stored (the submit's notification is built in SQL).
    assert_eq!(seen, writer.events(&id, 0, 10).await.unwrap());
    id
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
    let id = submit_cancel_and_see_both(&writer, &mut feed).await;
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
    submit_cancel_and_see_both(&writer, &mut feed).await;
}

/// Reads `/api/events` until `count` events came; their (id, job id).
async fn global_events(
    http: &reqwest::Client,
    url: &str,
    last_event_id: Option<i64>,
    count: usize,
) -> Vec<(i64, String)> {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let mut request = http.get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let mut stream = request.send().await.unwrap().bytes_stream().eventsource();
    let mut seen = Vec::new();
    while seen.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("the feed stalled after {} events", seen.len()))
            .expect("the stream stays open")
            .unwrap();
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        seen.push((
            event.id.parse().unwrap(),
            data["job_id"].as_str().unwrap().to_owned(),
        ));
    }
    seen
}

/// Concurrent writers commit out of event-id order on PostgreSQL; the
/// global feed must still send every event once, in id order, and resume
/// from any id it sent without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_feed_is_in_id_order_and_resumes_exactly_under_concurrent_writers() {
    let Some(db) = Database::create().await else {
        return;
    };
    let served: Arc<dyn Store> = Arc::new(db.store().await);
    let other: Arc<dyn Store> = Arc::new(db.store().await);
    let state =
        errand_server::AppState::new(served.clone(), errand_server::ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/events", listener.local_addr().unwrap());
    tokio::spawn(errand_server::serve(listener, state.clone()));
    let http = reqwest::Client::new();

    const JOBS: usize = 300;
    let reading = tokio::spawn(global_events_owned(http.clone(), url.clone(), None, JOBS));
    // Let the stream start before the writers do.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..12 {
        let store = if w % 2 == 0 {
            served.clone()
        } else {
            other.clone()
        };
        writers.spawn(async move {
            for i in 0..JOBS / 12 {
                store
                    .submit(NewJob::new("demo", "echo", json!({"w": w, "i": i})))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let live = reading.await.unwrap();
    assert!(live.windows(2).all(|w| w[0].0 < w[1].0), "not in id order");
    let jobs: std::collections::HashSet<&String> = live.iter().map(|(_, job)| job).collect();
    assert_eq!(jobs.len(), JOBS, "every job's event exactly once");

    // A client that dropped after the 100th event resumes with the rest.
    let resumed = global_events(&http, &url, Some(live[99].0), JOBS - 100).await;
    assert_eq!(resumed, live[100..].to_vec());
    state.shutdown.cancel();
}

async fn global_events_owned(
    http: reqwest::Client,
    url: String,
    last_event_id: Option<i64>,
    count: usize,
) -> Vec<(i64, String)> {
    global_events(&http, &url, last_event_id, count).await
}
