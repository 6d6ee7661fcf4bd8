//! Rows to errand's types, and time conversions.

use chrono::{DateTime, Utc};
use errand_core::{EventKind, Job, JobEvent, JobId, JobStatus, Timestamp};
use errand_store::StoreError;
use serde_json::Value;
use tokio_postgres::Row;

/// The job columns, prefixed for use in a query over `errand_jobs j`.
pub(crate) const JOB_COLUMNS: &str = "j.id, j.app, j.command, j.input, j.context, j.status, \
     j.result, j.error, j.progress, j.attempt, j.max_attempts, j.retry, j.priority, j.queue, \
     j.run_at, j.timeout_secs, j.idempotency_key, j.parent_id, j.cancel_requested, j.worker_id, \
     j.lease_until, j.created, j.updated, j.started, j.finished, j.event_seq, j.seq, \
     j.checkpoint, j.limit_key, j.tags, j.webhook";

pub(crate) fn ts(at: Timestamp) -> DateTime<Utc> {
    at.to_datetime()
}

pub(crate) fn time(row: &Row, column: &str) -> Result<Timestamp, StoreError> {
    let at: DateTime<Utc> = row.try_get(column).map_err(decode)?;
    Ok(Timestamp::from_datetime(at))
}

pub(crate) fn maybe_time(row: &Row, column: &str) -> Result<Option<Timestamp>, StoreError> {
    let at: Option<DateTime<Utc>> = row.try_get(column).map_err(decode)?;
    Ok(at.map(Timestamp::from_datetime))
}

fn json<T: serde::de::DeserializeOwned>(row: &Row, column: &str) -> Result<Option<T>, StoreError> {
    let value: Option<Value> = row.try_get(column).map_err(decode)?;
    value
        .map(|v| {
            serde_json::from_value(v).map_err(|e| StoreError::Backend(format!("{column}: {e}")))
        })
        .transpose()
}

pub(crate) fn status(text: &str) -> Result<JobStatus, StoreError> {
    JobStatus::parse(text).ok_or_else(|| StoreError::Backend(format!("unknown status {text:?}")))
}

pub(crate) fn decode(err: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("unexpected column: {err}"))
}

pub(crate) fn job(row: &Row) -> Result<Job, StoreError> {
    let get_str = |c: &str| row.try_get::<_, String>(c).map_err(decode);
    let error: Option<errand_core::JobError> = json(row, "error")?;
    Ok(Job {
        job_id: JobId::from(get_str("id")?),
        app: get_str("app")?,
        command: get_str("command")?,
        input: json(row, "input")?.unwrap_or(Value::Null),
        context: json(row, "context")?,
        status: status(&get_str("status")?)?,
        result: json(row, "result")?,
        error_message: error.as_ref().map(|e| e.message.clone()),
        error,
        progress: json(row, "progress")?,
        attempt: row.try_get::<_, i32>("attempt").map_err(decode)? as u32,
        max_attempts: row.try_get::<_, i32>("max_attempts").map_err(decode)? as u32,
        retry: json(row, "retry")?.unwrap_or_default(),
        priority: row.try_get("priority").map_err(decode)?,
        queue: get_str("queue")?,
        run_at: time(row, "run_at")?,
        timeout_secs: row.try_get("timeout_secs").map_err(decode)?,
        idempotency_key: row.try_get("idempotency_key").map_err(decode)?,
        parent_id: row
            .try_get::<_, Option<String>>("parent_id")
            .map_err(decode)?
            .map(JobId::from),
        cancel_requested: row.try_get("cancel_requested").map_err(decode)?,
        worker_id: row.try_get("worker_id").map_err(decode)?,
        lease_until: maybe_time(row, "lease_until")?,
        created: time(row, "created")?,
        updated: time(row, "updated")?,
        started: maybe_time(row, "started")?,
        finished: maybe_time(row, "finished")?,
        event_seq: row.try_get("event_seq").map_err(decode)?,
        checkpoint: row.try_get("checkpoint").map_err(decode)?,
        limit_key: row.try_get("limit_key").map_err(decode)?,
        tags: json(row, "tags")?.unwrap_or_default(),
        webhook: json(row, "webhook")?,
        held: None,
    })
}

/// An event row from a query selecting `e.*` plus `job_id`, `app`, `command`.
pub(crate) fn event(row: &Row) -> Result<JobEvent, StoreError> {
    let kind: String = row.try_get("kind").map_err(decode)?;
    Ok(JobEvent {
        id: row.try_get("event_id").map_err(decode)?,
        job_id: JobId::from(row.try_get::<_, String>("job_id").map_err(decode)?),
        seq: row.try_get("seq").map_err(decode)?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| StoreError::Backend(format!("unknown event kind {kind:?}")))?,
        status: status(&row.try_get::<_, String>("status").map_err(decode)?)?,
        app: row.try_get("app").map_err(decode)?,
        command: row.try_get("command").map_err(decode)?,
        data: row.try_get("data").map_err(decode)?,
        at: time(row, "at")?,
    })
}

/// Maps a database error: a lost or refused connection, a server shutting
/// down or a pool timeout is transient; anything else is unexpected.
pub(crate) fn db(err: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let transient = err.is_closed()
        || err.code().is_some_and(|code| {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::CONNECTION_EXCEPTION,
                SqlState::CONNECTION_FAILURE,
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
            ]
            .contains(code)
        })
        || std::error::Error::source(&err)
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some());
    // tokio-postgres says only "db error"; the server's message says what.
    let message = match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(&err) {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
    };
    // Class 22, data exceptions: what a client sent cannot be stored as it
    // is (jsonb refuses \u0000, text refuses NUL bytes). The client's
    // mistake, not the store's.
    let refused_data = err.code().is_some_and(|code| code.code().starts_with("22"));
    if transient {
        StoreError::Unavailable(message)
    } else if refused_data {
        StoreError::Invalid(message)
    } else {
        StoreError::Backend(message)
    }
}

pub(crate) fn pool(err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => db(err),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// Connections and transactions that cache prepared statements.
pub(crate) trait CachesStatements {
    async fn prepare_cached_sql(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error>;

    /// Runs a prepared statement: a claim runs alone or in a transaction.
    async fn query_prepared(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>;
}

impl CachesStatements for deadpool_postgres::ClientWrapper {
    async fn prepare_cached_sql(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        self.prepare_cached(sql).await
    }

    async fn query_prepared(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.query(statement, params).await
    }
}

impl CachesStatements for deadpool_postgres::Transaction<'_> {
    async fn prepare_cached_sql(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        self.prepare_cached(sql).await
    }

    async fn query_prepared(
        &self,
        statement: &tokio_postgres::Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.query(statement, params).await
    }
}

/// `sql` prepared once per connection and cached: a statement costs one
/// round trip instead of two (prepare, then execute), which on a network
/// is most of its cost.
pub(crate) async fn prepared(
    client: &impl CachesStatements,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached_sql(sql).await.map_err(db)
}
