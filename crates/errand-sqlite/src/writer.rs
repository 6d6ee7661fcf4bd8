//! The single writer: one thread owns the write connection and commits the
//! operations of all concurrent callers together (group commit), so a burst
//! of N submits costs one fsync, not N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use errand_core::{Clock, JobEvent, Timestamp};
use errand_store::StoreError;
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::rows::backend;

/// The most operations one transaction carries; bounds a commit's latency.
const MAX_GROUP: usize = 512;

/// What an operation sees while it runs inside the group's transaction.
pub(crate) struct WriteCtx {
    /// One "now" for the whole group, so its operations agree on time.
    pub now: Timestamp,
    /// Events to publish on the change feed once the group commits.
    pub events: Vec<JobEvent>,
}

/// One caller's share of a group transaction.
trait WriteOp: Send {
    /// Runs inside a savepoint; a failed op rolls back only its own writes.
    fn apply(&mut self, conn: &Connection, ctx: &mut WriteCtx);
    /// Called once the group committed (or failed to).
    fn respond(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Op<T, F> {
    run: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send,
    F: FnOnce(&Connection, &mut WriteCtx) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, conn: &Connection, ctx: &mut WriteCtx) {
        let run = self.run.take().expect("applied once");
        let events_before = ctx.events.len();
        let outcome = savepoint(conn, "BEGIN_OP")
            .and_then(|()| run(conn, ctx))
            .and_then(|value| savepoint(conn, "RELEASE").map(|()| value));
        if outcome.is_err() {
            let _ = savepoint(conn, "ROLLBACK");
            ctx.events.truncate(events_before);
        }
        self.outcome = Some(outcome);
    }

    fn respond(self: Box<Self>, committed: Result<(), StoreError>) {
        let outcome = match committed {
            Ok(()) => self.outcome.expect("applied before respond"),
            Err(err) => Err(err),
        };
        // The caller may have gone away (timeout, dropped future): fine.
        let _ = self.reply.send(outcome);
    }
}

fn savepoint(conn: &Connection, step: &str) -> Result<(), StoreError> {
    let sql = match step {
        "BEGIN_OP" => "SAVEPOINT op",
        "RELEASE" => "RELEASE op",
        _ => "ROLLBACK TO op; RELEASE op",
    };
    if step == "ROLLBACK" {
        conn.execute_batch(sql).map_err(backend)
    } else {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(|_| ())
            .map_err(backend)
    }
}

/// The handle callers use to reach the writer thread.
pub(crate) struct Writer {
    ops: mpsc::Sender<Box<dyn WriteOp>>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    pub(crate) fn start(
        conn: Connection,
        clock: Arc<dyn Clock>,
        feed: broadcast::Sender<Arc<JobEvent>>,
    ) -> std::io::Result<Self> {
        let (ops, receiver) = mpsc::channel(8 * MAX_GROUP);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        std::thread::Builder::new()
            .name("errand-sqlite-writer".into())
            .spawn(move || write_loop(conn, receiver, clock, feed, counter))?;
        Ok(Self { ops, commits })
    }

    /// Runs `run` in the next group transaction; answers after the commit.
    pub(crate) async fn run<T, F>(&self, run: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut WriteCtx) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Op {
            run: Some(run),
            outcome: None,
            reply,
        });
        self.ops
            .send(op)
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }

    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

fn write_loop(
    conn: Connection,
    mut receiver: mpsc::Receiver<Box<dyn WriteOp>>,
    clock: Arc<dyn Clock>,
    feed: broadcast::Sender<Arc<JobEvent>>,
    commits: Arc<AtomicU64>,
) {
    let mut group: Vec<Box<dyn WriteOp>> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let mut ctx = WriteCtx {
            now: clock.now(),
            events: Vec::new(),
        };
        let committed = commit_group(&conn, &mut group, &mut ctx);
        if committed.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
            for event in ctx.events.drain(..) {
                // No subscriber is not an error.
                let _ = feed.send(Arc::new(event));
            }
        } else {
            tracing::error!(error = ?committed, "SQLite group commit failed");
        }
        for op in group.drain(..) {
            op.respond(committed.clone());
        }
    }
}

fn commit_group(
    conn: &Connection,
    group: &mut [Box<dyn WriteOp>],
    ctx: &mut WriteCtx,
) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    for op in group.iter_mut() {
        op.apply(conn, ctx);
    }
    if let Err(err) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(backend(err));
    }
    Ok(())
}
