//! Records attempt outcomes in batches: while one store call is in flight,
//! the outcomes that arrive meanwhile wait and go together in the next
//! one. Idle, an outcome goes at once; under load, one store transaction
//! carries many.
//!
//! The same transaction claims the next job for each slot whose outcome it
//! records ([`Store::finish_and_claim`]): a slot's round trip is then one
//! transaction, not a claim and a finish, and at ten slots the claims are
//! sized to the slots that free up together rather than one job at a time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use errand_core::Job;
use errand_store::{Fence, FinishedAndClaimed, Outcome, StoreError};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::execute::track;
use crate::running::StopReason;
use crate::worker::{claims_for, Shared};

/// The most outcomes one store call carries.
const MAX_BATCH: usize = 256;
/// Store calls in flight at once. Two: the next batch is at the store
/// when the last commits, so the store never waits for the round trip
/// back to the worker (at ten slots, that wait bounded the drain).
const IN_FLIGHT: usize = 2;

/// A job claimed for a slot, tracked as running: the slot runs it next.
pub(crate) struct NextJob {
    pub job: Job,
    pub fence: Fence,
    pub stop: watch::Receiver<Option<StopReason>>,
}

/// What recording an outcome answered: whether it was recorded, and the
/// slot's next job if one was claimed with it.
pub(crate) type Recorded = (Result<(), StoreError>, Option<NextJob>);

struct Pending {
    fence: Fence,
    outcome: Outcome,
    /// The slot asks for its next job in the same transaction.
    wants_next: bool,
    done: oneshot::Sender<Recorded>,
}

pub(crate) struct Completer {
    queue: mpsc::UnboundedSender<Pending>,
    /// Taken by [`Completer::run`], which the worker starts.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the worker's completer has stopped".into())
}

impl Completer {
    pub(crate) fn new() -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        Self {
            queue,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Records one outcome (fenced); answers once it is committed, with the
    /// slot's next job when `wants_next` and one was ready.
    pub(crate) async fn finish(
        &self,
        fence: Fence,
        outcome: Outcome,
        wants_next: bool,
    ) -> Recorded {
        let (done, answer) = oneshot::channel();
        let sent = self.queue.send(Pending {
            fence,
            outcome,
            wants_next,
            done,
        });
        if sent.is_err() {
            return (Err(stopped()), None);
        }
        answer.await.unwrap_or_else(|_| (Err(stopped()), None))
    }

    /// Runs until the worker aborts it (the worker and its attempts hold
    /// the senders).
    pub(crate) async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let Some(mut receiver) = self.receiver.lock().expect("never poisoned").take() else {
            return;
        };
        drop(self);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                first = receiver.recv(), if in_flight.len() < IN_FLIGHT => {
                    let Some(first) = first else { break };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match receiver.try_recv() {
                            Ok(pending) => batch.push(pending),
                            Err(_) => break,
                        }
                    }
                    in_flight.push(record_batch(&shared, batch));
                }
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.next().await.is_some() {}
    }
}

async fn record_batch(shared: &Arc<Shared>, mut batch: Vec<Pending>) {
    let outcomes = batch
        .iter()
        .map(|p| (p.fence.clone(), p.outcome.clone()))
        .collect();
    let claiming = shared.backlog.load(Ordering::Relaxed) && !shared.claims_stopped.is_cancelled();
    let (for_slots, for_ahead) = if claiming {
        let for_slots = batch.iter().filter(|p| p.wants_next).count();
        (for_slots, shared.ahead.reserve(&shared.config))
    } else {
        (0, 0)
    };
    let wanted = for_slots + for_ahead;
    let claims = if wanted > 0 {
        let leaving: Vec<&Fence> = batch.iter().map(|p| &p.fence).collect();
        claims_for(shared, wanted, &leaving)
    } else {
        Vec::new()
    };
    let asked: usize = claims.iter().map(|c| c.limit).sum();
    let started = Instant::now();
    let answer = shared.store.finish_and_claim(outcomes, claims).await;
    if asked > 0 {
        shared.ahead.round_trip(started.elapsed());
    }
    match answer {
        Ok(FinishedAndClaimed { recorded, claimed }) => {
            if asked > 0 {
                shared
                    .backlog
                    .store(claimed.len() >= asked, Ordering::Relaxed);
            }
            let mut claimed = claimed.into_iter();
            for (pending, result) in batch.drain(..).zip(recorded) {
                let next = pending
                    .wants_next
                    .then(|| claimed.next())
                    .flatten()
                    .map(|job| {
                        let (fence, stop) = track(shared, &job);
                        NextJob { job, fence, stop }
                    });
                if let Err((_, Some(orphan))) = pending.done.send((result, next)) {
                    release(shared, orphan.fence);
                }
            }
            // The rest wait ahead of the slots (a slot whose outcome
            // claimed nothing takes one of them as soon as it is answered).
            for job in claimed {
                let (fence, stop) = track(shared, &job);
                shared.ahead.push(NextJob { job, fence, stop });
            }
        }
        Err(err) => {
            for pending in batch.drain(..) {
                let _ = pending.done.send((Err(err.clone()), None));
            }
        }
    }
    shared.ahead.asked(for_ahead);
}

