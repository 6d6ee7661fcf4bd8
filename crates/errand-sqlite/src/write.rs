//! Every write, as a function run by the writer thread inside a group
//! transaction. Each change of a job is an UPDATE whose WHERE clause is the
//! compare-and-set: status, and for a worker's writes attempt and worker id.

use errand_core::{
    on_cancel, on_lease_expired, on_retry, Change, EventKind, Job, JobId, JobStatus, Progress,
    Timestamp,
};
use errand_store::{
    ClaimParams, Fence, HeartbeatParams, HeartbeatReply, NewJob, Outcome, StoreError,
    SubmitReceipt, WorkerRegistration,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::chunks::{pieces, placeholders, ChunkedSql};
use crate::rows::{backend, status_column, to_json, JobRow, JOB_COLUMNS};
use crate::writer::WriteCtx;

/// How long a worker may stay silent before it no longer counts as alive.
pub(crate) const WORKER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A job row as an UPDATE … RETURNING gave it back.
pub(crate) struct Changed {
    pub(crate) row: JobRow,
    pub(crate) seq: i64,
}

pub(crate) fn returning() -> String {
    format!("RETURNING {JOB_COLUMNS}")
}

pub(crate) fn changed_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Changed> {
    Ok(Changed {
        row: JobRow::read(row)?,
        seq: crate::rows::seq_of_row(row)?,
    })
}

/// The little an event needs to know about its job; what hot paths
/// return instead of a whole row.
struct EventTarget {
    job_id: JobId,
    app: String,
    command: String,
    status: JobStatus,
    seq: i64,
    event_seq: i64,
}

const LEAN_RETURNING: &str = "RETURNING app, command, status, seq, event_seq";

fn lean_from_row(job_id: &JobId, row: &rusqlite::Row<'_>) -> rusqlite::Result<EventTarget> {
    Ok(EventTarget {
        job_id: job_id.clone(),
        app: row.get(0)?,
        command: row.get(1)?,
        status: status_column(row, 2)?,
        seq: row.get(3)?,
        event_seq: row.get(4)?,
    })
}

impl From<&Changed> for EventTarget {
    fn from(changed: &Changed) -> Self {
        let job = &changed.row.job;
        Self {
            job_id: job.job_id.clone(),
            app: job.app.clone(),
            command: job.command.clone(),
            status: job.status,
            seq: changed.seq,
            event_seq: job.event_seq,
        }
    }
}

/// Appends the event of `change` for a job whose `event_seq` was just
/// incremented.
fn record_change(
    ctx: &mut WriteCtx,
    changed: impl Into<EventTarget>,
    change: &Change,
) -> Result<(), StoreError> {
    let data = change.data();
    let text = to_json(&data);
    record_event_text(ctx, changed, change.kind(), text, data)
}

/// [`record_change`] with an event made ready off the writer.
fn record_prepared_event(
    ctx: &mut WriteCtx,
    changed: impl Into<EventTarget>,
    event: &PreparedEvent,
) -> Result<(), StoreError> {
    record_event_text(
        ctx,
        changed,
        event.kind,
        event.text.clone(),
        event.take_value(),
    )
}

/// [`record_change`] with the data already written as JSON text.
fn record_event_text(
    ctx: &mut WriteCtx,
    changed: impl Into<EventTarget>,
    kind: EventKind,
    text: String,
    data: Value,
) -> Result<(), StoreError> {
    let changed: EventTarget = changed.into();
    let id = ctx.next_event_id;
    ctx.next_event_id += 1;
    ctx.pending_events.push(EventRow {
        id,
        job_seq: changed.seq,
        seq: changed.event_seq,
        kind: kind.as_str(),
        status: changed.status.as_str(),
        data: text,
        at: ctx.now.as_micros(),
    });
    ctx.events.push(errand_core::JobEvent {
        id,
        job_id: changed.job_id,
        seq: changed.event_seq,
        kind,
        status: changed.status,
        app: changed.app,
        command: changed.command,
        data,
        at: ctx.now,
    });
    Ok(())
}

/// An event's data made ready off the writer thread: its JSON text for the
/// row, and its value for the change feed, which the operation's first run
/// takes rather than copies. A rerun (its group failed at the database and
/// is replayed op by op) parses the text again.
pub(crate) struct PreparedEvent {
    kind: EventKind,
    text: String,
    value: std::cell::Cell<Option<Value>>,
}

impl PreparedEvent {
    fn new(change: &Change) -> Self {
        let value = change.data();
        Self {
            kind: change.kind(),
            text: to_json(&value),
            value: std::cell::Cell::new(Some(value)),
        }
    }

    fn take_value(&self) -> Value {
        self.value.take().unwrap_or_else(|| {
            serde_json::from_str(&self.text).expect("errand wrote this JSON itself")
        })
    }
}

/// An event row waiting to be inserted at the end of its operation.
pub(crate) struct EventRow {
    id: i64,
    job_seq: i64,
    seq: i64,
    kind: &'static str,
    status: &'static str,
    data: String,
    at: i64,
}

static INSERT_EVENTS: ChunkedSql = ChunkedSql::new(|rows| {
    format!(
        "INSERT INTO events (id, job_seq, seq, kind, status, data, at) VALUES {}",
        placeholders(rows, 7)
    )
});

/// Inserts the operation's pending events; called once it has succeeded.
pub(crate) fn insert_events(
    conn: &Connection,
    pending: &mut Vec<EventRow>,
) -> Result<(), StoreError> {
    for piece in pieces(pending) {
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(piece.len() * 7);
        for row in piece {
            values.extend([
                &row.id as &dyn rusqlite::ToSql,
                &row.job_seq,
                &row.seq,
                &row.kind,
                &row.status,
                &row.data,
                &row.at,
            ]);
        }
        conn.prepare_cached(INSERT_EVENTS.for_rows(piece.len()))
            .map_err(backend)?
            .execute(values.as_slice())
            .map_err(backend)?;
    }
    pending.clear();
    Ok(())
}

/// A job ready to insert: validated, its id chosen and its JSON written by
/// the caller, so the single writer thread only binds and executes.
pub(crate) struct PreparedJob {
    job_id: JobId,
    app: String,
    command: String,
    input: String,
    context: Option<String>,
    max_attempts: u32,
    retry: String,
    priority: i32,
    queue: String,
    run_at: Timestamp,
    timeout_secs: Option<f64>,
    idempotency_key: Option<String>,
    parent_id: Option<String>,
    event: PreparedEvent,
}

impl PreparedJob {
    /// `now` stands in for a missing `run_at`.
    pub(crate) fn new(job: NewJob, now: Timestamp) -> Result<Self, String> {
        job.validate()?;
        let run_at = job.run_at.unwrap_or(now);
        let event = PreparedEvent::new(&Change::Submitted { run_at });
        Ok(Self {
            job_id: JobId::generate(),
            input: to_json(&job.input),
            context: job.context.as_ref().map(to_json),
            max_attempts: job.retry.max_attempts,
            retry: to_json(&job.retry),
            event,
            app: job.app,
            command: job.command,
            priority: job.priority,
            queue: job.queue,
            run_at,
            timeout_secs: job.timeout_secs,
            idempotency_key: job.idempotency_key,
            parent_id: job.parent_id.map(JobId::into_string),
        })
    }
}

pub(crate) fn submit(
    conn: &Connection,
    ctx: &mut WriteCtx,
    job: &PreparedJob,
) -> Result<SubmitReceipt, StoreError> {
    if let Some(key) = &job.idempotency_key {
        let existing = conn
            .prepare_cached("SELECT id, status FROM jobs WHERE idempotency_key = ?")
            .map_err(backend)?
            .query_row([key], |row| {
                Ok((row.get::<_, String>(0)?, status_column(row, 1)?))
            })
            .optional()
            .map_err(backend)?;
        if let Some((id, status)) = existing {
            return Ok(SubmitReceipt {
                job_id: JobId::from(id),
                created: false,
                status,
            });
        }
    }
    const INSERT: &str = concat!(
        "INSERT INTO jobs (id, app, command, input, context, status, max_attempts, retry, \
         priority, queue, run_at, timeout_secs, idempotency_key, parent_id, created, updated, \
         event_seq, limit_key) VALUES (?1, ?2, ?3, ?4, ?5, 'new', ?6, ?7, ?8, ?9, ?10, ?11, \
         ?12, ?13, ?14, ?14, 1, ",
        crate::limits::limit_key_of!("?2", "?3", "?4", "?5"),
        ")"
    );
    // No RETURNING: it would make SQLite keep a statement journal per insert.
    conn.prepare_cached(INSERT)
        .map_err(backend)?
        .execute(params![
            job.job_id.as_str(),
            job.app,
            job.command,
            job.input,
            job.context,
            job.max_attempts,
            job.retry,
            job.priority,
            job.queue,
            job.run_at.as_micros(),
            job.timeout_secs,
            job.idempotency_key,
            job.parent_id,
            ctx.now.as_micros(),
        ])
        .map_err(backend)?;
    let target = EventTarget {
        job_id: job.job_id.clone(),
        app: job.app.clone(),
        command: job.command.clone(),
        status: JobStatus::New,
        seq: conn.last_insert_rowid(),
        event_seq: 1,
    };
    record_prepared_event(ctx, target, &job.event)?;
    Ok(SubmitReceipt {
        job_id: job.job_id.clone(),
        created: true,
        status: JobStatus::New,
    })
}

pub(crate) fn submit_batch(
    conn: &Connection,
    ctx: &mut WriteCtx,
    jobs: &[PreparedJob],
) -> Result<Vec<SubmitReceipt>, StoreError> {
    jobs.iter().map(|job| submit(conn, ctx, job)).collect()
}

/// The claimed jobs as rows: the caller parses their JSON, off the writer.
pub(crate) fn claim(
    conn: &Connection,
    ctx: &mut WriteCtx,
    params: &ClaimParams,
) -> Result<Vec<JobRow>, StoreError> {
    let mut claimed: Vec<Changed> = Vec::new();
    let commands: Vec<(String, String)> = match &params.commands {
        None => Vec::new(),
        Some(names) if names.is_empty() => return Ok(Vec::new()),
        Some(names) => names
            .iter()
            .map(|full| match full.split_once('.') {
                Some((app, name)) => Ok((app.to_owned(), name.to_owned())),
                None => Err(StoreError::Invalid(format!(
                    "command {full:?} is not of the form app.name"
                ))),
            })
            .collect::<Result<_, _>>()?,
    };
    let sql = claim_sql(params.commands.as_ref().map(|_| commands.len()));
    let lease_until = ctx.now.plus(params.lease).as_micros();
    let now = ctx.now.as_micros();
    // In the writer's transaction: a pause committed before is seen.
    let paused: Vec<String> = conn
        .prepare_cached("SELECT queue FROM paused_queues")
        .map_err(backend)?
        .query_map([], |row| row.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    // Nearly always empty: then claims take the one-statement path.
    let limits = crate::limits::load(conn)?;
    for queue in params.queues.iter().filter(|q| !paused.contains(q)) {
        let remaining = params.limit.saturating_sub(claimed.len());
        if remaining == 0 {
            break;
        }
        if !limits.is_empty() {
            let within = crate::limits::Within {
                params,
                queue,
                commands: &commands,
                slots: remaining,
                lease_until,
                now,
            };
            claimed.extend(crate::limits::claim_within_limits(conn, &within, &limits)?);
            continue;
        }
        let mut values: Vec<&dyn rusqlite::ToSql> =
            vec![&params.worker_id, &lease_until, &now, &now, queue, &now];
        for (app, name) in &commands {
            values.push(app);
            values.push(name);
        }
        let limit = remaining as i64;
        values.push(&limit);
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(values.as_slice(), changed_from_row)
            .map_err(backend)?;
        for row in rows {
            claimed.push(row.map_err(backend)?);
        }
    }
    // RETURNING gives no order; hand jobs out in the order they were chosen.
    claimed.sort_by(|a, b| {
        let (a_job, b_job) = (&a.row.job, &b.row.job);
        (b_job.priority, a_job.run_at, a.seq).cmp(&(a_job.priority, b_job.run_at, b.seq))
    });
    let mut jobs = Vec::with_capacity(claimed.len());
    for changed in claimed {
        let claimed = Change::Claimed {
            attempt: changed.row.job.attempt,
            worker_id: params.worker_id.clone(),
        };
        record_change(ctx, &changed, &claimed)?;
        jobs.push(changed.row);
    }
    Ok(jobs)
}

/// The claim statement for one queue, optionally limited to `commands`
/// (app, name) pairs. It walks `jobs_ready` in order and stops at LIMIT.
fn claim_sql(commands: Option<usize>) -> String {
    let filter = match commands {
        Some(count) => {
            let pairs = vec!["(?, ?)"; count].join(", ");
            format!("AND (app, command) IN (VALUES {pairs})")
        }
        None => String::new(),
    };
    format!(
        "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = ?, \
         lease_until = ?, started = ?, updated = ?, event_seq = event_seq + 1 \
         WHERE seq IN (SELECT seq FROM jobs WHERE status = 'new' AND queue = ? AND run_at <= ? \
         {filter} ORDER BY priority DESC, run_at, seq LIMIT ?) {}",
        returning()
    )
}

pub(crate) fn heartbeat(
    conn: &Connection,
    ctx: &mut WriteCtx,
    params: &HeartbeatParams,
) -> Result<HeartbeatReply, StoreError> {
    let known = conn
        .prepare_cached("UPDATE workers SET last_heartbeat = ? WHERE id = ?")
        .and_then(|mut stmt| stmt.execute(params![ctx.now.as_micros(), params.worker_id]))
        .map_err(backend)?;
    let lease_until = ctx.now.plus(params.lease).as_micros();
    let mut stmt = conn
        .prepare_cached(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'running' \
             AND attempt = ? AND worker_id = ? RETURNING cancel_requested",
        )
        .map_err(backend)?;
    let mut reply = HeartbeatReply {
        unknown_worker: known == 0,
        ..HeartbeatReply::default()
    };
    for fence in &params.running {
        let renewed: Option<bool> = stmt
            .query_row(
                params![
                    lease_until,
                    fence.job_id.as_str(),
                    fence.attempt,
                    fence.worker_id
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend)?;
        match renewed {
            None => reply.lost.push(fence.job_id.clone()),
            Some(true) => reply.cancel_requested.push(fence.job_id.clone()),
            Some(false) => {}
        }
    }
    Ok(reply)
}

pub(crate) fn finish(
    conn: &Connection,
    ctx: &mut WriteCtx,
    outcomes: &[(Fence, Outcome)],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(outcomes.len());
    for (fence, outcome) in outcomes {
        results.push(finish_one(conn, ctx, fence, outcome)?);
    }
    Ok(results)
}

/// The outer `Result` is a database failure (rolls back the group's op);
/// the inner one is this attempt's fate (`LeaseLost` when fenced out).
fn finish_one(
    conn: &Connection,
    ctx: &mut WriteCtx,
    fence: &Fence,
    outcome: &Outcome,
) -> Result<Result<(), StoreError>, StoreError> {
    const FENCE: &str = "WHERE id = :id AND status = 'running' AND attempt = :attempt \
                         AND worker_id = :worker";
    let now = ctx.now.as_micros();
    // The row persists the outcome; the event says what it changed.
    let set = match outcome {
        Outcome::Completed { .. } => "status = 'completed', result = :text, error = NULL, finished = :now, lease_until = NULL",
        Outcome::Failed {
            retry_at: Some(_), ..
        } => "status = 'new', error = :text, run_at = :retry_at, progress = NULL, worker_id = NULL, lease_until = NULL",
        Outcome::Failed { retry_at: None, .. } => "status = 'failed', error = :text, finished = :now, lease_until = NULL",
        Outcome::Canceled { .. } => "status = 'canceled', finished = :now, lease_until = NULL",
        Outcome::Released => "status = 'new', attempt = attempt - 1, progress = NULL, started = NULL, worker_id = NULL, lease_until = NULL",
    };
    let text = match outcome {
        Outcome::Completed { result } => Some(to_json(result)),
        Outcome::Failed { error, .. } => Some(to_json(error)),
        _ => None,
    };
    let at = match outcome {
        Outcome::Failed {
            retry_at: Some(at), ..
        } => at.as_micros(),
        _ => now,
    };
    let sql = format!(
        "UPDATE jobs SET {set}, updated = :now, event_seq = event_seq + 1 {FENCE} {LEAN_RETURNING}"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let job_id = FenceJobId(&fence.job_id);
    let mut bound: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
        (":id", &job_id),
        (":attempt", &fence.attempt),
        (":worker", &fence.worker_id),
        (":now", &now),
    ];
    if sql.contains(":text") {
        bound.push((":text", &text));
    }
    if sql.contains(":retry_at") {
        bound.push((":retry_at", &at));
    }
    let changed = stmt
        .query_row(bound.as_slice(), |row| lean_from_row(&fence.job_id, row))
        .optional()
        .map_err(backend)?;
    match changed {
        Some(changed) => {
            record_change(ctx, changed, &outcome.change(fence.attempt))?;
            Ok(Ok(()))
        }
        None => Ok(Err(fenced_out(conn, fence)?)),
    }
}

/// A completion made ready outside the writer: its JSON already written.
pub(crate) struct PreparedCompletion {
    fence: Fence,
    /// `fence.job_id` as the text column takes it.
    id: String,
    result: String,
    event: PreparedEvent,
}

/// The batch as completions, if that is all it holds (a worker's usual
/// batch); a mixed batch goes outcome by outcome.
pub(crate) fn prepare_completions(
    outcomes: &[(Fence, Outcome)],
) -> Option<Vec<PreparedCompletion>> {
    outcomes
        .iter()
        .map(|(fence, outcome)| match outcome {
            Outcome::Completed { result } => {
                let event = PreparedEvent::new(&outcome.change(fence.attempt));
                Some(PreparedCompletion {
                    fence: fence.clone(),
                    id: fence.job_id.as_str().to_owned(),
                    result: to_json(result),
                    event,
                })
            }
            _ => None,
        })
        .collect()
}

static COMPLETE: ChunkedSql = ChunkedSql::new(|rows| {
    format!(
        "UPDATE jobs SET status = 'completed', result = v.column4, error = NULL, finished = ?1, \
         lease_until = NULL, updated = ?1, event_seq = event_seq + 1 \
         FROM (VALUES {}) AS v \
         WHERE jobs.id = v.column1 AND jobs.status = 'running' \
         AND jobs.attempt = v.column2 AND jobs.worker_id = v.column3 \
         RETURNING jobs.id, app, command, status, seq, event_seq, attempt",
        placeholders(rows, 4)
    )
});

/// Completes a batch in a few statements (not one per job); each job is
/// fenced on its own, and its answer is in the batch's order.
pub(crate) fn complete_many(
    conn: &Connection,
    ctx: &mut WriteCtx,
    done: &[PreparedCompletion],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let now = ctx.now.as_micros();
    // By id, with the attempt that completed: a batch may hold two
    // attempts of one job, of which only the current one matched a row.
    let mut changed: std::collections::HashMap<String, (u32, EventTarget)> =
        std::collections::HashMap::with_capacity(done.len());
    for piece in pieces(done) {
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + piece.len() * 4);
        values.push(&now);
        for completion in piece {
            values.extend([
                &completion.id as &dyn rusqlite::ToSql,
                &completion.fence.attempt,
                &completion.fence.worker_id,
                &completion.result,
            ]);
        }
        let mut stmt = conn
            .prepare_cached(COMPLETE.for_rows(piece.len()))
            .map_err(backend)?;
        let mut answers = stmt.query(values.as_slice()).map_err(backend)?;
        while let Some(row) = answers.next().map_err(backend)? {
            let id: String = row.get(0).map_err(backend)?;
            let target = EventTarget {
                job_id: JobId::from(id.clone()),
                app: row.get(1).map_err(backend)?,
                command: row.get(2).map_err(backend)?,
                status: status_column(row, 3).map_err(backend)?,
                seq: row.get(4).map_err(backend)?,
                event_seq: row.get(5).map_err(backend)?,
            };
            let attempt: u32 = row.get(6).map_err(backend)?;
            changed.insert(id, (attempt, target));
        }
    }
    let mut results = Vec::with_capacity(done.len());
    for completion in done {
        let target = match changed.get(&completion.id) {
            Some((attempt, _)) if *attempt == completion.fence.attempt => {
                changed.remove(&completion.id)
            }
            _ => None,
        };
        results.push(match target {
            Some((_, target)) => {
                record_prepared_event(ctx, target, &completion.event)?;
                Ok(())
            }
            None => Err(fenced_out(conn, &completion.fence)?),
        });
    }
    Ok(results)
}

/// Why a fenced write matched no row: the job is gone, or moved on.
fn fenced_out(conn: &Connection, fence: &Fence) -> Result<StoreError, StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?")
        .map_err(backend)?
        .exists([fence.job_id.as_str()])
        .map_err(backend)?;
    Ok(if exists {
        StoreError::LeaseLost {
            job_id: fence.job_id.clone(),
            attempt: fence.attempt,
        }
    } else {
        StoreError::NotFound(fence.job_id.clone())
    })
}

impl rusqlite::ToSql for FenceJobId<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.as_str().to_sql()
    }
}
struct FenceJobId<'a>(&'a JobId);

