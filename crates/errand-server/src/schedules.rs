//! Schedules over HTTP: create or replace, list, pause, resume, delete.
//! The ticks themselves are taken by `scheduler`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use errand_api::{ErrorBody, ScheduleInfo, ScheduleList, ScheduleRequest};
use errand_core::CronTicks;
use errand_store::ScheduleDefinition;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::extract::Path;
use crate::jobs::build_job;
use crate::state::AppState;

/// Longest schedule name: it is part of each tick's idempotency key.
const MAX_NAME_LEN: usize = 200;

/// How a schedule's job is checked against the command catalog when it is
/// stored (it is checked again at each tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckCommand {
    /// The command must be known and the input fit it (an API request).
    Now,
    /// An unknown command is let through (errand.toml, read before the
    /// workers that publish their commands may have started); the input
    /// of a known one must fit it.
    IfKnown,
}

/// Checks a schedule and stores it; its next run is the first tick from now
/// unless an unchanged timing keeps the stored one.
pub async fn put_schedule(
    state: &AppState,
    name: &str,
    request: ScheduleRequest,
    check: CheckCommand,
) -> Result<ScheduleInfo, ApiError> {
    let invalid = |msg: String| ApiError::InvalidInput(format!("schedule {name:?}: {msg}"));
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidInput(format!(
            "a schedule's name must have 1 to {MAX_NAME_LEN} bytes and no control characters, got {name:?}"
        )));
    }
    let timezone = request.timezone.unwrap_or_else(|| "UTC".to_owned());
    let ticks = CronTicks::parse(&request.cron, &timezone).map_err(|e| invalid(e.to_string()))?;
    if let Some(options) = &request.job.options {
        if options.run_at.is_some() || options.idempotency_key.is_some() {
            return Err(invalid(
                "job.options cannot set run_at or idempotency_key: each tick gives its own".into(),
            ));
        }
    }
    match build_job(state, request.job.clone()).await {
        Ok(_) => {}
        Err(ApiError::UnknownCommand(_)) if check == CheckCommand::IfKnown => {}
        Err(ApiError::UnknownCommand(msg)) => {
            return Err(ApiError::UnknownCommand(format!(
                "schedule {name:?}: {msg}"
            )))
        }
        Err(ApiError::InvalidInput(msg)) => return Err(invalid(format!("job: {msg}"))),
        Err(other) => return Err(other),
    }
    let definition = ScheduleDefinition {
        name: name.to_owned(),
        cron: request.cron,
        timezone,
        missed: request.missed.unwrap_or_default(),
        job: serde_json::to_value(&request.job).expect("a request serializes"),
    };
    let next_run = ticks.next_after(state.store.clock().now());
    let stored = state
        .store
        .put_schedule(definition, next_run, request.paused)
        .await?;
    state.scheduler_wake.notify_waiters();
    Ok(stored)
}

async fn find(state: &AppState, name: &str) -> Result<ScheduleInfo, ApiError> {
    state
        .store
        .schedules()
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::ScheduleNotFound(name.to_owned()))
}

/// Every schedule with its next run, by name.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)))]
pub async fn list_schedules(State(state): State<AppState>) -> Result<Json<ScheduleList>, ApiError> {
    Ok(Json(ScheduleList {
        schedules: state.store.schedules().await?,
    }))
}

/// One schedule.
#[utoipa::path(get, path = "/api/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, body = ScheduleInfo),
        (status = 404, description = "No such schedule", body = ErrorBody)))]
pub async fn get_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    Ok(Json(find(&state, &name).await?))
}

/// Create a schedule, or replace its definition. A replacement with the
/// same `cron` and `timezone` keeps its next run.
#[utoipa::path(put, path = "/api/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name (1 to 200 bytes)")),
    request_body = ScheduleRequest,
    responses((status = 200, description = "Stored", body = ScheduleInfo),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "A bad cron expression or zone, an unknown command, or input that fails its schema", body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<ScheduleRequest>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let stored = put_schedule(&state, &name, request, CheckCommand::Now).await?;
    tracing::info!(schedule = %name, next_run = ?stored.next_run, "schedule stored");
    Ok(Json(stored))
}

/// Delete a schedule; the jobs it enqueued stay.
#[utoipa::path(delete, path = "/api/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such schedule", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_schedule(&name).await?;
    tracing::info!(schedule = %name, "schedule deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule: its ticks go by without a job until resumed.
#[utoipa::path(post, path = "/api/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, description = "Paused", body = ScheduleInfo),
        (status = 404, description = "No such schedule", body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    Ok(Json(state.store.pause_schedule(&name, true).await?))
}

/// Resume a paused schedule from its next tick (ticks that went by while
/// it was paused get no job).
#[utoipa::path(post, path = "/api/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, description = "Resumed", body = ScheduleInfo),
        (status = 404, description = "No such schedule", body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    Ok(Json(state.store.pause_schedule(&name, false).await?))
}
