//! The global event feed in id order, shared by every `/api/events`
//! stream of this server.
//!
//! The store's change feed announces events in commit order, which on
//! PostgreSQL is not id order: a stream forwarding it as it comes would send
//! id 11 before 10, and a client resuming after 11 would never see 10. So
//! one task per server reads the store's settled feed (`Store::feed`, which
//! returns an event only once no lower id can still commit) whenever the
//! change feed says something happened, and broadcasts the events in id
//! order. Streams follow that broadcast; a resume reads the store from its
//! `Last-Event-ID`, then joins the broadcast after what it has sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use errand_core::JobEvent;
use errand_store::Store;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

/// Events read from the store per query.
const PAGE: usize = 1000;
/// Events a slow stream may fall behind before it re-reads the store.
const CAPACITY: usize = 16 * 1024;
/// Reads without a wake-up too: events written by another process reach
/// this one's change feed only through the store's own notifications
/// (none for SQLite across processes).
const TICK: Duration = Duration::from_millis(250);

pub type OrderedEvents = broadcast::Receiver<Arc<JobEvent>>;

/// Started by the first stream that asks, so a server without dashboard
/// clients does no work for them.
pub struct OrderedFeed {
    sender: Mutex<Option<broadcast::Sender<Arc<JobEvent>>>>,
}

impl OrderedFeed {
    pub fn new() -> Self {
        Self {
            sender: Mutex::new(None),
        }
    }

    /// Events from now on, in id order, each once.
    pub fn subscribe(&self, store: &Arc<dyn Store>, shutdown: &CancellationToken) -> OrderedEvents {
        let mut sender = self.sender.lock().expect("never poisoned");
        if let Some(sender) = sender.as_ref() {
            return sender.subscribe();
        }
        let (tx, rx) = broadcast::channel(CAPACITY);
        tokio::spawn(pump(store.clone(), tx.clone(), shutdown.clone()));
        *sender = Some(tx);
        rx
    }
}

impl Default for OrderedFeed {
    fn default() -> Self {
        Self::new()
    }
}

async fn pump(
    store: Arc<dyn Store>,
    tx: broadcast::Sender<Arc<JobEvent>>,
    shutdown: CancellationToken,
) {
    let mut wake = store.subscribe();
    let mut last = loop {
        match store.feed_head().await {
            Ok(head) => break head,
            Err(err) => {
                tracing::warn!(error = %err, "the event feed cannot read the store; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    loop {
        loop {
            match store.feed(last, PAGE).await {
                Ok(events) => {
                    let full = events.len() == PAGE;
                    for event in events {
                        last = event.id;
                        // No receiver right now is fine: streams come and go.
                        let _ = tx.send(Arc::new(event));
                    }
                    if !full {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the event feed cannot read the store");
                    break;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = wake.recv() => {
                if matches!(received, Err(broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            () = tokio::time::sleep(TICK) => {}
        }
        // One read serves every wake-up that is already waiting.
        loop {
            match wake.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
    }
}
