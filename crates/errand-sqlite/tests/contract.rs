//! The store contract suite, run against the SQLite store.

use std::sync::Arc;

use errand_core::ManualClock;
use errand_sqlite::{SqliteOptions, SqliteStore};
use errand_store::contract::TestStore;

async fn sqlite_store(clock: Arc<ManualClock>) -> Option<TestStore> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = SqliteOptions {
        clock: clock.clone(),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("errand.db"), options).expect("store opens");
    Some(TestStore::new(Arc::new(store), clock, dir))
}

errand_store::store_contract_tests!(sqlite_store);
