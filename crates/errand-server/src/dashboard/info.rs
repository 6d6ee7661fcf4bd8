//! Workers and per-command statistics.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout::{page, relative, Section, Session};
use crate::state::AppState;

/// How often the Workers and Stats pages redraw their panel (htmx polls
/// the page itself and swaps the panel in): they change with every
/// heartbeat and job, which no single event says.
const REFRESH: &str = "every 2s";

pub async fn workers(State(state): State<AppState>) -> Response {
    let workers = match state.store.workers().await {
        Ok(workers) => workers,
        Err(err) => return super::jobs::trouble(&err),
    };
    let now = state.store.clock().now();
    let body = html! {
        h1 { "Workers" }
        div #live-panel hx-get="/ui/workers" hx-trigger=(REFRESH) hx-select="#live-panel" hx-swap="outerHTML" {
        p.muted.refresh { "Updated every 2 s." }
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Worker" } th scope="col" { "Host" } th.wide scope="col" { "Queues" }
                th scope="col" { "Busy" } th scope="col" { "Last heartbeat" } th.wide scope="col" { "Commands" }
            } }
            tbody {
                @for worker in &workers {
                    tr {
                        td.id { (worker.worker_id) }
                        td { (worker.host) " " span.muted { "pid " (worker.pid) } }
                        td.wide { (worker.queues.join(", ")) }
                        td { (worker.running.len()) " / " (worker.slots)
                            @for job in &worker.running {
                                br; a.id href={ "/ui/jobs/" (job) } { (job) }
                            }
                        }
                        td { (relative(worker.last_heartbeat, now)) }
                        td.wide { (worker.commands.join(", ")) }
                    }
                }
                @if workers.is_empty() { tr { td colspan="6" .muted { "No live workers." } } }
            }
        } }
        }
    };
    page("Workers", Section::Workers, Session::of(&state), body).into_response()
}

pub async fn stats(State(state): State<AppState>) -> Response {
    let stats = match state.store.stats().await {
        Ok(stats) => stats,
        Err(err) => return super::jobs::trouble(&err),
    };
    let now = state.store.clock().now();
    let finished = match state
        .store
        .finished_per_minute(super::chart::window_start(now))
        .await
    {
        Ok(finished) => finished,
        Err(err) => return super::jobs::trouble(&err),
    };
    let secs = |v: Option<f64>| v.map_or("–".to_owned(), |s| format!("{s:.2} s"));
    let body = html! {
        h1 { "Stats" }
        div #live-panel hx-get="/ui/stats" hx-trigger=(REFRESH) hx-select="#live-panel" hx-swap="outerHTML" {
        p.muted.refresh { "Updated every 2 s." }
        h2 { "Throughput" }
        (super::chart::throughput(&finished, now))
        h2 { "By command" }
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Command" }
                @for status in errand_core::JobStatus::ALL { th scope="col" { (status.as_str()) } }
                th scope="col" { "Failure rate" } th scope="col" { "p50" } th scope="col" { "p95" }
                th.wide scope="col" { "Oldest new" }
            } }
            tbody {
                @for command in &stats {
                    tr {
                        td { a href={ "/ui?command=" (command.app) "." (command.command) } { (command.app) "." (command.command) } }
                        @for status in errand_core::JobStatus::ALL {
                            td { (command.counts.get(status.as_str()).copied().unwrap_or(0)) }
                        }
                        td { (command.failure_rate.map_or("–".to_owned(), |r| format!("{:.1} %", r * 100.0))) }
                        td { (secs(command.p50_run_secs)) }
                        td { (secs(command.p95_run_secs)) }
                        td.wide { (secs(command.oldest_new_age_secs)) }
                    }
                }
                @if stats.is_empty() { tr { td colspan="10" .muted { "No jobs yet." } } }
            }
        } }
        }
    };
    page("Stats", Section::Stats, Session::of(&state), body).into_response()
}
