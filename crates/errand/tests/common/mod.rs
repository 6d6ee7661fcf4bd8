//! Helpers shared by the test files: PostgreSQL databases, free ports, a
//! running `errand serve`.

#![allow(dead_code)]

pub mod inproc;
pub mod serve;

use errand_postgres::{PgConfig, PgOptions, PgStore};

#[path = "../../../errand-postgres/tests/common/database.rs"]
mod database;

/// A fresh database for one test (dropped after it), and stores on it.
pub struct Database {
    /// Its URL, for the processes a test starts.
    pub url: String,
    pub name: String,
    config: PgConfig,
    _guard: database::TestDatabase,
}

impl Database {
    pub async fn create() -> Option<Self> {
        let (config, guard) = database::fresh_database().await?;
        Some(Self {
            url: guard.url.clone(),
            name: guard.name.clone(),
            config,
            _guard: guard,
        })
    }

    pub async fn store_with(&self, options: PgOptions) -> PgStore {
        PgStore::connect_with(self.config.clone(), options)
            .await
            .unwrap()
    }

    pub async fn store(&self) -> PgStore {
        self.store_with(PgOptions::default()).await
    }
}

/// Child processes a test started, killed (and reaped) when it ends,
/// however it ends.
pub struct Processes(pub Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
