//! New jobs: one, or a batch in one statement.

use deadpool_postgres::Transaction;
use errand_core::{Change, EventKind, JobEvent, JobId, JobStatus, Timestamp};
use errand_store::*;
use serde_json::Value;

use super::events::*;
use crate::rows::{self, db, prepared, ts};

/// The insert of one new job and its first event, `$1`–`$17`, shared by
/// both submit paths; each adds what follows it.
const INSERT_ONE: &str = concat!(
    "WITH j AS (INSERT INTO errand_jobs (id, app, command, input, context, \
     status, max_attempts, retry, priority, queue, run_at, timeout_secs, idempotency_key, \
     parent_id, created, updated, event_seq, tags, webhook, limit_key) \
   VALUES ($1, $2, $3, $4, $5, 'new', $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, 1, $16, \
   $17, ",
    crate::limits::limit_key_of!("$2", "$3", "$4::jsonb", "$5::jsonb"),
    ") ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING seq), \
 e AS (INSERT INTO errand_events (job_seq, seq, kind, status, data, at) \
   SELECT j.seq, 1, 'status', 'new', $15, $14 FROM j RETURNING id)"
);

/// A new job's values, in the order of [`INSERT_ONE`]'s parameters.
struct NewRow<'a> {
    job: &'a NewJob,
    job_id: JobId,
    /// `job_id` as the text column takes it.
    id: String,
    parent: Option<&'a str>,
    max_attempts: i32,
    retry: Value,
    run_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    /// The first event's data.
    data: Value,
    /// The tags as a JSON array, `None` when there are none.
    tags: Option<Value>,
    webhook: Option<Value>,
}

impl<'a> NewRow<'a> {
    fn new(job: &'a NewJob, now: Timestamp) -> Self {
        let run_at = job.run_at.unwrap_or(now);
        let job_id = JobId::generate();
        Self {
            job,
            id: job_id.as_str().to_owned(),
            job_id,
            parent: job.parent_id.as_ref().map(JobId::as_str),
            max_attempts: job.retry.max_attempts as i32,
            retry: serde_json::to_value(&job.retry).expect("policies serialize"),
            run_at: ts(run_at),
            now: ts(now),
            data: Change::Submitted { run_at }.data(),
            tags: tags_column(job),
            webhook: webhook_column(job),
        }
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.id,
            &self.job.app,
            &self.job.command,
            &self.job.input,
            &self.job.context,
            &self.max_attempts,
            &self.retry,
            &self.job.priority,
            &self.job.queue,
            &self.run_at,
            &self.job.timeout_secs,
            &self.job.idempotency_key,
            &self.parent,
            &self.now,
            &self.data,
            &self.tags,
            &self.webhook,
        ]
    }

    /// The job's first event, once the insert has given it `id`.
    fn event(&self, id: i64, at: Timestamp) -> JobEvent {
        JobEvent {
            id,
            job_id: self.job_id.clone(),
            seq: 1,
            kind: EventKind::Status,
            status: JobStatus::New,
            app: self.job.app.clone(),
            command: self.job.command.clone(),
            data: self.data.clone(),
            at,
        }
    }
}

pub(crate) async fn submit(
    tx: &Transaction<'_>,
    now: Timestamp,
    job: &NewJob,
    events: &mut Vec<JobEvent>,
) -> Result<SubmitReceipt, StoreError> {
    let new = NewRow::new(job, now);
    let sql = format!("{INSERT_ONE} SELECT e.id FROM e");
    let row = tx
        .query_opt(&prepared(tx, &sql).await?, &new.params())
        .await
        .map_err(db)?;
    let Some(row) = row else {
        // The idempotency key is taken: answer with that job.
        let existing = tx
            .query_one(
                &prepared(
                    tx,
                    "SELECT id, status FROM errand_jobs WHERE idempotency_key = $1",
                )
                .await?,
                &[&job.idempotency_key],
            )
            .await
            .map_err(db)?;
        return Ok(SubmitReceipt {
            job_id: JobId::from(existing.get::<_, String>(0)),
            created: false,
            status: rows::status(existing.get(1))?,
        });
    };
    events.push(new.event(row.get(0), now));
    insert_labels(
        tx,
        std::slice::from_ref(job),
        std::slice::from_ref(&new.job_id),
    )
    .await?;
    Ok(SubmitReceipt {
        job_id: new.job_id,
        created: true,
        status: JobStatus::New,
    })
}

