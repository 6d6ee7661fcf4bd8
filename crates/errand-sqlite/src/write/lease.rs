//! Claims, heartbeats and expired leases, and the workers that hold them.

use errand_core::{on_lease_expired, Change, CommandName, JobId, JobStatus};
use errand_store::{
    ClaimParams, CommandInfo, HeartbeatParams, HeartbeatReply, StoreError, WorkerRegistration,
};
use rusqlite::{params, Connection, OptionalExtension};

use super::{admin::*, events::*};
use crate::rows::{backend, to_json, JobRow};
use crate::writer::WriteCtx;

/// How long a worker may stay silent before it no longer counts as alive.
pub(crate) const WORKER_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The claimed jobs as rows: the caller parses their JSON, off the writer.
pub(crate) fn claim(
    conn: &Connection,
    ctx: &mut WriteCtx,
    params: &ClaimParams,
) -> Result<Vec<JobRow>, StoreError> {
    let mut claimed: Vec<Changed> = Vec::new();
    let commands: Vec<(String, String)> = match params.command_names()? {
        None => Vec::new(),
        Some(names) if names.is_empty() => return Ok(Vec::new()),
        Some(names) => names.into_iter().map(CommandName::into_parts).collect(),
    };
    let sql = claim_sql(params.commands.as_ref().map(|_| commands.len()));
    let lease_until = ctx.now.plus(params.lease).as_micros();
    let now = ctx.now.as_micros();
    // In the writer's transaction: a pause committed before is seen.
    let paused: Vec<String> = conn
        .prepare_cached("SELECT queue FROM paused_queues")
        .map_err(backend)?
        .query_map([], |row| row.get(0))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    // Nearly always empty: then claims take the one-statement path.
    let limits = crate::limits::load(conn)?;
    for queue in params.queues.iter().filter(|q| !paused.contains(q)) {
        let remaining = params.limit.saturating_sub(claimed.len());
        if remaining == 0 {
            break;
        }
        if !limits.is_empty() {
            let within = crate::limits::Within {
                params,
                queue,
                commands: &commands,
                slots: remaining,
                lease_until,
                now,
            };
            claimed.extend(crate::limits::claim_within_limits(conn, &within, &limits)?);
            continue;
        }
        let mut values: Vec<&dyn rusqlite::ToSql> =
            vec![&params.worker_id, &lease_until, &now, &now, queue, &now];
        for (app, name) in &commands {
            values.push(app);
            values.push(name);
        }
        let limit = remaining as i64;
        values.push(&limit);
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(values.as_slice(), changed_from_row)
            .map_err(backend)?;
        for row in rows {
            claimed.push(row.map_err(backend)?);
        }
    }
    // RETURNING gives no order; hand jobs out in the order they were chosen.
    claimed.sort_by(|a, b| {
        let (a_job, b_job) = (&a.row.job, &b.row.job);
        (b_job.priority, a_job.run_at, a.seq).cmp(&(a_job.priority, b_job.run_at, b.seq))
    });
    let mut jobs = Vec::with_capacity(claimed.len());
    for changed in claimed {
        let claimed = Change::Claimed {
            attempt: changed.row.job.attempt,
            worker_id: params.worker_id.clone(),
        };
        record_change(ctx, &changed, &claimed)?;
        jobs.push(changed.row);
    }
    Ok(jobs)
}

/// The claim statement for one queue, optionally limited to `commands`
/// (app, name) pairs. It walks `jobs_ready` in order and stops at LIMIT.
pub(crate) fn claim_sql(commands: Option<usize>) -> String {
    let filter = match commands {
        Some(count) => {
            let pairs = vec!["(?, ?)"; count].join(", ");
            format!("AND (app, command) IN (VALUES {pairs})")
        }
        None => String::new(),
    };
    format!(
        "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = ?, \
         lease_until = ?, started = ?, updated = ?, event_seq = event_seq + 1 \
         WHERE seq IN (SELECT seq FROM jobs WHERE status = 'new' AND queue = ? AND run_at <= ? \
         {filter} ORDER BY priority DESC, run_at, seq LIMIT ?) {}",
        returning()
    )
}

