//! What people ask for: cancel (with the jobs under it), retry, prune.

use deadpool_postgres::Transaction;
use errand_core::{on_cancel, on_retry, Change, Job, JobEvent, JobId, JobStatus, Timestamp};
use errand_store::*;

use super::events::*;
use crate::rows::{self, db, prepared, ts};

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
pub(super) async fn update_if_status(
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
    let change = on_cancel(status, reason).map_err(|no| StoreError::refused(job_id, no))?;
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
    let change =
        on_retry(status, clear_checkpoint).map_err(|no| StoreError::refused(job_id, no))?;
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
    let statuses: Vec<&str> = statuses.to_vec();
    delete_where(
        tx,
        "finished < $1 AND status = ANY($2)",
        &ts(before),
        &statuses,
    )
    .await
}

/// Deletes those of `job_ids` that have ended; the others stay.
pub(crate) async fn delete_jobs(
    tx: &Transaction<'_>,
    job_ids: &[errand_core::JobId],
) -> Result<u64, StoreError> {
    use errand_core::JobStatus::*;
    let ids: Vec<&str> = job_ids.iter().map(|id| id.as_str()).collect();
    let ended = errand_store::terminal_statuses(&[Completed, Failed, Canceled])?;
    delete_where(tx, "id = ANY($1) AND status = ANY($2)", &ids, &ended).await
}

/// Deletes the jobs `ended` (SQL on `errand_jobs`, with `$1` and `$2`)
/// selects, with their events, labels, webhook deliveries and counts.
async fn delete_where(
    tx: &Transaction<'_>,
    ended: &str,
    first: &(dyn tokio_postgres::types::ToSql + Sync),
    statuses: &[&str],
) -> Result<u64, StoreError> {
    // Locked first: a retry of one of them waits, rather than finding a
    // job whose events are gone.
    tx.execute(
        &prepared(
            tx,
            &format!(
                "WITH locked AS (SELECT seq FROM errand_jobs WHERE {ended} FOR UPDATE), \
                 labels AS (DELETE FROM errand_job_labels WHERE job_seq IN (SELECT seq FROM locked)), \
                 deliveries AS (DELETE FROM errand_webhook_deliveries \
                   WHERE job_seq IN (SELECT seq FROM locked)) \
                 DELETE FROM errand_events WHERE job_seq IN (SELECT seq FROM locked)"
            ),
        )
        .await?,
        &[first, &statuses],
    )
    .await
    .map_err(db)?;
    // The counts lose what goes, in the same statement.
    let deleted: i64 = tx
        .query_one(
            &prepared(
                tx,
                &format!(
                    "WITH gone AS (DELETE FROM errand_jobs WHERE {ended} \
                     RETURNING app, command, status), \
                     counted AS (INSERT INTO errand_job_counts (app, command, status, n) \
                     SELECT app, command, status, -count(*) FROM gone GROUP BY app, command, status) \
                     SELECT count(*) FROM gone"
                ),
            )
            .await?,
            &[first, &statuses],
        )
        .await
        .map_err(db)?
        .get(0);
    Ok(deleted as u64)
}

/// Sums each count's delta rows into one. Concurrent folds are safe: each
/// deletes only the rows it saw, and inserts their sum.
pub(crate) const FOLD_COUNTS: &str = "WITH gone AS (DELETE FROM errand_job_counts \
     RETURNING app, command, status, n) \
     INSERT INTO errand_job_counts (app, command, status, n) \
     SELECT app, command, status, sum(n) FROM gone GROUP BY app, command, status \
     HAVING sum(n) <> 0";
