#![allow(dead_code)] // each test file uses part of it
//! The PostgreSQL store under test, on a fresh database of its own.

use std::sync::Arc;

use errand_core::{ManualClock, SystemClock};
use errand_postgres::{PgConfig, PgOptions, PgStore};
use errand_store::contract::TestStore;

pub mod database;
pub use database::fresh_database;

pub async fn postgres_store(clock: Arc<ManualClock>) -> Option<TestStore> {
    let (config, guard) = fresh_database().await?;
    let options = PgOptions {
        clock: clock.clone(),
        pool_size: 4,
        ..PgOptions::default()
    };
    let store = PgStore::connect_with(config, options)
        .await
        .expect("the store connects");
    Some(TestStore::new(Arc::new(store), clock, guard))
}

/// A store on `config` that runs on real time, with default settings.
pub async fn system_clock_store(config: PgConfig) -> PgStore {
    let options = PgOptions {
        clock: Arc::new(SystemClock),
        ..PgOptions::default()
    };
    PgStore::connect_with(config, options)
        .await
        .expect("the store connects")
}
