//! A database written before the status counts existed (schema 6) is
//! migrated on open: the counts start from the jobs it holds, and stay
//! right as those jobs run on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use errand_core::ManualClock;
use errand_sqlite::{SqliteOptions, SqliteStore};
use errand_store::{ClaimParams, Fence, NewJob, Outcome, Store, DEFAULT_QUEUE};
use serde_json::json;

fn open(path: &std::path::Path, clock: &Arc<ManualClock>) -> SqliteStore {
    let options = SqliteOptions {
        clock: clock.clone(),
        ..SqliteOptions::default()
    };
    SqliteStore::open(path, options).expect("store opens")
}

async fn counts(store: &SqliteStore) -> BTreeMap<String, BTreeMap<String, u64>> {
    store
        .stats()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (format!("{}.{}", s.app, s.command), s.counts))
        .collect()
}

fn expect(pairs: &[(&str, [u64; 5])]) -> BTreeMap<String, BTreeMap<String, u64>> {
    pairs
        .iter()
        .map(|(command, n)| {
            let by_status = ["new", "running", "completed", "failed", "canceled"]
                .iter()
                .zip(n)
                .map(|(s, n)| (s.to_string(), *n))
                .collect();
            (command.to_string(), by_status)
        })
        .collect()
}

fn claim(limit: usize) -> ClaimParams {
    ClaimParams {
        worker_id: "w".into(),
        queues: vec![DEFAULT_QUEUE.into()],
        commands: None,
        limit,
        lease: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_6_database_gets_counts_of_the_jobs_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let clock = Arc::new(ManualClock::starting_now());
    {
        let store = open(&path, &clock);
        for command in ["a", "a", "a", "b", "b"] {
            store
                .submit(NewJob::new("t", command, json!({})))
                .await
                .unwrap();
        }
        let first = store.claim(claim(2)).await.unwrap();
        let fence = |job: &errand_core::Job| Fence {
            job_id: job.job_id.clone(),
            attempt: job.attempt,
            worker_id: "w".into(),
        };
        let done = Outcome::Completed { result: json!(1) };
        store.finish(vec![(fence(&first[0]), done)]).await.unwrap();
    }
    // Back to the schema before the counts: the table gone, version 6.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE job_counts; PRAGMA user_version = 6;")
        .unwrap();
    drop(conn);

    let store = open(&path, &clock);
    assert_eq!(
        counts(&store).await,
        expect(&[("t.a", [1, 1, 1, 0, 0]), ("t.b", [2, 0, 0, 0, 0])])
    );
    // The jobs it held run on, and the counts follow.
    let rest = store.claim(claim(10)).await.unwrap();
    assert_eq!(rest.len(), 3);
    let outcomes = rest
        .iter()
        .map(|job| {
            let fence = Fence {
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                worker_id: "w".into(),
            };
            (fence, Outcome::Completed { result: json!(2) })
        })
        .collect();
    store.finish(outcomes).await.unwrap();
    assert_eq!(
        counts(&store).await,
        expect(&[("t.a", [0, 1, 2, 0, 0]), ("t.b", [0, 0, 2, 0, 0])])
    );
}
