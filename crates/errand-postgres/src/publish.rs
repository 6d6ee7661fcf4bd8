//! What happens at every commit: other processes are told (NOTIFY, inside
//! the transaction), and this process's change feed gets the events once
//! the commit is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use errand_core::JobEvent;
use errand_store::counts::count_deltas;
use errand_store::StoreError;
use tokio::sync::broadcast;

use crate::listen;
use crate::rows::{self, db};

/// Adds a commit's count deltas and notifies (when `$5` is not null).
const COUNT_AND_NOTIFY: &str =
    "WITH counted AS (INSERT INTO errand_job_counts (app, command, status, n) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[])) \
     SELECT pg_notify('errand_events', $5) WHERE $5::text IS NOT NULL";

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
        self.commit_with(tx, events, Vec::new()).await
    }

    /// [`commit`](Self::commit), where `announced` are events of a
    /// statement in `tx` that counted and announced its own moves (a
    /// claim): they are only published on this process's feed, after
    /// `events`.
    pub async fn commit_with(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        mut events: Vec<JobEvent>,
        announced: Vec<JobEvent>,
    ) -> Result<(), StoreError> {
        let payload = listen::payload(&self.origin, &events);
        let deltas = count_deltas(&events);
        if deltas.is_empty() {
            if let Some(payload) = payload {
                let notify = rows::prepared(&tx, "SELECT pg_notify('errand_events', $1)").await?;
                tx.execute(&notify, &[&payload]).await.map_err(db)?;
            }
        } else {
            // One round trip: the counts' delta rows, and the notification.
            let apps: Vec<&str> = deltas.iter().map(|d| d.app.as_str()).collect();
            let commands: Vec<&str> = deltas.iter().map(|d| d.command.as_str()).collect();
            let statuses: Vec<&str> = deltas.iter().map(|d| d.status.as_str()).collect();
            let ns: Vec<i64> = deltas.iter().map(|d| d.delta).collect();
            let statement = rows::prepared(&tx, COUNT_AND_NOTIFY).await?;
            tx.execute(&statement, &[&apps, &commands, &statuses, &ns, &payload])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        events.extend(announced);
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