pub(crate) fn report_progress(
    conn: &Connection,
    ctx: &mut WriteCtx,
    fence: &Fence,
    progress: &Progress,
) -> Result<(), StoreError> {
    let progress = progress.as_reported(ctx.now);
    let text = to_json(&progress);
    set_while_running(
        conn,
        ctx,
        fence,
        "progress",
        &text,
        Change::Progress(progress),
    )
}

/// Sets one JSON column of the job a running attempt holds (fenced), and
/// records the event that says so: progress and checkpoints.
fn set_while_running(
    conn: &Connection,
    ctx: &mut WriteCtx,
    fence: &Fence,
    column: &'static str,
    text: &str,
    change: Change,
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE jobs SET {column} = ?, updated = ?, event_seq = event_seq + 1 \
         WHERE id = ? AND status = 'running' AND attempt = ? AND worker_id = ? {LEAN_RETURNING}"
    );
    let changed = conn
        .prepare_cached(&sql)
        .map_err(backend)?
        .query_row(
            params![
                text,
                ctx.now.as_micros(),
                FenceJobId(&fence.job_id),
                fence.attempt,
                fence.worker_id
            ],
            |row| lean_from_row(&fence.job_id, row),
        )
        .optional()
        .map_err(backend)?;
    match changed {
        Some(changed) => record_change(ctx, changed, &change),
        None => Err(fenced_out(conn, fence)?),
    }
}

