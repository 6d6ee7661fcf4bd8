//! Records attempt outcomes in batches: while one `Store::finish` call is
//! in flight, the outcomes that arrive meanwhile wait and go together in
//! the next one. Idle, an outcome goes at once; under load, one store
//! transaction carries many.

use std::sync::{Arc, Mutex};

use errand_store::{Fence, Outcome, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// The most outcomes one store call carries.
const MAX_BATCH: usize = 256;

struct Pending {
    fence: Fence,
    outcome: Outcome,
    done: oneshot::Sender<Result<(), StoreError>>,
}

pub(crate) struct Completer {
    queue: mpsc::UnboundedSender<Pending>,
    /// Taken by [`Completer::run`], which the worker starts.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
}

impl Completer {
    pub(crate) fn new() -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        Self {
            queue,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Records one outcome (fenced); answers once it is committed.
    pub(crate) async fn finish(&self, fence: Fence, outcome: Outcome) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                fence,
                outcome,
                done,
            })
            .map_err(|_| StoreError::Unavailable("the worker's completer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the worker's completer has stopped".into()))?
    }

    /// Runs until every sender is gone (the worker and its attempts ended).
    pub(crate) async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let Some(mut receiver) = self.receiver.lock().expect("never poisoned").take() else {
            return;
        };
        // Hold only the receiver: the senders live in the worker.
        drop(self);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = receiver.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            let outcomes = batch
                .iter()
                .map(|p| (p.fence.clone(), p.outcome.clone()))
                .collect();
            match store.finish(outcomes).await {
                Ok(results) => {
                    for (pending, result) in batch.drain(..).zip(results) {
                        let _ = pending.done.send(result);
                    }
                }
                Err(err) => {
                    for pending in batch.drain(..) {
                        let _ = pending.done.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_sqlite::{SqliteOptions, SqliteStore};
    use errand_store::{ClaimParams, NewJob, DEFAULT_QUEUE};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_that_wait_together_are_recorded_in_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("c.db"), SqliteOptions::default()).unwrap());
        let jobs = (0..20)
            .map(|i| NewJob::new("t", "c", serde_json::json!(i)))
            .collect();
        store.submit_batch(jobs).await.unwrap();
        let claimed = store
            .claim(ClaimParams {
                worker_id: "w".into(),
                queues: vec![DEFAULT_QUEUE.into()],
                commands: None,
                limit: 20,
                lease: Duration::from_secs(30),
            })
            .await
            .unwrap();
        let completer = Arc::new(Completer::new());
        let mut attempts = tokio::task::JoinSet::new();
        for job in claimed {
            let completer = completer.clone();
            attempts.spawn(async move {
                let fence = Fence {
                    job_id: job.job_id,
                    attempt: job.attempt,
                    worker_id: "w".into(),
                };
                completer
                    .finish(
                        fence,
                        Outcome::Completed {
                            result: serde_json::json!("ok"),
                        },
                    )
                    .await
            });
        }
        // All twenty wait before the completer starts.
        while completer.receiver.lock().unwrap().as_ref().unwrap().len() < 20 {
            tokio::task::yield_now().await;
        }
        let commits_before = store.commits();
        tokio::spawn(completer.clone().run(store.clone()));
        while let Some(result) = attempts.join_next().await {
            assert_eq!(result.unwrap(), Ok(()));
        }
        assert_eq!(
            store.commits() - commits_before,
            1,
            "one store call, one transaction"
        );
        let stats = store.stats().await.unwrap();
        assert_eq!(stats[0].counts["completed"], 20);
    }
}
