//! Group commit for single submits. On PostgreSQL every commit is a WAL
//! flush and a round trip, and a server here manages about 2,000 small
//! write transactions a second, so one transaction per submit caps
//! `enqueue` there. Submits that arrive while earlier ones are being
//! written wait in a channel and go in together: one transaction, one
//! multi-row insert, one notification, and each caller is answered only
//! after that commit. A submit that finds nobody ahead of it is written at
//! once, in one round trip.

use std::sync::Arc;

use deadpool_postgres::Pool;
use errand_core::Timestamp;
use errand_store::{NewJob, StoreError, SubmitReceipt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::publish::Publisher;
use crate::rows::{self, db};
use crate::write;

/// Most submits in one transaction.
const MAX_BATCH: usize = 500;
/// Transactions of submits in flight at once (each holds a connection).
const IN_FLIGHT: usize = 4;

pub(crate) struct Submission {
    pub job: NewJob,
    pub now: Timestamp,
    pub reply: oneshot::Sender<Result<SubmitReceipt, StoreError>>,
}

/// Runs until every sender is gone (the store was dropped).
pub(crate) async fn run(
    mut submissions: mpsc::Receiver<Submission>,
    pool: Pool,
    publisher: Arc<Publisher>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = submissions.recv().await {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        // Whatever queued up while the permit was busy goes in this batch.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match submissions.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (pool, publisher) = (pool.clone(), publisher.clone());
        tokio::spawn(async move {
            write_batch(batch, &pool, &publisher).await;
            drop(permit);
        });
    }
}

async fn write_batch(batch: Vec<Submission>, pool: &Pool, publisher: &Publisher) {
    if batch.len() > 1 {
        match write_together(&batch, pool, publisher).await {
            Ok(receipts) => {
                for (submission, receipt) in batch.into_iter().zip(receipts) {
                    let _ = submission.reply.send(Ok(receipt));
                }
                return;
            }
            Err(err @ StoreError::Unavailable(_)) => {
                for submission in batch {
                    let _ = submission.reply.send(Err(err.clone()));
                }
                return;
            }
            // A job the database refused must not fail the others with it:
            // write each on its own, so only that one gets the error.
            Err(_) => {}
        }
    }
    for submission in batch {
        let result = write_alone(&submission, pool, publisher).await;
        let _ = submission.reply.send(result);
    }
}

async fn write_alone(
    submission: &Submission,
    pool: &Pool,
    publisher: &Publisher,
) -> Result<SubmitReceipt, StoreError> {
    if !submission.job.labels().is_empty() {
        // Its labels are a second statement: both commit together.
        let mut receipts =
            write_together(std::slice::from_ref(submission), pool, publisher).await?;
        return Ok(receipts.remove(0));
    }
    let client = pool.get().await.map_err(rows::pool)?;
    let (receipt, event) =
        write::submit_alone(&client, submission.now, &submission.job, publisher.origin()).await?;
    publisher.committed(vec![event]);
    Ok(receipt)
}

async fn write_together(
    batch: &[Submission],
    pool: &Pool,
    publisher: &Publisher,
) -> Result<Vec<SubmitReceipt>, StoreError> {
    // One time for the batch: the latest of its submits', so no job is
    // created before the call that made it.
    let now = batch
        .iter()
        .map(|s| s.now)
        .max()
        .expect("a batch is never empty");
    let jobs: Vec<NewJob> = batch.iter().map(|s| s.job.clone()).collect();
    let mut client = pool.get().await.map_err(rows::pool)?;
    let tx = client.transaction().await.map_err(db)?;
    let mut events = Vec::with_capacity(jobs.len());
    match write::submit_many(&tx, now, &jobs, &mut events).await {
        Ok(receipts) => {
            publisher.commit(tx, events).await?;
            Ok(receipts)
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}
