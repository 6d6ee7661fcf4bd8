//! What happens at every commit: other processes are told (NOTIFY, inside
//! the transaction), and this process's change feed gets the events once
//! the commit is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use errand_core::JobEvent;
use errand_store::StoreError;
use tokio::sync::broadcast;

use crate::listen;
use crate::rows::{self, db};

pub(crate) struct Publisher {
    pub feed: broadcast::Sender<Arc<JobEvent>>,
    /// Names this process in notifications, so it skips its own.
    origin: String,
    pub seen: Arc<Mutex<listen::Seen>>,
    commits: AtomicU64,
}

impl Publisher {
    pub fn new(
        feed: broadcast::Sender<Arc<JobEvent>>,
        origin: String,
        seen: Arc<Mutex<listen::Seen>>,
    ) -> Self {
        Self {
            feed,
            origin,
            seen,
            commits: AtomicU64::new(0),
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Announces the events to other processes, commits, then publishes
    /// them on this process's feed.
    pub async fn commit(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        events: Vec<JobEvent>,
    ) -> Result<(), StoreError> {
        if let Some(payload) = listen::payload(&self.origin, &events) {
            let notify = rows::prepared(&tx, "SELECT pg_notify('errand_events', $1)").await?;
            tx.execute(&notify, &[&payload]).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.committed(events);
        Ok(())
    }

    /// Counts a commit and publishes its events on this process's feed.
    pub fn committed(&self, events: Vec<JobEvent>) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        for event in events {
            let first = self.seen.lock().expect("never poisoned").first(event.id);
            if first {
                let _ = self.feed.send(Arc::new(event));
            }
        }
    }
}
