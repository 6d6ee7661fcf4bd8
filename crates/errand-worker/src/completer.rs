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
