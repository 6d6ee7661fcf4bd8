//! The store and worker workloads. Each checks exact delivery: every job
//! stored once, run once, and its outcome recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use errand::{CommandOptions, EventKind, JobId, NewJob, Registry, Store, Worker, WorkerConfig};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::RunResult;

/// Jobs submitted per batch when a workload fills a queue.
const FILL_BATCH: usize = 5000;

pub(crate) fn noop_job(i: usize) -> NewJob {
    NewJob::new("bench", "noop", json!({"i": i}))
}

/// How many keys `drain-limited` spreads its jobs over.
pub(crate) const LIMITED_KEYS: usize = 1000;

/// A no-op job with one of [`LIMITED_KEYS`] keys in its input.
fn keyed_job(i: usize) -> NewJob {
    NewJob::new("bench", "noop", json!({"i": i, "key": i % LIMITED_KEYS}))
}

/// `jobs` single submits from `submitters` concurrent callers.
pub(crate) async fn enqueue(
    store: Arc<dyn Store>,
    jobs: usize,
    submitters: usize,
) -> anyhow::Result<RunResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let commits_before = store.commits();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..submitters {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return Ok::<_, anyhow::Error>(());
                }
                store.submit(noop_job(i)).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    enqueue_result(&store, jobs, started.elapsed(), commits_before).await
}

