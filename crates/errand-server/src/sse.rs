//! Server-Sent Events: a job's stream and the global feed.
//!
//! Both come from the store's change feed, one in-memory broadcast per
//! server fanned out to every client: no client polls the database. A
//! client resuming with `Last-Event-ID`, or one that fell behind the
//! broadcast, catches up from the stored event log, so it sees every event
//! exactly once.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{ConnectInfo, RawQuery, State};

use crate::extract::Path;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use errand_api::{decode_query, LabelFilters};
use errand_core::{CommandName, Job, JobEvent, JobId, JobStatus, Label};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::state::AppState;

pub(crate) type EventStream =
    Sse<axum::response::sse::KeepAliveStream<ReceiverStream<Result<Event, Infallible>>>>;
pub(crate) type Sender = mpsc::Sender<Result<Event, Infallible>>;

/// Events read from the store per catch-up query.
const PAGE: usize = 500;

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an integer".into())),
    }
}

/// Takes one of the client's stream slots, or answers 429.
pub(crate) fn slot(
    state: &AppState,
    client: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
) -> Result<Option<crate::state::StreamSlot>, ApiError> {
    // Without connection info (a router called directly, in tests) there
    // is no client to count.
    let Some(Extension(ConnectInfo(address))) = client else {
        return Ok(None);
    };
    let limit = state.config.max_streams_per_client;
    state
        .streams
        .open(address.ip(), limit)
        .map(Some)
        .ok_or_else(|| {
            ApiError::TooManyStreams(format!(
                "{} has {limit} event streams open already; close one first",
                address.ip()
            ))
        })
}

/// Answers with an event stream that `pump` feeds (it gets the sending
/// end, `capacity` events deep) from a task of its own; the client's
/// stream slot is given back when the pump ends.
pub(crate) fn spawn_stream<P>(
    state: &AppState,
    slot: Option<crate::state::StreamSlot>,
    capacity: usize,
    pump: impl FnOnce(Sender) -> P,
) -> EventStream
where
    P: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, receiver) = mpsc::channel(capacity);
    let pumping = pump(tx);
    tokio::spawn(async move {
        pumping.await;
        drop(slot);
    });
    Sse::new(ReceiverStream::new(receiver)).keep_alive(
        KeepAlive::new()
            .interval(state.config.sse_keepalive)
            .text("heartbeat"),
    )
}

fn job_event(event: &JobEvent, id: i64) -> Event {
    Event::default()
        .event(event.kind.as_str())
        .id(id.to_string())
        .json_data(event)
        .expect("events serialize")
}

/// False once the client has gone.
pub(crate) async fn send(tx: &Sender, event: Event) -> bool {
    tx.send(Ok(event)).await.is_ok()
}

/// Live events of one job. The first event is `status` with the whole job
/// (as `GET /api/commands/jobs/{job_id}` returns it); after the job's
/// terminal event comes `end`, and the stream closes. A reconnect after
/// the end (`Last-Event-ID` at or past the job's last event) answers 204,
/// which tells a browser's `EventSource` to stop reconnecting.
#[utoipa::path(get, path = "/api/commands/jobs/{job_id}/stream", tag = "streams",
    params(("job_id" = String, Path), ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event sequence number"), crate::links::LinkParam),
    responses(
        (status = 200, description = "text/event-stream: status, progress, log, result and failure events, then end; `id:` is the job's event sequence number", content_type = "text/event-stream"),
        (status = 204, description = "The job has ended and the client has seen its last event: stop reconnecting"),
        (status = 400, body = errand_api::ErrorBody),
        (status = 404, body = errand_api::ErrorBody),
        (status = 429, body = errand_api::ErrorBody)))]
pub async fn job_stream(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
    client: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let job_id = JobId::from(job_id);
    let resume_after = last_event_id(&headers)?;
    // Subscribe before reading, so nothing falls in between.
    let feed = state.store.subscribe();
    let job = state.store.get(&job_id).await?;
    if job.status.is_terminal() && resume_after.is_some_and(|after| after >= job.event_seq) {
        return Ok(axum::http::StatusCode::NO_CONTENT.into_response());
    }
    let slot = slot(&state, client)?;
    let pump_state = state.clone();
    Ok(spawn_stream(&state, slot, 64, |tx| {
        pump_job(pump_state, job, resume_after, feed, tx)
    })
    .into_response())
}

/// The last message of a job's stream: the job has ended.
fn end_event(status: JobStatus) -> Event {
    Event::default()
        .event("end")
        .json_data(serde_json::json!({ "status": status }))
        .expect("a status serializes")
}

