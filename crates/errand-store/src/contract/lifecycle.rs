//! Submit, claim and every transition of a job.

use std::time::Duration;

use errand_core::{error_kind, EventKind, JobError, JobId, JobStatus, Progress, RetryPolicy};
use serde_json::json;

use super::*;
use crate::{ListParams, Outcome, StoreError};

pub async fn submit_then_get_round_trips_every_field(t: TestStore) {
    let now = t.clock.now();
    let parent = t.store.submit(new_job("parent")).await.unwrap().job_id;
    let retry = RetryPolicy {
        max_attempts: 7,
        ..RetryPolicy::default()
    };
    let receipt = t
        .store
        .submit(
            NewJob::new("notebook", "podcast", json!({"episode": "e1", "n": [1, 2]}))
                .context(json!({"user": "u1"}))
                .priority(5)
                .queue("media")
                .timeout_secs(90.0)
                .retry(retry.clone())
                .idempotency_key("k-1")
                .parent(parent.clone()),
        )
        .await
        .unwrap();
    assert!(receipt.created);
    assert_eq!(receipt.status, JobStatus::New);
    let job = t.store.get(&receipt.job_id).await.unwrap();
    assert_eq!(job.job_id, receipt.job_id);
    assert_eq!(
        (job.app.as_str(), job.command.as_str()),
        ("notebook", "podcast")
    );
    assert_eq!(job.input, json!({"episode": "e1", "n": [1, 2]}));
    assert_eq!(job.context, Some(json!({"user": "u1"})));
    assert_eq!(job.status, JobStatus::New);
    assert_eq!((job.attempt, job.max_attempts), (0, 7));
    assert_eq!(job.retry, retry);
    assert_eq!((job.priority, job.queue.as_str()), (5, "media"));
    assert_eq!(job.timeout_secs, Some(90.0));
    assert_eq!(job.idempotency_key.as_deref(), Some("k-1"));
    assert_eq!(job.parent_id, Some(parent));
    assert_eq!((job.created, job.updated, job.run_at), (now, now, now));
    assert!(job.result.is_none() && job.error.is_none() && job.error_message.is_none());
    assert!(job.progress.is_none() && job.started.is_none() && job.finished.is_none());
    assert!(!job.cancel_requested && job.worker_id.is_none());
}

pub async fn submit_writes_a_status_event(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let events = t.store.events(&id, 0, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].kind), (1, EventKind::Status));
    assert_eq!(events[0].status, JobStatus::New);
    assert_eq!(events[0].job_id, id);
    assert_eq!(
        (events[0].app.as_str(), events[0].command.as_str()),
        ("test", "a")
    );
}

pub async fn idempotency_key_returns_the_existing_job(t: TestStore) {
    let first = t
        .store
        .submit(new_job("a").idempotency_key("same"))
        .await
        .unwrap();
    let second = t
        .store
        .submit(new_job("b").idempotency_key("same"))
        .await
        .unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.job_id, second.job_id);
    let page = t.store.list(ListParams::default()).await.unwrap();
    assert_eq!(page.jobs.len(), 1, "the second submit stored nothing");
    assert_eq!(page.jobs[0].command, "a");
    // Also within one batch, and after the first job ran.
    let job = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    let again = t
        .store
        .submit_batch(vec![new_job("c").idempotency_key("same"), new_job("d")])
        .await
        .unwrap();
    assert_eq!(again[0].job_id, first.job_id);
    assert_eq!(again[0].status, JobStatus::Completed);
    assert!(again[1].created);
}

