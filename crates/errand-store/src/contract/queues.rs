//! Queues paused and resumed for every worker.

use errand_core::JobStatus;
use serde_json::json;

use super::*;
use crate::{Outcome, QueueInfo};

fn in_queue(queue: &str) -> crate::NewJob {
    new_job("a").queue(queue)
}

fn claim_from(worker: &str, queues: &[&str]) -> crate::ClaimParams {
    let mut params = claim_params(worker, 10);
    params.queues = queues.iter().map(|q| q.to_string()).collect();
    params
}

/// A paused queue takes submits and starts none of them, while the other
/// queues go on; its running jobs finish; once resumed, its jobs start.
pub async fn a_paused_queue_takes_jobs_and_starts_none(t: TestStore) {
    t.store.submit(in_queue("media")).await.unwrap();
    let running = t.store.claim(claim_from("w", &["media"])).await.unwrap();
    assert_eq!(running.len(), 1);

    t.store.pause_queue("media").await.unwrap();
    t.store.pause_queue("media").await.unwrap();
    let waiting = t.store.submit(in_queue("media")).await.unwrap();
    assert_eq!(
        waiting.status,
        JobStatus::New,
        "a paused queue takes submits"
    );
    let other = t.store.submit(in_queue("email")).await.unwrap().job_id;
    let claimed = t
        .store
        .claim(claim_from("w", &["media", "email"]))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|j| &j.job_id).collect::<Vec<_>>(),
        vec![&other],
        "only the queue that is not paused"
    );
    let done = t
        .store
        .finish(vec![(
            fence(&running[0], "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    assert_eq!(
        done,
        vec![Ok(())],
        "a running job of a paused queue finishes"
    );

    t.store.resume_queue("media").await.unwrap();
    let claimed = t.store.claim(claim_from("w", &["media"])).await.unwrap();
    assert_eq!(claimed[0].job_id, waiting.job_id);
}

/// The queues listed: their depth, and which are paused (a paused queue
/// with no jobs too).
pub async fn queues_are_listed_with_their_depth_and_pause(t: TestStore) {
    for _ in 0..3 {
        t.store.submit(in_queue("media")).await.unwrap();
    }
    t.store.submit(in_queue("email")).await.unwrap();
    t.store
        .claim(claim_from("w", &["media"]))
        .await
        .unwrap()
        .truncate(0);
    t.store.pause_queue("idle").await.unwrap();
    let queues = t.store.queues().await.unwrap();
    let at = |name: &str| queues.iter().find(|q| q.name == name).cloned().unwrap();
    assert_eq!(
        queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
        ["email", "idle", "media"]
    );
    assert_eq!((at("media").new, at("media").running), (0, 3));
    assert_eq!((at("email").new, at("email").paused), (1, false));
    let idle: QueueInfo = at("idle");
    assert!(idle.paused && idle.paused_at.is_some() && idle.new == 0);
    t.store.resume_queue("idle").await.unwrap();
    assert!(t
        .store
        .queues()
        .await
        .unwrap()
        .iter()
        .all(|q| q.name != "idle"));
}
