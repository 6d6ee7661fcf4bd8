//! How an attempt ended, as its worker reports it, and what that writes.

use serde_json::Value;

use crate::change::Change;
use crate::job::JobError;
use crate::time::Timestamp;

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed {
        result: Value,
    },
    /// The attempt failed: back to `new` at `retry_at`, or `failed` if `None`.
    Failed {
        error: JobError,
        retry_at: Option<Timestamp>,
    },
    /// The handler stopped after a cancel request.
    Canceled {
        message: String,
    },
    /// Graceful shutdown: back to `new`, the attempt not counted.
    Released,
}

impl Outcome {
    /// A failed attempt of `job`: back to `new` when its policy allows
    /// another try of an error of this kind, else `failed`. The one place
    /// where a failure becomes an outcome, for handlers in process and for
    /// workers over HTTP alike. `random` is uniform in `[0, 1)`.
    pub fn failure(
        job: &crate::Job,
        kind: String,
        message: String,
        retryable: bool,
        now: Timestamp,
        random: f64,
    ) -> Self {
        use crate::status::{decide_failure, FailureDecision};
        let retryable = retryable && job.retry.allows_retry_of(&kind);
        let decision = decide_failure(
            job.attempt,
            job.max_attempts,
            retryable,
            &job.retry,
            now,
            random,
        );
        let retry_at = match decision {
            FailureDecision::RetryAt(at) => Some(at),
            FailureDecision::GiveUp => None,
        };
        Outcome::Failed {
            error: JobError {
                kind,
                message,
                retryable,
                attempt: job.attempt,
            },
            retry_at,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Completed { .. } => "completed",
            Outcome::Failed {
                retry_at: Some(_), ..
            } => "retry",
            Outcome::Failed { retry_at: None, .. } => "failed",
            Outcome::Canceled { .. } => "canceled",
            Outcome::Released => "released",
        }
    }

    /// The change this outcome makes to attempt `attempt` of its job.
    pub fn change(&self, attempt: u32) -> Change {
        match self {
            Outcome::Completed { result } => Change::Completed {
                attempt,
                result: result.clone(),
            },
            Outcome::Failed {
                error,
                retry_at: Some(at),
            } => Change::RetryScheduled {
                error: error.clone(),
                retry_at: *at,
            },
            Outcome::Failed {
                error,
                retry_at: None,
            } => Change::Failed {
                error: error.clone(),
            },
            Outcome::Canceled { message } => Change::Canceled {
                reason: message.clone(),
                attempt: Some(attempt),
                error: None,
            },
            Outcome::Released => Change::Released,
        }
    }
}
