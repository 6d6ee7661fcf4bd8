//! The web dashboard, server-rendered with maud, under `/ui`
//! (`/` redirects there; bare paths such as `/workers` are the API's).
//!
//! - `layout`: the page frame and shared pieces.
//! - `jobs`: the jobs table, its filters and paging.
//! - `job`: the job page, Cancel and Retry.
//! - `live`: SSE streams of rendered HTML that keep those two pages live.
//! - `chart`: the throughput chart of the last hour (SVG).
//! - `submit`: a form generated from a command's input JSON Schema.
//! - `info`: workers and stats.
//! - `queues`: queues and schedules, paused and resumed.
//! - `login`: the token, typed once, kept in a cookie.
//! - `assets`: the stylesheet and vendored htmx, compiled in.

mod assets;
mod bulk;
mod chart;
mod follow;
mod info;
mod job;
pub(crate) mod jobs;
mod layout;
mod live;
mod login;
mod queues;
mod submit;

use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;
use job::Action;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(jobs::list))
        .route("/ui/jobs/{job_id}", get(job::show))
        .route(
            "/ui/jobs/{job_id}/cancel",
            post(|state, path, headers| job::act(state, path, headers, Action::Cancel)),
        )
        .route(
            "/ui/jobs/{job_id}/retry",
            post(|state, path, headers| job::act(state, path, headers, Action::Retry)),
        )
        .route("/ui/live/jobs", get(live::jobs))
        .route("/ui/bulk/{action}", post(bulk::act))
        .route("/ui/follow/{job_id}", get(follow::show))
        .route("/ui/live/jobs/{job_id}", get(live::job))
        .route("/ui/submit", get(submit::show).post(submit::submit))
        .route("/ui/workers", get(info::workers))
        .route("/ui/stats", get(info::stats))
        .route("/ui/queues", get(queues::queues))
        .route("/ui/queues/{name}/{action}", post(queues::queue_action))
        .route("/ui/schedules", get(queues::schedules))
        .route(
            "/ui/schedules/{name}/{action}",
            post(queues::schedule_action),
        )
        .route("/ui/assets/{name}", get(assets::asset))
        .route("/ui/login", get(login::show).post(login::submit))
        .route("/ui/logout", post(login::logout))
}
