//! Cluster-wide limits: each limited job's key set in SQL as it is
//! inserted, and claims that, once limits exist, run in a transaction:
//! lock the candidate rows (SKIP LOCKED), take an advisory lock per
//! limited key in key order, count each key's running jobs and recent
//! starts (a fresh snapshot, after the locks: what other servers' claims
//! committed is counted), and start only what fits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Transaction;
use errand_core::{
    admit, Candidate, CommandLimit, CommandName, Job, JobEvent, KeyPath, KeyUsage, Timestamp,
};
use errand_store::{ClaimParams, StoreError};

use crate::rows::{db, prepared, ts};
use crate::write::{claim_chosen_sql, claims_something, in_claim_order, started_jobs};

/// The limit key of a job, as an SQL expression over the job's app,
/// command, input and context (parameters or columns): NULL when the
/// command has no limits, `app.name` for a limit without key, else
/// `app.name:VALUE` (an empty VALUE when the job has no such field).
macro_rules! limit_key_of {
    ($app:literal, $command:literal, $input:literal, $context:literal) => {
        concat!(
            "(SELECT CASE WHEN l.key_source IS NULL THEN l.command ",
            "ELSE l.command || ':' || coalesce((CASE l.key_source WHEN 'input' THEN ",
            $input,
            " ELSE ",
            $context,
            " END) #>> l.key_path, '') END ",
            "FROM errand_limits l WHERE l.command = ",
            $app,
            " || '.' || ",
            $command,
            ")"
        )
    };
}
pub(crate) use limit_key_of;

/// How far past the free slots a limited claim looks for jobs it may
/// start, so that a backlog of one busy key does not hold the others up;
/// it first looks at twice the free slots, and this far only when full
/// keys left slots empty.
const LOOKAHEAD: i64 = 1000;

/// Any constant: the first half of each key's advisory lock.
const LIMIT_LOCK_SPACE: i32 = 0x6c69_6d69; // "limi"

/// Every command's limits, read at most once a second: claims take the
/// one-statement path while there are none. A limit set or changed on
/// another host is in force here within that second (its jobs' keys are
/// set at once, in the store).
#[derive(Default)]
pub(crate) struct KnownLimits {
    last: Mutex<Option<(Instant, Limits)>>,
}

/// Limits by command.
pub(crate) type Limits = Arc<HashMap<String, CommandLimit>>;

const LOOK_AGAIN: Duration = Duration::from_secs(1);

impl KnownLimits {
    pub(crate) async fn get(
        &self,
        client: &deadpool_postgres::ClientWrapper,
    ) -> Result<Limits, StoreError> {
        if let Some((at, limits)) = &*self.last.lock().expect("never poisoned") {
            if at.elapsed() < LOOK_AGAIN {
                return Ok(limits.clone());
            }
        }
        let limits: Limits = Arc::new(
            list(client)
                .await?
                .into_iter()
                .map(|limit| (limit.command.clone(), limit))
                .collect(),
        );
        *self.last.lock().expect("never poisoned") = Some((Instant::now(), limits.clone()));
        Ok(limits)
    }

    /// This process changed them: read them again at the next claim.
    pub(crate) fn forget(&self) {
        *self.last.lock().expect("never poisoned") = None;
    }
}

pub(crate) async fn list(client: &tokio_postgres::Client) -> Result<Vec<CommandLimit>, StoreError> {
    let rows = client
        .query(
            "SELECT command, key, max_running, max_starts, per_secs FROM errand_limits \
             ORDER BY command",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|row| CommandLimit {
            command: row.get(0),
            key: row.get(1),
            max_running: row.get::<_, Option<i32>>(2).map(|n| n as u32),
            max_starts: row.get::<_, Option<i32>>(3).map(|n| n as u32),
            per_secs: row.get(4),
        })
        .collect())
}

pub(crate) async fn set(
    tx: &Transaction<'_>,
    now: Timestamp,
    limit: &CommandLimit,
    key: Option<&KeyPath>,
) -> Result<(), StoreError> {
    let as_int = |n: Option<u32>| n.map(|n| n.min(i32::MAX as u32) as i32);
    tx.execute(
        "INSERT INTO errand_limits (command, key, key_source, key_path, max_running, \
           max_starts, per_secs, updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (command) DO UPDATE SET key = excluded.key, \
           key_source = excluded.key_source, key_path = excluded.key_path, \
           max_running = excluded.max_running, max_starts = excluded.max_starts, \
           per_secs = excluded.per_secs, updated = excluded.updated",
        &[
            &limit.command,
            &limit.key,
            &key.map(|k| k.source.as_str()),
            &key.map(|k| k.path.clone()),
            &as_int(limit.max_running),
            &as_int(limit.max_starts),
            &limit.per_secs,
            &ts(now),
        ],
    )
    .await
    .map_err(db)?;
    // Jobs already waiting or running are held to it from now on.
    let command =
        CommandName::parse(&limit.command).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let (app, name) = (command.app(), command.name());
    const BACKFILL: &str = concat!(
        "UPDATE errand_jobs j SET limit_key = ",
        limit_key_of!("j.app", "j.command", "j.input", "j.context"),
        " WHERE j.app = $1 AND j.command = $2 AND j.status IN ('new', 'running')"
    );
    tx.execute(BACKFILL, &[&app, &name]).await.map_err(db)?;
    Ok(())
}

