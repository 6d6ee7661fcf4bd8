//! The single writer: one thread owns the write connection and commits the
//! operations of all concurrent callers together (group commit), so a burst
//! of N submits costs one fsync, not N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use errand_core::{Clock, JobEvent, Timestamp};
use errand_store::StoreError;
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::checkpoint::Checkpointer;
use crate::rows::backend;

/// The most operations one transaction carries; bounds a commit's latency.
const MAX_GROUP: usize = 512;

/// What an operation sees while it runs inside the group's transaction.
pub(crate) struct WriteCtx {
    /// One "now" for the whole group, so its operations agree on time.
    pub now: Timestamp,
    /// Events to publish on the change feed once the group commits.
    pub events: Vec<JobEvent>,
    /// The id the next event gets; read when the group's transaction
    /// starts (it holds the write lock, so no other process interleaves).
    pub next_event_id: i64,
    /// Event rows the running operation recorded, inserted together when
    /// it succeeds.
    pub pending_events: Vec<crate::write::EventRow>,
}

/// One caller's share of a group transaction.
///
/// An operation either succeeds, fails with a logical error (`NotFound`,
/// `Conflict`, `LeaseLost`, `Invalid`) having written nothing, or fails with
/// a database error. Only the last aborts the group: it is rolled back and
/// each operation is replayed in a transaction of its own, so one caller's
/// failure never fails the others. Hence operations must be re-runnable
/// (`Fn`), and need no per-operation savepoint on the fast path.
trait WriteOp: Send {
    fn apply(&mut self, conn: &Connection, ctx: &mut WriteCtx);
    fn database_failed(&self) -> bool;
    /// Called once the operation's transaction committed (or failed to).
    fn respond(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Op<T, F> {
    run: F,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

fn is_database_error(err: &StoreError) -> bool {
    matches!(err, StoreError::Backend(_) | StoreError::Unavailable(_))
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send,
    F: Fn(&Connection, &mut WriteCtx) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, conn: &Connection, ctx: &mut WriteCtx) {
        let outcome = match (self.run)(conn, ctx) {
            Ok(value) => crate::write::insert_events(conn, &mut ctx.pending_events).map(|()| value),
            Err(err) => {
                // A refused operation wrote nothing (each checks first).
                ctx.pending_events.clear();
                Err(err)
            }
        };
        self.outcome = Some(outcome);
    }

    fn database_failed(&self) -> bool {
        matches!(&self.outcome, Some(Err(err)) if is_database_error(err))
    }

    fn respond(self: Box<Self>, committed: Result<(), StoreError>) {
        let outcome = match committed {
            Ok(()) => self.outcome.expect("applied before respond"),
            Err(err) => match self.outcome {
                Some(Err(own)) if is_database_error(&own) => Err(own),
                _ => Err(err),
            },
        };
        // The caller may have gone away (timeout, dropped future): fine.
        let _ = self.reply.send(outcome);
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
        checkpointer: Option<Checkpointer>,
    ) -> std::io::Result<Self> {
        let (ops, receiver) = mpsc::channel(8 * MAX_GROUP);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        std::thread::Builder::new()
            .name("errand-sqlite-writer".into())
            .spawn(move || write_loop(conn, receiver, clock, feed, counter, checkpointer))?;
        Ok(Self { ops, commits })
    }

    /// Runs `run` in the next group transaction; answers after the commit.
    pub(crate) async fn run<T, F>(&self, run: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection, &mut WriteCtx) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Op {
            run,
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

    /// Transactions committed that wrote something.
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
    checkpointer: Option<Checkpointer>,
) {
    let wrote = || {
        commits.fetch_add(1, Ordering::Relaxed);
        if let Some(checkpointer) = &checkpointer {
            checkpointer.nudge();
        }
    };
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
            next_event_id: 0,
            pending_events: Vec::new(),
        };
        let changes_before = conn.total_changes();
        let committed = commit_group(&conn, &mut group, &mut ctx);
        if committed.is_ok() {
            // Only transactions that wrote count: an empty claim writes nothing.
            if conn.total_changes() != changes_before {
                wrote();
            }
            publish(&feed, &mut ctx);
            for op in group.drain(..) {
                op.respond(Ok(()));
            }
            continue;
        }
        // Something failed at the database level: run each op alone so
        // the failure stays with the op that caused it.
        tracing::warn!(error = ?committed, ops = group.len(), "group commit failed; retrying its operations one by one");
        for mut op in group.drain(..) {
            ctx.events.clear();
            let changes_before = conn.total_changes();
            let committed = commit_group(&conn, std::slice::from_mut(&mut op), &mut ctx);
            if committed.is_ok() {
                if conn.total_changes() != changes_before {
                    wrote();
                }
                publish(&feed, &mut ctx);
            }
            op.respond(committed);
        }
    }
}

fn publish(feed: &broadcast::Sender<Arc<JobEvent>>, ctx: &mut WriteCtx) {
    for event in ctx.events.drain(..) {
        // No subscriber is not an error.
        let _ = feed.send(Arc::new(event));
    }
}

/// Applies the ops in one transaction. Fails (and rolls back) if the
/// database fails, or if an op met a database error.
fn next_event_id(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "SELECT max(coalesce((SELECT max(id) FROM events), 0), \
         coalesce((SELECT value FROM meta WHERE key = 'events_floor'), 0)) + 1",
    )
    .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
    .map_err(backend)
}

fn commit_group(
    conn: &Connection,
    group: &mut [Box<dyn WriteOp>],
    ctx: &mut WriteCtx,
) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    match next_event_id(conn) {
        Ok(id) => ctx.next_event_id = id,
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err);
        }
    }
    for op in group.iter_mut() {
        op.apply(conn, ctx);
        if op.database_failed() {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(StoreError::Unavailable(
                "an operation in the transaction failed".into(),
            ));
        }
    }
    if let Err(err) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(backend(err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::SystemClock;

    fn writer(dir: &tempfile::TempDir) -> Writer {
        let mut conn = Connection::open(dir.path().join("w.db")).unwrap();
        crate::migrations::migrate(&mut conn).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL);")
            .unwrap();
        let (feed, _) = broadcast::channel(16);
        Writer::start(conn, Arc::new(SystemClock), feed, None).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_failing_op_does_not_fail_the_others_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Arc::new(writer(&dir));
        // Hold the writer busy so the next ops queue up into one group.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let blocker = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run(move |_conn, _ctx| {
                        let _ = started_tx.send(());
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        let commits_before = writer.commits();
        let mut ops = tokio::task::JoinSet::new();
        for v in 0..20 {
            let writer = writer.clone();
            ops.spawn(async move {
                let sql = if v == 7 {
                    "INSERT INTO missing_table VALUES (?)"
                } else {
                    "INSERT INTO t VALUES (?)"
                };
                (
                    v,
                    writer
                        .run(move |conn, _| conn.execute(sql, [v]).map(|_| ()).map_err(backend))
                        .await,
                )
            });
        }
        while let Some(done) = ops.join_next().await {
            let (v, result) = done.unwrap();
            if v == 7 {
                assert!(
                    matches!(result, Err(StoreError::Backend(msg)) if msg.contains("missing_table"))
                );
            } else {
                assert_eq!(result, Ok(()), "op {v}");
            }
        }
        blocker.await.unwrap().unwrap();
        let rows = writer
            .run(|conn, _| {
                conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                    .map_err(backend)
            })
            .await
            .unwrap();
        assert_eq!(rows, 19, "every good op's write is there, once");
        assert!(writer.commits() > commits_before);
    }
}
