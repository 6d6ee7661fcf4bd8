//! The jobs table, its filters and paging; the dashboard's error page.

use std::time::Duration;

use axum::extract::State;

use crate::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use errand_core::{Job, JobId, JobStatus, Timestamp};
use errand_store::{ListParams, StoreError};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{page, progress_bar, relative, status_badge, Section, Session};
use crate::state::AppState;

/// The jobs page's filters, as the form sends them (empty = any).
#[derive(Debug, Default, Deserialize)]
pub struct JobFilters {
    #[serde(default)]
    pub(crate) command: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    pub(crate) app: String,
    /// How far back `created` goes: one of `CREATED_RANGES`' keys.
    #[serde(default)]
    created: String,
    /// One tag.
    #[serde(default)]
    tag: String,
    /// One context value, `KEY=VALUE`.
    #[serde(default)]
    context: String,
    /// A job's id, or its start.
    #[serde(default)]
    id: String,
    #[serde(default)]
    cursor: String,
}

/// The time ranges the jobs page offers, relative to each render.
const CREATED_RANGES: [(&str, &str, u64); 4] = [
    ("15m", "last 15 minutes", 15 * 60),
    ("1h", "last hour", 3600),
    ("24h", "last 24 hours", 24 * 3600),
    ("7d", "last 7 days", 7 * 24 * 3600),
];

