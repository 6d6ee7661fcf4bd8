//! The job state machine, as pure functions.
//!
//! Stores call [`JobStatus::apply`] to learn the status a transition leads
//! to, and then write it with a compare-and-set on (job id, status, attempt),
//! so the rules live here once and every store enforces the same ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;
use crate::time::Timestamp;

/// Where a job is in its life. The spellings are the wire format.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Queued, delayed, or waiting for a retry (`run_at` tells which).
    New,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::New,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::New => "new",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled
        )
    }

    /// The status `transition` leads to from `self`, or why it is illegal.
    pub fn apply(self, transition: Transition) -> Result<JobStatus, IllegalTransition> {
        use JobStatus::*;
        use Transition::*;
        let next = match (self, transition) {
            (New, Claim) => Running,
            (Running, Complete) => Completed,
            (Running, FailAttempt { will_retry: true }) => New,
            (Running, FailAttempt { will_retry: false }) => Failed,
            (Running, LeaseExpired { will_retry: true }) => New,
            (Running, LeaseExpired { will_retry: false }) => Failed,
            (Running, Release) => New,
            (New | Running, Cancel) => Canceled,
            (Failed | Canceled, Retry) => New,
            (from, transition) => return Err(IllegalTransition { from, transition }),
        };
        Ok(next)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every change of status a job can go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A worker takes a `new` job whose `run_at` has come.
    Claim,
    /// The handler returned a result.
    Complete,
    /// The handler failed (or timed out); `will_retry` comes from [`decide_failure`].
    FailAttempt { will_retry: bool },
    /// The worker holding the job stopped renewing its lease.
    LeaseExpired { will_retry: bool },
    /// Graceful shutdown hands a running job back without counting the attempt.
    Release,
    /// A `new` job is canceled at once; a running one once its handler stopped.
    Cancel,
    /// A person asks for a failed or canceled job to run again.
    Retry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {from} job cannot take the transition {transition:?}")]
pub struct IllegalTransition {
    pub from: JobStatus,
    pub transition: Transition,
}

/// What happens after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureDecision {
    /// Back to `new`, not before this time.
    RetryAt(Timestamp),
    /// No attempts left, or the error was permanent: the job is `failed`.
    GiveUp,
}

/// Decides the fate of a job whose attempt number `attempt` (1-based) failed.
///
/// `random` is a number in `[0, 1)` for the jittered strategies; passing it
/// in keeps this function pure and its tests deterministic.
pub fn decide_failure(
    attempt: u32,
    max_attempts: u32,
    retryable: bool,
    policy: &RetryPolicy,
    now: Timestamp,
    random: f64,
) -> FailureDecision {
    if !retryable || attempt >= max_attempts {
        return FailureDecision::GiveUp;
    }
    let wait: Duration = policy.backoff(attempt, random);
    FailureDecision::RetryAt(now.plus(wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = JobStatus> {
        prop::sample::select(JobStatus::ALL.to_vec())
    }

    fn any_transition() -> impl Strategy<Value = Transition> {
        prop::sample::select(vec![
            Transition::Claim,
            Transition::Complete,
            Transition::FailAttempt { will_retry: true },
            Transition::FailAttempt { will_retry: false },
            Transition::LeaseExpired { will_retry: true },
            Transition::LeaseExpired { will_retry: false },
            Transition::Release,
            Transition::Cancel,
            Transition::Retry,
        ])
    }

    #[test]
    fn spellings_match_the_wire_format() {
        for status in JobStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("cancelled"), None);
    }

    #[test]
    fn the_happy_path_is_new_running_completed() {
        let running = JobStatus::New.apply(Transition::Claim).unwrap();
        assert_eq!(running, JobStatus::Running);
        assert_eq!(
            running.apply(Transition::Complete).unwrap(),
            JobStatus::Completed
        );
    }

    #[test]
    fn a_running_job_cannot_be_retried_by_hand() {
        let err = JobStatus::Running.apply(Transition::Retry).unwrap_err();
        assert_eq!(err.from, JobStatus::Running);
    }

    #[test]
    fn a_permanent_error_gives_up_at_once() {
        let policy = RetryPolicy::default();
        let now = Timestamp::from_micros(0);
        assert_eq!(
            decide_failure(1, 15, false, &policy, now, 0.5),
            FailureDecision::GiveUp
        );
        assert!(matches!(
            decide_failure(1, 15, true, &policy, now, 0.5),
            FailureDecision::RetryAt(_)
        ));
        assert_eq!(
            decide_failure(15, 15, true, &policy, now, 0.5),
            FailureDecision::GiveUp
        );
    }

    proptest! {
        #[test]
        fn terminal_statuses_only_leave_through_a_manual_retry(
            from in any_status(), transition in any_transition()
        ) {
            if from.is_terminal() {
                let result = from.apply(transition);
                if transition == Transition::Retry && from != JobStatus::Completed {
                    prop_assert_eq!(result, Ok(JobStatus::New));
                } else {
                    prop_assert!(result.is_err());
                }
            }
        }

        #[test]
        fn only_a_claim_starts_a_job(from in any_status(), transition in any_transition()) {
            if let Ok(JobStatus::Running) = from.apply(transition) {
                prop_assert_eq!(from, JobStatus::New);
                prop_assert_eq!(transition, Transition::Claim);
            }
        }

        #[test]
        fn any_walk_of_legal_transitions_stays_consistent(
            walk in prop::collection::vec(any_transition(), 0..40)
        ) {
            let mut status = JobStatus::New;
            for transition in walk {
                if let Ok(next) = status.apply(transition) {
                    // Completed is final for good: nothing leaves it.
                    prop_assert_ne!(status, JobStatus::Completed);
                    status = next;
                }
            }
        }

        #[test]
        fn a_retryable_failure_retries_until_attempts_run_out(
            attempt in 1u32..50, max in 1u32..50, random in 0.0f64..1.0
        ) {
            let policy = RetryPolicy::default();
            let now = Timestamp::from_micros(1_000_000);
            let decision = decide_failure(attempt, max, true, &policy, now, random);
            if attempt < max {
                match decision {
                    FailureDecision::RetryAt(at) => prop_assert!(at >= now),
                    FailureDecision::GiveUp => prop_assert!(false, "gave up early"),
                }
            } else {
                prop_assert_eq!(decision, FailureDecision::GiveUp);
            }
        }
    }
}
