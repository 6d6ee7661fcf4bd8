//! The cross-process change feed: one LISTEN connection per process.
//!
//! A notification carries the events one transaction of another process
//! wrote (as JSON, when they fit in a notification), or else names their id
//! range for the listener to read; the listener publishes the ones it has
//! not published yet. It reconnects with back-off, and warns when
//! its own test notifications stop arriving (e.g. behind a pooler in
//! transaction mode, where LISTEN does not work): workers then rely on
//! their poll.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use errand_core::JobEvent;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::read;

const CHANNEL: &str = "errand_events";
/// How often the listener checks that notifications still arrive.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Remote event ids remembered to drop duplicates.
const REMEMBER: usize = 100_000;

pub(crate) async fn run(
    config: tokio_postgres::Config,
    pool: Pool,
    feed: broadcast::Sender<Arc<JobEvent>>,
    origin: String,
    seen: Arc<Mutex<Seen>>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&config, &pool, &feed, &origin, &seen, &listening).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "change-feed listener lost its connection")
            }
        }
        listening.store(false, Ordering::SeqCst);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How often the fallback reads new events while notifications fail.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// The fallback: while `listening` is false (no LISTEN connection, or its
/// test notifications stopped arriving), reads the events written since
/// the newest one published and publishes those not seen yet, once a
/// second: one query a second per process, not per client.
pub(crate) async fn poll(
    pool: Pool,
    feed: broadcast::Sender<Arc<JobEvent>>,
    seen: Arc<Mutex<Seen>>,
    listening: Arc<AtomicBool>,
) {
    let mut ticks = tokio::time::interval(POLL_EVERY);
    loop {
        ticks.tick().await;
        if listening.load(Ordering::SeqCst) {
            continue;
        }
        let after = seen.lock().expect("never poisoned").newest();
        let events = match pool.get().await {
            Ok(client) => read::feed(&client, after, 1000).await,
            Err(err) => Err(crate::rows::pool(err)),
        };
        match events {
            Ok(events) => publish(events, &feed, &seen),
            Err(err) => tracing::debug!(error = %err, "polling for events failed"),
        }
    }
}

/// Event ids already published on this process's feed (its own and other
/// processes' recent ones), so none is published twice.
#[derive(Default)]
pub(crate) struct Seen {
    ids: HashSet<i64>,
    order: VecDeque<i64>,
    /// The highest id published: where the polling fallback reads from.
    newest: i64,
}

impl Seen {
    /// True the first time `id` is offered.
    pub(crate) fn newest(&self) -> i64 {
        self.newest
    }

    /// Starts the polling fallback's cursor at the store's newest event,
    /// so it never replays history.
    pub(crate) fn start_at(&mut self, id: i64) {
        self.newest = self.newest.max(id);
    }

