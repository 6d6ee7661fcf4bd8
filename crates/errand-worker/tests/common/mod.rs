//! The harness the worker tests share: a worker on a real SQLite store.

use std::sync::Arc;
use std::time::Duration;

use errand_core::{Job, JobId, JobStatus};
use errand_sqlite::{SqliteOptions, SqliteStore};
use errand_store::{NewJob, Store};
use errand_worker::{Registry, Worker, WorkerConfig, WorkerError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
    pub worker: Option<JoinHandle<Result<(), WorkerError>>>,
    _dir: tempfile::TempDir,
}

pub fn fast_config() -> WorkerConfig {
    WorkerConfig {
        lease: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(50),
        reap_interval: Duration::from_millis(100),
        cancel_grace: Duration::from_millis(300),
        shutdown_timeout: Duration::from_secs(5),
        progress_interval: Duration::ZERO,
        ..WorkerConfig::default()
    }
}

impl Harness {
    pub async fn start(registry: Registry, config: WorkerConfig) -> Self {
        Self::start_seen_through(registry, config, |store| store).await
    }

    /// The worker sees the store through `wrap` (to slow or fail calls).
    pub async fn start_seen_through(
        registry: Registry,
        config: WorkerConfig,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("errand.db"), SqliteOptions::default()).unwrap(),
        );
        let store = wrap(store);
        let shutdown = CancellationToken::new();
        let worker = Worker::new(store.clone(), registry, config);
        let worker = Some(tokio::spawn(worker.run(shutdown.clone())));
        Self {
            store,
            shutdown,
            worker,
            _dir: dir,
        }
    }

    pub async fn submit(&self, job: NewJob) -> JobId {
        self.store.submit(job).await.unwrap().job_id
    }

    /// Polls until the job reaches `status` (tests never time how fast).
    pub async fn wait_for(&self, id: &JobId, status: JobStatus) -> Job {
        for _ in 0..2000 {
            let job = self.store.get(id).await.unwrap();
            if job.status == status {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "job {id} never became {status}: {:?}",
            self.store.get(id).await.unwrap()
        );
    }

    /// Submits `jobs` together and waits until each has completed.
    // Every test binary compiles this module; external.rs never batches.
    #[allow(dead_code)]
    pub async fn run_to_completion(&self, jobs: Vec<NewJob>) -> Vec<Job> {
        let receipts = self.store.submit_batch(jobs).await.unwrap();
        let mut done = Vec::with_capacity(receipts.len());
        for receipt in &receipts {
            done.push(self.wait_for(&receipt.job_id, JobStatus::Completed).await);
        }
        done
    }

    pub async fn stop(&mut self) -> Result<(), WorkerError> {
        self.shutdown.cancel();
        self.worker.take().unwrap().await.unwrap()
    }
}
