//! `errand bench`: throughput and latency of a store and the worker runtime,
//! each run on a fresh store, with exact delivery checked on every run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::bench_target::Target;
use errand::{CommandOptions, JobId, NewJob, Registry, Store, Worker, WorkerConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// enqueue, enqueue-batch, drain, latency-idle, or all.
    workload: String,
    /// Store URL; each run gets a fresh file inside this one's directory.
    /// Default: a temporary directory.
    #[arg(long)]
    store: Option<String>,
    /// Jobs per run (throughput workloads).
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Runs per workload; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Worker slots for drain.
    #[arg(long, default_value_t = 256)]
    max_tasks: usize,
    /// Concurrent submitters for enqueue.
    #[arg(long, default_value_t = 64)]
    submitters: usize,
    /// SSE clients for sse-fanout.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Print one JSON object per workload instead of a table.
    #[arg(long)]
    json: bool,
}

/// One run's measurements.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunResult {
    pub jobs_per_sec: f64,
    pub commits_per_job: f64,
    pub latencies_ms: Vec<f64>,
    pub lost: usize,
    pub duplicated: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let workloads: Vec<&str> = match args.workload.as_str() {
        "all" => vec!["enqueue", "enqueue-batch", "drain", "latency-idle", "sse-fanout"],
        one @ ("enqueue" | "enqueue-batch" | "drain" | "latency-idle" | "sse-fanout") => vec![one],
        other => bail!(
            "unknown workload {other:?}: use enqueue, enqueue-batch, drain, latency-idle, sse-fanout or all"
        ),
    };
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let target = Target::from_arg(args.store.as_deref(), scratch.path())?;
    let mut baselines: Vec<f64> = Vec::new();
    for _ in 0..args.runs {
        baselines.push(target.baseline(args.jobs).await?);
    }
    let baseline = median(&mut baselines);
    let store_name = target.name();
    if args.json {
        println!(
            "{}",
            json!({"workload": "baseline-insert", "store": store_name, "rows_per_sec": baseline, "runs": args.runs})
        );
    } else {
        println!(
            "store: {}, {} jobs per run, {} runs, median [min – max]",
            target.describe(),
            args.jobs,
            args.runs
        );
        println!("baseline: plain inserts, 1,000 rows per transaction: {baseline:.0} rows/s");
        println!(
            "{:<14} {:>12} {:>22} {:>10} {:>10} {:>10} {:>12} {:>6}",
            "workload", "jobs/s", "range", "x baseline", "p50 ms", "p99 ms", "commits/job", "lost"
        );
    }
    let mut failed = false;
    for workload in workloads {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            let (store, fresh) = target.fresh(workload).await?;
            let result = match workload {
                "enqueue" => enqueue(store.clone(), args.jobs, args.submitters).await,
                "enqueue-batch" => enqueue_batch(store.clone(), args.jobs).await,
                "drain" => drain(store.clone(), args.jobs, args.max_tasks).await,
                "sse-fanout" => crate::fanout::sse_fanout(store.clone(), args.subscribers).await,
                _ => latency_idle(store.clone(), 500).await,
            };
            drop(store);
            fresh.remove().await;
            runs.push(result?);
        }
        failed |= report(workload, store_name, &runs, args.json, baseline);
    }
    if failed {
        bail!("a run lost or duplicated jobs");
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints one workload's line; true when a run lost or duplicated jobs.
fn report(workload: &str, store: &str, runs: &[RunResult], json: bool, baseline: f64) -> bool {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.jobs_per_sec).collect();
    let mut commits: Vec<f64> = runs.iter().map(|r| r.commits_per_job).collect();
    let rate = median(&mut rates);
    let (min, max) = (rates[0], rates[rates.len() - 1]);
    let commits = median(&mut commits);
    let mut p50s: Vec<f64> = Vec::new();
    let mut p99s: Vec<f64> = Vec::new();
    for run in runs.iter().filter(|r| !r.latencies_ms.is_empty()) {
        let mut sorted = run.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        p50s.push(percentile(&sorted, 0.50));
        p99s.push(percentile(&sorted, 0.99));
    }
    let p50 = (!p50s.is_empty()).then(|| median(&mut p50s));
    let p99 = (!p99s.is_empty()).then(|| median(&mut p99s));
    let lost: usize = runs.iter().map(|r| r.lost).sum();
    let duplicated: usize = runs.iter().map(|r| r.duplicated).sum();
    if json {
        println!(
            "{}",
            json!({
                "workload": workload, "store": store, "jobs_per_sec": rate,
                "jobs_per_sec_min": min, "jobs_per_sec_max": max,
                "p50_ms": p50, "p99_ms": p99, "commits_per_job": commits,
                "ratio_to_baseline": rate / baseline,
                "runs": runs.len(), "lost": lost, "duplicated": duplicated,
            })
        );
    } else {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        println!(
            "{:<14} {:>12.0} {:>22} {:>10.3} {:>10} {:>10} {:>12.3} {:>6}",
            workload,
            rate,
            format!("[{min:.0} – {max:.0}]"),
            rate / baseline,
            ms(p50),
            ms(p99),
            commits,
            lost + duplicated
        );
    }
    lost + duplicated > 0
}

