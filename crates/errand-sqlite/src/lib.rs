//! errand's embedded SQLite store: one file, zero setup.
//!
//! # Layout
//! - [`SqliteStore`] (this file): opens the file, applies the migrations,
//!   starts the writer, and implements [`Store`] by sending each write to
//!   the writer and each read to a read connection.
//! - `writer`: the single writer thread and its group commit.
//! - `checkpoint`: WAL checkpoints on a thread of their own.
//! - `foreign`: events other processes commit to the same file, published
//!   on this process's change feed.
//! - `chunks`: multi-row statements in a few fixed sizes.
//! - `write` / `read`: the SQL of every job operation; `schedules`: of
//!   schedules; `limits`: limit keys, and claims within the limits.
//! - `readers`: the pool of read connections.
//! - `rows`: row ↔ type conversions.
//! - `migrations`: the embedded schema.
//!
//! Durability: WAL with `synchronous=NORMAL` survives a process crash; with
//! [`Synchronous::Full`] every commit is also on disk before submit returns,
//! surviving power loss.

mod checkpoint;
mod chunks;
mod foreign;
mod limits;
mod migrations;
pub use migrations::SCHEMA_VERSION;
mod read;
mod readers;
mod rows;
mod schedules;
mod write;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use errand_core::{Clock, Job, JobEvent, JobId, Progress, SystemClock, Timestamp};
use errand_store::*;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::broadcast;

use crate::readers::Readers;
use crate::rows::backend;
use crate::writer::Writer;

/// How hard SQLite works to put each commit on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Survives a process crash; the last commits may be lost on power loss.
    #[default]
    Normal,
    /// Survives power loss: every commit is synced before it returns.
    Full,
}

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Read connections kept open.
    pub readers: usize,
    pub clock: Arc<dyn Clock>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            readers: 4,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Capacity of the change feed; a slower subscriber catches up from the log.
const FEED_CAPACITY: usize = 16 * 1024;

pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Arc<Readers>,
    feed: broadcast::Sender<Arc<JobEvent>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_connection(&path, options.synchronous, true)?;
        match migrations::migrate(&mut conn).map_err(backend)? {
            migrations::MigrationOutcome::UpToDate { applied } if applied > 0 => {
                tracing::info!(path = %path.display(), applied, "migrated the SQLite store");
            }
            migrations::MigrationOutcome::UpToDate { .. } => {}
            migrations::MigrationOutcome::TooNew { found, known } => {
                return Err(StoreError::Backend(format!(
                    "{} has schema version {found}, newer than this errand knows ({known}); \
                     upgrade errand",
                    path.display()
                )));
            }
        }
        let readers = (0..options.readers.max(1))
            .map(|_| open_connection(&path, options.synchronous, false))
            .collect::<Result<Vec<_>, _>>()?;
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let checkpointer = checkpoint::Checkpointer::start(&path)
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        let writer = Writer::start(
            conn,
            options.clock.clone(),
            feed.clone(),
            Some(checkpointer),
            Some(&path),
        )
        .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path,
            writer,
            readers: Arc::new(Readers::new(readers)),
            feed,
            clock: options.clock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Claimed rows as jobs; their JSON is parsed here, off the writer thread.
fn claimed_jobs(rows: Vec<rows::JobRow>) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(rows.len());
    for mut row in rows {
        match row.parse() {
            Ok(()) => jobs.push(row.job),
            // Only a database edited by hand gets here. The others still
            // run; this one is retried when its lease expires, and fails
            // once its attempts are spent.
            Err(err) => tracing::error!(
                job_id = %row.job.job_id,
                error = %err,
                "a claimed job's stored JSON does not parse; not running it"
            ),
        }
    }
    jobs
}

