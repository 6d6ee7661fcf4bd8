//! Crash behaviour with real processes: workers are SIGKILLed and SIGSTOPped
//! while they run jobs on a shared SQLite file.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use errand::url::StoreUrl;
use errand::{
    EventKind, Job, JobId, JobStatus, ListParams, NewJob, RetryPolicy, Store, StoreError,
    SystemClock,
};
use errand_store::{Fence, Outcome};
use serde_json::json;

/// A worker process with short leases, so recovery is quick.
fn spawn_worker(db: &Path, worker_id: &str, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["worker", "--store"])
        .arg(format!("sqlite://{}", db.display()))
        .args(["--max-tasks", "4", "--worker-id", worker_id])
        .args([
            "--heartbeat-ms",
            "100",
            "--lease-ms",
            "1000",
            "--poll-ms",
            "100",
        ])
        .env("ERRAND_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("the errand binary starts")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

async fn open(db: &Path) -> Arc<dyn Store> {
    StoreUrl::parse(&format!("sqlite://{}", db.display()))
        .unwrap()
        .open(Arc::new(SystemClock))
        .await
        .unwrap()
}

async fn wait_until<F>(what: &str, mut check: F)
where
    F: AsyncFnMut() -> bool,
{
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn jobs_with(store: &Arc<dyn Store>, ids: &[JobId], status: JobStatus) -> Vec<Job> {
    let mut found = Vec::new();
    for id in ids {
        let job = store.get(id).await.unwrap();
        if job.status == status {
            found.push(job);
        }
    }
    found
}

fn sleep_job(secs: f64) -> NewJob {
    NewJob::new("demo", "sleep", json!({"secs": secs, "steps": 3})).retry(RetryPolicy {
        max_attempts: 5,
        ..RetryPolicy::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_jobs_run_again_with_exactly_one_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let store = open(&db).await;
    let ids: Vec<JobId> = store
        .submit_batch((0..16).map(|_| sleep_job(0.6)).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();

    let mut first = spawn_worker(&db, "doomed", &dir.path().join("doomed.log"));
    wait_until("the first worker runs 4 jobs", async || {
        jobs_with(&store, &ids, JobStatus::Running).await.len() == 4
    })
    .await;
    let killed: Vec<JobId> = jobs_with(&store, &ids, JobStatus::Running)
        .await
        .into_iter()
        .filter(|j| j.worker_id.as_deref() == Some("doomed"))
        .map(|j| j.job_id)
        .collect();
    assert!(!killed.is_empty());
    first.kill().unwrap(); // SIGKILL: no shutdown, no release
    first.wait().unwrap();

    let mut second = spawn_worker(&db, "rescuer", &dir.path().join("rescuer.log"));
    wait_until("every job completes", async || {
        jobs_with(&store, &ids, JobStatus::Completed).await.len() == ids.len()
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();

    let killed: HashSet<JobId> = killed.into_iter().collect();
    for id in &ids {
        let job = store.get(id).await.unwrap();
        let events = store.events(id, 0, 1000).await.unwrap();
        let outcomes = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Result) || e.is_terminal())
            .count();
        assert_eq!(
            outcomes, 1,
            "job {id} has exactly one recorded outcome: {events:#?}"
        );
        if killed.contains(id) {
            assert!(job.attempt >= 2, "the killed attempt of {id} was counted");
            assert_eq!(job.worker_id.as_deref(), Some("rescuer"));
            let expiry = events
                .iter()
                .find(|e| e.kind == EventKind::Failure)
                .expect("the lost attempt is in the history");
            assert_eq!(expiry.data["error"]["kind"], json!("lease_expired"));
        } else {
            assert!(job.attempt >= 1);
        }
    }
}

/// The running jobs `worker_id` holds now, read in pages.
async fn running_for(store: &Arc<dyn Store>, worker_id: &str) -> Vec<Job> {
    let mut held = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(ListParams {
                status: Some(JobStatus::Running),
                limit: 1000,
                cursor,
                ..ListParams::default()
            })
            .await
            .unwrap();
        held.extend(
            page.jobs
                .into_iter()
                .filter(|job| job.worker_id.as_deref() == Some(worker_id)),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return held,
        }
    }
}

/// A worker of quick jobs holds jobs claimed ahead of its 4 slots. Killed
/// while it holds them, it loses none: each runs again elsewhere once its
/// lease expires, with exactly one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_held_ahead_by_a_killed_worker_run_again_with_exactly_one_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ahead.db");
    let store = open(&db).await;
    let quick = || {
        NewJob::new("demo", "noop", json!({})).retry(RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::default()
        })
    };
    let ids: Vec<JobId> = store
        .submit_batch((0..20_000).map(|_| quick()).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();

    let mut first = spawn_worker(&db, "doomed", &dir.path().join("doomed.log"));
    // Frozen, the worker's running set stands still: kill it once it
    // holds more jobs than it has slots.
    let mut held = Vec::new();
    wait_until("the worker holds jobs ahead of its 4 slots", async || {
        signal(&first, "STOP");
        held = running_for(&store, "doomed").await;
        if held.len() > 4 {
            return true;
        }
        signal(&first, "CONT");
        false
    })
    .await;
    first.kill().unwrap(); // SIGKILL: no shutdown, no release
    first.wait().unwrap();

    let mut second = spawn_worker(&db, "rescuer", &dir.path().join("rescuer.log"));
    wait_until("every job completes", async || {
        store.stats().await.unwrap()[0].counts["completed"] == ids.len() as u64
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();

    for job in &held {
        let now = store.get(&job.job_id).await.unwrap();
        assert_eq!(now.status, JobStatus::Completed);
        assert_eq!(now.worker_id.as_deref(), Some("rescuer"));
        assert_eq!(now.attempt, job.attempt + 1, "the held attempt was counted");
        let events = store.events(&job.job_id, 0, 1000).await.unwrap();
        let results = events
            .iter()
            .filter(|e| e.kind == EventKind::Result)
            .count();
        assert_eq!(results, 1, "{events:#?}");
    }
    for id in &ids {
        let events = store.events(id, 0, 1000).await.unwrap();
        let outcomes = events.iter().filter(|e| e.is_terminal()).count();
        assert_eq!(outcomes, 1, "job {id} has exactly one outcome: {events:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_workers_late_completion_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stale.db");
    let store = open(&db).await;
    let id = store.submit(sleep_job(1.5)).await.unwrap().job_id;

    let stale_log = dir.path().join("stale.log");
    let mut stale = spawn_worker(&db, "stale", &stale_log);
    wait_until("the stale worker runs the job", async || {
        store.get(&id).await.unwrap().status == JobStatus::Running
    })
    .await;
    let stale_attempt = store.get(&id).await.unwrap().attempt;
    signal(&stale, "STOP"); // frozen: no heartbeats, but alive

    let mut fresh = spawn_worker(&db, "fresh", &dir.path().join("fresh.log"));
    wait_until("the fresh worker completes the job", async || {
        store.get(&id).await.unwrap().status == JobStatus::Completed
    })
    .await;
    signal(&stale, "CONT"); // wakes up believing it still holds the job
    wait_until("the stale worker notices", async || {
        let log = std::fs::read_to_string(&stale_log).unwrap();
        log.contains("outcome not recorded") || log.contains("lost the lease")
    })
    .await;
    // Give any late write a moment to land, then check none did.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stale.kill().unwrap();
    fresh.kill().unwrap();
    stale.wait().unwrap();
    fresh.wait().unwrap();

    let job = store.get(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.worker_id.as_deref(), Some("fresh"));
    assert!(job.attempt > stale_attempt);
    let events = store.events(&id, 0, 1000).await.unwrap();
    let results = events
        .iter()
        .filter(|e| e.kind == EventKind::Result)
        .count();
    assert_eq!(results, 1, "one outcome: {events:#?}");
    assert!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Progress)
            .all(|e| e.at <= job.finished.unwrap()),
        "no progress from the stale worker after the outcome"
    );
    // The same late completion, sent directly, is fenced out too.
    let late = store
        .finish(vec![(
            Fence {
                job_id: id.clone(),
                attempt: stale_attempt,
                worker_id: "stale".into(),
            },
            Outcome::Completed {
                result: json!("stale"),
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    assert_eq!(store.get(&id).await.unwrap(), job, "nothing changed");
}