fn noop_job(i: usize) -> NewJob {
    NewJob::new("bench", "noop", json!({"i": i}))
}

async fn enqueue(
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
async fn enqueue_batch(store: Arc<dyn Store>, jobs: usize) -> anyhow::Result<RunResult> {
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
async fn enqueue_result(
    store: &Arc<dyn Store>,
    jobs: usize,
    elapsed: Duration,
    commits_before: u64,
) -> anyhow::Result<RunResult> {
    let stored = count_jobs(store).await?;
    Ok(RunResult {
        jobs_per_sec: jobs as f64 / elapsed.as_secs_f64(),
        commits_per_job: (store.commits() - commits_before) as f64 / jobs as f64,
        lost: jobs.saturating_sub(stored),
        duplicated: stored.saturating_sub(jobs),
        ..RunResult::default()
    })
}

async fn count_jobs(store: &Arc<dyn Store>) -> anyhow::Result<usize> {
    let stats = store.stats().await?;
    Ok(stats
        .iter()
        .map(|s| s.counts.values().sum::<u64>() as usize)
        .sum())
}

async fn count_status(store: &Arc<dyn Store>, status: &str) -> anyhow::Result<usize> {
    let stats = store.stats().await?;
    Ok(stats
        .iter()
        .map(|s| s.counts.get(status).copied().unwrap_or(0) as usize)
        .sum())
}

/// A registry whose `bench.noop` counts its runs per job.
fn counting_registry(
    runs: Arc<Mutex<HashMap<JobId, usize>>>,
    on_start: Option<Arc<Mutex<HashMap<JobId, Instant>>>>,
) -> anyhow::Result<Registry> {
    let mut registry = Registry::new();
    registry.register_fn(
        "bench",
        "noop",
        CommandOptions::default(),
        move |_input: Value, ctx| {
            let at = Instant::now();
            *runs
                .lock()
                .unwrap()
                .entry(ctx.job_id().clone())
                .or_insert(0) += 1;
            if let Some(starts) = &on_start {
                starts.lock().unwrap().insert(ctx.job_id().clone(), at);
            }
            async { Ok(Value::Null) }
        },
    )?;
    Ok(registry)
}

fn bench_worker_config(max_tasks: usize) -> WorkerConfig {
    WorkerConfig {
        max_tasks,
        ..WorkerConfig::default()
    }
}

async fn drain(store: Arc<dyn Store>, jobs: usize, max_tasks: usize) -> anyhow::Result<RunResult> {
    let mut submitted = 0;
    while submitted < jobs {
        let size = 5000.min(jobs - submitted);
        store
            .submit_batch((submitted..submitted + size).map(noop_job).collect())
            .await?;
        submitted += size;
    }
    let runs = Arc::new(Mutex::new(HashMap::with_capacity(jobs)));
    let registry = counting_registry(runs.clone(), None)?;
    let commits_before = store.commits();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let worker = tokio::spawn(
        Worker::new(store.clone(), registry, bench_worker_config(max_tasks)).run(shutdown.clone()),
    );
    let deadline = started + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if runs.lock().unwrap().len() >= jobs && count_status(&store, "completed").await? >= jobs {
            break;
        }
        if Instant::now() > deadline {
            bail!("drain did not finish within 10 minutes");
        }
    }
    let elapsed = started.elapsed();
    let commits = store.commits() - commits_before;
    shutdown.cancel();
    worker.await??;
    let runs = runs.lock().unwrap();
    Ok(RunResult {
        jobs_per_sec: jobs as f64 / elapsed.as_secs_f64(),
        commits_per_job: commits as f64 / jobs as f64,
        lost: jobs.saturating_sub(runs.len()),
        duplicated: runs.values().filter(|&&n| n > 1).count(),
        ..RunResult::default()
    })
}

/// One job every 10 ms into an idle worker: submit → handler start.
async fn latency_idle(store: Arc<dyn Store>, samples: usize) -> anyhow::Result<RunResult> {
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let starts = Arc::new(Mutex::new(HashMap::new()));
    let registry = counting_registry(runs.clone(), Some(starts.clone()))?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        Worker::new(store.clone(), registry, bench_worker_config(5)).run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let commits_before = store.commits();
    let mut submitted_at = Vec::with_capacity(samples);
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    for i in 0..samples {
        ticks.tick().await;
        let at = Instant::now();
        let id = store.submit(noop_job(i)).await?.job_id;
        submitted_at.push((id, at));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs.lock().unwrap().len() < samples && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let commits = store.commits() - commits_before;
    shutdown.cancel();
    worker.await??;
    let starts = starts.lock().unwrap();
    let latencies_ms = submitted_at
        .iter()
        .filter_map(|(id, at)| {
            starts
                .get(id)
                .map(|s| s.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    let runs = runs.lock().unwrap();
    Ok(RunResult {
        jobs_per_sec: samples as f64 / (samples as f64 * 0.01),
        commits_per_job: commits as f64 / samples as f64,
        latencies_ms,
        lost: samples.saturating_sub(runs.len()),
        duplicated: runs.values().filter(|&&n| n > 1).count(),
    })
}
