//! [`Queue`]: submit, follow, cancel and retry jobs from Rust.

use std::sync::Arc;
use std::time::Duration;

use errand_core::{CommandLimit, Job, JobEvent, JobId, SystemClock};
use errand_store::{JobPage, ListParams, NewJob, Store, StoreError, SubmitReceipt};
use errand_worker::{Command, Registry, Worker, WorkerConfig};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::url::StoreUrl;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bad store URL {0}")]
    BadUrl(String),
    #[error("bad input for {command}: {reason}")]
    BadInput { command: String, reason: String },
    /// The wait ended before the job did; the job keeps running.
    #[error("job {} is still {} after the wait", .0.job_id, .0.status)]
    WaitTimeout(Box<Job>),
}

/// A handle on a store: what an application uses to submit and follow
/// jobs. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
}

/// How often `wait` re-reads the job, for changes made by other processes
/// (in-process changes arrive through the change feed at once).
const WAIT_POLL: Duration = Duration::from_millis(500);

impl Queue {
    /// Opens the store at `url` (e.g. `sqlite://errand.db`).
    pub async fn open(url: &str) -> Result<Self, Error> {
        let store = StoreUrl::parse(url)?.open(Arc::new(SystemClock)).await?;
        Ok(Self { store })
    }

    pub fn from_store(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Submits a job; durable when this returns.
    pub async fn submit(&self, job: NewJob) -> Result<JobId, Error> {
        Ok(self.store.submit(job).await?.job_id)
    }

    /// Submits a job, telling whether its idempotency key matched a job.
    pub async fn submit_with_receipt(&self, job: NewJob) -> Result<SubmitReceipt, Error> {
        Ok(self.store.submit(job).await?)
    }

    /// Submits a typed command's job with the command's defaults.
    pub async fn submit_command<C>(&self, command: &C, input: &C::Input) -> Result<JobId, Error>
    where
        C: Command,
        C::Input: Serialize,
    {
        let full = errand_core::CommandName::new(C::APP, C::NAME).to_string();
        let input = serde_json::to_value(input).map_err(|e| Error::BadInput {
            command: full.clone(),
            reason: e.to_string(),
        })?;
        let job = command.options().defaults().new_job(C::APP, C::NAME, input);
        self.submit(job).await
    }

    /// Submits many jobs in one transaction: all or none.
    pub async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, Error> {
        let receipts = self.store.submit_batch(jobs).await?;
        Ok(receipts.into_iter().map(|r| r.job_id).collect())
    }

    pub async fn status(&self, job_id: &JobId) -> Result<Job, Error> {
        Ok(self.store.get(job_id).await?)
    }

    /// Waits until the job is finished (completed, failed or canceled).
    /// Past `timeout` it returns [`Error::WaitTimeout`] with the job as it
    /// is; the job itself is not touched.
    pub async fn wait(&self, job_id: &JobId, timeout: Duration) -> Result<Job, Error> {
        // Subscribe before reading, so an ending between the two is seen.
        let mut feed = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.store.get(job_id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            let woke = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + WAIT_POLL),
                async {
                    loop {
                        match feed.recv().await {
                            Ok(event) if event.job_id == *job_id && event.is_terminal() => return,
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => return,
                            Err(RecvError::Closed) => std::future::pending::<()>().await,
                        }
                    }
                },
            )
            .await;
            if woke.is_err() && tokio::time::Instant::now() >= deadline {
                let job = self.store.get(job_id).await?;
                return if job.status.is_terminal() {
                    Ok(job)
                } else {
                    Err(Error::WaitTimeout(Box::new(job)))
                };
            }
        }
    }

    /// Cancels a job: at once if it has not started, else its worker stops it.
    pub async fn cancel(&self, job_id: &JobId) -> Result<Job, Error> {
        Ok(self.store.cancel(job_id).await?)
    }

    /// Runs a failed or canceled job again, with its attempts reset,
    /// from its last checkpoint.
    pub async fn retry(&self, job_id: &JobId) -> Result<Job, Error> {
        Ok(self.store.retry(job_id).await?)
    }

    /// [`retry`](Self::retry) from scratch: the checkpoint is dropped.
    pub async fn retry_from_scratch(&self, job_id: &JobId) -> Result<Job, Error> {
        Ok(self.store.retry_job(job_id, true).await?)
    }

    /// Sets (or replaces) a command's cluster-wide limits: at most
    /// `max_running` of its jobs at once, at most `max_starts` starts per
    /// `per_secs`, per command or per `key` (`context.user_id`). Every
    /// worker on every host keeps to them from then on.
    pub async fn set_limit(&self, limit: CommandLimit) -> Result<CommandLimit, Error> {
        Ok(self.store.set_limit(limit).await?)
    }

    /// Lifts a command's limits (`app.name`).
    pub async fn delete_limit(&self, command: &str) -> Result<(), Error> {
        Ok(self.store.delete_limit(command).await?)
    }

    pub async fn limits(&self) -> Result<Vec<CommandLimit>, Error> {
        Ok(self.store.limits().await?)
    }

    pub async fn list(&self, params: ListParams) -> Result<JobPage, Error> {
        Ok(self.store.list(params).await?)
    }

    /// The job's event log after sequence number `after_seq` (0 for all).
    pub async fn events(&self, job_id: &JobId, after_seq: i64) -> Result<Vec<JobEvent>, Error> {
        Ok(self.store.events(job_id, after_seq, 10_000).await?)
    }

    /// A worker on this queue's store; run it with [`Worker::run`].
    pub fn worker(&self, registry: Registry, config: WorkerConfig) -> Worker {
        Worker::new(self.store.clone(), registry, config)
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}
