//! `/metrics` in Prometheus text format.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use errand_core::{error_kind, Change, CommandName};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::state::AppState;

/// The process-wide recorder (metrics allows one per process).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// Makes sure the recorder exists before anything records.
pub fn init() {
    handle();
}

/// Counts requests and their duration by route and status.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("errand_http_requests_total", &labels).increment(1);
    metrics::histogram!("errand_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts job outcomes from the change feed: one subscription per server.
pub async fn count_outcomes(state: AppState) {
    let mut feed = state.store.subscribe();
    loop {
        match feed.recv().await {
            Ok(event) => {
                let command =
                    CommandName::new(event.app.as_str(), event.command.as_str()).to_string();
                let Ok(change) = event.change() else {
                    continue;
                };
                let outcome = match change {
                    Change::Completed { .. } => "completed",
                    Change::RetryScheduled { .. } => "retried",
                    Change::Failed { .. } => "failed",
                    Change::Canceled { .. } => "canceled",
                    Change::Submitted { .. } => "submitted",
                    _ => continue,
                };
                metrics::counter!("errand_jobs_total", "command" => command.clone(), "event" => outcome).increment(1);
                if change
                    .error()
                    .is_some_and(|error| error.kind == error_kind::LEASE_EXPIRED)
                {
                    metrics::counter!("errand_lease_expiries_total", "command" => command)
                        .increment(1);
                }
            }
            Err(RecvError::Lagged(missed)) => {
                metrics::counter!("errand_metrics_events_missed_total").increment(missed);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Prometheus text: request and job counters, and queue gauges read from
/// the store at scrape time.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    for stats in state.store.stats().await? {
        let command = stats.full_name();
        for (status, count) in &stats.counts {
            metrics::gauge!("errand_jobs", "command" => command.clone(), "status" => status.clone())
                .set(*count as f64);
        }
        metrics::gauge!("errand_oldest_new_job_age_seconds", "command" => command.clone())
            .set(stats.oldest_new_age_secs.unwrap_or(0.0));
        for (quantile, value) in [("0.5", stats.p50_run_secs), ("0.95", stats.p95_run_secs)] {
            if let Some(value) = value {
                metrics::gauge!("errand_run_time_seconds", "command" => command.clone(), "quantile" => quantile)
                    .set(value);
            }
        }
        if let Some(rate) = stats.failure_rate {
            metrics::gauge!("errand_failure_rate", "command" => command.clone()).set(rate);
        }
    }
    let workers = state.store.workers().await?;
    metrics::gauge!("errand_workers").set(workers.len() as f64);
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
        .into_response())
}
