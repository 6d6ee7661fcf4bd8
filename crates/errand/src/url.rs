//! Store URLs: which store, where, and how.

use std::path::PathBuf;
use std::sync::Arc;

use errand_core::Clock;
use errand_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use errand_store::Store;

use crate::queue::Error;

/// A parsed store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite://PATH[?synchronous=normal|full]`; a relative path is
    /// relative to the working directory (`sqlite://errand.db`), an absolute
    /// one has three slashes (`sqlite:///var/lib/errand.db`).
    Sqlite {
        path: PathBuf,
        synchronous: Synchronous,
    },
    /// `postgres://user[:password]@host[:port]/database[?options]`.
    Postgres { url: String },
}

impl StoreUrl {
    /// The schema version [`open`](Self::open) brings this store to.
    pub fn schema_version(&self) -> usize {
        match self {
            Self::Sqlite { .. } => errand_sqlite::SCHEMA_VERSION,
            Self::Postgres { .. } => errand_postgres::SCHEMA_VERSION,
        }
    }

    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadUrl(format!("{url:?}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected sqlite://PATH"))?;
        match scheme {
            "sqlite" => {
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                if path.is_empty() {
                    return Err(bad("the path is empty"));
                }
                let mut synchronous = Synchronous::Normal;
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    match pair.split_once('=') {
                        Some(("synchronous", v)) if v.eq_ignore_ascii_case("normal") => {
                            synchronous = Synchronous::Normal
                        }
                        Some(("synchronous", v)) if v.eq_ignore_ascii_case("full") => {
                            synchronous = Synchronous::Full
                        }
                        _ => {
                            return Err(bad(&format!(
                                "unknown option {pair:?} (known: synchronous=normal|full)"
                            )))
                        }
                    }
                }
                Ok(StoreUrl::Sqlite {
                    path: PathBuf::from(path),
                    synchronous,
                })
            }
            "postgres" | "postgresql" => {
                url.parse::<errand_postgres::PgConfig>()
                    .map_err(|e| bad(&format!("not a PostgreSQL URL: {e}")))?;
                Ok(StoreUrl::Postgres {
                    url: url.to_owned(),
                })
            }
            other => Err(bad(&format!(
                "unknown store {other:?}; use sqlite://PATH or postgres://..."
            ))),
        }
    }

    /// Opens the store (creating and migrating it if needed).
    pub async fn open(&self, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>, Error> {
        match self {
            StoreUrl::Sqlite { path, synchronous } => {
                let options = SqliteOptions {
                    synchronous: *synchronous,
                    clock,
                    ..SqliteOptions::default()
                };
                let path = path.clone();
                // Opening migrates: file I/O, off the async threads.
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(path, options))
                    .await
                    .map_err(|e| Error::BadUrl(format!("opening the store panicked: {e}")))??;
                Ok(Arc::new(store))
            }
            StoreUrl::Postgres { url } => {
                let mut options = errand_postgres::PgOptions {
                    clock,
                    ..errand_postgres::PgOptions::default()
                };
                if let Ok(size) = std::env::var("ERRAND_PG_POOL_SIZE") {
                    options.pool_size = size.parse().map_err(|_| {
                        Error::BadUrl(format!(
                            "ERRAND_PG_POOL_SIZE must be a number, got {size:?}"
                        ))
                    })?;
                }
                Ok(Arc::new(
                    errand_postgres::PgStore::connect(url, options).await?,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relative_absolute_and_options() {
        assert_eq!(
            StoreUrl::parse("sqlite://errand.db").unwrap(),
            StoreUrl::Sqlite {
                path: "errand.db".into(),
                synchronous: Synchronous::Normal
            }
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/e.db?synchronous=FULL").unwrap(),
            StoreUrl::Sqlite {
                path: "/var/lib/e.db".into(),
                synchronous: Synchronous::Full
            }
        );
    }

    #[test]
    fn rejects_what_it_cannot_open_naming_the_problem() {
        for (url, needle) in [
            ("errand.db", "expected sqlite://"),
            ("sqlite://", "empty"),
            ("sqlite://x.db?fast=yes", "fast=yes"),
            ("mysql://x", "unknown store"),
            ("postgres://host:notaport/db", "not a PostgreSQL URL"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
