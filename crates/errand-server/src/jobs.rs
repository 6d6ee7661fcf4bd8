//! The job routes: submit, batch, get (long-poll), list, cancel, retry, events.

use std::time::Duration;

use axum::extract::{RawQuery, State};

use crate::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use errand_api::*;
use errand_core::{CommandName, JobId, JobStatus, Timestamp};
use errand_store::{ListParams, NewJob, SubmitReceipt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// Turns a submit request into a job with the command's defaults, or says
/// precisely what is wrong with it.
pub(crate) async fn build_job(
    state: &AppState,
    request: SubmitRequest,
) -> Result<NewJob, ApiError> {
    let (app, name) = match (&request.app, CommandName::parse(&request.command)) {
        (Some(app), _) => (app.clone(), request.command.clone()),
        (None, Ok(full)) => full.into_parts(),
        (None, Err(_)) => {
            return Err(ApiError::UnknownCommand(format!(
                "command {:?} needs an app: send \"app\" or a full name like \"app.{}\"",
                request.command, request.command
            )))
        }
    };
    let full = CommandName::new(app.as_str(), name.as_str()).to_string();
    let command = state.catalog.lookup(&full).await?.ok_or_else(|| {
        ApiError::UnknownCommand(format!(
            "unknown command {full}: no worker has registered it"
        ))
    })?;
    if !request.input.is_object() {
        return Err(ApiError::InvalidInput(format!(
            "input must be a JSON object (`{{}}` for none), got {}",
            json_kind(&request.input)
        )));
    }
    command
        .check(&request.input)
        .map_err(ApiError::InvalidInput)?;
    if let Some(context) = &request.context {
        if !context.is_object() && !context.is_null() {
            return Err(ApiError::InvalidInput(
                "context must be a JSON object".into(),
            ));
        }
    }
    let defaults = &command.info.defaults;
    let options = request.options.unwrap_or_default();
    if let Some(retry) = &options.retry {
        // As sent: max_attempts below may replace its count, not excuse it.
        retry
            .validate()
            .map_err(|e| ApiError::InvalidInput(format!("options.retry: {e}")))?;
    }
    // The command's defaults, then what the submit's options name.
    let mut job = defaults.new_job(app, name, request.input);
    if let Some(queue) = options.queue {
        job.queue = queue;
    }
    if let Some(priority) = options.priority {
        job.priority = priority;
    }
    if let Some(retry) = options.retry {
        job.retry = retry;
    }
    if let Some(secs) = options.timeout_secs {
        job.timeout_secs = Some(secs);
    }
    job.context = request.context.filter(|c| !c.is_null());
    errand_core::labels::validate_tags(&request.tags)
        .map_err(|msg| ApiError::InvalidInput(format!("tags: {msg}")))?;
    job = job.tags(request.tags);
    job.webhook = state
        .config
        .webhooks
        .for_submit(&full, options.webhook)
        .map_err(|refused| ApiError::InvalidInput(format!("options.webhook.url {refused}")))?;
    job.idempotency_key = options.idempotency_key;
    if let Some(max_attempts) = options.max_attempts {
        job.retry.max_attempts = max_attempts;
    }
    let now = state.store.clock().now();
    job.run_at = match (options.run_at, options.delay_secs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidInput(
                "options: give run_at or delay_secs, not both".into(),
            ))
        }
        (Some(at), None) => Some(at),
        (None, Some(secs)) => {
            let delay = Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|_| secs <= errand_core::MAX_SPAN_SECS)
                .ok_or_else(|| {
                    ApiError::InvalidInput(format!(
                        "options.delay_secs must be a number of seconds from 0 to 315576000 (ten years), got {secs}"
                    ))
                })?;
            Some(now.plus(delay))
        }
        (None, None) => None,
    };
    job.validate()
        .map_err(|msg| ApiError::InvalidInput(format!("options: {msg}")))?;
    Ok(job)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A second submit with a used idempotency key is the same request sent
