//! What a running attempt writes, fenced: progress, log lines, checkpoints.

use deadpool_postgres::Transaction;
use errand_core::{Change, JobEvent, Progress, Timestamp};
use errand_store::*;
use serde_json::Value;

use super::{events::*, finish::*};

pub(crate) async fn report_progress(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    progress: &Progress,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let progress = progress.as_reported(now);
    let value = serde_json::to_value(&progress).expect("progress serializes");
    let set = "progress = $7, updated = $1";
    let change = (set, Some(&value), Change::Progress(progress));
    while_running(tx, now, fence, change, events).await
}

/// A change to the job a running attempt holds (fenced): the SET clause
/// (`$7` is the value, when there is one) and the change its event records.
type RunningChange<'a> = (&'a str, Option<&'a Value>, Change);

async fn while_running(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    (set, value, change): RunningChange<'_>,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let attempt = fence.attempt as i32;
    let id = fence.job_id.as_str();
    let mut extra: Params = vec![&id, &attempt, &fence.worker_id];
    if let Some(value) = &value {
        extra.push(*value);
    }
    let changed = transition(tx, now, set, FENCE, &extra, &change).await?;
    match changed.into_iter().next() {
        Some((_, event)) => {
            events.push(event);
            Ok(())
        }
        None => Err(fenced_out(tx, fence).await?),
    }
}

/// Stores a running attempt's checkpoint, fenced, with an event carrying it.
pub(crate) async fn save_checkpoint(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    checkpoint: &Value,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let set = "checkpoint = $7, updated = $1";
    let change = Change::Checkpoint {
        checkpoint: checkpoint.clone(),
    };
    while_running(tx, now, fence, (set, Some(checkpoint), change), events).await
}

pub(crate) async fn append_log(
    tx: &Transaction<'_>,
    now: Timestamp,
    fence: &Fence,
    line: &str,
    events: &mut Vec<JobEvent>,
) -> Result<(), StoreError> {
    let logged = Change::Log {
        line: line.to_owned(),
        attempt: fence.attempt,
    };
    let change = ("updated = j.updated", None, logged);
    while_running(tx, now, fence, change, events).await
}