async fn pump_job(
    state: AppState,
    job: Job,
    resume_after: Option<i64>,
    mut feed: errand_store::ChangeFeed,
    tx: Sender,
) {
    let retry = state.config.sse_retry;
    let job_id = job.job_id.clone();
    let mut last_seq = match resume_after {
        None => {
            let snapshot = Event::default()
                .event("status")
                .id(job.event_seq.to_string())
                .retry(retry)
                .json_data(&job)
                .expect("jobs serialize");
            if !send(&tx, snapshot).await {
                return;
            }
            if job.status.is_terminal() {
                send(&tx, end_event(job.status)).await;
                return;
            }
            job.event_seq
        }
        Some(after) => {
            if !send(&tx, Event::default().retry(retry).comment("resuming")).await {
                return;
            }
            match catch_up_job(&state, &job_id, after, &tx).await {
                Some((seq, None)) => seq,
                Some((_, Some(ended))) => {
                    send(&tx, end_event(ended)).await;
                    return;
                }
                None => return,
            }
        }
    };
    loop {
        let received = tokio::select! {
            () = state.shutdown.cancelled() => return,
            // The client went away: free its slot now, not at the next event.
            () = tx.closed() => return,
            received = feed.recv() => received,
        };
        match received {
            Ok(event) if event.job_id == job_id && event.seq > last_seq => {
                if event.seq > last_seq + 1 {
                    // A gap (another process wrote in between): fill it.
                    match catch_up_job(&state, &job_id, last_seq, &tx).await {
                        Some((seq, None)) => last_seq = seq,
                        Some((_, Some(ended))) => {
                            send(&tx, end_event(ended)).await;
                            return;
                        }
                        None => return,
                    }
                    continue;
                }
                if !send(&tx, job_event(&event, event.seq)).await {
                    return;
                }
                if event.is_terminal() {
                    send(&tx, end_event(event.status)).await;
                    return;
                }
                last_seq = event.seq;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => match catch_up_job(&state, &job_id, last_seq, &tx).await {
                Some((seq, None)) => last_seq = seq,
                Some((_, Some(ended))) => {
                    send(&tx, end_event(ended)).await;
                    return;
                }
                None => return,
            },
            Err(RecvError::Closed) => return,
        }
    }
}

/// Sends the job's stored events after `after`. Returns the last sequence
/// number sent and, once the job has ended, its final status; `None` if
/// the client left or the store failed.
async fn catch_up_job(
    state: &AppState,
    job_id: &JobId,
    after: i64,
    tx: &Sender,
) -> Option<(i64, Option<JobStatus>)> {
    let mut last = after;
    loop {
        let events = match state.store.events(job_id, last, PAGE).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(%job_id, error = %err, "SSE catch-up failed");
                return None;
            }
        };
        for event in &events {
            if !send(tx, job_event(event, event.seq)).await {
                return None;
            }
            last = event.seq;
            if event.is_terminal() {
                return Some((last, Some(event.status)));
            }
        }
        if events.len() < PAGE {
            break;
        }
    }
    // Resumed after the job's last event: it may have ended already.
    match state.store.get(job_id).await {
        Ok(job) => Some((
            last,
            (job.status.is_terminal() && last >= job.event_seq).then_some(job.status),
        )),
        Err(_) => None,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
// Said outright: the route reads the raw query, so nothing tells utoipa.
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// `name` or `app.name`.
    pub command: Option<String>,
    /// Only events leaving jobs in this status.
    pub status: Option<String>,
    pub app: Option<String>,
}

/// A feed's tag and context filters. A job's labels never change, so
/// whether a job matches is read once (one read of the job, at its first
/// event the stream sees) and remembered.
pub(crate) struct LabelMatch {
    wanted: Vec<Label>,
    known: std::sync::Mutex<std::collections::HashMap<JobId, bool>>,
}

/// The most jobs a stream remembers; past it, it starts over.
const KNOWN_JOBS: usize = 10_000;

impl LabelMatch {
    pub(crate) fn new(filters: LabelFilters) -> Result<Self, ApiError> {
        let mut wanted = Vec::new();
        for tag in filters.tags {
            errand_core::labels::validate_tag(&tag).map_err(ApiError::BadRequest)?;
            wanted.push(Label::tag(tag));
        }
        for (key, value) in filters.context {
            errand_core::labels::validate_context_filter(&key, &value)
                .map_err(ApiError::BadRequest)?;
            wanted.push(Label::context(&key, value));
        }
        Ok(Self {
            wanted,
            known: Default::default(),
        })
    }

    pub(crate) async fn matches(
        &self,
        store: &Arc<dyn errand_store::Store>,
        event: &JobEvent,
    ) -> bool {
        if self.wanted.is_empty() {
            return true;
        }
        if let Some(&known) = self
            .known
            .lock()
            .expect("never poisoned")
            .get(&event.job_id)
        {
            return known;
        }
        let matches = match store.get(&event.job_id).await {
            Ok(job) => {
                let labels = errand_core::job_labels(&job.tags, job.context.as_ref());
                self.wanted.iter().all(|w| labels.contains(w))
            }
            // Gone since (pruned): nothing to follow.
            Err(errand_store::StoreError::NotFound(_)) => false,
            Err(err) => {
                tracing::warn!(job_id = %event.job_id, error = %err, "SSE feed: cannot read a job's labels; its event is left out");
                return false;
            }
        };
        let mut known = self.known.lock().expect("never poisoned");
        if known.len() >= KNOWN_JOBS {
            known.clear();
        }
        known.insert(event.job_id.clone(), matches);
        matches
    }
}

