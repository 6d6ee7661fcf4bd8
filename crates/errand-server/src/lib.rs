//! `errand serve`: the HTTP API (docs/api.md) over any [`Store`].
//!
//! # Layout
//! - [`app`] (this file): the router: every route under `/api` and again
//!   without the prefix (so Open Notebook's clients work unchanged), with
//!   auth, body limits, metrics, tracing and CORS layered on; [`serve`].
//! - `jobs`: submit, batch, get (long-poll), list, cancel, retry, events.
//! - `sse`: the per-job stream and the global feed.
//! - `info`: commands, stats, workers, registry debug, health, readiness.
//! - `protocol`: the worker protocol (`/api/worker/v1`) for workers in
//!   other processes and languages, and the server's lease reaper.
//! - `queues`: queue depth, pause and resume.
//! - `limits`: commands' cluster-wide concurrency and rate limits.
//! - `retention`: ended jobs deleted once old enough, per status.
//! - `schedules`: periodic jobs over HTTP; `scheduler`: their ticks taken.
//! - `catalog`: published commands with compiled input schemas.
//! - `body`: the JSON body extractor (400, 413, depth limit).
//! - `auth`, `metrics`, `openapi`, `error`: what their names say.
//!
//! [`Store`]: errand_store::Store

mod auth;
mod body;
mod catalog;
mod dashboard;
mod error;
mod extract;
mod feed;
mod info;
mod jobs;
pub mod limits;
pub mod links;
mod listen;
mod metrics;
pub mod openapi;
mod protocol;
mod queues;
mod retention;
mod scheduler;
pub mod schedules;
mod session;
mod sse;
mod state;
mod timings;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post, put};
use axum::{middleware, Router};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use listen::{connections_for, raise_open_file_limit, ConnectionLimits};
pub use retention::Retention;
pub use state::{AppState, ServerConfig};

/// The whole HTTP API as a router; tests call it directly or over a socket.
pub fn app(state: AppState) -> Router {
    metrics::init();
    let api = Router::new()
        .route("/commands/jobs", post(jobs::submit).get(jobs::list_jobs))
        .route("/commands/jobs/batch", post(jobs::submit_batch))
        .route("/commands/jobs/cancel", post(jobs::cancel_many))
        .route(
            "/commands/jobs/{job_id}",
            get(jobs::get_job).delete(jobs::cancel_job),
        )
        .route("/commands/jobs/{job_id}/retry", post(jobs::retry_job))
        .route("/commands/jobs/{job_id}/events", get(jobs::job_events))
        .route("/commands/jobs/{job_id}/links", post(links::create_link))
        .route("/commands/jobs/{job_id}/stream", get(sse::job_stream))
        .route("/commands", get(info::commands))
        .route("/commands/stats", get(info::stats))
        .route("/commands/registry/debug", get(info::registry_debug))
        .route("/workers", get(info::workers))
        .route("/queues", get(queues::list_queues))
        .route("/queues/{queue}/pause", post(queues::pause))
        .route("/queues/{queue}/resume", post(queues::resume))
        .route("/limits", get(limits::list_limits))
        .route("/limits/{command}", put(limits::put).delete(limits::delete))
        .route("/schedules", get(schedules::list_schedules))
        .route(
            "/schedules/{name}",
            get(schedules::get_schedule)
                .put(schedules::put)
                .delete(schedules::delete),
        )
        .route("/schedules/{name}/pause", post(schedules::pause))
        .route("/schedules/{name}/resume", post(schedules::resume))
        .route("/events", get(sse::global_feed))
        .route("/health", get(info::health))
        .route("/ready", get(info::ready));
    // The worker protocol is new: only under /api, versioned in its path.
    let worker = Router::new()
        .route("/register", post(protocol::register))
        .route("/claim", post(protocol::claim))
        .route("/heartbeat", post(protocol::heartbeat))
        .route("/updates", post(protocol::updates))
        .route("/finish", post(protocol::finish))
        .route("/deregister", post(protocol::deregister));
    let mut router = Router::new()
        .nest("/api", api.clone())
        .merge(api)
        .nest("/api/worker/v1", worker)
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(metrics::render))
        .merge(dashboard::routes())
        .fallback(|uri: Uri| async move { ApiError::RouteNotFound(uri.path().to_owned()) })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("{method} {}", uri.path()))
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        // A body trickled in slower than this holds a connection for
        // nothing: the request fails instead.
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config.body_timeout,
        ))
        .layer(middleware::from_fn(metrics::track_requests))
        .layer(TraceLayer::new_for_http().make_span_with(request_span));
    if !state.config.cors_origins.is_empty() {
        router = router.layer(cors(&state.config.cors_origins));
    }
    router.with_state(state)
}

/// A span per request, carrying the job id when the path names one, so a
/// job's log lines can be found by its id.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let path = request.uri().path();
    let job_id = path
        .split_once("/commands/jobs/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .filter(|id| !id.is_empty() && *id != "batch");
    tracing::info_span!("request", method = %request.method(), path, job_id = job_id.unwrap_or_default())
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods(Any)
        .allow_headers(Any)
}

/// Serves the API on `listener` until `state.shutdown` fires, then stops
/// accepting, ends SSE streams and long polls, and finishes the responses
/// in flight.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    let counting = tokio::spawn(metrics::count_outcomes(state.clone()));
    let reaping = tokio::spawn(protocol::reap_expired_leases(state.clone()));
    let pruning = tokio::spawn(retention::prune_old_jobs(state.clone()));
    let scheduling = tokio::spawn(scheduler::take_due_ticks(state.clone()));
    let delivering = tokio::spawn(webhooks::deliver_webhooks(
        state.clone(),
        webhooks::sender_id(),
    ));
    let shutdown = state.shutdown.clone();
    let limits = state.config.connections.clone();
    let result = listen::serve_connections(listener, app(state), limits, shutdown).await;
    counting.abort();
    reaping.abort();
    pruning.abort();
    scheduling.abort();
    delivering.abort();
    result
}
