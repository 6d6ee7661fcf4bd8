//! Webhook deliveries: queued from the event log, taken by a sender for a
//! lease, and each attempt recorded in its job's event log.

use errand_core::JobEvent;
use errand_store::webhook_sql::wanted_events_sql;
use errand_store::{DeliveryAttempt, StoreError, TakeDeliveries, WebhookDelivery};
use rusqlite::{params, Connection, OptionalExtension};

use super::events::{lean_from_row, record_change, LEAN_RETURNING};
use crate::rows::{backend, event_from_row, EVENT_COLUMNS};
use crate::writer::WriteCtx;

/// Events scanned per call at most, so one call never holds the writer long.
const SCAN_LIMIT: i64 = 10_000;

pub(crate) fn queue(conn: &Connection, ctx: &mut WriteCtx) -> Result<u64, StoreError> {
    let cursor: i64 = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'webhook_cursor'")
        .and_then(|mut s| s.query_row([], |row| row.get(0)).optional())
        .map_err(backend)?
        .unwrap_or(0);
    let head = crate::read::feed_head(conn)?.min(cursor + SCAN_LIMIT);
    if head <= cursor {
        return Ok(0);
    }
    let sql = format!(
        "INSERT OR IGNORE INTO webhook_deliveries (job_seq, event_id, url, state, next_at) \
         SELECT e.job_seq, e.id, json_extract(j.webhook, '$.url'), 'pending', ?3 \
         FROM events e JOIN jobs j ON j.seq = e.job_seq \
         WHERE e.id > ?1 AND e.id <= ?2 AND j.webhook IS NOT NULL {}",
        wanted_events_sql("json_extract(j.webhook, '$.on')")
    );
    let queued = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.execute(params![cursor, head, ctx.now.as_micros()]))
        .map_err(backend)?;
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('webhook_cursor', ?)")
        .and_then(|mut s| s.execute([head]))
        .map_err(backend)?;
    Ok(queued as u64)
}

pub(crate) fn take(
    conn: &Connection,
    ctx: &mut WriteCtx,
    take: &TakeDeliveries,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let now = ctx.now.as_micros();
    let taken: Vec<(i64, String, u32, i64)> = conn
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = 'sending', sender = ?1, \
             attempts = attempts + 1, next_at = ?2 \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                          WHERE state IN ('pending', 'sending') AND next_at <= ?3 \
                          ORDER BY next_at LIMIT ?4) \
             RETURNING id, url, attempts, event_id",
        )
        .and_then(|mut s| {
            s.query_map(
                params![
                    take.sender,
                    ctx.now.plus(take.lease).as_micros(),
                    now,
                    take.limit as i64
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?
            .collect()
        })
        .map_err(backend)?;
    let mut event = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e JOIN jobs j ON e.job_seq = j.seq WHERE e.id = ?"
        ))
        .map_err(backend)?;
    let mut deliveries = Vec::with_capacity(taken.len());
    for (delivery_id, url, attempt, event_id) in taken {
        let found: Option<JobEvent> = event
            .query_row([event_id], event_from_row)
            .optional()
            .map_err(backend)?;
        match found {
            Some(event) => deliveries.push(WebhookDelivery {
                delivery_id,
                url,
                attempt,
                event,
            }),
            // Its job is gone (pruned meanwhile): nothing left to tell.
            None => {
                conn.execute("DELETE FROM webhook_deliveries WHERE id = ?", [delivery_id])
                    .map_err(backend)?;
            }
        }
    }
    Ok(deliveries)
}

pub(crate) fn record(
    conn: &Connection,
    ctx: &mut WriteCtx,
    sender: &str,
    delivery: &WebhookDelivery,
    attempt: &DeliveryAttempt,
) -> Result<(), StoreError> {
    let state = attempt.stored_state();
    let next_at = attempt.retry_at.unwrap_or(ctx.now).as_micros();
    let held = conn
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = ?1, next_at = ?2, sender = NULL \
             WHERE id = ?3 AND attempts = ?4 AND sender = ?5 AND state = 'sending'",
        )
        .and_then(|mut s| {
            s.execute(params![
                state,
                next_at,
                delivery.delivery_id,
                delivery.attempt,
                sender
            ])
        })
        .map_err(backend)?;
    if held == 0 {
        return Err(StoreError::LeaseLost {
            job_id: delivery.event.job_id.clone(),
            attempt: delivery.attempt,
        });
    }
    let job = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET event_seq = event_seq + 1 \
             WHERE seq = (SELECT job_seq FROM webhook_deliveries WHERE id = ?) {LEAN_RETURNING}"
        ))
        .and_then(|mut s| {
            s.query_row([delivery.delivery_id], |row| {
                lean_from_row(&delivery.event.job_id, row)
            })
            .optional()
        })
        .map_err(backend)?;
    let Some(job) = job else {
        return Ok(());
    };
    let record = attempt.record(delivery, job.status);
    record_change(ctx, job, &record)
}
