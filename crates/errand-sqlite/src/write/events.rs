//! Appending a change's event to the job's log, for the writes that change a job.

use errand_core::{Change, EventKind, JobId, JobStatus};
use errand_store::StoreError;
use rusqlite::Connection;
use serde_json::Value;

use crate::chunks::{pieces, placeholders, ChunkedSql};
use crate::rows::{backend, status_column, to_json, JobRow, JOB_COLUMNS};
use crate::writer::WriteCtx;

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
pub(super) struct EventTarget {
    pub(super) job_id: JobId,
    pub(super) app: String,
    pub(super) command: String,
    pub(super) status: JobStatus,
    pub(super) seq: i64,
    pub(super) event_seq: i64,
}

pub(super) const LEAN_RETURNING: &str = "RETURNING app, command, status, seq, event_seq";

pub(super) fn lean_from_row(
    job_id: &JobId,
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<EventTarget> {
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
pub(super) fn record_change(
    ctx: &mut WriteCtx,
    changed: impl Into<EventTarget>,
    change: &Change,
) -> Result<(), StoreError> {
    let data = change.data();
    let text = to_json(&data);
    record_event_text(ctx, changed, change.kind(), text, data)
}

/// [`record_change`] with an event made ready off the writer.
pub(super) fn record_prepared_event(
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
    pub(super) text: String,
    value: std::cell::Cell<Option<Value>>,
}

impl PreparedEvent {
    pub(super) fn new(change: &Change) -> Self {
        let value = change.data();
        Self {
            kind: change.kind(),
            text: to_json(&value),
            value: std::cell::Cell::new(Some(value)),
        }
    }

    pub(super) fn take_value(&self) -> Value {
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
