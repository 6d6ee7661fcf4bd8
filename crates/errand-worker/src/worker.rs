//! The worker loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errand_core::{Change, EventKind, JobStatus};
use errand_store::{ClaimParams, Fence, Store, StoreError, WorkerRegistration, DEFAULT_QUEUE};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::completer::NextJob;
use crate::execute::{execute, track};
use crate::registry::Registry;
use crate::running::{Running, StopReason};
use crate::services;

/// Which jobs a worker claims.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClaimFilter {
    /// Only the commands in its registry (several kinds of worker can share
    /// a store this way). Per-command concurrency limits need this mode.
    #[default]
    Registered,
    /// Every job in its queues; a job whose command it does not know fails
    /// with `unknown_command` instead of waiting forever.
    All,
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub worker_id: String,
    pub queues: Vec<String>,
    /// Jobs run at once (slots). A worker claims only for free slots.
    pub max_tasks: usize,
    /// The most jobs a worker holds claimed beyond its slots, so a slot
    /// that finishes a quick job starts the next without waiting for the
    /// store. It holds what its slots finish during one round trip to the
    /// store, and none while jobs take longer than that. 0: claim only for
    /// free slots.
    pub claim_ahead: usize,
    pub claim_filter: ClaimFilter,
    /// How long a claim holds a job without a heartbeat.
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    /// The poll that guarantees pickup when no notification arrives.
    pub poll_interval: Duration,
    pub reap_interval: Duration,
    /// After a cancel or timeout, how long a handler may take to stop
    /// before its task is aborted.
    pub cancel_grace: Duration,
    /// On shutdown, how long running jobs may take to finish before they
    /// are stopped and released back to `new`.
    pub shutdown_timeout: Duration,
    /// Minimum time between two progress writes of one job.
    pub progress_interval: Duration,
    /// A worker that cannot reach its store for this long exits with an error.
    pub store_unavailable_limit: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: default_worker_id(),
            queues: vec![DEFAULT_QUEUE.to_owned()],
            max_tasks: 5,
            claim_ahead: crate::ahead::MAX_AHEAD,
            claim_filter: ClaimFilter::Registered,
            lease: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            reap_interval: Duration::from_secs(5),
            cancel_grace: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            progress_interval: Duration::from_millis(250),
            store_unavailable_limit: Duration::from_secs(60),
        }
    }
}

/// `host-pid-random`, unique across restarts and machines.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error("the store has been unreachable for {0:?}: {1}")]
    StoreUnreachable(Duration, StoreError),
}

/// What the loop, the services and every attempt share.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub config: WorkerConfig,
    pub running: Running,
    pub completer: Arc<crate::completer::Completer>,
    /// Cancelled when the worker stops claiming (it is shutting down):
    /// recorded outcomes no longer claim their slots' next jobs.
    pub claims_stopped: CancellationToken,
    /// The last claim filled every slot it asked for, so more jobs may be
    /// waiting. Only then does a recorded outcome claim its slot's next
    /// job: when jobs trickle in, the loop claims each one as its event
    /// arrives, and a claim riding with an outcome would make the job
    /// wait for that outcome's commit (and the completer's queue) first.
    pub backlog: AtomicBool,
    /// Jobs claimed beyond the slots, for slots that finish quick jobs.
    pub ahead: crate::ahead::Ahead,
    /// Outcomes being recorded while their slots went on to held jobs;
    /// shutdown waits for them.
    pub records: TaskTracker,
}

impl Shared {
    pub(crate) fn new(store: Arc<dyn Store>, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            store,
            registry: Arc::new(registry),
            config,
            running: Running::default(),
            completer: Arc::new(crate::completer::Completer::new()),
            claims_stopped: CancellationToken::new(),
            backlog: AtomicBool::new(false),
            ahead: crate::ahead::Ahead::default(),
            records: TaskTracker::new(),
        }
    }
}

pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    pub fn new(store: Arc<dyn Store>, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(store, registry, config)),
        }
    }

    pub fn id(&self) -> &str {
        &self.shared.config.worker_id
    }

    /// Publishes this worker and its commands in the store now. [`run`]
    /// does it too; calling this first lets a server that starts the worker
    /// accept submissions of its commands from the first request.
    ///
    /// [`run`]: Self::run
    pub async fn register(&self) -> Result<(), WorkerError> {
        register(&self.shared).await
    }

    /// Runs until `shutdown` fires, then drains gracefully: stops claiming,
    /// lets running jobs finish until `shutdown_timeout`, then stops the
    /// rest and releases them to `new` without counting the attempt.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let shared = self.shared;
        let config = &shared.config;
        if config.max_tasks == 0 || config.queues.is_empty() {
            return Err(WorkerError::Config(
                "max_tasks must be at least 1 and at least one queue is needed".into(),
            ));
        }
        if config.heartbeat_interval >= config.lease {
            return Err(WorkerError::Config(format!(
                "the heartbeat interval ({:?}) must be shorter than the lease ({:?})",
                config.heartbeat_interval, config.lease
            )));
        }
        // Subscribe before the first claim, so no wake-up falls in between.
        let mut feed = shared.store.subscribe();
        register(&shared).await?;
        tracing::info!(worker_id = %config.worker_id, commands = ?shared.registry.names(), max_tasks = config.max_tasks, "worker started");

        let completer = tokio::spawn(shared.completer.clone().run(shared.clone()));
        let services_stop = CancellationToken::new();
        let fatal = CancellationToken::new();
        let services = services::start(shared.clone(), services_stop.clone(), fatal.clone());
        let slots = Arc::new(Semaphore::new(config.max_tasks));
        let mut tasks = JoinSet::new();
        let mut unreachable_since: Option<(Instant, StoreError)> = None;
        let mut outcome = Ok(());

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            give_back_stale(&shared);
            let mut more_ready = false;
            // A failed claim is retried on any wake-up.
            let mut short_of_slots = true;
            match claim_and_start(&shared, &slots, &mut tasks).await {
                Ok(round) => {
                    unreachable_since = None;
                    more_ready = round.filled_all;
                    short_of_slots = round.short_of_slots;
                }
                Err(err) => {
                    let since = unreachable_since
                        .get_or_insert_with(|| (Instant::now(), err.clone()))
                        .0;
                    tracing::warn!(error = %err, "claim failed");
                    if since.elapsed() >= config.store_unavailable_limit {
                        outcome = Err(WorkerError::StoreUnreachable(since.elapsed(), err));
                        break;
                    }
                }
            }
            if more_ready {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = fatal.cancelled() => {
                    outcome = Err(WorkerError::StoreUnreachable(config.store_unavailable_limit, StoreError::Unavailable("heartbeats failed".into())));
                    break;
                }
                () = wait_for_work(&shared, &mut feed) => {}
                () = tokio::time::sleep(config.poll_interval) => {}
                // A freed slot calls for a claim only if one was wanted:
                // otherwise each finished job would wake an empty claim.
                Some(_) = tasks.join_next(), if short_of_slots && !tasks.is_empty() => {}
            }
        }

        shared.claims_stopped.cancel();
        drain(&shared, &mut tasks).await;
        services_stop.cancel();
        services.join_all().await;
        // Every attempt has recorded its outcome; the completer is idle.
        completer.abort();
        if let Err(err) = shared.store.deregister_worker(&config.worker_id).await {
            tracing::warn!(error = %err, "could not deregister the worker");
        }
        tracing::info!(worker_id = %config.worker_id, "worker stopped");
        outcome
    }
}

pub(crate) async fn register(shared: &Shared) -> Result<(), WorkerError> {
    let config = &shared.config;
    let registration = WorkerRegistration {
        worker_id: config.worker_id.clone(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into()),
        pid: std::process::id(),
        queues: config.queues.clone(),
        slots: config.max_tasks,
        commands: shared
            .registry
            .command_infos(&config.worker_id, shared.store.clock().now()),
    };
    let started = Instant::now();
    loop {
        match shared.store.register_worker(registration.clone()).await {
            Ok(()) => return Ok(()),
            Err(err)
                if err.is_transient() && started.elapsed() < config.store_unavailable_limit =>
            {
                tracing::warn!(error = %err, "cannot register the worker yet; retrying");
                tokio::time::sleep(config.poll_interval).await;
            }
            Err(err) => return Err(WorkerError::StoreUnreachable(started.elapsed(), err)),
        }
    }
}

/// What one round of claims found.
struct ClaimRound {
    /// Every slot asked for was filled: more jobs may be waiting.
    filled_all: bool,
    /// A job may have been left for want of a slot (none was free, or its
    /// command was at its concurrency limit): a freed slot is worth a
    /// claim. Otherwise every claimable job was taken, and only the change
    /// feed (or the poll) can announce more.
    short_of_slots: bool,
}

/// Claims for the free slots, and for the jobs to hold ahead of them,
/// and starts a job on each free slot.
async fn claim_and_start(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) -> Result<ClaimRound, StoreError> {
    // Jobs held ahead go first (a slot freed while another batch filled
    // the buffer).
    while let Ok(permit) = slots.clone().try_acquire_owned() {
        match shared.ahead.take_next() {
            Some(next) => {
                tasks.spawn(execute(shared.clone(), next, permit));
            }
            None => break,
        }
    }
    let free = slots.available_permits();
    if free == 0 {
        return Ok(ClaimRound {
            filled_all: false,
            short_of_slots: true,
        });
    }
    let for_ahead = shared.ahead.reserve(&shared.config);
    let claimed = claim_for(shared, slots, tasks, free + for_ahead).await;
    shared.ahead.asked(for_ahead);
    let (asked, got, short_of_slots) = claimed?;
    let filled_all = asked > 0 && got == asked;
    shared.backlog.store(filled_all, Ordering::Relaxed);
    Ok(ClaimRound {
        filled_all,
        short_of_slots,
    })
}

