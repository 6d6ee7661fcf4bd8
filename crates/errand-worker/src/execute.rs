//! One attempt of one job: run the handler, enforce its timeout, stop it on
//! cancel or shutdown, and turn whatever happened into an [`Outcome`].

use std::sync::Arc;
use std::time::Duration;

use errand_core::{error_kind, Job};
use errand_store::{Fence, Outcome, StoreError};
use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::command::HandlerError;
use crate::completer::NextJob;
use crate::context::JobContext;
use crate::running::StopReason;
use crate::worker::Shared;

/// Tracks `job` as running (before its task starts, so per-command limits
/// count it at once) and returns what its task needs.
pub(crate) fn track(shared: &Shared, job: &Job) -> (Fence, watch::Receiver<Option<StopReason>>) {
    let fence = Fence {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        worker_id: shared.config.worker_id.clone(),
    };
    let stop = shared.running.insert(fence.clone(), job.full_command());
    (fence, stop)
}

/// Runs a job to its end and records the outcome (unless fenced out), then
/// the slot's next job: one held ahead of the slots, whose slot does not
/// wait for the last outcome's commit, or else one claimed in the
/// transaction that recorded it. The slot is free once neither is there.
pub(crate) async fn execute(shared: Arc<Shared>, first: NextJob, slot: OwnedSemaphorePermit) {
    let mut next = Some(first);
    while let Some(NextJob { job, fence, stop }) = next.take() {
        let span = tracing::info_span!("job", job_id = %job.job_id, command = %job.full_command(), attempt = job.attempt);
        next = async {
            let Some(outcome) = run_attempt(&shared, &job, &fence, stop).await else {
                shared.running.remove(&fence);
                return take_held(&shared);
            };
            // A released job's worker is stopping: no next job.
            let wants_next =
                !matches!(outcome, Outcome::Released) && !shared.claims_stopped.is_cancelled();
            if let Some(held) = wants_next.then(|| take_held(&shared)).flatten() {
                record_later(&shared, fence, outcome);
                return Some(held);
            }
            let next = record(&shared, fence.clone(), outcome, wants_next).await;
            shared.running.remove(&fence);
            // Another batch may have filled the buffer meanwhile.
            next.or_else(|| wants_next.then(|| take_held(&shared)).flatten())
        }
        .instrument(span)
        .await;
    }
    drop(slot);
}

/// Records `outcome` in a task of its own (shutdown waits for it) while the
/// caller goes on; the attempt stays tracked until it is in.
pub(crate) fn record_later(shared: &Arc<Shared>, fence: Fence, outcome: Outcome) {
    let recording = shared.clone();
    shared.records.spawn(
        async move {
            record(&recording, fence.clone(), outcome, false).await;
            recording.running.remove(&fence);
        }
        .in_current_span(),
    );
}

/// The job held longest ahead of the slots, unless the worker is stopping.
fn take_held(shared: &Shared) -> Option<NextJob> {
    if shared.claims_stopped.is_cancelled() {
        return None;
    }
    shared.ahead.take_next()
}

/// The outcome of an attempt stopped before its handler started: `None`
/// when the worker no longer holds the job (nothing to record).
pub(crate) fn outcome_before_start(stop: &watch::Receiver<Option<StopReason>>) -> Option<Outcome> {
    match *stop.borrow() {
        None | Some(StopReason::Shutdown) => Some(Outcome::Released),
        Some(StopReason::Canceled) => Some(Outcome::Canceled {
            message: "canceled by request".into(),
        }),
        Some(StopReason::LeaseLost) => None,
    }
}

