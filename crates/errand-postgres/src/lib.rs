//! errand's PostgreSQL store: many servers and workers on many hosts share
//! one database.
//!
//! # Layout
//! - [`PgStore`] (this file): the pool, migrations on connect, and the
//!   [`Store`] implementation: one transaction per call.
//! - `write` / `read`: the SQL of every operation. Claims use
//!   `FOR UPDATE SKIP LOCKED`; every transition is an UPDATE whose WHERE
//!   clause is the compare-and-set, inserting its event in the same statement.
//! - `listen`: the change feed. Each transaction that writes events sends
//!   one `NOTIFY errand_events` naming their id range; one LISTEN
//!   connection per process turns other processes' notifications into
//!   events on the local feed (events of this process go out directly).
//! - `schedules`: schedules, and their ticks taken once in a cluster.
//! - `limits`: limit keys, and claims that keep to the limits.
//! - `rows`: row ↔ type conversions and error mapping.
//! - `migrations`: the embedded schema, applied under an advisory lock.

mod coalesce;
mod limits;
mod listen;
mod migrations;
mod publish;
pub use migrations::SCHEMA_VERSION;
mod read;
mod rows;
mod schedules;
mod write;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use errand_core::{Clock, Job, JobEvent, JobId, Progress, SystemClock, Timestamp};
use errand_store::*;
use tokio::sync::broadcast;
use tokio_postgres::NoTls;
use tokio_util_shim::CancelOnDrop;

use crate::publish::Publisher;
use crate::rows::{db, pool};

#[derive(Clone, Debug)]
pub struct PgOptions {
    pub clock: Arc<dyn Clock>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a call waits for a connection before it fails as
    /// unavailable (so requests during an outage answer promptly).
    pub connect_timeout: Duration,
    /// LISTEN for other processes' events. Off, they are found by the
    /// polling fallback (once a second) alone.
    pub notifications: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            notifications: true,
        }
    }
}

const FEED_CAPACITY: usize = 16 * 1024;

pub use tokio_postgres::Config as PgConfig;

pub struct PgStore {
    pool: Pool,
    clock: Arc<dyn Clock>,
    publisher: Arc<Publisher>,
    /// Single submits, written together when they arrive together.
    submissions: tokio::sync::mpsc::Sender<coalesce::Submission>,
    /// Commands' limits: claims take the one-statement path while none.
    known_limits: limits::KnownLimits,
    _listener: CancelOnDrop,
    _poller: CancelOnDrop,
    _coalescer: CancelOnDrop,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("origin", &self.publisher.origin())
            .finish()
    }
}

