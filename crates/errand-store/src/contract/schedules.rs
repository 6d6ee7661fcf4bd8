//! Schedules: definitions kept, and each tick taken once.

use std::time::Duration;

use errand_core::{tick_key, MissedTicks, Timestamp};
use serde_json::json;

use super::*;
use crate::{ScheduleDefinition, StoreError, TakeTick, TickOutcome};

fn every_minute(name: &str) -> ScheduleDefinition {
    ScheduleDefinition {
        name: name.to_owned(),
        cron: "* * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        missed: MissedTicks::Skip,
        job: json!({"command": "test.report", "input": {"day": 1}}),
    }
}

fn minute(t: &TestStore, n: u64) -> Timestamp {
    t.clock.now().plus(Duration::from_secs(60 * n))
}

fn take(name: &str, expected: Timestamp, next: Timestamp, outcome: TickOutcome) -> TakeTick {
    TakeTick {
        name: name.to_owned(),
        expected_next_run: expected,
        expected_paused: false,
        next_run: Some(next),
        tick: expected,
        outcome,
    }
}

fn tick_job(name: &str, tick: Timestamp) -> TickOutcome {
    TickOutcome::Job(Box::new(
        new_job("report").idempotency_key(tick_key(name, tick)),
    ))
}

/// Schedules are stored as defined, listed by name, paused and resumed,
/// and deleted; a missing one is named in the error.
pub async fn schedules_are_created_listed_paused_and_deleted(t: TestStore) {
    let first = minute(&t, 1);
    let nightly = t
        .store
        .put_schedule(every_minute("nightly"), Some(first), None)
        .await
        .unwrap();
    assert_eq!(nightly.name, "nightly");
    assert_eq!(nightly.cron, "* * * * *");
    assert_eq!(nightly.timezone, "UTC");
    assert_eq!(nightly.missed, MissedTicks::Skip);
    assert_eq!(nightly.job, every_minute("x").job);
    assert_eq!(nightly.next_run, Some(first));
    assert!(!nightly.paused);
    assert_eq!(
        (nightly.last_tick, nightly.last_job_id, nightly.last_error),
        (None, None, None)
    );
    t.store
        .put_schedule(every_minute("hourly"), Some(first), Some(true))
        .await
        .unwrap();
    let names: Vec<_> = t
        .store
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.paused))
        .collect();
    assert_eq!(
        names,
        vec![("hourly".into(), true), ("nightly".into(), false)]
    );

    let paused = t.store.pause_schedule("nightly", true).await.unwrap();
    assert!(paused.paused);
    assert!(
        !t.store
            .pause_schedule("nightly", false)
            .await
            .unwrap()
            .paused
    );

    t.store.delete_schedule("hourly").await.unwrap();
    assert_eq!(
        t.store.delete_schedule("hourly").await,
        Err(StoreError::ScheduleNotFound("hourly".into()))
    );
    assert_eq!(
        t.store.pause_schedule("missing", true).await.unwrap_err(),
        StoreError::ScheduleNotFound("missing".into())
    );
    assert_eq!(t.store.schedules().await.unwrap().len(), 1);
}

/// Putting a schedule again with the same timing keeps its next run (a
/// restart with the same configuration misses no due tick) and its paused
/// state unless told; a new cron expression or zone takes the new next run.
pub async fn a_redefinition_keeps_the_next_run_unless_the_timing_changes(t: TestStore) {
    let due = minute(&t, 0);
    t.store
        .put_schedule(every_minute("s"), Some(due), None)
        .await
        .unwrap();
    t.store.pause_schedule("s", true).await.unwrap();

    let mut changed_job = every_minute("s");
    changed_job.job = json!({"command": "test.other", "input": {}});
    changed_job.missed = MissedTicks::RunOnce;
    let again = t
        .store
        .put_schedule(changed_job.clone(), Some(minute(&t, 5)), None)
        .await
        .unwrap();
    assert_eq!(again.next_run, Some(due), "same timing: next run kept");
    assert_eq!(again.job, changed_job.job);
    assert_eq!(again.missed, MissedTicks::RunOnce);
    assert!(again.paused, "paused state kept when not given");

    let mut retimed = changed_job;
    retimed.cron = "*/5 * * * *".into();
    let retimed = t
        .store
        .put_schedule(retimed, Some(minute(&t, 5)), Some(false))
        .await
        .unwrap();
    assert_eq!(retimed.next_run, Some(minute(&t, 5)));
    assert!(!retimed.paused);

    let mut rezoned = every_minute("s");
    rezoned.cron = "*/5 * * * *".into();
    rezoned.timezone = "Europe/Paris".into();
    let rezoned = t
        .store
        .put_schedule(rezoned, Some(minute(&t, 7)), None)
        .await
        .unwrap();
    assert_eq!(rezoned.next_run, Some(minute(&t, 7)));
}