async fn run_attempt(
    shared: &Shared,
    job: &Job,
    fence: &Fence,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> Option<Outcome> {
    // Held ahead of the slots, it may have been stopped before it started.
    if stop.borrow().is_some() {
        return outcome_before_start(&stop);
    }
    let Some(command) = shared.registry.get(&job.app, &job.command) else {
        let error = HandlerError::permanent(format!(
            "no handler is registered for command {} on worker {}",
            job.full_command(),
            fence.worker_id
        ))
        .with_kind(error_kind::UNKNOWN_COMMAND);
        return Some(failure(shared, job, error));
    };
    let token = CancellationToken::new();
    let ctx = JobContext::new(
        fence.clone(),
        job.context.clone(),
        job.checkpoint.clone(),
        job.started.unwrap_or_else(|| shared.store.clock().now()),
        shared.store.clone(),
        token.clone(),
        shared.config.progress_interval,
    );
    let mut handle = tokio::spawn(
        command
            .handler
            .call(job.input.clone(), ctx)
            .in_current_span(),
    );
    let timeout = job
        .timeout_secs
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok());
    let timed_out = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let started = tokio::time::Instant::now();
    let reason = tokio::select! {
        finished = &mut handle => {
            shared.ahead.ran(started.elapsed());
            return Some(settle(shared, job, finished));
        }
        () = timed_out => None,
        reason = stop.wait_for(Option::is_some) => match reason {
            Ok(reason) => *reason,
            Err(_) => Some(StopReason::Shutdown),
        },
    };
    // Cooperative first: the handler sees its token and may wrap up.
    token.cancel();
    let finished = match tokio::time::timeout(shared.config.cancel_grace, &mut handle).await {
        Ok(finished) => Some(finished),
        Err(_) => {
            tracing::warn!(grace = ?shared.config.cancel_grace, "handler ignored its cancellation; aborting it");
            handle.abort();
            None
        }
    };
    let completed =
        |finished: &Option<Result<Result<Value, HandlerError>, JoinError>>| match finished {
            Some(Ok(Ok(result))) => Some(result.clone()),
            _ => None,
        };
    match reason {
        None => {
            let secs = timeout.unwrap_or_default().as_secs_f64();
            let error =
                HandlerError::retryable(format!("the attempt ran past its timeout of {secs} s"))
                    .with_kind(error_kind::TIMEOUT);
            Some(failure(shared, job, error))
        }
        Some(StopReason::LeaseLost) => {
            tracing::warn!("lost the lease on this job; its outcome is discarded");
            None
        }
        // A handler that finished its work anyway keeps its result.
        Some(StopReason::Canceled) => Some(match completed(&finished) {
            Some(result) => Outcome::Completed { result },
            None => Outcome::Canceled {
                message: "canceled by request".into(),
            },
        }),
        Some(StopReason::Shutdown) => Some(match completed(&finished) {
            Some(result) => Outcome::Completed { result },
            None => Outcome::Released,
        }),
    }
}

