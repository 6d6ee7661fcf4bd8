//! A database written by the previous release (schema 6, before the status
//! counts) is migrated on open, and the jobs it held run to their end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use errand_core::{Clock, ManualClock};
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

fn fence(job: &errand_core::Job) -> Fence {
    Fence {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        worker_id: "w".into(),
    }
}

/// What the previous release (schema 6) left in its file: the same job
/// rows, without the counts table. A release that changes the job rows
/// must build its predecessor's file here from that release's schema.
fn back_to_the_previous_release(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("DROP TABLE job_counts; PRAGMA user_version = 6;")
        .unwrap();
}

/// A database of the previous release is migrated on open, the counts
/// start from the jobs it holds, and those jobs all finish: one queued,
/// one running with a live lease (its worker records the outcome after
/// the upgrade), one failed and waiting for its retry, one completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_s_database_migrates_and_its_jobs_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let clock = Arc::new(ManualClock::starting_now());
    let (running, waiting) = {
        let store = open(&path, &clock);
        for command in ["a", "a", "a", "b", "b"] {
            store
                .submit(NewJob::new("t", command, json!({})))
                .await
                .unwrap();
        }
        let first = store.claim(claim(3)).await.unwrap();
        let done = Outcome::Completed { result: json!(1) };
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
                (fence(&first[0]), done),
                (fence(&first[2]), retry_later),
            ])
            .await
            .unwrap();
        assert_eq!(answers, vec![Ok(()), Ok(())]);
        (first[1].clone(), first[2].clone())
    };
    back_to_the_previous_release(&path);

    let store = open(&path, &clock);
    // Queued: the retry and two b; running: one a; completed: one a.
    assert_eq!(
        counts(&store).await,
        expect(&[("t.a", [1, 1, 1, 0, 0]), ("t.b", [2, 0, 0, 0, 0])])
    );
    // The running job's worker outlived the upgrade: its lease holds.
    store
        .finish(vec![(
            fence(&running),
            Outcome::Completed { result: json!(2) },
        )])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    // The queued jobs now; the retry once it is due.
    let queued = store.claim(claim(10)).await.unwrap();
    assert_eq!(queued.len(), 2, "the retry waits for its time");
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
    assert_eq!(
        counts(&store).await,
        expect(&[("t.a", [0, 0, 3, 0, 0]), ("t.b", [0, 0, 2, 0, 0])])
    );
    for s in store.stats().await.unwrap() {
        assert_eq!(s.counts.values().sum::<u64>(), s.counts["completed"]);
    }
}