/// A job without an idempotency key, in one statement on its own (no
/// `BEGIN`/`COMMIT` around it): the job row, its event, and the
/// notification other processes listen for, whose payload is the event
/// with the id the insert gave it. One round trip instead of four.
pub(crate) async fn submit_alone(
    client: &deadpool_postgres::ClientWrapper,
    now: Timestamp,
    job: &NewJob,
    origin: &str,
) -> Result<(SubmitReceipt, JobEvent), StoreError> {
    debug_assert!(job.idempotency_key.is_none() && job.labels().is_empty());
    let new = NewRow::new(job, now);
    // The event as listeners decode it; the statement adds its id.
    let mut announced = serde_json::to_value(new.event(0, now)).expect("events serialize");
    announced
        .as_object_mut()
        .expect("an event is an object")
        .remove("id");
    // One statement, committed alone: it counts the new job itself.
    let sql = format!(
        "{INSERT_ONE}, counted AS (INSERT INTO errand_job_counts (app, command, status, n) \
           SELECT $2, $3, 'new', 1 FROM j) \
         SELECT e.id, pg_notify('errand_events', \
           $18 || '|' || jsonb_build_array($19::jsonb || jsonb_build_object('id', e.id))::text) \
         FROM e"
    );
    let mut params = new.params();
    params.push(&origin);
    params.push(&announced);
    let row = client
        .query_one(&prepared(client, &sql).await?, &params)
        .await
        .map_err(db)?;
    let event = new.event(row.get(0), now);
    let receipt = SubmitReceipt {
        job_id: new.job_id.clone(),
        created: true,
        status: JobStatus::New,
    };
    Ok((receipt, event))
}

/// Many new jobs from parallel arrays, `$1`–`$13`, `$15` and `$16`, and `$14` now.
const SUBMIT_MANY: &str = concat!(
    "WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], \
       $5::jsonb[], $6::int[], $7::jsonb[], $8::int[], $9::text[], $10::timestamptz[], \
       $11::float8[], $12::text[], $13::jsonb[], $15::jsonb[], $16::jsonb[]) \
       AS t(id, app, command, input, context, max_attempts, retry, priority, queue, \
            run_at, timeout_secs, parent_id, data, tags, webhook)), \
     j AS (INSERT INTO errand_jobs (id, app, command, input, context, status, max_attempts, \
       retry, priority, queue, run_at, timeout_secs, parent_id, created, updated, event_seq, \
       tags, webhook, limit_key) \
       SELECT id, app, command, input, context, 'new', max_attempts, retry, priority, queue, \
       run_at, timeout_secs, parent_id, $14, $14, 1, tags, webhook, ",
    crate::limits::limit_key_of!("t.app", "t.command", "t.input", "t.context"),
    " FROM t RETURNING seq, id), \
     e AS (INSERT INTO errand_events (job_seq, seq, kind, status, data, at) \
       SELECT j.seq, 1, 'status', 'new', t.data, $14 FROM j JOIN t ON t.id = j.id \
       RETURNING id, job_seq) \
     SELECT j.id, e.id FROM j JOIN e ON e.job_seq = j.seq"
);

