//! The job page: state, progress, result, event log, child jobs, and the
//! Cancel and Retry actions.

use axum::extract::State;

use crate::extract::Path;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use errand_core::{Change, EventKind, Job, JobEvent, JobId, JobStatus, Timestamp};
use errand_store::{ListParams, StoreError};
use maud::{html, Markup};

use super::jobs::{live_badge, short_id, trouble};
use super::layout::{json_block, page, progress_bar, relative, status_badge, Section, Session};
use crate::state::AppState;

/// Events the job page shows: the most recent ones.
const LOG_TAIL: usize = 200;

pub async fn show(State(state): State<AppState>, Path(job_id): Path<String>) -> Response {
    let job_id = JobId::from(job_id);
    let (job, log, children) = match job_page_data(&state, &job_id).await {
        Ok(data) => data,
        Err(err) => return trouble(&err),
    };
    let now = state.store.clock().now();
    let body = html! {
        p { a href="/ui" { "← Jobs" } }
        div.title-row {
            h1 { (job.full_command()) " " span.muted { (job.job_id) } }
            @if !job.status.is_terminal() { (live_badge()) }
        }
        (job_panel(&job, &log, None, now))
        @if !job.tags.is_empty() {
            p.tags {
                "Tags: "
                @for tag in &job.tags {
                    a.tag href={ "/ui?" (serde_urlencoded::to_string([("tag", tag.as_str())]).expect("strings encode")) } { (tag) }
                    " "
                }
            }
        }
        h2 { "Data" }
        (json_block("Input", &job.input))
        @if let Some(context) = &job.context { (json_block("Context", context)) }
        @if !children.is_empty() {
            h2 { "Child jobs" }
            ul.children {
                @for child in &children {
                    li { a href={ "/ui/jobs/" (child.job_id) } { (child.full_command()) " " span.muted { (short_id(&child.job_id)) } }
                        " " (status_badge(child.status)) }
                }
            }
        }
    };
    page(
        &job.full_command(),
        Section::Jobs,
        Session::of(&state),
        body,
    )
    .into_response()
}

async fn job_page_data(
    state: &AppState,
    job_id: &JobId,
) -> Result<(Job, EventLog, Vec<Job>), StoreError> {
    let job = state.store.get(job_id).await?;
    let log = event_log(state, &job).await?;
    let children = state
        .store
        .list(ListParams {
            parent_id: Some(job_id.clone()),
            ..ListParams::default()
        })
        .await?
        .jobs;
    Ok((job, log, children))
}

/// The tail of a job's event log and how many came before it.
pub(crate) struct EventLog {
    events: Vec<JobEvent>,
    earlier: i64,
}

pub(crate) async fn event_log(state: &AppState, job: &Job) -> Result<EventLog, StoreError> {
    let after = (job.event_seq - LOG_TAIL as i64).max(0);
    let events = state.store.events(&job.job_id, after, LOG_TAIL).await?;
    let earlier = events.first().map_or(0, |first| first.seq - 1);
    Ok(EventLog { events, earlier })
}

/// Everything about the job that changes, with its live stream while it
/// can still change; swapped whole after Cancel or Retry, so a retried job
/// is followed again.
fn job_panel(job: &Job, log: &EventLog, notice: Option<&str>, now: Timestamp) -> Markup {
    let live = (!job.status.is_terminal()).then(|| format!("/ui/live/jobs/{}", job.job_id));
    html! {
        section #job .panel hx-ext=[live.as_ref().map(|_| "sse")] sse-connect=[live.as_deref()] sse-close=[live.as_ref().map(|_| "end")] {
            // Inside the live part: the next state drawn replaces it, so
            // "cancel requested" does not outlive the cancel.
            div #job-state sse-swap="state" {
                @if let Some(notice) = notice { p role="status" { (notice) } }
                (job_state(job, log, now))
            }
            h2 { "Event log" }
            ol #job-log .events sse-swap="log" { (log_items(log)) }
        }
    }
}

