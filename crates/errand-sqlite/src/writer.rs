//! The single writer: one thread owns the write connection and commits the
//! operations of all concurrent callers together (group commit), so a burst
//! of N submits costs one fsync, not N.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use errand_core::{Clock, JobEvent, Timestamp};
use errand_store::StoreError;
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::checkpoint::Checkpointer;
use crate::foreign::{ForeignEvents, Watcher};
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
    /// Events other processes committed before this group's transaction
    /// began, published ahead of the group's own.
    pub foreign: Vec<JobEvent>,
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
    /// A request to look for other processes' events, not a write.
    fn is_look(&self) -> bool {
        false
    }
}

/// Asks the writer to look for events other processes committed.
struct Look;

impl WriteOp for Look {
    fn apply(&mut self, _conn: &Connection, _ctx: &mut WriteCtx) {}
    fn database_failed(&self) -> bool {
        false
    }
    fn respond(self: Box<Self>, _committed: Result<(), StoreError>) {}
    fn is_look(&self) -> bool {
        true
    }
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
    _watcher: Option<Watcher>,
}

impl Writer {
    /// With `watch`, the path of the database file, the writer also
    /// publishes the events other processes commit to that file.
    pub(crate) fn start(
        conn: Connection,
        clock: Arc<dyn Clock>,
        feed: broadcast::Sender<Arc<JobEvent>>,
        checkpointer: Option<Checkpointer>,
        watch: Option<&Path>,
    ) -> std::io::Result<Self> {
        let (ops, receiver) = mpsc::channel(8 * MAX_GROUP);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let foreign = ForeignEvents::new(&conn).map_err(std::io::Error::other)?;
        let look_pending = Arc::new(AtomicBool::new(false));
        let pending = look_pending.clone();
        std::thread::Builder::new()
            .name("errand-sqlite-writer".into())
            .spawn(move || {
                let mut loop_state = LoopState {
                    clock,
                    feed,
                    commits: counter,
                    checkpointer,
                    foreign,
                    look_pending: pending,
                };
                write_loop(conn, receiver, &mut loop_state)
            })?;
        let watcher = match watch {
            None => None,
            Some(path) => {
                let ops = ops.clone();
                let pending = look_pending.clone();
                Some(Watcher::start(path, look_pending, move || {
                    match ops.try_send(Box::new(Look)) {
                        Ok(()) => true,
                        // Busy: its next transaction looks anyway.
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            pending.store(false, Ordering::Release);
                            true
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    }
                })?)
            }
        };
        Ok(Self {
            ops,
            commits,
            _watcher: watcher,
        })
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

/// What the writer thread keeps between groups.
struct LoopState {
    clock: Arc<dyn Clock>,
    feed: broadcast::Sender<Arc<JobEvent>>,
    commits: Arc<AtomicU64>,
    checkpointer: Option<Checkpointer>,
    foreign: ForeignEvents,
    look_pending: Arc<AtomicBool>,
}

impl LoopState {
    fn wrote(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.nudge();
        }
    }

    /// Publishes a committed group's events, other processes' first (they
    /// committed before it).
    fn committed(&mut self, ctx: &mut WriteCtx) {
        publish(&self.feed, &mut ctx.foreign);
        if let Some(last) = ctx.events.last() {
            self.foreign.committed(last.id);
        }
        publish(&self.feed, &mut ctx.events);
    }
}

fn write_loop(
    conn: Connection,
    mut receiver: mpsc::Receiver<Box<dyn WriteOp>>,
    state: &mut LoopState,
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
        if group.iter().any(|op| op.is_look()) {
            // Cleared before looking: a change during the look asks again.
            state.look_pending.store(false, Ordering::Release);
            group.retain(|op| !op.is_look());
            if group.is_empty() {
                match state.foreign.idle_look(&conn) {
                    Ok(mut events) => publish(&state.feed, &mut events),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read other processes' events; will look again")
                    }
                }
                continue;
            }
        }
        let mut ctx = WriteCtx {
            now: state.clock.now(),
            events: Vec::new(),
            next_event_id: 0,
            pending_events: Vec::new(),
            foreign: Vec::new(),
        };
        let changes_before = conn.total_changes();
        let committed = commit_group(&conn, &mut group, &mut ctx, &mut state.foreign);
        if committed.is_ok() {
            // Only transactions that wrote count: an empty claim writes nothing.
            if conn.total_changes() != changes_before {
                state.wrote();
            }
            state.committed(&mut ctx);
            for op in group.drain(..) {
                op.respond(Ok(()));
            }
            continue;
        }
        // Other processes' events read before the failure were committed.
        publish(&state.feed, &mut ctx.foreign);
        // Something failed at the database level: run each op alone so
        // the failure stays with the op that caused it.
        tracing::warn!(error = ?committed, ops = group.len(), "group commit failed; retrying its operations one by one");
        for mut op in group.drain(..) {
            ctx.events.clear();
            let changes_before = conn.total_changes();
            let committed = commit_group(
                &conn,
                std::slice::from_mut(&mut op),
                &mut ctx,
                &mut state.foreign,
            );
            if committed.is_ok() {
                if conn.total_changes() != changes_before {
                    state.wrote();
                }
                state.committed(&mut ctx);
            } else {
                publish(&state.feed, &mut ctx.foreign);
            }
            op.respond(committed);
        }
    }
}

fn publish(feed: &broadcast::Sender<Arc<JobEvent>>, events: &mut Vec<JobEvent>) {
    for event in events.drain(..) {
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
    foreign: &mut ForeignEvents,
) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    let started = next_event_id(conn).and_then(|id| {
        ctx.next_event_id = id;
        ctx.foreign.extend(foreign.before(conn, id)?);
        Ok(())
    });
    if let Err(err) = started {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(err);
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
    let counted = crate::write::add_counts(conn, &errand_store::counts::count_deltas(&ctx.events));
    if let Err(err) = counted {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(err);
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
        Writer::start(conn, Arc::new(SystemClock), feed, None, None).unwrap()
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