/// Inserts many jobs (none with an idempotency key) and their first events
/// in one statement: a batch costs one round trip, not one per job.
pub(crate) async fn submit_many(
    tx: &Transaction<'_>,
    now: Timestamp,
    jobs: &[NewJob],
    events: &mut Vec<JobEvent>,
) -> Result<Vec<SubmitReceipt>, StoreError> {
    let ids: Vec<JobId> = jobs.iter().map(|_| JobId::generate()).collect();
    let run_ats: Vec<Timestamp> = jobs.iter().map(|j| j.run_at.unwrap_or(now)).collect();
    let data: Vec<Value> = run_ats
        .iter()
        .map(|&run_at| Change::Submitted { run_at }.data())
        .collect();
    let id_texts: Vec<&str> = ids.iter().map(JobId::as_str).collect();
    let apps: Vec<&str> = jobs.iter().map(|j| j.app.as_str()).collect();
    let commands: Vec<&str> = jobs.iter().map(|j| j.command.as_str()).collect();
    let inputs: Vec<&Value> = jobs.iter().map(|j| &j.input).collect();
    let contexts: Vec<Option<&Value>> = jobs.iter().map(|j| j.context.as_ref()).collect();
    let max_attempts: Vec<i32> = jobs.iter().map(|j| j.retry.max_attempts as i32).collect();
    let retries: Vec<Value> = jobs
        .iter()
        .map(|j| serde_json::to_value(&j.retry).expect("policies serialize"))
        .collect();
    let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    let run_at_values: Vec<chrono::DateTime<chrono::Utc>> =
        run_ats.iter().map(|at| ts(*at)).collect();
    let timeouts: Vec<Option<f64>> = jobs.iter().map(|j| j.timeout_secs).collect();
    let parents: Vec<Option<&str>> = jobs
        .iter()
        .map(|j| j.parent_id.as_ref().map(JobId::as_str))
        .collect();
    let tags: Vec<Option<Value>> = jobs.iter().map(tags_column).collect();
    let webhooks: Vec<Option<Value>> = jobs.iter().map(webhook_column).collect();
    let now_at = ts(now);
    let rows = tx
        .query(
            &prepared(tx, SUBMIT_MANY).await?,
            &[
                &id_texts,
                &apps,
                &commands,
                &inputs,
                &contexts,
                &max_attempts,
                &retries,
                &priorities,
                &queues,
                &run_at_values,
                &timeouts,
                &parents,
                &data,
                &now_at,
                &tags,
                &webhooks,
            ],
        )
        .await
        .map_err(db)?;
    insert_labels(tx, jobs, &ids).await?;
    let event_ids: std::collections::HashMap<String, i64> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut receipts = Vec::with_capacity(jobs.len());
    for ((job, job_id), data) in jobs.iter().zip(ids).zip(data) {
        let id = *event_ids
            .get(job_id.as_str())
            .ok_or_else(|| StoreError::Backend(format!("job {job_id} was not inserted")))?;
        events.push(JobEvent {
            id,
            job_id: job_id.clone(),
            seq: 1,
            kind: EventKind::Status,
            status: JobStatus::New,
            app: job.app.clone(),
            command: job.command.clone(),
            data,
            at: now,
        });
        receipts.push(SubmitReceipt {
            job_id,
            created: true,
            status: JobStatus::New,
        });
    }
    // Events in id order, as a store-wide feed reads them.
    events.sort_by_key(|e| e.id);
    Ok(receipts)
}

fn webhook_column(job: &NewJob) -> Option<Value> {
    job.webhook
        .as_ref()
        .map(|w| serde_json::to_value(w).expect("webhooks serialize"))
}

fn tags_column(job: &NewJob) -> Option<Value> {
    (!job.tags.is_empty()).then(|| serde_json::to_value(&job.tags).expect("tags serialize"))
}

/// The labels of `jobs` (inserted as `ids`), in one statement; none when no
/// job has any (the usual case costs no round trip).
async fn insert_labels(
    tx: &Transaction<'_>,
    jobs: &[NewJob],
    ids: &[JobId],
) -> Result<(), StoreError> {
    let (mut label_ids, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (job, id) in jobs.iter().zip(ids) {
        for label in job.labels() {
            label_ids.push(id.as_str());
            keys.push(label.key);
            values.push(label.value);
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let sql = "INSERT INTO errand_job_labels (key, value, job_seq) \
         SELECT l.key, l.value, j.seq FROM unnest($1::text[], $2::text[], $3::text[]) \
           AS l(id, key, value) JOIN errand_jobs j ON j.id = l.id";
    tx.execute(&prepared(tx, sql).await?, &[&label_ids, &keys, &values])
        .await
        .map_err(db)?;
    Ok(())
}
