//! The page a per-job link opens: one job's status, progress, log lines
//! and outcome, live, read-only. It needs no login (the link is the
//! credential), so it shows nothing of the dashboard: no navigation, no
//! actions, no other job. Its script follows the job's public SSE stream
//! with the same link.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use errand_core::JobId;
use maud::{html, DOCTYPE};

use super::layout::{progress_bar, status_badge};
use crate::extract::Path;
use crate::state::AppState;

pub async fn show(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let job = match state.store.get(&JobId::from(job_id)).await {
        Ok(job) => job,
        Err(err) => {
            let status = match err {
                errand_store::StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (status, err.to_string()).into_response();
        }
    };
    let link = crate::links::link_in(query.as_deref()).unwrap_or_default();
    let stream = format!(
        "/api/commands/jobs/{}/stream?{}",
        job.job_id,
        serde_urlencoded::to_string([(crate::links::LINK_PARAM, link.as_str())])
            .expect("strings encode")
    );
    let fraction = job.progress.as_ref().and_then(|p| p.fraction);
    let message = job
        .progress
        .as_ref()
        .and_then(|p| p.message.clone())
        .unwrap_or_default();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (job.full_command()) " · errand" }
                link rel="stylesheet" href="/ui/assets/errand.css";
                script src="/ui/assets/follow.js" defer {}
            }
            body {
                main #follow data-stream=(stream) {
                    h1 { (job.full_command()) " " span.muted { (job.job_id) } }
                    dl.fields {
                        dt { "Status" } dd #status { (status_badge(job.status)) }
                        dt { "Attempt" } dd #attempt { (job.attempt) " of " (job.max_attempts) }
                    }
                    div #progress { (progress_bar(fraction, &message)) }
                    h2 { "Log" }
                    ol #log .events {}
                    h2 { "Outcome" }
                    pre #outcome {
                        @if let Some(result) = &job.result {
                            (serde_json::to_string_pretty(result).unwrap_or_default())
                        } @else if let Some(error) = &job.error {
                            (error.message)
                        }
                    }
                    p.muted #connection { "connecting…" }
                }
            }
        }
    }
    .into_response()
}
