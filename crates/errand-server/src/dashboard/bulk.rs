//! Bulk actions on the jobs the page's filters show: retry the failed
//! ones, cancel the ones not ended, delete the ended ones. Each is behind
//! a confirmation in the page, and goes through the same store calls as
//! one job's (every change still a compare-and-set), a page of jobs at a
//! time, at most `MAX_JOBS` per press.

use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use errand_core::{JobId, JobStatus};
use errand_store::{ListParams, StoreError};
use maud::html;

use super::jobs::{trouble, JobFilters};
use crate::extract::Path;
use crate::state::AppState;

/// Jobs one press acts on at most; the notice says when more are left.
const MAX_JOBS: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    Retry,
    Cancel,
    Delete,
}

impl Bulk {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "retry" => Some(Bulk::Retry),
            "cancel" => Some(Bulk::Cancel),
            "delete" => Some(Bulk::Delete),
            _ => None,
        }
    }

    /// Whether a job in `status` is one this action takes.
    fn takes(self, status: JobStatus) -> bool {
        match self {
            Bulk::Retry => status == JobStatus::Failed,
            Bulk::Cancel => !status.is_terminal(),
            Bulk::Delete => status.is_terminal(),
        }
    }

    fn done(self, count: usize) -> String {
        let jobs = if count == 1 { "job" } else { "jobs" };
        match self {
            Bulk::Retry => format!("Queued {count} failed {jobs} again."),
            Bulk::Cancel => format!("Canceled {count} {jobs} (running ones are told to stop)."),
            Bulk::Delete => format!("Deleted {count} ended {jobs}."),
        }
    }
}

/// `POST /ui/bulk/{action}` with the page's filters as the form.
pub async fn act(
    State(state): State<AppState>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Form(filters): Form<JobFilters>,
) -> Response {
    let Some(action) = Bulk::parse(&action) else {
        return trouble(&StoreError::Invalid(format!(
            "no bulk action {action:?}: retry, cancel or delete"
        )));
    };
    let (count, more) = match apply(&state, action, &filters).await {
        Ok(done) => done,
        Err(err) => return trouble(&err),
    };
    if !headers.contains_key("hx-request") {
        return Redirect::to(&format!("/ui?{}", filters.query(""))).into_response();
    }
    let mut notice = action.done(count);
    if more {
        notice.push_str(&format!(
            " At most {MAX_JOBS} at a time: press again for the rest."
        ));
    }
    html! { p role="status" { (notice) } }.into_response()
}

/// Acts on the jobs the filters select; how many it changed, and whether
/// it stopped at `MAX_JOBS` with more left.
async fn apply(
    state: &AppState,
    action: Bulk,
    filters: &JobFilters,
) -> Result<(usize, bool), StoreError> {
    let mut params: ListParams = filters.params(state.store.clock().now())?;
    params.limit = 500;
    params.cursor = None;
    let (mut seen, mut changed) = (0, 0);
    loop {
        let page = state.store.list(params.clone()).await?;
        let chosen: Vec<JobId> = page
            .jobs
            .into_iter()
            .filter(|job| action.takes(job.status))
            .map(|job| job.job_id)
            .take(MAX_JOBS - seen)
            .collect();
        seen += chosen.len();
        changed += match action {
            Bulk::Delete => state.store.delete_jobs(&chosen).await? as usize,
            Bulk::Retry | Bulk::Cancel => {
                let mut done = 0;
                for job_id in &chosen {
                    let result = match action {
                        Bulk::Retry => state.store.retry(job_id).await,
                        _ => state.store.cancel(job_id).await,
                    };
                    match result {
                        Ok(_) => done += 1,
                        // It moved on since the page was read: not ours to change.
                        Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                        Err(err) => return Err(err),
                    }
                }
                done
            }
        };
        match page.next_cursor {
            Some(_) if seen >= MAX_JOBS => return Ok((changed, true)),
            Some(cursor) => params.cursor = Some(cursor),
            None => return Ok((changed, false)),
        }
    }
}
