//! `errand bench`: throughput and latency of a store and the worker runtime,
//! each run on a fresh store, with exact delivery checked on every run.
//!
//! - `workloads`: enqueue, enqueue-batch, drain, latency, depth.
//! - `http`: submits through the real HTTP server.
//! - `reads`: the stats and list reads against a small and a large table.
//! - `fanout`: one job's events to many SSE clients.
//! - `target`: a fresh store per run, and the plain-insert baseline.
//! - `usage`: CPU time and peak memory.
//! - `report`: the table, JSON lines, or Markdown.

mod fanout;
mod http;
mod reads;
mod report;
mod target;
mod usage;
mod workloads;

use std::time::Duration;

use anyhow::{bail, Context};
use target::Target;
use usage::Usage;

/// Every workload, in the order `all` runs them (drain before
/// latency-load, which offers half of drain's measured capacity).
/// `idle` watches an idle worker for 10 s: store calls per second, RSS.
const WORKLOADS: &[&str] = &[
    // First, so its memory figure is not the high-water mark of the rest.
    "idle",
    "enqueue",
    "enqueue-batch",
    "drain",
    "drain-limited",
    "latency-idle",
    "latency-load",
    "depth",
    "http-submit",
    "sse-fanout",
    "reads",
];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// idle, enqueue, enqueue-batch, drain, drain-limited, latency-idle,
    /// latency-load, depth, http-submit, sse-fanout, reads, or all.
    workload: String,
    /// Store URL; each run gets a fresh file (next to this one) or a fresh
    /// PostgreSQL database. Default: SQLite in a temporary directory.
    #[arg(long)]
    store: Option<String>,
    /// Jobs per run (throughput workloads). [default: 100000 on SQLite,
    /// 10000 on PostgreSQL, whose every statement is a network round trip]
    #[arg(long)]
    jobs: Option<usize>,
    /// Runs per workload; the median is reported, with min and max.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Worker slots for drain, depth and latency-load.
    #[arg(long, default_value_t = 256)]
    max_tasks: usize,
    /// Concurrent submitters for enqueue; connections for http-submit.
    #[arg(long, default_value_t = 64)]
    submitters: usize,
    /// SSE clients for sse-fanout.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// How long latency-load offers its load.
    #[arg(long, default_value_t = 10)]
    load_secs: u64,
    /// The rate latency-load offers, in jobs/s, instead of half of drain's
    /// measured capacity.
    #[arg(long)]
    load_rate: Option<f64>,
    /// Jobs queued for the deep half of depth (the shallow half has 10,000).
    #[arg(long, default_value_t = 1_000_000)]
    depth: usize,
    /// Jobs in the large table of reads (the small one has 10,000).
    #[arg(long, default_value_t = 1_000_000)]
    table: usize,
    /// Print one JSON object per workload instead of a table.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print a Markdown section (machine, settings, command, table) for
    /// docs/benchmarks.md.
    #[arg(long)]
    markdown: bool,
}

impl BenchArgs {
    fn jobs(&self) -> usize {
        self.jobs.expect("set from the store's default in run")
    }
}

/// One run's measurements.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunResult {
    pub jobs_per_sec: f64,
    /// How many jobs (or events) the rate counts.
    pub jobs: usize,
    pub commits_per_job: f64,
    pub latencies_ms: Vec<f64>,
    pub lost: usize,
    pub duplicated: usize,
    /// Set by a workload that times only part of its run; else the
    /// whole run's.
    pub cpu_secs: f64,
    pub peak_rss_mib: f64,
}

