//! Every read, run on a pooled read connection. In WAL mode readers never
//! block the writer, and see every group committed before they start.

use errand_core::{Job, JobEvent, JobId, Label, Timestamp};
use errand_store::{
    CommandInfo, CommandStats, FinishedInMinute, JobPage, ListCondition, ListParams, QueueInfo,
    StoreError, WorkerInfo,
};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

use crate::rows::{
    backend, event_from_row, job_from_row, json_column, seq_of_row, EVENT_COLUMNS, JOB_COLUMNS,
};
use crate::write::WORKER_TTL;

pub(crate) fn get(conn: &Connection, job_id: &JobId) -> Result<Job, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?");
    conn.prepare_cached(&sql)
        .map_err(backend)?
        .query_row([job_id.as_str()], job_from_row)
        .optional()
        .map_err(backend)?
        .ok_or_else(|| StoreError::NotFound(job_id.clone()))
}

pub(crate) fn list(conn: &Connection, params: &ListParams) -> Result<JobPage, StoreError> {
    let limit = params.effective_limit().map_err(StoreError::Invalid)?;
    let (sql, values) = list_query(params, limit)?;
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let refs: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
    let mut rows: Vec<(Job, i64)> = stmt
        .query_map(refs.as_slice(), |row| {
            Ok((job_from_row(row)?, seq_of_row(row)?))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(_, seq)| seq.to_string())
    } else {
        None
    };
    Ok(JobPage {
        jobs: rows.into_iter().map(|(job, _)| job).collect(),
        next_cursor,
    })
}

type ListQuery = (String, Vec<Box<dyn ToSql>>);

/// The list statement and its values: one row more than `limit`, to know
/// whether a next page exists.
fn list_query(params: &ListParams, limit: usize) -> Result<ListQuery, StoreError> {
    let mut clauses: Vec<&str> = Vec::new();
    let mut values: Vec<Box<dyn ToSql>> = Vec::new();
    // The first label drives the query: its index range, newest first, is
    // the order of the page; the jobs are looked up by seq. Further labels
    // are probes of the same index.
    let mut driving: Option<Label> = None;
    for condition in params.conditions().map_err(StoreError::Invalid)? {
        let (clause, value): (&str, Box<dyn ToSql>) = match condition {
            ListCondition::Label(label) if driving.is_none() => {
                driving = Some(label);
                continue;
            }
            ListCondition::Label(label) => {
                clauses.push(
                    "EXISTS (SELECT 1 FROM job_labels x WHERE x.key = ? AND x.value = ? \
                     AND x.job_seq = jobs.seq)",
                );
                values.push(Box::new(label.key));
                values.push(Box::new(label.value));
                continue;
            }
            ListCondition::App(app) => ("app = ?", Box::new(app)),
            ListCondition::Command(name) => ("command = ?", Box::new(name)),
            ListCondition::Status(status) => ("status = ?", Box::new(status.as_str())),
            ListCondition::Queue(queue) => ("queue = ?", Box::new(queue)),
            ListCondition::Parent(id) => ("parent_id = ?", Box::new(id.into_string())),
            ListCondition::CreatedAfter(at) => ("created > ?", Box::new(at.as_micros())),
            ListCondition::CreatedBefore(at) => ("created < ?", Box::new(at.as_micros())),
            ListCondition::SeqBelow(seq) => ("seq < ?", Box::new(seq)),
            ListCondition::IdFrom(id) => ("id >= ?", Box::new(id)),
            ListCondition::IdBelow(id) => ("id < ?", Box::new(id)),
        };
        clauses.push(clause);
        values.push(value);
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let sql = match driving {
        None => format!("SELECT {JOB_COLUMNS} FROM jobs {filter_sql} ORDER BY seq DESC LIMIT ?"),
        Some(label) => {
            values.insert(0, Box::new(label.value));
            values.insert(0, Box::new(label.key));
            let and = if clauses.is_empty() { "" } else { " AND " };
            format!(
                "SELECT {JOB_COLUMNS} FROM job_labels l JOIN jobs ON jobs.seq = l.job_seq \
                 WHERE l.key = ? AND l.value = ?{and}{} ORDER BY l.job_seq DESC LIMIT ?",
                clauses.join(" AND ")
            )
        }
    };
    values.push(Box::new(limit as i64 + 1));
    Ok((sql, values))
}

pub(crate) fn events(
    conn: &Connection,
    job_id: &JobId,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<JobEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM jobs j JOIN events e ON e.job_seq = j.seq \
         WHERE j.id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?"
    );
    let events: Vec<JobEvent> = conn
        .prepare_cached(&sql)
        .map_err(backend)?
        .query_map(
            params![job_id.as_str(), after_seq, limit as i64],
            event_from_row,
        )
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    if events.is_empty() {
        get(conn, job_id)?; // NotFound for an unknown job, not an empty log.
    }
    Ok(events)
}