/// Pauses `queue` (or resumes it): claims skip a paused queue.
pub(crate) fn pause_queue(
    conn: &Connection,
    ctx: &mut WriteCtx,
    queue: &str,
    pause: bool,
) -> Result<(), StoreError> {
    if pause {
        conn.prepare_cached("INSERT OR IGNORE INTO paused_queues (queue, paused_at) VALUES (?, ?)")
            .and_then(|mut stmt| stmt.execute(params![queue, ctx.now.as_micros()]))
    } else {
        conn.prepare_cached("DELETE FROM paused_queues WHERE queue = ?")
            .and_then(|mut stmt| stmt.execute([queue]))
    }
    .map_err(backend)?;
    Ok(())
}

/// Stores a running attempt's checkpoint (`text`, its JSON), fenced, with
/// an event carrying it.
pub(crate) fn save_checkpoint(
    conn: &Connection,
    ctx: &mut WriteCtx,
    fence: &Fence,
    text: &str,
    checkpoint: Value,
) -> Result<(), StoreError> {
    let change = Change::Checkpoint { checkpoint };
    set_while_running(conn, ctx, fence, "checkpoint", text, change)
}

pub(crate) fn append_log(
    conn: &Connection,
    ctx: &mut WriteCtx,
    fence: &Fence,
    line: &str,
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE jobs SET event_seq = event_seq + 1 \
         WHERE id = ? AND status = 'running' AND attempt = ? AND worker_id = ? {LEAN_RETURNING}"
    );
    let changed = conn
        .prepare_cached(&sql)
        .map_err(backend)?
        .query_row(
            params![FenceJobId(&fence.job_id), fence.attempt, fence.worker_id],
            |row| lean_from_row(&fence.job_id, row),
        )
        .optional()
        .map_err(backend)?;
    match changed {
        Some(changed) => {
            let logged = Change::Log {
                line: line.to_owned(),
                attempt: fence.attempt,
            };
            record_change(ctx, changed, &logged)
        }
        None => Err(fenced_out(conn, fence)?),
    }
}

