//! Cluster-wide limits: each limited job's key set in SQL as it is
//! inserted, and claims that count each key's running jobs and recent
//! starts before they start one. The writer's transaction holds the write
//! lock, so what a claim counts cannot change before it commits.

use std::collections::HashMap;

use errand_core::{admit, Candidate, CommandLimit, CommandName, KeyPath, KeyUsage};
use errand_store::{ClaimParams, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

use crate::rows::backend;
use crate::write::{changed_from_row, returning, Changed};
use crate::writer::WriteCtx;

/// The limit key of a job, as an SQL expression over the job's app,
/// command, input and context (parameters or columns): NULL when the
/// command has no limits, `app.name` for a limit without key, else
/// `app.name:VALUE` (an empty VALUE when the job has no such field).
macro_rules! limit_key_of {
    ($app:literal, $command:literal, $input:literal, $context:literal) => {
        concat!(
            "(SELECT CASE WHEN l.key_source IS NULL THEN l.command ",
            "ELSE l.command || ':' || coalesce(CAST(json_extract(CASE l.key_source ",
            "WHEN 'input' THEN ",
            $input,
            " ELSE ",
            $context,
            " END, l.key_path) AS TEXT), '') END ",
            "FROM limits l WHERE l.command = ",
            $app,
            " || '.' || ",
            $command,
            ")"
        )
    };
}
pub(crate) use limit_key_of;

/// How far past the free slots a limited claim looks for jobs it may
/// start, so that a backlog of one busy key does not hold the others up.
const LOOKAHEAD: usize = 1000;

/// The candidates a limited claim reads: twice the free slots, then (if
/// full keys left slots empty) [`LOOKAHEAD`] more.
fn lookaheads(slots: usize) -> [i64; 2] {
    [(2 * slots) as i64, (slots + LOOKAHEAD) as i64]
}

pub(crate) fn load(conn: &Connection) -> Result<HashMap<String, CommandLimit>, StoreError> {
    Ok(list(conn)?
        .into_iter()
        .map(|limit| (limit.command.clone(), limit))
        .collect())
}

pub(crate) fn list(conn: &Connection) -> Result<Vec<CommandLimit>, StoreError> {
    conn.prepare_cached(
        "SELECT command, key, max_running, max_starts, per_secs FROM limits ORDER BY command",
    )
    .map_err(backend)?
    .query_map([], |row| {
        Ok(CommandLimit {
            command: row.get(0)?,
            key: row.get(1)?,
            max_running: row.get(2)?,
            max_starts: row.get(3)?,
            per_secs: row.get(4)?,
        })
    })
    .map_err(backend)?
    .collect::<Result<_, _>>()
    .map_err(backend)
}

pub(crate) fn set(
    conn: &Connection,
    ctx: &mut WriteCtx,
    limit: &CommandLimit,
    key: Option<&KeyPath>,
) -> Result<CommandLimit, StoreError> {
    conn.prepare_cached(
        "INSERT INTO limits (command, key, key_source, key_path, max_running, max_starts, \
           per_secs, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (command) DO UPDATE SET key = excluded.key, \
           key_source = excluded.key_source, key_path = excluded.key_path, \
           max_running = excluded.max_running, max_starts = excluded.max_starts, \
           per_secs = excluded.per_secs, updated = excluded.updated",
    )
    .map_err(backend)?
    .execute(params![
        limit.command,
        limit.key,
        key.map(|k| k.source.as_str()),
        key.map(KeyPath::json_path),
        limit.max_running,
        limit.max_starts,
        limit.per_secs,
        ctx.now.as_micros(),
    ])
    .map_err(backend)?;
    // Jobs already waiting or running are held to it from now on.
    let command =
        CommandName::parse(&limit.command).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let (app, name) = (command.app(), command.name());
    const BACKFILL: &str = concat!(
        "UPDATE jobs SET limit_key = ",
        limit_key_of!("jobs.app", "jobs.command", "jobs.input", "jobs.context"),
        " WHERE app = ?1 AND command = ?2 AND status IN ('new', 'running')"
    );
    conn.prepare_cached(BACKFILL)
        .map_err(backend)?
        .execute(params![app, name])
        .map_err(backend)?;
    Ok(limit.clone())
}

pub(crate) fn delete(
    conn: &Connection,
    _ctx: &mut WriteCtx,
    command: &str,
) -> Result<(), StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM limits WHERE command = ?")
        .map_err(backend)?
        .execute([command])
        .map_err(backend)?;
    if deleted == 0 {
        return Err(StoreError::LimitNotFound(command.to_owned()));
    }
    Ok(())
}

/// One queue's share of a claim, when limits exist.
pub(crate) struct Within<'a> {
    pub params: &'a ClaimParams,
    pub queue: &'a String,
    pub commands: &'a [(String, String)],
    pub slots: usize,
    pub lease_until: i64,
    pub now: i64,
}