pub(crate) fn feed(
    conn: &Connection,
    after_id: i64,
    limit: usize,
) -> Result<Vec<JobEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e JOIN jobs j ON e.job_seq = j.seq \
         WHERE e.id > ? ORDER BY e.id LIMIT ?"
    );
    conn.prepare_cached(&sql)
        .map_err(backend)?
        .query_map(params![after_id, limit as i64], event_from_row)
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)
}

/// One writer assigns event ids in commit order, so whatever a reader sees
/// is settled; pruned ids count too (they are never reused).
pub(crate) fn feed_head(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "SELECT max(coalesce((SELECT max(id) FROM events), 0), \
         coalesce((SELECT value FROM meta WHERE key = 'events_floor'), 0))",
    )
    .map_err(backend)?
    .query_row([], |row| row.get(0))
    .map_err(backend)
}

/// How many recent run times per command the percentiles are taken over.
use errand_store::counts::RUN_TIME_WINDOW;

/// Run times in the window of recently finished jobs, walked down
/// jobs_finished: the same cost however many jobs the table holds.
const STATS_RUN_TIMES: &str = "SELECT app, command, finished - started FROM \
     (SELECT app, command, status, started, finished FROM jobs \
      WHERE finished IS NOT NULL ORDER BY finished DESC LIMIT ?) \
     WHERE status IN ('completed', 'failed') AND started IS NOT NULL";
/// Costs as many rows as are queued. The index is named: the planner would
/// rather group down jobs_command, which walks the whole table.
const STATS_OLDEST_READY: &str = "SELECT app, command, min(run_at) FROM jobs \
     INDEXED BY jobs_ready WHERE status = 'new' AND run_at <= ? GROUP BY app, command";

