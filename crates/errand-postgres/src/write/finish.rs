//! How an attempt ended: one outcome at a time, or a worker's batch of completions.

use deadpool_postgres::Transaction;
use errand_core::{Change, JobEvent, Timestamp};
use errand_store::*;
use serde_json::Value;

use super::events::*;
use crate::rows::{db, prepared, ts, CachesStatements};

pub(super) const FENCE: &str =
    "j.id = $4 AND j.status = 'running' AND j.attempt = $5 AND j.worker_id = $6";

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
/// The statements below share these: lock the batch's jobs, complete
/// those whose fence holds, and write their events.
macro_rules! completing {
    () => {
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
         RETURNING id, job_seq)"
    };
}

pub(crate) const COMPLETE_MANY: &str = concat!(
    completing!(),
    " SELECT u.id, u.app, u.command, u.event_seq, e.id AS event_id \
     FROM u JOIN e ON e.job_seq = u.seq"
);

/// [`COMPLETE_MANY`] as a statement that commits alone: it also counts
/// its moves and announces its events (`$6`, the origin), as a claim
/// does, so a worker's usual batch costs one statement, not a
/// transaction of four (BEGIN, the completions, the counts and the
/// notification, COMMIT).
pub(crate) const COMPLETE_ALONE: &str = concat!(
    completing!(),
    ", n AS (SELECT pg_notify('errand_events', $6 || ':' || min(id) || ':' || max(id)) \
         FROM e HAVING count(*) > 0), \
     counted AS (INSERT INTO errand_job_counts (app, command, status, n) \
         SELECT g.app, g.command, s.status, s.n \
         FROM (SELECT app, command, count(*) AS k FROM u GROUP BY app, command) g \
         CROSS JOIN LATERAL (VALUES ('running', -g.k), ('completed', g.k)) AS s(status, n)) \
     SELECT u.id, u.app, u.command, u.event_seq, e.id AS event_id \
     FROM u JOIN e ON e.job_seq = u.seq CROSS JOIN n"
);

/// Completes many jobs in one statement (the common case of a worker's
/// batch): one round trip and one plan for the batch, where one statement
/// per job cost the server a parse, bind and execute each. Rows are locked
/// in id order, as heartbeats lock them, so the two never deadlock. Each
/// answer is the job's event, or `None` when its fence no longer holds,
/// in the batch's order. The batch's job ids must be distinct (a result is
/// found by its job's id).
///
/// With `alone`, this process's origin, the statement commits on its own
/// ([`COMPLETE_ALONE`]); otherwise it is part of the caller's transaction.
pub(crate) async fn complete_many(
    client: &impl CachesStatements,
    now: Timestamp,
    completed: &[(&Fence, &Value)],
    alone: Option<&str>,
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
    let now_at = ts(now);
    let rows = match alone {
        None => client
            .query_prepared(
                &prepared(client, COMPLETE_MANY).await?,
                &[&now_at, &ids, &attempts, &workers, &results],
            )
            .await
            .map_err(db)?,
        Some(origin) => client
            .query_prepared(
                &prepared(client, COMPLETE_ALONE).await?,
                &[&now_at, &ids, &attempts, &workers, &results, &origin],
            )
            .await
            .map_err(db)?,
    };
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
    client: &impl CachesStatements,
    fence: &Fence,
) -> Result<StoreError, StoreError> {
    let exists = !client
        .query_prepared(
            &prepared(client, "SELECT 1 FROM errand_jobs WHERE id = $1").await?,
            &[&fence.job_id.as_str()],
        )
        .await
        .map_err(db)?
        .is_empty();
    Ok(StoreError::fenced_out(fence, exists))
}
