//! `reads`: what a dashboard or a scraper polls (the stats of every
//! command, the first page of the job list) against a table of 10,000 jobs
//! and against a large one. Reads that do not grow with the table answer
//! in about the same time at both sizes.

use std::sync::Arc;
use std::time::Instant;

use errand::{ListParams, Store};
use errand_store::{ClaimParams, Fence, Outcome, DEFAULT_QUEUE};
use serde_json::json;

use super::workloads::noop_job;
use super::RunResult;

/// Jobs per batch while the table fills.
const FILL_BATCH: usize = 5000;
/// Calls timed per read.
const CALLS: usize = 50;
/// Jobs left queued: a queue of the same depth at both sizes, so that
/// only the finished jobs grow.
const QUEUED: usize = 1000;

/// Fills `store` with `size` jobs ([`QUEUED`] of them queued, the rest
/// completed), lets `settle` bring it to the state of a store in service,
/// then times [`CALLS`] stats reads and [`CALLS`] first pages of the list.
pub(crate) async fn reads(
    store: Arc<dyn Store>,
    size: usize,
    settle: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<(RunResult, RunResult)> {
    fill(&store, size).await?;
    settle.await?;
    let stats = timed(|| async {
        let stats = store.stats().await?;
        let total: u64 = stats.iter().flat_map(|s| s.counts.values()).sum();
        anyhow::ensure!(total == size as u64, "stats counted {total} of {size} jobs");
        Ok(())
    })
    .await?;
    let list = timed(|| async {
        let page = store
            .list(ListParams {
                limit: 50,
                ..ListParams::default()
            })
            .await?;
        anyhow::ensure!(page.jobs.len() == 50.min(size), "a short first page");
        Ok(())
    })
    .await?;
    Ok((stats, list))
}

async fn fill(store: &Arc<dyn Store>, size: usize) -> anyhow::Result<()> {
    let finished = size.saturating_sub(QUEUED);
    let mut submitted = 0;
    while submitted < size {
        let n = FILL_BATCH.min(size - submitted);
        store
            .submit_batch((submitted..submitted + n).map(noop_job).collect())
            .await?;
        submitted += n;
    }
    let mut done = 0;
    while done < finished {
        let claimed = store
            .claim(ClaimParams {
                worker_id: "bench".into(),
                queues: vec![DEFAULT_QUEUE.into()],
                commands: None,
                limit: FILL_BATCH.min(finished - done),
                lease: std::time::Duration::from_secs(600),
            })
            .await?;
        anyhow::ensure!(!claimed.is_empty(), "the fill found no job to claim");
        done += claimed.len();
        let outcomes = claimed
            .into_iter()
            .map(|job| {
                let fence = Fence {
                    job_id: job.job_id,
                    attempt: job.attempt,
                    worker_id: "bench".into(),
                };
                (
                    fence,
                    Outcome::Completed {
                        result: json!(null),
                    },
                )
            })
            .collect();
        for result in store.finish(outcomes).await? {
            result?;
        }
    }
    Ok(())
}

async fn timed<F, Fut>(read: F) -> anyhow::Result<RunResult>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    read().await?; // warm: prepared statements, caches
    let mut latencies_ms = Vec::with_capacity(CALLS);
    let started = Instant::now();
    for _ in 0..CALLS {
        let call = Instant::now();
        read().await?;
        latencies_ms.push(call.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(RunResult {
        jobs_per_sec: CALLS as f64 / started.elapsed().as_secs_f64(),
        jobs: CALLS,
        latencies_ms,
        ..RunResult::default()
    })
}