/// Batches of 1,000 from 4 concurrent clients (a batch endpoint rarely has
/// just one caller), so preparing one batch overlaps writing another.
pub(crate) async fn enqueue_batch(store: Arc<dyn Store>, jobs: usize) -> anyhow::Result<RunResult> {
    const BATCH: usize = 1000;
    const CLIENTS: usize = 4;
    let next = Arc::new(AtomicUsize::new(0));
    let commits_before = store.commits();
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (store, next) = (store.clone(), next.clone());
        clients.spawn(async move {
            loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= jobs {
                    return Ok::<_, anyhow::Error>(());
                }
                let to = (from + BATCH).min(jobs);
                store
                    .submit_batch((from..to).map(noop_job).collect())
                    .await?;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    enqueue_result(&store, jobs, started.elapsed(), commits_before).await
}

/// An enqueue run's figures, checking that exactly `jobs` were stored.
pub(crate) async fn enqueue_result(
    store: &Arc<dyn Store>,
    jobs: usize,
    elapsed: Duration,
    commits_before: u64,
) -> anyhow::Result<RunResult> {
    let stored = count_status(store, None).await?;
    Ok(RunResult {
        jobs_per_sec: jobs as f64 / elapsed.as_secs_f64(),
        jobs,
        commits_per_job: (store.commits() - commits_before) as f64 / jobs as f64,
        lost: jobs.saturating_sub(stored),
        duplicated: stored.saturating_sub(jobs),
        ..RunResult::default()
    })
}

/// Jobs in `status`, or in any status.
async fn count_status(store: &Arc<dyn Store>, status: Option<&str>) -> anyhow::Result<usize> {
    let stats = store.stats().await?;
    Ok(stats
        .iter()
        .flat_map(|s| s.counts.iter())
        .filter(|(name, _)| status.is_none_or(|wanted| name.as_str() == wanted))
        .map(|(_, n)| *n as usize)
        .sum())
}

/// Counts each job's runs and, when asked, when each started.
#[derive(Clone, Default)]
pub(crate) struct Tally {
    runs: Arc<Mutex<HashMap<JobId, usize>>>,
    starts: Arc<Mutex<HashMap<JobId, Instant>>>,
}

impl Tally {
    /// A registry whose `bench.noop` records its runs here.
    pub(crate) fn registry(&self, record_starts: bool) -> anyhow::Result<Registry> {
        let tally = self.clone();
        let mut registry = Registry::new();
        registry.register_fn(
            "bench",
            "noop",
            CommandOptions::default(),
            move |_input: Value, ctx| {
                let at = Instant::now();
                *tally
                    .runs
                    .lock()
                    .unwrap()
                    .entry(ctx.job_id().clone())
                    .or_insert(0) += 1;
                if record_starts {
                    tally
                        .starts
                        .lock()
                        .unwrap()
                        .insert(ctx.job_id().clone(), at);
                }
                async { Ok(Value::Null) }
            },
        )?;
        Ok(registry)
    }

    fn distinct(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    fn run_twice(&self) -> usize {
        self.runs
            .lock()
            .unwrap()
            .values()
            .filter(|&&n| n > 1)
            .count()
    }

    /// Milliseconds from each job's intended submit time to its start.
    fn latencies_ms(&self, submitted: &[(JobId, Instant)]) -> Vec<f64> {
        let starts = self.starts.lock().unwrap();
        submitted
            .iter()
            .filter_map(|(id, at)| {
                starts
                    .get(id)
                    .map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect()
    }
}

fn worker_config(max_tasks: usize) -> WorkerConfig {
    WorkerConfig {
        max_tasks,
        ..WorkerConfig::default()
    }
}

async fn fill(store: &Arc<dyn Store>, jobs: usize, job: fn(usize) -> NewJob) -> anyhow::Result<()> {
    let mut submitted = 0;
    while submitted < jobs {
        let size = FILL_BATCH.min(jobs - submitted);
        store
            .submit_batch((submitted..submitted + size).map(job).collect())
            .await?;
        submitted += size;
    }
    Ok(())
}

/// Whether `drain` runs under a limit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    No,
    /// At most one running job per key, over [`LIMITED_KEYS`] keys: the
    /// cost of counting keys in every claim.
    PerKey,
}

/// `queued` no-op jobs in the queue, then a worker with `max_tasks` slots
/// runs until `measured` of them have completed: the rate of those.
pub(crate) async fn drain(
    store: Arc<dyn Store>,
    queued: usize,
    measured: usize,
    max_tasks: usize,
    limited: Limited,
) -> anyhow::Result<RunResult> {
    if limited == Limited::PerKey {
        // Set first: jobs get their keys as they are inserted.
        store
            .set_limit(errand_core::CommandLimit {
                command: "bench.noop".into(),
                key: Some("input.key".into()),
                max_running: Some(1),
                max_starts: None,
                per_secs: None,
            })
            .await?;
        fill(&store, queued, keyed_job).await?;
    } else {
        fill(&store, queued, noop_job).await?;
    }
    let tally = Tally::default();
    let registry = tally.registry(false)?;
    let mut feed = store.subscribe();
    let commits_before = store.commits();
    let shutdown = CancellationToken::new();
    // CPU of the drain alone, not of filling the queue.
    let usage_before = super::usage::Usage::now();
    let started = Instant::now();
    let worker = tokio::spawn(
        Worker::new(store.clone(), registry, worker_config(max_tasks)).run(shutdown.clone()),
    );
    // Completions are counted from the store's change feed as they
    // commit: polling the store's stats would scan the whole queue (a
    // million rows in depth) and slow the very drain it measures.
    let deadline = started + Duration::from_secs(600);
    let mut completed_seen = 0;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), feed.recv()).await;
        match next {
            Err(_) => bail!("drain did not finish within 10 minutes"),
            Ok(Ok(event)) if event.kind == EventKind::Result => completed_seen += 1,
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                completed_seen = count_status(&store, Some("completed")).await?;
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => bail!("the store's change feed closed"),
        }
        if completed_seen >= measured {
            break;
        }
    }
    let elapsed = started.elapsed();
    let cpu_secs = super::usage::Usage::now().cpu_secs_since(&usage_before);
    let commits = store.commits() - commits_before;
    shutdown.cancel();
    worker.await??;
    // After a graceful stop every job that ran has its outcome recorded.
    let ran = tally.distinct();
    let completed = count_status(&store, Some("completed")).await?;
    Ok(RunResult {
        jobs_per_sec: measured as f64 / elapsed.as_secs_f64(),
        jobs: measured,
        commits_per_job: commits as f64 / measured as f64,
        lost: measured.saturating_sub(ran) + ran.saturating_sub(completed),
        duplicated: tally.run_twice() + completed.saturating_sub(ran),
        cpu_secs,
        ..RunResult::default()
    })
}

/// Submits at `rate` jobs/s for `duration`, open loop (on schedule, whether
/// or not earlier jobs have run), into a worker with `max_tasks` slots.
/// Latency runs from the moment each submit is issued to its handler's
/// start, so a slow submit counts against errand. Each submit is its own
/// task, issued on schedule whatever earlier ones are doing; measuring from
/// the schedule instead would add the timer's lateness (up to a tick of
/// 1–2 ms) to every sample, which is the harness's, not errand's.
pub(crate) async fn latency(
    store: Arc<dyn Store>,
    rate: f64,
    duration: Duration,
    max_tasks: usize,
) -> anyhow::Result<RunResult> {
    let tally = Tally::default();
    let registry = tally.registry(true)?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(store.clone(), registry, worker_config(max_tasks)).run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let commits_before = store.commits();
    let start = Instant::now();
    let mut submits = tokio::task::JoinSet::new();
    let mut ticks =
        tokio::time::interval(Duration::from_millis(1).max(Duration::from_secs_f64(0.2 / rate)));
    let mut next = 0;
    while next < samples {
        ticks.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(samples);
        for i in next..due {
            let issued = Instant::now();
            let store = store.clone();
            submits.spawn(async move {
                let id = store.submit(noop_job(i)).await?.job_id;
                Ok::<_, anyhow::Error>((id, issued))
            });
        }
        next = due;
    }
    let mut submitted = Vec::with_capacity(samples);
    while let Some(done) = submits.join_next().await {
        submitted.push(done??);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.distinct() < samples && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let commits = store.commits() - commits_before;
    shutdown.cancel();
    worker.await??;
    let completed = count_status(&store, Some("completed")).await?;
    let ran = tally.distinct();
    Ok(RunResult {
        jobs_per_sec: samples as f64 / duration.as_secs_f64(),
        jobs: samples,
        commits_per_job: commits as f64 / samples as f64,
        latencies_ms: tally.latencies_ms(&submitted),
        lost: samples.saturating_sub(ran) + ran.saturating_sub(completed),
        duplicated: tally.run_twice(),
        ..RunResult::default()
    })
}

/// An idle worker (default settings) on an empty store: the store calls it
/// makes per second, by operation, and the process's resident memory.
pub(crate) struct IdleResult {
    pub calls_per_sec: f64,
    pub by_operation: Vec<(&'static str, f64)>,
    pub rss_mib: f64,
}

pub(crate) async fn idle(store: Arc<dyn Store>, watch: Duration) -> anyhow::Result<IdleResult> {
    let calls: Arc<Mutex<std::collections::BTreeMap<&'static str, u64>>> = Arc::default();
    let counter = calls.clone();
    let observed: Arc<dyn Store> = Arc::new(errand_store::Observed::new(store, move |op| {
        *counter.lock().unwrap().entry(op).or_insert(0) += 1;
        Ok(())
    }));
    let registry = Tally::default().registry(false)?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(observed, registry, WorkerConfig::default()).run(shutdown.clone()),
    );
    // Past start-up (registering, the first claim), then count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    calls.lock().unwrap().clear();
    tokio::time::sleep(watch).await;
    let counted = calls.lock().unwrap().clone();
    let rss_mib = resident_mib();
    shutdown.cancel();
    worker.await??;
    let secs = watch.as_secs_f64();
    Ok(IdleResult {
        calls_per_sec: counted.values().sum::<u64>() as f64 / secs,
        by_operation: counted
            .into_iter()
            .map(|(op, n)| (op, n as f64 / secs))
            .collect(),
        rss_mib,
    })
}

/// The process's resident memory now (VmRSS), in MiB.
fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