pub async fn batch_submit_is_all_or_nothing(t: TestStore) {
    let ids = t
        .store
        .submit_batch((0..50).map(|i| new_job(&format!("c{i}"))).collect())
        .await
        .unwrap();
    assert_eq!(ids.len(), 50);
    let mut bad = new_job("bad");
    bad.retry.max_attempts = 0;
    let err = t
        .store
        .submit_batch(vec![new_job("ok1"), bad, new_job("ok2")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(msg) if msg.contains("job 1")),
        "{err:?}"
    );
    let page = t
        .store
        .list(ListParams {
            limit: 1000,
            ..ListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.jobs.len(),
        50,
        "nothing of the failed batch was stored"
    );
}

pub async fn invalid_jobs_are_rejected_with_a_reason(t: TestStore) {
    let cases = [
        new_job(""),
        new_job("a").queue(""),
        new_job("a").timeout_secs(-1.0),
        new_job("a").retry(RetryPolicy {
            wait_time: 1e12,
            ..RetryPolicy::default()
        }),
        new_job("a").max_attempts(0),
    ];
    for job in cases {
        let err = t.store.submit(job).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Invalid(msg) if !msg.is_empty()),
            "{err:?}"
        );
    }
}

pub async fn get_of_an_unknown_job_is_not_found(t: TestStore) {
    let id = JobId::from("no-such-job");
    assert_eq!(
        t.store.get(&id).await,
        Err(StoreError::NotFound(id.clone()))
    );
    assert_eq!(
        t.store.events(&id, 0, 10).await,
        Err(StoreError::NotFound(id.clone()))
    );
    assert_eq!(
        t.store.cancel(&id).await,
        Err(StoreError::NotFound(id.clone()))
    );
    assert_eq!(t.store.retry(&id).await, Err(StoreError::NotFound(id)));
}

pub async fn claim_orders_by_priority_then_fifo(t: TestStore) {
    let mut expected = Vec::new();
    let low1 = t
        .store
        .submit(new_job("low1").priority(-1))
        .await
        .unwrap()
        .job_id;
    for i in 0..3 {
        let id = t
            .store
            .submit(new_job(&format!("mid{i}")))
            .await
            .unwrap()
            .job_id;
        expected.push(id);
    }
    let high = t
        .store
        .submit(new_job("high").priority(10))
        .await
        .unwrap()
        .job_id;
    expected.insert(0, high);
    expected.push(low1);
    let claimed = t.store.claim(claim_params("w", 10)).await.unwrap();
    let ids: Vec<JobId> = claimed.iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(ids, expected);
    for job in &claimed {
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.attempt, 1);
        assert_eq!(job.worker_id.as_deref(), Some("w"));
        assert_eq!(job.started, Some(t.clock.now()));
        assert_eq!(job.lease_until, Some(t.clock.now().plus(LEASE)));
    }
    assert!(t
        .store
        .claim(claim_params("w", 10))
        .await
        .unwrap()
        .is_empty());
}

pub async fn claim_waits_for_run_at(t: TestStore) {
    let later = t.clock.now().plus(Duration::from_secs(60));
    let id = t
        .store
        .submit(new_job("later").run_at(later))
        .await
        .unwrap()
        .job_id;
    assert!(t
        .store
        .claim(claim_params("w", 5))
        .await
        .unwrap()
        .is_empty());
    t.clock.advance(Duration::from_secs(59));
    assert!(t
        .store
        .claim(claim_params("w", 5))
        .await
        .unwrap()
        .is_empty());
    t.clock.advance(Duration::from_secs(1));
    assert_eq!(claim_one(&t, "w").await.job_id, id);
}

