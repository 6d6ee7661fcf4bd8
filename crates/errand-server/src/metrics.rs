//! `/metrics` in Prometheus text format.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use errand_core::{error_kind, Change, CommandName};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::state::AppState;
use crate::timings::Timing;

/// The process-wide recorder (metrics allows one per process).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), JOB_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(RUN_TIME.into()), JOB_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)
            })
            .expect("bucket lists are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe();
        handle
    })
}

const QUEUE_WAIT: &str = "errand_queue_wait_seconds";
const RUN_TIME: &str = "errand_job_run_seconds";
const HTTP_DURATION: &str = "errand_http_request_duration_seconds";
/// From a few milliseconds (a hot queue) to an hour (a backlog, a long
/// transcription).
const JOB_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric errand exports, with its `# HELP` text.
const METRICS: &[(&str, Kind, &str)] = &[
    ("errand_http_requests_total", Kind::Counter, "HTTP requests by method, route and status."),
    (HTTP_DURATION, Kind::Histogram, "HTTP request durations in seconds by method, route and status (SSE streams last as long as they are open)."),
    ("errand_jobs_total", Kind::Counter, "Job events seen on the change feed, by command and event: submitted, completed, failed, retried, canceled."),
    ("errand_lease_expiries_total", Kind::Counter, "Attempts abandoned by a worker that stopped renewing its lease, by command."),
    (QUEUE_WAIT, Kind::Histogram, "Seconds jobs waited from due (run_at, a retry's time) to claimed, by command."),
    (RUN_TIME, Kind::Histogram, "Seconds attempts ran from claim to end, by command and outcome (completed, failed, retried, canceled)."),
    ("errand_webhook_deliveries_total", Kind::Counter, "Webhook delivery attempts this server made, by state: delivered, retrying, failed."),
    ("errand_metrics_events_missed_total", Kind::Counter, "Change-feed events the metrics missed because they fell behind."),
    ("errand_metrics_untracked_total", Kind::Counter, "Jobs whose wait or run time was not measured: more were waiting or running than the metrics track."),
    ("errand_jobs", Kind::Gauge, "Jobs in the store by command and status, read at scrape time."),
    ("errand_oldest_new_job_age_seconds", Kind::Gauge, "Age in seconds of the oldest job waiting to run, by command."),
    ("errand_run_time_seconds", Kind::Gauge, "Run time quantiles (0.5, 0.95) in seconds over each command's recent jobs, from the store."),
    ("errand_failure_rate", Kind::Gauge, "Share of each command's recently ended jobs that failed."),
    ("errand_workers", Kind::Gauge, "Live workers registered in the store."),
];

/// The `# HELP` line of every metric errand exports.
fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
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
    metrics::histogram!(HTTP_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Counts job outcomes from the change feed: one subscription per server.
pub async fn count_outcomes(state: AppState) {
    let mut feed = state.store.subscribe();
    let mut timings = crate::timings::Timings::default();
    loop {
        match feed.recv().await {
            Ok(event) => {
                let command =
                    CommandName::new(event.app.as_str(), event.command.as_str()).to_string();
                let Ok(change) = event.change() else {
                    continue;
                };
                let untracked = timings.untracked;
                match timings.observe(&event, &change) {
                    Some(Timing::Waited(wait)) => {
                        metrics::histogram!(QUEUE_WAIT, "command" => command.clone())
                            .record(wait.as_secs_f64());
                    }
                    Some(Timing::Ran(run, outcome)) => {
                        metrics::histogram!(RUN_TIME, "command" => command.clone(), "outcome" => outcome)
                            .record(run.as_secs_f64());
                    }
                    None => {}
                }
                if timings.untracked > untracked {
                    metrics::counter!("errand_metrics_untracked_total")
                        .increment(timings.untracked - untracked);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The Grafana dashboard in docs/ reads only metrics errand exports.
    #[test]
    fn the_grafana_dashboard_reads_only_exported_metrics() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../docs/grafana/errand.json")).unwrap();
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(panels.len() >= 10);
        for panel in panels {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let names: Vec<&str> = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("errand_"))
                    .collect();
                assert!(!names.is_empty(), "{expr}");
                for name in names {
                    let base = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .filter(|base| {
                            METRICS
                                .iter()
                                .any(|(n, k, _)| n == base && *k == Kind::Histogram)
                        })
                        .unwrap_or(name);
                    assert!(
                        METRICS.iter().any(|(n, _, _)| *n == base),
                        "{} reads {name}, which errand does not export",
                        panel["title"]
                    );
                }
            }
        }
    }
}
