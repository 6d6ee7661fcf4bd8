//! Claims: as many jobs as a worker has free slots, long-polled.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use errand_api::worker::*;
use errand_api::ErrorBody;
use errand_core::{Job, JobEvent, JobStatus};
use errand_store::ClaimParams;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::*;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// One claim of a round: these commands (any when `None`), this many
/// at most.
type PlannedClaim = (Option<Vec<String>>, usize);

/// The claims one round makes: the commands without a limit together,
/// then each limited command for no more than its room.
fn claim_plan(request: &ClaimRequest) -> Result<Vec<PlannedClaim>, ApiError> {
    if request.limits.is_empty() {
        return Ok(vec![(request.commands.clone(), request.limit)]);
    }
    let Some(commands) = &request.commands else {
        return Err(invalid(
            "limits need commands: name the commands this worker claims",
        ));
    };
    let unlimited: Vec<String> = commands
        .iter()
        .filter(|c| !request.limits.contains_key(*c))
        .cloned()
        .collect();
    let mut plan = Vec::new();
    if !unlimited.is_empty() {
        plan.push((Some(unlimited), request.limit));
    }
    for (command, room) in &request.limits {
        if *room > 0 && commands.contains(command) {
            plan.push((Some(vec![command.clone()]), *room));
        }
    }
    Ok(plan)
}

/// Claim up to `limit` jobs, waiting up to `wait_secs` for one.
#[utoipa::path(post, path = "/api/worker/v1/claim", tag = "worker protocol",
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "The jobs claimed (none if none came in time), each `running` for this worker", body = ClaimResponse),
        (status = 422, description = "A field is out of range", body = ErrorBody),
    ))]
pub async fn claim(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    check_worker_id(&request.worker_id)?;
    check_queues(&request.queues)?;
    if !(1..=1000).contains(&request.limit) {
        return Err(invalid(format!(
            "limit must be from 1 to 1000, got {}",
            request.limit
        )));
    }
    let lease = lease(&state, request.lease_secs)?;
    let wait = match request.wait_secs {
        None => Duration::ZERO,
        Some(secs) if secs >= 0.0 => Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(state.config.max_wait),
        Some(secs) => return Err(invalid(format!("wait_secs must be ≥ 0, got {secs}"))),
    };
    check_count(
        "commands",
        request.commands.as_ref().map_or(0, Vec::len),
        1000,
    )?;
    let plan = claim_plan(&request)?;
    let deadline = Instant::now() + wait;
    // Subscribed before the first look, so a submit in between wakes us.
    let mut feed = state.store.subscribe();
    loop {
        let jobs = claim_round(&state, &request, &plan, lease).await?;
        if !jobs.is_empty() || Instant::now() >= deadline {
            return Ok(Json(ClaimResponse { jobs }));
        }
        tokio::select! {
            () = work_announced(&mut feed) => {}
            () = tokio::time::sleep_until(deadline.min(Instant::now() + state.config.claim_poll_interval)) => {}
            () = state.shutdown.cancelled() => return Ok(Json(ClaimResponse { jobs: Vec::new() })),
        }
    }
}

async fn claim_round(
    state: &AppState,
    request: &ClaimRequest,
    plan: &[PlannedClaim],
    lease: Duration,
) -> Result<Vec<Job>, ApiError> {
    let mut jobs = Vec::new();
    for (commands, room) in plan {
        let limit = (*room).min(request.limit - jobs.len());
        if limit == 0 {
            continue;
        }
        let claimed = state
            .store
            .claim(ClaimParams {
                worker_id: request.worker_id.clone(),
                queues: request.queues.clone(),
                commands: commands.clone(),
                limit,
                lease,
            })
            .await?;
        jobs.extend(claimed);
    }
    Ok(jobs)
}

/// Returns once an event says a job may be claimable (it became `new`);
/// the events already waiting are read too, so one wake-up stands for a
/// burst of submits.
async fn work_announced(feed: &mut broadcast::Receiver<Arc<JobEvent>>) {
    let announces = |event: &JobEvent| {
        event.status == JobStatus::New && event.kind != errand_core::EventKind::Log
    };
    loop {
        match feed.recv().await {
            Ok(event) if announces(&event) => break,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => break,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = feed.try_recv() {}
}
