//! What a running attempt writes, fenced: progress, log lines, checkpoints.

use errand_core::{Change, Progress};
use errand_store::{Fence, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{events::*, finish::*};
use crate::rows::{backend, to_json};
use crate::writer::WriteCtx;

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
