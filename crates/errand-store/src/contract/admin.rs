//! Retention and the registry of workers and commands.

use std::time::Duration;

use errand_core::{JobId, JobStatus, RetryPolicy};
use serde_json::json;

use super::*;
use crate::{
    CommandDefaults, CommandInfo, HeartbeatParams, ListParams, Outcome, StoreError,
    WorkerRegistration,
};

pub async fn prune_removes_old_finished_jobs_and_their_events(t: TestStore) {
    let old_done = t.store.submit(new_job("a")).await.unwrap().job_id;
    let old_canceled = t.store.submit(new_job("b")).await.unwrap().job_id;
    let still_new = t.store.submit(new_job("c")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    assert_eq!(job.job_id, old_done);
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    t.store.cancel(&old_canceled).await.unwrap();
    t.clock.advance(Duration::from_secs(3600));
    let recent = t.store.submit(new_job("d")).await.unwrap().job_id;
    t.store.cancel(&recent).await.unwrap();
    let feed_before = t.store.feed(0, 1000).await.unwrap();

    let pruned = t
        .store
        .prune(t.clock.now().minus(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(pruned, 2);
    for gone in [&old_done, &old_canceled] {
        assert_eq!(
            t.store.get(gone).await,
            Err(StoreError::NotFound(gone.clone()))
        );
    }
    assert_eq!(
        t.store.get(&still_new).await.unwrap().status,
        JobStatus::New
    );
    assert_eq!(
        t.store.get(&recent).await.unwrap().status,
        JobStatus::Canceled
    );
    let feed_after = t.store.feed(0, 1000).await.unwrap();
    assert!(feed_after
        .iter()
        .all(|e| e.job_id == still_new || e.job_id == recent));
    assert!(feed_after.len() < feed_before.len());
    let listed = t.store.list(ListParams::default()).await.unwrap();
    assert_eq!(listed.jobs.len(), 2);
    // Pruning the job with the newest event must not let its id be reused:
    // a client resuming after that id would skip the next event.
    let max_before = feed_before.iter().map(|e| e.id).max().unwrap();
    t.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        t.store
            .prune(t.clock.now().minus(Duration::from_secs(60)))
            .await
            .unwrap(),
        1
    );
    let later = t.store.submit(new_job("e")).await.unwrap().job_id;
    let later_events = t.store.events(&later, 0, 10).await.unwrap();
    assert!(later_events[0].id > max_before);
}

fn command(name: &str) -> CommandInfo {
    CommandInfo {
        app: "test".into(),
        name: name.into(),
        description: Some(format!("the {name} command")),
        input_schema: json!({"type": "object", "required": ["n"]}),
        output_schema: Some(json!({"type": "object"})),
        defaults: CommandDefaults {
            timeout_secs: Some(60.0),
            retry: RetryPolicy::default(),
            queue: "default".into(),
            priority: 0,
            max_concurrency: Some(1),
        },
        worker_id: None,
        updated: errand_core::Timestamp::default(),
    }
}

pub async fn workers_and_their_commands_are_published(t: TestStore) {
    t.store
        .register_worker(WorkerRegistration {
            worker_id: "w1".into(),
            host: "host-a".into(),
            pid: 42,
            queues: vec!["default".into()],
            slots: 5,
            commands: vec![command("a"), command("b")],
        })
        .await
        .unwrap();
    t.store.submit(new_job("a")).await.unwrap();
    let job = claim_one(&t, "w1").await;
    let workers = t.store.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    let w = &workers[0];
    assert_eq!(
        (w.worker_id.as_str(), w.host.as_str(), w.pid, w.slots),
        ("w1", "host-a", 42, 5)
    );
    assert_eq!(w.commands, vec!["test.a".to_owned(), "test.b".to_owned()]);
    assert_eq!(w.running, vec![job.job_id.clone()]);
    assert_eq!(w.last_heartbeat, t.clock.now());

    let commands = t.store.commands().await.unwrap();
    assert_eq!(commands.len(), 2);
    assert_eq!(commands[0].name, "a");
    assert_eq!(
        commands[0].input_schema,
        json!({"type": "object", "required": ["n"]})
    );
    assert_eq!(commands[0].defaults.max_concurrency, Some(1));
    assert_eq!(commands[0].worker_id.as_deref(), Some("w1"));

    // A heartbeat keeps the worker listed; silence past the TTL drops it.
    t.clock.advance(Duration::from_secs(50));
    t.store
        .heartbeat(HeartbeatParams {
            worker_id: "w1".into(),
            running: vec![fence(&job, "w1")],
            lease: LEASE,
        })
        .await
        .unwrap();
    t.clock.advance(Duration::from_secs(50));
    assert_eq!(t.store.workers().await.unwrap().len(), 1);
    t.clock.advance(Duration::from_secs(20));
    assert!(t.store.workers().await.unwrap().is_empty());
    // Once dropped, its heartbeat tells it to register again.
    t.store.reap_expired().await.unwrap();
    let reply = t
        .store
        .heartbeat(HeartbeatParams {
            worker_id: "w1".into(),
            running: vec![],
            lease: LEASE,
        })
        .await
        .unwrap();
    assert!(reply.unknown_worker);
    // Commands stay published for API servers after the worker left.
    t.store.deregister_worker("w1").await.unwrap();
    assert_eq!(t.store.commands().await.unwrap().len(), 2);
}

/// Retention prunes by status: only the statuses asked for, and never a
/// job that has not ended.
pub async fn prune_by_status_keeps_the_other_statuses(t: TestStore) {
    let done = t.store.submit(new_job("a")).await.unwrap().job_id;
    let job = claim_one(&t, "w").await;
    t.store
        .finish(vec![(
            fence(&job, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    let canceled = t.store.submit(new_job("b")).await.unwrap().job_id;
    t.store.cancel(&canceled).await.unwrap();
    t.clock.advance(Duration::from_secs(3600));
    let cutoff = t.clock.now();
    let pruned = t
        .store
        .prune_statuses(&[JobStatus::Canceled], cutoff)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(
        t.store.get(&canceled).await,
        Err(StoreError::NotFound(canceled.clone()))
    );
    assert_eq!(
        t.store.get(&done).await.unwrap().status,
        JobStatus::Completed
    );
    assert!(matches!(
        t.store.prune_statuses(&[JobStatus::Running], cutoff).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Deleting by id removes the ended jobs named, with their events, and
/// leaves the jobs still waiting or running, and unknown ids, alone; an
/// event id is never used again afterwards.
pub async fn delete_removes_the_ended_jobs_named_and_nothing_else(t: TestStore) {
    let done = t.store.submit(new_job("a")).await.unwrap().job_id;
    let running = t.store.submit(new_job("b")).await.unwrap().job_id;
    let waiting = t.store.submit(new_job("c")).await.unwrap().job_id;
    let canceled = t
        .store
        .submit(new_job("d").tags(["bulk"]))
        .await
        .unwrap()
        .job_id;
    let untouched = t.store.submit(new_job("e")).await.unwrap().job_id;
    t.store.cancel(&untouched).await.unwrap();
    let first = claim_one(&t, "w").await;
    assert_eq!(first.job_id, done);
    t.store
        .finish(vec![(
            fence(&first, "w"),
            Outcome::Completed { result: json!(1) },
        )])
        .await
        .unwrap();
    assert_eq!(claim_one(&t, "w").await.job_id, running);
    t.store.cancel(&canceled).await.unwrap();
    let newest_event = t.store.feed_head().await.unwrap();

    let named = [
        done.clone(),
        running.clone(),
        waiting.clone(),
        canceled.clone(),
        JobId::from("no-such-job".to_owned()),
    ];
    assert_eq!(t.store.delete_jobs(&named).await.unwrap(), 2);
    for gone in [&done, &canceled] {
        assert_eq!(
            t.store.get(gone).await,
            Err(StoreError::NotFound(gone.clone()))
        );
    }
    let feed = t.store.feed(0, 1000).await.unwrap();
    assert!(
        feed.iter()
            .all(|e| e.job_id != done && e.job_id != canceled),
        "their events went with them"
    );
    for kept in [&running, &waiting, &untouched] {
        t.store.get(kept).await.unwrap();
    }
    let tagged = t
        .store
        .list(ListParams {
            tags: vec!["bulk".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(tagged.jobs.is_empty(), "its labels went with it");
    assert_eq!(t.store.delete_jobs(&[]).await.unwrap(), 0);
    let later = t.store.submit(new_job("f")).await.unwrap().job_id;
    assert!(t.store.events(&later, 0, 10).await.unwrap()[0].id > newest_event);
}
