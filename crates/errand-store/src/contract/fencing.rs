//! Leases, heartbeats, reaping, and fencing of stale workers.

use std::time::Duration;

use errand_core::{error_kind, JobStatus, Progress};
use serde_json::json;

use super::*;
use crate::{Fence, HeartbeatParams, Outcome, StoreError};

/// Lets `job`'s lease run out and reaps it.
async fn expire(t: &TestStore) -> Vec<errand_core::JobId> {
    t.clock.advance(LEASE + Duration::from_secs(1));
    t.store.reap_expired().await.unwrap()
}

/// A batch of completions is fenced job by job: a stale one among fresh
/// ones is refused alone, and each answer is in the batch's order (which
/// is neither the jobs' order nor its reverse).
pub async fn a_batch_of_completions_fences_each_job_on_its_own(t: TestStore) {
    let ids: Vec<_> = t
        .store
        .submit_batch((0..4).map(|_| new_job("a")).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    let claimed = t.store.claim(claim_params("w", 4)).await.unwrap();
    assert_eq!(claimed.len(), 4);
    // Job 1's lease is lost: another worker holds it now.
    let lost = claimed.iter().find(|j| j.job_id == ids[1]).unwrap();
    t.store
        .finish(vec![(fence(lost, "w"), Outcome::Released)])
        .await
        .unwrap();
    let retaken = claim_one(&t, "w2").await;
    assert_eq!(retaken.job_id, ids[1]);
    let outcomes = [1, 3, 0, 2]
        .iter()
        .map(|&i| {
            let job = claimed.iter().find(|j| j.job_id == ids[i]).unwrap();
            (
                fence(job, "w"),
                Outcome::Completed {
                    result: json!(ids[i].as_str()),
                },
            )
        })
        .collect();
    let answers = t.store.finish(outcomes).await.unwrap();
    assert_eq!(
        answers,
        vec![
            Err(StoreError::LeaseLost {
                job_id: ids[1].clone(),
                attempt: 1
            }),
            Ok(()),
            Ok(()),
            Ok(()),
        ]
    );
    for id in [&ids[0], &ids[2], &ids[3]] {
        let job = t.store.get(id).await.unwrap();
        assert_eq!(job.status, JobStatus::Completed);
        assert_eq!(
            job.result,
            Some(json!(id.as_str())),
            "each got its own result"
        );
        let last = t.store.events(id, 0, 100).await.unwrap().pop().unwrap();
        assert_eq!(last.data["result"], json!(id.as_str()));
    }
    let lost = t.store.get(&ids[1]).await.unwrap();
    assert_eq!(
        (lost.status, lost.worker_id.as_deref()),
        (JobStatus::Running, Some("w2"))
    );
}

/// One batch may hold two attempts of the same job (the first lost its
/// lease and the same worker took the job again): only the current
/// attempt's completion counts, and each answer is its own.
pub async fn a_batch_with_two_attempts_of_one_job_completes_the_current_one(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let first = claim_one(&t, "w").await;
    assert_eq!(expire(&t).await, vec![id.clone()]);
    let second = claim_one(&t, "w").await;
    assert_eq!((second.job_id.clone(), second.attempt), (id.clone(), 2));
    let answers = t
        .store
        .finish(vec![
            (
                fence(&first, "w"),
                Outcome::Completed {
                    result: json!("first"),
                },
            ),
            (
                fence(&second, "w"),
                Outcome::Completed {
                    result: json!("second"),
                },
            ),
        ])
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![
            Err(StoreError::LeaseLost {
                job_id: id.clone(),
                attempt: 1
            }),
            Ok(()),
        ]
    );
    let job = t.store.get(&id).await.unwrap();
    assert_eq!(
        (job.status, job.attempt, job.result),
        (JobStatus::Completed, 2, Some(json!("second")))
    );
    let last = t.store.events(&id, 0, 100).await.unwrap().pop().unwrap();
    assert_eq!(last.data["result"], json!("second"));
}

