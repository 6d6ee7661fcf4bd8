//! Webhook deliveries: queued once per wanted event, held by one sender at
//! a time, retried when due, and recorded in the job's event log.

use std::collections::BTreeMap;
use std::time::Duration;

use errand_core::{Change, DeliveryState, EventKind, JobId, JobStatus, Webhook, WebhookOn};
use serde_json::json;

use super::*;
use crate::{DeliveryAttempt, Outcome, StoreError, TakeDeliveries, WebhookDelivery};

fn hook(on: WebhookOn) -> Webhook {
    Webhook {
        url: "https://hooks.example.com/errand".into(),
        on,
    }
}

fn take(sender: &str) -> TakeDeliveries {
    TakeDeliveries {
        sender: sender.into(),
        lease: Duration::from_secs(30),
        limit: 100,
    }
}

fn attempt(state: DeliveryState, retry_at: Option<errand_core::Timestamp>) -> DeliveryAttempt {
    DeliveryAttempt {
        state,
        http_status: Some(if state == DeliveryState::Delivered {
            204
        } else {
            500
        }),
        error: (state != DeliveryState::Delivered).then(|| "the receiver answered 500".into()),
        retry_at,
    }
}

/// Which events were taken, per job: (kind, status) in event order.
fn by_job(taken: &[WebhookDelivery]) -> BTreeMap<JobId, Vec<(EventKind, JobStatus)>> {
    let mut jobs: BTreeMap<JobId, Vec<_>> = BTreeMap::new();
    let mut sorted = taken.to_vec();
    sorted.sort_by_key(|d| d.event.id);
    for d in sorted {
        jobs.entry(d.event.job_id.clone())
            .or_default()
            .push((d.event.kind, d.event.status));
    }
    jobs
}

