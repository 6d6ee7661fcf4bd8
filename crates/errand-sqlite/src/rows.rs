//! Turning rows into errand's types, and errand's types into column values.

use errand_core::{
    EventKind, Job, JobError, JobEvent, JobId, JobStatus, Progress, RetryPolicy, Timestamp,
};
use errand_store::StoreError;
use rusqlite::Row;
use serde_json::Value;

/// The columns [`job_from_row`] reads, in its order.
pub(crate) const JOB_COLUMNS: &str = "id, app, command, input, context, status, result, error, \
     progress, attempt, max_attempts, retry, priority, queue, run_at, timeout_secs, \
     idempotency_key, parent_id, cancel_requested, worker_id, lease_until, created, updated, \
     started, finished, seq, event_seq";

/// The columns [`event_from_row`] reads, with `events` as `e` and `jobs` as `j`.
pub(crate) const EVENT_COLUMNS: &str =
    "e.id, j.id, e.seq, e.kind, e.status, j.app, j.command, e.data, e.at";

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let error: Option<JobError> = json_column(row, 7)?;
    Ok(Job {
        job_id: JobId::from(row.get::<_, String>(0)?),
        app: row.get(1)?,
        command: row.get(2)?,
        input: json_column(row, 3)?.unwrap_or(Value::Null),
        context: json_column(row, 4)?,
        status: status_column(row, 5)?,
        result: json_column(row, 6)?,
        error_message: error.as_ref().map(|e| e.message.clone()),
        error,
        progress: json_column::<Progress>(row, 8)?,
        attempt: row.get(9)?,
        max_attempts: row.get(10)?,
        retry: json_column::<RetryPolicy>(row, 11)?.unwrap_or_default(),
        priority: row.get(12)?,
        queue: row.get(13)?,
        run_at: Timestamp::from_micros(row.get(14)?),
        timeout_secs: row.get(15)?,
        idempotency_key: row.get(16)?,
        parent_id: row.get::<_, Option<String>>(17)?.map(JobId::from),
        cancel_requested: row.get(18)?,
        worker_id: row.get(19)?,
        lease_until: time_column(row, 20)?,
        created: Timestamp::from_micros(row.get(21)?),
        updated: Timestamp::from_micros(row.get(22)?),
        started: time_column(row, 23)?,
        finished: time_column(row, 24)?,
        event_seq: row.get(26)?,
    })
}

/// The row's `seq` (the column after the job's), for ordering and cursors.
pub(crate) fn seq_of_row(row: &Row<'_>) -> rusqlite::Result<i64> {
    row.get(25)
}

pub(crate) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<JobEvent> {
    let kind: String = row.get(3)?;
    Ok(JobEvent {
        id: row.get(0)?,
        job_id: JobId::from(row.get::<_, String>(1)?),
        seq: row.get(2)?,
        kind: EventKind::parse(&kind).ok_or_else(|| bad_value(3, &kind))?,
        status: status_column(row, 4)?,
        app: row.get(5)?,
        command: row.get(6)?,
        data: json_column(row, 7)?.unwrap_or(Value::Null),
        at: Timestamp::from_micros(row.get(8)?),
    })
}

pub(crate) fn status_column(row: &Row<'_>, index: usize) -> rusqlite::Result<JobStatus> {
    let text: String = row.get(index)?;
    JobStatus::parse(&text).ok_or_else(|| bad_value(index, &text))
}

fn time_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row
        .get::<_, Option<i64>>(index)?
        .map(Timestamp::from_micros))
}

pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    match row.get_ref(index)?.as_str_or_null()? {
        None => Ok(None),
        Some(text) => serde_json::from_str(text).map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, e.into())
        }),
    }
}

fn bad_value(index: usize, text: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("unexpected value {text:?}").into(),
    )
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("errand's own types always serialize")
}

/// Maps a SQLite error to the store's error: a busy or locked database is
/// transient, anything else is unexpected.
pub(crate) fn backend(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match err.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked | CannotOpen | DiskFull | SystemIoFailure) => {
            StoreError::Unavailable(err.to_string())
        }
        _ => StoreError::Backend(err.to_string()),
    }
}
