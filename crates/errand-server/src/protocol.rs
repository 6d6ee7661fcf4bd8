//! The worker protocol (`/api/worker/v1`): workers in other processes and
//! languages register, claim, renew leases, report and finish over HTTP,
//! through the same store calls an in-process worker makes, so every
//! guarantee (fencing by attempt, lease expiry, release on shutdown) is
//! the same for them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use errand_api::worker::*;
use errand_api::{ErrorBody, ErrorDetail};
use errand_core::{error_kind, Job, JobEvent, JobStatus, Progress};
use errand_store::{
    ClaimParams, CommandDefaults, CommandInfo, Fence, HeartbeatParams, Outcome, StoreError,
    WorkerRegistration, DEFAULT_QUEUE,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

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

fn is_name(text: &str) -> bool {
    (1..=100).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A command as the store publishes it, or what is wrong with its spec.
fn command_info(
    index: usize,
    spec: CommandSpec,
    worker_id: &str,
    now: errand_core::Timestamp,
) -> Result<CommandInfo, ApiError> {
    let at = |what: String| invalid(format!("commands[{index}]: {what}"));
    if !is_name(&spec.app) || !is_name(&spec.name) {
        return Err(at(format!(
            "app and name must be 1 to 100 letters, digits, '_' or '-', got {:?} and {:?}",
            spec.app, spec.name
        )));
    }
    let input_schema = spec
        .input_schema
        .unwrap_or_else(|| serde_json::json!({"type": "object"}));
    for (field, schema) in [
        ("input_schema", Some(&input_schema)),
        ("output_schema", spec.output_schema.as_ref()),
    ] {
        let Some(schema) = schema else { continue };
        if !schema.is_object() {
            return Err(at(format!("{field} must be a JSON Schema object")));
        }
        if let Err(err) = jsonschema::validator_for(schema) {
            return Err(at(format!("{field} is not a valid JSON Schema: {err}")));
        }
    }
    let given = spec.defaults;
    let defaults = CommandDefaults {
        timeout_secs: given.timeout_secs,
        retry: given.retry.unwrap_or_default(),
        queue: given.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
        priority: given.priority.unwrap_or(0),
        max_concurrency: given.max_concurrency,
    };
    if let Some(secs) = defaults.timeout_secs {
        if !(secs > 0.0 && secs <= errand_core::MAX_SPAN_SECS) {
            return Err(at(format!(
                "defaults.timeout_secs must be > 0 and at most 315576000 (ten years), got {secs}"
            )));
        }
    }
    if defaults.queue.is_empty() {
        return Err(at("defaults.queue must not be empty".into()));
    }
    if defaults
        .max_concurrency
        .is_some_and(|n| !(1..=10000).contains(&n))
    {
        return Err(at("defaults.max_concurrency must be from 1 to 10000".into()));
    }
    defaults
        .retry
        .validate()
        .map_err(|e| at(format!("defaults.retry: {e}")))?;
    Ok(CommandInfo {
        app: spec.app,
        name: spec.name,
        description: spec.description,
        input_schema,
        output_schema: spec.output_schema,
        defaults,
        worker_id: Some(worker_id.to_owned()),
        updated: now,
    })
}

/// Register a worker and publish its commands.
#[utoipa::path(post, path = "/api/worker/v1/register", tag = "worker protocol",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered; its commands are published", body = RegisterResponse),
        (status = 422, description = "A field is out of range, or a command's spec is invalid (named)", body = ErrorBody),
    ))]
pub async fn register(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let host = request.host.unwrap_or_else(|| "remote".to_owned());
    let pid = request.pid.unwrap_or(0);
    let worker_id = request
        .worker_id
        .unwrap_or_else(|| format!("{host}-{pid}-{:08x}", rand::random::<u32>()));
    check_worker_id(&worker_id)?;
    check_queues(&request.queues)?;
    if host.chars().count() > 200 {
        return Err(invalid("host must be at most 200 characters"));
    }
    if !(1..=10000).contains(&request.slots) {
        return Err(invalid(format!(
            "slots must be from 1 to 10000, got {}",
            request.slots
        )));
    }
    if request.commands.len() > 1000 {
        return Err(invalid("at most 1000 commands per worker"));
    }
    let now = state.store.clock().now();
    let commands = request
        .commands
        .into_iter()
        .enumerate()
        .map(|(index, spec)| command_info(index, spec, &worker_id, now))
        .collect::<Result<Vec<_>, _>>()?;
    state
        .store
        .register_worker(WorkerRegistration {
            worker_id: worker_id.clone(),
            host,
            pid,
            queues: request.queues,
            slots: request.slots,
            commands,
        })
        .await?;
    tracing::info!(%worker_id, "remote worker registered");
    let lease = state.config.worker_lease;
    Ok(Json(RegisterResponse {
        worker_id,
        protocol: WORKER_PROTOCOL_VERSION,
        lease_secs: lease.as_secs_f64(),
        heartbeat_secs: lease.as_secs_f64() / 3.0,
        max_wait_secs: state.config.max_wait.as_secs_f64(),
    }))
}

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

fn fence(worker_id: &str, attempt: &AttemptRef) -> Fence {
    Fence {
        job_id: attempt.job_id.clone(),
        attempt: attempt.attempt,
        worker_id: worker_id.to_owned(),
    }
}

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
