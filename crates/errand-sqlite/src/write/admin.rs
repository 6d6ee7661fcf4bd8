//! What people ask for: cancel (with the jobs under it), retry, pause a queue, prune.

use errand_core::{on_cancel, on_retry, Change, Job, JobId, JobStatus, Timestamp};
use errand_store::counts::CountDelta;
use errand_store::StoreError;
use rusqlite::{params, Connection, OptionalExtension};

use super::events::*;
use crate::rows::{backend, status_column};
use crate::writer::WriteCtx;

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
pub(super) fn update_if_status(
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
    let change = on_cancel(status, reason).map_err(|no| StoreError::refused(job_id, no))?;
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
    let change =
        on_retry(status, clear_checkpoint).map_err(|no| StoreError::refused(job_id, no))?;
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
    let ended = format!("finished < ?1 AND status IN ({})", quoted(statuses));
    delete_where(conn, &ended, &before.as_micros())
}

/// Deletes those of `job_ids` that have ended; the others stay.
pub(crate) fn delete_jobs(
    conn: &Connection,
    _ctx: &mut WriteCtx,
    job_ids: &[errand_core::JobId],
) -> Result<u64, StoreError> {
    let ids = crate::rows::to_json(&job_ids.iter().map(|id| id.as_str()).collect::<Vec<_>>());
    let ended = format!(
        "id IN (SELECT value FROM json_each(?1)) AND status IN ({})",
        quoted(&errand_store::terminal_statuses(&ENDED)?)
    );
    delete_where(conn, &ended, &ids)
}

const ENDED: [errand_core::JobStatus; 3] = [
    errand_core::JobStatus::Completed,
    errand_core::JobStatus::Failed,
    errand_core::JobStatus::Canceled,
];

fn quoted(statuses: &[&'static str]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Deletes the jobs `ended` (SQL on `jobs`, with `?1` bound to `value`)
/// selects, with their events, labels, webhook deliveries and counts.
fn delete_where(
    conn: &Connection,
    ended: &str,
    value: &dyn rusqlite::ToSql,
) -> Result<u64, StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO meta (key, value) SELECT 'events_floor', max(id) FROM events \
             WHERE job_seq IN (SELECT seq FROM jobs WHERE {ended}) HAVING max(id) IS NOT NULL \
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
        ),
        [value],
    )
    .map_err(backend)?;
    for table in ["events", "job_labels", "webhook_deliveries"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE job_seq IN (SELECT seq FROM jobs WHERE {ended})"),
            [value],
        )
        .map_err(backend)?;
    }
    // The counts lose what is about to go, in the same transaction.
    conn.execute(
        &format!(
            "INSERT INTO job_counts (app, command, status, n) \
             SELECT app, command, status, -count(*) FROM jobs WHERE {ended} \
             GROUP BY app, command, status \
             ON CONFLICT (app, command, status) DO UPDATE SET n = n + excluded.n"
        ),
        [value],
    )
    .map_err(backend)?;
    let deleted = conn
        .execute(&format!("DELETE FROM jobs WHERE {ended}"), [value])
        .map_err(backend)?;
    Ok(deleted as u64)
}

/// Adds `deltas` to the jobs counted by command and status.
pub(crate) fn add_counts(conn: &Connection, deltas: &[CountDelta]) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO job_counts (app, command, status, n) VALUES (?, ?, ?, ?) \
             ON CONFLICT (app, command, status) DO UPDATE SET n = n + excluded.n",
        )
        .map_err(backend)?;
    for d in deltas {
        stmt.execute(params![d.app, d.command, d.status.as_str(), d.delta])
            .map_err(backend)?;
    }
    Ok(())
}
