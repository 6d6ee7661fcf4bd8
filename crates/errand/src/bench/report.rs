//! How `errand bench` prints: a table for people, JSON lines for scripts
//! (`--json`), or a Markdown section for docs/benchmarks.md (`--markdown`).
//! Every figure is the median of the runs; rates also show min and max.

use serde_json::json;

use super::target::Target;
use super::{BenchArgs, RunResult};

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    errand_store::nearest_rank(sorted, p).unwrap_or(f64::NAN)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Table,
    Json,
    Markdown,
}

pub(crate) struct Report {
    format: Format,
    store: &'static str,
    describe: String,
    jobs: usize,
    runs: usize,
    baseline: f64,
    failed: bool,
    /// Printed after the table, which it does not fit.
    idle_line: Option<String>,
}

/// One workload's medians.
struct Row {
    rate: f64,
    min: f64,
    max: f64,
    commits: f64,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max_ms: Option<f64>,
    cpu_us_per_job: f64,
    peak_rss_mib: f64,
    lost: usize,
    duplicated: usize,
}

impl Row {
    fn of(runs: &[RunResult]) -> Self {
        let medians = |f: &dyn Fn(&RunResult) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(f).collect();
            median(&mut values)
        };
        let mut rates: Vec<f64> = runs.iter().map(|r| r.jobs_per_sec).collect();
        let rate = median(&mut rates);
        let latency = |p: f64| {
            let mut per_run: Vec<f64> = runs
                .iter()
                .filter(|r| !r.latencies_ms.is_empty())
                .map(|r| {
                    let mut sorted = r.latencies_ms.clone();
                    sorted.sort_by(f64::total_cmp);
                    percentile(&sorted, p)
                })
                .collect();
            (!per_run.is_empty()).then(|| median(&mut per_run))
        };
        Self {
            rate,
            min: rates[0],
            max: rates[rates.len() - 1],
            commits: medians(&|r| r.commits_per_job),
            p50: latency(0.50),
            p95: latency(0.95),
            p99: latency(0.99),
            max_ms: latency(1.0),
            cpu_us_per_job: medians(&|r| r.cpu_secs * 1e6 / r.jobs.max(1) as f64),
            peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
            lost: runs.iter().map(|r| r.lost).sum(),
            duplicated: runs.iter().map(|r| r.duplicated).sum(),
        }
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

impl Report {
    pub(crate) fn new(target: &Target, args: &BenchArgs, baseline: f64) -> Self {
        let format = if args.json {
            Format::Json
        } else if args.markdown {
            Format::Markdown
        } else {
            Format::Table
        };
        Self {
            format,
            store: target.name(),
            describe: target.describe(),
            jobs: args.jobs.unwrap_or_default(),
            runs: args.runs,
            baseline,
            failed: false,
            idle_line: None,
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    pub(crate) fn begin(&self) {
        let baseline = format!(
            "plain inserts of a job-sized row, 1,000 per transaction: {:.0} rows/s",
            self.baseline
        );
        match self.format {
            Format::Json => println!(
                "{}",
                json!({"workload": "baseline-insert", "store": self.store,
                       "rows_per_sec": self.baseline, "runs": self.runs})
            ),
            Format::Table => {
                println!(
                    "store: {}, {} jobs per run, {} runs; medians, rates with [min – max]",
                    self.describe, self.jobs, self.runs
                );
                println!("baseline: {baseline}");
                println!(
                    "{:<26} {:>9} {:>19} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5}",
                    "workload",
                    "jobs/s",
                    "range",
                    "x base",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "commits",
                    "cpu us",
                    "rss MiB",
                    "lost"
                );
            }
            Format::Markdown => {
                println!("### {}\n", self.describe);
                println!("{}\n", machine());
                println!(
                    "Command: `{}` ({} jobs per run, {} runs; medians, with min – max of the rate).\n",
                    std::env::args().collect::<Vec<_>>().join(" "),
                    self.jobs,
                    self.runs
                );
                println!("Baseline: {baseline}.\n");
                println!("| workload | jobs/s | min – max | × baseline | p50 ms | p95 ms | p99 ms | max ms | commits/job | CPU µs/job | peak RSS MiB | lost + dup |");
                println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            }
        }
    }

    pub(crate) fn row(&mut self, workload: &str, runs: &[RunResult]) {
        let row = Row::of(runs);
        self.failed |= row.lost + row.duplicated > 0;
        let ratio = row.rate / self.baseline;
        match self.format {
            Format::Json => println!(
                "{}",
                json!({
                    "workload": workload, "store": self.store, "jobs_per_sec": row.rate,
                    "jobs_per_sec_min": row.min, "jobs_per_sec_max": row.max,
                    "p50_ms": row.p50, "p95_ms": row.p95, "p99_ms": row.p99, "max_ms": row.max_ms,
                    "commits_per_job": row.commits, "ratio_to_baseline": ratio,
                    "cpu_us_per_job": row.cpu_us_per_job, "peak_rss_mib": row.peak_rss_mib,
                    "runs": runs.len(), "lost": row.lost, "duplicated": row.duplicated,
                })
            ),
            Format::Table => println!(
                "{:<26} {:>9.0} {:>19} {:>7.3} {:>8} {:>8} {:>8} {:>8} {:>8.3} {:>8.1} {:>7.0} {:>5}",
                workload,
                row.rate,
                format!("[{:.0} – {:.0}]", row.min, row.max),
                ratio,
                ms(row.p50),
                ms(row.p95),
                ms(row.p99),
                ms(row.max_ms),
                row.commits,
                row.cpu_us_per_job,
                row.peak_rss_mib,
                row.lost + row.duplicated
            ),
            Format::Markdown => println!(
                "| {workload} | {:.0} | {:.0} – {:.0} | {ratio:.3} | {} | {} | {} | {} | {:.3} | {:.1} | {:.0} | {} |",
                row.rate,
                row.min,
                row.max,
                ms(row.p50),
                ms(row.p95),
                ms(row.p99),
                ms(row.max_ms),
                row.commits,
                row.cpu_us_per_job,
                row.peak_rss_mib,
                row.lost + row.duplicated
            ),
        }
    }

    /// The idle worker's line: store calls per second (and by operation),
    /// resident memory; medians of the runs.
    pub(crate) fn idle(&mut self, runs: &[super::workloads::IdleResult]) {
        let calls = median(&mut runs.iter().map(|r| r.calls_per_sec).collect::<Vec<_>>());
        let rss = median(&mut runs.iter().map(|r| r.rss_mib).collect::<Vec<_>>());
        let middle = runs
            .iter()
            .find(|r| r.calls_per_sec == calls)
            .expect("the median is one of the runs");
        let by_operation = middle
            .by_operation
            .iter()
            .map(|(op, rate)| format!("{op} {rate:.1}/s"))
            .collect::<Vec<_>>()
            .join(", ");
        match self.format {
            Format::Json => println!(
                "{}",
                json!({"workload": "idle", "store": self.store, "store_calls_per_sec": calls,
                       "rss_mib": rss, "runs": runs.len(),
                       "by_operation": middle.by_operation.iter().map(|(op, r)| json!({"operation": op, "per_sec": r})).collect::<Vec<_>>()})
            ),
            Format::Table => {
                self.idle_line = Some(format!(
                    "idle worker (10 s): {calls:.1} store calls/s ({by_operation}); RSS {rss:.1} MiB"
                ))
            }
            Format::Markdown => self.idle_line = Some(format!(
                "Idle worker, default settings, 10 s on an empty store: **{calls:.1} store calls/s** \
                 ({by_operation}); **RSS {rss:.1} MiB** (the whole bench process, before any \
                 other workload)."
            )),
        }
    }

    pub(crate) fn end(&self) {
        if let Some(line) = &self.idle_line {
            println!("\n{line}");
        }
        if self.format == Format::Markdown {
            println!(
                "\nCPU is the errand process's (user + system) per job; a PostgreSQL \
                 server's own CPU is not in it. Peak RSS is the process's high-water \
                 mark so far."
            );
        }
    }
}

/// The machine in one line: CPU model, cores, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or("?".to_owned(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Machine: {model}, {cores} cores, {memory_gib} GiB, Linux {}; errand {}, release build.",
        kernel.trim(),
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_takes_medians_and_sums_losses() {
        let run = |rate: f64, lost: usize| RunResult {
            jobs_per_sec: rate,
            jobs: 100,
            latencies_ms: vec![1.0, 2.0, 3.0, 4.0, 100.0],
            lost,
            cpu_secs: 0.001,
            ..RunResult::default()
        };
        let row = Row::of(&[run(30.0, 0), run(10.0, 1), run(20.0, 0)]);
        assert_eq!((row.rate, row.min, row.max), (20.0, 10.0, 30.0));
        assert_eq!(row.p50, Some(3.0));
        assert_eq!(row.max_ms, Some(100.0));
        assert_eq!(row.lost, 1);
        assert!((row.cpu_us_per_job - 10.0).abs() < 1e-9);
    }
}
