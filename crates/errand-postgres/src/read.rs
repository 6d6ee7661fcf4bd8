//! Every read, on a pooled connection.

use deadpool_postgres::ClientWrapper as Client;
use errand_core::{Job, JobEvent, JobId, Timestamp};
use errand_store::{
    CommandInfo, CommandStats, FinishedInMinute, JobPage, ListCondition, ListParams, StoreError,
    WorkerInfo,
};
use tokio_postgres::types::ToSql;

use crate::rows::{self, db, prepared, ts, JOB_COLUMNS};
use crate::write::WORKER_TTL;

pub(crate) const EVENT_COLUMNS: &str =
    "e.id AS event_id, j.id AS job_id, e.seq, e.kind, e.status, j.app, j.command, e.data, e.at";

pub(crate) async fn get(client: &Client, job_id: &JobId) -> Result<Job, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM errand_jobs j WHERE j.id = $1");
    let row = client
        .query_opt(&prepared(client, &sql).await?, &[&job_id.as_str()])
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(job_id.clone()))?;
    rows::job(&row)
}

pub(crate) async fn list(client: &Client, params: &ListParams) -> Result<JobPage, StoreError> {
    let limit = params.effective_limit().map_err(StoreError::Invalid)?;
    let (sql, values) = list_query(params, limit)?;
    let refs: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client
        .query(&prepared(client, &sql).await?, &refs)
        .await
        .map_err(db)?;
    let mut jobs = Vec::with_capacity(rows.len());
    let mut last_seq = 0i64;
    for row in rows.iter().take(limit) {
        jobs.push(rows::job(row)?);
        last_seq = row.get("seq");
    }
    let next_cursor = (rows.len() > limit).then(|| last_seq.to_string());
    Ok(JobPage { jobs, next_cursor })
}

/// A list statement and its values.
pub type ListQuery = (String, Vec<Box<dyn ToSql + Sync + Send>>);

/// The list statement and its values: one row more than `limit`, to know
/// whether a next page exists.
pub(crate) fn list_query(params: &ListParams, limit: usize) -> Result<ListQuery, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    // The first label drives the query: its index range, newest first, is
    // the order of the page; the jobs are looked up by seq. Further labels
    // are probes of the same index.
    let mut driving = false;
    for condition in params.conditions().map_err(StoreError::Invalid)? {
        let (column, value): (&str, Box<dyn ToSql + Sync + Send>) = match condition {
            ListCondition::Label(label) => {
                values.push(Box::new(label.key));
                values.push(Box::new(label.value));
                let (key, value) = (values.len() - 1, values.len());
                if driving {
                    clauses.push(format!(
                        "EXISTS (SELECT 1 FROM errand_job_labels x WHERE x.key = ${key} \
                         AND x.value = ${value} AND x.job_seq = j.seq)"
                    ));
                } else {
                    driving = true;
                    clauses.push(format!("l.key = ${key} AND l.value = ${value}"));
                }
                continue;
            }
            ListCondition::App(app) => ("j.app =", Box::new(app)),
            ListCondition::Command(name) => ("j.command =", Box::new(name)),
            ListCondition::Status(status) => ("j.status =", Box::new(status.as_str())),
            ListCondition::Queue(queue) => ("j.queue =", Box::new(queue)),
            ListCondition::Parent(id) => ("j.parent_id =", Box::new(id.into_string())),
            ListCondition::CreatedAfter(at) => ("j.created >", Box::new(ts(at))),
            ListCondition::CreatedBefore(at) => ("j.created <", Box::new(ts(at))),
            ListCondition::SeqBelow(seq) => ("j.seq <", Box::new(seq)),
            ListCondition::IdFrom(id) => ("j.id >=", Box::new(id)),
            ListCondition::IdBelow(id) => ("j.id <", Box::new(id)),
        };
        values.push(value);
        clauses.push(format!("{column} ${}", values.len()));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    values.push(Box::new(limit as i64 + 1));
    let sql = if driving {
        format!(
            "SELECT {JOB_COLUMNS} FROM errand_job_labels l JOIN errand_jobs j ON j.seq = l.job_seq \
             {filter_sql} ORDER BY l.job_seq DESC LIMIT ${}",
            values.len()
        )
    } else {
        format!(
            "SELECT {JOB_COLUMNS} FROM errand_jobs j {filter_sql} ORDER BY j.seq DESC LIMIT ${}",
            values.len()
        )
    };
    Ok((sql, values))
}

pub(crate) async fn events(
    client: &Client,
    job_id: &JobId,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<JobEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM errand_jobs j JOIN errand_events e ON e.job_seq = j.seq \
         WHERE j.id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3"
    );
    let rows = client
        .query(
            &prepared(client, &sql).await?,
            &[&job_id.as_str(), &after_seq, &(limit as i64)],
        )
        .await
        .map_err(db)?;
    if rows.is_empty() {
        get(client, job_id).await?; // NotFound for an unknown job
    }
    rows.iter().map(rows::event).collect()
}

