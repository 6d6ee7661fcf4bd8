//! What a handler gets besides its input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use errand_core::{JobId, Progress, Timestamp};
use errand_store::{Fence, NewJob, Store, StoreError};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The running attempt's view of its job. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<Inner>,
}

struct Inner {
    fence: Fence,
    context: Option<Value>,
    /// The checkpoint the attempt started with.
    checkpoint: Option<Value>,
    started: Timestamp,
    store: Arc<dyn Store>,
    cancel: CancellationToken,
    progress_interval: Duration,
    throttle: Mutex<Throttle>,
}

/// Progress writes are throttled; the last throttled report is written
/// when the interval is up, so what a client sees never goes stale.
#[derive(Default)]
struct Throttle {
    last_write: Option<Instant>,
    pending: Option<Progress>,
    flush_scheduled: bool,
}

impl JobContext {
    pub(crate) fn new(
        fence: Fence,
        context: Option<Value>,
        checkpoint: Option<Value>,
        started: Timestamp,
        store: Arc<dyn Store>,
        cancel: CancellationToken,
        progress_interval: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                fence,
                context,
                checkpoint,
                started,
                store,
                cancel,
                progress_interval,
                throttle: Mutex::new(Throttle::default()),
            }),
        }
    }

    pub fn job_id(&self) -> &JobId {
        &self.inner.fence.job_id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.fence.attempt
    }

    /// The `context` JSON the job was submitted with (user, tenant...).
    pub fn context(&self) -> Option<&Value> {
        self.inner.context.as_ref()
    }

    /// The last checkpoint an earlier attempt saved (`None` on a fresh
    /// start): continue from there instead of starting over.
    pub fn checkpoint(&self) -> Option<&Value> {
        self.inner.checkpoint.as_ref()
    }

    /// [`checkpoint`](Self::checkpoint) decoded into the handler's own
    /// type; `None` on a fresh start or if it no longer decodes.
    pub fn checkpoint_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.inner.checkpoint.clone()?).ok()
    }

    /// Saves a checkpoint: durable when this returns, and what every later
    /// attempt of the job starts with. Fenced: an attempt that lost the job
    /// gets `LeaseLost` and saves nothing.
    pub async fn save_checkpoint(
        &self,
        checkpoint: impl serde::Serialize,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_value(checkpoint)
            .map_err(|e| StoreError::Invalid(format!("the checkpoint is not JSON: {e}")))?;
        self.inner
            .store
            .save_checkpoint(&self.inner.fence, value)
            .await
    }

    pub fn started(&self) -> Timestamp {
        self.inner.started
    }

    /// Fires when the job is canceled, times out, or its worker loses the
    /// lease or shuts down. Stop soon after: past a grace period the task
    /// is aborted.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    pub fn is_canceled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when [`cancel_token`](Self::cancel_token) fires.
    pub async fn canceled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Reports progress: `fraction` from 0 to 1 and a message. Writes are
    /// throttled (one per progress interval); the final `1.0` always goes
    /// through.
    pub async fn progress(
        &self,
        fraction: f64,
        message: impl Into<String>,
    ) -> Result<(), StoreError> {
        self.report(Progress {
            fraction: Some(fraction),
            message: Some(message.into()),
            ..Progress::default()
        })
        .await
    }

    /// Reports a full progress record (stage, structured data), throttled
    /// like [`progress`](Self::progress).
    pub async fn report(&self, progress: Progress) -> Result<(), StoreError> {
        let finished = progress.fraction.is_some_and(|f| f >= 1.0);
        let now = Instant::now();
        {
            let mut throttle = self.inner.throttle.lock().expect("never poisoned");
            let next_due = throttle
                .last_write
                .map(|at| at + self.inner.progress_interval);
            if !finished && next_due.is_some_and(|due| now < due) {
                throttle.pending = Some(progress);
                if !throttle.flush_scheduled {
                    throttle.flush_scheduled = true;
                    let ctx = self.clone();
                    let due = next_due.expect("checked above");
                    tokio::spawn(async move {
                        tokio::time::sleep_until(due).await;
                        ctx.flush_pending().await;
                    });
                }
                return Ok(());
            }
            throttle.last_write = Some(now);
            throttle.pending = None;
        }
        self.inner
            .store
            .report_progress(&self.inner.fence, progress)
            .await
    }

    async fn flush_pending(&self) {
        let pending = {
            let mut throttle = self.inner.throttle.lock().expect("never poisoned");
            throttle.flush_scheduled = false;
            let pending = throttle.pending.take();
            if pending.is_some() {
                throttle.last_write = Some(Instant::now());
            }
            pending
        };
        if let Some(progress) = pending {
            // After the attempt ended this is fenced out, which is right.
            let _ = self
                .inner
                .store
                .report_progress(&self.inner.fence, progress)
                .await;
        }
    }

    /// Appends a line to the job's event log.
    pub async fn log(&self, line: impl Into<String>) -> Result<(), StoreError> {
        self.inner
            .store
            .append_log(&self.inner.fence, line.into())
            .await
    }

    /// Submits a child job; it records this job as its `parent_id`.
    pub async fn submit(&self, job: NewJob) -> Result<JobId, StoreError> {
        let job = job.parent(self.job_id().clone());
        Ok(self.inner.store.submit(job).await?.job_id)
    }
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("job_id", self.job_id())
            .field("attempt", &self.attempt())
            .finish()
    }
}