pub(crate) fn stats(conn: &Connection, now: Timestamp) -> Result<Vec<CommandStats>, StoreError> {
    // Kept by the writes: the read costs the same at any table size.
    let rows: Vec<(String, String, String, i64)> = conn
        .prepare_cached("SELECT app, command, status, n FROM job_counts")
        .map_err(backend)?
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let by_command = errand_store::counts::by_command(rows);
    let run_times: Vec<(String, String, f64)> = conn
        .prepare_cached(STATS_RUN_TIMES)
        .map_err(backend)?
        .query_map([RUN_TIME_WINDOW], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as f64 / 1e6))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let oldest_ready: Vec<(String, String, f64)> = conn
        .prepare_cached(STATS_OLDEST_READY)
        .map_err(backend)?
        .query_map([now.as_micros()], |row| {
            let at = Timestamp::from_micros(row.get(2)?);
            Ok((row.get(0)?, row.get(1)?, now.since(at).as_secs_f64()))
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    Ok(errand_store::counts::assemble(
        by_command,
        run_times,
        oldest_ready,
    ))
}

pub(crate) fn workers(conn: &Connection, now: Timestamp) -> Result<Vec<WorkerInfo>, StoreError> {
    let cutoff = now.minus(WORKER_TTL).as_micros();
    let mut workers: Vec<WorkerInfo> = conn
        .prepare_cached(
            "SELECT id, host, pid, queues, commands, slots, started, last_heartbeat FROM workers \
             WHERE last_heartbeat >= ? ORDER BY started",
        )
        .map_err(backend)?
        .query_map([cutoff], |row| {
            Ok(WorkerInfo {
                worker_id: row.get(0)?,
                host: row.get(1)?,
                pid: row.get(2)?,
                queues: json_column(row, 3)?.unwrap_or_default(),
                commands: json_column(row, 4)?.unwrap_or_default(),
                slots: row.get::<_, i64>(5)? as usize,
                running: Vec::new(),
                started: Timestamp::from_micros(row.get(6)?),
                last_heartbeat: Timestamp::from_micros(row.get(7)?),
            })
        })
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let mut running = conn
        .prepare_cached(
            "SELECT id FROM jobs WHERE status = 'running' AND worker_id = ? ORDER BY seq",
        )
        .map_err(backend)?;
    for worker in &mut workers {
        worker.running = running
            .query_map([&worker.worker_id], |row| {
                Ok(JobId::from(row.get::<_, String>(0)?))
            })
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
    }
    Ok(workers)
}

pub(crate) fn queues(conn: &Connection) -> Result<Vec<QueueInfo>, StoreError> {
    let mut queues = std::collections::BTreeMap::<String, QueueInfo>::new();
    let counts: Vec<(String, String, u64)> = conn
        .prepare_cached(
            "SELECT queue, status, count(*) FROM jobs WHERE status IN ('new', 'running') \
             GROUP BY queue, status",
        )
        .map_err(backend)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for (name, status, count) in counts {
        let queue = queues
            .entry(name.clone())
            .or_insert_with(|| QueueInfo::empty(&name));
        match status.as_str() {
            "new" => queue.new = count,
            _ => queue.running = count,
        }
    }
    let paused: Vec<(String, i64)> = conn
        .prepare_cached("SELECT queue, paused_at FROM paused_queues")
        .map_err(backend)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for (name, at) in paused {
        let queue = queues
            .entry(name.clone())
            .or_insert_with(|| QueueInfo::empty(&name));
        queue.paused = true;
        queue.paused_at = Some(Timestamp::from_micros(at));
    }
    Ok(queues.into_values().collect())
}

pub(crate) fn commands(conn: &Connection) -> Result<Vec<CommandInfo>, StoreError> {
    conn.prepare_cached(
        "SELECT app, name, description, input_schema, defaults, worker_id, updated, \
         output_schema FROM commands ORDER BY app, name",
    )
    .map_err(backend)?
    .query_map([], |row| {
        Ok(CommandInfo {
            app: row.get(0)?,
            name: row.get(1)?,
            description: row.get(2)?,
            input_schema: json_column(row, 3)?.unwrap_or_default(),
            output_schema: json_column(row, 7)?,
            defaults: json_column(row, 4)?.unwrap_or_default(),
            worker_id: row.get(5)?,
            updated: Timestamp::from_micros(row.get(6)?),
        })
    })
    .map_err(backend)?
    .collect::<Result<_, _>>()
    .map_err(backend)
}

const MINUTE_MICROS: i64 = 60_000_000;

pub(crate) fn finished_per_minute(
    conn: &Connection,
    since: Timestamp,
) -> Result<Vec<FinishedInMinute>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT finished / ?1 AS minute, \
                    sum(status = 'completed'), sum(status = 'failed') \
             FROM jobs WHERE finished >= ?2 AND status IN ('completed', 'failed') \
             GROUP BY minute ORDER BY minute",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![MINUTE_MICROS, since.as_micros()], |row| {
            Ok(FinishedInMinute {
                minute: Timestamp::from_micros(row.get::<_, i64>(0)? * MINUTE_MICROS),
                completed: row.get(1)?,
                failed: row.get(2)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::query_plan;

    /// A tag or context filter walks its label's index range in page
    /// order and looks each job up by seq: no scan of the jobs table, no
    /// sort, whatever else the filter says.
    #[test]
    fn a_label_filter_is_an_index_range_in_page_order() {
        let params = ListParams {
            tags: vec!["podcast".into()],
            context: vec![("notebook_id".into(), "42".into())],
            status: Some(errand_core::JobStatus::Failed),
            cursor: Some("1000".into()),
            ..ListParams::default()
        };
        let plan = query_plan(&list_query(&params, 50).unwrap().0);
        assert!(
            plan.starts_with("SEARCH l USING PRIMARY KEY (key=? AND value=?"),
            "{plan}"
        );
        assert!(
            plan.contains("SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan}"
        );
        assert!(plan.contains("SEARCH x USING PRIMARY KEY"), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// The stats read walks indexes, never the whole jobs table.
    #[test]
    fn the_stats_read_does_not_scan_the_jobs_table() {
        let run_times = query_plan(STATS_RUN_TIMES);
        assert!(run_times.contains("jobs_finished"), "{run_times}");
        let oldest = query_plan(STATS_OLDEST_READY);
        assert!(oldest.contains("jobs_ready"), "{oldest}");
        for plan in [run_times, oldest] {
            assert!(
                !plan.contains("SCAN jobs\n") && !plan.ends_with("SCAN jobs"),
                "{plan}"
            );
            assert!(!plan.contains("jobs_command"), "{plan}");
        }
    }
}
