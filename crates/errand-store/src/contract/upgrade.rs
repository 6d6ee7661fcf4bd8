//! The two halves of each store's upgrade test: jobs a previous release
//! left in every state, and what this release must do with them. Each
//! store builds the previous release's database its own way in between.

use std::time::Duration;

use errand_core::{error_kind, Clock, Job, JobError, JobId, JobStatus, ManualClock};
use serde_json::json;

use super::*;
use crate::Outcome;

/// What [`leave_jobs_of_every_state`] left.
pub struct HeldJobs {
    pub ids: Vec<JobId>,
    /// Running with a live lease, held by worker `w`.
    pub running: Job,
    /// Failed, its retry due a minute after it was left.
    pub waiting: Job,
}

/// Four jobs of `test.a`, each with a context `{"notebook_id": i}`: one
/// queued, one running with a live lease, one failed and waiting for its
/// retry, one completed.
pub async fn leave_jobs_of_every_state(store: &dyn Store, clock: &ManualClock) -> HeldJobs {
    let mut ids = Vec::new();
    for i in 0..4 {
        let job = new_job("a").context(json!({ "notebook_id": i }));
        ids.push(store.submit(job).await.unwrap().job_id);
    }
    let claimed = store.claim(claim_params("w", 3)).await.unwrap();
    let retry_later = Outcome::Failed {
        error: JobError {
            kind: error_kind::HANDLER.into(),
            message: "try again".into(),
            retryable: true,
            attempt: 1,
        },
        retry_at: Some(clock.now().plus(Duration::from_secs(60))),
    };
    let answers = store
        .finish(vec![
            (
                fence(&claimed[0], "w"),
                Outcome::Completed { result: json!(1) },
            ),
            (fence(&claimed[2], "w"), retry_later),
        ])
        .await
        .unwrap();
    assert_eq!(answers, vec![Ok(()), Ok(())]);
    HeldJobs {
        ids,
        running: claimed[1].clone(),
        waiting: claimed[2].clone(),
    }
}

/// After the upgrade: the counts are those of the jobs held, each job is
/// found by its context's value, and every job finishes. The running job's worker outlived the upgrade and records
/// its outcome (its lease holds); the queued job is claimed; the retry
/// once it is due.
pub async fn finish_the_jobs_held(store: &dyn Store, clock: &ManualClock, held: HeldJobs) {
    let counts = |stats: Vec<crate::CommandStats>| {
        let counts = stats
            .into_iter()
            .find(|s| s.command == "a")
            .expect("test.a is counted")
            .counts;
        (counts["new"], counts["running"], counts["completed"])
    };
    assert_eq!(counts(store.stats().await.unwrap()), (2, 1, 1));
    for (i, id) in held.ids.iter().enumerate() {
        let found = store
            .list(crate::ListParams {
                context: vec![("notebook_id".into(), i.to_string())],
                ..Default::default()
            })
            .await
            .unwrap();
        let found: Vec<&JobId> = found.jobs.iter().map(|j| &j.job_id).collect();
        assert_eq!(found, [id], "notebook_id {i}");
    }
    let recorded = store
        .finish(vec![(
            fence(&held.running, "w"),
            Outcome::Completed { result: json!(2) },
        )])
        .await
        .unwrap();
    assert_eq!(recorded, vec![Ok(())]);
    let queued = store.claim(claim_params("w", 10)).await.unwrap();
    assert_eq!(queued.len(), 1, "the retry waits for its time");
    clock.advance(Duration::from_secs(61));
    let retried = store.claim(claim_params("w", 10)).await.unwrap();
    assert_eq!(
        (retried.len(), &retried[0].job_id, retried[0].attempt),
        (1, &held.waiting.job_id, 2)
    );
    let outcomes = queued
        .iter()
        .chain(&retried)
        .map(|job| (fence(job, "w"), Outcome::Completed { result: json!(3) }))
        .collect();
    store.finish(outcomes).await.unwrap();
    for id in &held.ids {
        assert_eq!(store.get(id).await.unwrap().status, JobStatus::Completed);
    }
    assert_eq!(counts(store.stats().await.unwrap()), (0, 0, 4));
}
