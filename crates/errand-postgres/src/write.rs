//! Every write, inside a transaction the caller commits. Each change of a
//! job is an UPDATE whose WHERE clause is the compare-and-set, and its
//! event is inserted by the same statement.

use deadpool_postgres::Transaction;
use errand_core::{
    on_cancel, on_lease_expired, on_retry, Change, EventKind, Job, JobEvent, JobId, JobStatus,
    Progress, Timestamp,
};
use errand_store::*;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;

use crate::rows::{self, db, prepared, ts, JOB_COLUMNS};

/// How long a worker may stay silent before it no longer counts as alive.
pub(crate) const WORKER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// Updates the job(s) matching `filter` with `set` (both may use `$1` =
/// now; caller parameters start at `$4`), bumps `event_seq`, and records
/// the event of `change` (`$2`, `$3`). Returns each changed job with its
/// event.
async fn transition(
    tx: &Transaction<'_>,
    now: Timestamp,
    set: &str,
    filter: &str,
    extra: &[&(dyn ToSql + Sync)],
    change: &Change,
) -> Result<Vec<(Job, JobEvent)>, StoreError> {
    let (kind, data) = (change.kind(), change.data());
    let sql = format!(
        "WITH u AS (UPDATE errand_jobs j SET {set}, event_seq = j.event_seq + 1 WHERE {filter} RETURNING j.*), \
         e AS (INSERT INTO errand_events (job_seq, seq, kind, status, data, at) \
               SELECT u.seq, u.event_seq, $2, u.status, $3, $1 FROM u RETURNING id, job_seq) \
         SELECT {JOB_COLUMNS}, e.id AS event_id FROM u AS j JOIN e ON e.job_seq = j.seq"
    );
    let now_at = ts(now);
    let kind_text = kind.as_str();
    let mut params: Params = vec![&now_at, &kind_text, &data];
    params.extend_from_slice(extra);
    let rows = tx
        .query(&prepared(tx, &sql).await?, &params)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            let job = rows::job(row)?;
            let event = JobEvent {
                id: row.try_get("event_id").map_err(db)?,
                job_id: job.job_id.clone(),
                seq: job.event_seq,
                kind,
                status: job.status,
                app: job.app.clone(),
                command: job.command.clone(),
                data: data.clone(),
                at: now,
            };
            Ok((job, event))
        })
        .collect()
}

