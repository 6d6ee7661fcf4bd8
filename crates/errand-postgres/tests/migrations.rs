//! A database made by an older errand is brought up to this one's schema
//! on connect, and what it held keeps working.

use errand_postgres::SCHEMA_VERSION;
use errand_store::{NewJob, Store};
use serde_json::json;
use tokio_postgres::NoTls;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_keeps_its_idempotency_keys_after_migrating() {
    let Some((config, guard)) = common::fresh_database().await else {
        return;
    };
    let (client, connection) = tokio_postgres::connect(&guard.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    // The database as errand at schema version 1 left it, with a keyed job.
    client
        .batch_execute(concat!(
            "CREATE TABLE errand_schema (version integer NOT NULL); \
             INSERT INTO errand_schema (version) VALUES (1);",
            include_str!("../src/migrations/0001_jobs.sql"),
            "INSERT INTO errand_jobs (id, app, command, input, status, max_attempts, retry, \
             queue, run_at, idempotency_key, created, updated, event_seq) \
             VALUES ('old-job', 'a', 'b', '{}', 'new', 3, '{}', 'default', now(), 'key-1', \
             now(), now(), 1);"
        ))
        .await
        .unwrap();

    let store = common::system_clock_store(config).await;
    let version: i32 = client
        .query_one("SELECT version FROM errand_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version as usize, SCHEMA_VERSION);

    // The key still finds the job it was given to.
    let again = store
        .submit(NewJob::new("a", "b", json!({})).idempotency_key("key-1"))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.job_id.as_str(), "old-job");
    // Jobs without a key are not in the index at all, and are unaffected.
    for _ in 0..2 {
        assert!(
            store
                .submit(NewJob::new("a", "b", json!({})))
                .await
                .unwrap()
                .created
        );
    }
    let new_key = store
        .submit(NewJob::new("a", "b", json!({})).idempotency_key("key-2"))
        .await
        .unwrap();
    assert!(new_key.created);
    let index: String = client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'errand_jobs_idempotency_key'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        index.contains("UNIQUE") && index.contains("IS NOT NULL"),
        "{index}"
    );
    let keyed: i64 = client
        .query_one(
            "SELECT count(*) FROM errand_jobs WHERE idempotency_key IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keyed, 2);
}

fn fence(job: &errand_core::Job) -> errand_store::Fence {
    errand_store::Fence {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        worker_id: "w".into(),
    }
}

fn claim(limit: usize) -> errand_store::ClaimParams {
    errand_store::ClaimParams {
        worker_id: "w".into(),
        queues: vec![errand_store::DEFAULT_QUEUE.into()],
        commands: None,
        limit,
        lease: std::time::Duration::from_secs(30),
    }
}

async fn connect(
    config: &errand_postgres::PgConfig,
    clock: &std::sync::Arc<errand_core::ManualClock>,
) -> errand_postgres::PgStore {
    let options = errand_postgres::PgOptions {
        clock: clock.clone(),
        pool_size: 4,
        ..errand_postgres::PgOptions::default()
    };
    errand_postgres::PgStore::connect_with(config.clone(), options)
        .await
        .expect("the store connects")
}

/// A database of the previous release (schema 7: the same job rows, no
/// counts table) is migrated on connect, and the jobs it held all finish:
/// one queued, one running with a live lease (its worker records the
/// outcome after the upgrade), one failed and waiting for its retry. A
/// release that changes the job rows must build its predecessor's
/// database here from that release's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_s_database_migrates_and_its_jobs_finish() {
    use errand_core::{Clock, JobStatus};
    use errand_store::Outcome;
    use std::time::Duration;

    let Some((config, guard)) = common::fresh_database().await else {
        return;
    };
    let clock = std::sync::Arc::new(errand_core::ManualClock::starting_now());
    let (running, waiting, ids) = {
        let store = connect(&config, &clock).await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(
                store
                    .submit(NewJob::new("t", "a", json!({})))
                    .await
                    .unwrap()
                    .job_id,
            );
        }
        let first = store.claim(claim(3)).await.unwrap();
        let retry_later = Outcome::Failed {
            error: errand_core::JobError {
                kind: errand_core::error_kind::HANDLER.into(),
                message: "try again".into(),
                retryable: true,
                attempt: 1,
            },
            retry_at: Some(clock.now().plus(Duration::from_secs(60))),
        };
        let answers = store
            .finish(vec![
                (fence(&first[0]), Outcome::Completed { result: json!(1) }),
                (fence(&first[2]), retry_later),
            ])
            .await
            .unwrap();
        assert_eq!(answers, vec![Ok(()), Ok(())]);
        (first[1].clone(), first[2].clone(), ids)
    };
    let (client, connection) = tokio_postgres::connect(&guard.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP TABLE errand_job_counts; UPDATE errand_schema SET version = {}",
            SCHEMA_VERSION - 1
        ))
        .await
        .unwrap();

    let store = connect(&config, &clock).await;
    let counts = |stats: Vec<errand_store::CommandStats>| {
        stats
            .into_iter()
            .find(|s| s.command == "a")
            .expect("t.a is counted")
            .counts
    };
    let before = counts(store.stats().await.unwrap());
    assert_eq!(
        (before["new"], before["running"], before["completed"]),
        (2, 1, 1)
    );
    store
        .finish(vec![(
            fence(&running),
            Outcome::Completed { result: json!(2) },
        )])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let queued = store.claim(claim(10)).await.unwrap();
    assert_eq!(queued.len(), 1, "the retry waits for its time");
    clock.advance(Duration::from_secs(61));
    let retried = store.claim(claim(10)).await.unwrap();
    assert_eq!(
        (retried.len(), &retried[0].job_id, retried[0].attempt),
        (1, &waiting.job_id, 2)
    );
    let outcomes = queued
        .iter()
        .chain(&retried)
        .map(|job| (fence(job), Outcome::Completed { result: json!(3) }))
        .collect();
    store.finish(outcomes).await.unwrap();
    for id in &ids {
        assert_eq!(store.get(id).await.unwrap().status, JobStatus::Completed);
    }
    let after = counts(store.stats().await.unwrap());
    assert_eq!(
        (after["new"], after["running"], after["completed"]),
        (0, 0, 4)
    );
}
