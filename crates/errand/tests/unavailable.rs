//! What the API answers when its store cannot be reached: 503 with a clear
//! code, never a 500 and never a hang; liveness stays up, readiness goes down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use errand::url::StoreUrl;
use errand::SystemClock;
use errand_core::{Clock, Job, JobEvent, JobId, Progress, Timestamp};
use errand_server::{AppState, ServerConfig};
use errand_store::*;
use serde_json::{json, Value};

/// A real SQLite store behind a switch that makes every call fail the way
/// an unreachable database does.
struct Unplugged {
    inner: Arc<dyn Store>,
    down: AtomicBool,
}

impl Unplugged {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Unplugged {
    async fn submit(&self, job: NewJob) -> Result<SubmitReceipt, StoreError> {
        self.check()?;
        self.inner.submit(job).await
    }
    async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<SubmitReceipt>, StoreError> {
        self.check()?;
        self.inner.submit_batch(jobs).await
    }
    async fn claim(&self, params: ClaimParams) -> Result<Vec<Job>, StoreError> {
        self.check()?;
        self.inner.claim(params).await
    }
    async fn heartbeat(&self, params: HeartbeatParams) -> Result<HeartbeatReply, StoreError> {
        self.check()?;
        self.inner.heartbeat(params).await
    }
    async fn finish(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.check()?;
        self.inner.finish(outcomes).await
    }
    async fn report_progress(&self, fence: &Fence, progress: Progress) -> Result<(), StoreError> {
        self.check()?;
        self.inner.report_progress(fence, progress).await
    }
    async fn append_log(&self, fence: &Fence, line: String) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_log(fence, line).await
    }
    async fn cancel(&self, job_id: &JobId) -> Result<Job, StoreError> {
        self.check()?;
        self.inner.cancel(job_id).await
    }
    async fn retry(&self, job_id: &JobId) -> Result<Job, StoreError> {
        self.check()?;
        self.inner.retry(job_id).await
    }
    async fn reap_expired(&self) -> Result<Vec<JobId>, StoreError> {
        self.check()?;
        self.inner.reap_expired().await
    }
    async fn get(&self, job_id: &JobId) -> Result<Job, StoreError> {
        self.check()?;
        self.inner.get(job_id).await
    }
    async fn list(&self, params: ListParams) -> Result<JobPage, StoreError> {
        self.check()?;
        self.inner.list(params).await
    }
    async fn events(
        &self,
        job_id: &JobId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<JobEvent>, StoreError> {
        self.check()?;
        self.inner.events(job_id, after_seq, limit).await
    }
    async fn feed(&self, after_id: i64, limit: usize) -> Result<Vec<JobEvent>, StoreError> {
        self.check()?;
        self.inner.feed(after_id, limit).await
    }
    async fn feed_head(&self) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.feed_head().await
    }
    async fn stats(&self) -> Result<Vec<CommandStats>, StoreError> {
        self.check()?;
        self.inner.stats().await
    }
    async fn prune(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.prune(before).await
    }
    async fn register_worker(&self, worker: WorkerRegistration) -> Result<(), StoreError> {
        self.check()?;
        self.inner.register_worker(worker).await
    }
    async fn deregister_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.deregister_worker(worker_id).await
    }
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        self.check()?;
        self.inner.workers().await
    }
    async fn commands(&self) -> Result<Vec<CommandInfo>, StoreError> {
        self.check()?;
        self.inner.commands().await
    }
    fn subscribe(&self) -> ChangeFeed {
        self.inner.subscribe()
    }
    fn commits(&self) -> u64 {
        self.inner.commits()
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_gives_503_not_500() {
    let dir = tempfile::tempdir().unwrap();
    let inner = StoreUrl::parse(&format!("sqlite://{}", dir.path().join("u.db").display()))
        .unwrap()
        .open(Arc::new(SystemClock))
        .await
        .unwrap();
    let registry = errand::demo::registry().unwrap();
    inner
        .register_worker(WorkerRegistration {
            worker_id: "w".into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["default".into()],
            slots: 1,
            commands: registry.command_infos("w", Timestamp::default()),
        })
        .await
        .unwrap();
    let store = Arc::new(Unplugged {
        inner,
        down: AtomicBool::new(false),
    });
    let state = AppState::new(store.clone(), ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(errand_server::serve(listener, state.clone()));
    let client = reqwest::Client::new();
    let submit = || {
        client
            .post(format!("{base}/api/commands/jobs"))
            .json(&json!({"app": "demo", "command": "echo", "input": {}}))
            .send()
    };
    assert_eq!(submit().await.unwrap().status(), 202);

    store.down.store(true, Ordering::SeqCst);
    let response = submit().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");
    for path in [
        "/api/commands/jobs",
        "/api/commands/jobs/x",
        "/api/commands/stats",
        "/api/workers",
    ] {
        let status = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 503, "{path}");
    }
    assert_eq!(
        client
            .get(format!("{base}/api/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        submit().await.unwrap().status(),
        202,
        "back when the store is"
    );
    assert_eq!(
        client
            .get(format!("{base}/api/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    state.shutdown.cancel();
}
