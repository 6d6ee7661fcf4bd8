//! Every event a store writes is a change the core defines: it decodes as
//! one, of the event's kind, leading to the event's status. This holds the
//! stores to one form even where a store builds an event in its own SQL.

use std::collections::BTreeSet;
use std::time::Duration;

use errand_core::{Change, CommandLimit, JobError, Progress};
use serde_json::json;

use super::*;
use crate::Outcome;

fn error(attempt: u32) -> JobError {
    JobError {
        kind: "handler".into(),
        message: "boom".into(),
        retryable: true,
        attempt,
    }
}

/// Drives jobs through every path that writes an event (single and batched
/// submits and completions, plain and limited claims, every outcome, every
/// lease expiry, cancels, retries).
async fn every_kind_of_change(t: &TestStore) {
    let store = &t.store;
    let now = t.clock.now();
    store.submit(new_job("a")).await.unwrap();
    store
        .submit_batch((0..4).map(|_| new_job("b")).collect())
        .await
        .unwrap();
    let jobs = store.claim(claim_params("w", 5)).await.unwrap();
    assert_eq!(jobs.len(), 5);
    let first = fence(&jobs[0], "w");
    store
        .report_progress(
            &first,
            Progress {
                fraction: Some(7.0),
                message: Some("far along".into()),
                ..Progress::default()
            },
        )
        .await
        .unwrap();
    store.append_log(&first, "a line".into()).await.unwrap();
    store
        .save_checkpoint(&first, json!({"step": 1}))
        .await
        .unwrap();
    // A batch of completions only, and a batch of every other outcome.
    let completed = jobs[..2]
        .iter()
        .map(|job| (fence(job, "w"), Outcome::Completed { result: json!(1) }))
        .collect();
    store.finish(completed).await.unwrap();
    let mixed = vec![
        (
            fence(&jobs[2], "w"),
            Outcome::Failed {
                error: error(1),
                retry_at: Some(now.plus(Duration::from_secs(5))),
            },
        ),
        (
            fence(&jobs[3], "w"),
            Outcome::Failed {
                error: error(1),
                retry_at: None,
            },
        ),
        (fence(&jobs[4], "w"), Outcome::Released),
    ];
    for result in store.finish(mixed).await.unwrap() {
        result.unwrap();
    }
    store.retry_job(&jobs[3].job_id, true).await.unwrap();

    // Cancels: of a queued job, and of a running one that then stops.
    store.submit(new_job("c")).await.unwrap();
    let queued = store.submit(new_job("c")).await.unwrap().job_id;
    store.cancel(&queued).await.unwrap();
    let running = store
        .claim(ClaimParams {
            commands: Some(vec!["test.c".into()]),
            ..claim_params("w", 1)
        })
        .await
        .unwrap()
        .remove(0);
    store.cancel(&running.job_id).await.unwrap();
    let stopped = Outcome::Canceled {
        message: "stopped".into(),
    };
    store
        .finish(vec![(fence(&running, "w"), stopped)])
        .await
        .unwrap();

    // A limited claim, then lease expiries: with a cancel pending, with
    // attempts left, and on the last attempt.
    store
        .set_limit(CommandLimit {
            command: "test.d".into(),
            key: None,
            max_running: Some(5),
            max_starts: None,
            per_secs: None,
        })
        .await
        .unwrap();
    let mut last = new_job("d");
    last.retry.max_attempts = 1;
    store.submit(last).await.unwrap();
    store.submit(new_job("d")).await.unwrap();
    store.submit(new_job("d")).await.unwrap();
    let limited = store
        .claim(ClaimParams {
            commands: Some(vec!["test.d".into()]),
            ..claim_params("w", 3)
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 3);
    store.cancel(&limited[0].job_id).await.unwrap();
    t.clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(store.reap_expired().await.unwrap().len(), 3);
}

/// Every event of that workload decodes as the change it records.
pub async fn every_event_is_a_change_the_core_defines(t: TestStore) {
    every_kind_of_change(&t).await;
    let store = &t.store;
    let feed = store.feed(0, 1000).await.unwrap();
    let mut seen = BTreeSet::new();
    for event in &feed {
        let change = Change::decode(event.kind, &event.data)
            .unwrap_or_else(|err| panic!("event {} of {}: {err}", event.seq, event.job_id));
        assert_eq!(change.kind(), event.kind, "{change:?}");
        assert_eq!(change.status(), event.status, "{change:?}");
        let name = format!("{change:?}");
        seen.insert(name.split([' ', '(']).next().unwrap().to_owned());
    }
    let every: BTreeSet<String> = [
        "Submitted",
        "Claimed",
        "Progress",
        "Log",
        "Checkpoint",
        "Completed",
        "RetryScheduled",
        "Failed",
        "CancelRequested",
        "Canceled",
        "Released",
        "Retried",
    ]
    .map(String::from)
    .into();
    assert_eq!(seen, every, "the test writes every kind of change");
}

/// The jobs by command and status in `stats`, which the writes keep, are
/// the jobs there are, after every kind of change and after a prune.
pub async fn counts_kept_by_the_writes_are_the_jobs_there_are(t: TestStore) {
    every_kind_of_change(&t).await;
    assert_counts_match(&t).await;
    t.clock.advance(Duration::from_secs(3600));
    let pruned = t
        .store
        .prune_statuses(
            &[
                errand_core::JobStatus::Failed,
                errand_core::JobStatus::Canceled,
            ],
            t.clock.now(),
        )
        .await
        .unwrap();
    assert!(pruned >= 3, "pruned {pruned}");
    assert_counts_match(&t).await;
    // Deleting jobs by id keeps them too (only ended ones go).
    let every: Vec<errand_core::JobId> = t
        .store
        .list(crate::ListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|job| job.job_id)
        .collect();
    t.store.delete_jobs(&every).await.unwrap();
    assert_counts_match(&t).await;
}

async fn assert_counts_match(t: &TestStore) {
    let jobs = t
        .store
        .list(crate::ListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    let mut real: std::collections::BTreeMap<
        (String, String),
        std::collections::BTreeMap<String, u64>,
    > = Default::default();
    for job in &jobs {
        let counts = real
            .entry((job.app.clone(), job.command.clone()))
            .or_insert_with(|| {
                errand_core::JobStatus::ALL
                    .iter()
                    .map(|s| (s.as_str().to_owned(), 0))
                    .collect()
            });
        *counts.get_mut(job.status.as_str()).unwrap() += 1;
    }
    let kept: std::collections::BTreeMap<
        (String, String),
        std::collections::BTreeMap<String, u64>,
    > = t
        .store
        .stats()
        .await
        .unwrap()
        .into_iter()
        .map(|s| ((s.app, s.command), s.counts))
        .collect();
    assert_eq!(kept, real);
}