/// again, or a mistake. The same command and input get the first job back;
/// anything else is said: a single submit is refused (409), a batch's
/// answer for that job says so (the rest of the batch is stored).
async fn conflicting_key(
    state: &AppState,
    keyed: Option<KeyedRequest>,
    receipt: &SubmitReceipt,
) -> Result<Option<String>, ApiError> {
    let Some(request) = keyed.filter(|_| !receipt.created) else {
        return Ok(None);
    };
    let existing = state.store.get(&receipt.job_id).await?;
    let same = (existing.app, existing.command, existing.input)
        == (request.app, request.command, request.input);
    Ok((!same).then(|| {
        format!(
            "idempotency key {:?} was used by job {} with another command or input; use a new key for a different job",
            request.key, receipt.job_id
        )
    }))
}

/// What a keyed submit asked for, kept to compare with the job its key
/// may already name (only keyed submits pay for the copy).
struct KeyedRequest {
    key: String,
    app: String,
    command: String,
    input: serde_json::Value,
}

impl KeyedRequest {
    fn of(job: &NewJob) -> Option<Self> {
        job.idempotency_key.as_ref().map(|key| Self {
            key: key.clone(),
            app: job.app.clone(),
            command: job.command.clone(),
            input: job.input.clone(),
        })
    }
}

fn submitted(receipt: SubmitReceipt) -> SubmitResponse {
    let message = if receipt.created {
        "Command submitted successfully".to_owned()
    } else {
        format!(
            "A job with this idempotency key exists already; it is {}",
            receipt.status
        )
    };
    SubmitResponse {
        job_id: receipt.job_id,
        status: "submitted".into(),
        message,
        created: receipt.created,
    }
}