/// Status, progress, error, result and the actions that fit the status.
pub(crate) fn job_state(job: &Job, log: &EventLog, now: Timestamp) -> Markup {
    let attempts = attempts(&log.events);
    html! {
        dl.fields {
            dt { "Status" } dd { (status_badge(job.status))
                @if job.cancel_requested && !job.status.is_terminal() { " " span.muted { "cancel requested" } } }
            dt { "Attempt" } dd { (job.attempt) " of " (job.max_attempts) }
            dt { "Queue" } dd { (job.queue) " (priority " (job.priority) ")" }
            dt { "Created" } dd { (relative(job.created, now)) }
            @if job.run_at > job.created { dt { "Due" } dd { (relative(job.run_at, now)) } }
            @if let Some(started) = job.started.filter(|_| job.status != JobStatus::New) {
                dt { "Started" } dd { (relative(started, now)) }
            }
            @if let Some(finished) = job.finished { dt { "Finished" } dd { (relative(finished, now)) } }
            @if let Some(worker) = &job.worker_id { dt { "Worker" } dd { (worker) } }
            @if let Some(parent) = &job.parent_id {
                dt { "Parent" } dd { a href={ "/ui/jobs/" (parent) } { (parent) } }
            }
        }
        @if let Some(progress) = &job.progress {
            h2 { "Progress" }
            div.progress-big { (progress_bar(progress.fraction, "job progress")) }
            @if let Some(message) = &progress.message { p.progress-message { (message) } }
        }
        @if let Some(error) = &job.error {
            h2 { "Error" }
            div.error-box {
                strong { (error.kind) } ": " (error.message)
                " " span.muted { "(attempt " (error.attempt) ")" }
            }
        }
        @if attempts.len() > 1 || (attempts.len() == 1 && attempts[0].run > 1) {
            h2 { "Attempts" }
            div.table-wrap { table #attempts {
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Attempt" } th scope="col" { "Worker" }
                    th scope="col" { "Started" } th scope="col" { "Took" } th scope="col" { "Outcome" }
                } }
                tbody {
                    @for attempt in &attempts {
                        tr {
                            td { (attempt.run) } td { (attempt.attempt) } td { (attempt.worker) }
                            td { (relative(attempt.started, now)) }
                            td { @if let Some(ended) = attempt.ended { (format_took(ended.since(attempt.started))) } }
                            td { (attempt.outcome) }
                        }
                    }
                }
            } }
        }
        @if let Some(result) = &job.result { (json_block("Result", result)) }
        @if let Some(checkpoint) = &job.checkpoint { (json_block("Checkpoint", checkpoint)) }
        div.actions {
            @if !job.status.is_terminal() {
                form method="post" action={ "/ui/jobs/" (job.job_id) "/cancel" }
                    hx-post={ "/ui/jobs/" (job.job_id) "/cancel" } hx-target="#job" hx-swap="outerHTML"
                    hx-confirm="Cancel this job?" {
                    button.danger #cancel type="submit" { "Cancel" }
                }
            }
            @if matches!(job.status, JobStatus::Failed | JobStatus::Canceled) {
                form method="post" action={ "/ui/jobs/" (job.job_id) "/retry" }
                    hx-post={ "/ui/jobs/" (job.job_id) "/retry" } hx-target="#job" hx-swap="outerHTML"
                    hx-confirm="Run this job again?" {
                    button #retry type="submit" { "Retry" }
                }
            }
        }
    }
}

/// One attempt of a job, read from its event log. `run` counts the times
/// the job was queued by hand (a manual retry starts its attempts at 1
/// again), so two runs' first attempts are told apart.
#[derive(Debug, PartialEq)]
pub(crate) struct AttemptRow {
    pub run: u32,
    pub attempt: u32,
    pub worker: String,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    pub outcome: String,
}

pub(crate) fn attempts(events: &[JobEvent]) -> Vec<AttemptRow> {
    let mut rows: Vec<AttemptRow> = Vec::new();
    let mut run = 1;
    for event in events {
        let Ok(change) = event.change() else { continue };
        let ended = match change {
            Change::Retried { .. } => {
                run += 1;
                None
            }
            Change::Claimed { attempt, worker_id } => {
                rows.push(AttemptRow {
                    run,
                    attempt,
                    worker: worker_id,
                    started: event.at,
                    ended: None,
                    outcome: "running".into(),
                });
                None
            }
            Change::Completed { .. } => Some("completed".to_owned()),
            Change::RetryScheduled { error, .. } | Change::Failed { error } => {
                Some(format!("failed: {}", error.message))
            }
            Change::Canceled { .. } => Some("canceled".to_owned()),
            Change::Released => Some("released (not counted)".to_owned()),
            _ => None,
        };
        let open = rows.last_mut().filter(|row| row.ended.is_none());
        if let (Some(outcome), Some(row)) = (ended, open) {
            row.ended = Some(event.at);
            row.outcome = outcome;
        }
    }
    rows
}

fn format_took(took: std::time::Duration) -> String {
    match took.as_secs_f64() {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1} s"),
        s => format!("{:.1} min", s / 60.0),
    }
}

/// The event log's entries, each said in words with its data on hover;
/// failures stand out.
pub(crate) fn log_items(log: &EventLog) -> Markup {
    html! {
        @if log.earlier > 0 {
            li.muted { (log.earlier) " earlier events (all of them: " code { "GET /api/commands/jobs/{id}/events" } ")" }
        }
        @for event in &log.events {
            li class=[(event.kind == EventKind::Failure).then_some("failure")]
                title=(serde_json::to_string(&event.data).unwrap_or_default()) {
                time.muted datetime=(event.at.to_rfc3339()) { (event.at.to_datetime().format("%H:%M:%S%.3f")) }
                " " strong { (event.kind.as_str()) } " " (status_badge(event.status)) " "
                (event_summary(event))
            }
        }
    }
}

