//! Small background services of a worker: heartbeat and reaper.

use std::collections::HashMap;
use std::sync::Arc;

use errand_core::JobId;
use errand_store::{Fence, HeartbeatParams};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::running::StopReason;
use crate::worker::Shared;

pub(crate) fn start(
    shared: Arc<Shared>,
    stop: CancellationToken,
    fatal: CancellationToken,
) -> JoinSet<()> {
    let mut services = JoinSet::new();
    services.spawn(heartbeat(shared.clone(), stop.clone(), fatal));
    services.spawn(reaper(shared, stop));
    services
}

/// Renews the leases of every running attempt in one call; stops attempts
/// that were canceled or lost. Signals `fatal` when the store stayed
/// unreachable past the configured limit.
async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken, fatal: CancellationToken) {
    let config = &shared.config;
    let mut ticks = tokio::time::interval(config.heartbeat_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let running = shared.running.fences();
        let sent: HashMap<JobId, Fence> = running
            .iter()
            .map(|fence| (fence.job_id.clone(), fence.clone()))
            .collect();
        let params = HeartbeatParams {
            worker_id: config.worker_id.clone(),
            running,
            lease: config.lease,
        };
        match shared.store.heartbeat(params).await {
            Ok(reply) => {
                last_ok = Instant::now();
                if reply.unknown_worker {
                    tracing::warn!(
                        "the store forgot this worker (silent too long); registering again"
                    );
                    if let Err(err) = crate::worker::register(&shared).await {
                        tracing::warn!(error = %err, "could not register again");
                    }
                }
                let answered = |ids: Vec<JobId>| {
                    ids.into_iter()
                        .filter_map(|id| sent.get(&id))
                        .collect::<Vec<_>>()
                };
                for fence in answered(reply.cancel_requested) {
                    shared.running.stop_attempt(fence, StopReason::Canceled);
                }
                for fence in answered(reply.lost) {
                    shared.running.stop_attempt(fence, StopReason::LeaseLost);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "heartbeat failed");
                if last_ok.elapsed() >= config.store_unavailable_limit {
                    fatal.cancel();
                }
                // Our leases ran out meanwhile: those jobs belong to others.
                if last_ok.elapsed() >= config.lease {
                    shared.running.stop_all(StopReason::LeaseLost);
                }
            }
        }
    }
}

/// Returns jobs of dead workers to the queue. Any worker may do it.
async fn reaper(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(shared.config.reap_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match shared.store.reap_expired().await {
            Ok(reaped) if !reaped.is_empty() => {
                tracing::info!(count = reaped.len(), jobs = ?reaped, "reaped jobs whose lease expired");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "reaping failed"),
        }
    }
}
