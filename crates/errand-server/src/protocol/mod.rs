//! The worker protocol (`/api/worker/v1`): workers in other processes and
//! languages register, claim, renew leases, report and finish over HTTP,
//! through the same store calls an in-process worker makes, so every
//! guarantee (fencing by attempt, lease expiry, release on shutdown) is
//! the same for them.

mod claim;
mod register;
mod report;

use std::time::Duration;

use errand_api::worker::{AttemptRef, ItemResult};
use errand_api::ErrorDetail;
use errand_store::{Fence, StoreError};

use crate::error::ApiError;
use crate::state::AppState;

pub use claim::*;
pub use register::*;
pub use report::*;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidInput(message.into())
}

fn check_worker_id(worker_id: &str) -> Result<(), ApiError> {
    if worker_id.is_empty() || worker_id.chars().count() > 200 {
        return Err(invalid("worker_id must be 1 to 200 characters"));
    }
    Ok(())
}

/// A list no longer than the document says.
fn check_count(field: &str, count: usize, most: usize) -> Result<(), ApiError> {
    if count > most {
        return Err(invalid(format!(
            "{field} may hold at most {most} items, got {count}"
        )));
    }
    Ok(())
}

fn check_queues(queues: &[String]) -> Result<(), ApiError> {
    if queues.is_empty() || queues.len() > 100 || queues.iter().any(String::is_empty) {
        return Err(invalid(
            "queues must name 1 to 100 queues, none of them empty",
        ));
    }
    Ok(())
}

/// A lease in seconds as asked, or the server's.
fn lease(state: &AppState, secs: Option<f64>) -> Result<Duration, ApiError> {
    match secs {
        None => Ok(state.config.worker_lease),
        Some(secs) if (1.0..=3600.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        Some(secs) => Err(invalid(format!(
            "lease_secs must be from 1 to 3600, got {secs}"
        ))),
    }
}

fn fence(worker_id: &str, attempt: &AttemptRef) -> Fence {
    Fence {
        job_id: attempt.job_id.clone(),
        attempt: attempt.attempt,
        worker_id: worker_id.to_owned(),
    }
}

/// An item's answer: fenced-out and missing jobs are answered in place;
/// a store that cannot be reached fails the whole request.
fn item_result(result: Result<(), StoreError>) -> Result<ItemResult, ApiError> {
    let error = |code: &str, message: String| {
        Ok(ItemResult {
            ok: false,
            error: Some(ErrorDetail {
                code: code.to_owned(),
                message,
            }),
        })
    };
    match result {
        Ok(()) => Ok(ItemResult {
            ok: true,
            error: None,
        }),
        Err(err @ StoreError::LeaseLost { .. }) => error("lease_lost", err.to_string()),
        Err(StoreError::NotFound(id)) => error("job_not_found", format!("no job with id {id}")),
        Err(err @ StoreError::Conflict { .. }) => error("illegal_transition", err.to_string()),
        Err(err) => Err(err.into()),
    }
}

/// Returns jobs whose lease expired to the queue, for workers that are
/// not in any process with a store (remote workers cannot reap). Every
/// server may run it: reaping is a compare-and-set on each job.
pub async fn reap_expired_leases(state: AppState) {
    let mut ticks = tokio::time::interval(state.config.reap_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match state.store.reap_expired().await {
            Ok(reaped) if !reaped.is_empty() => {
                tracing::info!(count = reaped.len(), jobs = ?reaped, "reaped jobs whose lease expired");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "reaping failed"),
        }
    }
}
