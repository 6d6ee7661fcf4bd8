//! A small pool of read-only connections used from blocking threads.

use std::sync::{Arc, Mutex};

use errand_store::StoreError;
use rusqlite::Connection;
use tokio::sync::Semaphore;

pub(crate) struct Readers {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection, so a caller waits for a free one.
    available: Semaphore,
}

impl Readers {
    pub(crate) fn new(connections: Vec<Connection>) -> Self {
        let available = Semaphore::new(connections.len());
        Self {
            idle: Mutex::new(connections),
            available,
        }
    }

    pub(crate) async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .available
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the read pool is closed".into()))?;
        let pool = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = pool
                .idle
                .lock()
                .expect("no panic holds this lock")
                .pop()
                .expect("a permit guarantees an idle connection");
            let result = read(&conn);
            pool.idle
                .lock()
                .expect("no panic holds this lock")
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("a read panicked: {e}")));
        drop(permit);
        result?
    }
}
