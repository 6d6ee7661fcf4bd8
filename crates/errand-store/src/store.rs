//! The [`Store`] trait.

use std::sync::Arc;

use async_trait::async_trait;
use errand_core::{
    Clock, CommandLimit, Job, JobEvent, JobId, JobStatus, KeyUsage, Progress, Timestamp,
};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::params::*;
use crate::webhooks::{DeliveryAttempt, TakeDeliveries, WebhookDelivery};

/// Every event a store commits, in commit order. A receiver that falls
/// behind gets `Lagged` and must catch up from [`Store::feed`].
pub type ChangeFeed = broadcast::Receiver<Arc<JobEvent>>;

/// Durable job storage. Every method that changes a job checks its current
/// status (and, for workers, its attempt and worker) in the same
/// transaction that writes it, so concurrent callers cannot lose updates.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a job (durable when this returns). With an idempotency key
    /// already in use, returns the existing job with `created: false`.
    async fn submit(&self, job: NewJob) -> Result<SubmitReceipt, StoreError>;

    /// Stores many jobs in one transaction: all or none.
    async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<SubmitReceipt>, StoreError>;

    /// Moves up to `limit` ready jobs to `running` for the worker: highest
    /// priority first, FIFO within a priority, `run_at <= now`.
    async fn claim(&self, params: ClaimParams) -> Result<Vec<Job>, StoreError>;

    /// Renews the leases of all the worker's running attempts in one call
    /// and tells which have a cancel request and which are lost.
    async fn heartbeat(&self, params: HeartbeatParams) -> Result<HeartbeatReply, StoreError>;

    /// Records how attempts ended, each a compare-and-set on its fence:
    /// a fenced-out attempt gets `LeaseLost` and changes nothing. Results are
    /// in the order of `outcomes`.
    async fn finish(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// Records outcomes as [`finish`](Self::finish) does and makes the
    /// claims in `claims` (in order) in the same call: the slots those
    /// outcomes free take their next jobs at no store call of their own.
    /// The claims see what the outcomes freed (a concurrency key, a
    /// limit's slot, a job a retryable failure due now put back).
    ///
    /// This default makes two calls. SQLite overrides it with one
    /// transaction; PostgreSQL with one transaction for a mixed batch, and
    /// for a batch of completions (which free nothing an unlimited claim
    /// could take) with two statements that each commit alone, sent
    /// together. A claim that fails after the outcomes committed claims
    /// nothing rather than fail outcomes that were recorded.
    async fn finish_and_claim(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
        claims: Vec<ClaimParams>,
    ) -> Result<FinishedAndClaimed, StoreError> {
        finish_then_claim(self, outcomes, claims).await
    }

    /// Records the progress of a running attempt (fenced).
    async fn report_progress(&self, fence: &Fence, progress: Progress) -> Result<(), StoreError>;

    /// Appends a handler's log line to the job's event log (fenced).
    async fn append_log(&self, fence: &Fence, line: String) -> Result<(), StoreError>;

    /// Cancels a `new` job at once; marks a running one `cancel_requested`
    /// (its worker stops it). `Conflict` for a finished job.
    async fn cancel(&self, job_id: &JobId) -> Result<Job, StoreError>;

    /// Sends a failed or canceled job back to `new` with its attempts reset
    /// and its history kept; its checkpoint too, unless `clear_checkpoint`
    /// (the next attempt then starts from scratch). `Conflict` otherwise.
    async fn retry_job(&self, job_id: &JobId, clear_checkpoint: bool) -> Result<Job, StoreError>;

    /// [`Store::retry_job`] keeping the checkpoint.
    async fn retry(&self, job_id: &JobId) -> Result<Job, StoreError> {
        self.retry_job(job_id, false).await
    }

    /// Saves a running attempt's checkpoint (fenced): durable when this
    /// returns, handed to every later attempt of the job.
    async fn save_checkpoint(&self, fence: &Fence, checkpoint: Value) -> Result<(), StoreError>;

    /// Returns running jobs whose lease expired to `new` (attempt counted),
    /// or fails them when no attempts are left. Returns the jobs it moved.
    async fn reap_expired(&self) -> Result<Vec<JobId>, StoreError>;

    async fn get(&self, job_id: &JobId) -> Result<Job, StoreError>;

    async fn list(&self, params: ListParams) -> Result<JobPage, StoreError>;

    /// The job's events with `seq > after_seq`, oldest first.
    async fn events(
        &self,
        job_id: &JobId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<JobEvent>, StoreError>;

    /// All jobs' events with `id > after_id`, oldest first, up to the
    /// settled head: an event is returned only once no event with a lower
    /// id can still commit, so a reader that resumes after the last id it
    /// saw never misses one (PostgreSQL commits out of id order).
    async fn feed(&self, after_id: i64, limit: usize) -> Result<Vec<JobEvent>, StoreError>;

    /// The settled head of the feed: the highest event id that `feed` may
    /// return now (0 when there is none). Every event committed later has
    /// a higher id.
    async fn feed_head(&self) -> Result<i64, StoreError>;

    async fn stats(&self) -> Result<Vec<CommandStats>, StoreError>;

    /// Completed and failed jobs per minute, for jobs finished at or after
    /// `since`; oldest minute first, minutes with neither left out.
    async fn finished_per_minute(
        &self,
        since: Timestamp,
    ) -> Result<Vec<FinishedInMinute>, StoreError>;

    /// Deletes jobs that ended with one of `statuses` (all terminal) before
    /// `before`, and their events. Servers sharing a PostgreSQL database
    /// take turns: a prune that finds another one running deletes nothing.
    async fn prune_statuses(
        &self,
        statuses: &[JobStatus],
        before: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Deletes those of `job_ids` that have ended (completed, failed or
    /// canceled), with their events; a job still new or running stays.
    /// Returns how many were deleted.
    async fn delete_jobs(&self, job_ids: &[JobId]) -> Result<u64, StoreError>;

    /// Deletes finished jobs (and their events) finished before `before`.
    async fn prune(&self, before: Timestamp) -> Result<u64, StoreError> {
        use JobStatus::*;
        self.prune_statuses(&[Completed, Failed, Canceled], before)
            .await
    }

    /// Records a live worker and publishes its commands.
    async fn register_worker(&self, worker: WorkerRegistration) -> Result<(), StoreError>;

    async fn deregister_worker(&self, worker_id: &str) -> Result<(), StoreError>;

    /// Workers whose last heartbeat is recent.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;

    async fn commands(&self) -> Result<Vec<CommandInfo>, StoreError>;

    /// Pauses `queue` for every worker: it still takes submits, claims
    /// start none of its jobs, running ones finish. Pausing a paused queue
    /// changes nothing.
    async fn pause_queue(&self, queue: &str) -> Result<(), StoreError>;

    /// Lets claims take `queue`'s jobs again.
    async fn resume_queue(&self, queue: &str) -> Result<(), StoreError>;

    /// Every queue with waiting or running jobs, or paused, by name.
    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError>;

    /// Sets (or replaces) a command's cluster-wide limits. Jobs of the
    /// command that have not ended get their limit key from it at once;
    /// claims on every host keep to it from then on.
    async fn set_limit(&self, limit: CommandLimit) -> Result<CommandLimit, StoreError>;

    /// Lifts a command's limits; `LimitNotFound` when it has none.
    async fn delete_limit(&self, command: &str) -> Result<(), StoreError>;

    /// Every command's limits, by command.
    async fn limits(&self) -> Result<Vec<CommandLimit>, StoreError>;

    /// A limit key's running jobs, and its starts within `window` (none
    /// counted without one).
    async fn limit_usage(
        &self,
        key: &str,
        window: Option<std::time::Duration>,
    ) -> Result<KeyUsage, StoreError>;

    /// Creates the schedule `definition.name`, or replaces its definition.
    /// A replacement with the same cron expression and zone keeps its next
    /// run (a server restarting with the same errand.toml misses no tick);
    /// otherwise the schedule's next run becomes `next_run`. `paused: None`
    /// keeps a schedule's paused state (not paused when new).
    async fn put_schedule(
        &self,
        definition: ScheduleDefinition,
        next_run: Option<Timestamp>,
        paused: Option<bool>,
    ) -> Result<ScheduleInfo, StoreError>;

    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError>;

    /// `NotFound` when there is no such schedule. Jobs it enqueued stay.
    async fn delete_schedule(&self, name: &str) -> Result<(), StoreError>;

    /// Pauses (or resumes) a schedule; `NotFound` when there is none.
    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleInfo, StoreError>;

    /// Takes a schedule's due ticks, once in a cluster: if its next run and
    /// paused state are still the expected ones, moves the next run on and
    /// submits the tick's job in the same transaction. `None` when they
    /// are not (another server took the ticks first, or the schedule was
    /// changed or deleted): nothing is written.
    async fn take_tick(&self, take: TakeTick) -> Result<Option<TakenTick>, StoreError>;

    /// Queues a delivery for each event, committed since the last call
    /// (on any server), that its job's webhook asks for; returns how many.
    /// Once in a cluster: the position it scans from moves by
    /// compare-and-set, and an event gets at most one delivery.
    async fn queue_webhook_deliveries(&self) -> Result<u64, StoreError>;

    /// Takes up to `limit` deliveries that are due (or whose sender's
    /// lease ran out) for `sender`, each with its attempt counted: no
    /// other sender takes them while the lease lasts.
    async fn take_webhook_deliveries(
        &self,
        take: TakeDeliveries,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Records how an attempt went and appends it to its job's event log,
    /// if `sender` still holds that attempt (else `LeaseLost`, nothing
    /// written): delivered and failed deliveries are done, a retrying one
    /// is due again at `retry_at`.
    async fn record_webhook_attempt(
        &self,
        sender: &str,
        delivery: &WebhookDelivery,
        attempt: DeliveryAttempt,
    ) -> Result<(), StoreError>;

    /// Subscribes to every event committed from now on.
    fn subscribe(&self) -> ChangeFeed;

    /// Transactions that wrote something, committed since the store opened
    /// (for benchmarks: commits per job).
    fn commits(&self) -> u64;

    /// The clock the store stamps times with.
    fn clock(&self) -> Arc<dyn Clock>;
}

/// [`Store::finish_and_claim`] as two calls: `finish`, then the claims.
pub async fn finish_then_claim(
    store: &(impl Store + ?Sized),
    outcomes: Vec<(Fence, Outcome)>,
    claims: Vec<ClaimParams>,
) -> Result<FinishedAndClaimed, StoreError> {
    let recorded = store.finish(outcomes).await?;
    let mut claimed = Vec::new();
    for params in claims.into_iter().filter(|p| p.limit > 0) {
        match store.claim(params).await {
            Ok(jobs) => claimed.extend(jobs),
            Err(err) => {
                tracing::warn!(error = %err, "the claim after recording outcomes failed; the worker claims again on its own");
                break;
            }
        }
    }
    Ok(FinishedAndClaimed { recorded, claimed })
}