    pub(crate) fn first(&mut self, id: i64) -> bool {
        self.newest = self.newest.max(id);
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBER {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    pool: &Pool,
    feed: &broadcast::Sender<Arc<JobEvent>>,
    origin: &str,
    seen: &Mutex<Seen>,
    listening: &AtomicBool,
) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (tx, mut notifications) = mpsc::unbounded_channel();
    // The connection must be polled for LISTEN to complete and for
    // notifications to arrive: a task drives it and forwards them.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!("listening for errand events");
        listening.store(true, Ordering::SeqCst);
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut pings_sent = 0u64;
        let mut pings_seen = 0u64;
        loop {
            tokio::select! {
                payload = notifications.recv() => {
                    let Some(payload) = payload else {
                        return Err("the listening connection closed".to_owned());
                    };
                    if payload.starts_with("ping:") {
                        if payload == format!("ping:{origin}:{pings_sent}") {
                            pings_seen = pings_sent;
                            listening.store(true, Ordering::SeqCst);
                        }
                        continue;
                    }
                    relay(&payload, pool, feed, origin, seen).await;
                }
                _ = ping.tick() => {
                    if pings_sent > pings_seen + 1 {
                        listening.store(false, Ordering::SeqCst);
                        tracing::warn!("PostgreSQL notifications are not arriving (a pooler in transaction mode?): \
                            new jobs are found by polling only, and SSE streams see other hosts' events late");
                    }
                    pings_sent += 1;
                    if let Ok(conn) = pool.get().await {
                        let _ = conn
                            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("ping:{origin}:{pings_sent}")])
                            .await;
                    }
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// NOTIFY payloads must stay under 8,000 bytes.
const MAX_INLINE: usize = 7_500;

/// The notification for `events`: `origin|[events as JSON]` when it fits,
/// else `origin:min:max` for the listeners to read.
pub(crate) fn payload(origin: &str, events: &[JobEvent]) -> Option<String> {
    let min = events.iter().map(|e| e.id).min()?;
    let max = events.iter().map(|e| e.id).max()?;
    let inline = serde_json::to_string(events).expect("events serialize");
    if inline.len() + origin.len() < MAX_INLINE {
        Some(format!("{origin}|{inline}"))
    } else {
        Some(format!("{origin}:{min}:{max}"))
    }
}

/// Publishes the events another process announced.
async fn relay(
    payload: &str,
    pool: &Pool,
    feed: &broadcast::Sender<Arc<JobEvent>>,
    origin: &str,
    seen: &Mutex<Seen>,
) {
    if let Some((from_origin, inline)) = payload.split_once('|') {
        if from_origin == origin {
            return;
        }
        match serde_json::from_str::<Vec<JobEvent>>(inline) {
            Ok(events) => publish(events, feed, seen),
            Err(err) => tracing::warn!(error = %err, "unreadable notification"),
        }
        return;
    }
    let mut parts = payload.split(':');
    let (Some(from_origin), Some(min), Some(max)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if from_origin == origin {
        return; // published at commit already
    }
    let (Ok(min), Ok(max)) = (min.parse::<i64>(), max.parse::<i64>()) else {
        return;
    };
    let events = match pool.get().await {
        Ok(client) => read::events_between(&client, min, max).await,
        Err(err) => Err(crate::rows::pool(err)),
    };
    match events {
        Ok(events) => publish(events, feed, seen),
        Err(err) => tracing::warn!(error = %err, "cannot read announced events"),
    }
}

fn publish(events: Vec<JobEvent>, feed: &broadcast::Sender<Arc<JobEvent>>, seen: &Mutex<Seen>) {
    for event in events {
        let first = seen.lock().expect("never poisoned").first(event.id);
        if first {
            let _ = feed.send(Arc::new(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::{EventKind, JobId, JobStatus, Timestamp};

    fn event(id: i64, data: serde_json::Value) -> JobEvent {
        JobEvent {
            id,
            job_id: JobId::from("j"),
            seq: id,
            kind: EventKind::Progress,
            status: JobStatus::Running,
            app: "a".into(),
            command: "c".into(),
            data,
            at: Timestamp::from_micros(0),
        }
    }

    #[test]
    fn small_event_sets_travel_inline_and_large_ones_by_range() {
        let small = vec![
            event(7, serde_json::json!({"n": 1})),
            event(9, serde_json::json!({})),
        ];
        let inline = payload("me", &small).unwrap();
        let (origin, json) = inline.split_once('|').unwrap();
        assert_eq!(origin, "me");
        let back: Vec<JobEvent> = serde_json::from_str(json).unwrap();
        assert_eq!(back, small);

        let large = vec![
            event(3, serde_json::json!({"blob": "x".repeat(MAX_INLINE)})),
            event(5, serde_json::json!(1)),
        ];
        assert_eq!(payload("me", &large).unwrap(), "me:3:5");
        assert_eq!(payload("me", &[]), None);
    }

    #[test]
    fn an_event_is_published_once() {
        let mut seen = Seen::default();
        assert!(seen.first(1));
        assert!(!seen.first(1));
        assert!(seen.first(2));
    }
}
