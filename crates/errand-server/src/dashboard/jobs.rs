//! The jobs table and the job page, with Cancel and Retry.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use errand_core::{EventKind, Job, JobEvent, JobId, JobStatus};
use errand_store::{ListParams, StoreError};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{json_block, page, progress_bar, relative, status_badge, Section};
use crate::state::AppState;

/// The jobs page's filters, as the form sends them (empty = any).
#[derive(Debug, Default, Deserialize)]
pub struct JobFilters {
    #[serde(default)]
    command: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    cursor: String,
}

fn given(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

pub async fn list(State(state): State<AppState>, Query(filters): Query<JobFilters>) -> Response {
    let status = given(&filters.status).and_then(|s| JobStatus::parse(&s));
    let params = ListParams {
        app: given(&filters.app),
        command: given(&filters.command),
        status,
        cursor: given(&filters.cursor),
        ..ListParams::default()
    };
    let page_of_jobs = match state.store.list(params).await {
        Ok(page) => page,
        Err(err) => return trouble(&err),
    };
    let now = state.store.clock().now();
    let next = page_of_jobs.next_cursor.map(|cursor| {
        let query = serde_urlencoded::to_string([
            ("command", filters.command.as_str()),
            ("status", filters.status.as_str()),
            ("app", filters.app.as_str()),
            ("cursor", cursor.as_str()),
        ])
        .expect("strings encode");
        format!("/ui?{query}")
    });
    let body = html! {
        h1 { "Jobs" }
        form.filters method="get" action="/ui" {
            label { "Command" input name="command" value=(filters.command) placeholder="app.name"; }
            label {
                "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in JobStatus::ALL {
                        option value=(s.as_str()) selected[filters.status == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "App" input name="app" value=(filters.app); }
            button type="submit" { "Filter" }
        }
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Command" } th scope="col" { "Status" }
                    th scope="col" { "Progress" } th.wide scope="col" { "Attempt" }
                    th.wide scope="col" { "Created" } th scope="col" { "Updated" }
                } }
                tbody {
                    @for job in &page_of_jobs.jobs { (row(job, now)) }
                    @if page_of_jobs.jobs.is_empty() {
                        tr { td colspan="7" .muted { "No jobs match." } }
                    }
                }
            }
        }
        @if let Some(next) = next {
            div.pager { a.button href=(next) rel="next" { "Older jobs →" } }
        }
    };
    page("Jobs", Section::Jobs, body).into_response()
}

fn row(job: &Job, now: errand_core::Timestamp) -> Markup {
    let href = format!("/ui/jobs/{}", job.job_id);
    html! {
        tr id={ "job-" (job.job_id) } {
            td.id { a href=(href) { (short_id(&job.job_id)) } }
            td { (job.full_command()) }
            td { (status_badge(job.status)) }
            td { (progress_bar(job.progress.as_ref().and_then(|p| p.fraction), "progress")) }
            td.wide { (job.attempt) " / " (job.max_attempts) }
            td.wide { (relative(job.created, now)) }
            td { (relative(job.updated, now)) }
        }
    }
}

/// The tail of an id is what differs between jobs made close together.
fn short_id(id: &JobId) -> String {
    let id = id.as_str();
    id.get(id.len().saturating_sub(12)..)
        .unwrap_or(id)
        .to_owned()
}

pub async fn show(State(state): State<AppState>, Path(job_id): Path<String>) -> Response {
    let job_id = JobId::from(job_id);
    let job = match state.store.get(&job_id).await {
        Ok(job) => job,
        Err(err) => return trouble(&err),
    };
    let events = match state.store.events(&job_id, 0, 1000).await {
        Ok(events) => events,
        Err(err) => return trouble(&err),
    };
    let body = html! {
        p { a href="/ui" { "← Jobs" } }
        h1 { (job.full_command()) " " span.muted { (job.job_id) } }
        (job_panel(&job, &events, None, state.store.clock().now()))
    };
    page(&job.full_command(), Section::Jobs, body).into_response()
}