/// Gives back a job claimed for an attempt that is gone, without counting
/// the attempt.
fn release(shared: &Arc<Shared>, fence: Fence) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let released = shared
            .store
            .finish(vec![(fence.clone(), Outcome::Released)])
            .await;
        if let Err(err) = released {
            tracing::warn!(job_id = %fence.job_id, error = %err, "could not release a claimed job; it runs again when its lease expires");
        }
        shared.running.remove(&fence);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_sqlite::{SqliteOptions, SqliteStore};
    use errand_store::{ClaimParams, NewJob, Store, DEFAULT_QUEUE};
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
        let shared = Arc::new(Shared::new(
            store.clone(),
            crate::Registry::new(),
            crate::WorkerConfig::default(),
        ));
        let completer = shared.completer.clone();
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
                        false,
                    )
                    .await
                    .0
            });
        }
        // All twenty wait before the completer starts.
        while completer.receiver.lock().unwrap().as_ref().unwrap().len() < 20 {
            tokio::task::yield_now().await;
        }
        let commits_before = store.commits();
        tokio::spawn(completer.clone().run(shared.clone()));
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

    /// When jobs trickle in, the loop claims each one as its event arrives;
    /// an outcome that also claimed would only make a new job wait for
    /// that outcome's commit. So an outcome claims its slot's next job only
    /// while the last claim filled every slot it asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_claims_a_next_job_only_while_jobs_were_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("c.db"), SqliteOptions::default()).unwrap());
        let jobs = (0..3)
            .map(|i| NewJob::new("t", "c", serde_json::json!(i)))
            .collect();
        store.submit_batch(jobs).await.unwrap();
        let config = crate::WorkerConfig {
            worker_id: "w".into(),
            claim_filter: crate::ClaimFilter::All,
            ..crate::WorkerConfig::default()
        };
        let shared = Arc::new(Shared::new(store.clone(), crate::Registry::new(), config));
        tokio::spawn(shared.completer.clone().run(shared.clone()));
        let claim_one = || async {
            let job = store
                .claim(ClaimParams {
                    worker_id: "w".into(),
                    queues: vec![DEFAULT_QUEUE.into()],
                    commands: None,
                    limit: 1,
                    lease: Duration::from_secs(30),
                })
                .await
                .unwrap()
                .remove(0);
            Fence {
                job_id: job.job_id,
                attempt: job.attempt,
                worker_id: "w".into(),
            }
        };
        let done = || Outcome::Completed {
            result: serde_json::json!("ok"),
        };

        shared.backlog.store(false, Ordering::Relaxed);
        let (recorded, next) = shared
            .completer
            .finish(claim_one().await, done(), true)
            .await;
        assert_eq!(recorded, Ok(()));
        assert!(next.is_none(), "no backlog: the loop claims the next job");
        let counts = &store.stats().await.unwrap()[0].counts;
        assert_eq!((counts["new"], counts["running"]), (2, 0));

        shared.backlog.store(true, Ordering::Relaxed);
        let (recorded, next) = shared
            .completer
            .finish(claim_one().await, done(), true)
            .await;
        assert_eq!(recorded, Ok(()));
        let next = next.expect("a backlog: the outcome claims the slot's next job");
        assert_eq!(next.job.input, serde_json::json!(2));
        assert!(
            shared.backlog.load(Ordering::Relaxed),
            "the claim filled its one slot"
        );
        let counts = &store.stats().await.unwrap()[0].counts;
        assert_eq!((counts["new"], counts["running"]), (0, 1));
    }
}
