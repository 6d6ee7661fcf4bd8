//! Queues and schedules: what waits where, what runs when, and the
//! buttons that pause and resume them.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::layout::{page, relative, Section, Session};
use crate::extract::Path;
use crate::state::AppState;

pub async fn queues(State(state): State<AppState>) -> Response {
    let queues = match state.store.queues().await {
        Ok(queues) => queues,
        Err(err) => return super::jobs::trouble(&err),
    };
    let limits = match state.store.limits().await {
        Ok(limits) => limits,
        Err(err) => return super::jobs::trouble(&err),
    };
    let now = state.store.clock().now();
    let body = html! {
        h1 { "Queues" }
        p.muted { "A paused queue takes submits and starts none of its jobs; running jobs finish." }
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Queue" } th scope="col" { "Waiting" } th scope="col" { "Running" }
                th scope="col" { "State" } th scope="col" { "" }
            } }
            tbody {
                @for queue in &queues {
                    tr {
                        td { a href={ "/ui?queue=" (queue.name) } { (queue.name) } }
                        td { (queue.new) }
                        td { (queue.running) }
                        td {
                            @if let Some(at) = queue.paused_at { "paused " (relative(at, now)) }
                            @else { "active" }
                        }
                        td { (toggle("queues", &queue.name, queue.paused)) }
                    }
                }
                @if queues.is_empty() { tr { td colspan="5" .muted { "No queue has jobs." } } }
            }
        } }
        h2 { "Limits" }
        p.muted { "Held for every worker on every host; a job held back stays new. Set them with "
            code { "errand limit set" } ", " code { "PUT /api/limits/{command}" } " or errand.toml." }
        div.table-wrap { table id="limits" {
            thead { tr {
                th scope="col" { "Command" } th scope="col" { "Per" }
                th scope="col" { "Running at most" } th scope="col" { "Starts at most" }
            } }
            tbody {
                @for limit in &limits {
                    tr {
                        td { a href={ "/ui?command=" (limit.command) } { (limit.command) } }
                        td { (limit.key.as_deref().unwrap_or("the command")) }
                        td { @match limit.max_running { Some(n) => (n), None => span.muted { "–" } } }
                        td { @match (limit.max_starts, limit.per_secs) {
                            (Some(n), Some(secs)) => { (n) " per " (secs) " s" },
                            _ => span.muted { "–" },
                        } }
                    }
                }
                @if limits.is_empty() { tr { td colspan="4" .muted { "No limits." } } }
            }
        } }
    };
    page("Queues", Section::Queues, Session::of(&state), body).into_response()
}

pub async fn schedules(State(state): State<AppState>) -> Response {
    let schedules = match state.store.schedules().await {
        Ok(schedules) => schedules,
        Err(err) => return super::jobs::trouble(&err),
    };
    let now = state.store.clock().now();
    let body = html! {
        h1 { "Schedules" }
        p.muted { "Each tick enqueues one job. Create them with " code { "errand schedule set" }
            ", " code { "PUT /api/schedules/{name}" } " or errand.toml." }
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Schedule" } th scope="col" { "Cron" } th scope="col" { "Command" }
                th scope="col" { "Next run" } th scope="col" { "Last job" }
                th.wide scope="col" { "Last error" } th scope="col" { "" }
            } }
            tbody {
                @for schedule in &schedules {
                    tr {
                        td { (schedule.name)
                            @if schedule.paused { " " span.status.canceled { "paused" } } }
                        td { code { (schedule.cron) } br; span.muted { (schedule.timezone) ", missed: " (schedule.missed.as_str()) } }
                        td { (schedule.job["command"].as_str().unwrap_or("?")) }
                        td { @match schedule.next_run {
                            Some(at) => (relative(at, now)),
                            None => span.muted { "never" },
                        } }
                        td { @if let Some(job) = &schedule.last_job_id {
                            a.id href={ "/ui/jobs/" (job) } { (job) }
                        } }
                        td.wide { (schedule.last_error.as_deref().unwrap_or("")) }
                        td { div.actions {
                            (toggle("schedules", &schedule.name, schedule.paused))
                            form method="post" action={ "/ui/schedules/" (schedule.name) "/delete" }
                                hx-post={ "/ui/schedules/" (schedule.name) "/delete" }
                                hx-confirm={ "Delete the schedule " (schedule.name) "? Its jobs stay." } {
                                button.secondary type="submit" { "Delete" }
                            }
                        } }
                    }
                }
                @if schedules.is_empty() { tr { td colspan="7" .muted { "No schedules." } } }
            }
        } }
    };
    page("Schedules", Section::Schedules, Session::of(&state), body).into_response()
}

/// A Pause or Resume button for a queue or a schedule.
fn toggle(kind: &str, name: &str, paused: bool) -> maud::Markup {
    let action = if paused { "resume" } else { "pause" };
    html! {
        form method="post" action={ "/ui/" (kind) "/" (name) "/" (action) } {
            button.secondary type="submit" { @if paused { "Resume" } @else { "Pause" } }
        }
    }
}

#[derive(Clone, Copy)]
enum Change {
    Pause,
    Resume,
    Delete,
}

/// Pause or resume a queue; back to the queues page.
async fn change_queue(state: AppState, name: String, pause: bool) -> Response {
    let done = if pause {
        state.store.pause_queue(&name).await
    } else {
        state.store.resume_queue(&name).await
    };
    match done {
        Ok(()) => Redirect::to("/ui/queues").into_response(),
        Err(err) => super::jobs::trouble(&err),
    }
}

/// Pause, resume or delete a schedule; back to the schedules page (with
/// htmx, told to go there).
async fn change_schedule(
    state: AppState,
    name: String,
    headers: HeaderMap,
    change: Change,
) -> Response {
    let done = match change {
        Change::Pause => state.store.pause_schedule(&name, true).await.map(drop),
        Change::Resume => state.store.pause_schedule(&name, false).await.map(drop),
        Change::Delete => state.store.delete_schedule(&name).await,
    };
    if let Err(err) = done {
        return super::jobs::trouble(&err);
    }
    if headers.contains_key("hx-request") {
        return ([("HX-Redirect", "/ui/schedules")], "").into_response();
    }
    Redirect::to("/ui/schedules").into_response()
}

pub async fn queue_action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    match parse(&action) {
        Some(Change::Pause) => change_queue(state, name, true).await,
        Some(Change::Resume) => change_queue(state, name, false).await,
        _ => crate::error::ApiError::RouteNotFound(format!("/ui/queues/{name}/{action}"))
            .into_response(),
    }
}

pub async fn schedule_action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match parse(&action) {
        Some(change) => change_schedule(state, name, headers, change).await,
        None => crate::error::ApiError::RouteNotFound(format!("/ui/schedules/{name}/{action}"))
            .into_response(),
    }
}

fn parse(action: &str) -> Option<Change> {
    match action {
        "pause" => Some(Change::Pause),
        "resume" => Some(Change::Resume),
        "delete" => Some(Change::Delete),
        _ => None,
    }
}
