//! Listing, event logs, the global feed, the change feed, and stats.

use std::time::Duration;

use errand_core::{EventKind, JobId, JobStatus, Timestamp};
use serde_json::json;

use super::*;
use crate::{FinishedInMinute, ListParams, Outcome, StoreError};

pub async fn list_filters_by_every_field(t: TestStore) {
    let parent = t.store.submit(new_job("parent")).await.unwrap().job_id;
    let t0 = t.clock.now();
    t.clock.advance(Duration::from_secs(1));
    let child = t
        .store
        .submit(
            NewJob::new("other", "child", json!({}))
                .parent(parent.clone())
                .queue("q2"),
        )
        .await
        .unwrap()
        .job_id;
    t.clock.advance(Duration::from_secs(1));
    let t2 = t.clock.now();
    let running = t.store.submit(new_job("run")).await.unwrap().job_id;
    // Claim in priority/FIFO order: the parent first, then `run`.
    let parent_job = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&parent_job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    claim_one(&t, "w").await;

    let ids =
        |page: crate::JobPage| -> Vec<JobId> { page.jobs.into_iter().map(|j| j.job_id).collect() };
    let list = |params: ListParams| t.store.list(params);
    assert_eq!(
        ids(list(ListParams::default()).await.unwrap()),
        vec![running.clone(), child.clone(), parent.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            status: Some(JobStatus::Running),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![running.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            status: Some(JobStatus::Completed),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![parent.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            app: Some("other".into()),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![child.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            command: Some("run".into()),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![running.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            command: Some("other.child".into()),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![child.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            queue: Some("q2".into()),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![child.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            parent_id: Some(parent.clone()),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![child.clone()]
    );
    assert_eq!(
        ids(list(ListParams {
            created_after: Some(t0),
            created_before: Some(t2),
            ..Default::default()
        })
        .await
        .unwrap()),
        vec![child]
    );
}

pub async fn list_paginates_without_gaps_or_duplicates(t: TestStore) {
    let mut submitted: Vec<JobId> = t
        .store
        .submit_batch((0..23).map(|_| new_job("p")).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    submitted.reverse(); // newest first
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = t
            .store
            .list(ListParams {
                limit: 5,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 5);
        seen.extend(page.jobs.into_iter().map(|j| j.job_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, submitted);
    let exact = t
        .store
        .list(ListParams {
            limit: 23,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(exact.next_cursor, None, "no cursor to an empty page");
}

pub async fn list_rejects_bad_limits_and_cursors(t: TestStore) {
    let too_many = t
        .store
        .list(ListParams {
            limit: 1001,
            ..Default::default()
        })
        .await;
    assert!(matches!(too_many, Err(StoreError::Invalid(msg)) if msg.contains("1000")));
    let bad_cursor = t
        .store
        .list(ListParams {
            cursor: Some("garbage".into()),
            ..Default::default()
        })
        .await;
    assert!(matches!(bad_cursor, Err(StoreError::Invalid(msg)) if msg.contains("cursor")));
}

pub async fn events_are_sequenced_per_job_and_resume_after_seq(t: TestStore) {
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let other = t.store.submit(new_job("b")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    assert_eq!(job.job_id, id);
    for i in 0..3 {
        t.store
            .append_log(&fence(&job, "w"), format!("line {i}"))
            .await
            .unwrap();
    }
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    let events = t.store.events(&id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(t.store.get(&id).await.unwrap().event_seq, 6);
    assert!(events.iter().all(|e| e.job_id == id));
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Status,
            EventKind::Status,
            EventKind::Log,
            EventKind::Log,
            EventKind::Log,
            EventKind::Result
        ]
    );
    let resumed = t.store.events(&id, 3, 100).await.unwrap();
    assert_eq!(resumed, events[3..].to_vec());
    let limited = t.store.events(&id, 0, 2).await.unwrap();
    assert_eq!(limited, events[..2].to_vec());
    assert!(t.store.events(&id, 6, 100).await.unwrap().is_empty());
    assert_eq!(t.store.events(&other, 0, 100).await.unwrap().len(), 1);
}

pub async fn feed_orders_all_events_and_resumes_after_id(t: TestStore) {
    let a = t.store.submit(new_job("a")).await.unwrap().job_id;
    let b = t.store.submit(new_job("b")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    assert_eq!(job.job_id, a);
    let feed = t.store.feed(0, 100).await.unwrap();
    let order: Vec<(JobId, i64)> = feed.iter().map(|e| (e.job_id.clone(), e.seq)).collect();
    assert_eq!(order, vec![(a.clone(), 1), (b, 1), (a, 2)]);
    assert!(feed.windows(2).all(|w| w[0].id < w[1].id));
    let rest = t.store.feed(feed[0].id, 100).await.unwrap();
    assert_eq!(rest, feed[1..].to_vec());
}

pub async fn feed_head_is_where_the_feed_ends_and_outlives_prune(t: TestStore) {
    assert_eq!(t.store.feed_head().await.unwrap(), 0, "an empty store");
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    t.store.cancel(&id).await.unwrap();
    let head = t.store.feed_head().await.unwrap();
    let feed = t.store.feed(0, 100).await.unwrap();
    assert_eq!(head, feed.last().unwrap().id);
    assert!(t.store.feed(head, 100).await.unwrap().is_empty());
    let later = t.store.submit(new_job("b")).await.unwrap().job_id;
    let after = t.store.feed(head, 100).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].job_id, later);
    // Pruned events still count: the head never goes back, so a reader
    // resuming from it never sees an id twice.
    let head = t.store.feed_head().await.unwrap();
    t.clock.advance(Duration::from_secs(3600));
    t.store.cancel(&later).await.unwrap();
    t.clock.advance(Duration::from_secs(3600));
    assert!(t.store.prune(t.clock.now()).await.unwrap() >= 2);
    assert!(t.store.feed_head().await.unwrap() > head);
}

pub async fn change_feed_delivers_committed_events(t: TestStore) {
    let mut changes = t.store.subscribe();
    let id = t.store.submit(new_job("a")).await.unwrap().job_id;
    let event = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("an event within 10 s")
        .unwrap();
    assert_eq!((event.job_id.clone(), event.seq), (id.clone(), 1));
    assert_eq!(event.status, JobStatus::New);
    let stored = t.store.events(&id, 0, 10).await.unwrap();
    assert_eq!(*event, stored[0], "the feed carries the event as stored");
    // A rejected write publishes nothing.
    let mut bad = new_job("bad");
    bad.retry.max_attempts = 0;
    assert!(t.store.submit(bad).await.is_err());
    t.store.cancel(&id).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("an event within 10 s")
        .unwrap();
    assert_eq!(
        (next.job_id.clone(), next.status),
        (id, JobStatus::Canceled)
    );
}

pub async fn stats_count_statuses_and_time_runs(t: TestStore) {
    t.store
        .submit_batch(vec![new_job("s"), new_job("s"), new_job("s"), new_job("s")])
        .await
        .unwrap();
    let first = claim_one(&t, "w").await;
    t.clock.advance(Duration::from_secs(2));
    t.store
        .finish(vec![(
            fence(&first, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    let second = claim_one(&t, "w").await;
    t.clock.advance(Duration::from_secs(4));
    t.store
        .finish(vec![(
            fence(&second, "w"),
            Outcome::Failed {
                error: errand_core::JobError {
                    kind: "handler".into(),
                    message: "boom".into(),
                    retryable: false,
                    attempt: 1,
                },
                retry_at: None,
            },
        )])
        .await
        .unwrap();
    claim_one(&t, "w").await;
    let stats = t.store.stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!((s.app.as_str(), s.command.as_str()), ("test", "s"));
    let count = |status: &str| s.counts[status];
    assert_eq!(
        (
            count("new"),
            count("running"),
            count("completed"),
            count("failed"),
            count("canceled")
        ),
        (1, 1, 1, 1, 0)
    );
    assert_eq!(s.failure_rate, Some(0.5));
    assert_eq!(s.mean_run_secs, Some(3.0));
    assert_eq!(s.p50_run_secs, Some(2.0));
    assert_eq!(s.p95_run_secs, Some(4.0));
    assert_eq!(s.oldest_new_age_secs, Some(6.0));
}

pub async fn finished_per_minute_counts_completed_and_failed(t: TestStore) {
    let minute_of =
        |at: Timestamp| Timestamp::from_micros(at.as_micros().div_euclid(60_000_000) * 60_000_000);
    t.store
        .submit_batch(vec![new_job("m"), new_job("m"), new_job("m"), new_job("m")])
        .await
        .unwrap();
    let start = t.clock.now();
    let done = claim_one(&t, "w").await;
    let failed = claim_one(&t, "w").await;
    let failure = errand_core::JobError {
        kind: "handler".into(),
        message: "boom".into(),
        retryable: false,
        attempt: 1,
    };
    t.store
        .finish(vec![
            (fence(&done, "w"), Outcome::Completed { result: json!(1) }),
            (
                fence(&failed, "w"),
                Outcome::Failed {
                    error: failure,
                    retry_at: None,
                },
            ),
        ])
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(120));
    let later = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&later, "w"),
            Outcome::Completed { result: json!(2) },
        )])
        .await
        .unwrap();
    // Canceled and unfinished jobs are not throughput.
    let canceled = claim_one(&t, "w").await;
    t.store.cancel(&canceled.job_id).await.unwrap();

    let all = t
        .store
        .finished_per_minute(start.minus(Duration::from_secs(60)))
        .await
        .unwrap();
    let expected = vec![
        FinishedInMinute {
            minute: minute_of(start),
            completed: 1,
            failed: 1,
        },
        FinishedInMinute {
            minute: minute_of(t.clock.now()),
            completed: 1,
            failed: 0,
        },
    ];
    assert_eq!(all, expected);
    let recent = t
        .store
        .finished_per_minute(start.plus(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(recent, expected[1..]);
}
