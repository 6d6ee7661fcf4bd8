//! Queues: their depth, and pause and resume for every worker.

use axum::extract::State;
use axum::Json;
use errand_api::{ErrorBody, QueueInfo, QueueList};

use crate::error::ApiError;
use crate::extract::Path;
use crate::state::AppState;

/// Every queue with waiting or running jobs, or paused.
#[utoipa::path(get, path = "/api/queues", tag = "queues",
    responses((status = 200, body = QueueList)))]
pub async fn list_queues(State(state): State<AppState>) -> Result<Json<QueueList>, ApiError> {
    Ok(Json(QueueList {
        queues: state.store.queues().await?,
    }))
}

async fn queue(state: &AppState, name: &str) -> Result<QueueInfo, ApiError> {
    let queues = state.store.queues().await?;
    Ok(queues
        .into_iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| QueueInfo::empty(name)))
}

/// Pause a queue for every worker: it takes submits, starts none of its
/// jobs until resumed; running jobs finish.
#[utoipa::path(post, path = "/api/queues/{queue}/pause", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name")),
    responses((status = 200, description = "Paused", body = QueueInfo),
        (status = 400, body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<QueueInfo>, ApiError> {
    state.store.pause_queue(&name).await?;
    tracing::info!(queue = %name, "queue paused");
    Ok(Json(queue(&state, &name).await?))
}

/// Resume a paused queue: its jobs start again (within a second).
#[utoipa::path(post, path = "/api/queues/{queue}/resume", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name")),
    responses((status = 200, description = "Resumed", body = QueueInfo),
        (status = 400, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<QueueInfo>, ApiError> {
    state.store.resume_queue(&name).await?;
    tracing::info!(queue = %name, "queue resumed");
    Ok(Json(queue(&state, &name).await?))
}