/// The insert of one new job and its first event, `$1`–`$15`, shared by
/// both submit paths; each adds what follows it.
const INSERT_ONE: &str = concat!(
    "WITH j AS (INSERT INTO errand_jobs (id, app, command, input, context, \
     status, max_attempts, retry, priority, queue, run_at, timeout_secs, idempotency_key, \
     parent_id, created, updated, event_seq, limit_key) \
   VALUES ($1, $2, $3, $4, $5, 'new', $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, 1, ",
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
    debug_assert!(job.idempotency_key.is_none());
    let new = NewRow::new(job, now);
    // The event as listeners decode it; the statement adds its id.
    let mut announced = serde_json::to_value(new.event(0, now)).expect("events serialize");
    announced
        .as_object_mut()
        .expect("an event is an object")
        .remove("id");
    let sql = format!(
        "{INSERT_ONE} SELECT e.id, pg_notify('errand_events', \
           $16 || '|' || jsonb_build_array($17::jsonb || jsonb_build_object('id', e.id))::text) \
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

/// Many new jobs from parallel arrays, `$1`–`$13`, and `$14` now.
const SUBMIT_MANY: &str = concat!(
    "WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], \
       $5::jsonb[], $6::int[], $7::jsonb[], $8::int[], $9::text[], $10::timestamptz[], \
       $11::float8[], $12::text[], $13::jsonb[]) \
       AS t(id, app, command, input, context, max_attempts, retry, priority, queue, \
            run_at, timeout_secs, parent_id, data)), \
     j AS (INSERT INTO errand_jobs (id, app, command, input, context, status, max_attempts, \
       retry, priority, queue, run_at, timeout_secs, parent_id, created, updated, event_seq, \
       limit_key) \
       SELECT id, app, command, input, context, 'new', max_attempts, retry, priority, queue, \
       run_at, timeout_secs, parent_id, $14, $14, 1, ",
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
            ],
        )
        .await
        .map_err(db)?;
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

/// The claim of one queue (none if it is paused, as the statement's own
/// snapshot says): `$1` now, `$2` the event kind, `$3` the queue,
/// `$4` the commands (or NULL), `$5` the limit, `$6` the worker, `$7` the
/// lease's end, `$8` the notification's origin.
///
/// Rows are updated by key (`= ANY(ARRAY(…))`), never through a join: with
/// a join the planner may hash the whole table, a sequential scan per
/// claim (measured: 14–36 ms against 5–9 ms for 256 jobs out of 20,000).
pub(crate) fn claim_sql() -> String {
    claim_statement(
        "SELECT seq FROM errand_jobs WHERE status = 'new' AND queue = $3 \
         AND run_at <= $1 AND ($4::text[] IS NULL OR app || '.' || command = ANY($4)) \
         AND NOT EXISTS (SELECT 1 FROM errand_paused_queues WHERE queue = $3) \
         ORDER BY priority DESC, run_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED",
    )
}

/// [`claim_sql`] for the jobs a limited claim chose (`$5`, their seqs).
/// Its transaction's candidate query locked those rows as `new` jobs of
/// the queue, so they are taken by seq alone: checking status and queue
/// again let the planner, misled by the statistics of a young table, scan
/// every waiting job of the queue for each claim. `$3` and `$4` are named
/// only to keep the unlimited claim's parameters.
pub(crate) fn claim_chosen_sql() -> String {
    claim_statement("SELECT unnest($5::bigint[]) AS seq, $3::text AS queue, $4::text[] AS commands")
}

/// Starts the jobs `picked` selects: their rows, events and notification.
fn claim_statement(picked: &str) -> String {
    format!(
        "WITH picked AS ({picked}), \
         u AS (UPDATE errand_jobs j SET status = 'running', attempt = j.attempt + 1, \
             worker_id = $6, lease_until = $7, started = $1, updated = $1, \
             event_seq = j.event_seq + 1 WHERE j.seq = ANY(ARRAY(SELECT seq FROM picked)) \
             RETURNING j.*), \
         e AS (INSERT INTO errand_events (job_seq, seq, kind, status, data, at) \
             SELECT u.seq, u.event_seq, $2, 'running', \
               jsonb_build_object('status', 'running', 'attempt', u.attempt, 'worker_id', u.worker_id), $1 \
             FROM u RETURNING id, job_seq, data), \
         n AS (SELECT pg_notify('errand_events', $8 || ':' || min(id) || ':' || max(id)) \
             FROM e HAVING count(*) > 0) \
         SELECT {JOB_COLUMNS}, e.id AS event_id, e.data AS event_data \
         FROM u AS j JOIN e ON e.job_seq = j.seq CROSS JOIN n"
    )
}

/// Whether a claim names commands it can take (none named is any); an
/// error for a name that is not `app.name`.
pub(crate) fn claims_something(params: &ClaimParams) -> Result<bool, StoreError> {
    let Some(names) = &params.commands else {
        return Ok(true);
    };
    if let Some(bad) = names.iter().find(|n| !n.contains('.')) {
        return Err(StoreError::Invalid(format!(
            "command {bad:?} is not of the form app.name"
        )));
    }
    Ok(!names.is_empty())
}

/// Claims with one autocommit statement per queue: the rows, their events
/// and the notification (an id range: other processes read the events
/// from it) in one round trip, where BEGIN, the claim, the notification
/// and COMMIT took four.
pub(crate) async fn claim(
    client: &deadpool_postgres::ClientWrapper,
    now: Timestamp,
    params: &ClaimParams,
    origin: &str,
    events: &mut Vec<JobEvent>,
) -> Result<Vec<Job>, StoreError> {
    if !claims_something(params)? {
        return Ok(Vec::new());
    }
    let lease_until = ts(now.plus(params.lease));
    let mut claimed: Vec<(Job, JobEvent, i64)> = Vec::new();
    for queue in &params.queues {
        let remaining = params.limit.saturating_sub(claimed.len()) as i64;
        if remaining == 0 {
            break;
        }
        let sql = claim_sql();
        let now_at = ts(now);
        let kind = EventKind::Status.as_str();
        let statement = prepared(client, &sql).await;
        let answer = match statement {
            Ok(statement) => client
                .query(
                    &statement,
                    &[
                        &now_at,
                        &kind,
                        queue,
                        &params.commands,
                        &remaining,
                        &params.worker_id,
                        &lease_until,
                        &origin,
                    ],
                )
                .await
                .map_err(db),
            Err(err) => Err(err),
        };
        let rows = match answer {
            Ok(rows) => rows,
            // Earlier queues' claims are committed: hand those jobs out
            // rather than leave them leased to no one until they expire.
            Err(err) if !claimed.is_empty() => {
                tracing::warn!(error = %err, queue = %queue, "claim from this queue failed; running what was claimed");
                break;
            }
            Err(err) => return Err(err),
        };
        claimed.extend(started_jobs(&rows, now)?);
    }
    Ok(in_claim_order(claimed, events))
}

/// A claim statement's rows: each job, its `running` event, its seq.
pub(crate) fn started_jobs(
    rows: &[tokio_postgres::Row],
    now: Timestamp,
) -> Result<Vec<(Job, JobEvent, i64)>, StoreError> {
    let mut started = Vec::with_capacity(rows.len());
    for row in rows {
        let job = rows::job(row)?;
        let event = JobEvent {
            id: row.try_get("event_id").map_err(db)?,
            job_id: job.job_id.clone(),
            seq: job.event_seq,
            kind: EventKind::Status,
            status: JobStatus::Running,
            app: job.app.clone(),
            command: job.command.clone(),
            data: row.try_get("event_data").map_err(db)?,
            at: now,
        };
        let seq: i64 = row.try_get("seq").map_err(db)?;
        started.push((job, event, seq));
    }
    Ok(started)
}

/// The claimed jobs in the order they were chosen (RETURNING gives none),
/// their events added to `events`.
pub(crate) fn in_claim_order(
    mut claimed: Vec<(Job, JobEvent, i64)>,
    events: &mut Vec<JobEvent>,
) -> Vec<Job> {
    claimed.sort_by(|a, b| (b.0.priority, a.0.run_at, a.2).cmp(&(a.0.priority, b.0.run_at, b.2)));
    let mut jobs = Vec::with_capacity(claimed.len());
    for (job, event, _) in claimed {
        events.push(event);
        jobs.push(job);
    }
    jobs
}

/// Renews a worker's leases: `$1` the new end, `$2` the worker, `$3` and
/// `$4` its jobs' ids (sorted) and attempts.
///
/// Rows are locked in id order, as `finish` takes them: two transactions
/// locking the same jobs in different orders deadlock (seen under load
/// with batched completions). Each is found by id alone and fenced after,
/// as in [`COMPLETE_MANY`].
pub(crate) const RENEW_LEASES: &str =
    "WITH locked AS (SELECT j.seq, j.status, j.attempt, j.worker_id, i.attempt AS fence_attempt \
         FROM unnest($3::text[], $4::int[]) AS i(id, attempt) \
         CROSS JOIN LATERAL (SELECT seq, status, attempt, worker_id FROM errand_jobs \
             WHERE id = i.id FOR UPDATE) j) \
     UPDATE errand_jobs SET lease_until = $1 \
     WHERE seq = ANY(ARRAY(SELECT seq FROM locked WHERE status = 'running' \
         AND worker_id = $2 AND attempt = fence_attempt)) \
     RETURNING id, cancel_requested";

pub(crate) async fn heartbeat(
    tx: &Transaction<'_>,
    now: Timestamp,
    params: &HeartbeatParams,
) -> Result<HeartbeatReply, StoreError> {
    let now_at = ts(now);
    let known = tx
        .execute(
            &prepared(
                tx,
                "UPDATE errand_workers SET last_heartbeat = $1 WHERE id = $2",
            )
            .await?,
            &[&now_at, &params.worker_id],
        )
        .await
        .map_err(db)?;
    // Byte order, PostgreSQL's COLLATE "C": the order rows are locked in.
    let mut running: Vec<&Fence> = params.running.iter().collect();
    running.sort_by(|a, b| a.job_id.as_str().cmp(b.job_id.as_str()));
    let ids: Vec<&str> = running.iter().map(|f| f.job_id.as_str()).collect();
    let attempts: Vec<i32> = running.iter().map(|f| f.attempt as i32).collect();
    let lease_until = ts(now.plus(params.lease));
    let renewed = tx
        .query(
            RENEW_LEASES,
            &[&lease_until, &params.worker_id, &ids, &attempts],
        )
        .await
        .map_err(db)?;
    let mut reply = HeartbeatReply {
        unknown_worker: known == 0,
        ..HeartbeatReply::default()
    };
    let renewed: std::collections::HashMap<String, bool> =
        renewed.iter().map(|r| (r.get(0), r.get(1))).collect();
    for fence in &params.running {
        match renewed.get(fence.job_id.as_str()) {
            None => reply.lost.push(fence.job_id.clone()),
            Some(true) => reply.cancel_requested.push(fence.job_id.clone()),
            Some(false) => {}
        }
    }
    Ok(reply)
}

const FENCE: &str = "j.id = $4 AND j.status = 'running' AND j.attempt = $5 AND j.worker_id = $6";

/// One outcome: its event, or why the attempt was refused (fenced out).
pub(crate) async fn finish_one(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    outcome: &Outcome,
) -> Result<Result<JobEvent, StoreError>, StoreError> {
    let attempt = fence.attempt as i32;
    let id = fence.job_id.as_str();
    // The row persists the outcome; the event says what it changed.
    let (set, value): (&str, Option<Value>) = match outcome {
        Outcome::Completed { result } => (
            "status = 'completed', result = $7, error = NULL, finished = $1, lease_until = NULL, updated = $1",
            Some(result.clone()),
        ),
        Outcome::Failed { error, retry_at: Some(_) } => (
            "status = 'new', error = $7, run_at = $8, progress = NULL, worker_id = NULL, lease_until = NULL, updated = $1",
            Some(serde_json::to_value(error).expect("errors serialize")),
        ),
        Outcome::Failed { error, retry_at: None } => (
            "status = 'failed', error = $7, finished = $1, lease_until = NULL, updated = $1",
            Some(serde_json::to_value(error).expect("errors serialize")),
        ),
        Outcome::Canceled { .. } => (
            "status = 'canceled', finished = $1, lease_until = NULL, updated = $1",
            None,
        ),
        Outcome::Released => (
            "status = 'new', attempt = j.attempt - 1, progress = NULL, started = NULL, worker_id = NULL, lease_until = NULL, updated = $1",
            None,
        ),
    };
    let retry_at = match outcome {
        Outcome::Failed {
            retry_at: Some(at), ..
        } => Some(ts(*at)),
        _ => None,
    };
    let mut extra: Params = vec![&id, &attempt, &fence.worker_id];
    if value.is_some() {
        extra.push(&value);
    }
    if retry_at.is_some() {
        extra.push(&retry_at);
    }
    let change = outcome.change(fence.attempt);
    let changed = transition(tx, now, set, FENCE, &extra, &change).await?;
    match changed.into_iter().next() {
        Some((_, event)) => Ok(Ok(event)),
        None => Ok(Err(fenced_out(tx, fence).await?)),
    }
}

/// Completes a batch: `$1` now; `$2`–`$5` the jobs' ids (sorted, so rows
/// are locked in id order), attempts, workers and results, in arrays of one
/// length.
///
/// Each job is found and locked by its id alone (a lateral lookup, which
/// the planner can only make an index probe), its fence checked on the
/// locked row, and updated by key. With `status = 'running'` in the
/// lookup the planner walked every running job's lease entry for every
/// outcome (630 ms for 599 outcomes with 3,072 jobs running), and with
/// joins it hashed the whole table (a sequential scan per batch).
pub(crate) const COMPLETE_MANY: &str =
    "WITH locked AS (SELECT j.seq, j.status, j.attempt, j.worker_id, \
         i.attempt AS fence_attempt, i.worker_id AS fence_worker \
         FROM unnest($2::text[], $3::int[], $4::text[]) AS i(id, attempt, worker_id) \
         CROSS JOIN LATERAL (SELECT seq, status, attempt, worker_id FROM errand_jobs \
             WHERE id = i.id FOR UPDATE) j), \
     u AS (UPDATE errand_jobs j SET status = 'completed', \
         result = ($5::jsonb[])[array_position($2::text[], j.id)], error = NULL, \
         finished = $1, lease_until = NULL, updated = $1, event_seq = j.event_seq + 1 \
         WHERE j.seq = ANY(ARRAY(SELECT seq FROM locked WHERE status = 'running' \
             AND attempt = fence_attempt AND worker_id = fence_worker)) \
         RETURNING j.seq, j.id, j.app, j.command, j.event_seq, j.attempt, j.result), \
     e AS (INSERT INTO errand_events (job_seq, seq, kind, status, data, at) \
         SELECT u.seq, u.event_seq, 'result', 'completed', jsonb_build_object('status', \
           'completed', 'attempt', u.attempt, 'result', u.result), $1 FROM u \
         RETURNING id, job_seq) \
     SELECT u.id, u.app, u.command, u.event_seq, e.id AS event_id \
     FROM u JOIN e ON e.job_seq = u.seq";

/// Completes many jobs in one statement (the common case of a worker's
/// batch): one round trip and one plan for the batch, where one statement
/// per job cost the server a parse, bind and execute each. Rows are locked
/// in id order, as heartbeats lock them, so the two never deadlock. Each
/// answer is the job's event, or `None` when its fence no longer holds,
/// in the batch's order. The batch's job ids must be distinct (a result is
/// found by its job's id).
pub(crate) async fn complete_many(
    tx: &Transaction<'_>,
    now: Timestamp,
    completed: &[(&Fence, &Value)],
) -> Result<Vec<Option<JobEvent>>, StoreError> {
    // Byte order, PostgreSQL's COLLATE "C": the order rows are locked in.
    let mut sorted = completed.to_vec();
    sorted.sort_by(|a, b| a.0.job_id.as_str().cmp(b.0.job_id.as_str()));
    debug_assert!(
        sorted.windows(2).all(|w| w[0].0.job_id != w[1].0.job_id),
        "a batch with one job twice goes outcome by outcome"
    );
    let ids: Vec<&str> = sorted.iter().map(|(f, _)| f.job_id.as_str()).collect();
    let attempts: Vec<i32> = sorted.iter().map(|(f, _)| f.attempt as i32).collect();
    let workers: Vec<&str> = sorted.iter().map(|(f, _)| f.worker_id.as_str()).collect();
    let results: Vec<&Value> = sorted.iter().map(|(_, r)| *r).collect();
    let rows = tx
        .query(
            &prepared(tx, COMPLETE_MANY).await?,
            &[&ts(now), &ids, &attempts, &workers, &results],
        )
        .await
        .map_err(db)?;
    let mut done: std::collections::HashMap<String, (String, String, i64, i64)> = rows
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<_, String>(0).map_err(db)?,
                (
                    row.try_get(1).map_err(db)?,
                    row.try_get(2).map_err(db)?,
                    row.try_get(3).map_err(db)?,
                    row.try_get(4).map_err(db)?,
                ),
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(completed
        .iter()
        .map(|(fence, result)| {
            let (app, command, seq, id) = done.remove(fence.job_id.as_str())?;
            let change = Change::Completed {
                attempt: fence.attempt,
                result: (*result).clone(),
            };
            Some(JobEvent {
                id,
                job_id: fence.job_id.clone(),
                seq,
                kind: change.kind(),
                status: change.status(),
                app,
                command,
                data: change.data(),
                at: now,
            })
        })
        .collect())
}

pub(crate) async fn fenced_out(
    tx: &Transaction<'_>,
    fence: &Fence,
) -> Result<StoreError, StoreError> {
    let exists = tx
        .query_opt(
            &prepared(tx, "SELECT 1 FROM errand_jobs WHERE id = $1").await?,
            &[&fence.job_id.as_str()],
        )
        .await
        .map_err(db)?
        .is_some();
    Ok(if exists {
        StoreError::LeaseLost {
            job_id: fence.job_id.clone(),
            attempt: fence.attempt,
        }
    } else {
        StoreError::NotFound(fence.job_id.clone())
    })
}

pub(crate) async fn report_progress(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    progress: &Progress,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let progress = progress.as_reported(now);
    let value = serde_json::to_value(&progress).expect("progress serializes");
    let set = "progress = $7, updated = $1";
    let change = (set, Some(&value), Change::Progress(progress));
    while_running(tx, now, fence, change, events).await
}

/// A change to the job a running attempt holds (fenced): the SET clause
/// (`$7` is the value, when there is one) and the change its event records.
type RunningChange<'a> = (&'a str, Option<&'a Value>, Change);

async fn while_running(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    (set, value, change): RunningChange<'_>,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let attempt = fence.attempt as i32;
    let id = fence.job_id.as_str();
    let mut extra: Params = vec![&id, &attempt, &fence.worker_id];
    if let Some(value) = &value {
        extra.push(*value);
    }
    let changed = transition(tx, now, set, FENCE, &extra, &change).await?;
    match changed.into_iter().next() {
        Some((_, event)) => {
            events.push(event);
            Ok(())
        }
        None => Err(fenced_out(tx, fence).await?),
    }
}

/// Stores a running attempt's checkpoint, fenced, with an event carrying it.
pub(crate) async fn save_checkpoint(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    checkpoint: &Value,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let set = "checkpoint = $7, updated = $1";
    let change = Change::Checkpoint {
        checkpoint: checkpoint.clone(),
    };
    while_running(tx, now, fence, (set, Some(checkpoint), change), events).await
}

pub(crate) async fn append_log(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    line: &str,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let logged = Change::Log {
        line: line.to_owned(),
        attempt: fence.attempt,
    };
    let change = ("updated = j.updated", None, logged);
    while_running(tx, now, fence, change, events).await
}

async fn current_status(tx: &Transaction<'_>, job_id: &JobId) -> Result<JobStatus, StoreError> {
    let row = tx
        .query_opt(
            &prepared(
                tx,
                "SELECT status FROM errand_jobs WHERE id = $1 FOR UPDATE",
            )
            .await?,
            &[&job_id.as_str()],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(job_id.clone()))?;
    rows::status(row.get(0))
}

/// Applies `set` to the job if its status is `expected`, recording
/// `change`. `set` may use `$6`, the error the change records.
async fn update_if_status(
    tx: &Transaction<'_>,
    now: Timestamp,
    job_id: &JobId,
    expected: JobStatus,
    set: &str,
    change: &Change,
    events: &mut Vec<JobEvent>,
) -> Result<Job, StoreError> {
    let error = change
        .error()
        .filter(|_| set.contains("$6"))
        .map(|error| serde_json::to_value(error).expect("errors serialize"));
    let id = job_id.as_str();
    let status = expected.as_str();
    let mut extra: Params = vec![&id, &status];
    if error.is_some() {
        extra.push(&error);
    }
    let changed = transition(tx, now, set, "j.id = $4 AND j.status = $5", &extra, change).await?;
    let (job, event) = changed
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Backend(format!("job {job_id} changed under a row lock")))?;
    events.push(event);
    Ok(job)
}

