//! Live pages: SSE streams of rendered HTML that htmx's SSE extension swaps
//! into the jobs table and the job page.
//!
//! Every message is a snapshot rendered from the store (the whole table, or
//! the job's state and log), not a diff. A client that reconnects, lags or
//! misses a message is right again at the next one, and however many events
//! arrive, a stream renders at most a few times a second.

use std::time::Duration;

use axum::extract::{ConnectInfo, State};

use crate::extract::{Path, Query};
use axum::response::sse::Event;
use axum::Extension;
use errand_core::JobId;
use errand_store::StoreError;
use maud::Markup;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::job::{event_log, job_state, log_items};
use super::jobs::{jobs_table, JobFilters};
use crate::error::ApiError;
use crate::feed::OrderedEvents;
use crate::sse::{send, slot, spawn_stream, EventStream, FeedFilter, FeedQuery, Sender};
use crate::state::AppState;

/// How long a burst of changes gathers before the jobs table is redrawn.
const TABLE_PAUSE: Duration = Duration::from_millis(250);
/// The same for one job's page: progress moves more smoothly.
const JOB_PAUSE: Duration = Duration::from_millis(200);

type Client = Option<Extension<ConnectInfo<std::net::SocketAddr>>>;

fn html_event(name: &str, markup: Markup) -> Event {
    // An SSE data line cannot hold a carriage return; HTML does not need one.
    Event::default()
        .event(name)
        .data(markup.into_string().replace('\r', ""))
}

/// The jobs table with the page's filters, redrawn when a job it could
/// show changes.
pub async fn jobs(
    State(state): State<AppState>,
    Query(filters): Query<JobFilters>,
    client: Client,
) -> Result<EventStream, ApiError> {
    let given = |text: &str| Some(text.trim().to_owned()).filter(|t| !t.is_empty());
    // Status is left out: a job leaving the filtered status leaves the table.
    let concerns = FeedFilter::new(FeedQuery {
        command: given(&filters.command),
        status: None,
        app: given(&filters.app),
    })?;
    let slot = slot(&state, client)?;
    let ordered = state.ordered.subscribe(&state.store, &state.shutdown);
    let follow_state = state.clone();
    Ok(spawn_stream(&state, slot, 4, |tx| {
        follow_jobs(follow_state, filters, concerns, ordered, tx)
    }))
}

async fn follow_jobs(
    state: AppState,
    filters: JobFilters,
    concerns: FeedFilter,
    mut ordered: OrderedEvents,
    tx: Sender,
) {
    loop {
        // The first draw covers what changed between the page and the stream.
        match jobs_table(&state, &filters).await {
            Ok(table) => {
                if !send(&tx, html_event("jobs", table)).await {
                    return;
                }
            }
            Err(err) => tracing::warn!(error = %err, "the live jobs table cannot read the store"),
        }
        if !next_change(&state, &mut ordered, &tx, TABLE_PAUSE, |e| {
            concerns.accepts(e)
        })
        .await
        {
            return;
        }
    }
}

/// One job's state and event log, redrawn when it changes; ends (with an
/// `end` event that closes the page's connection) once the job has.
pub async fn job(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    client: Client,
) -> Result<EventStream, ApiError> {
    let job_id = JobId::from(job_id);
    let slot = slot(&state, client)?;
    let ordered = state.ordered.subscribe(&state.store, &state.shutdown);
    state.store.get(&job_id).await?;
    let follow_state = state.clone();
    Ok(spawn_stream(&state, slot, 4, |tx| {
        follow_job(follow_state, job_id, ordered, tx)
    }))
}

async fn follow_job(state: AppState, job_id: JobId, mut ordered: OrderedEvents, tx: Sender) {
    loop {
        match draw_job(&state, &job_id, &tx).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(StoreError::NotFound(_)) => {
                let _ = send(&tx, Event::default().event("end").data("pruned")).await;
                return;
            }
            Err(err) => {
                tracing::warn!(%job_id, error = %err, "the live job page cannot read the store")
            }
        }
        if !next_change(&state, &mut ordered, &tx, JOB_PAUSE, |e| e.job_id == job_id).await {
            return;
        }
    }
}

/// Sends the job's state and log; false once there is nothing more to
/// follow (the job ended, or the client left).
async fn draw_job(state: &AppState, job_id: &JobId, tx: &Sender) -> Result<bool, StoreError> {
    let job = state.store.get(job_id).await?;
    let log = event_log(state, &job).await?;
    let now = state.store.clock().now();
    let sent = send(tx, html_event("state", job_state(&job, &log, now))).await
        && send(tx, html_event("log", log_items(&log))).await;
    if sent && job.status.is_terminal() {
        let _ = send(tx, Event::default().event("end").data(job.status.as_str())).await;
        return Ok(false);
    }
    Ok(sent)
}

/// Waits for an event that `concerns` the page, then lets the burst it
/// belongs to gather for `pause` and drops what gathered: the next draw
/// reads the store and shows it all. False if the stream should end.
async fn next_change(
    state: &AppState,
    ordered: &mut OrderedEvents,
    tx: &Sender,
    pause: Duration,
    concerns: impl Fn(&errand_core::JobEvent) -> bool,
) -> bool {
    loop {
        let received = tokio::select! {
            () = state.shutdown.cancelled() => return false,
            () = tx.closed() => return false,
            received = ordered.recv() => received,
        };
        match received {
            Ok(event) if concerns(&event) => break,
            Ok(_) => {}
            // Something was missed: it may concern the page.
            Err(RecvError::Lagged(_)) => break,
            Err(RecvError::Closed) => return false,
        }
    }
    tokio::select! {
        () = state.shutdown.cancelled() => return false,
        () = tx.closed() => return false,
        () = tokio::time::sleep(pause) => {}
    }
    loop {
        match ordered.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Closed) => return false,
        }
    }
}
