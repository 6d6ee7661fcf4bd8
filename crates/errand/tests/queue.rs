//! The embedding API, end to end with an in-process worker.

use std::time::Duration;

use errand::demo::{Sleep, SleepInput};
use errand::{Error, JobStatus, ListParams, NewJob, Queue, WorkerConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct App {
    queue: Queue,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), errand_worker::WorkerError>>,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?synchronous=full",
        dir.path().join("q.db").display()
    );
    let queue = Queue::open(&url).await.unwrap();
    let shutdown = CancellationToken::new();
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(200),
        ..WorkerConfig::default()
    };
    let worker = queue.worker(errand::demo::registry().unwrap(), config);
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    App {
        queue,
        shutdown,
        worker,
        _dir: dir,
    }
}

impl App {
    async fn stop(self) {
        self.shutdown.cancel();
        self.worker.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn submit_then_wait_returns_the_result() {
    let app = app().await;
    let id = app
        .queue
        .submit(NewJob::new("demo", "echo", json!({"hello": "world"})))
        .await
        .unwrap();
    let job = app.queue.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.result, Some(json!({"hello": "world"})));
    app.stop().await;
}

#[tokio::test]
async fn a_wait_that_times_out_leaves_the_job_running() {
    let app = app().await;
    let input = SleepInput {
        secs: 30.0,
        steps: 30,
    };
    let id = app.queue.submit_command(&Sleep, &input).await.unwrap();
    let err = app
        .queue
        .wait(&id, Duration::from_millis(300))
        .await
        .unwrap_err();
    let Error::WaitTimeout(job) = err else {
        panic!("expected a wait timeout, got {err:?}");
    };
    assert!(!job.status.is_terminal());
    let job = app.queue.status(&id).await.unwrap();
    assert!(!job.status.is_terminal(), "waiting did not cancel the job");
    let canceled = app.queue.cancel(&id).await.unwrap();
    assert!(canceled.status == JobStatus::Canceled || canceled.cancel_requested);
    let job = app.queue.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(job.status, JobStatus::Canceled);
    app.stop().await;
}

#[tokio::test]
async fn retry_runs_a_canceled_job_again() {
    let app = app().await;
    let id = app
        .queue
        .submit(
            NewJob::new("demo", "echo", json!(1))
                .run_at(errand::Timestamp::from_micros(i64::MAX / 2)),
        )
        .await
        .unwrap();
    assert_eq!(
        app.queue.cancel(&id).await.unwrap().status,
        JobStatus::Canceled
    );
    let err = app.queue.cancel(&id).await.unwrap_err();
    assert!(
        matches!(err, Error::Store(errand::StoreError::Conflict { .. })),
        "{err:?}"
    );
    app.queue.retry(&id).await.unwrap();
    let job = app.queue.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    let events = app.queue.events(&id, 0).await.unwrap();
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(statuses, ["new", "canceled", "new", "running", "completed"]);
    app.stop().await;
}

#[tokio::test]
async fn failing_job_is_retried_by_policy_then_completes() {
    let app = app().await;
    let mut job = NewJob::new("demo", "fail", json!({"times": 1}));
    job.retry.wait_strategy = errand::WaitStrategy::Fixed;
    job.retry.wait_time = 0.05;
    let id = app.queue.submit(job).await.unwrap();
    let job = app.queue.wait(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.result, Some(json!({"succeeded_on_attempt": 2})));
    app.stop().await;
}

#[tokio::test]
async fn batches_lists_and_idempotency_keys() {
    let app = app().await;
    let ids = app
        .queue
        .submit_batch(
            (0..5)
                .map(|i| NewJob::new("demo", "echo", json!(i)))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 5);
    let first = app
        .queue
        .submit_with_receipt(NewJob::new("demo", "echo", json!("a")).idempotency_key("once"))
        .await
        .unwrap();
    let second = app
        .queue
        .submit_with_receipt(NewJob::new("demo", "echo", json!("b")).idempotency_key("once"))
        .await
        .unwrap();
    assert_eq!(first.job_id, second.job_id);
    assert!(first.created && !second.created);
    for id in &ids {
        app.queue.wait(id, Duration::from_secs(30)).await.unwrap();
    }
    let page = app
        .queue
        .list(ListParams {
            command: Some("demo.echo".into()),
            limit: 3,
            ..ListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 3);
    assert!(page.next_cursor.is_some());
    app.stop().await;
}

#[tokio::test]
async fn bad_store_urls_are_reported_clearly() {
    let err = Queue::open("postgres://postgres@127.0.0.1:1/x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    let err = Queue::open("mysql://localhost/x").await.unwrap_err();
    assert!(err.to_string().contains("unknown store"), "{err}");
    let err = Queue::open("sqlite:///nonexistent-dir/sub/x.db")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent-dir"), "{err}");
}