/// Everything about the job that changes: swapped whole after an action.
fn job_panel(
    job: &Job,
    events: &[JobEvent],
    notice: Option<&str>,
    now: errand_core::Timestamp,
) -> Markup {
    let failures: Vec<&JobEvent> = events
        .iter()
        .filter(|e| e.kind == EventKind::Failure)
        .collect();
    html! {
        section #job .panel aria-live="polite" {
            @if let Some(notice) = notice { p role="status" { (notice) } }
            dl.fields {
                dt { "Status" } dd { (status_badge(job.status))
                    @if job.cancel_requested && !job.status.is_terminal() { " " span.muted { "cancel requested" } } }
                dt { "Attempt" } dd { (job.attempt) " of " (job.max_attempts) }
                dt { "Queue" } dd { (job.queue) " (priority " (job.priority) ")" }
                dt { "Created" } dd { (relative(job.created, now)) }
                @if let Some(started) = job.started { dt { "Started" } dd { (relative(started, now)) } }
                @if let Some(finished) = job.finished { dt { "Finished" } dd { (relative(finished, now)) } }
                @if let Some(worker) = &job.worker_id { dt { "Worker" } dd { (worker) } }
                @if let Some(parent) = &job.parent_id {
                    dt { "Parent" } dd { a href={ "/ui/jobs/" (parent) } { (parent) } }
                }
            }
            @if let Some(progress) = &job.progress {
                h2 { "Progress" }
                div.progress-big { (progress_bar(progress.fraction, "job progress")) }
                @if let Some(message) = &progress.message { p { (message) } }
            }
            @if let Some(error) = &job.error {
                h2 { "Error" }
                div.error-box {
                    strong { (error.kind) } ": " (error.message)
                    " " span.muted { "(attempt " (error.attempt) ")" }
                }
            }
            @if failures.len() > 1 || (failures.len() == 1 && job.error.is_none()) {
                h2 { "Attempt history" }
                ol.events {
                    @for event in &failures {
                        li { (event.at.to_rfc3339()) " — " (event.data.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("failed")) }
                    }
                }
            }
            h2 { "Data" }
            (json_block("Input", &job.input))
            @if let Some(context) = &job.context { (json_block("Context", context)) }
            @if let Some(result) = &job.result { (json_block("Result", result)) }
            div.actions {
                @if !job.status.is_terminal() {
                    form method="post" action={ "/ui/jobs/" (job.job_id) "/cancel" }
                        hx-post={ "/ui/jobs/" (job.job_id) "/cancel" } hx-target="#job" hx-swap="outerHTML"
                        hx-confirm="Cancel this job?" {
                        button.danger type="submit" { "Cancel" }
                    }
                }
                @if matches!(job.status, JobStatus::Failed | JobStatus::Canceled) {
                    form method="post" action={ "/ui/jobs/" (job.job_id) "/retry" }
                        hx-post={ "/ui/jobs/" (job.job_id) "/retry" } hx-target="#job" hx-swap="outerHTML"
                        hx-confirm="Run this job again?" {
                        button type="submit" { "Retry" }
                    }
                }
            }
            h2 { "Event log" }
            ol.events {
                @for event in events {
                    li {
                        span.muted { "#" (event.seq) " " (event.at.to_rfc3339()) " " }
                        strong { (event.kind.as_str()) } " " (status_badge(event.status)) " "
                        (serde_json::to_string(&event.data).unwrap_or_default())
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
pub enum Action {
    Cancel,
    Retry,
}

/// Cancel or Retry from the job page: with htmx, the new panel; without
/// JavaScript, back to the page (303).
pub async fn act(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    action: Action,
) -> Response {
    let job_id = JobId::from(job_id);
    let done = match action {
        Action::Cancel => state.store.cancel(&job_id).await,
        Action::Retry => state.store.retry(&job_id).await,
    };
    let notice = match (&done, action) {
        (Ok(job), Action::Cancel) if job.status == JobStatus::Canceled => "Canceled.".to_owned(),
        (Ok(_), Action::Cancel) => "Cancel requested: its worker is stopping it.".to_owned(),
        (Ok(_), Action::Retry) => "Queued again.".to_owned(),
        (Err(err @ StoreError::Conflict { .. }), _) => format!("Not done: {err}"),
        (Err(err), _) => return trouble(err),
    };
    if !headers.contains_key("hx-request") {
        return Redirect::to(&format!("/ui/jobs/{job_id}")).into_response();
    }
    let (job, events) = match (
        state.store.get(&job_id).await,
        state.store.events(&job_id, 0, 1000).await,
    ) {
        (Ok(job), Ok(events)) => (job, events),
        (Err(err), _) | (_, Err(err)) => return trouble(&err),
    };
    job_panel(&job, &events, Some(&notice), state.store.clock().now()).into_response()
}

/// A store error as a page: 404 for an unknown job, 503 when the store is
/// down, else 500.
pub(crate) fn trouble(err: &StoreError) -> Response {
    let status = match err {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        StoreError::Conflict { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = html! {
        h1 { "Sorry" }
        p.error-box { (err) }
        p { a href="/ui" { "← Jobs" } }
    };
    (status, page("Error", Section::Jobs, body)).into_response()
}
