//! Checkpoints: saved by the attempt that holds the job (fenced), handed
//! to every later attempt, kept or cleared by an explicit retry.

use std::time::Duration;

use errand_core::{error_kind, EventKind, JobError, JobStatus};
use serde_json::json;

use super::*;
use crate::{Outcome, StoreError};

/// A checkpoint survives the attempt that saved it: the next attempt,
/// after the lease expired, starts with it, and the event log shows it.
pub async fn a_checkpoint_is_handed_to_the_next_attempt(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let first = claim_one(&t, "w1").await;
    assert_eq!(first.checkpoint, None);
    for step in 1..=3 {
        t.store
            .save_checkpoint(&fence(&first, "w1"), json!({ "line": step }))
            .await
            .unwrap();
    }
    assert_eq!(
        t.store.get(&id).await.unwrap().checkpoint,
        Some(json!({"line": 3}))
    );
    t.clock.advance(LEASE + Duration::from_secs(1));
    assert_eq!(t.store.reap_expired().await.unwrap(), vec![id.clone()]);
    let second = claim_one(&t, "w2").await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.checkpoint, Some(json!({"line": 3})));
    let saved: Vec<_> = t
        .store
        .events(&id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Checkpoint)
        .map(|e| e.data["checkpoint"]["line"].clone())
        .collect();
    assert_eq!(saved, [json!(1), json!(2), json!(3)]);
}

/// Only the attempt that holds the job may save: a stale one is refused
/// and changes nothing.
pub async fn a_stale_attempt_cannot_save_a_checkpoint(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let stale = claim_one(&t, "w1").await;
    t.store
        .save_checkpoint(&fence(&stale, "w1"), json!("mine"))
        .await
        .unwrap();
    t.clock.advance(LEASE + Duration::from_secs(1));
    t.store.reap_expired().await.unwrap();
    let fresh = claim_one(&t, "w2").await;
    let events_before = t.store.events(&id, 0, 100).await.unwrap();
    assert_eq!(
        t.store
            .save_checkpoint(&fence(&stale, "w1"), json!("late"))
            .await,
        Err(StoreError::LeaseLost {
            job_id: id.clone(),
            attempt: 1
        })
    );
    let mut other_worker = fence(&fresh, "w2");
    other_worker.worker_id = "w3".into();
    assert!(matches!(
        t.store.save_checkpoint(&other_worker, json!("w3")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(
        t.store.get(&id).await.unwrap().checkpoint,
        Some(json!("mine"))
    );
    assert_eq!(t.store.events(&id, 0, 100).await.unwrap(), events_before);
}

/// A retried job keeps its checkpoint unless the retry clears it; a
/// failure with a retry to come keeps it too.
pub async fn a_retry_keeps_or_clears_the_checkpoint(t: TestStore) {
    let id = t
        .store
        .submit(new_job("a").max_attempts(2))
        .await
        .unwrap()
        .job_id;
    let failing = |job: &errand_core::Job, retry_at| Outcome::Failed {
        error: JobError {
            kind: error_kind::HANDLER.into(),
            message: "no".into(),
            retryable: true,
            attempt: job.attempt,
        },
        retry_at,
    };
    let first = claim_one(&t, "w").await;
    t.store
        .save_checkpoint(&fence(&first, "w"), json!({"step": 4}))
        .await
        .unwrap();
    let now = t.clock.now();
    t.store
        .finish(vec![(fence(&first, "w"), failing(&first, Some(now)))])
        .await
        .unwrap();
    let second = claim_one(&t, "w").await;
    assert_eq!(second.checkpoint, Some(json!({"step": 4})));
    t.store
        .finish(vec![(fence(&second, "w"), failing(&second, None))])
        .await
        .unwrap();
    assert_eq!(t.store.get(&id).await.unwrap().status, JobStatus::Failed);

    let kept = t.store.retry(&id).await.unwrap();
    assert_eq!(kept.checkpoint, Some(json!({"step": 4})));
    let third = claim_one(&t, "w").await;
    assert_eq!(third.checkpoint, Some(json!({"step": 4})));
    t.store
        .finish(vec![(fence(&third, "w"), failing(&third, None))])
        .await
        .unwrap();
    let cleared = t.store.retry_job(&id, true).await.unwrap();
    assert_eq!(cleared.checkpoint, None);
    assert_eq!(claim_one(&t, "w").await.checkpoint, None);
}
