//! Cluster-wide limits: each limited job's key set in SQL as it is
//! inserted, and claims that, once limits exist, run in a transaction:
//! lock the candidate rows (SKIP LOCKED), take an advisory lock per
//! limited key in key order, count each key's running jobs and recent
//! starts (a fresh snapshot, after the locks: what other servers' claims
//! committed is counted), and start only what fits.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Transaction;
use errand_core::{admit, Candidate, CommandLimit, Job, JobEvent, KeyPath, KeyUsage, Timestamp};
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
/// start, so that a backlog of one busy key does not hold the others up.
const LOOKAHEAD: i64 = 1000;

/// Any constant: the first half of each key's advisory lock.
const LIMIT_LOCK_SPACE: i32 = 0x6c69_6d69; // "limi"

/// Whether any limit exists, looked up at most once a second: claims take
/// the one-statement path while none does. A limit set on another host is
/// in force here within that second (its jobs' keys are set at once).
#[derive(Default)]
pub(crate) struct LimitsSeen {
    last: Mutex<Option<(Instant, bool)>>,
}

const LOOK_AGAIN: Duration = Duration::from_secs(1);

impl LimitsSeen {
    pub(crate) async fn any(
        &self,
        client: &deadpool_postgres::ClientWrapper,
    ) -> Result<bool, StoreError> {
        if let Some((at, any)) = *self.last.lock().expect("never poisoned") {
            if at.elapsed() < LOOK_AGAIN {
                return Ok(any);
            }
        }
        let any: bool = client
            .query_one(
                &prepared(client, "SELECT EXISTS (SELECT 1 FROM errand_limits)").await?,
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        self.set(any);
        Ok(any)
    }

    /// What this process just did: seen at once, not a second later.
    pub(crate) fn set(&self, any: bool) {
        *self.last.lock().expect("never poisoned") = Some((Instant::now(), any));
    }
}

pub(crate) async fn list(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Vec<CommandLimit>, StoreError> {
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
    let (app, name) = limit.command.split_once('.').expect("validated");
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

/// A claim while limits exist, in the caller's transaction.
pub(crate) async fn claim(
    tx: &Transaction<'_>,
    now: Timestamp,
    params: &ClaimParams,
    origin: &str,
    events: &mut Vec<JobEvent>,
) -> Result<Vec<Job>, StoreError> {
    if !claims_something(params)? {
        return Ok(Vec::new());
    }
    let limits: HashMap<String, CommandLimit> = list(tx)
        .await?
        .into_iter()
        .map(|limit| (limit.command.clone(), limit))
        .collect();
    let mut claimed = Vec::new();
    for queue in &params.queues {
        let slots = params.limit.saturating_sub(claimed.len());
        if slots == 0 {
            break;
        }
        let rows = claim_queue(tx, now, params, queue, slots, origin, &limits).await?;
        claimed.extend(started_jobs(&rows, now)?);
    }
    Ok(in_claim_order(claimed, events))
}

async fn claim_queue(
    tx: &Transaction<'_>,
    now: Timestamp,
    params: &ClaimParams,
    queue: &String,
    slots: usize,
    origin: &str,
    limits: &HashMap<String, CommandLimit>,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let now_at = ts(now);
    let lookahead = slots as i64 + LOOKAHEAD;
    let candidates = tx
        .query(
            &prepared(
                tx,
                "SELECT seq, app || '.' || command, limit_key FROM errand_jobs \
                 WHERE status = 'new' AND queue = $1 AND run_at <= $2 \
                 AND ($3::text[] IS NULL OR app || '.' || command = ANY($3)) \
                 AND NOT EXISTS (SELECT 1 FROM errand_paused_queues WHERE queue = $1) \
                 ORDER BY priority DESC, run_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[queue, &now_at, &params.commands, &lookahead],
        )
        .await
        .map_err(db)?;
    let rows: Vec<(i64, String, Option<String>)> = candidates
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let usage = usage(tx, &rows, limits, now).await?;
    let chosen: Vec<Candidate> = rows
        .iter()
        .map(|(_, command, key)| Candidate {
            command,
            key: key.as_deref(),
        })
        .collect();
    let admitted = admit(&chosen, slots, limits, &usage);
    if admitted.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = admitted.iter().map(|&i| rows[i].0).collect();
    let kind = errand_core::EventKind::Status.as_str();
    let lease_until = ts(now.plus(params.lease));
    let started = tx
        .query(
            &prepared(tx, &claim_chosen_sql()).await?,
            &[
                &now_at,
                &kind,
                queue,
                &params.commands,
                &seqs,
                &params.worker_id,
                &lease_until,
                &origin,
            ],
        )
        .await
        .map_err(db)?;
    let rated: Vec<&str> = admitted
        .iter()
        .filter_map(|&i| {
            let (_, command, key) = &rows[i];
            let window = limits.get(command).and_then(CommandLimit::window);
            window.and(key.as_deref())
        })
        .collect();
    if !rated.is_empty() {
        tx.execute(
            &prepared(
                tx,
                "INSERT INTO errand_limit_starts (limit_key, at) SELECT unnest($1::text[]), $2",
            )
            .await?,
            &[&rated, &now_at],
        )
        .await
        .map_err(db)?;
    }
    Ok(started)
}

/// Locks each limited key among the candidates (in key order, so claims
/// never deadlock), forgets starts older than their window, and counts
/// each key's running jobs and recent starts.
async fn usage(
    tx: &Transaction<'_>,
    rows: &[(i64, String, Option<String>)],
    limits: &HashMap<String, CommandLimit>,
    now: Timestamp,
) -> Result<HashMap<String, KeyUsage>, StoreError> {
    let mut windows: HashMap<&str, Timestamp> = HashMap::new();
    let mut keys = BTreeSet::new();
    for (_, command, key) in rows {
        if let (Some(key), Some(limit)) = (key, limits.get(command)) {
            keys.insert(key.as_str());
            // No window: nothing counts as a recent start.
            let since = limit.window().map_or(now, |(_, per)| now.minus(per));
            windows.insert(key.as_str(), since);
        }
    }
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<&str> = keys.into_iter().collect();
    let since: Vec<_> = keys.iter().map(|k| ts(windows[k])).collect();
    tx.query(
        &prepared(
            tx,
            "SELECT pg_advisory_xact_lock($2, hashtext(k)) FROM unnest($1::text[]) AS k",
        )
        .await?,
        &[&keys, &LIMIT_LOCK_SPACE],
    )
    .await
    .map_err(db)?;
    tx.execute(
        &prepared(
            tx,
            "DELETE FROM errand_limit_starts s USING unnest($1::text[], $2::timestamptz[]) \
             AS u(k, since) WHERE s.limit_key = u.k AND s.at <= u.since",
        )
        .await?,
        &[&keys, &since],
    )
    .await
    .map_err(db)?;
    let counted = tx
        .query(
            &prepared(
                tx,
                "SELECT u.k, \
                   (SELECT count(*) FROM errand_jobs WHERE limit_key = u.k AND status = 'running'), \
                   (SELECT count(*) FROM errand_limit_starts WHERE limit_key = u.k) \
                 FROM unnest($1::text[]) AS u(k)",
            )
            .await?,
            &[&keys],
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