pub(crate) async fn delete(
    client: &tokio_postgres::Client,
    command: &str,
) -> Result<(), StoreError> {
    let deleted = client
        .execute("DELETE FROM errand_limits WHERE command = $1", &[&command])
        .await
        .map_err(db)?;
    if deleted == 0 {
        return Err(StoreError::LimitNotFound(command.to_owned()));
    }
    Ok(())
}

/// A claim while limits exist, in a transaction of its own on `client`.
/// BEGIN goes out with the first statement (one round trip for both);
/// the caller runs this to its end even if its own caller goes away (a
/// spawned task), so the transaction always ends before the connection
/// goes back to the pool.
pub(crate) async fn claim(
    client: &deadpool_postgres::ClientWrapper,
    now: Timestamp,
    params: &ClaimParams,
    origin: &str,
    limits: &HashMap<String, CommandLimit>,
) -> Result<(Vec<Job>, Vec<JobEvent>), StoreError> {
    if !claims_something(params)? {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut began = false;
    let claimed = async {
        let mut claimed = Vec::new();
        for (index, queue) in params.queues.iter().enumerate() {
            let slots = params.limit.saturating_sub(claimed.len());
            if slots == 0 {
                break;
            }
            let last = index + 1 == params.queues.len();
            let within = Within {
                now,
                params,
                queue,
                slots,
                origin,
                limits,
                last,
            };
            let rows = claim_queue(client, &within, &mut began).await?;
            claimed.extend(started_jobs(&rows, now)?);
        }
        Ok::<_, StoreError>(claimed)
    }
    .await;
    let end = match &claimed {
        Ok(_) => "COMMIT",
        Err(_) => "ROLLBACK",
    };
    if began {
        client.batch_execute(end).await.map_err(db)?;
    }
    let mut events = Vec::new();
    let jobs = in_claim_order(claimed?, &mut events);
    Ok((jobs, events))
}

/// One queue's share of a limited claim.
struct Within<'a> {
    now: Timestamp,
    params: &'a ClaimParams,
    queue: &'a String,
    slots: usize,
    origin: &'a str,
    limits: &'a HashMap<String, CommandLimit>,
    /// The claim's last queue: its COMMIT goes out with its statements.
    last: bool,
}

async fn claim_queue(
    client: &deadpool_postgres::ClientWrapper,
    within: &Within<'_>,
    began: &mut bool,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let Within {
        now,
        params,
        queue,
        slots,
        origin,
        limits,
        last,
    } = *within;
    let tx = client;
    let now_at = ts(now);
    // A short look first (the usual case: most candidates fit); the long
    // one only when full keys left slots empty.
    let mut rows = Vec::new();
    let mut admitted = Vec::new();
    for lookahead in [slots as i64, slots as i64 + LOOKAHEAD] {
        let statement = prepared(tx, CANDIDATES).await?;
        let values: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            queue,
            &now_at,
            &params.commands,
            &lookahead,
            &LIMIT_LOCK_SPACE,
        ];
        let candidates = if *began {
            tx.query(&statement, &values).await
        } else {
            let (begin, query) =
                tokio::join!(tx.batch_execute("BEGIN"), tx.query(&statement, &values));
            begin.map_err(db)?;
            *began = true;
            query
        }
        .map_err(db)?;
        rows = candidates
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect::<Vec<(i64, String, Option<String>)>>();
        let usage = usage(tx, &rows, limits, now).await?;
        let chosen: Vec<Candidate> = rows
            .iter()
            .map(|(_, command, key)| Candidate {
                command,
                key: key.as_deref(),
            })
            .collect();
        admitted = admit(&chosen, slots, limits, &usage);
        if admitted.len() == slots || (rows.len() as i64) < lookahead {
            break;
        }
    }
    if admitted.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = admitted.iter().map(|&i| rows[i].0).collect();
    let kind = errand_core::EventKind::Status.as_str();
    let lease_until = ts(now.plus(params.lease));
    let rated: Vec<&str> = admitted
        .iter()
        .filter_map(|&i| {
            let (_, command, key) = &rows[i];
            let window = limits.get(command).and_then(CommandLimit::window);
            window.and(key.as_deref())
        })
        .collect();
    let claim_statement = prepared(tx, &claim_chosen_sql()).await?;
    let record_statement = prepared(tx, RECORD_STARTS).await?;
    let values: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &now_at,
        &kind,
        queue,
        &params.commands,
        &seqs,
        &params.worker_id,
        &lease_until,
        &origin,
    ];
    let claiming = tx.query(&claim_statement, &values);
    let recording = async {
        if rated.is_empty() {
            return Ok(0);
        }
        tx.execute(&record_statement, &[&rated, &now_at]).await
    };
    // Sent together: one round trip. A COMMIT after a failed statement
    // rolls back.
    let ending = async {
        if last {
            tx.batch_execute("COMMIT").await
        } else {
            Ok(())
        }
    };
    let (started, recorded, ended) = tokio::join!(claiming, recording, ending);
    if last {
        *began = false;
    }
    let started = started.map_err(db)?;
    recorded.map_err(db)?;
    ended.map_err(db)?;
    Ok(started)
}

