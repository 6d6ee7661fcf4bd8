//! Where `errand bench` runs: a fresh SQLite file or a fresh PostgreSQL
//! database per run, and the plain-insert baseline on the same kind of store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use errand::url::StoreUrl;
use errand::{Store, SystemClock};
use errand_sqlite::Synchronous;
use serde_json::json;

pub(crate) enum Target {
    Sqlite {
        base: PathBuf,
        synchronous: Synchronous,
    },
    Postgres {
        admin_url: String,
    },
}

/// A store made for one run, removed afterwards.
pub(crate) enum Fresh {
    File(PathBuf),
    Database { admin_url: String, name: String },
}

impl Target {
    pub(crate) fn from_arg(store: Option<&str>, scratch: &Path) -> anyhow::Result<Self> {
        Ok(match store.map(StoreUrl::parse).transpose()? {
            None => Target::Sqlite {
                base: scratch.join("bench.db"),
                synchronous: Synchronous::Normal,
            },
            Some(StoreUrl::Sqlite { path, synchronous }) => Target::Sqlite {
                base: path,
                synchronous,
            },
            Some(StoreUrl::Postgres { url }) => Target::Postgres { admin_url: url },
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Target::Sqlite { .. } => "sqlite",
            Target::Postgres { .. } => "postgres",
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Sqlite { synchronous, .. } => {
                format!("sqlite (WAL, synchronous={synchronous:?})")
            }
            Target::Postgres { .. } => {
                "postgres (a fresh database per run, server defaults)".into()
            }
        }
    }

    fn fresh_name(label: &str) -> String {
        format!(
            "errand_bench_{}_{}_{}",
            label.replace('-', "_"),
            std::process::id(),
            rand_suffix()
        )
    }

    pub(crate) async fn fresh(&self, label: &str) -> anyhow::Result<(Arc<dyn Store>, Fresh)> {
        match self {
            Target::Sqlite { base, synchronous } => {
                let path = base.with_file_name(format!("{}.db", Self::fresh_name(label)));
                let store = StoreUrl::Sqlite {
                    path: path.clone(),
                    synchronous: *synchronous,
                }
                .open(Arc::new(SystemClock))
                .await?;
                Ok((store, Fresh::File(path)))
            }
            Target::Postgres { admin_url } => {
                let name = Self::fresh_name(label);
                admin(admin_url, &format!("CREATE DATABASE {name}")).await?;
                let mut config: errand_postgres::PgConfig = admin_url.parse()?;
                config.dbname(&name);
                let options = errand_postgres::PgOptions {
                    pool_size: 32,
                    ..Default::default()
                };
                let store = errand_postgres::PgStore::connect_with(config, options).await?;
                Ok((
                    Arc::new(store),
                    Fresh::Database {
                        admin_url: admin_url.clone(),
                        name,
                    },
                ))
            }
        }
    }

    /// Plain inserts of a job-sized row, 1,000 per transaction: the
    /// machine's and store's yardstick, measured in the same run.
    pub(crate) async fn baseline(&self, rows: usize) -> anyhow::Result<f64> {
        let payload = json!({"i": 12345, "app": "bench", "command": "noop"});
        match self {
            Target::Sqlite { base, synchronous } => {
                let path = base.with_file_name(format!("{}.db", Self::fresh_name("baseline")));
                let rate = sqlite_baseline(&path, rows, *synchronous, &payload.to_string());
                Fresh::File(path).remove().await;
                rate
            }
            Target::Postgres { admin_url } => {
                let name = Self::fresh_name("baseline");
                admin(admin_url, &format!("CREATE DATABASE {name}")).await?;
                let mut config: tokio_postgres::Config = admin_url.parse()?;
                config.dbname(&name);
                let rate = postgres_baseline(&config, rows, &payload).await;
                Fresh::Database {
                    admin_url: admin_url.clone(),
                    name,
                }
                .remove()
                .await;
                rate
            }
        }
    }
}

impl Fresh {
    /// Brings a store just filled by a bench to the state a store of that
    /// size has in service. PostgreSQL: VACUUM, which autovacuum runs many
    /// times over the hours a real store takes to grow that large; right
    /// after a minute of mass writes, every index still holds an entry
    /// for each old row version (a million claimed jobs leave a million
    /// dead entries in the ready index), and reads measure that backlog
    /// instead of the table. SQLite updates its indexes in place.
    pub(crate) async fn settle(&self) -> anyhow::Result<()> {
        match self {
            Fresh::File(_) => Ok(()),
            Fresh::Database { admin_url, name } => {
                let mut config: tokio_postgres::Config = admin_url.parse()?;
                config.dbname(name);
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                let driver = tokio::spawn(connection);
                client.batch_execute("VACUUM (ANALYZE)").await?;
                drop(client);
                let _ = driver.await;
                Ok(())
            }
        }
    }

    pub(crate) async fn remove(self) {
        match self {
            Fresh::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Fresh::Database { admin_url, name } => {
                if let Err(err) = admin(
                    &admin_url,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                )
                .await
                {
                    eprintln!("could not drop {name}: {err}");
                }
            }
        }
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn admin(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url}"))?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .with_context(|| sql.to_owned())?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

fn sqlite_baseline(
    path: &Path,
    rows: usize,
    sync: Synchronous,
    payload: &str,
) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(path)?;
    let sync = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
         CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload TEXT NOT NULL);"
    ))?;
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO t (name, payload) VALUES (?, ?)")?;
            for i in done..(done + 1000).min(rows) {
                insert.execute(rusqlite::params![format!("job-{i}"), payload])?;
            }
        }
        tx.commit()?;
        done = (done + 1000).min(rows);
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

async fn postgres_baseline(
    config: &tokio_postgres::Config,
    rows: usize,
    payload: &serde_json::Value,
) -> anyhow::Result<f64> {
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE t (id bigserial PRIMARY KEY, name text NOT NULL, payload jsonb NOT NULL)",
        )
        .await?;
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let tx = client.transaction().await?;
        let insert = tx
            .prepare("INSERT INTO t (name, payload) VALUES ($1, $2)")
            .await?;
        for i in done..(done + 1000).min(rows) {
            tx.execute(&insert, &[&format!("job-{i}"), payload]).await?;
        }
        tx.commit().await?;
        done = (done + 1000).min(rows);
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    drop(client);
    let _ = driver.await;
    Ok(rate)
}
