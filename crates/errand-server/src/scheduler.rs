//! The scheduler: every server looks for due schedules about once a second
//! (sooner when a tick is nearer, or when a schedule changes here) and
//! takes their ticks. Servers sharing a store race for each tick; the
//! store's compare-and-set on the schedule's next run lets exactly one of
//! them enqueue its job.

use std::time::Duration;

use errand_api::SubmitRequest;
use errand_core::{plan_tick, tick_key, CronTicks, Timestamp, TICK_GRACE};
use errand_store::{NewJob, ScheduleInfo, TakeTick, TickOutcome};

use crate::jobs::build_job;
use crate::state::AppState;

/// The longest the scheduler sleeps: a schedule created on another server
/// is seen within it.
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub async fn take_due_ticks(state: AppState) {
    loop {
        let wait = match look_once(&state).await {
            Ok(wait) => wait,
            Err(err) => {
                tracing::warn!(error = %err, "looking for due schedules failed");
                LOOK_EVERY
            }
        };
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = state.scheduler_wake.notified() => {}
        }
    }
}

/// Takes every due tick; returns how long to sleep before the next look.
async fn look_once(state: &AppState) -> Result<Duration, errand_store::StoreError> {
    let schedules = state.store.schedules().await?;
    let now = state.store.clock().now();
    let mut wait = LOOK_EVERY;
    for schedule in schedules {
        let Some(next_run) = schedule.next_run else {
            continue;
        };
        if next_run > now {
            wait = wait.min(until(now, next_run));
            continue;
        }
        take(state, &schedule, next_run, now).await?;
    }
    Ok(wait)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::from_micros(at.as_micros().saturating_sub(now.as_micros()) as u64)
}

/// Takes a schedule's due ticks one plan at a time (one transaction
/// each), until none is due or another server is taking them.
async fn take(
    state: &AppState,
    schedule: &ScheduleInfo,
    mut next_run: Timestamp,
    now: Timestamp,
) -> Result<(), errand_store::StoreError> {
    let name = &schedule.name;
    let ticks = match CronTicks::parse(&schedule.cron, &schedule.timezone) {
        Ok(ticks) => ticks,
        Err(err) => {
            // Only a store written by hand or by a newer errand has one.
            tracing::error!(schedule = %name, error = %err, "a stored schedule does not parse");
            return Ok(());
        }
    };
    while let Some(plan) = plan_tick(&ticks, next_run, now, schedule.missed, TICK_GRACE) {
        let outcome = match plan.job_tick {
            _ if schedule.paused => TickOutcome::Skipped { reason: None },
            None => TickOutcome::Skipped { reason: None },
            Some(tick) => match tick_job(state, schedule, tick).await {
                Ok(job) => TickOutcome::Job(Box::new(job)),
                Err(reason) => {
                    tracing::warn!(schedule = %name, %reason, "a schedule's tick made no job");
                    TickOutcome::Skipped {
                        reason: Some(reason),
                    }
                }
            },
        };
        let take = TakeTick {
            name: name.clone(),
            expected_next_run: next_run,
            expected_paused: schedule.paused,
            next_run: plan.next_run,
            tick: plan.job_tick.unwrap_or(next_run),
            outcome,
        };
        let Some(taken) = state.store.take_tick(take).await? else {
            tracing::debug!(schedule = %name, "another server took the tick");
            return Ok(());
        };
        match taken.job {
            Some(receipt) => tracing::info!(
                schedule = %name, job_id = %receipt.job_id, tick = ?plan.job_tick,
                "scheduled job enqueued"
            ),
            None => tracing::debug!(schedule = %name, "schedule ticks skipped"),
        }
        let Some(moved) = plan.next_run else {
            return Ok(());
        };
        next_run = moved;
    }
    Ok(())
}

/// The tick's job, built as a submit of the schedule's request would be,
/// with the tick as its idempotency key. `Err` says why there is none.
async fn tick_job(
    state: &AppState,
    schedule: &ScheduleInfo,
    tick: Timestamp,
) -> Result<NewJob, String> {
    let request: SubmitRequest = serde_json::from_value(schedule.job.clone())
        .map_err(|err| format!("the stored job does not read as a submit: {err}"))?;
    let mut job = build_job(state, request)
        .await
        .map_err(|err| err.to_string())?;
    job.idempotency_key = Some(tick_key(&schedule.name, tick));
    Ok(job)
}