/// Each start of a rate-limited key: `$1` the keys, `$2` now.
const RECORD_STARTS: &str =
    "INSERT INTO errand_limit_starts (limit_key, at) SELECT unnest($1::text[]), $2";

/// A queue's candidates in claim order, locked (SKIP LOCKED), and an
/// advisory lock on each limited key among them, taken in key order so
/// claims never deadlock: `$1` queue, `$2` now, `$3` commands (or NULL),
/// `$4` how many, `$5` the locks' space.
const CANDIDATES: &str =
    "WITH c AS (SELECT seq, priority, run_at, app || '.' || command AS command, \
       limit_key \
       FROM errand_jobs WHERE status = 'new' AND queue = $1 AND run_at <= $2 \
       AND ($3::text[] IS NULL OR app || '.' || command = ANY($3)) \
       AND NOT EXISTS (SELECT 1 FROM errand_paused_queues WHERE queue = $1) \
       ORDER BY priority DESC, run_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED), \
     locked AS (SELECT count(pg_advisory_xact_lock($5, hashtext(k))) \
       FROM (SELECT DISTINCT limit_key AS k FROM c \
             WHERE limit_key IS NOT NULL ORDER BY 1) keys) \
     SELECT c.seq, c.command, c.limit_key FROM c CROSS JOIN locked \
     ORDER BY c.priority DESC, c.run_at, c.seq";

/// Each limited key's running jobs and starts within its window (the
/// keys are locked: what other claims committed is counted); starts older
/// than their window are deleted on the way.
async fn usage(
    tx: &deadpool_postgres::ClientWrapper,
    rows: &[(i64, String, Option<String>)],
    limits: &HashMap<String, CommandLimit>,
    now: Timestamp,
) -> Result<HashMap<String, KeyUsage>, StoreError> {
    let mut windows: HashMap<&str, Option<Timestamp>> = HashMap::new();
    for (_, command, key) in rows {
        if let (Some(key), Some(limit)) = (key, limits.get(command)) {
            let since = limit.window().map(|(_, per)| now.minus(per));
            windows.insert(key.as_str(), since);
        }
    }
    if windows.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<&str> = windows.keys().copied().collect();
    let rated: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| windows[k].is_some())
        .collect();
    if !rated.is_empty() {
        let since: Vec<_> = rated.iter().map(|k| windows[k].map(ts)).collect();
        tx.execute(
            &prepared(
                tx,
                "DELETE FROM errand_limit_starts s USING unnest($1::text[], $2::timestamptz[]) \
                 AS u(k, since) WHERE s.limit_key = u.k AND s.at <= u.since",
            )
            .await?,
            &[&rated, &since],
        )
        .await
        .map_err(db)?;
    }
    let counted = tx
        .query(
            &prepared(
                tx,
                "SELECT u.k, \
                   (SELECT count(*) FROM errand_jobs WHERE limit_key = u.k AND status = 'running'), \
                   CASE WHEN u.k = ANY($2) THEN \
                     (SELECT count(*) FROM errand_limit_starts WHERE limit_key = u.k) ELSE 0 END \
                 FROM unnest($1::text[]) AS u(k)",
            )
            .await?,
            &[&keys, &rated],
        )
        .await
        .map_err(db)?;
    Ok(counted
        .iter()
        .map(|row| {
            let usage = KeyUsage {
                running: row.get::<_, i64>(1) as u32,
                recent_starts: row.get::<_, i64>(2) as u32,
            };
            (row.get(0), usage)
        })
        .collect())
}

/// A key's running jobs, and its starts since `since` (none without).
pub(crate) async fn usage_of(
    client: &tokio_postgres::Client,
    key: &str,
    since: Option<Timestamp>,
) -> Result<KeyUsage, StoreError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM errand_jobs WHERE limit_key = $1 AND status = 'running'), \
                    CASE WHEN $2::timestamptz IS NULL THEN 0 ELSE \
                      (SELECT count(*) FROM errand_limit_starts WHERE limit_key = $1 AND at > $2) END",
            &[&key, &since.map(ts)],
        )
        .await
        .map_err(db)?;
    Ok(KeyUsage {
        running: row.get::<_, i64>(0) as u32,
        recent_starts: row.get::<_, i64>(1) as u32,
    })
}