/// Claims up to `wanted` jobs: each starts on a free slot, or waits ahead
/// of the slots. Answers how many were asked for and got, and whether a
/// command's limit left room for fewer.
async fn claim_for(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    wanted: usize,
) -> Result<(usize, usize, bool), StoreError> {
    let mut asked = 0;
    let mut got = 0;
    let mut short_of_slots = false;
    for (commands, limit) in claim_plan(shared, wanted, &[]) {
        let limit = limit.min(wanted - got);
        if limit == 0 {
            short_of_slots = true;
            continue;
        }
        let params = ClaimParams {
            worker_id: shared.config.worker_id.clone(),
            queues: shared.config.queues.clone(),
            commands,
            limit,
            lease: shared.config.lease,
        };
        let started = Instant::now();
        let jobs = shared.store.claim(params).await?;
        shared.ahead.round_trip(started.elapsed());
        asked += limit;
        got += jobs.len();
        for job in jobs {
            let (fence, stop) = track(shared, &job);
            let next = NextJob { job, fence, stop };
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = shared.clone();
                    tasks.spawn(execute(shared, next, permit));
                }
                Err(_) => shared.ahead.push(next),
            }
        }
    }
    Ok((asked, got, short_of_slots))
}

/// Hands back the held jobs that waited too long, and records what became
/// of those whose attempt was stopped before it started.
fn give_back_stale(shared: &Arc<Shared>) {
    for next in shared.ahead.take_stale() {
        give_back(shared, next);
    }
}

/// Records a held job's end without running it: released to the queue
/// (its attempt not counted), or what stopped it.
pub(crate) fn give_back(shared: &Arc<Shared>, next: NextJob) {
    let Some(outcome) = crate::execute::outcome_before_start(&next.stop) else {
        shared.running.remove(&next.fence);
        return;
    };
    crate::execute::record_later(shared, next.fence, outcome);
}

/// The claims for `wanted` slots that free up as the `leaving` attempts'
/// outcomes commit, made in the same transaction: at most `wanted` jobs
/// in all.
pub(crate) fn claims_for(shared: &Shared, wanted: usize, leaving: &[&Fence]) -> Vec<ClaimParams> {
    let mut left = wanted;
    let mut claims = Vec::new();
    for (commands, room) in claim_plan(shared, wanted, leaving) {
        let limit = room.min(left);
        if limit == 0 {
            continue;
        }
        left -= limit;
        claims.push(ClaimParams {
            worker_id: shared.config.worker_id.clone(),
            queues: shared.config.queues.clone(),
            commands,
            limit,
            lease: shared.config.lease,
        });
    }
    claims
}

/// Which commands to claim and how many of each: per-command limits get
/// their own claims so one batch cannot exceed them (a command at its
/// limit is in the plan with room for none). The `leaving` attempts do
/// not count against their commands' limits.
fn claim_plan(
    shared: &Shared,
    free: usize,
    leaving: &[&Fence],
) -> Vec<(Option<Vec<String>>, usize)> {
    if shared.config.claim_filter == ClaimFilter::All {
        return vec![(None, free)];
    }
    let running = shared.running.per_command(leaving);
    let mut unlimited = Vec::new();
    let mut plan = Vec::new();
    for command in shared.registry.iter() {
        let name = command.full_name();
        match command.options.max_concurrency {
            None => unlimited.push(name),
            Some(max) => {
                let room = max.saturating_sub(running.get(&name).copied().unwrap_or(0));
                plan.push((Some(vec![name]), room));
            }
        }
    }
    if !unlimited.is_empty() {
        plan.insert(0, (Some(unlimited), free));
    }
    plan
}