pub async fn claim_filters_by_queue_and_command(t: TestStore) {
    let media = t
        .store
        .submit(new_job("tts").queue("media"))
        .await
        .unwrap()
        .job_id;
    let embed = t.store.submit(new_job("embed")).await.unwrap().job_id;
    let other = t
        .store
        .submit(NewJob::new("other", "embed", json!({})))
        .await
        .unwrap()
        .job_id;
    let only_media = ClaimParams {
        queues: vec!["media".into()],
        ..claim_params("w", 10)
    };
    let claimed = t.store.claim(only_media).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job_id, media);
    let only_test_embed = ClaimParams {
        commands: Some(vec!["test.embed".into()]),
        ..claim_params("w", 10)
    };
    let claimed = t.store.claim(only_test_embed).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job_id, embed);
    let none = ClaimParams {
        commands: Some(vec![]),
        ..claim_params("w", 10)
    };
    assert!(t.store.claim(none).await.unwrap().is_empty());
    let bad = ClaimParams {
        commands: Some(vec!["no-dot".into()]),
        ..claim_params("w", 10)
    };
    assert!(matches!(
        t.store.claim(bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(claim_one(&t, "w").await.job_id, other);
}

pub async fn concurrent_claims_never_share_a_job(t: TestStore) {
    t.store
        .submit_batch((0..200).map(|_| new_job("c")).collect())
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = t.store.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store
                    .claim(claim_params(&format!("w{w}"), 7))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.job_id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        all.extend(ids.unwrap());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (count, all.len()),
        (200, 200),
        "each job claimed exactly once"
    );
}

pub async fn complete_records_the_result(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    t.clock.advance(Duration::from_secs(2));
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed {
                result: json!({"ok": true}),
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let job = t.store.get(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.result, Some(json!({"ok": true})));
    assert_eq!(job.finished, Some(t.clock.now()));
    assert_eq!(job.updated, t.clock.now());
    assert!(job.lease_until.is_none());
    let last = t.store.events(&id, 0, 100).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.kind, last.status),
        (EventKind::Result, JobStatus::Completed)
    );
    assert_eq!(last.data["result"], json!({"ok": true}));
    assert!(last.is_terminal());
}

fn handler_error(attempt: u32, retryable: bool) -> JobError {
    JobError {
        kind: error_kind::HANDLER.into(),
        message: "the model timed out".into(),
        retryable,
        attempt,
    }
}

/// A job that succeeds after failed attempts shows no error: a client
/// testing `error_message` would show one for a good job. The failures stay
/// in the event log. Alone and in a batch of completions.
pub async fn a_success_after_a_failed_attempt_clears_the_error(t: TestStore) {
    let ids: Vec<_> = t
        .store
        .submit_batch((0..3).map(|_| new_job("a")).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    let failed: Vec<_> = t
        .store
        .claim(claim_params("w", 3))
        .await
        .unwrap()
        .iter()
        .map(|job| {
            (
                fence(job, "w"),
                Outcome::Failed {
                    error: handler_error(1, true),
                    retry_at: Some(t.clock.now()),
                },
            )
        })
        .collect();
    t.store.finish(failed).await.unwrap();
    let mut second = t.store.claim(claim_params("w", 3)).await.unwrap();
    assert_eq!(second.len(), 3);
    let alone = second.pop().unwrap();
    let done = |job: &Job| (fence(job, "w"), Outcome::Completed { result: json!({}) });
    t.store.finish(vec![done(&alone)]).await.unwrap();
    t.store
        .finish(second.iter().map(done).collect())
        .await
        .unwrap();
    for id in &ids {
        let job = t.store.get(id).await.unwrap();
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!((job.error, job.error_message), (None, None), "{id}");
        let events = t.store.events(id, 0, 100).await.unwrap();
        assert!(events.iter().any(|e| e.kind == EventKind::Failure));
    }
}

pub async fn retryable_failure_goes_back_to_new_at_run_at(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    let retry_at = t.clock.now().plus(Duration::from_secs(4));
    let error = handler_error(1, true);
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Failed {
                error: error.clone(),
                retry_at: Some(retry_at),
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let job = t.store.get(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::New);
    assert_eq!((job.attempt, job.run_at), (1, retry_at));
    assert_eq!(job.error, Some(error));
    assert_eq!(job.error_message.as_deref(), Some("the model timed out"));
    assert!(job.worker_id.is_none() && job.finished.is_none());
    assert!(t
        .store
        .claim(claim_params("w", 1))
        .await
        .unwrap()
        .is_empty());
    t.clock.advance(Duration::from_secs(4));
    let again = claim_one(&t, "w2").await;
    assert_eq!((again.job_id, again.attempt), (id.clone(), 2));
    let failure = t
        .store
        .events(&id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::Failure)
        .unwrap();
    assert_eq!(failure.status, JobStatus::New);
    assert!(!failure.is_terminal());
}

pub async fn final_failure_fails_the_job(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Failed {
                error: handler_error(1, false),
                retry_at: None,
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let job = t.store.get(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.finished, Some(t.clock.now()));
    assert!(!job.error.unwrap().retryable);
    let last = t.store.events(&id, 0, 100).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.kind, last.status),
        (EventKind::Failure, JobStatus::Failed)
    );
    assert!(last.is_terminal());
}

pub async fn cancel_of_a_new_job_is_immediate(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = t.store.cancel(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Canceled);
    assert_eq!(job.finished, Some(t.clock.now()));
    assert!(t
        .store
        .claim(claim_params("w", 1))
        .await
        .unwrap()
        .is_empty());
}

pub async fn cancel_of_a_running_job_asks_its_worker(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    let asked = t.store.cancel(&id).await.unwrap();
    assert_eq!(
        asked.status,
        JobStatus::Running,
        "the worker decides when it stops"
    );
    assert!(asked.cancel_requested);
    // Asking twice is harmless.
    assert!(t.store.cancel(&id).await.unwrap().cancel_requested);
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Canceled {
                message: "canceled by request".into(),
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let done = t.store.get(&id).await.unwrap();
    assert_eq!(done.status, JobStatus::Canceled);
    assert!(done.finished.is_some());
}

pub async fn cancel_of_a_finished_job_is_a_conflict(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    t.store.cancel(&id).await.unwrap();
    let err = t.store.cancel(&id).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                status: JobStatus::Canceled,
                ..
            }
        ),
        "{err:?}"
    );
}