/// Many schedulers racing for the same due tick: exactly one takes it and
/// submits its job; the schedule records the tick, the job and the next run.
pub async fn a_tick_is_taken_once_however_many_race_for_it(t: TestStore) {
    let due = minute(&t, 0);
    let next = minute(&t, 1);
    t.store
        .put_schedule(every_minute("race"), Some(due), None)
        .await
        .unwrap();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = t.store.clone();
            tokio::spawn(async move {
                store
                    .take_tick(take("race", due, next, tick_job("race", due)))
                    .await
            })
        })
        .collect();
    let mut taken = Vec::new();
    for racer in racers {
        if let Some(tick) = racer.await.unwrap().unwrap() {
            taken.push(tick);
        }
    }
    assert_eq!(taken.len(), 1, "one racer takes the tick: {taken:?}");
    let receipt = taken[0].job.clone().expect("the tick's job");
    assert!(receipt.created);
    let job = t.store.get(&receipt.job_id).await.unwrap();
    assert_eq!(job.idempotency_key, Some(tick_key("race", due)));
    assert_eq!(job.command, "report");

    let schedule = &t.store.schedules().await.unwrap()[0];
    assert_eq!(schedule.next_run, Some(next));
    assert_eq!(schedule.last_tick, Some(due));
    assert_eq!(schedule.last_job_id, Some(receipt.job_id.clone()));
    let jobs = t.store.list(Default::default()).await.unwrap().jobs;
    assert_eq!(jobs.len(), 1, "one job for the tick");

    // A late racer with the old next run changes nothing.
    let late = t
        .store
        .take_tick(take("race", due, next, tick_job("race", due)))
        .await
        .unwrap();
    assert_eq!(late, None);
}

/// A tick taken without a job (skipped, or its job could not be built)
/// moves the next run on, says why, and keeps the last job; the next tick
/// that makes a job clears the error. A decision made while the schedule
/// was paused, or about a deleted schedule, writes nothing.
pub async fn a_skipped_tick_says_why_and_stale_decisions_write_nothing(t: TestStore) {
    let (m0, m1, m2) = (minute(&t, 0), minute(&t, 1), minute(&t, 2));
    t.store
        .put_schedule(every_minute("s"), Some(m0), None)
        .await
        .unwrap();
    let first = t
        .store
        .take_tick(take("s", m0, m1, tick_job("s", m0)))
        .await
        .unwrap()
        .unwrap()
        .job
        .unwrap()
        .job_id;
    let reason = "unknown command test.report: no worker has registered it";
    let skipped = TickOutcome::Skipped {
        reason: Some(reason.into()),
    };
    let taken = t.store.take_tick(take("s", m1, m2, skipped)).await.unwrap();
    assert_eq!(taken.unwrap().job, None);
    let schedule = &t.store.schedules().await.unwrap()[0];
    assert_eq!(schedule.next_run, Some(m2));
    assert_eq!(schedule.last_tick, Some(m1));
    assert_eq!(schedule.last_error.as_deref(), Some(reason));
    assert_eq!(schedule.last_job_id, Some(first));

    let paused_view = TakeTick {
        expected_paused: true,
        ..take("s", m2, minute(&t, 3), tick_job("s", m2))
    };
    assert_eq!(t.store.take_tick(paused_view).await.unwrap(), None);
    let second = t
        .store
        .take_tick(take("s", m2, minute(&t, 3), tick_job("s", m2)))
        .await
        .unwrap()
        .unwrap()
        .job
        .unwrap()
        .job_id;
    let schedule = &t.store.schedules().await.unwrap()[0];
    assert_eq!(schedule.last_error, None, "a job clears the error");
    assert_eq!(schedule.last_job_id, Some(second));

    t.store.delete_schedule("s").await.unwrap();
    let m3 = minute(&t, 3);
    let gone = t
        .store
        .take_tick(take("s", m3, minute(&t, 4), tick_job("s", m3)))
        .await
        .unwrap();
    assert_eq!(gone, None);
    assert_eq!(
        t.store.list(Default::default()).await.unwrap().jobs.len(),
        2
    );
}
