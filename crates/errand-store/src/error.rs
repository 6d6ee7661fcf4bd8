//! What can go wrong when talking to a store.

use errand_core::{IllegalTransition, JobId, JobStatus, Transition};

use crate::Fence;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("no job with id {0}")]
    NotFound(JobId),
    #[error("no schedule named {0:?}")]
    ScheduleNotFound(String),
    #[error("command {0} has no limits")]
    LimitNotFound(String),
    /// The caller's claim on the job is gone: its lease expired and the job
    /// moved on, or it already has an outcome. Nothing was changed.
    #[error("job {job_id}: attempt {attempt} no longer holds the job (lease lost)")]
    LeaseLost { job_id: JobId, attempt: u32 },
    /// The job is not in a status that allows the request, e.g. a retry of a
    /// running job or a cancel of a finished one.
    #[error("job {job_id} is {status}: cannot {action}")]
    Conflict {
        job_id: JobId,
        status: JobStatus,
        action: &'static str,
    },
    /// The request itself is malformed (an unknown cursor, a bad limit...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store cannot be reached or is shutting down; try again later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database answered with something errand did not expect.
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl StoreError {
    /// A request the core refused for `job_id` in its present status.
    pub fn refused(job_id: &JobId, refusal: IllegalTransition) -> Self {
        let action = match refusal.transition {
            Transition::Cancel => "cancel a finished job",
            Transition::Retry => "retry a job that is not failed or canceled",
            _ => "change it that way",
        };
        StoreError::Conflict {
            job_id: job_id.clone(),
            status: refusal.from,
            action,
        }
    }

    /// Why a write fenced by `fence` changed nothing: the attempt lost the
    /// job (it exists), or the job is gone (pruned, deleted).
    pub fn fenced_out(fence: &Fence, job_exists: bool) -> Self {
        if job_exists {
            StoreError::LeaseLost {
                job_id: fence.job_id.clone(),
                attempt: fence.attempt,
            }
        } else {
            StoreError::NotFound(fence.job_id.clone())
        }
    }
}