mod tokio_util_shim {
    /// Aborts a background task when the store is dropped.
    pub struct CancelOnDrop(pub tokio::task::JoinHandle<()>);

    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`), migrates, and starts
    /// listening for other processes' events.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        Self::connect_with(config, options).await
    }

    /// [`connect`](Self::connect) with a parsed configuration.
    pub async fn connect_with(
        config: tokio_postgres::Config,
        options: PgOptions,
    ) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the pool: {e}")))?;
        {
            let mut client = pool.get().await.map_err(rows::pool)?;
            let applied = migrations::migrate(&mut client)
                .await
                .map_err(StoreError::Backend)?;
            if applied > 0 {
                tracing::info!(applied, "migrated the PostgreSQL store");
            }
        }
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let origin = uuid::Uuid::now_v7().simple().to_string();
        let (pool_for_listener, feed_for_listener, origin_for_listener) =
            (pool.clone(), feed.clone(), origin.clone());
        let seen = Arc::new(std::sync::Mutex::new(listen::Seen::default()));
        let newest: i64 = pool
            .get()
            .await
            .map_err(rows::pool)?
            .query_one("SELECT coalesce(max(id), 0) FROM errand_events", &[])
            .await
            .map_err(db)?
            .get(0);
        seen.lock().expect("never poisoned").start_at(newest);
        let listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = tokio::spawn(listen::poll(
            pool.clone(),
            feed.clone(),
            seen.clone(),
            listening.clone(),
        ));
        let seen_for_listener = seen.clone();
        let listener = tokio::spawn(async move {
            if options.notifications {
                listen::run(
                    config,
                    pool_for_listener,
                    feed_for_listener,
                    origin_for_listener,
                    seen_for_listener,
                    listening,
                )
                .await;
            }
        });
        let publisher = Arc::new(Publisher::new(feed, origin, seen));
        let (submissions, waiting) = tokio::sync::mpsc::channel(4 * 1024);
        let coalescer = tokio::spawn(coalesce::run(waiting, pool.clone(), publisher.clone()));
        Ok(Self {
            pool,
            clock: options.clock,
            publisher,
            submissions,
            known_limits: limits::KnownLimits::default(),
            _listener: CancelOnDrop(listener),
            _poller: CancelOnDrop(poller),
            _coalescer: CancelOnDrop(coalescer),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool)
    }

    async fn commit(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        events: Vec<JobEvent>,
    ) -> Result<(), StoreError> {
        self.publisher.commit(tx, events).await
    }
}

/// Runs `$body` in a transaction on a pooled connection and commits it with
/// the events it recorded. On an error the transaction is rolled back
/// before the call returns: a rollback left to the dropped transaction runs
/// later, and until then its row locks make other workers' claims skip
/// the rows (SKIP LOCKED).
macro_rules! in_transaction {
    ($store:expr, |$tx:ident, $events:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client.transaction().await.map_err(db)?;
        let mut $events: Vec<JobEvent> = Vec::new();
        let outcome: Result<_, StoreError> = async { Ok($body) }.await;
        match outcome {
            Ok(value) => {
                $store.commit($tx, $events).await?;
                Ok(value)
            }
            Err(err) => {
                let _ = $tx.rollback().await;
                Err(err)
            }
        }
    }};
}

/// Completes a batch with a statement that commits alone: each answer,
/// and the events of those recorded.
async fn complete_alone(
    client: &deadpool_postgres::ClientWrapper,
    now: Timestamp,
    completed: &[(&Fence, &serde_json::Value)],
    origin: &str,
) -> Result<(Vec<Result<(), StoreError>>, Vec<JobEvent>), StoreError> {
    let answers = write::complete_many(client, now, completed, Some(origin)).await?;
    let mut events = Vec::with_capacity(answers.len());
    let mut results = Vec::with_capacity(answers.len());
    for (answer, (fence, _)) in answers.into_iter().zip(completed) {
        results.push(match answer {
            Some(event) => {
                events.push(event);
                Ok(())
            }
            None => Err(write::fenced_out(client, fence).await?),
        });
    }
    Ok((results, events))
}

/// Records `outcomes` in `tx`; their events go to `events`.
async fn finish_in(
    tx: &deadpool_postgres::Transaction<'_>,
    now: Timestamp,
    outcomes: &[(Fence, Outcome)],
    events: &mut Vec<JobEvent>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    if let Some(completed) = all_completed(outcomes).filter(|c| distinct_jobs(c)) {
        let answers = write::complete_many(tx, now, &completed, None).await?;
        let mut results = Vec::with_capacity(answers.len());
        for (answer, (fence, _)) in answers.into_iter().zip(&completed) {
            results.push(match answer {
                Some(event) => {
                    events.push(event);
                    Ok(())
                }
                None => Err(write::fenced_out(tx, fence).await?),
            });
        }
        return Ok(results);
    }
    // In job id order (bytewise, as heartbeats lock them with COLLATE
    // "C"), so the two never deadlock; the answers keep the callers'
    // order. Pipelined: tokio-postgres sends every statement before the
    // first answer is back, so a batch costs about one round trip, not one
    // per job; the server still runs them in this order.
    let mut order: Vec<usize> = (0..outcomes.len()).collect();
    order.sort_by(|a, b| outcomes[*a].0.job_id.cmp(&outcomes[*b].0.job_id));
    let answers = futures::future::join_all(order.iter().map(|&i| {
        let (fence, outcome) = &outcomes[i];
        write::finish_one(tx, now, fence, outcome)
    }))
    .await;
    let mut results: Vec<Option<Result<(), StoreError>>> =
        (0..outcomes.len()).map(|_| None).collect();
    for (i, answer) in order.into_iter().zip(answers) {
        results[i] = Some(answer?.map(|event| events.push(event)));
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every outcome was recorded"))
        .collect())
}

/// A batch of nothing but completions (a worker's usual batch) goes in one
/// statement; a mixed batch job by job, so that all its rows are still
/// locked in one id order.
fn all_completed(outcomes: &[(Fence, Outcome)]) -> Option<Vec<(&Fence, &serde_json::Value)>> {
    outcomes
        .iter()
        .map(|(fence, outcome)| match outcome {
            Outcome::Completed { result } => Some((fence, result)),
            _ => None,
        })
        .collect()
}

/// Whether no job is in the batch twice. It can be (an attempt that lost
/// its lease, and the job's next attempt on the same worker); such a rare
/// batch goes outcome by outcome, each fenced on its own.
fn distinct_jobs(completed: &[(&Fence, &serde_json::Value)]) -> bool {
    let mut ids: Vec<&str> = completed.iter().map(|(f, _)| f.job_id.as_str()).collect();
    ids.sort_unstable();
    ids.windows(2).all(|w| w[0] != w[1])
}

#[async_trait]
impl Store for PgStore {
    async fn submit(&self, job: NewJob) -> Result<SubmitReceipt, StoreError> {
        job.validate().map_err(StoreError::Invalid)?;
        let now = self.clock.now();
        if job.idempotency_key.is_none() {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let submission = coalesce::Submission { job, now, reply };
            let closed = || StoreError::Unavailable("the store is closing".into());
            self.submissions
                .send(submission)
                .await
                .map_err(|_| closed())?;
            return answer.await.map_err(|_| closed())?;
        }
        in_transaction!(self, |tx, events| write::submit(
            &tx,
            now,
            &job,
            &mut events
        )
        .await?)
    }

    async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<SubmitReceipt>, StoreError> {
        for (index, job) in jobs.iter().enumerate() {
            job.validate()
                .map_err(|msg| StoreError::Invalid(format!("job {index}: {msg}")))?;
        }
        let now = self.clock.now();
        in_transaction!(self, |tx, events| {
            if jobs.iter().all(|j| j.idempotency_key.is_none()) {
                write::submit_many(&tx, now, &jobs, &mut events).await?
            } else {
                // Keys must be checked one by one, in order.
                let mut receipts = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    receipts.push(write::submit(&tx, now, job, &mut events).await?);
                }
                receipts
            }
        })
    }

    async fn claim(&self, params: ClaimParams) -> Result<Vec<Job>, StoreError> {
        if params.limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let client = self.client().await?;
        let mut events = Vec::new();
        let origin = self.publisher.origin();
        let known = self.known_limits.get(&client).await?;
        let jobs = if !known.is_empty() {
            let origin = origin.to_owned();
            // Spawned: the transaction ends even if this call is dropped.
            let claiming =
                tokio::spawn(
                    async move { limits::claim(&client, now, &params, &origin, &known).await },
                );
            let (jobs, claimed) = claiming
                .await
                .map_err(|err| StoreError::Backend(format!("the claim task failed: {err}")))??;
            events = claimed;
            jobs
        } else {
            write::claim(&*client, now, &params, origin, &mut events).await?
        };
        self.publisher.committed(events);
        Ok(jobs)
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<HeartbeatReply, StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| {
            let _ = &mut events;
            write::heartbeat(&tx, now, &params).await?
        })
    }

    async fn finish(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let now = self.clock.now();
        if let Some(completed) = all_completed(&outcomes).filter(|c| distinct_jobs(c)) {
            let client = self.client().await?;
            let origin = self.publisher.origin();
            let (recorded, events) = complete_alone(&client, now, &completed, origin).await?;
            self.publisher.committed(events);
            return Ok(recorded);
        }
        in_transaction!(self, |tx, events| finish_in(
            &tx,
            now,
            &outcomes,
            &mut events
        )
        .await?)
    }

    async fn finish_and_claim(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
        claims: Vec<ClaimParams>,
    ) -> Result<FinishedAndClaimed, StoreError> {
        let mut client = self.client().await?;
        // A limited claim takes its keys in a transaction of its own.
        if !self.known_limits.get(&client).await?.is_empty() {
            drop(client);
            return errand_store::finish_then_claim(self, outcomes, claims).await;
        }
        for params in &claims {
            write::claims_something(params)?;
        }
        let now = self.clock.now();
        let origin = self.publisher.origin();
        if let Some(completed) = all_completed(&outcomes).filter(|c| distinct_jobs(c)) {
            // Completed jobs free nothing an unlimited claim could take:
            // the completions and the claims are statements that each
            // commit alone, sent together (one round trip).
            let mut claim_events = Vec::new();
            let claiming = async {
                let mut claimed = Vec::new();
                for params in claims.iter().filter(|p| p.limit > 0) {
                    claimed.extend(
                        write::claim(&*client, now, params, origin, &mut claim_events).await?,
                    );
                }
                Ok::<_, StoreError>(claimed)
            };
            let (completing, claimed) =
                tokio::join!(complete_alone(&client, now, &completed, origin), claiming);
            let (recorded, events) = completing?;
            self.publisher.committed(events);
            let claimed = claimed?;
            if !claim_events.is_empty() {
                self.publisher.committed(claim_events);
            }
            return Ok(FinishedAndClaimed { recorded, claimed });
        }
        let tx = client.transaction().await.map_err(db)?;
        let mut events = Vec::new();
        let mut claim_events = Vec::new();
        let done: Result<_, StoreError> = {
            let claiming = async {
                let mut claimed = Vec::new();
                for params in claims.iter().filter(|p| p.limit > 0) {
                    claimed
                        .extend(write::claim(&tx, now, params, origin, &mut claim_events).await?);
                }
                Ok::<_, StoreError>(claimed)
            };
            if all_completed(&outcomes).is_some() {
                // Completed jobs free nothing an unlimited claim could take, so
                // the claim need not follow them: both statements go before
                // either answer is back, one round trip instead of two.
                let (recorded, claimed) =
                    tokio::join!(finish_in(&tx, now, &outcomes, &mut events), claiming);
                recorded.and_then(|recorded| {
                    Ok(FinishedAndClaimed {
                        recorded,
                        claimed: claimed?,
                    })
                })
            } else {
                // A failure due now puts its job back: the claim comes after.
                match finish_in(&tx, now, &outcomes, &mut events).await {
                    Ok(recorded) => claiming
                        .await
                        .map(|claimed| FinishedAndClaimed { recorded, claimed }),
                    Err(err) => Err(err),
                }
            }
        };
        match done {
            Ok(done) => {
                // The claim statement counted and announced its own moves.
                self.publisher.commit_with(tx, events, claim_events).await?;
                Ok(done)
            }
            Err(err) => {
                let _ = tx.rollback().await;
                Err(err)
            }
        }
    }

    async fn report_progress(&self, fence: &Fence, progress: Progress) -> Result<(), StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| write::report_progress(
            &tx,
            now,
            fence,
            &progress,
            &mut events
        )
        .await?)
    }

    async fn append_log(&self, fence: &Fence, line: String) -> Result<(), StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| write::append_log(
            &tx,
            now,
            fence,
            &line,
            &mut events
        )
        .await?)
    }

    async fn cancel(&self, job_id: &JobId) -> Result<Job, StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| write::cancel(
            &tx,
            now,
            job_id,
            &mut events
        )
        .await?)
    }

    async fn retry_job(&self, job_id: &JobId, clear_checkpoint: bool) -> Result<Job, StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| write::retry(
            &tx,
            now,
            job_id,
            clear_checkpoint,
            &mut events
        )
        .await?)
    }

    async fn save_checkpoint(
        &self,
        fence: &Fence,
        checkpoint: serde_json::Value,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| write::save_checkpoint(
            &tx,
            now,
            fence,
            &checkpoint,
            &mut events
        )
        .await?)
    }

    async fn reap_expired(&self) -> Result<Vec<JobId>, StoreError> {
        let now = self.clock.now();
        let reaped = in_transaction!(self, |tx, events| write::reap_expired(
            &tx,
            now,
            &mut events
        )
        .await?)?;
        // Every worker reaps every few seconds: the counts' delta rows are
        // folded as often, however seldom someone reads the stats.
        let client = self.client().await?;
        client
            .execute(&rows::prepared(&*client, write::FOLD_COUNTS).await?, &[])
            .await
            .map_err(db)?;
        Ok(reaped)
    }

    async fn get(&self, job_id: &JobId) -> Result<Job, StoreError> {
        read::get(&*self.client().await?, job_id).await
    }

    async fn list(&self, params: ListParams) -> Result<JobPage, StoreError> {
        read::list(&*self.client().await?, &params).await
    }

    async fn events(
        &self,
        job_id: &JobId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<JobEvent>, StoreError> {
        read::events(&*self.client().await?, job_id, after_seq, limit).await
    }

    async fn feed(&self, after_id: i64, limit: usize) -> Result<Vec<JobEvent>, StoreError> {
        read::feed(&*self.client().await?, after_id, limit).await
    }

    async fn feed_head(&self) -> Result<i64, StoreError> {
        read::feed_head(&*self.client().await?).await
    }

    async fn stats(&self) -> Result<Vec<CommandStats>, StoreError> {
        read::stats(&*self.client().await?, self.clock.now()).await
    }

    async fn finished_per_minute(
        &self,
        since: Timestamp,
    ) -> Result<Vec<FinishedInMinute>, StoreError> {
        read::finished_per_minute(&*self.client().await?, since).await
    }

    async fn prune_statuses(
        &self,
        statuses: &[errand_core::JobStatus],
        before: Timestamp,
    ) -> Result<u64, StoreError> {
        let statuses = errand_store::terminal_statuses(statuses)?;
        in_transaction!(self, |tx, events| {
            let _ = &mut events;
            write::prune(&tx, &statuses, before).await?
        })
    }

    async fn delete_jobs(&self, job_ids: &[JobId]) -> Result<u64, StoreError> {
        in_transaction!(self, |tx, events| {
            let _ = &mut events;
            write::delete_jobs(&tx, job_ids).await?
        })
    }

    async fn register_worker(&self, worker: WorkerRegistration) -> Result<(), StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| {
            let _ = &mut events;
            write::register_worker(&tx, now, &worker).await?
        })
    }

    async fn deregister_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM errand_workers WHERE id = $1", &[&worker_id])
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        read::workers(&*self.client().await?, self.clock.now()).await
    }

    async fn commands(&self) -> Result<Vec<CommandInfo>, StoreError> {
        read::commands(&*self.client().await?).await
    }

    async fn queue_webhook_deliveries(&self) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let head = read::feed_head(&client).await?;
        let tx = client.transaction().await.map_err(db)?;
        let queued = write::webhooks::queue(&tx, self.clock.now(), head).await?;
        tx.commit().await.map_err(db)?;
        Ok(queued)
    }

    async fn take_webhook_deliveries(
        &self,
        take: TakeDeliveries,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let taken = write::webhooks::take(&tx, self.clock.now(), &take).await?;
        tx.commit().await.map_err(db)?;
        Ok(taken)
    }

    async fn record_webhook_attempt(
        &self,
        sender: &str,
        delivery: &WebhookDelivery,
        attempt: DeliveryAttempt,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        in_transaction!(self, |tx, events| write::webhooks::record(
            &tx,
            now,
            sender,
            delivery,
            &attempt,
            &mut events
        )
        .await?)
    }

    async fn pause_queue(&self, queue: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO errand_paused_queues (queue, paused_at) VALUES ($1, $2) \
                 ON CONFLICT (queue) DO NOTHING",
                &[&queue, &rows::ts(self.clock.now())],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn resume_queue(&self, queue: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM errand_paused_queues WHERE queue = $1",
                &[&queue],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<errand_store::QueueInfo>, StoreError> {
        read::queues(&*self.client().await?).await
    }

    async fn set_limit(
        &self,
        limit: errand_core::CommandLimit,
    ) -> Result<errand_core::CommandLimit, StoreError> {
        let key = limit.validate().map_err(StoreError::Invalid)?;
        let now = self.clock.now();
        let set: Result<(), StoreError> = in_transaction!(self, |tx, events| {
            let _ = &mut events;
            limits::set(&tx, now, &limit, key.as_ref()).await?
        });
        set?;
        self.known_limits.forget();
        Ok(limit)
    }

    async fn delete_limit(&self, command: &str) -> Result<(), StoreError> {
        limits::delete(&*self.client().await?, command).await?;
        self.known_limits.forget();
        Ok(())
    }

    async fn limits(&self) -> Result<Vec<errand_core::CommandLimit>, StoreError> {
        limits::list(&*self.client().await?).await
    }

    async fn limit_usage(
        &self,
        key: &str,
        window: Option<std::time::Duration>,
    ) -> Result<errand_core::KeyUsage, StoreError> {
        let since = window.map(|w| self.clock.now().minus(w));
        limits::usage_of(&*self.client().await?, key, since).await
    }

    async fn put_schedule(
        &self,
        definition: ScheduleDefinition,
        next_run: Option<Timestamp>,
        paused: Option<bool>,
    ) -> Result<ScheduleInfo, StoreError> {
        let client = self.client().await?;
        schedules::put(&client, self.clock.now(), &definition, next_run, paused).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        schedules::list(&*self.client().await?).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<(), StoreError> {
        schedules::delete(&*self.client().await?, name).await
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleInfo, StoreError> {
        schedules::pause(&*self.client().await?, self.clock.now(), name, paused).await
    }

    async fn take_tick(&self, take: TakeTick) -> Result<Option<TakenTick>, StoreError> {
        if let TickOutcome::Job(job) = &take.outcome {
            job.validate().map_err(StoreError::Invalid)?;
        }
        let now = self.clock.now();
        in_transaction!(self, |tx, events| schedules::take_tick(
            &tx,
            now,
            &take,
            &mut events
        )
        .await?)
    }

    fn subscribe(&self) -> ChangeFeed {
        self.publisher.feed.subscribe()
    }

    fn commits(&self) -> u64 {
        self.publisher.commits()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
}

/// The SQL of the statements every job goes through, for tests that check
/// how PostgreSQL plans them. Not part of errand's API.
#[doc(hidden)]
pub mod hot_statements {
    pub fn claim() -> String {
        crate::write::claim_sql()
    }
    pub const COMPLETE_MANY: &str = crate::write::COMPLETE_MANY;
    pub const RENEW_LEASES: &str = crate::write::RENEW_LEASES;
    pub const STATS_RUN_TIMES: &str = crate::read::STATS_RUN_TIMES;
    pub const STATS_OLDEST_READY: &str = crate::read::STATS_OLDEST_READY;
    /// The list statement for `params` (limit 50) and its values.
    pub fn list(
        params: &errand_store::ListParams,
    ) -> Result<crate::read::ListQuery, errand_store::StoreError> {
        crate::read::list_query(params, 50)
    }
}
