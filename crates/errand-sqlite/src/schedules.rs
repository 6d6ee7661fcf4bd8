//! Schedules: their definitions, and ticks taken once (a compare-and-set
//! on `next_run` in the writer's transaction).

use errand_core::{JobId, MissedTicks, Timestamp};
use errand_store::{ScheduleDefinition, ScheduleInfo, StoreError, TakeTick, TakenTick};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::rows::{backend, json_column, to_json};
use crate::write::{submit, PreparedJob};
use crate::writer::WriteCtx;

const COLUMNS: &str = "name, cron, timezone, missed, job, paused, next_run, last_tick, \
                       last_job_id, last_error, created, updated";

fn micros(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row
        .get::<_, Option<i64>>(index)?
        .map(Timestamp::from_micros))
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleInfo> {
    let missed: String = row.get(3)?;
    Ok(ScheduleInfo {
        name: row.get(0)?,
        cron: row.get(1)?,
        timezone: row.get(2)?,
        // A value this errand does not know (a newer one wrote it) reads
        // as the cautious default.
        missed: MissedTicks::parse(&missed).unwrap_or_default(),
        job: json_column(row, 4)?.unwrap_or_default(),
        paused: row.get(5)?,
        next_run: micros(row, 6)?,
        last_tick: micros(row, 7)?,
        last_job_id: row.get::<_, Option<String>>(8)?.map(JobId::from),
        last_error: row.get(9)?,
        created: Timestamp::from_micros(row.get(10)?),
        updated: Timestamp::from_micros(row.get(11)?),
    })
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<ScheduleInfo>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules ORDER BY name");
    conn.prepare_cached(&sql)
        .map_err(backend)?
        .query_map([], schedule_from_row)
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)
}

fn one(conn: &Connection, name: &str) -> Result<Option<ScheduleInfo>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = ?");
    conn.prepare_cached(&sql)
        .map_err(backend)?
        .query_row([name], schedule_from_row)
        .optional()
        .map_err(backend)
}

fn not_found(name: &str) -> StoreError {
    StoreError::ScheduleNotFound(name.to_owned())
}

pub(crate) fn put(
    conn: &Connection,
    ctx: &mut WriteCtx,
    definition: &ScheduleDefinition,
    job: &str,
    next_run: Option<Timestamp>,
    paused: Option<bool>,
) -> Result<ScheduleInfo, StoreError> {
    // Same cron and zone: the stored next run stands, so re-applying a
    // configuration loses no due tick.
    const UPSERT: &str = "INSERT INTO schedules (name, cron, timezone, missed, job, paused, \
         next_run, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, coalesce(?6, 0), ?7, ?8, ?8) \
         ON CONFLICT (name) DO UPDATE SET \
           next_run = CASE WHEN cron = excluded.cron AND timezone = excluded.timezone \
                      THEN next_run ELSE excluded.next_run END, \
           cron = excluded.cron, timezone = excluded.timezone, missed = excluded.missed, \
           job = excluded.job, paused = coalesce(?6, paused), updated = excluded.updated";
    conn.prepare_cached(UPSERT)
        .map_err(backend)?
        .execute(params![
            definition.name,
            definition.cron,
            definition.timezone,
            definition.missed.as_str(),
            job,
            paused,
            next_run.map(Timestamp::as_micros),
            ctx.now.as_micros(),
        ])
        .map_err(backend)?;
    one(conn, &definition.name)?.ok_or_else(|| not_found(&definition.name))
}

pub(crate) fn delete(conn: &Connection, _ctx: &mut WriteCtx, name: &str) -> Result<(), StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM schedules WHERE name = ?")
        .map_err(backend)?
        .execute([name])
        .map_err(backend)?;
    if deleted == 0 {
        return Err(not_found(name));
    }
    Ok(())
}

pub(crate) fn pause(
    conn: &Connection,
    ctx: &mut WriteCtx,
    name: &str,
    paused: bool,
) -> Result<ScheduleInfo, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE schedules SET paused = ?, updated = ? WHERE name = ?")
        .map_err(backend)?
        .execute(params![paused, ctx.now.as_micros(), name])
        .map_err(backend)?;
    if changed == 0 {
        return Err(not_found(name));
    }
    one(conn, name)?.ok_or_else(|| not_found(name))
}

/// `job` is the outcome's job, prepared off the writer thread.
pub(crate) fn take_tick(
    conn: &Connection,
    ctx: &mut WriteCtx,
    take: &TakeTick,
    job: Option<&PreparedJob>,
    reason: Option<&str>,
) -> Result<Option<TakenTick>, StoreError> {
    // The writer's transaction holds the write lock: what this reads
    // cannot change before the update below.
    let current: Option<(Option<i64>, bool)> = conn
        .prepare_cached("SELECT next_run, paused FROM schedules WHERE name = ?")
        .map_err(backend)?
        .query_row([&take.name], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .map_err(backend)?;
    if current
        != Some((
            Some(take.expected_next_run.as_micros()),
            take.expected_paused,
        ))
    {
        return Ok(None);
    }
    let receipt = job.map(|job| submit(conn, ctx, job)).transpose()?;
    // A tick without a job keeps the last job; an error stays until a
    // tick makes a job.
    conn.prepare_cached(
        "UPDATE schedules SET next_run = ?1, last_tick = ?2, \
           last_job_id = coalesce(?3, last_job_id), \
           last_error = CASE WHEN ?3 IS NOT NULL THEN NULL ELSE coalesce(?4, last_error) END \
         WHERE name = ?5",
    )
    .map_err(backend)?
    .execute(params![
        take.next_run.map(Timestamp::as_micros),
        take.tick.as_micros(),
        receipt.as_ref().map(|r| r.job_id.as_str()),
        reason,
        take.name,
    ])
    .map_err(backend)?;
    Ok(Some(TakenTick { job: receipt }))
}

/// The definition's job as stored.
pub(crate) fn job_text(definition: &ScheduleDefinition) -> String {
    to_json(&definition.job)
}
