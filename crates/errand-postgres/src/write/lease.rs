//! Claims, heartbeats and expired leases, and the workers that hold them.

use deadpool_postgres::Transaction;
use errand_core::{on_lease_expired, EventKind, Job, JobEvent, JobId, JobStatus, Timestamp};
use errand_store::*;
use serde_json::json;

use super::admin::*;
use crate::rows::{self, db, prepared, ts, CachesStatements, JOB_COLUMNS};

/// How long a worker may stay silent before it no longer counts as alive.
pub(crate) const WORKER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

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
/// A claim is one statement, committed alone: it counts its moves itself
/// (a transaction's are counted at its commit).
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
             FROM e HAVING count(*) > 0), \
         counted AS (INSERT INTO errand_job_counts (app, command, status, n) \
             SELECT g.app, g.command, s.status, s.n \
             FROM (SELECT app, command, count(*) AS k FROM u GROUP BY app, command) g \
             CROSS JOIN LATERAL (VALUES ('new', -g.k), ('running', g.k)) AS s(status, n)) \
         SELECT {JOB_COLUMNS}, e.id AS event_id, e.data AS event_data \
         FROM u AS j JOIN e ON e.job_seq = j.seq CROSS JOIN n"
    )
}

/// Whether a claim names commands it can take (none named is any); an
/// error for a name that is not `app.name`.
pub(crate) fn claims_something(params: &ClaimParams) -> Result<bool, StoreError> {
    Ok(params
        .command_names()?
        .is_none_or(|names| !names.is_empty()))
}

/// Claims with one autocommit statement per queue: the rows, their events
/// and the notification (an id range: other processes read the events
/// from it) in one round trip, where BEGIN, the claim, the notification
/// and COMMIT took four.
pub(crate) async fn claim(
    client: &impl CachesStatements,
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
                .query_prepared(
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

pub(crate) async fn register_worker(
    tx: &Transaction<'_>,
    now: Timestamp,
    worker: &WorkerRegistration,
) -> Result<(), StoreError> {
    let now_at = ts(now);
    let names: Vec<String> = worker.commands.iter().map(CommandInfo::full_name).collect();
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
