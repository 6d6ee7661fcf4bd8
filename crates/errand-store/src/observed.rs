//! A store seen through a hook: [`Observed`] calls the hook with each
//! operation's name before passing the call on, and fails the call with
//! the hook's error if it returns one. For counting what a component asks
//! of its store (`errand bench idle`), or for unplugging a store in tests.

use std::sync::Arc;

use async_trait::async_trait;
use errand_core::{Clock, CommandLimit, Job, JobEvent, JobId, Progress, Timestamp};

use crate::*;

pub type Hook = dyn Fn(&'static str) -> Result<(), StoreError> + Send + Sync;

pub struct Observed {
    inner: Arc<dyn Store>,
    hook: Box<Hook>,
}

impl Observed {
    pub fn new(
        inner: Arc<dyn Store>,
        hook: impl Fn(&'static str) -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            hook: Box::new(hook),
        }
    }
}

#[async_trait]
impl Store for Observed {
    async fn submit(&self, job: NewJob) -> Result<SubmitReceipt, StoreError> {
        (self.hook)("submit")?;
        self.inner.submit(job).await
    }
    async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<SubmitReceipt>, StoreError> {
        (self.hook)("submit_batch")?;
        self.inner.submit_batch(jobs).await
    }
    async fn claim(&self, params: ClaimParams) -> Result<Vec<Job>, StoreError> {
        (self.hook)("claim")?;
        self.inner.claim(params).await
    }
    async fn heartbeat(&self, params: HeartbeatParams) -> Result<HeartbeatReply, StoreError> {
        (self.hook)("heartbeat")?;
        self.inner.heartbeat(params).await
    }
    async fn finish(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        (self.hook)("finish")?;
        self.inner.finish(outcomes).await
    }
    async fn finish_and_claim(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
        claims: Vec<ClaimParams>,
    ) -> Result<FinishedAndClaimed, StoreError> {
        (self.hook)("finish_and_claim")?;
        self.inner.finish_and_claim(outcomes, claims).await
    }
    async fn report_progress(&self, fence: &Fence, progress: Progress) -> Result<(), StoreError> {
        (self.hook)("report_progress")?;
        self.inner.report_progress(fence, progress).await
    }
    async fn append_log(&self, fence: &Fence, line: String) -> Result<(), StoreError> {
        (self.hook)("append_log")?;
        self.inner.append_log(fence, line).await
    }
    async fn cancel(&self, job_id: &JobId) -> Result<Job, StoreError> {
        (self.hook)("cancel")?;
        self.inner.cancel(job_id).await
    }
    async fn retry_job(&self, job_id: &JobId, clear_checkpoint: bool) -> Result<Job, StoreError> {
        (self.hook)("retry")?;
        self.inner.retry_job(job_id, clear_checkpoint).await
    }
    async fn save_checkpoint(
        &self,
        fence: &Fence,
        checkpoint: serde_json::Value,
    ) -> Result<(), StoreError> {
        (self.hook)("save_checkpoint")?;
        self.inner.save_checkpoint(fence, checkpoint).await
    }
    async fn reap_expired(&self) -> Result<Vec<JobId>, StoreError> {
        (self.hook)("reap_expired")?;
        self.inner.reap_expired().await
    }
    async fn get(&self, job_id: &JobId) -> Result<Job, StoreError> {
        (self.hook)("get")?;
        self.inner.get(job_id).await
    }
    async fn list(&self, params: ListParams) -> Result<JobPage, StoreError> {
        (self.hook)("list")?;
        self.inner.list(params).await
    }
    async fn events(
        &self,
        job_id: &JobId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<JobEvent>, StoreError> {
        (self.hook)("events")?;
        self.inner.events(job_id, after_seq, limit).await
    }
    async fn feed(&self, after_id: i64, limit: usize) -> Result<Vec<JobEvent>, StoreError> {
        (self.hook)("feed")?;
        self.inner.feed(after_id, limit).await
    }
    async fn feed_head(&self) -> Result<i64, StoreError> {
        (self.hook)("feed_head")?;
        self.inner.feed_head().await
    }
    async fn stats(&self) -> Result<Vec<CommandStats>, StoreError> {
        (self.hook)("stats")?;
        self.inner.stats().await
    }
    async fn finished_per_minute(
        &self,
        since: Timestamp,
    ) -> Result<Vec<FinishedInMinute>, StoreError> {
        (self.hook)("finished_per_minute")?;
        self.inner.finished_per_minute(since).await
    }
    async fn prune_statuses(
        &self,
        statuses: &[errand_core::JobStatus],
        before: Timestamp,
    ) -> Result<u64, StoreError> {
        (self.hook)("prune")?;
        self.inner.prune_statuses(statuses, before).await
    }
    async fn register_worker(&self, worker: WorkerRegistration) -> Result<(), StoreError> {
        (self.hook)("register_worker")?;
        self.inner.register_worker(worker).await
    }
    async fn deregister_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        (self.hook)("deregister_worker")?;
        self.inner.deregister_worker(worker_id).await
    }
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        (self.hook)("workers")?;
        self.inner.workers().await
    }
    async fn commands(&self) -> Result<Vec<CommandInfo>, StoreError> {
        (self.hook)("commands")?;
        self.inner.commands().await
    }
    async fn pause_queue(&self, queue: &str) -> Result<(), StoreError> {
        (self.hook)("pause_queue")?;
        self.inner.pause_queue(queue).await
    }
    async fn resume_queue(&self, queue: &str) -> Result<(), StoreError> {
        (self.hook)("resume_queue")?;
        self.inner.resume_queue(queue).await
    }
    async fn queues(&self) -> Result<Vec<crate::QueueInfo>, StoreError> {
        (self.hook)("queues")?;
        self.inner.queues().await
    }
    async fn set_limit(&self, limit: CommandLimit) -> Result<CommandLimit, StoreError> {
        (self.hook)("set_limit")?;
        self.inner.set_limit(limit).await
    }
    async fn delete_limit(&self, command: &str) -> Result<(), StoreError> {
        (self.hook)("delete_limit")?;
        self.inner.delete_limit(command).await
    }
    async fn limits(&self) -> Result<Vec<CommandLimit>, StoreError> {
        (self.hook)("limits")?;
        self.inner.limits().await
    }
    async fn limit_usage(
        &self,
        key: &str,
        window: Option<std::time::Duration>,
    ) -> Result<errand_core::KeyUsage, StoreError> {
        (self.hook)("limit_usage")?;
        self.inner.limit_usage(key, window).await
    }
    async fn put_schedule(
        &self,
        definition: ScheduleDefinition,
        next_run: Option<Timestamp>,
        paused: Option<bool>,
    ) -> Result<ScheduleInfo, StoreError> {
        (self.hook)("put_schedule")?;
        self.inner.put_schedule(definition, next_run, paused).await
    }
    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        (self.hook)("schedules")?;
        self.inner.schedules().await
    }
    async fn delete_schedule(&self, name: &str) -> Result<(), StoreError> {
        (self.hook)("delete_schedule")?;
        self.inner.delete_schedule(name).await
    }
    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleInfo, StoreError> {
        (self.hook)("pause_schedule")?;
        self.inner.pause_schedule(name, paused).await
    }
    async fn take_tick(&self, take: TakeTick) -> Result<Option<TakenTick>, StoreError> {
        (self.hook)("take_tick")?;
        self.inner.take_tick(take).await
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
    async fn queue_webhook_deliveries(&self) -> Result<u64, StoreError> {
        (self.hook)("queue_webhook_deliveries")?;
        self.inner.queue_webhook_deliveries().await
    }
    async fn take_webhook_deliveries(
        &self,
        take: TakeDeliveries,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        (self.hook)("take_webhook_deliveries")?;
        self.inner.take_webhook_deliveries(take).await
    }
    async fn record_webhook_attempt(
        &self,
        sender: &str,
        delivery: &WebhookDelivery,
        attempt: DeliveryAttempt,
    ) -> Result<(), StoreError> {
        (self.hook)("record_webhook_attempt")?;
        self.inner
            .record_webhook_attempt(sender, delivery, attempt)
            .await
    }
    async fn delete_jobs(&self, job_ids: &[JobId]) -> Result<u64, StoreError> {
        (self.hook)("delete_jobs")?;
        self.inner.delete_jobs(job_ids).await
    }
}
