//! Heartbeats, progress and log lines, outcomes, and leaving.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use errand_api::worker::*;
use errand_api::ErrorBody;
use errand_core::{error_kind, JobStatus, Progress};
use errand_store::{Fence, HeartbeatParams, Outcome, StoreError};

use super::*;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// Renew the leases of every job the worker runs.
#[utoipa::path(post, path = "/api/worker/v1/heartbeat", tag = "worker protocol",
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "Leases renewed; which jobs to stop", body = HeartbeatResponse),
        (status = 422, description = "A field is out of range", body = ErrorBody),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_worker_id(&request.worker_id)?;
    check_count("running", request.running.len(), 10000)?;
    let lease = lease(&state, request.lease_secs)?;
    let running = request
        .running
        .iter()
        .map(|attempt| fence(&request.worker_id, attempt))
        .collect();
    let reply = state
        .store
        .heartbeat(HeartbeatParams {
            worker_id: request.worker_id,
            running,
            lease,
        })
        .await?;
    Ok(Json(HeartbeatResponse {
        cancel_requested: reply.cancel_requested,
        lost: reply.lost,
        unknown_worker: reply.unknown_worker,
    }))
}

/// Report progress and log lines of running jobs.
#[utoipa::path(post, path = "/api/worker/v1/updates", tag = "worker protocol",
    request_body = UpdatesRequest,
    responses(
        (status = 200, description = "One result per update, in order", body = ItemResults),
        (status = 422, description = "A field is out of range", body = ErrorBody),
    ))]
pub async fn updates(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<UpdatesRequest>,
) -> Result<Json<ItemResults>, ApiError> {
    check_worker_id(&request.worker_id)?;
    check_count("updates", request.updates.len(), 1000)?;
    for (place, update) in request.updates.iter().enumerate() {
        check_count(&format!("updates[{place}].logs"), update.logs.len(), 1000)?;
    }
    let worker_id = &request.worker_id;
    let store = &state.store;
    // Items go at once (a store groups concurrent writes into one
    // transaction); within an item, in order.
    let writes = request.updates.into_iter().map(|update| async move {
        let fence = fence(
            worker_id,
            &AttemptRef {
                job_id: update.job_id,
                attempt: update.attempt,
            },
        );
        if let Some(checkpoint) = update.checkpoint {
            store.save_checkpoint(&fence, checkpoint).await?;
        }
        if let Some(progress) = update.progress {
            let progress = Progress {
                fraction: progress.fraction,
                message: progress.message,
                stage: progress.stage,
                data: progress.data,
                updated: None,
            };
            store.report_progress(&fence, progress).await?;
        }
        for line in update.logs {
            store.append_log(&fence, line).await?;
        }
        Ok(())
    });
    let results = futures::future::join_all(writes).await;
    let results = results
        .into_iter()
        .map(item_result)
        .collect::<Result<_, _>>()?;
    Ok(Json(ItemResults { results }))
}

/// Record how attempts ended, in one transaction.
#[utoipa::path(post, path = "/api/worker/v1/finish", tag = "worker protocol",
    request_body = FinishRequest,
    responses(
        (status = 200, description = "One result per outcome, in order", body = ItemResults),
        (status = 422, description = "A field is out of range", body = ErrorBody),
    ))]
pub async fn finish(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<FinishRequest>,
) -> Result<Json<ItemResults>, ApiError> {
    check_worker_id(&request.worker_id)?;
    check_count("outcomes", request.outcomes.len(), 1000)?;
    let empty_kind = request.outcomes.iter().position(|item| {
        item.error
            .as_ref()
            .is_some_and(|e| e.kind.as_deref() == Some(""))
    });
    if let Some(place) = empty_kind {
        return Err(invalid(format!(
            "outcomes[{place}].error.kind must not be empty (leave it out for \"handler\")"
        )));
    }
    Ok(Json(
        record_outcomes(&state, &request.worker_id, request.outcomes).await?,
    ))
}