/// Cancels the job, then every job under it (children, theirs...) that
/// has not ended, in the same transaction.
pub(crate) async fn cancel(
    tx: &Transaction<'_>,
    now: Timestamp,
    job_id: &JobId,
    events: &mut Vec<JobEvent>,
) -> Result<Job, StoreError> {
    let job = cancel_one(tx, now, job_id, "canceled before it started", events).await?;
    let descendants = tx
        .query(
            &prepared(
                tx,
                "WITH RECURSIVE below(id) AS (SELECT id FROM errand_jobs WHERE parent_id = $1 \
                 UNION SELECT j.id FROM errand_jobs j JOIN below ON j.parent_id = below.id) \
                 SELECT below.id FROM below JOIN errand_jobs j USING (id) \
                 WHERE j.status IN ('new', 'running')",
            )
            .await?,
            &[&job_id.as_str()],
        )
        .await
        .map_err(db)?;
    let reason = format!("canceled with {job_id}");
    for row in descendants {
        let id = JobId::from(row.get::<_, String>(0));
        match cancel_one(tx, now, &id, &reason, events).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(job)
}

async fn cancel_one(
    tx: &Transaction<'_>,
    now: Timestamp,
    job_id: &JobId,
    reason: &str,
    events: &mut Vec<JobEvent>,
) -> Result<Job, StoreError> {
    let status = current_status(tx, job_id).await?;
    let change = on_cancel(status, reason).map_err(|_| StoreError::Conflict {
        job_id: job_id.clone(),
        status,
        action: "cancel a finished job",
    })?;
    // A running job keeps running until its handler has stopped.
    let set = match change {
        Change::CancelRequested => "cancel_requested = true, updated = $1",
        _ => "status = 'canceled', finished = $1, updated = $1",
    };
    update_if_status(tx, now, job_id, status, set, &change, events).await
}

pub(crate) async fn retry(
    tx: &Transaction<'_>,
    now: Timestamp,
    job_id: &JobId,
    clear_checkpoint: bool,
    events: &mut Vec<JobEvent>,
) -> Result<Job, StoreError> {
    let status = current_status(tx, job_id).await?;
    let change = on_retry(status, clear_checkpoint).map_err(|_| StoreError::Conflict {
        job_id: job_id.clone(),
        status,
        action: "retry a job that is not failed or canceled",
    })?;
    let set = if clear_checkpoint {
        "status = 'new', attempt = 0, run_at = $1, result = NULL, error = NULL, \
         progress = NULL, cancel_requested = false, worker_id = NULL, lease_until = NULL, \
         started = NULL, finished = NULL, updated = $1, checkpoint = NULL"
    } else {
        "status = 'new', attempt = 0, run_at = $1, result = NULL, error = NULL, \
         progress = NULL, cancel_requested = false, worker_id = NULL, lease_until = NULL, \
         started = NULL, finished = NULL, updated = $1"
    };
    update_if_status(tx, now, job_id, status, set, &change, events).await
}

pub(crate) async fn reap_expired(
    tx: &Transaction<'_>,
    now: Timestamp,
    events: &mut Vec<JobEvent>,
) -> Result<Vec<JobId>, StoreError> {
    let now_at = ts(now);
    let expired = tx
        .query(
            &prepared(
                tx,
                "SELECT id, attempt, max_attempts, cancel_requested FROM errand_jobs \
             WHERE status = 'running' AND lease_until < $1 ORDER BY lease_until LIMIT 1000 \
             FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&now_at],
        )
        .await
        .map_err(db)?;
    let mut reaped = Vec::with_capacity(expired.len());
    for row in expired {
        let job_id = JobId::from(row.get::<_, String>(0));
        let attempt = row.get::<_, i32>(1) as u32;
        let max_attempts = row.get::<_, i32>(2) as u32;
        let cancel_requested: bool = row.get(3);
        let change = on_lease_expired(attempt, max_attempts, cancel_requested, now);
        let set = match change.status() {
            JobStatus::Canceled => {
                "status = 'canceled', finished = $1, lease_until = NULL, updated = $1"
            }
            JobStatus::Failed => {
                "status = 'failed', finished = $1, lease_until = NULL, error = $6, updated = $1"
            }
            // Back to new; run_at stays: the job keeps its place in the queue.
            _ => "status = 'new', progress = NULL, worker_id = NULL, lease_until = NULL, error = $6, updated = $1",
        };
        update_if_status(tx, now, &job_id, JobStatus::Running, set, &change, events).await?;
        reaped.push(job_id);
    }
    let cutoff = ts(now.minus(WORKER_TTL));
    tx.execute(
        &prepared(tx, "DELETE FROM errand_workers WHERE last_heartbeat < $1").await?,
        &[&cutoff],
    )
    .await
    .map_err(db)?;
    Ok(reaped)
}

/// Any constant unique to errand's pruning: servers sharing the database
/// take turns, so two never delete the same rows at once.
const PRUNE_LOCK: i64 = 0x6572_7261_6e65; // "errane"

/// Deletes the jobs that ended with one of `statuses` before `before`, or
/// nothing if another server is pruning now.
pub(crate) async fn prune(
    tx: &Transaction<'_>,
    statuses: &[&'static str],
    before: Timestamp,
) -> Result<u64, StoreError> {
    let ours: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
        .await
        .map_err(db)?
        .get(0);
    if !ours || statuses.is_empty() {
        return Ok(0);
    }
    let before = ts(before);
    let statuses: Vec<&str> = statuses.to_vec();
    tx.execute(
        &prepared(
            tx,
            "DELETE FROM errand_events WHERE job_seq IN (SELECT seq FROM errand_jobs \
         WHERE finished < $1 AND status = ANY($2))",
        )
        .await?,
        &[&before, &statuses],
    )
    .await
    .map_err(db)?;
    tx.execute(
        &prepared(
            tx,
            "DELETE FROM errand_jobs WHERE finished < $1 AND status = ANY($2)",
        )
        .await?,
        &[&before, &statuses],
    )
    .await
    .map_err(db)
}

pub(crate) async fn register_worker(
    tx: &Transaction<'_>,
    now: Timestamp,
    worker: &WorkerRegistration,
) -> Result<(), StoreError> {
    let now_at = ts(now);
    let names: Vec<String> = worker
        .commands
        .iter()
        .map(|c| format!("{}.{}", c.app, c.name))
        .collect();
    let (queues, names) = (json!(worker.queues), json!(names));
    let (pid, slots) = (i64::from(worker.pid), worker.slots as i64);
    tx.execute(
&prepared(tx, "INSERT INTO errand_workers (id, host, pid, queues, commands, slots, started, last_heartbeat) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO UPDATE SET host = $2, pid = $3, \
         queues = $4, commands = $5, slots = $6, last_heartbeat = $7").await?,
        &[&worker.worker_id, &worker.host, &pid, &queues, &names, &slots, &now_at],
    )
    .await
    .map_err(db)?;
    for command in &worker.commands {
        let defaults = serde_json::to_value(&command.defaults).expect("defaults serialize");
        tx.execute(
&prepared(tx, "INSERT INTO errand_commands (app, name, description, input_schema, defaults, worker_id, updated, output_schema) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (app, name) DO UPDATE SET \
             description = $3, input_schema = $4, defaults = $5, worker_id = $6, updated = $7, output_schema = $8").await?,
            &[&command.app, &command.name, &command.description, &command.input_schema, &defaults, &worker.worker_id, &now_at, &command.output_schema],
        )
        .await
        .map_err(db)?;
    }
    Ok(())
}
