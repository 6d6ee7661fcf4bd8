//! How an attempt ended: one outcome at a time, or a worker's batch of completions.

use errand_core::JobId;
use errand_store::{Fence, Outcome, StoreError};
use rusqlite::{Connection, OptionalExtension};

use super::events::*;
use crate::chunks::{pieces, placeholders, ChunkedSql};
use crate::rows::{backend, status_column, to_json};
use crate::writer::WriteCtx;

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
pub(super) fn fenced_out(conn: &Connection, fence: &Fence) -> Result<StoreError, StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?")
        .map_err(backend)?
        .exists([fence.job_id.as_str()])
        .map_err(backend)?;
    Ok(StoreError::fenced_out(fence, exists))
}

impl rusqlite::ToSql for FenceJobId<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.as_str().to_sql()
    }
}
pub(super) struct FenceJobId<'a>(pub(super) &'a JobId);
