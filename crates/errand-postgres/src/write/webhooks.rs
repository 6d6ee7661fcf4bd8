//! Webhook deliveries: queued from the event log once in a cluster, taken
//! by one sender at a time, each attempt recorded in its job's event log.

use deadpool_postgres::Transaction;
use errand_core::{JobEvent, Timestamp};
use errand_store::webhook_sql::wanted_events_sql;
use errand_store::{DeliveryAttempt, StoreError, TakeDeliveries, WebhookDelivery};

use super::events::transition;
use crate::read::EVENT_COLUMNS;
use crate::rows::{self, db, prepared, ts};

/// Events scanned per call at most, so one call stays short.
const SCAN_LIMIT: i64 = 10_000;

/// Queues the deliveries of events up to `head` (a settled feed head read
/// before the transaction). The cursor row is locked first: a second
/// server waits, then finds the cursor moved and scans only what is new.
pub(crate) async fn queue(
    tx: &Transaction<'_>,
    now: Timestamp,
    head: i64,
) -> Result<u64, StoreError> {
    let cursor: i64 = tx
        .query_one(
            &prepared(tx, "SELECT cursor FROM errand_webhook_cursor FOR UPDATE").await?,
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    let head = head.min(cursor + SCAN_LIMIT);
    if head <= cursor {
        return Ok(0);
    }
    let sql = format!(
        "INSERT INTO errand_webhook_deliveries (job_seq, event_id, url, state, next_at) \
         SELECT e.job_seq, e.id, j.webhook->>'url', 'pending', $3 \
         FROM errand_events e JOIN errand_jobs j ON j.seq = e.job_seq \
         WHERE e.id > $1 AND e.id <= $2 AND j.webhook IS NOT NULL {} \
         ON CONFLICT (event_id) DO NOTHING",
        wanted_events_sql("j.webhook->>'on'")
    );
    let queued = tx
        .execute(&prepared(tx, &sql).await?, &[&cursor, &head, &ts(now)])
        .await
        .map_err(db)?;
    tx.execute(
        &prepared(tx, "UPDATE errand_webhook_cursor SET cursor = $1").await?,
        &[&head],
    )
    .await
    .map_err(db)?;
    Ok(queued)
}

pub(crate) async fn take(
    tx: &Transaction<'_>,
    now: Timestamp,
    take: &TakeDeliveries,
) -> Result<Vec<WebhookDelivery>, StoreError> {
    let taken = tx
        .query(
            &prepared(
                tx,
                "UPDATE errand_webhook_deliveries SET state = 'sending', sender = $1, \
                 attempts = attempts + 1, next_at = $2 \
                 WHERE id IN (SELECT id FROM errand_webhook_deliveries \
                              WHERE state IN ('pending', 'sending') AND next_at <= $3 \
                              ORDER BY next_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, url, attempts, event_id",
            )
            .await?,
            &[
                &take.sender,
                &ts(now.plus(take.lease)),
                &ts(now),
                &(take.limit as i64),
            ],
        )
        .await
        .map_err(db)?;
    let event_sql = format!(
        "SELECT {EVENT_COLUMNS} FROM errand_events e JOIN errand_jobs j ON e.job_seq = j.seq \
         WHERE e.id = $1"
    );
    let mut deliveries = Vec::with_capacity(taken.len());
    for row in taken {
        let (delivery_id, event_id): (i64, i64) = (row.get("id"), row.get("event_id"));
        let found = tx
            .query_opt(&prepared(tx, &event_sql).await?, &[&event_id])
            .await
            .map_err(db)?;
        match found {
            Some(event) => deliveries.push(WebhookDelivery {
                delivery_id,
                url: row.get("url"),
                attempt: row.get::<_, i32>("attempts") as u32,
                event: rows::event(&event)?,
            }),
            // Its job is gone (pruned meanwhile): nothing left to tell.
            None => {
                tx.execute(
                    "DELETE FROM errand_webhook_deliveries WHERE id = $1",
                    &[&delivery_id],
                )
                .await
                .map_err(db)?;
            }
        }
    }
    Ok(deliveries)
}

pub(crate) async fn record(
    tx: &Transaction<'_>,
    now: Timestamp,
    sender: &str,
    delivery: &WebhookDelivery,
    attempt: &DeliveryAttempt,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let state = attempt.stored_state();
    let job = tx
        .query_opt(
            &prepared(
                tx,
                "UPDATE errand_webhook_deliveries SET state = $1, next_at = $2, sender = NULL \
                 WHERE id = $3 AND attempts = $4 AND sender = $5 AND state = 'sending' \
                 RETURNING job_seq",
            )
            .await?,
            &[
                &state,
                &ts(attempt.retry_at.unwrap_or(now)),
                &delivery.delivery_id,
                &(delivery.attempt as i32),
                &sender,
            ],
        )
        .await
        .map_err(db)?;
    let Some(job) = job else {
        return Err(StoreError::LeaseLost {
            job_id: delivery.event.job_id.clone(),
            attempt: delivery.attempt,
        });
    };
    let job_seq: i64 = job.get(0);
    // The record names the job's status: read it, locked, so the event
    // written next says the same.
    let Some(status) = tx
        .query_opt(
            &prepared(
                tx,
                "SELECT status FROM errand_jobs WHERE seq = $1 FOR UPDATE",
            )
            .await?,
            &[&job_seq],
        )
        .await
        .map_err(db)?
    else {
        return Ok(());
    };
    let record = attempt.record(delivery, rows::status(&status.get::<_, String>(0))?);
    let changed = transition(
        tx,
        now,
        "updated = j.updated",
        "j.seq = $4",
        &[&job_seq],
        &record,
    )
    .await?;
    events.extend(changed.into_iter().map(|(_, event)| event));
    Ok(())
}