/// The outcome of a handler that returned (or panicked) on its own.
fn settle(
    shared: &Shared,
    job: &Job,
    finished: Result<Result<Value, HandlerError>, JoinError>,
) -> Outcome {
    match finished {
        Ok(Ok(result)) => Outcome::Completed { result },
        Ok(Err(error)) => failure(shared, job, error),
        Err(join) => {
            let message = match join.try_into_panic() {
                Ok(payload) => panic_message(payload.as_ref()),
                Err(join) => join.to_string(),
            };
            let error = HandlerError::retryable(format!("the handler panicked: {message}"))
                .with_kind(error_kind::PANIC);
            failure(shared, job, error)
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// A failed attempt: retry later per the job's policy, or fail the job.
fn failure(shared: &Shared, job: &Job, error: HandlerError) -> Outcome {
    let outcome = Outcome::failure(
        job,
        error.kind,
        error.message,
        error.retryable,
        shared.store.clock().now(),
        rand::random::<f64>(),
    );
    if let Outcome::Failed { error, retry_at } = &outcome {
        tracing::info!(kind = %error.kind, error = %error.message, will_retry = retry_at.is_some(), "attempt failed");
    }
    outcome
}

/// Writes the outcome, retrying while the store is unavailable for up to a
/// lease: past that the job will be reaped and run again anyway. Returns
/// the slot's next job, claimed in the transaction that recorded this.
pub(crate) async fn record(
    shared: &Shared,
    fence: Fence,
    outcome: Outcome,
    wants_next: bool,
) -> Option<NextJob> {
    let label = outcome.label();
    let mut wait = Duration::from_millis(50);
    let give_up = tokio::time::Instant::now() + shared.config.lease;
    let mut retried = false;
    loop {
        let (recorded, next) = shared
            .completer
            .finish(fence.clone(), outcome.clone(), wants_next)
            .await;
        match recorded {
            Ok(()) => {
                tracing::debug!(outcome = label, "recorded");
                return next;
            }
            Err(StoreError::LeaseLost { .. }) => {
                let now = shared.store.get(&fence.job_id).await.ok();
                match why_refused(&fence, retried, now.as_ref()) {
                    Refusal::RecordedByAnEarlierTry => tracing::info!(
                        outcome = label,
                        "the outcome was recorded by an earlier try whose answer was lost (the store failed after committing it)"
                    ),
                    Refusal::LeaseLost(why) => {
                        tracing::warn!(outcome = label, "outcome not recorded: {why}")
                    }
                }
                return next;
            }
            Err(err) if err.is_transient() && tokio::time::Instant::now() < give_up => {
                retried = true;
                tracing::warn!(error = %err, "cannot record the outcome yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                tracing::error!(error = %err, outcome = label, "cannot record the outcome; the job will run again after its lease expires");
                return next;
            }
        }
    }
}

/// Why the store refused an attempt's outcome.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// A try that failed in transit had committed after all.
    RecordedByAnEarlierTry,
    /// The attempt lost the job; says what became of it.
    LeaseLost(String),
}

/// Tells a refused outcome's real cause from the job as it is now (`None`
/// when it could not be read). After a try whose answer was lost, the
/// same attempt, no longer running, means that try committed.
fn why_refused(fence: &Fence, retried: bool, now: Option<&Job>) -> Refusal {
    let Some(job) = now else {
        return Refusal::LeaseLost("this attempt no longer holds the job".into());
    };
    let same_attempt = job.attempt == fence.attempt;
    let left_running = job.status != errand_core::JobStatus::Running
        || job.worker_id.as_deref() != Some(fence.worker_id.as_str());
    if retried && same_attempt && left_running && !job.cancel_requested {
        return Refusal::RecordedByAnEarlierTry;
    }
    Refusal::LeaseLost(if same_attempt {
        format!(
            "this attempt's lease was lost; the job is {} now",
            job.status
        )
    } else {
        format!(
            "this attempt's lease was lost; attempt {} holds the job now ({})",
            job.attempt, job.status
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::JobStatus;

    fn job(status: JobStatus, attempt: u32, worker: Option<&str>) -> Job {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "job_id": "j", "app": "a", "command": "c", "input": {}, "context": null,
            "status": "new", "result": null, "error_message": null, "error": null,
            "progress": null, "attempt": 1, "max_attempts": 3,
            "retry": errand_core::RetryPolicy::default(), "priority": 0, "queue": "default",
            "run_at": "2026-01-01T00:00:00Z", "timeout_secs": null, "idempotency_key": null,
            "parent_id": null, "cancel_requested": false, "worker_id": null,
            "lease_until": null, "created": "2026-01-01T00:00:00Z",
            "updated": "2026-01-01T00:00:00Z", "started": null, "finished": null
        }))
        .unwrap();
        job.status = status;
        job.attempt = attempt;
        job.worker_id = worker.map(str::to_owned);
        job
    }

    fn fence() -> Fence {
        Fence {
            job_id: "j".into(),
            attempt: 2,
            worker_id: "w".into(),
        }
    }

    #[test]
    fn a_refusal_after_a_lost_answer_is_the_earlier_try_recorded() {
        let completed = job(JobStatus::Completed, 2, Some("w"));
        assert_eq!(
            why_refused(&fence(), true, Some(&completed)),
            Refusal::RecordedByAnEarlierTry
        );
        // Without a lost answer, the same state means the lease was lost
        // (the job was reaped on its last attempt, say).
        assert!(matches!(
            why_refused(&fence(), false, Some(&completed)),
            Refusal::LeaseLost(_)
        ));
    }

    #[test]
    fn a_refusal_names_the_attempt_that_holds_the_job() {
        let taken = job(JobStatus::Running, 3, Some("other"));
        let Refusal::LeaseLost(why) = why_refused(&fence(), true, Some(&taken)) else {
            panic!("another attempt holds it");
        };
        assert!(why.contains("attempt 3"), "{why}");
    }
}
