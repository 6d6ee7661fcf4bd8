//! The global feed on PostgreSQL returns events in id order only once they
//! are settled: a transaction that took a lower event id and commits late
//! holds the feed back, instead of being skipped by readers that already
//! moved past its id.

use std::sync::Arc;
use std::time::Duration;

use errand_core::SystemClock;
use errand_postgres::{PgOptions, PgStore};
use errand_store::{NewJob, Store};
use serde_json::json;
use tokio_postgres::NoTls;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_with_a_lower_id_holds_the_feed_back_until_it_commits() {
    let Some((config, _guard)) = common::fresh_database().await else {
        return;
    };
    let options = PgOptions {
        clock: Arc::new(SystemClock),
        ..PgOptions::default()
    };
    let store = Arc::new(
        PgStore::connect_with(config.clone(), options)
            .await
            .unwrap(),
    );
    let first = store
        .submit(NewJob::new("a", "b", json!({})))
        .await
        .unwrap()
        .job_id;
    let head = store.feed_head().await.unwrap();

    // A slow writer, as errand writes: the job row first, then its event,
    // which takes the next event id. It has not committed yet.
    let (mut slow, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    let slow_tx = slow.transaction().await.unwrap();
    let slow_id: i64 = slow_tx
        .query_one(
            "WITH u AS (UPDATE errand_jobs SET event_seq = event_seq + 1 WHERE id = $1 \
             RETURNING seq, event_seq, status) \
             INSERT INTO errand_events (job_seq, seq, kind, status, data, at) \
             SELECT seq, event_seq, 'log', status, '{\"line\": \"slow\"}', now() FROM u RETURNING id",
            &[&first.as_str()],
        )
        .await
        .unwrap()
        .get(0);

    // A fast writer takes a higher id and commits first.
    let second = store
        .submit(NewJob::new("a", "b", json!({})))
        .await
        .unwrap()
        .job_id;

    let reader = {
        let store = store.clone();
        tokio::spawn(async move { store.feed(head, 100).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "the feed answered while a lower id could still commit"
    );
    slow_tx.commit().await.unwrap();
    let events = reader.await.unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        ids.first(),
        Some(&slow_id),
        "the late commit comes first: {events:?}"
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(events.last().unwrap().job_id, second);
    assert_eq!(store.feed_head().await.unwrap(), *ids.last().unwrap());
}
