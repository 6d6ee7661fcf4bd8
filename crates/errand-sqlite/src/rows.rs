//! Turning rows into errand's types, and errand's types into column values.

use errand_core::{EventKind, Job, JobError, JobEvent, JobId, JobStatus, RetryPolicy, Timestamp};
use errand_store::StoreError;
use rusqlite::Row;
use serde_json::Value;

/// The columns [`job_from_row`] reads, in its order.
pub(crate) const JOB_COLUMNS: &str = "id, app, command, input, context, status, result, error, \
     progress, attempt, max_attempts, retry, priority, queue, run_at, timeout_secs, \
     idempotency_key, parent_id, cancel_requested, worker_id, lease_until, created, updated, \
     started, finished, seq, event_seq, checkpoint, limit_key, tags, webhook";

/// The columns [`event_from_row`] reads, with `events` as `e` and `jobs` as `j`.
pub(crate) const EVENT_COLUMNS: &str =
    "e.id, j.id, e.seq, e.kind, e.status, j.app, j.command, e.data, e.at";

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    JobRow::read(row)?.into_job()
}

/// A job row as read, its JSON columns still text. The SQLite writer
/// thread, errand's bottleneck, hands claimed jobs back in this form and
/// the caller's thread parses them.
pub(crate) struct JobRow {
    /// The job, its JSON fields not yet filled in.
    pub job: Job,
    json: JsonColumns,
}

struct JsonColumns {
    input: Option<String>,
    context: Option<String>,
    result: Option<String>,
    error: Option<String>,
    progress: Option<String>,
    retry: Option<String>,
    checkpoint: Option<String>,
    tags: Option<String>,
    webhook: Option<String>,
}

impl JobRow {
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        let json = JsonColumns {
            input: row.get(3)?,
            context: row.get(4)?,
            result: row.get(6)?,
            error: row.get(7)?,
            progress: row.get(8)?,
            retry: row.get(11)?,
            checkpoint: row.get(27)?,
            tags: row.get(29)?,
            webhook: row.get(30)?,
        };
        let job = Job {
            job_id: JobId::from(row.get::<_, String>(0)?),
            app: row.get(1)?,
            command: row.get(2)?,
            input: Value::Null,
            context: None,
            status: status_column(row, 5)?,
            result: None,
            error_message: None,
            error: None,
            progress: None,
            attempt: row.get(9)?,
            max_attempts: row.get(10)?,
            retry: RetryPolicy::default(),
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
            checkpoint: None,
            limit_key: row.get(28)?,
            tags: Vec::new(),
            webhook: None,
            held: None,
        };
        Ok(Self { job, json })
    }

    /// The whole job, its JSON columns parsed.
    pub(crate) fn into_job(mut self) -> rusqlite::Result<Job> {
        self.parse()?;
        Ok(self.job)
    }

    /// Parses the JSON columns into `self.job`.
    pub(crate) fn parse(&mut self) -> rusqlite::Result<()> {
        let (job, json) = (&mut self.job, &mut self.json);
        job.input = parse_json(3, json.input.take())?.unwrap_or(Value::Null);
        job.context = parse_json(4, json.context.take())?;
        job.result = parse_json(6, json.result.take())?;
        job.error = parse_json::<JobError>(7, json.error.take())?;
        job.error_message = job.error.as_ref().map(|e| e.message.clone());
        job.progress = parse_json(8, json.progress.take())?;
        job.retry = parse_json(11, json.retry.take())?.unwrap_or_default();
        job.checkpoint = parse_json(27, json.checkpoint.take())?;
        job.tags = parse_json(29, json.tags.take())?.unwrap_or_default();
        job.webhook = parse_json(30, json.webhook.take())?;
        Ok(())
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    index: usize,
    text: Option<String>,
) -> rusqlite::Result<Option<T>> {
    text.map(|text| serde_json::from_str(&text).map_err(|e| json_error(index, e)))
        .transpose()
}

fn json_error(index: usize, err: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, err.into())
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
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| json_error(index, e)),
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
