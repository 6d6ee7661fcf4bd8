//! Limits over HTTP: a command's cluster-wide concurrency and rate limits,
//! set, listed and lifted. The stores' claims keep to them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use errand_api::{CommandLimit, ErrorBody, LimitList, LimitRequest};

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::extract::Path;
use crate::state::AppState;

/// The most any count of a limit may be: past it a number is a mistake.
const MAX_COUNT: u32 = 1_000_000;

/// Checks a limit and stores it.
pub async fn set_limit(
    state: &AppState,
    command: &str,
    request: LimitRequest,
) -> Result<CommandLimit, ApiError> {
    let limit = CommandLimit {
        command: command.to_owned(),
        key: request.key,
        max_running: request.max_running,
        max_starts: request.max_starts,
        per_secs: request.per_secs,
    };
    let too_many = [limit.max_running, limit.max_starts]
        .into_iter()
        .flatten()
        .any(|n| n > MAX_COUNT);
    if too_many {
        return Err(ApiError::InvalidInput(format!(
            "limit of {command}: max_running and max_starts must be at most {MAX_COUNT}"
        )));
    }
    limit
        .validate()
        .map_err(|msg| ApiError::InvalidInput(format!("limit of {command}: {msg}")))?;
    Ok(state.store.set_limit(limit).await?)
}

/// Every command's limits.
#[utoipa::path(get, path = "/api/limits", tag = "limits",
    responses((status = 200, body = LimitList)))]
pub async fn list_limits(State(state): State<AppState>) -> Result<Json<LimitList>, ApiError> {
    Ok(Json(LimitList {
        limits: state.store.limits().await?,
    }))
}

/// Set a command's limits (replacing any): at most `max_running` of its
/// jobs running at once, at most `max_starts` starts per `per_secs`, per
/// command or per `key`. Jobs already waiting are held to them at once.
#[utoipa::path(put, path = "/api/limits/{command}", tag = "limits",
    params(("command" = String, Path, description = "The command, app.name")),
    request_body = LimitRequest,
    responses((status = 200, description = "Stored", body = CommandLimit),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "A command not of the form app.name, a bad key path, or counts that do not make a limit", body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(command): Path<String>,
    JsonBody(request): JsonBody<LimitRequest>,
) -> Result<Json<CommandLimit>, ApiError> {
    let stored = set_limit(&state, &command, request).await?;
    tracing::info!(%command, ?stored, "limit set");
    Ok(Json(stored))
}

/// Lift a command's limits: its held jobs may start at once.
#[utoipa::path(delete, path = "/api/limits/{command}", tag = "limits",
    params(("command" = String, Path, description = "The command, app.name")),
    responses((status = 204, description = "Lifted"),
        (status = 404, description = "The command has no limits", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(command): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_limit(&command).await?;
    tracing::info!(%command, "limit lifted");
    Ok(StatusCode::NO_CONTENT)
}
