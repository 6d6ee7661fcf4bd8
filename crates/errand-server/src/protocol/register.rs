//! Registering a worker and publishing its commands.

use axum::extract::State;
use axum::Json;
use errand_api::worker::*;
use errand_api::ErrorBody;
use errand_store::{CommandDefaults, CommandInfo, WorkerRegistration, DEFAULT_QUEUE};

use super::*;
use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

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