fn current_status(conn: &Connection, job_id: &JobId) -> Result<JobStatus, StoreError> {
    conn.prepare_cached("SELECT status FROM jobs WHERE id = ?")
        .map_err(backend)?
        .query_row([job_id.as_str()], |row| status_column(row, 0))
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::NotFound(job_id.clone()))
}

/// Applies `set` to the job if its status is still `expected`.
/// `set` may use `?1` (now) and `?4` (`text`).
fn update_if_status(
    conn: &Connection,
    ctx: &mut WriteCtx,
    job_id: &JobId,
    expected: JobStatus,
    set: &str,
    text: Option<String>,
    change: &Change,
) -> Result<Job, StoreError> {
    let sql = format!(
        "UPDATE jobs SET {set}, updated = ?1, event_seq = event_seq + 1 \
         WHERE id = ?2 AND status = ?3 {}",
        returning()
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let now = ctx.now.as_micros();
    let values: [&dyn rusqlite::ToSql; 4] = [&now, &job_id.as_str(), &expected.as_str(), &text];
    let used = stmt.parameter_count();
    let changed = stmt
        .query_row(&values[..used], changed_from_row)
        .map_err(backend)?;
    record_change(ctx, &changed, change)?;
    changed.row.into_job().map_err(backend)
}

/// Cancels the job, then every job under it (children, theirs...) that
/// has not ended, in the same transaction.
pub(crate) fn cancel(
    conn: &Connection,
    ctx: &mut WriteCtx,
    job_id: &JobId,
) -> Result<Job, StoreError> {
    let job = cancel_one(conn, ctx, job_id, "canceled before it started")?;
    let descendants: Vec<String> = conn
        .prepare_cached(
            "WITH RECURSIVE below(id) AS (SELECT id FROM jobs WHERE parent_id = ?1 \
             UNION SELECT j.id FROM jobs j JOIN below ON j.parent_id = below.id) \
             SELECT below.id FROM below JOIN jobs USING (id) \
             WHERE jobs.status IN ('new', 'running')",
        )
        .map_err(backend)?
        .query_map([job_id.as_str()], |row| row.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let reason = format!("canceled with {job_id}");
    for id in descendants {
        match cancel_one(conn, ctx, &JobId::from(id), &reason) {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(job)
}

fn cancel_one(
    conn: &Connection,
    ctx: &mut WriteCtx,
    job_id: &JobId,
    reason: &str,
) -> Result<Job, StoreError> {
    let status = current_status(conn, job_id)?;
    let change = on_cancel(status, reason).map_err(|_| StoreError::Conflict {
        job_id: job_id.clone(),
        status,
        action: "cancel a finished job",
    })?;
    // A running job keeps running until its handler has stopped.
    let set = match change {
        Change::CancelRequested => "cancel_requested = 1",
        _ => "status = 'canceled', finished = ?1",
    };
    update_if_status(conn, ctx, job_id, status, set, None, &change)
}

pub(crate) fn retry(
    conn: &Connection,
    ctx: &mut WriteCtx,
    job_id: &JobId,
    clear_checkpoint: bool,
) -> Result<Job, StoreError> {
    let status = current_status(conn, job_id)?;
    let change = on_retry(status, clear_checkpoint).map_err(|_| StoreError::Conflict {
        job_id: job_id.clone(),
        status,
        action: "retry a job that is not failed or canceled",
    })?;
    update_if_status(
        conn,
        ctx,
        job_id,
        status,
        if clear_checkpoint {
            "status = 'new', attempt = 0, run_at = ?1, result = NULL, error = NULL, \
             progress = NULL, cancel_requested = 0, worker_id = NULL, lease_until = NULL, \
             started = NULL, finished = NULL, checkpoint = NULL"
        } else {
            "status = 'new', attempt = 0, run_at = ?1, result = NULL, error = NULL, \
             progress = NULL, cancel_requested = 0, worker_id = NULL, lease_until = NULL, \
             started = NULL, finished = NULL"
        },
        None,
        &change,
    )
}

pub(crate) fn reap_expired(
    conn: &Connection,
    ctx: &mut WriteCtx,
) -> Result<Vec<JobId>, StoreError> {
    let now = ctx.now.as_micros();
    let expired: Vec<(String, u32, u32, bool)> = conn
        .prepare_cached(
            "SELECT id, attempt, max_attempts, cancel_requested FROM jobs \
             WHERE status = 'running' AND lease_until < ? ORDER BY lease_until LIMIT 1000",
        )
        .map_err(backend)?
        .query_map([now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let mut reaped = Vec::with_capacity(expired.len());
    for (id, attempt, max_attempts, cancel_requested) in expired {
        let job_id = JobId::from(id);
        let change = on_lease_expired(attempt, max_attempts, cancel_requested, ctx.now);
        let set = match change.status() {
            JobStatus::Canceled => "status = 'canceled', finished = ?1, lease_until = NULL",
            JobStatus::Failed => "status = 'failed', finished = ?1, lease_until = NULL, error = ?4",
            // Back to new; run_at stays: the job keeps its place in the queue.
            _ => {
                "status = 'new', progress = NULL, worker_id = NULL, lease_until = NULL, error = ?4"
            }
        };
        let text = change.error().map(to_json);
        update_if_status(conn, ctx, &job_id, JobStatus::Running, set, text, &change)?;
        reaped.push(job_id);
    }
    let cutoff = ctx.now.minus(WORKER_TTL).as_micros();
    conn.prepare_cached("DELETE FROM workers WHERE last_heartbeat < ?")
        .and_then(|mut stmt| stmt.execute([cutoff]))
        .map_err(backend)?;
    Ok(reaped)
}

/// Deletes the jobs that ended with one of `statuses` (checked terminal
/// status names, so safe to write into the SQL) before `before`.
pub(crate) fn prune(
    conn: &Connection,
    _ctx: &mut WriteCtx,
    statuses: &[&'static str],
    before: Timestamp,
) -> Result<u64, StoreError> {
    if statuses.is_empty() {
        return Ok(0);
    }
    let before = before.as_micros();
    let ended = format!(
        "finished < ?1 AND status IN ({})",
        statuses
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    conn.execute(
        &format!(
            "INSERT INTO meta (key, value) SELECT 'events_floor', max(id) FROM events \
             WHERE job_seq IN (SELECT seq FROM jobs WHERE {ended}) HAVING max(id) IS NOT NULL \
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
        ),
        [before],
    )
    .map_err(backend)?;
    conn.execute(
        &format!("DELETE FROM events WHERE job_seq IN (SELECT seq FROM jobs WHERE {ended})"),
        [before],
    )
    .map_err(backend)?;
    let pruned = conn
        .execute(&format!("DELETE FROM jobs WHERE {ended}"), [before])
        .map_err(backend)?;
    Ok(pruned as u64)
}

pub(crate) fn register_worker(
    conn: &Connection,
    ctx: &mut WriteCtx,
    worker: &WorkerRegistration,
) -> Result<(), StoreError> {
    let now = ctx.now.as_micros();
    let names: Vec<String> = worker
        .commands
        .iter()
        .map(|c| format!("{}.{}", c.app, c.name))
        .collect();
    conn.execute(
        "INSERT OR REPLACE INTO workers (id, host, pid, queues, commands, slots, started, \
         last_heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            worker.worker_id,
            worker.host,
            worker.pid,
            to_json(&worker.queues),
            to_json(&names),
            worker.slots as i64,
            now,
            now
        ],
    )
    .map_err(backend)?;
    for command in &worker.commands {
        conn.execute(
            "INSERT OR REPLACE INTO commands (app, name, description, input_schema, \
             output_schema, defaults, worker_id, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                command.app,
                command.name,
                command.description,
                to_json(&command.input_schema),
                command.output_schema.as_ref().map(to_json),
                to_json(&command.defaults),
                worker.worker_id,
                now
            ],
        )
        .map_err(backend)?;
    }
    Ok(())
}

pub(crate) fn deregister_worker(
    conn: &Connection,
    _ctx: &mut WriteCtx,
    worker_id: &str,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM workers WHERE id = ?", [worker_id])
        .map_err(backend)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_operation_gets_its_event_data_again() {
        let change = Change::Completed {
            attempt: 2,
            result: serde_json::json!({"words": [1, 2]}),
        };
        let data = change.data();
        let event = PreparedEvent::new(&change);
        assert_eq!(event.take_value(), data, "the first run takes the value");
        assert_eq!(event.take_value(), data, "a rerun parses it from the text");
        assert_eq!(event.text, to_json(&data));
    }

    fn plan(sql: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("plan.db")).unwrap();
        crate::migrations::migrate(&mut conn).unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        let rows = stmt
            .query_map(rusqlite::params_from_iter(nulls), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("\n")
    }

    /// With millions of queued jobs a claim must walk the ready index in
    /// order and stop, never sort every ready job.
    #[test]
    fn claims_walk_the_ready_index_without_sorting() {
        for commands in [None, Some(1), Some(3)] {
            let plan = plan(&claim_sql(commands));
            assert!(plan.contains("jobs_ready"), "{commands:?}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{commands:?}: {plan}");
        }
    }
}