/// Events after `after_id`, up to the settled head (see [`feed_head`]).
pub(crate) async fn feed(
    client: &Client,
    after_id: i64,
    limit: usize,
) -> Result<Vec<JobEvent>, StoreError> {
    let head = feed_head(client).await?;
    if head <= after_id {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM errand_events e JOIN errand_jobs j ON e.job_seq = j.seq \
         WHERE e.id > $1 AND e.id <= $3 ORDER BY e.id LIMIT $2"
    );
    let rows = client
        .query(
            &prepared(client, &sql).await?,
            &[&after_id, &(limit as i64), &head],
        )
        .await
        .map_err(db)?;
    rows.iter().map(rows::event).collect()
}

/// The highest event id that is settled: every id up to it is committed
/// or never will be.
///
/// Ids come from a sequence in the order transactions ask for them, but
/// transactions commit in their own order, so a reader can see id 11
/// while 10 is still to commit; resuming after 11 would lose 10. So: read
/// how far the sequence has gone, then wait for every transaction in this
/// database that was writing at that moment to end. Any transaction that
/// took an id by then is among them, because errand writes a job row
/// (which gives the transaction its id, `backend_xid`) before it inserts
/// an event.
pub(crate) async fn feed_head(client: &Client) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            &prepared(
                client,
                "SELECT last_value, is_called FROM errand_events_id_seq",
            )
            .await?,
            &[],
        )
        .await
        .map_err(db)?;
    let (last, called): (i64, bool) = (row.get(0), row.get(1));
    let allocated = if called { last } else { last - 1 };
    let writing: Vec<String> = client
        .query(
            &prepared(
                client,
                "SELECT backend_xid::text FROM pg_stat_activity \
                 WHERE datname = current_database() AND backend_xid IS NOT NULL \
                 AND pid <> pg_backend_pid()",
            )
            .await?,
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if writing.is_empty() {
        return Ok(allocated);
    }
    let still = prepared(
        client,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_xid::text = ANY($1)",
    )
    .await?;
    // errand's transactions last milliseconds; a long one elsewhere in the
    // database holds the head back for as long as it runs.
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let running: i64 = client
            .query_one(&still, &[&writing])
            .await
            .map_err(db)?
            .get(0);
        if running == 0 {
            return Ok(allocated);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Events with ids in `[from, to]`, for the change-feed listener.
pub(crate) async fn events_between(
    client: &Client,
    from: i64,
    to: i64,
) -> Result<Vec<JobEvent>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM errand_events e JOIN errand_jobs j ON e.job_seq = j.seq \
         WHERE e.id BETWEEN $1 AND $2 ORDER BY e.id"
    );
    let rows = client
        .query(&prepared(client, &sql).await?, &[&from, &to])
        .await
        .map_err(db)?;
    rows.iter().map(rows::event).collect()
}

/// The stats read: each statement costs the same however many jobs the
/// table holds (the oldest ready job costs as many rows as are queued).
pub(crate) const STATS_COUNTS: &str = "SELECT app, command, status, sum(n)::int8 \
     FROM errand_job_counts GROUP BY app, command, status";
/// Run times in the window of recently finished jobs, walked down
/// errand_jobs_finished.
pub(crate) const STATS_RUN_TIMES: &str = "SELECT app, command, \
     EXTRACT(EPOCH FROM (finished - started))::float8 FROM \
     (SELECT app, command, status, started, finished FROM errand_jobs \
      WHERE finished IS NOT NULL ORDER BY finished DESC LIMIT $1) recent \
     WHERE status IN ('completed', 'failed') AND started IS NOT NULL";
pub(crate) const STATS_OLDEST_READY: &str = "SELECT app, command, \
     EXTRACT(EPOCH FROM ($1 - min(run_at)))::float8 \
     FROM errand_jobs WHERE status = 'new' AND run_at <= $1 GROUP BY app, command";

pub(crate) async fn stats(
    client: &Client,
    now: Timestamp,
) -> Result<Vec<CommandStats>, StoreError> {
    // Kept by the writes as delta rows: folded first, the read costs the
    // same at any table size.
    client
        .execute(&prepared(client, crate::write::FOLD_COUNTS).await?, &[])
        .await
        .map_err(db)?;
    let rows = client
        .query(&prepared(client, STATS_COUNTS).await?, &[])
        .await
        .map_err(db)?;
    let by_command = errand_store::counts::by_command(
        rows.iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get::<_, i64>(3))),
    );
    let run_times = client
        .query(
            &prepared(client, STATS_RUN_TIMES).await?,
            &[&errand_store::counts::RUN_TIME_WINDOW],
        )
        .await
        .map_err(db)?;
    let oldest_ready = client
        .query(&prepared(client, STATS_OLDEST_READY).await?, &[&ts(now)])
        .await
        .map_err(db)?;
    let row_of = |row: &tokio_postgres::Row| (row.get(0), row.get(1), row.get::<_, f64>(2));
    Ok(errand_store::counts::assemble(
        by_command,
        run_times.iter().map(row_of),
        oldest_ready.iter().map(row_of),
    ))
}

