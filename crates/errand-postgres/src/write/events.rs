//! An UPDATE of jobs together with the insert of their events, in one statement.

use deadpool_postgres::Transaction;
use errand_core::{Change, Job, JobEvent, Timestamp};
use errand_store::*;
use tokio_postgres::types::ToSql;

use crate::rows::{self, db, prepared, ts, JOB_COLUMNS};

pub(super) type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// Updates the job(s) matching `filter` with `set` (both may use `$1` =
/// now; caller parameters start at `$4`), bumps `event_seq`, and records
/// the event of `change` (`$2`, `$3`). Returns each changed job with its
/// event.
pub(super) async fn transition(
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