async fn record_outcomes(
    state: &AppState,
    worker_id: &str,
    outcomes: Vec<AttemptOutcome>,
) -> Result<ItemResults, ApiError> {
    let mut results: Vec<Option<Result<(), StoreError>>> = vec![None; outcomes.len()];
    let mut writes = Vec::with_capacity(outcomes.len());
    let mut places = Vec::with_capacity(outcomes.len());
    for (place, item) in outcomes.into_iter().enumerate() {
        let attempt = AttemptRef {
            job_id: item.job_id.clone(),
            attempt: item.attempt,
        };
        let fence = fence(worker_id, &attempt);
        let outcome = match item.outcome {
            OutcomeKind::Completed => Outcome::Completed {
                result: item.result.unwrap_or(serde_json::Value::Null),
            },
            OutcomeKind::Canceled => Outcome::Canceled {
                message: "canceled by request".into(),
            },
            OutcomeKind::Released => Outcome::Released,
            OutcomeKind::Failed => match failure(state, &fence, item.error).await? {
                Ok(outcome) => outcome,
                Err(refused) => {
                    results[place] = Some(Err(refused));
                    continue;
                }
            },
        };
        writes.push((fence, outcome));
        places.push(place);
    }
    if !writes.is_empty() {
        let written = state.store.finish(writes).await?;
        for (place, result) in places.into_iter().zip(written) {
            results[place] = Some(result);
        }
    }
    let results = results
        .into_iter()
        .map(|result| item_result(result.expect("every item is answered")))
        .collect::<Result<_, _>>()?;
    Ok(ItemResults { results })
}

/// A failed attempt's outcome under its job's retry policy, or why the
/// attempt cannot record it (fenced out, or no such job).
async fn failure(
    state: &AppState,
    fence: &Fence,
    report: Option<FailureReport>,
) -> Result<Result<Outcome, StoreError>, ApiError> {
    let job = match state.store.get(&fence.job_id).await {
        Ok(job) => job,
        Err(StoreError::NotFound(id)) => return Ok(Err(StoreError::NotFound(id))),
        Err(err) => return Err(err.into()),
    };
    // Only the policy is read here; the write checks the fence again.
    let holds = job.status == JobStatus::Running
        && job.attempt == fence.attempt
        && job.worker_id.as_deref() == Some(fence.worker_id.as_str());
    if !holds {
        return Ok(Err(StoreError::LeaseLost {
            job_id: fence.job_id.clone(),
            attempt: fence.attempt,
        }));
    }
    let report = report.unwrap_or(FailureReport {
        message: "the worker reported a failure without a message".into(),
        kind: None,
        retryable: None,
    });
    let kind = report
        .kind
        .unwrap_or_else(|| error_kind::HANDLER.to_owned());
    Ok(Ok(Outcome::failure(
        &job,
        kind,
        report.message,
        report.retryable.unwrap_or(true),
        state.store.clock().now(),
        rand::random::<f64>(),
    )))
}

/// A worker is leaving: release the jobs it lists, then forget it.
#[utoipa::path(post, path = "/api/worker/v1/deregister", tag = "worker protocol",
    request_body = DeregisterRequest,
    responses(
        (status = 200, description = "Deregistered; one result per released job, in order", body = ItemResults),
        (status = 422, description = "A field is out of range", body = ErrorBody),
    ))]
pub async fn deregister(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DeregisterRequest>,
) -> Result<(StatusCode, Json<ItemResults>), ApiError> {
    check_worker_id(&request.worker_id)?;
    check_count("release", request.release.len(), 10000)?;
    let releases = request
        .release
        .into_iter()
        .map(|attempt| AttemptOutcome {
            job_id: attempt.job_id,
            attempt: attempt.attempt,
            outcome: OutcomeKind::Released,
            result: None,
            error: None,
        })
        .collect();
    let results = record_outcomes(&state, &request.worker_id, releases).await?;
    state.store.deregister_worker(&request.worker_id).await?;
    tracing::info!(worker_id = %request.worker_id, "remote worker deregistered");
    Ok((StatusCode::OK, Json(results)))
}