pub(crate) async fn workers(
    client: &Client,
    now: Timestamp,
) -> Result<Vec<WorkerInfo>, StoreError> {
    let cutoff = ts(now.minus(WORKER_TTL));
    let rows = client
        .query(
&prepared(client, "SELECT w.id, w.host, w.pid, w.queues, w.commands, w.slots, w.started, w.last_heartbeat, \
             coalesce((SELECT array_agg(j.id ORDER BY j.seq) FROM errand_jobs j \
                       WHERE j.status = 'running' AND j.worker_id = w.id), '{}') AS running \
             FROM errand_workers w WHERE w.last_heartbeat >= $1 ORDER BY w.started").await?,
            &[&cutoff],
        )
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            let started: chrono::DateTime<chrono::Utc> = row.get(6);
            let heartbeat: chrono::DateTime<chrono::Utc> = row.get(7);
            let running: Vec<String> = row.get(8);
            Ok(WorkerInfo {
                worker_id: row.get(0),
                host: row.get(1),
                pid: row.get::<_, i64>(2) as u32,
                queues: serde_json::from_value(row.get(3)).unwrap_or_default(),
                commands: serde_json::from_value(row.get(4)).unwrap_or_default(),
                slots: row.get::<_, i64>(5) as usize,
                running: running.into_iter().map(JobId::from).collect(),
                started: Timestamp::from_datetime(started),
                last_heartbeat: Timestamp::from_datetime(heartbeat),
            })
        })
        .collect()
}

pub(crate) async fn queues(client: &Client) -> Result<Vec<errand_store::QueueInfo>, StoreError> {
    use errand_store::QueueInfo;
    let mut queues = std::collections::BTreeMap::<String, QueueInfo>::new();
    let counts = client
        .query(
            &prepared(
                client,
                "SELECT queue, status, count(*) FROM errand_jobs \
                 WHERE status IN ('new', 'running') GROUP BY queue, status",
            )
            .await?,
            &[],
        )
        .await
        .map_err(db)?;
    for row in counts {
        let name: String = row.get(0);
        let status: String = row.get(1);
        let count: i64 = row.get(2);
        let queue = queues
            .entry(name.clone())
            .or_insert_with(|| QueueInfo::empty(&name));
        match status.as_str() {
            "new" => queue.new = count as u64,
            _ => queue.running = count as u64,
        }
    }
    let paused = client
        .query("SELECT queue, paused_at FROM errand_paused_queues", &[])
        .await
        .map_err(db)?;
    for row in paused {
        let name: String = row.get(0);
        let at: chrono::DateTime<chrono::Utc> = row.get(1);
        let queue = queues
            .entry(name.clone())
            .or_insert_with(|| QueueInfo::empty(&name));
        queue.paused = true;
        queue.paused_at = Some(Timestamp::from_datetime(at));
    }
    Ok(queues.into_values().collect())
}

pub(crate) async fn commands(client: &Client) -> Result<Vec<CommandInfo>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT app, name, description, input_schema, defaults, worker_id, updated, \
             output_schema FROM errand_commands ORDER BY app, name",
            )
            .await?,
            &[],
        )
        .await
        .map_err(db)?;
    rows.iter()
        .map(|row| {
            let updated: chrono::DateTime<chrono::Utc> = row.get(6);
            Ok(CommandInfo {
                app: row.get(0),
                name: row.get(1),
                description: row.get(2),
                input_schema: row.get(3),
                output_schema: row.get(7),
                defaults: serde_json::from_value(row.get(4)).unwrap_or_default(),
                worker_id: row.get(5),
                updated: Timestamp::from_datetime(updated),
            })
        })
        .collect()
}

pub(crate) async fn finished_per_minute(
    client: &Client,
    since: Timestamp,
) -> Result<Vec<FinishedInMinute>, StoreError> {
    let rows = client
        .query(
            &prepared(
                client,
                "SELECT floor(EXTRACT(EPOCH FROM finished) / 60)::bigint AS minute, \
                        count(*) FILTER (WHERE status = 'completed'), \
                        count(*) FILTER (WHERE status = 'failed') \
                 FROM errand_jobs \
                 WHERE finished >= $1 AND status IN ('completed', 'failed') \
                 GROUP BY minute ORDER BY minute",
            )
            .await?,
            &[&ts(since)],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|row| FinishedInMinute {
            minute: Timestamp::from_micros(row.get::<_, i64>(0) * 60_000_000),
            completed: row.get::<_, i64>(1) as u64,
            failed: row.get::<_, i64>(2) as u64,
        })
        .collect())
}