fn open_connection(
    path: &Path,
    synchronous: Synchronous,
    writer: bool,
) -> Result<Connection, StoreError> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    // Another process may hold the write lock for a moment (a second worker
    // on the same file): wait for it rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    if writer {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        // Checkpoints run on their own thread (checkpoint.rs).
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
            .map_err(backend)?;
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8192;"
    ))
    .map_err(backend)?;
    // A plan that does not depend on bound values: otherwise SQLite marks
    // a statement whose LIMIT is a parameter (the claim's) to be parsed
    // and planned again on every bind, a tenth of the writer's time at
    // ten slots. Plans here come from the schema, not from statistics.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit(&self, job: NewJob) -> Result<SubmitReceipt, StoreError> {
        let job = write::PreparedJob::new(job, self.clock.now()).map_err(StoreError::Invalid)?;
        self.writer
            .run(move |conn, ctx| write::submit(conn, ctx, &job))
            .await
    }

    async fn submit_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<SubmitReceipt>, StoreError> {
        // Validated and serialized here, before the writer: a logical error
        // writes nothing, and the writer thread does only database work.
        let now = self.clock.now();
        let jobs = jobs
            .into_iter()
            .enumerate()
            .map(|(index, job)| {
                write::PreparedJob::new(job, now)
                    .map_err(|msg| StoreError::Invalid(format!("job {index}: {msg}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.writer
            .run(move |conn, ctx| write::submit_batch(conn, ctx, &jobs))
            .await
    }

    async fn claim(&self, params: ClaimParams) -> Result<Vec<Job>, StoreError> {
        if params.limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .writer
            .run(move |conn, ctx| write::claim(conn, ctx, &params))
            .await?;
        Ok(claimed_jobs(rows))
    }

    async fn heartbeat(&self, params: HeartbeatParams) -> Result<HeartbeatReply, StoreError> {
        self.writer
            .run(move |conn, ctx| write::heartbeat(conn, ctx, &params))
            .await
    }

    async fn finish(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        // Completions, the usual batch, have their JSON written here, off
        // the writer thread, and go in a few statements.
        if let Some(done) = write::prepare_completions(&outcomes) {
            return self
                .writer
                .run(move |conn, ctx| write::complete_many(conn, ctx, &done))
                .await;
        }
        self.writer
            .run(move |conn, ctx| write::finish(conn, ctx, &outcomes))
            .await
    }

    async fn finish_and_claim(
        &self,
        outcomes: Vec<(Fence, Outcome)>,
        claims: Vec<ClaimParams>,
    ) -> Result<FinishedAndClaimed, StoreError> {
        // A claim's only logical error, checked before anything is
        // written: a refused operation must write nothing.
        for params in &claims {
            params.command_names()?;
        }
        let completions = write::prepare_completions(&outcomes);
        let (recorded, rows) = self
            .writer
            .run(move |conn, ctx| {
                let recorded = match &completions {
                    Some(done) => write::complete_many(conn, ctx, done)?,
                    None => write::finish(conn, ctx, &outcomes)?,
                };
                let mut rows = Vec::new();
                for params in claims.iter().filter(|p| p.limit > 0) {
                    rows.extend(write::claim(conn, ctx, params)?);
                }
                Ok((recorded, rows))
            })
            .await?;
        Ok(FinishedAndClaimed {
            recorded,
            claimed: claimed_jobs(rows),
        })
    }

    async fn report_progress(&self, fence: &Fence, progress: Progress) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.writer
            .run(move |conn, ctx| write::report_progress(conn, ctx, &fence, &progress))
            .await
    }

    async fn append_log(&self, fence: &Fence, line: String) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.writer
            .run(move |conn, ctx| write::append_log(conn, ctx, &fence, &line))
            .await
    }

    async fn cancel(&self, job_id: &JobId) -> Result<Job, StoreError> {
        let job_id = job_id.clone();
        self.writer
            .run(move |conn, ctx| write::cancel(conn, ctx, &job_id))
            .await
    }

    async fn retry_job(&self, job_id: &JobId, clear_checkpoint: bool) -> Result<Job, StoreError> {
        let job_id = job_id.clone();
        self.writer
            .run(move |conn, ctx| write::retry(conn, ctx, &job_id, clear_checkpoint))
            .await
    }

    async fn save_checkpoint(
        &self,
        fence: &Fence,
        checkpoint: serde_json::Value,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        // Serialised here, not on the writer thread.
        let text = rows::to_json(&checkpoint);
        self.writer
            .run(move |conn, ctx| {
                write::save_checkpoint(conn, ctx, &fence, &text, checkpoint.clone())
            })
            .await
    }

    async fn reap_expired(&self) -> Result<Vec<JobId>, StoreError> {
        self.writer.run(write::reap_expired).await
    }

    async fn get(&self, job_id: &JobId) -> Result<Job, StoreError> {
        let job_id = job_id.clone();
        self.readers.run(move |conn| read::get(conn, &job_id)).await
    }

    async fn list(&self, params: ListParams) -> Result<JobPage, StoreError> {
        self.readers
            .run(move |conn| read::list(conn, &params))
            .await
    }

    async fn events(
        &self,
        job_id: &JobId,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<JobEvent>, StoreError> {
        let job_id = job_id.clone();
        self.readers
            .run(move |conn| read::events(conn, &job_id, after_seq, limit))
            .await
    }

    async fn feed(&self, after_id: i64, limit: usize) -> Result<Vec<JobEvent>, StoreError> {
        self.readers
            .run(move |conn| read::feed(conn, after_id, limit))
            .await
    }

    async fn feed_head(&self) -> Result<i64, StoreError> {
        self.readers.run(read::feed_head).await
    }

    async fn stats(&self) -> Result<Vec<CommandStats>, StoreError> {
        let now = self.clock.now();
        self.readers.run(move |conn| read::stats(conn, now)).await
    }

    async fn finished_per_minute(
        &self,
        since: Timestamp,
    ) -> Result<Vec<FinishedInMinute>, StoreError> {
        self.readers
            .run(move |conn| read::finished_per_minute(conn, since))
            .await
    }

    async fn prune_statuses(
        &self,
        statuses: &[errand_core::JobStatus],
        before: Timestamp,
    ) -> Result<u64, StoreError> {
        let statuses = errand_store::terminal_statuses(statuses)?;
        self.writer
            .run(move |conn, ctx| write::prune(conn, ctx, &statuses, before))
            .await
    }

    async fn delete_jobs(&self, job_ids: &[JobId]) -> Result<u64, StoreError> {
        let job_ids = job_ids.to_vec();
        self.writer
            .run(move |conn, ctx| write::delete_jobs(conn, ctx, &job_ids))
            .await
    }

    async fn register_worker(&self, worker: WorkerRegistration) -> Result<(), StoreError> {
        self.writer
            .run(move |conn, ctx| write::register_worker(conn, ctx, &worker))
            .await
    }

    async fn deregister_worker(&self, worker_id: &str) -> Result<(), StoreError> {
        let worker_id = worker_id.to_owned();
        self.writer
            .run(move |conn, ctx| write::deregister_worker(conn, ctx, &worker_id))
            .await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let now = self.clock.now();
        self.readers.run(move |conn| read::workers(conn, now)).await
    }

    async fn commands(&self) -> Result<Vec<CommandInfo>, StoreError> {
        self.readers.run(read::commands).await
    }

    async fn queue_webhook_deliveries(&self) -> Result<u64, StoreError> {
        self.writer.run(write::webhooks::queue).await
    }

    async fn take_webhook_deliveries(
        &self,
        take: TakeDeliveries,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.writer
            .run(move |conn, ctx| write::webhooks::take(conn, ctx, &take))
            .await
    }

    async fn record_webhook_attempt(
        &self,
        sender: &str,
        delivery: &WebhookDelivery,
        attempt: DeliveryAttempt,
    ) -> Result<(), StoreError> {
        let (sender, delivery) = (sender.to_owned(), delivery.clone());
        self.writer
            .run(move |conn, ctx| write::webhooks::record(conn, ctx, &sender, &delivery, &attempt))
            .await
    }

    async fn pause_queue(&self, queue: &str) -> Result<(), StoreError> {
        let queue = queue.to_owned();
        self.writer
            .run(move |conn, ctx| write::pause_queue(conn, ctx, &queue, true))
            .await
    }

    async fn resume_queue(&self, queue: &str) -> Result<(), StoreError> {
        let queue = queue.to_owned();
        self.writer
            .run(move |conn, ctx| write::pause_queue(conn, ctx, &queue, false))
            .await
    }

    async fn queues(&self) -> Result<Vec<errand_store::QueueInfo>, StoreError> {
        self.readers.run(read::queues).await
    }

    async fn set_limit(
        &self,
        limit: errand_core::CommandLimit,
    ) -> Result<errand_core::CommandLimit, StoreError> {
        let key = limit.validate().map_err(StoreError::Invalid)?;
        self.writer
            .run(move |conn, ctx| limits::set(conn, ctx, &limit, key.as_ref()))
            .await
    }

    async fn delete_limit(&self, command: &str) -> Result<(), StoreError> {
        let command = command.to_owned();
        self.writer
            .run(move |conn, ctx| limits::delete(conn, ctx, &command))
            .await
    }

    async fn limits(&self) -> Result<Vec<errand_core::CommandLimit>, StoreError> {
        self.readers.run(limits::list).await
    }

    async fn limit_usage(
        &self,
        key: &str,
        window: Option<std::time::Duration>,
    ) -> Result<errand_core::KeyUsage, StoreError> {
        let key = key.to_owned();
        let since = window.map(|w| self.clock.now().minus(w).as_micros());
        self.readers
            .run(move |conn| limits::usage_of(conn, &key, since))
            .await
    }

    async fn put_schedule(
        &self,
        definition: ScheduleDefinition,
        next_run: Option<Timestamp>,
        paused: Option<bool>,
    ) -> Result<ScheduleInfo, StoreError> {
        let job = schedules::job_text(&definition);
        self.writer
            .run(move |conn, ctx| schedules::put(conn, ctx, &definition, &job, next_run, paused))
            .await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.readers.run(schedules::list).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer
            .run(move |conn, ctx| schedules::delete(conn, ctx, &name))
            .await
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleInfo, StoreError> {
        let name = name.to_owned();
        self.writer
            .run(move |conn, ctx| schedules::pause(conn, ctx, &name, paused))
            .await
    }

    async fn take_tick(&self, take: TakeTick) -> Result<Option<TakenTick>, StoreError> {
        let (job, reason) = match &take.outcome {
            TickOutcome::Job(job) => {
                let job = write::PreparedJob::new((**job).clone(), self.clock.now())
                    .map_err(StoreError::Invalid)?;
                (Some(job), None)
            }
            TickOutcome::Skipped { reason } => (None, reason.clone()),
        };
        self.writer
            .run(move |conn, ctx| {
                schedules::take_tick(conn, ctx, &take, job.as_ref(), reason.as_deref())
            })
            .await
    }

    fn subscribe(&self) -> ChangeFeed {
        self.feed.subscribe()
    }

    fn commits(&self) -> u64 {
        self.writer.commits()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_use_wal_and_the_chosen_synchronous_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modes.db");
        for (mode, expected) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
            let conn = open_connection(&path, mode, true).unwrap();
            let journal: String = conn
                .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                .unwrap();
            let sync: i64 = conn
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!((journal.as_str(), sync), ("wal", expected));
        }
    }

    /// SQLite would plan a statement again on every bind of a parameter
    /// that could change its plan (the claim's LIMIT): a tenth of the
    /// writer's time at ten slots.
    #[test]
    fn a_claim_is_planned_once_whatever_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn =
            open_connection(&dir.path().join("plan.db"), Synchronous::Normal, true).unwrap();
        migrations::migrate(&mut conn).unwrap();
        let mut stmt = conn.prepare(&write::lease::claim_sql(None)).unwrap();
        for limit in 1..=3_i64 {
            let mut rows = stmt
                .query(rusqlite::params!["w", 0, 0, 0, DEFAULT_QUEUE, 0, limit])
                .unwrap();
            while rows.next().unwrap().is_some() {}
        }
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[tokio::test]
    async fn only_transactions_that_wrote_are_counted_as_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("c.db"), SqliteOptions::default()).unwrap();
        let params = ClaimParams {
            worker_id: "w".into(),
            queues: vec![DEFAULT_QUEUE.into()],
            commands: None,
            limit: 5,
            lease: std::time::Duration::from_secs(30),
        };
        assert!(store.claim(params.clone()).await.unwrap().is_empty());
        assert_eq!(store.commits(), 0, "an empty claim wrote nothing");
        store
            .submit(NewJob::new("t", "c", serde_json::json!({})))
            .await
            .unwrap();
        assert_eq!(store.commits(), 1);
        assert_eq!(store.claim(params).await.unwrap().len(), 1);
        assert_eq!(store.commits(), 2);
    }

    /// Claimed rows are parsed after the writer commits them: one that
    /// cannot be must not cost the others their run.
    #[tokio::test]
    async fn a_claimed_job_whose_stored_json_is_broken_does_not_hold_back_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let receipts = store
            .submit_batch(
                (0..3)
                    .map(|i| NewJob::new("t", "c", serde_json::json!({"i": i})))
                    .collect(),
            )
            .await
            .unwrap();
        let broken = &receipts[1].job_id;
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE jobs SET input = '{not json' WHERE id = ?",
                [broken.as_str()],
            )
            .unwrap();
        let claimed = store
            .claim(ClaimParams {
                worker_id: "w".into(),
                queues: vec![DEFAULT_QUEUE.into()],
                commands: None,
                limit: 3,
                lease: std::time::Duration::from_secs(30),
            })
            .await
            .unwrap();
        let ids: Vec<&JobId> = claimed.iter().map(|job| &job.job_id).collect();
        assert_eq!(ids, [&receipts[0].job_id, &receipts[2].job_id]);
        assert_eq!(claimed[1].input, serde_json::json!({"i": 2}));
        // Leased like the others, so its lease expiry retries it.
        let lease: Option<i64> = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT lease_until FROM jobs WHERE id = ? AND status = 'running'",
                [broken.as_str()],
                |row| row.get(0),
            )
            .unwrap();
        assert!(lease.is_some());
    }

    #[test]
    fn a_database_from_a_newer_errand_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
        assert!(err.to_string().contains("upgrade errand"), "{err}");
    }

    /// The writer never checkpoints at this size (its threshold is a
    /// backstop far above): the database file takes the jobs in only if the
    /// checkpoint thread copies them from the WAL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_off_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let empty = size();
        let padding = "x".repeat(1000);
        for batch in 0..4 {
            let jobs = (0..500)
                .map(|i| {
                    NewJob::new(
                        "t",
                        "c",
                        serde_json::json!({"i": i, "batch": batch, "pad": padding}),
                    )
                })
                .collect();
            store.submit_batch(jobs).await.unwrap();
        }
        // 2,000 jobs of ~1 KB: ~2 MB, far below the writer's own threshold.
        let backstop = u64::from(checkpoint::BACKSTOP_PAGES) * 4096;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < empty + 1_500_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes (WAL backstop {backstop})",
                size()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