pub async fn retry_resets_attempts_and_keeps_history(t: TestStore) {
    let id = t
        .store
        .submit(new_job("a").max_attempts(1))
        .await
        .unwrap()
        .job_id;
    let job = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Failed {
                error: handler_error(1, true),
                retry_at: None,
            },
        )])
        .await
        .unwrap();
    let events_before = t.store.events(&id, 0, 100).await.unwrap().len();
    let job = t.store.retry(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::New);
    assert_eq!(job.attempt, 0);
    assert!(job.error.is_none() && job.finished.is_none() && job.result.is_none());
    let events = t.store.events(&id, 0, 100).await.unwrap();
    assert_eq!(
        events.len(),
        events_before + 1,
        "history kept, retry recorded"
    );
    let again = claim_one(&t, "w").await;
    assert_eq!((again.job_id, again.attempt), (id.clone(), 1));
    // A canceled job can be retried too.
    let other = t.store.submit(new_job("b")).await.unwrap().job_id;
    t.store.cancel(&other).await.unwrap();
    assert_eq!(t.store.retry(&other).await.unwrap().status, JobStatus::New);
}

pub async fn retry_of_a_running_or_completed_job_is_a_conflict(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    assert!(matches!(
        t.store.retry(&id).await,
        Err(StoreError::Conflict {
            status: JobStatus::New,
            ..
        })
    ));
    let job = claim_one(&t, "w").await;
    assert!(matches!(
        t.store.retry(&id).await,
        Err(StoreError::Conflict {
            status: JobStatus::Running,
            ..
        })
    ));
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed {
                result: json!(null),
            },
        )])
        .await
        .unwrap();
    assert!(matches!(
        t.store.retry(&id).await,
        Err(StoreError::Conflict {
            status: JobStatus::Completed,
            ..
        })
    ));
}

pub async fn release_returns_the_job_without_counting_the_attempt(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    let halfway = Progress {
        fraction: Some(0.5),
        ..Progress::default()
    };
    t.store
        .report_progress(&fence(&job, "w"), halfway)
        .await
        .unwrap();
    t.store
        .finish(vec![(fence(&job, "w"), Outcome::Released)])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let released = t.store.get(&id).await.unwrap();
    assert_eq!((released.status, released.attempt), (JobStatus::New, 0));
    assert!(released.worker_id.is_none());
    // Queued again as if never started: no stale progress, no run time.
    assert_eq!((released.progress, released.started), (None, None));
    let again = claim_one(&t, "w2").await;
    assert_eq!((again.job_id, again.attempt), (id, 1));
    // The releasing worker's fence no longer holds.
    let stale = t
        .store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(matches!(stale, Err(StoreError::LeaseLost { .. })));
}