fn given(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

impl JobFilters {
    pub(crate) fn params(&self, now: Timestamp) -> Result<ListParams, StoreError> {
        let created_after = CREATED_RANGES
            .iter()
            .find(|(key, _, _)| *key == self.created)
            .map(|(_, _, secs)| now.minus(Duration::from_secs(*secs)));
        let context = match given(&self.context) {
            None => Vec::new(),
            Some(text) => match text.split_once('=') {
                Some((key, value)) => vec![(key.trim().to_owned(), value.trim().to_owned())],
                None => {
                    return Err(StoreError::Invalid(format!(
                        "the context filter is KEY=VALUE (notebook_id=42), got {text:?}"
                    )))
                }
            },
        };
        Ok(ListParams {
            app: given(&self.app),
            command: given(&self.command),
            status: given(&self.status).and_then(|s| JobStatus::parse(&s)),
            created_after,
            tags: given(&self.tag).into_iter().collect(),
            context,
            id_prefix: given(&self.id).map(|id| id.to_ascii_lowercase()),
            cursor: given(&self.cursor),
            ..ListParams::default()
        })
    }

    /// These filters as a query string, with another cursor.
    pub(crate) fn query(&self, cursor: &str) -> String {
        serde_urlencoded::to_string([
            ("command", self.command.as_str()),
            ("status", self.status.as_str()),
            ("app", self.app.as_str()),
            ("created", self.created.as_str()),
            ("tag", self.tag.as_str()),
            ("context", self.context.as_str()),
            ("id", self.id.as_str()),
            ("cursor", cursor),
        ])
        .expect("strings encode")
    }
}

pub async fn list(State(state): State<AppState>, Query(filters): Query<JobFilters>) -> Response {
    // A whole id opens its job.
    if let Some(id) = given(&filters.id).filter(|id| id.len() == 32) {
        let job_id = JobId::from(id.to_ascii_lowercase());
        if state.store.get(&job_id).await.is_ok() {
            return axum::response::Redirect::to(&format!("/ui/jobs/{job_id}")).into_response();
        }
    }
    let table = match jobs_table(&state, &filters).await {
        Ok(table) => table,
        Err(err) => return trouble(&err),
    };
    let live = format!("/ui/live/jobs?{}", filters.query(&filters.cursor));
    let body = html! {
        div.title-row {
            h1 { "Jobs" }
            (live_badge())
        }
        form.filters method="get" action="/ui" {
            label { "Job id" input name="id" value=(filters.id) placeholder="id or its start" size="14"; }
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
            label { "Tag" input name="tag" value=(filters.tag); }
            label { "Context" input name="context" value=(filters.context) placeholder="key=value"; }
            label {
                "Created"
                select name="created" {
                    option value="" { "any time" }
                    @for (key, label, _) in CREATED_RANGES {
                        option value=(key) selected[filters.created == key] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        (bulk_actions(&filters))
        div #jobs-live hx-ext="sse" sse-connect=(live) {
            div #jobs-table sse-swap="jobs" { (table) }
        }
    };
    page("Jobs", Section::Jobs, Session::of(&state), body).into_response()
}

/// Retry, cancel and delete for every job the filters show, each behind a
/// confirmation; the notice of what was done goes above the table.
fn bulk_actions(filters: &JobFilters) -> Markup {
    let hidden = [
        ("id", &filters.id),
        ("command", &filters.command),
        ("status", &filters.status),
        ("app", &filters.app),
        ("created", &filters.created),
        ("tag", &filters.tag),
        ("context", &filters.context),
    ];
    let scope = if hidden.iter().all(|(_, v)| v.trim().is_empty()) {
        "every job"
    } else {
        "every job these filters show"
    };
    let button = |action: &str, label: &str, question: String| {
        html! {
            form.inline method="post" action={ "/ui/bulk/" (action) }
                hx-post={ "/ui/bulk/" (action) } hx-target="#bulk-notice" hx-confirm=(question) {
                @for (name, value) in &hidden {
                    input type="hidden" name=(name) value=(value);
                }
                button.secondary #{ "bulk-" (action) } type="submit" { (label) }
            }
        }
    };
    html! {
        div.bulk {
            span.muted { "On " (scope) ":" }
            (button("retry", "Retry failed", format!("Run the failed ones of {scope} again?")))
            (button("cancel", "Cancel", format!("Cancel {scope} that has not ended?")))
            (button("delete", "Delete ended", format!("Delete {scope} that has ended, with its history? This cannot be undone.")))
        }
        div #bulk-notice {}
    }
}

/// Says whether the page's live stream is connected (assets/errand.js).
pub(crate) fn live_badge() -> Markup {
    html! { span #live .live role="status" { "connecting…" } }
}

/// The table of one page of jobs and the link to the next: rendered with
/// the page and again by the live stream whenever a job changes.
pub(crate) async fn jobs_table(
    state: &AppState,
    filters: &JobFilters,
) -> Result<Markup, StoreError> {
    let now = state.store.clock().now();
    let page_of_jobs = state.store.list(filters.params(now)?).await?;
    let next = page_of_jobs
        .next_cursor
        .map(|cursor| format!("/ui?{}", filters.query(&cursor)));
    Ok(html! {
        div.table-wrap {
            table {
                thead { tr {
                    th.wide scope="col" { "Job" } th scope="col" { "Command" } th scope="col" { "Status" }
                    th scope="col" { "Progress" } th.wide scope="col" { "Attempt" }
                    th scope="col" { "Error" }
                    th.wide scope="col" { "Created" } th.wide scope="col" { "Updated" }
                } }
                tbody {
                    @for job in &page_of_jobs.jobs { (row(job, now)) }
                    @if page_of_jobs.jobs.is_empty() {
                        tr { td colspan="8" .muted { "No jobs match." } }
                    }
                }
            }
        }
        @if let Some(next) = next {
            div.pager { a.button href=(next) rel="next" { "Older jobs →" } }
        }
    })
}

fn row(job: &Job, now: Timestamp) -> Markup {
    let href = format!("/ui/jobs/{}", job.job_id);
    html! {
        tr id={ "job-" (job.job_id) } data-status=(job.status.as_str()) {
            // The id keeps keyboard focus on the link when the table is redrawn.
            td.id.wide { a id={ "open-" (job.job_id) } href=(href) { (short_id(&job.job_id)) } }
            td { a.command id={ "command-" (job.job_id) } href=(href) { (job.full_command()) } }
            td { (status_badge(job.status)) }
            td { (progress_bar(job.progress.as_ref().and_then(|p| p.fraction), "progress")) }
            td.wide { (job.attempt) " / " (job.max_attempts) }
            td.error-cell {
                @if let Some(error) = &job.error {
                    span title=(error.message) { (cut(&error.message, 60)) }
                }
            }
            td.wide { (relative(job.created, now)) }
            td.wide { (relative(job.updated, now)) }
        }
    }
}

/// `text` cut to about `chars` characters, with an ellipsis when cut.
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The tail of an id is what differs between jobs made close together.
pub(crate) fn short_id(id: &JobId) -> String {
    let id = id.as_str();
    id.get(id.len().saturating_sub(12)..)
        .unwrap_or(id)
        .to_owned()
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
    (status, page("Error", Section::Jobs, Session::Open, body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_created_range_becomes_a_lower_bound_from_now() {
        let now = Timestamp::from_micros(10_000_000_000);
        let filters = |created: &str| JobFilters {
            created: created.into(),
            ..JobFilters::default()
        };
        assert_eq!(
            filters("1h").params(now).unwrap().created_after,
            Some(now.minus(Duration::from_secs(3600)))
        );
        assert_eq!(
            filters("7d").params(now).unwrap().created_after,
            Some(now.minus(Duration::from_secs(7 * 24 * 3600)))
        );
        assert_eq!(filters("").params(now).unwrap().created_after, None);
        assert_eq!(
            filters("1y").params(now).unwrap().created_after,
            None,
            "unknown: any time"
        );
    }

    #[test]
    fn the_tag_and_context_fields_become_label_filters() {
        let now = Timestamp::from_micros(10_000_000_000);
        let params = JobFilters {
            tag: " podcast ".into(),
            context: "notebook_id = 42".into(),
            ..JobFilters::default()
        }
        .params(now)
        .unwrap();
        assert_eq!(params.tags, ["podcast"]);
        assert_eq!(params.context, [("notebook_id".into(), "42".into())]);
        let without_value = JobFilters {
            context: "notebook_id".into(),
            ..JobFilters::default()
        };
        assert!(without_value.params(now).is_err());
    }
}