pub async fn stale_worker_cannot_complete_reclaimed_job(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let stale = claim_one(&t, "w1").await;
    assert_eq!(expire(&t).await, vec![id.clone()]);
    let fresh = claim_one(&t, "w2").await;
    assert_eq!((fresh.job_id.clone(), fresh.attempt), (id.clone(), 2));
    let events_before = t.store.events(&id, 0, 100).await.unwrap();

    let late = t
        .store
        .finish(vec![(
            fence(&stale, "w1"),
            Outcome::Completed {
                result: json!("stale"),
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        late,
        Err(StoreError::LeaseLost {
            job_id: id.clone(),
            attempt: 1
        })
    );
    let job = t.store.get(&id).await.unwrap();
    assert_eq!(
        job.status,
        JobStatus::Running,
        "the stale outcome changed nothing"
    );
    assert_eq!(job.worker_id.as_deref(), Some("w2"));
    assert_eq!(t.store.events(&id, 0, 100).await.unwrap(), events_before);

    t.store
        .finish(vec![(
            fence(&fresh, "w2"),
            Outcome::Completed {
                result: json!("fresh"),
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    let job = t.store.get(&id).await.unwrap();
    assert_eq!(job.result, Some(json!("fresh")));
    // And after the outcome, the stale worker still cannot overwrite it.
    let later = t
        .store
        .finish(vec![(
            fence(&stale, "w1"),
            Outcome::Failed {
                error: errand_core::JobError {
                    kind: "handler".into(),
                    message: "late".into(),
                    retryable: false,
                    attempt: 1,
                },
                retry_at: None,
            },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(matches!(later, Err(StoreError::LeaseLost { .. })));
    assert_eq!(t.store.get(&id).await.unwrap().status, JobStatus::Completed);
}

pub async fn stale_worker_cannot_report_progress_or_log(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let stale = claim_one(&t, "w1").await;
    expire(&t).await;
    let events_before = t.store.events(&id, 0, 100).await.unwrap().len();
    let progress = Progress {
        fraction: Some(0.5),
        ..Progress::default()
    };
    assert!(matches!(
        t.store
            .report_progress(&fence(&stale, "w1"), progress)
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        t.store
            .append_log(&fence(&stale, "w1"), "late".into())
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(
        t.store.events(&id, 0, 100).await.unwrap().len(),
        events_before
    );
    assert!(t.store.get(&id).await.unwrap().progress.is_none());
}

pub async fn wrong_worker_is_fenced_out(t: TestStore) {
    t.store.submit(new_job("a")).await.unwrap();
    let job = claim_one(&t, "w1").await;
    let result = t
        .store
        .finish(vec![(
            fence(&job, "intruder"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(matches!(result, Err(StoreError::LeaseLost { .. })));
    let unknown = Fence {
        job_id: "missing".into(),
        attempt: 1,
        worker_id: "w1".into(),
    };
    let result = t
        .store
        .finish(vec![(unknown, Outcome::Completed { result: json!(1) })])
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(matches!(result, Err(StoreError::NotFound(_))));
}

pub async fn heartbeat_renews_leases_and_reports_cancel_and_loss(t: TestStore) {
    t.store
        .submit_batch(vec![new_job("a"), new_job("b"), new_job("c")])
        .await
        .unwrap();
    let jobs = t.store.claim(claim_params("w", 3)).await.unwrap();
    t.store.cancel(&jobs[1].job_id).await.unwrap();
    let mut gone = fence(&jobs[2], "w");
    gone.attempt += 1; // an attempt this worker does not hold
    t.clock.advance(Duration::from_secs(20));
    let reply = t
        .store
        .heartbeat(HeartbeatParams {
            worker_id: "w".into(),
            running: vec![fence(&jobs[0], "w"), fence(&jobs[1], "w"), gone],
            lease: LEASE,
        })
        .await
        .unwrap();
    assert_eq!(reply.cancel_requested, vec![jobs[1].job_id.clone()]);
    assert_eq!(reply.lost, vec![jobs[2].job_id.clone()]);
    let renewed = t.store.get(&jobs[0].job_id).await.unwrap();
    assert_eq!(renewed.lease_until, Some(t.clock.now().plus(LEASE)));
    // 20 s + 15 s is past the first lease but within the renewed one.
    t.clock.advance(Duration::from_secs(15));
    let reaped = t.store.reap_expired().await.unwrap();
    assert_eq!(
        reaped,
        vec![jobs[2].job_id.clone()],
        "only the unrenewed job expired"
    );
}

pub async fn expired_lease_is_reaped_and_counts_the_attempt(t: TestStore) {
    let id = t
        .store
        .submit(new_job("a").max_attempts(3))
        .await
        .unwrap()
        .job_id;
    claim_one(&t, "dead").await;
    assert_eq!(expire(&t).await, vec![id.clone()]);
    let job = t.store.get(&id).await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::New, 1));
    assert!(job.worker_id.is_none() && job.lease_until.is_none());
    let error = job.error.unwrap();
    assert_eq!(
        (error.kind.as_str(), error.attempt),
        (error_kind::LEASE_EXPIRED, 1)
    );
    assert!(job.run_at <= t.clock.now(), "runs again at once");
    // A job whose worker died with a cancel pending ends canceled.
    let other = t.store.submit(new_job("b")).await.unwrap().job_id;
    let mut claimed = t.store.claim(claim_params("dead", 2)).await.unwrap();
    claimed.sort_by_key(|j| j.job_id.clone());
    t.store.cancel(&other).await.unwrap();
    expire(&t).await;
    assert_eq!(
        t.store.get(&other).await.unwrap().status,
        JobStatus::Canceled
    );
    assert_eq!(t.store.get(&id).await.unwrap().attempt, 2);
}

/// A job whose worker died goes back to its place in the queue, ahead of
/// the jobs submitted after it, not behind the whole backlog.
pub async fn a_reaped_job_keeps_its_place_in_the_queue(t: TestStore) {
    let first = t.store.submit(new_job("a")).await.unwrap().job_id;
    claim_one(&t, "dead").await;
    t.clock.advance(Duration::from_secs(5));
    for _ in 0..3 {
        t.store.submit(new_job("a")).await.unwrap();
    }
    assert_eq!(expire(&t).await, vec![first.clone()]);
    let next = t.store.claim(claim_params("alive", 1)).await.unwrap();
    assert_eq!(next[0].job_id, first, "the reaped job runs first");
}

pub async fn expired_lease_on_last_attempt_fails_the_job(t: TestStore) {
    let id = t
        .store
        .submit(new_job("a").max_attempts(1))
        .await
        .unwrap()
        .job_id;
    claim_one(&t, "dead").await;
    expire(&t).await;
    let job = t.store.get(&id).await.unwrap();
    assert_eq!(
        job.status,
        JobStatus::Failed,
        "a job that kills its worker cannot loop"
    );
    assert_eq!(job.error.unwrap().kind, error_kind::LEASE_EXPIRED);
    assert!(job.finished.is_some());
}

pub async fn live_leases_are_not_reaped(t: TestStore) {
    t.store.submit(new_job("a")).await.unwrap();
    claim_one(&t, "w").await;
    t.clock.advance(LEASE - Duration::from_secs(1));
    assert!(t.store.reap_expired().await.unwrap().is_empty());
}

/// A worker's heartbeat and its batched completions touch the same jobs at
/// the same time, each listing them in its own order; neither may fail the
/// other (on PostgreSQL, rows locked in different orders deadlock).
pub async fn heartbeats_and_batched_finishes_of_the_same_jobs_never_collide(t: TestStore) {
    const JOBS: usize = 12;
    for round in 0..15 {
        for _ in 0..JOBS {
            t.store.submit(new_job("a")).await.unwrap();
        }
        let claimed = t.store.claim(claim_params("w", JOBS)).await.unwrap();
        assert_eq!(claimed.len(), JOBS);
        let mut fences: Vec<Fence> = claimed.iter().map(|job| fence(job, "w")).collect();
        // The two calls take the jobs in opposite orders.
        fences.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        let heartbeat = HeartbeatParams {
            worker_id: "w".into(),
            running: fences.clone(),
            lease: LEASE,
        };
        let outcomes = fences
            .iter()
            .rev()
            .map(|f| {
                (
                    f.clone(),
                    Outcome::Completed {
                        result: json!(round),
                    },
                )
            })
            .collect();
        let store = t.store.clone();
        let beating = tokio::spawn(async move {
            for _ in 0..3 {
                store.heartbeat(heartbeat.clone()).await?;
            }
            Ok::<_, StoreError>(())
        });
        let finished = t.store.finish(outcomes).await.unwrap();
        beating.await.unwrap().unwrap();
        assert!(finished.iter().all(Result::is_ok), "{finished:?}");
    }
}

/// Outcomes recorded together with the claims for the slots they free, in
/// one store call: each outcome keeps its own fence, and the claims take
/// the next jobs in queue order, seeing what the outcomes freed (the
/// finished job is not claimed again; a job sent back to `new` by a
/// retryable failure due now is).
pub async fn finishing_claims_the_next_jobs_in_the_same_transaction(t: TestStore) {
    let ids: Vec<_> = t
        .store
        .submit_batch((0..5).map(|_| new_job("a")).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    let claimed = t.store.claim(claim_params("w", 2)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let mut feed = t.store.subscribe();
    let commits = t.store.commits();
    let stale = Fence {
        attempt: 7,
        ..fence(&claimed[1], "w")
    };
    let done = t
        .store
        .finish_and_claim(
            vec![
                (
                    fence(&claimed[0], "w"),
                    Outcome::Completed { result: json!(1) },
                ),
                (stale, Outcome::Completed { result: json!(2) }),
            ],
            vec![claim_params("w", 2)],
        )
        .await
        .unwrap();
    // One transaction (SQLite, and PostgreSQL for a mixed batch), or two
    // statements that each commit alone, sent together (PostgreSQL, for a
    // batch of completions): never a commit per job.
    assert!(
        t.store.commits() - commits <= 2,
        "one store call, at most two commits"
    );
    assert_eq!(
        done.recorded,
        vec![
            Ok(()),
            Err(StoreError::LeaseLost {
                job_id: ids[1].clone(),
                attempt: 7
            })
        ]
    );
    let next: Vec<_> = done.claimed.iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(next, vec![ids[2].clone(), ids[3].clone()], "queue order");
    for job in &done.claimed {
        assert_eq!(
            (job.status, job.attempt, job.worker_id.as_deref()),
            (JobStatus::Running, 1, Some("w"))
        );
        assert_eq!(
            t.store.get(&job.job_id).await.unwrap().status,
            JobStatus::Running
        );
    }
    assert_eq!(
        t.store.get(&ids[0]).await.unwrap().status,
        JobStatus::Completed
    );
    // The change feed has the completion, then the claims.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), feed.recv())
            .await
            .expect("the transaction's events are published")
            .unwrap();
        seen.push((event.job_id.clone(), event.status));
    }
    assert_eq!(
        seen,
        vec![
            (ids[0].clone(), JobStatus::Completed),
            (ids[2].clone(), JobStatus::Running),
            (ids[3].clone(), JobStatus::Running),
        ]
    );

    // A failure due for retry now is back in the queue for the claim made
    // with it (ahead of job 4: it keeps its place).
    let failing = &done.claimed[0];
    let retry_now = Outcome::Failed {
        error: errand_core::JobError {
            kind: error_kind::HANDLER.into(),
            message: "try again".into(),
            retryable: true,
            attempt: 1,
        },
        retry_at: Some(t.clock.now()),
    };
    let again = t
        .store
        .finish_and_claim(
            vec![(fence(failing, "w"), retry_now)],
            vec![claim_params("w", 1)],
        )
        .await
        .unwrap();
    assert_eq!(again.recorded, vec![Ok(())]);
    assert_eq!(again.claimed.len(), 1);
    assert_eq!(
        (&again.claimed[0].job_id, again.claimed[0].attempt),
        (&failing.job_id, 2)
    );

    // No claims: only the outcomes.
    let last = t
        .store
        .finish_and_claim(
            vec![(fence(&done.claimed[1], "w"), Outcome::Released)],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!((last.recorded, last.claimed.len()), (vec![Ok(())], 0));
}