/// Jobs drained in each half of `depth`.
const DEPTH_MEASURED: usize = 10_000;

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    let workloads: Vec<&'static str> = match args.workload.as_str() {
        "all" => WORKLOADS.to_vec(),
        one => match WORKLOADS.iter().find(|w| **w == one) {
            Some(known) => vec![*known],
            None => bail!(
                "unknown workload {one:?}: use one of {} or all",
                WORKLOADS.join(", ")
            ),
        },
    };
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let target = Target::from_arg(args.store.as_deref(), scratch.path())?;
    args.jobs = Some(args.jobs.unwrap_or(match target {
        Target::Sqlite { .. } => 100_000,
        Target::Postgres { .. } => 10_000,
    }));
    if args.runs == 0 || args.jobs() == 0 {
        bail!("--runs and --jobs must be at least 1");
    }
    let mut baselines: Vec<f64> = Vec::new();
    for _ in 0..args.runs {
        baselines.push(target.baseline(args.jobs()).await?);
    }
    let mut out = report::Report::new(&target, &args, report::median(&mut baselines));
    out.begin();
    let mut drain_capacity = None;
    for workload in workloads {
        if workload == "idle" {
            let mut results = Vec::with_capacity(args.runs);
            for _ in 0..args.runs {
                let (store, fresh) = target.fresh(workload).await?;
                let result = workloads::idle(store.clone(), Duration::from_secs(10)).await;
                drop(store);
                fresh.remove().await;
                results.push(result?);
            }
            out.idle(&results);
            continue;
        }
        let rows: Vec<(String, Vec<RunResult>)> = match workload {
            "reads" => {
                let mut rows = Vec::new();
                for size in [READS_SMALL, args.table] {
                    let (stats, list) = read_runs(&target, &args, size).await?;
                    rows.push((format!("stats-{}", short_count(size)), stats));
                    rows.push((format!("list-{}", short_count(size)), list));
                }
                rows
            }
            "depth" => vec![
                (
                    format!("depth-{}", short_count(DEPTH_MEASURED)),
                    runs(&target, &args, workload, DEPTH_MEASURED, None).await?,
                ),
                (
                    format!("depth-{}", short_count(args.depth)),
                    runs(&target, &args, workload, args.depth, None).await?,
                ),
            ],
            "latency-load" => {
                let rate = match (args.load_rate, drain_capacity) {
                    (Some(rate), _) => rate,
                    (None, Some(capacity)) => capacity / 2.0,
                    (None, None) => calibrate(&target, &args).await? / 2.0,
                };
                let label = format!("latency-load ({rate:.0}/s)");
                vec![(label, runs(&target, &args, workload, 0, Some(rate)).await?)]
            }
            _ => vec![(
                workload.to_owned(),
                runs(&target, &args, workload, 0, None).await?,
            )],
        };
        for (label, results) in rows {
            if workload == "drain" {
                let mut rates: Vec<f64> = results.iter().map(|r| r.jobs_per_sec).collect();
                drain_capacity = Some(report::median(&mut rates));
            }
            out.row(&label, &results);
        }
    }
    out.end();
    if out.failed() {
        bail!("a run lost or duplicated jobs (see the lost column)");
    }
    Ok(())
}

fn short_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// `args.runs` runs of `workload`, each on a fresh store.
async fn runs(
    target: &Target,
    args: &BenchArgs,
    workload: &str,
    queued: usize,
    rate: Option<f64>,
) -> anyhow::Result<Vec<RunResult>> {
    let mut results = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let (store, fresh) = target.fresh(workload).await?;
        let before = Usage::now();
        let result = match workload {
            "enqueue" => workloads::enqueue(store.clone(), args.jobs(), args.submitters).await,
            "enqueue-batch" => workloads::enqueue_batch(store.clone(), args.jobs()).await,
            "drain" | "drain-limited" => {
                let limited = match workload {
                    "drain" => workloads::Limited::No,
                    _ => workloads::Limited::PerKey,
                };
                let jobs = args.jobs();
                workloads::drain(store.clone(), jobs, jobs, args.max_tasks, limited).await
            }
            "depth" => {
                let limited = workloads::Limited::No;
                workloads::drain(
                    store.clone(),
                    queued,
                    DEPTH_MEASURED,
                    args.max_tasks,
                    limited,
                )
                .await
            }
            "latency-idle" => {
                // One job every 10 ms into an idle worker.
                workloads::latency(store.clone(), 100.0, Duration::from_secs(5), 5).await
            }
            "latency-load" => {
                let rate = rate.expect("latency-load has a rate");
                let duration = Duration::from_secs(args.load_secs);
                workloads::latency(store.clone(), rate, duration, args.max_tasks).await
            }
            "http-submit" => http::http_submit(store.clone(), args.jobs(), args.submitters).await,
            "sse-fanout" => fanout::sse_fanout(store.clone(), args.subscribers).await,
            other => unreachable!("checked above: {other}"),
        };
        let after = Usage::now();
        drop(store);
        fresh.remove().await;
        let mut result = result.with_context(|| format!("{workload} failed"))?;
        if result.cpu_secs == 0.0 {
            result.cpu_secs = after.cpu_secs_since(&before);
        }
        result.peak_rss_mib = after.peak_rss_mib;
        results.push(result);
    }
    Ok(results)
}

/// Jobs in the small table of `reads`.
const READS_SMALL: usize = 10_000;

/// `args.runs` runs of `reads` on a fresh store of `size` jobs each: the
/// stats runs and the list runs.
async fn read_runs(
    target: &Target,
    args: &BenchArgs,
    size: usize,
) -> anyhow::Result<(Vec<RunResult>, Vec<RunResult>)> {
    let (mut stats, mut list) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (store, fresh) = target.fresh("reads").await?;
        let result = reads::reads(store.clone(), size, fresh.settle()).await;
        drop(store);
        fresh.remove().await;
        let (s, l) = result.context("reads failed")?;
        stats.push(s);
        list.push(l);
    }
    Ok((stats, list))
}

/// Drain capacity for latency-load when drain did not run before it.
async fn calibrate(target: &Target, args: &BenchArgs) -> anyhow::Result<f64> {
    let jobs = args.jobs().min(20_000);
    let (store, fresh) = target.fresh("calibrate").await?;
    let result = workloads::drain(
        store.clone(),
        jobs,
        jobs,
        args.max_tasks,
        workloads::Limited::No,
    )
    .await;
    drop(store);
    fresh.remove().await;
    Ok(result?.jobs_per_sec)
}