/// An `end` webhook gets the job's last event, a `status` one each change
/// of status, a job without one nothing; a second scan queues nothing
/// again; a taken delivery is the sender's until its lease ends; only its
/// sender records it, once; a retrying one is due again at its time; each
/// record is an event of the job that reads back as a change.
pub async fn webhook_deliveries_are_queued_once_and_held_by_one_sender(t: TestStore) {
    let ended = t
        .store
        .submit(new_job("a").webhook(hook(WebhookOn::End)))
        .await
        .unwrap()
        .job_id;
    let followed = t
        .store
        .submit(
            new_job("a")
                .webhook(hook(WebhookOn::Status))
                .max_attempts(1),
        )
        .await
        .unwrap()
        .job_id;
    let silent = t.store.submit(new_job("a")).await.unwrap().job_id;
    let batched = t
        .store
        .submit_batch(vec![
            new_job("a").webhook(hook(WebhookOn::End)),
            new_job("a").context(json!({"no": "hook"})),
        ])
        .await
        .unwrap()[0]
        .job_id
        .clone();
    let job = t.store.get(&ended).await.unwrap();
    assert_eq!(job.webhook, Some(hook(WebhookOn::End)));
    assert_eq!(t.store.get(&silent).await.unwrap().webhook, None);
    let jobs = t.store.claim(claim_params("w", 10)).await.unwrap();
    assert_eq!(jobs.len(), 5);
    let outcomes = jobs
        .iter()
        .map(|job| {
            let outcome = if job.job_id == followed {
                Outcome::Failed {
                    error: errand_core::JobError {
                        kind: "Boom".into(),
                        message: "boom".into(),
                        retryable: false,
                        attempt: 1,
                    },
                    retry_at: None,
                }
            } else {
                Outcome::Completed { result: json!(1) }
            };
            (fence(job, "w"), outcome)
        })
        .collect();
    for recorded in t.store.finish(outcomes).await.unwrap() {
        recorded.unwrap();
    }

    assert_eq!(t.store.queue_webhook_deliveries().await.unwrap(), 5);
    assert_eq!(t.store.queue_webhook_deliveries().await.unwrap(), 0);
    let taken = t.store.take_webhook_deliveries(take("s1")).await.unwrap();
    use EventKind::*;
    use JobStatus::*;
    let expected = BTreeMap::from([
        (ended.clone(), vec![(Result, Completed)]),
        (
            followed.clone(),
            vec![(Status, New), (Status, Running), (Failure, Failed)],
        ),
        (batched.clone(), vec![(Result, Completed)]),
    ]);
    assert_eq!(by_job(&taken), expected);
    assert!(taken
        .iter()
        .all(|d| d.attempt == 1 && d.url == hook(WebhookOn::End).url));
    assert!(
        t.store
            .take_webhook_deliveries(take("s2"))
            .await
            .unwrap()
            .is_empty(),
        "held by s1"
    );

    // s1 delivers the end of `ended`; a second record, or s2's, is refused.
    let first = taken.iter().find(|d| d.event.job_id == ended).unwrap();
    let delivered = attempt(DeliveryState::Delivered, None);
    t.store
        .record_webhook_attempt("s1", first, delivered.clone())
        .await
        .unwrap();
    for sender in ["s1", "s2"] {
        let again = t
            .store
            .record_webhook_attempt(sender, first, delivered.clone())
            .await;
        assert!(
            matches!(again, Err(StoreError::LeaseLost { .. })),
            "{again:?}"
        );
    }
    let record = t.store.events(&ended, 0, 100).await.unwrap().pop().unwrap();
    assert_eq!((record.kind, record.status), (Webhook, Completed));
    match record.change().unwrap() {
        Change::Webhook(r) => {
            assert_eq!(
                (r.delivery_id, r.event_id),
                (first.delivery_id, first.event.id)
            );
            assert_eq!(
                (r.attempt, r.state, r.http_status),
                (1, DeliveryState::Delivered, Some(204))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!record.is_terminal(), "a record is not how the job ended");
    assert_eq!(t.store.get(&ended).await.unwrap().event_seq, record.seq);

    // The batched job's receiver fails: due again in 10 s, at attempt 2.
    let failing = taken.iter().find(|d| d.event.job_id == batched).unwrap();
    let retry_at = t.clock.now().plus(Duration::from_secs(10));
    t.store
        .record_webhook_attempt(
            "s1",
            failing,
            attempt(DeliveryState::Retrying, Some(retry_at)),
        )
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(9));
    assert!(t
        .store
        .take_webhook_deliveries(take("s2"))
        .await
        .unwrap()
        .is_empty());
    t.clock.advance(Duration::from_secs(1));
    let again = t.store.take_webhook_deliveries(take("s2")).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].delivery_id, again[0].attempt),
        (failing.delivery_id, 2)
    );

    // s1 never recorded the rest: once its lease ends, s2 takes them, and
    // s1's late records are refused.
    t.clock.advance(Duration::from_secs(21));
    let orphaned = t.store.take_webhook_deliveries(take("s2")).await.unwrap();
    assert_eq!(
        orphaned.len(),
        3,
        "the status webhook's three, held by s1 until now"
    );
    assert!(orphaned
        .iter()
        .all(|d| d.attempt == 2 && d.event.job_id == followed));
    let late = taken.iter().find(|d| d.event.job_id == followed).unwrap();
    assert!(matches!(
        t.store
            .record_webhook_attempt("s1", late, delivered.clone())
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    for d in &orphaned {
        t.store
            .record_webhook_attempt("s2", d, attempt(DeliveryState::Failed, None))
            .await
            .unwrap();
    }
    t.clock.advance(Duration::from_secs(3600));
    let left = t.store.take_webhook_deliveries(take("s3")).await.unwrap();
    assert_eq!(left.len(), 1, "only the retrying one: {left:?}");
    let records = t
        .store
        .events(&followed, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Webhook)
        .count();
    assert_eq!(records, 3);
    // Records are never delivered themselves, and nothing new is queued.
    assert_eq!(t.store.queue_webhook_deliveries().await.unwrap(), 0);
}

/// A delivery goes when its job is pruned.
pub async fn a_pruned_jobs_deliveries_go_with_it(t: TestStore) {
    t.store
        .submit(new_job("a").webhook(hook(WebhookOn::End)))
        .await
        .unwrap();
    let job = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    assert_eq!(t.store.queue_webhook_deliveries().await.unwrap(), 1);
    let taken = t.store.take_webhook_deliveries(take("s")).await.unwrap();
    t.clock.advance(Duration::from_secs(60));
    assert_eq!(t.store.prune(t.clock.now()).await.unwrap(), 1);
    // The delivery is gone: its sender holds nothing to record.
    let late = t
        .store
        .record_webhook_attempt("s", &taken[0], attempt(DeliveryState::Delivered, None))
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    assert!(t
        .store
        .take_webhook_deliveries(take("s"))
        .await
        .unwrap()
        .is_empty());
}