/// A JSON value as text, cut to about 120 characters.
fn shortened(value: Option<&serde_json::Value>) -> String {
    let mut text = value.map(|v| v.to_string()).unwrap_or_default();
    if text.len() > 120 {
        let cut = (0..=117)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// What an event says, in a few words.
fn event_summary(event: &JobEvent) -> String {
    let Ok(change) = event.change() else {
        // Not a change this version knows (a newer writer): show the data.
        return shortened(Some(&event.data));
    };
    match change {
        Change::Progress(progress) => {
            let percent = progress.fraction.map(|f| format!("{:.0} %", f * 100.0));
            [percent, progress.message, progress.stage]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" · ")
        }
        Change::Log { line, .. } => line,
        Change::Completed { result, .. } => format!("result {}", shortened(Some(&result))),
        Change::Checkpoint { checkpoint } => {
            format!("checkpoint {}", shortened(Some(&checkpoint)))
        }
        Change::RetryScheduled { error, retry_at } => {
            format!("{} (retries at {})", error.message, retry_at.to_rfc3339())
        }
        Change::Failed { error } => error.message,
        Change::CancelRequested => "cancel requested: its worker is stopping it".to_owned(),
        Change::Claimed { attempt, worker_id } => format!("by {worker_id}, attempt {attempt}"),
        Change::Canceled {
            reason, attempt, ..
        } => match attempt {
            Some(attempt) => format!("{reason}, attempt {attempt}"),
            None => reason,
        },
        Change::Submitted { .. } => "submitted".to_owned(),
        Change::Released => errand_core::change::RELEASED_REASON.to_owned(),
        Change::Retried {
            previous_status, ..
        } => format!("retried, was {previous_status}"),
        Change::Webhook(record) => {
            let answer = match (record.http_status, &record.error) {
                (Some(status), _) => format!(" ({status})"),
                (None, Some(error)) => format!(": {error}"),
                (None, None) => String::new(),
            };
            format!(
                "webhook {} to {}, attempt {}{answer}",
                record.state.as_str(),
                record.url,
                record.attempt
            )
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
    let job = match state.store.get(&job_id).await {
        Ok(job) => job,
        Err(err) => return trouble(&err),
    };
    let log = match event_log(&state, &job).await {
        Ok(log) => log,
        Err(err) => return trouble(&err),
    };
    job_panel(&job, &log, Some(&notice), state.store.clock().now()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_request_is_said_in_the_log_not_shown_as_a_bare_status() {
        let event = JobEvent {
            id: 1,
            job_id: JobId::from("j"),
            seq: 3,
            kind: EventKind::Status,
            status: JobStatus::Running,
            app: "a".into(),
            command: "c".into(),
            data: serde_json::json!({"status": "running", "cancel_requested": true}),
            at: Timestamp::default(),
        };
        assert!(event_summary(&event).contains("cancel requested"));
    }

    use errand_core::JobError;

    fn event(at: i64, change: Change) -> JobEvent {
        JobEvent {
            id: at,
            job_id: JobId::from("j".to_owned()),
            seq: at,
            kind: change.kind(),
            status: change.status(),
            app: "a".into(),
            command: "b".into(),
            data: change.data(),
            at: Timestamp::from_micros(at * 1_000_000),
        }
    }

    #[test]
    fn a_manual_retry_starts_a_new_run_whose_attempts_are_told_apart() {
        let claimed = |attempt| Change::Claimed {
            attempt,
            worker_id: "w".into(),
        };
        let error = JobError {
            kind: "Boom".into(),
            message: "boom".into(),
            retryable: false,
            attempt: 1,
        };
        let events = [
            event(
                1,
                Change::Submitted {
                    run_at: Timestamp::from_micros(0),
                },
            ),
            event(2, claimed(1)),
            event(4, Change::Failed { error }),
            event(
                10,
                Change::Retried {
                    previous_status: JobStatus::Failed,
                    checkpoint_cleared: false,
                },
            ),
            event(11, claimed(1)),
            event(
                12,
                Change::Completed {
                    attempt: 1,
                    result: serde_json::json!(1),
                },
            ),
        ];
        let rows = attempts(&events);
        let summary: Vec<(u32, u32, &str, Option<i64>)> = rows
            .iter()
            .map(|r| {
                (
                    r.run,
                    r.attempt,
                    r.outcome.as_str(),
                    r.ended.map(|e| e.as_micros() / 1_000_000),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1, 1, "failed: boom", Some(4)),
                (2, 1, "completed", Some(12))
            ]
        );
    }
}