pub(crate) struct FeedFilter {
    app: Option<String>,
    command: Option<String>,
    status: Option<JobStatus>,
}

impl FeedFilter {
    pub(crate) fn new(query: FeedQuery) -> Result<Self, ApiError> {
        let status = query
            .status
            .map(|text| {
                JobStatus::parse(&text).ok_or_else(|| {
                    ApiError::BadRequest(format!("status must be one of new, running, completed, failed, canceled; got {text:?}"))
                })
            })
            .transpose()?;
        // `app.name` with no `app` names both; a bare name is a name.
        let (app, command) = match (query.app, query.command) {
            (None, Some(full)) => match CommandName::parse(&full) {
                Ok(named) => {
                    let (app, name) = named.into_parts();
                    (Some(app), Some(name))
                }
                Err(_) => (None, Some(full)),
            },
            other => other,
        };
        Ok(Self {
            app,
            command,
            status,
        })
    }

    pub(crate) fn accepts(&self, event: &JobEvent) -> bool {
        self.app.as_ref().is_none_or(|app| *app == event.app)
            && self.command.as_ref().is_none_or(|c| *c == event.command)
            && self.status.is_none_or(|s| s == event.status)
    }
}

/// Every job's events, for dashboards; `id:` is the store-wide event id.
///
/// Besides the parameters below, `context.KEY=VALUE` (any number) keeps the
/// events of the jobs with those context values, as the job list filters.
#[utoipa::path(get, path = "/api/events", tag = "streams",
    params(FeedQuery, crate::openapi::TagParam, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "text/event-stream of job events", content_type = "text/event-stream"),
        (status = 400, body = errand_api::ErrorBody)))]
pub async fn global_feed(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    client: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Result<EventStream, ApiError> {
    let (rest, labels) =
        LabelFilters::split(raw.as_deref().unwrap_or("")).map_err(ApiError::BadRequest)?;
    let query: FeedQuery = decode_query(&rest).map_err(ApiError::BadRequest)?;
    let filter = FeedFilter::new(query)?;
    let labels = LabelMatch::new(labels)?;
    let slot = slot(&state, client)?;
    let resume_after = last_event_id(&headers)?;
    // Joined before any catch-up read, so nothing falls between the two.
    let ordered = state.ordered.subscribe(&state.store, &state.shutdown);
    let pump_state = state.clone();
    let filter = Arc::new((filter, labels));
    Ok(spawn_stream(&state, slot, 256, |tx| {
        pump_feed(pump_state, filter, resume_after, ordered, tx)
    }))
}

/// The feed's filters: by command and status, then by labels.
type Filters = (FeedFilter, LabelMatch);

async fn accepts(state: &AppState, filters: &Filters, event: &JobEvent) -> bool {
    filters.0.accepts(event) && filters.1.matches(&state.store, event).await
}

async fn pump_feed(
    state: AppState,
    filter: Arc<Filters>,
    resume_after: Option<i64>,
    mut ordered: crate::feed::OrderedEvents,
    tx: Sender,
) {
    if !send(
        &tx,
        Event::default()
            .retry(state.config.sse_retry)
            .comment("connected"),
    )
    .await
    {
        return;
    }
    let mut last_id = match resume_after {
        Some(after) => match catch_up_feed(&state, &filter, after, &tx).await {
            Some(id) => Some(id),
            None => return,
        },
        None => None,
    };
    // After reading the store, the broadcast may already be past where the
    // read stopped (it started, or lagged, meanwhile): read the store once
    // more before the next broadcast event, so no id in between is skipped.
    let mut read_since = resume_after.is_some();
    loop {
        let received = tokio::select! {
            () = state.shutdown.cancelled() => return,
            // The client went away: free its slot now, not at the next event.
            () = tx.closed() => return,
            received = ordered.recv() => received,
        };
        match received {
            Ok(event) => {
                if let (true, Some(last)) = (read_since, last_id) {
                    read_since = false;
                    if event.id > last {
                        match catch_up_feed(&state, &filter, last, &tx).await {
                            Some(id) => last_id = Some(id),
                            None => return,
                        }
                    }
                }
                if last_id.is_some_and(|last| event.id <= last) {
                    continue;
                }
                last_id = Some(event.id);
                if accepts(&state, &filter, &event).await
                    && !send(&tx, job_event(&event, event.id)).await
                {
                    return;
                }
            }
            Err(RecvError::Lagged(_)) => {
                let Some(after) = last_id else { continue };
                match catch_up_feed(&state, &filter, after, &tx).await {
                    Some(id) => last_id = Some(id),
                    None => return,
                }
                read_since = true;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn catch_up_feed(state: &AppState, filter: &Filters, after: i64, tx: &Sender) -> Option<i64> {
    let mut last = after;
    loop {
        let events = match state.store.feed(last, PAGE).await {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!(error = %err, "SSE feed catch-up failed");
                return None;
            }
        };
        for event in &events {
            last = event.id;
            if accepts(state, filter, event).await && !send(tx, job_event(event, event.id)).await {
                return None;
            }
        }
        if events.len() < PAGE {
            return Some(last);
        }
    }
}
