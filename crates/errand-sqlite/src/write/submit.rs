//! New jobs: one, or a batch in one transaction.

use errand_core::{Change, JobId, JobStatus, Label, Timestamp};
use errand_store::{NewJob, StoreError, SubmitReceipt};
use rusqlite::{params, Connection, OptionalExtension};

use super::events::*;
use crate::rows::{backend, status_column, to_json};
use crate::writer::WriteCtx;

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
    /// The tags as JSON, `None` when there are none.
    tags: Option<String>,
    labels: Vec<Label>,
    /// The webhook as JSON, `None` when there is none.
    webhook: Option<String>,
    event: PreparedEvent,
}

impl PreparedJob {
    /// `now` stands in for a missing `run_at`.
    pub(crate) fn new(job: NewJob, now: Timestamp) -> Result<Self, String> {
        job.validate()?;
        let run_at = job.run_at.unwrap_or(now);
        let event = PreparedEvent::new(&Change::Submitted { run_at });
        let labels = job.labels();
        Ok(Self {
            tags: (!job.tags.is_empty()).then(|| to_json(&job.tags)),
            labels,
            webhook: job.webhook.as_ref().map(to_json),
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
         event_seq, tags, webhook, limit_key) VALUES (?1, ?2, ?3, ?4, ?5, 'new', ?6, ?7, ?8, \
         ?9, ?10, ?11, ?12, ?13, ?14, ?14, 1, ?15, ?16, ",
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
            job.tags,
            job.webhook,
        ])
        .map_err(backend)?;
    let seq = conn.last_insert_rowid();
    if !job.labels.is_empty() {
        let mut insert = conn
            .prepare_cached("INSERT INTO job_labels (key, value, job_seq) VALUES (?, ?, ?)")
            .map_err(backend)?;
        for label in &job.labels {
            insert
                .execute(params![label.key, label.value, seq])
                .map_err(backend)?;
        }
    }
    let target = EventTarget {
        job_id: job.job_id.clone(),
        app: job.app.clone(),
        command: job.command.clone(),
        status: JobStatus::New,
        seq,
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