pub async fn progress_is_stored_clamped_and_logged(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    let progress = Progress {
        fraction: Some(1.7),
        message: Some("rendering".into()),
        stage: Some("tts".into()),
        data: Some(json!({"chunk": 3})),
        updated: None,
    };
    t.store
        .report_progress(&fence(&job, "w"), progress)
        .await
        .unwrap();
    t.store
        .append_log(&fence(&job, "w"), "chunk 3 done".into())
        .await
        .unwrap();
    let job = t.store.get(&id).await.unwrap();
    let progress = job.progress.unwrap();
    assert_eq!(progress.fraction, Some(1.0));
    assert_eq!(progress.message.as_deref(), Some("rendering"));
    assert_eq!(progress.stage.as_deref(), Some("tts"));
    assert_eq!(progress.updated, Some(t.clock.now()));
    let events = t.store.events(&id, 0, 100).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Status,
            EventKind::Status,
            EventKind::Progress,
            EventKind::Log
        ]
    );
    assert_eq!(events[3].data["line"], json!("chunk 3 done"));
}

pub async fn a_refused_change_leaves_the_job_free_at_once(t: TestStore) {
    // A refused request must release whatever it locked before it answers:
    // a claim right after it finds the job.
    for _ in 0..20 {
        let id = t.store.submit(new_job("a")).await.unwrap().job_id;
        assert!(matches!(
            t.store.retry(&id).await,
            Err(StoreError::Conflict { .. })
        ));
        let job = claim_one(&t, "w").await;
        assert_eq!(job.job_id, id);
        t.store
            .finish(vec![(
                fence(&job, "w"),
                Outcome::Completed { result: json!(1) },
            )])
            .await
            .unwrap();
    }
}

/// Canceling a job cancels the jobs under it that have not ended, at
/// every depth: waiting ones at once, running ones through their worker.
pub async fn cancel_cascades_to_the_jobs_under_it(t: TestStore) {
    use crate::Outcome;
    let parent = t.store.submit(new_job("p")).await.unwrap().job_id;
    let running_parent = claim_one(&t, "w").await;
    let child = |name: &str, parent: &errand_core::JobId| new_job(name).parent(parent.clone());
    let done = t.store.submit(child("done", &parent)).await.unwrap().job_id;
    let done_job = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&done_job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    let busy = t.store.submit(child("busy", &parent)).await.unwrap().job_id;
    claim_one(&t, "w2").await;
    let waiting = t
        .store
        .submit(child("waiting", &parent))
        .await
        .unwrap()
        .job_id;
    let grandchild = t
        .store
        .submit(child("grandchild", &waiting))
        .await
        .unwrap()
        .job_id;
    let unrelated = t.store.submit(new_job("other")).await.unwrap().job_id;

    let canceled = t.store.cancel(&parent).await.unwrap();
    assert_eq!(canceled.job_id, running_parent.job_id);
    assert!(canceled.cancel_requested);
    let get = |id: errand_core::JobId| {
        let store = t.store.clone();
        async move { store.get(&id).await.unwrap() }
    };
    assert_eq!(get(waiting).await.status, JobStatus::Canceled);
    let grandchild = get(grandchild).await;
    assert_eq!(grandchild.status, JobStatus::Canceled, "at every depth");
    let busy = get(busy).await;
    assert_eq!(
        (busy.status, busy.cancel_requested),
        (JobStatus::Running, true)
    );
    assert_eq!(get(done).await.status, JobStatus::Completed);
    assert_eq!(get(unrelated).await.status, JobStatus::New);
}
