//! Retention: ended jobs and their events are deleted once old enough, per
//! status. Every server runs it; on PostgreSQL they take turns (the store
//! skips a prune while another server's runs), on SQLite the one writer
//! serialises them.

use std::time::Duration;

use errand_core::JobStatus;

use crate::state::AppState;

/// How long ended jobs are kept, per status (`None`: kept for ever).
#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    pub completed: Option<Duration>,
    pub canceled: Option<Duration>,
    /// Off by default: failed jobs are what an operator comes back for.
    pub failed: Option<Duration>,
    /// How often the server looks.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        let week = Duration::from_secs(7 * 24 * 3600);
        Self {
            completed: Some(week),
            canceled: Some(week),
            failed: None,
            interval: Duration::from_secs(60),
        }
    }
}

impl Retention {
    fn ages(&self) -> impl Iterator<Item = (JobStatus, Duration)> + '_ {
        [
            (JobStatus::Completed, self.completed),
            (JobStatus::Canceled, self.canceled),
            (JobStatus::Failed, self.failed),
        ]
        .into_iter()
        .filter_map(|(status, age)| age.map(|age| (status, age)))
    }
}

pub async fn prune_old_jobs(state: AppState) {
    let retention = state.config.retention.clone();
    if retention.ages().next().is_none() {
        return;
    }
    let mut ticks = tokio::time::interval(retention.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = state.store.clock().now();
        for (status, age) in retention.ages() {
            match state.store.prune_statuses(&[status], now.minus(age)).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(%status, pruned, "pruned old jobs"),
                Err(err) => tracing::warn!(%status, error = %err, "pruning old jobs failed"),
            }
        }
    }
}