/// Returns when the change feed suggests there is work: a job became `new`
/// (submitted, retried, reaped). Cancel requests for our running jobs are
/// acted on here at once, without waiting for the next heartbeat.
///
/// The events already waiting are read too before it returns: the claim
/// that follows finds every job they announce, so one wake-up stands for
/// all of them. (Returning at the first left a burst of N submits to wake
/// N claims, all but the first of which found nothing.)
async fn wait_for_work(
    shared: &Shared,
    feed: &mut broadcast::Receiver<Arc<errand_core::JobEvent>>,
) {
    loop {
        match feed.recv().await {
            Ok(event) => {
                if announces_work(shared, &event) {
                    break;
                }
            }
            // Missed events: a claim finds whatever they announced.
            Err(broadcast::error::RecvError::Lagged(_)) => break,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
    loop {
        match feed.try_recv() {
            Ok(event) => {
                announces_work(shared, &event);
            }
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// Whether `event` makes a job claimable; stops our job when it asks for
/// a cancel.
fn announces_work(shared: &Shared, event: &errand_core::JobEvent) -> bool {
    if matches!(event.change(), Ok(Change::CancelRequested))
        && shared.running.contains(&event.job_id)
    {
        shared.running.stop(&event.job_id, StopReason::Canceled);
        // A held job is not running: the loop records its cancel.
        if shared.ahead.holds(&event.job_id) {
            return true;
        }
    }
    event.status == JobStatus::New && event.kind != EventKind::Log
}

async fn drain(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) {
    // Held jobs have not started: they go back to the queue at once.
    for next in shared.ahead.take_all() {
        give_back(shared, next);
    }
    if !tasks.is_empty() {
        tracing::info!(running = shared.running.len(), timeout = ?shared.config.shutdown_timeout, "shutting down: waiting for running jobs");
        let all_done = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(shared.config.shutdown_timeout, all_done)
            .await
            .is_err()
        {
            tracing::warn!(
                running = shared.running.len(),
                "shutdown deadline passed: stopping and releasing the remaining jobs"
            );
            shared.running.stop_all(StopReason::Shutdown);
            while tasks.join_next().await.is_some() {}
        }
    }
    shared.records.close();
    shared.records.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::JobId;
    use errand_sqlite::{SqliteOptions, SqliteStore};
    use errand_store::NewJob;

    /// A worker's shared state with `count` jobs claimed and held ahead of
    /// its slots, as a batch of quick outcomes leaves them.
    async fn holding(count: usize) -> (tempfile::TempDir, Arc<Shared>, Vec<JobId>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("a.db"), SqliteOptions::default()).unwrap());
        let jobs = (0..count)
            .map(|i| NewJob::new("t", "c", serde_json::json!(i)))
            .collect();
        store.submit_batch(jobs).await.unwrap();
        let config = WorkerConfig {
            worker_id: "w".into(),
            ..WorkerConfig::default()
        };
        let shared = Arc::new(Shared::new(store.clone(), Registry::new(), config));
        tokio::spawn(shared.completer.clone().run(shared.clone()));
        let claimed = store
            .claim(ClaimParams {
                worker_id: "w".into(),
                queues: vec![DEFAULT_QUEUE.into()],
                commands: None,
                limit: count,
                lease: Duration::from_secs(30),
            })
            .await
            .unwrap();
        let ids = claimed.iter().map(|job| job.job_id.clone()).collect();
        for job in claimed {
            let (fence, stop) = track(&shared, &job);
            shared.ahead.push(NextJob { job, fence, stop });
        }
        (dir, shared, ids)
    }

    async fn settled(shared: &Shared) {
        shared.records.close();
        shared.records.wait().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_job_canceled_before_it_started_ends_canceled_without_running() {
        let (_dir, shared, ids) = holding(2).await;
        shared.store.cancel(&ids[0]).await.unwrap();
        // As the change feed or a heartbeat tells the worker.
        shared.running.stop(&ids[0], StopReason::Canceled);
        give_back_stale(&shared);
        settled(&shared).await;
        let canceled = shared.store.get(&ids[0]).await.unwrap();
        assert_eq!(canceled.status, JobStatus::Canceled);
        assert!(!shared.running.contains(&ids[0]));
        // The other one is still held for a slot.
        assert_eq!(shared.ahead.len(), 1);
        let held = shared.store.get(&ids[1]).await.unwrap();
        assert_eq!(held.status, JobStatus::Running);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_held_too_long_goes_back_to_the_queue_without_counting_its_attempt() {
        let (_dir, shared, ids) = holding(1).await;
        give_back_stale(&shared);
        assert_eq!(shared.ahead.len(), 1, "not stale yet");
        tokio::time::sleep(crate::ahead::MAX_WAIT).await;
        give_back_stale(&shared);
        settled(&shared).await;
        let job = shared.store.get(&ids[0]).await.unwrap();
        assert_eq!((job.status, job.attempt), (JobStatus::New, 0));
        assert_eq!(shared.running.len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_hands_back_the_held_jobs_at_once() {
        let (_dir, shared, ids) = holding(3).await;
        shared.claims_stopped.cancel();
        drain(&shared, &mut JoinSet::new()).await;
        for id in &ids {
            let job = shared.store.get(id).await.unwrap();
            assert_eq!((job.status, job.attempt), (JobStatus::New, 0), "{id}");
        }
        assert_eq!(shared.ahead.len(), 0);
    }
}
