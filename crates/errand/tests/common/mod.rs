//! Helpers shared by the PostgreSQL test files.

#![allow(dead_code)]

use std::io::Write;

use errand_postgres::{PgConfig, PgOptions, PgStore};
use tokio_postgres::NoTls;

pub struct Database {
    pub url: String,
    admin_url: String,
    pub name: String,
}

impl Database {
    pub async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var("ERRAND_TEST_PG_URL") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL end-to-end tests (ERRAND_TEST_PG_URL is not set)"
            );
            return None;
        };
        let name = format!("errand_e2e_{}", uuid_like());
        let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("ERRAND_TEST_PG_URL={admin_url} is set but unreachable: {e}")
            });
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = admin_url.clone();
        let cut = url.rfind('/').expect("a URL with a database");
        url.truncate(cut + 1);
        url.push_str(&name);
        Some(Self {
            url,
            admin_url,
            name,
        })
    }

    pub async fn store_with(&self, options: PgOptions) -> PgStore {
        let mut config: PgConfig = self.admin_url.parse().unwrap();
        config.dbname(&self.name);
        PgStore::connect_with(config, options).await.unwrap()
    }

    pub async fn store(&self) -> PgStore {
        let mut config: PgConfig = self.admin_url.parse().unwrap();
        config.dbname(&self.name);
        PgStore::connect_with(config, PgOptions::default())
            .await
            .unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
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

fn uuid_like() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        errand::JobId::generate().as_str()
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
