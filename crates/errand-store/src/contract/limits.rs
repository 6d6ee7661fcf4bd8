//! Cluster-wide limits: running jobs and starts per command or per key,
//! kept by the store's claims whoever asks.

use std::time::Duration;

use errand_core::CommandLimit;
use serde_json::json;

use super::*;
use crate::{Outcome, StoreError};

fn per_user(max_running: Option<u32>, max_starts: Option<u32>) -> CommandLimit {
    CommandLimit {
        command: "test.podcast".into(),
        key: Some("input.user".into()),
        max_running,
        max_starts,
        per_secs: max_starts.map(|_| 60.0),
    }
}

fn podcast(user: &str) -> crate::NewJob {
    NewJob::new("test", "podcast", json!({"user": user}))
}

fn users(jobs: &[Job]) -> Vec<String> {
    let mut users: Vec<String> = jobs
        .iter()
        .map(|j| j.input["user"].as_str().unwrap_or("-").to_owned())
        .collect();
    users.sort();
    users
}

async fn complete(t: &TestStore, job: &Job, worker: &str) {
    let done = t
        .store
        .finish(vec![(
            fence(job, worker),
            Outcome::Completed {
                result: json!(null),
            },
        )])
        .await
        .unwrap();
    assert_eq!(done, vec![Ok(())]);
}

/// At most two running jobs per user, whichever worker claims; other
/// users' and unlimited commands' jobs are not held; a finished job makes
/// room for the next one of its user.
pub async fn a_concurrency_limit_holds_per_key_across_workers(t: TestStore) {
    t.store.set_limit(per_user(Some(2), None)).await.unwrap();
    for user in ["a", "a", "a", "b", "b"] {
        t.store.submit(podcast(user)).await.unwrap();
    }
    t.store.submit(new_job("other")).await.unwrap();
    let first = t.store.claim(claim_params("w1", 10)).await.unwrap();
    assert_eq!(users(&first), vec!["-", "a", "a", "b", "b"]);
    assert!(
        t.store
            .claim(claim_params("w2", 10))
            .await
            .unwrap()
            .is_empty(),
        "a's third job waits, on every worker"
    );
    let held = t
        .store
        .list(crate::ListParams {
            status: Some(errand_core::JobStatus::New),
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].limit_key.as_deref(), Some("test.podcast:a"));
    let usage = t.store.limit_usage("test.podcast:a", None).await.unwrap();
    assert_eq!((usage.running, usage.recent_starts), (2, 0));

    let a_job = first.iter().find(|j| j.input["user"] == "a").unwrap();
    complete(&t, a_job, "w1").await;
    let next = t.store.claim(claim_params("w2", 10)).await.unwrap();
    assert_eq!(users(&next), vec!["a"]);
}

/// A limit set while jobs wait (or run) holds them at once.
pub async fn a_limit_set_later_holds_the_jobs_already_queued(t: TestStore) {
    let running = t.store.submit(podcast("a")).await.unwrap();
    assert_eq!(claim_one(&t, "w").await.job_id, running.job_id);
    for _ in 0..3 {
        t.store.submit(podcast("a")).await.unwrap();
    }
    let mut whole_command = per_user(Some(2), None);
    whole_command.key = None;
    t.store.set_limit(whole_command).await.unwrap();
    let claimed = t.store.claim(claim_params("w", 10)).await.unwrap();
    assert_eq!(claimed.len(), 1, "the running job counts: one more fits");
    assert_eq!(claimed[0].limit_key.as_deref(), Some("test.podcast"));
}

/// At most two starts a minute per user, however fast jobs end; the
/// window slides with the clock.
pub async fn a_rate_limit_counts_the_starts_in_its_window(t: TestStore) {
    t.store.set_limit(per_user(None, Some(2))).await.unwrap();
    for _ in 0..5 {
        t.store.submit(podcast("a")).await.unwrap();
    }
    let first = t.store.claim(claim_params("w", 10)).await.unwrap();
    assert_eq!(first.len(), 2);
    for job in &first {
        complete(&t, job, "w").await;
    }
    let minute = Some(Duration::from_secs(60));
    let usage = t.store.limit_usage("test.podcast:a", minute).await.unwrap();
    assert_eq!((usage.running, usage.recent_starts), (0, 2));
    t.clock.advance(Duration::from_secs(30));
    assert!(t
        .store
        .claim(claim_params("w", 10))
        .await
        .unwrap()
        .is_empty());
    t.clock.advance(Duration::from_secs(31));
    assert_eq!(t.store.claim(claim_params("w", 10)).await.unwrap().len(), 2);
}

/// Many jobs of a key that is full do not hold up another key's job
/// behind them in the queue.
pub async fn a_full_key_does_not_hold_up_the_jobs_behind_it(t: TestStore) {
    t.store.set_limit(per_user(Some(1), None)).await.unwrap();
    for _ in 0..50 {
        t.store.submit(podcast("busy")).await.unwrap();
    }
    t.store.submit(podcast("quiet")).await.unwrap();
    let claimed = t.store.claim(claim_params("w", 10)).await.unwrap();
    assert_eq!(users(&claimed), vec!["busy", "quiet"]);
}

/// Claims racing from many workers never start more than the limit: each
/// claims from a queue of its own, so none skips the others' rows, and
/// all of them want the same key at once.
pub async fn racing_claims_never_exceed_a_limit(t: TestStore) {
    t.store.set_limit(per_user(Some(2), None)).await.unwrap();
    for round in 0..5 {
        let user = format!("u{round}");
        for n in 0..16 {
            let jobs = (0..2)
                .map(|_| podcast(&user).queue(format!("r{round}q{n}")))
                .collect();
            t.store.submit_batch(jobs).await.unwrap();
        }
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let racers: Vec<_> = (0..16)
            .map(|n| {
                let (store, start) = (t.store.clone(), start.clone());
                let mut params = claim_params(&format!("w{n}"), 5);
                params.queues = vec![format!("r{round}q{n}")];
                tokio::spawn(async move {
                    start.wait().await;
                    store.claim(params).await
                })
            })
            .collect();
        let mut started = 0;
        for racer in racers {
            started += racer.await.unwrap().unwrap().len();
        }
        assert_eq!(started, 2, "round {round}");
    }
}

/// Limits are listed, replaced and lifted (then held jobs start); a bad
/// one is refused with the reason.
pub async fn limits_are_listed_replaced_and_lifted(t: TestStore) {
    t.store.set_limit(per_user(Some(1), None)).await.unwrap();
    t.store
        .set_limit(per_user(Some(3), Some(10)))
        .await
        .unwrap();
    assert_eq!(
        t.store.limits().await.unwrap(),
        vec![per_user(Some(3), Some(10))]
    );
    let bad = CommandLimit {
        max_running: None,
        ..per_user(None, None)
    };
    assert!(matches!(
        t.store.set_limit(bad).await,
        Err(StoreError::Invalid(_))
    ));
    for _ in 0..4 {
        t.store.submit(podcast("a")).await.unwrap();
    }
    assert_eq!(t.store.claim(claim_params("w", 10)).await.unwrap().len(), 3);
    t.store.delete_limit("test.podcast").await.unwrap();
    assert_eq!(t.store.claim(claim_params("w", 10)).await.unwrap().len(), 1);
    assert_eq!(
        t.store.delete_limit("test.podcast").await,
        Err(StoreError::LimitNotFound("test.podcast".into()))
    );
    assert!(t.store.limits().await.unwrap().is_empty());
}
