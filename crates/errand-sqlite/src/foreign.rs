//! Events committed by other processes sharing the database file.
//!
//! The writer publishes its own events on the change feed as it commits
//! them. A worker or a server in another process writes the same file, and
//! its events must reach this process's feed too: SSE streams, long polls
//! and worker wake-ups all follow that feed.
//!
//! Event ids are `max(id) + 1` taken under SQLite's write lock, so ids
//! grow in commit order across every process. The writer keeps the highest
//! id it has published ([`ForeignEvents::head`]); any higher id it sees is
//! another process's. It looks in two places, both on the writer thread so
//! that its own commits never race the look:
//! - at the start of each of its own write transactions, where the next id
//!   tells at no cost whether anyone else committed since its last one;
//! - when idle, on a nudge from the [`Watcher`] thread, which wakes when
//!   the WAL file changes (inotify on Linux; kqueue or FSEvents elsewhere)
//!   and at least once a second. The check itself is `PRAGMA
//!   data_version`, which changes only when another connection committed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errand_core::JobEvent;
use errand_store::StoreError;
use rusqlite::Connection;

use crate::rows::backend;

/// A change to the WAL may be seen by inotify a moment before the writing
/// process publishes its commit in the WAL index: the look comes after
/// this pause.
const SETTLE: Duration = Duration::from_millis(3);
/// The look that does not depend on file notifications.
const BACKSTOP: Duration = Duration::from_secs(1);
/// Events read per query.
const PAGE: usize = 1000;

/// The writer's record of what it has published.
pub(crate) struct ForeignEvents {
    /// Every event with an id up to this one has been published.
    head: i64,
    /// `PRAGMA data_version` at the last idle look.
    data_version: i64,
}

impl ForeignEvents {
    pub(crate) fn new(conn: &Connection) -> Result<Self, StoreError> {
        Ok(Self {
            head: crate::read::feed_head(conn)?,
            data_version: data_version(conn)?,
        })
    }

    /// Inside the writer's transaction, which holds the write lock: the
    /// events other processes committed since this one's last commit
    /// (those with ids below `next_event_id`).
    pub(crate) fn before(
        &mut self,
        conn: &Connection,
        next_event_id: i64,
    ) -> Result<Vec<JobEvent>, StoreError> {
        if next_event_id <= self.head + 1 {
            return Ok(Vec::new());
        }
        let events = self.read_after_head(conn)?;
        // Pruned events leave gaps: the head moves past them all the same.
        self.head = next_event_id - 1;
        Ok(events)
    }

    /// The writer committed events up to `last_id`.
    pub(crate) fn committed(&mut self, last_id: i64) {
        self.head = self.head.max(last_id);
    }

    /// Outside any transaction: the events other processes committed since
    /// the last look, if any did.
    pub(crate) fn idle_look(&mut self, conn: &Connection) -> Result<Vec<JobEvent>, StoreError> {
        let version = data_version(conn)?;
        if version == self.data_version {
            return Ok(Vec::new());
        }
        self.data_version = version;
        self.read_after_head(conn)
    }

    fn read_after_head(&mut self, conn: &Connection) -> Result<Vec<JobEvent>, StoreError> {
        let mut all = Vec::new();
        loop {
            let events = crate::read::feed(conn, self.head, PAGE)?;
            let full = events.len() == PAGE;
            if let Some(last) = events.last() {
                self.head = last.id;
            }
            all.extend(events);
            if !full {
                return Ok(all);
            }
        }
    }
}

fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
        .map_err(backend)
}

/// Asks the writer to look for other processes' events when the database
/// file changes, and at least every [`BACKSTOP`].
pub(crate) struct Watcher {
    // Dropping the watcher ends its notifications and so its thread.
    _files: Option<notify::RecommendedWatcher>,
}

impl Watcher {
    /// `look` asks the writer for a look; it must not block. `pending` is
    /// set while a look is queued, so a burst of changes asks once.
    pub(crate) fn start(
        database: &Path,
        pending: Arc<AtomicBool>,
        look: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let (changed_tx, changed) = std::sync::mpsc::channel::<()>();
        let files = watch_files(database, changed_tx);
        std::thread::Builder::new()
            .name("errand-sqlite-watch".into())
            .spawn(move || {
                let ask = || {
                    if !pending.swap(true, Ordering::AcqRel) && !look() {
                        return false;
                    }
                    true
                };
                loop {
                    match changed.recv_timeout(BACKSTOP) {
                        // Most changes are this process's own commits: the
                        // look waits out the settling pause instead of
                        // waking the writer at once, when the commit's
                        // own follow-up (a worker's claim) wants it.
                        Ok(()) => {
                            std::thread::sleep(SETTLE);
                            while changed.try_recv().is_ok() {}
                            if !ask() {
                                return;
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if !ask() {
                                return;
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            // No file notifications: the backstop alone.
                            std::thread::sleep(BACKSTOP);
                            if !ask() {
                                return;
                            }
                        }
                    }
                }
            })?;
        Ok(Self { _files: files })
    }
}

/// Watches the database's folder (the WAL file comes and goes with the
/// last connection) for changes to the database or its WAL. `None` where
/// the platform gives no notifications: the backstop look remains.
fn watch_files(
    database: &Path,
    changed: std::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher as _};
    let folder = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = database.file_name()?.to_os_string();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
            return;
        }
        let ours = event.paths.iter().any(|path| {
            path.file_name()
                .is_some_and(|file| file.as_encoded_bytes().starts_with(name.as_encoded_bytes()))
        });
        if ours {
            let _ = changed.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::debug!(error = %err, "no file notifications; other processes' events are seen within a second");
            return None;
        }
    };
    if let Err(err) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
        tracing::debug!(error = %err, folder = %folder.display(), "cannot watch the database's folder; other processes' events are seen within a second");
        return None;
    }
    Some(watcher)
}
