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

/// A database of the previous release (schema 9: the job rows without
/// their webhook column, no delivery tables) is migrated on connect, and
/// the jobs it held all finish, found by their context's values as before.
/// A release that changes the job rows must build its predecessor's
/// database here from that release's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_s_database_migrates_and_its_jobs_finish() {
    use errand_store::contract::{finish_the_jobs_held, leave_jobs_of_every_state};

    let Some((config, guard)) = common::fresh_database().await else {
        return;
    };
    let clock = std::sync::Arc::new(errand_core::ManualClock::starting_now());
    let held = leave_jobs_of_every_state(&connect(&config, &clock).await, &clock).await;
    let (client, connection) = tokio_postgres::connect(&guard.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP TABLE errand_webhook_deliveries, errand_webhook_cursor; \
             ALTER TABLE errand_jobs DROP COLUMN webhook; UPDATE errand_schema SET version = {}",
            SCHEMA_VERSION - 1
        ))
        .await
        .unwrap();
    finish_the_jobs_held(&connect(&config, &clock).await, &clock, held).await;
}