pub(crate) fn heartbeat(
    conn: &Connection,
    ctx: &mut WriteCtx,
    params: &HeartbeatParams,
) -> Result<HeartbeatReply, StoreError> {
    let known = conn
        .prepare_cached("UPDATE workers SET last_heartbeat = ? WHERE id = ?")
        .and_then(|mut stmt| stmt.execute(params![ctx.now.as_micros(), params.worker_id]))
        .map_err(backend)?;
    let lease_until = ctx.now.plus(params.lease).as_micros();
    let mut stmt = conn
        .prepare_cached(
            "UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'running' \
             AND attempt = ? AND worker_id = ? RETURNING cancel_requested",
        )
        .map_err(backend)?;
    let mut reply = HeartbeatReply {
        unknown_worker: known == 0,
        ..HeartbeatReply::default()
    };
    for fence in &params.running {
        let renewed: Option<bool> = stmt
            .query_row(
                params![
                    lease_until,
                    fence.job_id.as_str(),
                    fence.attempt,
                    fence.worker_id
                ],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend)?;
        match renewed {
            None => reply.lost.push(fence.job_id.clone()),
            Some(true) => reply.cancel_requested.push(fence.job_id.clone()),
            Some(false) => {}
        }
    }
    Ok(reply)
}

pub(crate) fn reap_expired(
    conn: &Connection,
    ctx: &mut WriteCtx,
) -> Result<Vec<JobId>, StoreError> {
    let now = ctx.now.as_micros();
    let expired: Vec<(String, u32, u32, bool)> = conn
        .prepare_cached(
            "SELECT id, attempt, max_attempts, cancel_requested FROM jobs \
             WHERE status = 'running' AND lease_until < ? ORDER BY lease_until LIMIT 1000",
        )
        .map_err(backend)?
        .query_map([now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let mut reaped = Vec::with_capacity(expired.len());
    for (id, attempt, max_attempts, cancel_requested) in expired {
        let job_id = JobId::from(id);
        let change = on_lease_expired(attempt, max_attempts, cancel_requested, ctx.now);
        let set = match change.status() {
            JobStatus::Canceled => "status = 'canceled', finished = ?1, lease_until = NULL",
            JobStatus::Failed => "status = 'failed', finished = ?1, lease_until = NULL, error = ?4",
            // Back to new; run_at stays: the job keeps its place in the queue.
            _ => {
                "status = 'new', progress = NULL, worker_id = NULL, lease_until = NULL, error = ?4"
            }
        };
        let text = change.error().map(to_json);
        update_if_status(conn, ctx, &job_id, JobStatus::Running, set, text, &change)?;
        reaped.push(job_id);
    }
    let cutoff = ctx.now.minus(WORKER_TTL).as_micros();
    conn.prepare_cached("DELETE FROM workers WHERE last_heartbeat < ?")
        .and_then(|mut stmt| stmt.execute([cutoff]))
        .map_err(backend)?;
    Ok(reaped)
}

pub(crate) fn register_worker(
    conn: &Connection,
    ctx: &mut WriteCtx,
    worker: &WorkerRegistration,
) -> Result<(), StoreError> {
    let now = ctx.now.as_micros();
    let names: Vec<String> = worker.commands.iter().map(CommandInfo::full_name).collect();
    conn.execute(
        "INSERT OR REPLACE INTO workers (id, host, pid, queues, commands, slots, started, \
         last_heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            worker.worker_id,
            worker.host,
            worker.pid,
            to_json(&worker.queues),
            to_json(&names),
            worker.slots as i64,
            now,
            now
        ],
    )
    .map_err(backend)?;
    for command in &worker.commands {
        conn.execute(
            "INSERT OR REPLACE INTO commands (app, name, description, input_schema, \
             output_schema, defaults, worker_id, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                command.app,
                command.name,
                command.description,
                to_json(&command.input_schema),
                command.output_schema.as_ref().map(to_json),
                to_json(&command.defaults),
                worker.worker_id,
                now
            ],
        )
        .map_err(backend)?;
    }
    Ok(())
}

pub(crate) fn deregister_worker(
    conn: &Connection,
    _ctx: &mut WriteCtx,
    worker_id: &str,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM workers WHERE id = ?", [worker_id])
        .map_err(backend)?;
    Ok(())
}
