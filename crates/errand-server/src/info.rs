//! Commands, stats, workers, health.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use errand_api::*;

use crate::error::ApiError;
use crate::state::AppState;

/// Registered commands, with their input schemas and defaults.
#[utoipa::path(get, path = "/api/commands", tag = "commands",
    responses((status = 200, body = CommandList), (status = 503, body = ErrorBody)))]
pub async fn commands(State(state): State<AppState>) -> Result<Json<CommandList>, ApiError> {
    Ok(Json(CommandList {
        commands: state.store.commands().await?,
    }))
}

/// Per command: counts by status, run times, failure rate, oldest waiting job.
#[utoipa::path(get, path = "/api/commands/stats", tag = "commands",
    responses((status = 200, body = StatsResponse), (status = 503, body = ErrorBody)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<StatsResponse>, ApiError> {
    Ok(Json(StatsResponse {
        commands: state.store.stats().await?,
    }))
}

/// Live workers: id, host, commands, slots, running jobs, last heartbeat.
#[utoipa::path(get, path = "/api/workers", tag = "workers",
    responses((status = 200, body = WorkerList), (status = 503, body = ErrorBody)))]
pub async fn workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    Ok(Json(WorkerList {
        workers: state.store.workers().await?,
    }))
}

/// Open Notebook's registry view.
#[utoipa::path(get, path = "/api/commands/registry/debug", tag = "commands",
    responses((status = 200, body = RegistryDebug), (status = 503, body = ErrorBody)))]
pub async fn registry_debug(
    State(state): State<AppState>,
) -> Result<Json<RegistryDebug>, ApiError> {
    let commands = state.store.commands().await?;
    let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for command in &commands {
        by_app
            .entry(command.app.clone())
            .or_default()
            .push(command.name.clone());
    }
    Ok(Json(RegistryDebug {
        total_commands: commands.len(),
        commands_by_app: by_app,
        command_items: commands,
    }))
}

/// Liveness: the process answers. Never needs a token.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        detail: None,
    })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/api/ready", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.store.commands().await {
        Ok(_) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
                detail: None,
            }),
        ),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
                detail: Some(err.to_string()),
            }),
        ),
    }
}
