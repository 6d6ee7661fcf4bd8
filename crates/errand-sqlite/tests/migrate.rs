//! A database written by the previous release (schema 8, before webhooks)
//! is migrated on open, and the jobs it held run to their end.

use std::sync::Arc;

use errand_core::ManualClock;
use errand_sqlite::{SqliteOptions, SqliteStore};
use errand_store::contract::{finish_the_jobs_held, leave_jobs_of_every_state};

fn open(path: &std::path::Path, clock: &Arc<ManualClock>) -> SqliteStore {
    let options = SqliteOptions {
        clock: clock.clone(),
        ..SqliteOptions::default()
    };
    SqliteStore::open(path, options).expect("store opens")
}

/// What the previous release (schema 8) left in its file: the job rows
/// without their webhook column, and no delivery table. A release that changes
/// the job rows must build its predecessor's file here from that
/// release's schema.
fn back_to_the_previous_release(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "DROP TABLE webhook_deliveries; ALTER TABLE jobs DROP COLUMN webhook; \
         DELETE FROM meta WHERE key = 'webhook_cursor'; PRAGMA user_version = 8;",
    )
    .unwrap();
}

/// A database of the previous release is migrated on open, and its jobs
/// all finish, found by their context's values as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_s_database_migrates_and_its_jobs_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let clock = Arc::new(ManualClock::starting_now());
    let held = leave_jobs_of_every_state(&open(&path, &clock), &clock).await;
    back_to_the_previous_release(&path);
    finish_the_jobs_held(&open(&path, &clock), &clock, held).await;
}