/// Submit a job.
#[utoipa::path(post, path = "/api/commands/jobs", tag = "jobs",
    request_body = SubmitRequest,
    responses(
        (status = 202, description = "Stored; the job runs as soon as a worker is free", body = SubmitResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 409, description = "The idempotency key was used for another command or input", body = ErrorBody),
        (status = 415, description = "A Content-Type other than JSON", body = ErrorBody),
        (status = 422, description = "Unknown command or input that fails its schema", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SubmitRequest>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let job = build_job(&state, request).await?;
    let keyed = KeyedRequest::of(&job);
    let receipt = state.store.submit(job).await?;
    if let Some(conflict) = conflicting_key(&state, keyed, &receipt).await? {
        return Err(ApiError::IdempotencyConflict(conflict));
    }
    tracing::info!(job_id = %receipt.job_id, created = receipt.created, "job submitted");
    Ok((StatusCode::ACCEPTED, Json(submitted(receipt))))
}

/// Submit many jobs in one transaction: all are stored, or none.
#[utoipa::path(post, path = "/api/commands/jobs/batch", tag = "jobs",
    request_body = BatchRequest,
    responses(
        (status = 202, body = BatchResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, description = "A job is invalid (its index is named); nothing was stored", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn submit_batch(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    let mut jobs = Vec::with_capacity(request.jobs.len());
    for (index, submit) in request.jobs.into_iter().enumerate() {
        jobs.push(build_job(&state, submit).await.map_err(|err| match err {
            ApiError::InvalidInput(msg) => ApiError::InvalidInput(format!("jobs[{index}]: {msg}")),
            ApiError::UnknownCommand(msg) => {
                ApiError::UnknownCommand(format!("jobs[{index}]: {msg}"))
            }
            other => other,
        })?);
    }
    let keyed: Vec<_> = jobs.iter().map(KeyedRequest::of).collect();
    let receipts = state.store.submit_batch(jobs).await?;
    let mut answers = Vec::with_capacity(receipts.len());
    for (keyed, receipt) in keyed.into_iter().zip(receipts) {
        let conflict = conflicting_key(&state, keyed, &receipt).await?;
        let mut answer = submitted(receipt);
        if let Some(conflict) = conflict {
            answer.message = conflict;
        }
        answers.push(answer);
    }
    Ok((StatusCode::ACCEPTED, Json(BatchResponse { jobs: answers })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct WaitQuery {
    /// Long-poll: answer when the job ends or after this many seconds
    /// (at most the server's `max_wait`, 300 s by default).
    #[param(minimum = 0)]
    pub wait: Option<f64>,
}

/// A job's status, result, error and progress.
#[utoipa::path(get, path = "/api/commands/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job's id"), WaitQuery, crate::links::LinkParam),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<Job>, ApiError> {
    let job_id = JobId::from(job_id);
    let wait = match query.wait {
        None => Duration::ZERO,
        // Longer than the server allows is the server's longest.
        Some(secs) if secs >= 0.0 => Duration::try_from_secs_f64(secs)
            .unwrap_or(Duration::MAX)
            .min(state.config.max_wait),
        Some(secs) => {
            return Err(ApiError::BadRequest(format!(
                "wait must be a number of seconds ≥ 0, got {secs}"
            )))
        }
    };
    if wait.is_zero() {
        return Ok(Json(
            with_hold(&state, state.store.get(&job_id).await?).await?,
        ));
    }
    // Subscribe before reading, so an ending in between is not missed.
    let mut feed = state.store.subscribe();
    let job = state.store.get(&job_id).await?;
    if job.status.is_terminal() {
        return Ok(Json(job));
    }
    let ended = async {
        loop {
            match feed.recv().await {
                Ok(event) if event.job_id == job_id && event.is_terminal() => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(wait, ended) => {}
        () = state.shutdown.cancelled() => {}
    }
    Ok(Json(
        with_hold(&state, state.store.get(&job_id).await?).await?,
    ))
}

/// A waiting job with a limit key, told why its limit holds it (if it
/// does): two small reads, only for such jobs.
async fn with_hold(state: &AppState, mut job: Job) -> Result<Job, ApiError> {
    let Some(key) = job
        .limit_key
        .as_deref()
        .filter(|_| job.status == JobStatus::New)
    else {
        return Ok(job);
    };
    let command = job.full_command();
    let limits = state.store.limits().await?;
    let Some(limit) = limits.iter().find(|l| l.command == command) else {
        return Ok(job);
    };
    let window = limit.window().map(|(_, per)| per);
    let usage = state.store.limit_usage(key, window).await?;
    job.held = errand_core::hold_reason(limit, key, usage);
    Ok(job)
}

fn parse_time(field: &str, text: Option<String>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|text| {
        Timestamp::parse_rfc3339(&text).ok_or_else(|| {
            ApiError::BadRequest(format!("{field} must be an RFC 3339 time, got {text:?}"))
        })
    })
    .transpose()
}

/// List jobs, newest first, with filters and cursor pagination.
///
/// Besides the parameters below, `context.KEY=VALUE` (any number) keeps
/// the jobs whose context has KEY with that value, compared as text: a
/// top-level string, number or boolean of at most 256 characters. It is
/// not in the parameter list, whose names are fixed. Filters by tag and
/// context are index lookups, however many jobs there are.
#[utoipa::path(get, path = "/api/commands/jobs", tag = "jobs", params(ListQuery, crate::openapi::TagParam),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobList>, ApiError> {
    let query = ListQuery::parse(raw.as_deref().unwrap_or("")).map_err(ApiError::BadRequest)?;
    let status = query
        .status_filter
        .map(|text| {
            JobStatus::parse(&text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "status_filter must be one of new, running, completed, failed, canceled; got {text:?}"
                ))
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(0);
    if query.limit == Some(0) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let page = state
        .store
        .list(ListParams {
            app: query.app,
            command: query.command_filter,
            status,
            queue: query.queue,
            parent_id: query.parent_id.map(JobId::from),
            created_after: parse_time("created_after", query.created_after)?,
            created_before: parse_time("created_before", query.created_before)?,
            tags: query.tag,
            context: query.context,
            id_prefix: None,
            limit,
            cursor: query.cursor,
        })
        .await?;
    Ok(Json(JobList {
        jobs: page.jobs,
        next_cursor: page.next_cursor,
    }))
}

/// Cancel a job: at once if it has not started, else its worker stops it.
#[utoipa::path(delete, path = "/api/commands/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path)),
    responses((status = 200, body = CancelResponse), (status = 404, body = ErrorBody),
        (status = 409, description = "The job already ended", body = ErrorBody)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<CancelResponse>, ApiError> {
    let job = state.store.cancel(&JobId::from(job_id)).await?;
    tracing::info!(job_id = %job.job_id, status = %job.status, "cancel requested");
    Ok(Json(CancelResponse {
        job_id: job.job_id,
        cancelled: true,
        status: job.status,
        cancel_requested: job.cancel_requested,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RetryQuery {
    /// Start from scratch: drop the checkpoint the last attempt saved
    /// (by default the next attempt continues from it).
    pub clear_checkpoint: Option<bool>,
}

/// Cancel every job that fits the filters and has not ended (and the jobs
/// under each), in one request. `context` matches jobs whose context has
/// each of the given keys with the given value.
#[utoipa::path(post, path = "/api/commands/jobs/cancel", tag = "jobs",
    request_body = BulkCancelRequest,
    responses((status = 200, description = "How many were canceled", body = BulkCancelResponse),
        (status = 422, description = "An empty filter value", body = ErrorBody)))]
pub async fn cancel_many(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<BulkCancelRequest>,
) -> Result<Json<BulkCancelResponse>, ApiError> {
    for (field, value) in [
        ("command", &request.command),
        ("app", &request.app),
        ("queue", &request.queue),
        ("parent_id", &request.parent_id),
    ] {
        if value.as_deref() == Some("") {
            return Err(ApiError::InvalidInput(format!(
                "{field} must not be empty (leave it out to match any)"
            )));
        }
    }
    if request.context.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(ApiError::InvalidInput(
            "context must name at least one key (leave it out to match any)".into(),
        ));
    }
    let fits_context = |job: &errand_core::Job| match &request.context {
        None => true,
        Some(wanted) => wanted
            .iter()
            .all(|(key, value)| job.context.as_ref().and_then(|c| c.get(key)) == Some(value)),
    };
    // The plain values are looked up by label (an index); the exact JSON
    // comparison above still decides (`42` and `"42"` share a label).
    let labeled: Vec<(String, String)> = request
        .context
        .iter()
        .flatten()
        .filter(|(key, _)| !key.is_empty())
        .filter_map(|(key, value)| {
            Some((key.clone(), errand_core::labels::context_value_text(value)?))
        })
        .collect();
    let statuses = match request.status {
        Some(BulkCancelStatus::New) => vec![JobStatus::New],
        Some(BulkCancelStatus::Running) => vec![JobStatus::Running],
        None => vec![JobStatus::New, JobStatus::Running],
    };
    let mut answer = BulkCancelResponse {
        canceled: 0,
        cancel_requested: 0,
    };
    for status in statuses {
        let mut cursor = None;
        loop {
            let page = state
                .store
                .list(ListParams {
                    app: request.app.clone(),
                    command: request.command.clone(),
                    status: Some(status),
                    queue: request.queue.clone(),
                    parent_id: request.parent_id.clone().map(JobId::from),
                    context: labeled.clone(),
                    limit: 1000,
                    cursor: cursor.take(),
                    ..ListParams::default()
                })
                .await?;
            for job in page.jobs.iter().filter(|job| fits_context(job)) {
                match state.store.cancel(&job.job_id).await {
                    Ok(job) if job.status == JobStatus::Canceled => answer.canceled += 1,
                    Ok(_) => answer.cancel_requested += 1,
                    // It ended meanwhile, or a cascade got it first.
                    Err(errand_store::StoreError::Conflict { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    tracing::info!(
        canceled = answer.canceled,
        cancel_requested = answer.cancel_requested,
        "bulk cancel"
    );
    Ok(Json(answer))
}

/// Run a failed or canceled job again (attempts reset, history kept).
#[utoipa::path(post, path = "/api/commands/jobs/{job_id}/retry", tag = "jobs",
    params(("job_id" = String, Path), RetryQuery),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody),
        (status = 409, description = "The job is not failed or canceled", body = ErrorBody)))]
pub async fn retry_job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Query(query): Query<RetryQuery>,
) -> Result<Json<Job>, ApiError> {
    let clear = query.clear_checkpoint.unwrap_or(false);
    Ok(Json(
        state.store.retry_job(&JobId::from(job_id), clear).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only events after this sequence number.
    pub after: Option<i64>,
    /// At most this many (default and maximum 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A job's event log: status changes, progress, log lines, attempt errors.
#[utoipa::path(get, path = "/api/commands/jobs/{job_id}/events", tag = "jobs",
    params(("job_id" = String, Path), EventsQuery, crate::links::LinkParam),
    responses((status = 200, body = EventList), (status = 404, body = ErrorBody)))]
pub async fn job_events(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let limit = query.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and 1000, got {limit}"
        )));
    }
    let events = state
        .store
        .events(&JobId::from(job_id), query.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(EventList { events }))
}
