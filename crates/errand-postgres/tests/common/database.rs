//! A fresh PostgreSQL database per test, dropped afterwards; shared by
//! errand-postgres's tests and errand's end-to-end tests (included there
//! by path). `ERRAND_TEST_PG_URL` selects the server: unset, the tests are
//! skipped with a message; set but unreachable, they fail.

use std::io::Write;

use errand_postgres::PgConfig;
use tokio_postgres::NoTls;

/// Drops the test database when the test ends.
pub struct TestDatabase {
    pub admin_url: String,
    pub name: String,
    /// The test database's own URL, for processes started by a test.
    pub url: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any async context: use a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh database on the `ERRAND_TEST_PG_URL` server: its connection
/// settings, and the guard that drops it.
pub async fn fresh_database() -> Option<(PgConfig, TestDatabase)> {
    let Ok(admin_url) = std::env::var("ERRAND_TEST_PG_URL") else {
        static SAID: std::sync::Once = std::sync::Once::new();
        // Straight to stderr, past the test harness's capture, so the skip shows.
        SAID.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the PostgreSQL tests; set ERRAND_TEST_PG_URL \
                 (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run them"
            );
        });
        return None;
    };
    let (admin, connection) = tokio_postgres::connect(&admin_url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("ERRAND_TEST_PG_URL={admin_url} is set but unreachable: {e}"));
    tokio::spawn(connection);
    let name = format!(
        "errand_test_{}_{}",
        std::process::id(),
        errand_core::JobId::generate().as_str()
    );
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("can create a test database");
    let mut config: PgConfig = admin_url.parse().expect("a valid ERRAND_TEST_PG_URL");
    config.dbname(&name);
    let mut url = admin_url.clone();
    url.truncate(url.rfind('/').expect("a URL with a database") + 1);
    url.push_str(&name);
    Some((
        config,
        TestDatabase {
            admin_url,
            name,
            url,
        },
    ))
}
