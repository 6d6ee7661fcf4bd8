//! Schedules: their definitions, and ticks taken once in a cluster (a
//! compare-and-set on `next_run`; racing servers queue on the row lock and
//! all but the first find it moved).

use deadpool_postgres::Transaction;
use errand_core::{JobEvent, JobId, MissedTicks, Timestamp};
use errand_store::{
    ScheduleDefinition, ScheduleInfo, StoreError, TakeTick, TakenTick, TickOutcome,
};
use tokio_postgres::Row;

use crate::rows::{db, decode, maybe_time, prepared, time, ts};
use crate::write;

const COLUMNS: &str = "name, cron, timezone, missed, job, paused, next_run, last_tick, \
                       last_job_id, last_error, created, updated";

fn schedule_from_row(row: &Row) -> Result<ScheduleInfo, StoreError> {
    let text = |column: &str| row.try_get::<_, String>(column).map_err(decode);
    Ok(ScheduleInfo {
        name: text("name")?,
        cron: text("cron")?,
        timezone: text("timezone")?,
        // A value this errand does not know (a newer one wrote it) reads
        // as the cautious default.
        missed: MissedTicks::parse(&text("missed")?).unwrap_or_default(),
        job: row.try_get("job").map_err(decode)?,
        paused: row.try_get("paused").map_err(decode)?,
        next_run: maybe_time(row, "next_run")?,
        last_tick: maybe_time(row, "last_tick")?,
        last_job_id: row
            .try_get::<_, Option<String>>("last_job_id")
            .map_err(decode)?
            .map(JobId::from),
        last_error: row.try_get("last_error").map_err(decode)?,
        created: time(row, "created")?,
        updated: time(row, "updated")?,
    })
}

pub(crate) async fn list(client: &tokio_postgres::Client) -> Result<Vec<ScheduleInfo>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM errand_schedules ORDER BY name");
    let rows = client.query(&sql, &[]).await.map_err(db)?;
    rows.iter().map(schedule_from_row).collect()
}

fn not_found(name: &str) -> StoreError {
    StoreError::ScheduleNotFound(name.to_owned())
}

pub(crate) async fn put(
    client: &tokio_postgres::Client,
    now: Timestamp,
    definition: &ScheduleDefinition,
    next_run: Option<Timestamp>,
    paused: Option<bool>,
) -> Result<ScheduleInfo, StoreError> {
    // Same cron and zone: the stored next run stands, so re-applying a
    // configuration loses no due tick.
    let sql = format!(
        "INSERT INTO errand_schedules AS s (name, cron, timezone, missed, job, paused, \
           next_run, created, updated) \
         VALUES ($1, $2, $3, $4, $5, coalesce($6, false), $7, $8, $8) \
         ON CONFLICT (name) DO UPDATE SET \
           next_run = CASE WHEN s.cron = excluded.cron AND s.timezone = excluded.timezone \
                      THEN s.next_run ELSE excluded.next_run END, \
           cron = excluded.cron, timezone = excluded.timezone, missed = excluded.missed, \
           job = excluded.job, paused = coalesce($6, s.paused), updated = excluded.updated \
         RETURNING {COLUMNS}"
    );
    let row = client
        .query_one(
            &sql,
            &[
                &definition.name,
                &definition.cron,
                &definition.timezone,
                &definition.missed.as_str(),
                &definition.job,
                &paused,
                &next_run.map(ts),
                &ts(now),
            ],
        )
        .await
        .map_err(db)?;
    schedule_from_row(&row)
}

pub(crate) async fn delete(client: &tokio_postgres::Client, name: &str) -> Result<(), StoreError> {
    let deleted = client
        .execute("DELETE FROM errand_schedules WHERE name = $1", &[&name])
        .await
        .map_err(db)?;
    if deleted == 0 {
        return Err(not_found(name));
    }
    Ok(())
}

pub(crate) async fn pause(
    client: &tokio_postgres::Client,
    now: Timestamp,
    name: &str,
    paused: bool,
) -> Result<ScheduleInfo, StoreError> {
    let sql = format!(
        "UPDATE errand_schedules SET paused = $2, updated = $3 WHERE name = $1 \
         RETURNING {COLUMNS}"
    );
    let row = client
        .query_opt(&sql, &[&name, &paused, &ts(now)])
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(name))?;
    schedule_from_row(&row)
}

pub(crate) async fn take_tick(
    tx: &Transaction<'_>,
    now: Timestamp,
    take: &TakeTick,
    events: &mut Vec<JobEvent>,
) -> Result<Option<TakenTick>, StoreError> {
    // The compare-and-set first: a racing server waits on this row's lock,
    // then finds next_run moved and updates nothing.
    let moved = tx
        .execute(
            &prepared(
                tx,
                "UPDATE errand_schedules SET next_run = $2, last_tick = $3 \
                 WHERE name = $1 AND next_run = $4 AND paused = $5",
            )
            .await?,
            &[
                &take.name,
                &take.next_run.map(ts),
                &ts(take.tick),
                &ts(take.expected_next_run),
                &take.expected_paused,
            ],
        )
        .await
        .map_err(db)?;
    if moved == 0 {
        return Ok(None);
    }
    let (receipt, reason) = match &take.outcome {
        TickOutcome::Job(job) => (Some(write::submit(tx, now, job, events).await?), None),
        TickOutcome::Skipped { reason } => (None, reason.as_deref()),
    };
    // A tick without a job keeps the last job; an error stays until a tick
    // makes a job.
    tx.execute(
        &prepared(
            tx,
            "UPDATE errand_schedules SET last_job_id = coalesce($2, last_job_id), \
               last_error = CASE WHEN $2::text IS NOT NULL THEN NULL \
                            ELSE coalesce($3, last_error) END \
             WHERE name = $1",
        )
        .await?,
        &[
            &take.name,
            &receipt.as_ref().map(|r| r.job_id.as_str()),
            &reason,
        ],
    )
    .await
    .map_err(db)?;
    Ok(Some(TakenTick { job: receipt }))
}