/// Claims up to `slots` jobs of the queue that their keys' limits let
/// start, in claim order, and records the starts of rate-limited keys.
pub(crate) fn claim_within_limits(
    conn: &Connection,
    within: &Within<'_>,
    limits: &HashMap<String, CommandLimit>,
) -> Result<Vec<Changed>, StoreError> {
    let filter = if within.params.commands.is_some() {
        let pairs = vec!["(?, ?)"; within.commands.len()].join(", ");
        format!("AND (app, command) IN (VALUES {pairs})")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT seq, app || '.' || command, limit_key FROM jobs \
         WHERE status = 'new' AND queue = ? AND run_at <= ? {filter} \
         ORDER BY priority DESC, run_at, seq LIMIT ?"
    );
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![within.queue, &within.now];
    for (app, name) in within.commands {
        values.push(app);
        values.push(name);
    }
    // A short look first (the usual case: most candidates fit); the long
    // one only when full keys left slots empty.
    let mut rows = Vec::new();
    let mut admitted = Vec::new();
    for lookahead in lookaheads(within.slots) {
        let mut values = values.clone();
        values.push(&lookahead);
        rows = conn
            .prepare_cached(&sql)
            .map_err(backend)?
            .query_map(values.as_slice(), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(backend)?
            .collect::<Result<Vec<(i64, String, Option<String>)>, _>>()
            .map_err(backend)?;
        let usage = usage(conn, &rows, limits, within.now)?;
        let candidates: Vec<Candidate> = rows
            .iter()
            .map(|(_, command, key)| Candidate {
                command,
                key: key.as_deref(),
            })
            .collect();
        admitted = admit(&candidates, within.slots, limits, &usage);
        if admitted.len() == within.slots || (rows.len() as i64) < lookahead {
            break;
        }
    }
    if admitted.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = admitted.iter().map(|&i| rows[i].0).collect();
    let sql = format!(
        "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = ?, \
         lease_until = ?, started = ?, updated = ?, event_seq = event_seq + 1 \
         WHERE seq IN (SELECT value FROM json_each(?)) AND status = 'new' {}",
        returning()
    );
    let seq_list = serde_json::to_string(&seqs).expect("numbers serialize");
    let changed: Vec<Changed> = conn
        .prepare_cached(&sql)
        .map_err(backend)?
        .query_map(
            params![
                within.params.worker_id,
                within.lease_until,
                within.now,
                within.now,
                seq_list
            ],
            changed_from_row,
        )
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    let mut record = conn
        .prepare_cached("INSERT INTO limit_starts (limit_key, at) VALUES (?, ?)")
        .map_err(backend)?;
    for &index in &admitted {
        let (_, command, key) = &rows[index];
        let rated = limits.get(command).is_some_and(|l| l.window().is_some());
        if let (true, Some(key)) = (rated, key) {
            record.execute(params![key, within.now]).map_err(backend)?;
        }
    }
    Ok(changed)
}

/// Each limited key's running jobs and starts within its window; starts
/// older than the window are deleted on the way.
fn usage(
    conn: &Connection,
    rows: &[(i64, String, Option<String>)],
    limits: &HashMap<String, CommandLimit>,
    now: i64,
) -> Result<HashMap<String, KeyUsage>, StoreError> {
    let mut usage = HashMap::new();
    let mut running = conn
        .prepare_cached("SELECT count(*) FROM jobs WHERE limit_key = ? AND status = 'running'")
        .map_err(backend)?;
    let mut forget = conn
        .prepare_cached("DELETE FROM limit_starts WHERE limit_key = ? AND at <= ?")
        .map_err(backend)?;
    let mut started = conn
        .prepare_cached("SELECT count(*) FROM limit_starts WHERE limit_key = ?")
        .map_err(backend)?;
    for (_, command, key) in rows {
        let (Some(key), Some(limit)) = (key, limits.get(command)) else {
            continue;
        };
        if usage.contains_key(key) {
            continue;
        }
        let mut now_used = KeyUsage::default();
        if limit.max_running.is_some() {
            now_used.running = running
                .query_row([key], |row| row.get(0))
                .map_err(backend)?;
        }
        if let Some((_, window)) = limit.window() {
            let since = now - window.as_micros() as i64;
            forget.execute(params![key, since]).map_err(backend)?;
            now_used.recent_starts = started
                .query_row([key], |row| row.get(0))
                .optional()
                .map_err(backend)?
                .unwrap_or(0);
        }
        usage.insert(key.clone(), now_used);
    }
    Ok(usage)
}

/// A key's running jobs, and its starts since `since` (none without).
pub(crate) fn usage_of(
    conn: &Connection,
    key: &str,
    since: Option<i64>,
) -> Result<KeyUsage, StoreError> {
    let running = conn
        .prepare_cached("SELECT count(*) FROM jobs WHERE limit_key = ? AND status = 'running'")
        .map_err(backend)?
        .query_row([key], |row| row.get(0))
        .map_err(backend)?;
    let recent_starts = match since {
        None => 0,
        Some(since) => conn
            .prepare_cached("SELECT count(*) FROM limit_starts WHERE limit_key = ? AND at > ?")
            .map_err(backend)?
            .query_row(params![key, since], |row| row.get(0))
            .map_err(backend)?,
    };
    Ok(KeyUsage {
        running,
        recent_starts,
    })
}
