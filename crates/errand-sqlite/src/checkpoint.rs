//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: on the writer thread, which is the store's bottleneck, and
//! with an fsync of the database file in the middle of a caller's wait (a
//! few milliseconds every thousand pages: the idle pickup latency's p99).
//! So the writer's own automatic checkpoint is only a backstop at a much
//! larger WAL, and after its commits the writer nudges this thread, which
//! runs a PASSIVE checkpoint (it never blocks the writer or readers) at
//! most every `PAUSE`. An idle store does no checkpoints at all.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use rusqlite::Connection;

/// At most this often while writes keep coming.
const PAUSE: Duration = Duration::from_millis(100);

/// The writer's own checkpoint threshold, in pages (4 KiB each): reached
/// only if this thread cannot keep up or cannot run.
pub(crate) const BACKSTOP_PAGES: u32 = 20_000;

/// The writer's handle: nudges the checkpoint thread; dropping it stops
/// the thread.
pub(crate) struct Checkpointer {
    nudge: SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread with its own connection to the database at `path`.
    pub(crate) fn start(path: &Path) -> std::io::Result<Self> {
        let (nudge, nudged) = sync_channel(1);
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        std::thread::Builder::new()
            .name("errand-sqlite-checkpoint".into())
            .spawn(move || run(conn, nudged))?;
        Ok(Self { nudge })
    }

    /// Something was committed: a checkpoint is due soon. Never blocks.
    pub(crate) fn nudge(&self) {
        match self.nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                tracing::warn!("the SQLite checkpoint thread has stopped; the writer's own checkpoints take over");
            }
        }
    }
}

fn run(conn: Connection, nudged: Receiver<()>) {
    while nudged.recv().is_ok() {
        // PASSIVE: copies what it can without waiting for anyone.
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "WAL checkpoint failed; will try again");
        }
        std::thread::sleep(PAUSE);
    }
}
