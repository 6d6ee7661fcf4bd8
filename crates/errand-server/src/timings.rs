//! How long jobs wait and run, read off the change feed: a job's wait is
//! from when it became due (its `run_at`, a retry's `retry_at`, a release
//! or a manual retry) to its claim; its run, from the claim to how the
//! attempt ended. Only what this server saw counts: a job already waiting
//! when the server started gives no wait sample.

use std::collections::HashMap;
use std::time::Duration;

use errand_core::{Change, JobEvent, JobId, Timestamp};

/// Jobs tracked at most in each map: a backlog larger than this gives
/// samples for the jobs that came first, and memory stays bounded.
const MAX_TRACKED: usize = 100_000;

/// A sample to record.
#[derive(Debug, PartialEq)]
pub enum Timing {
    /// A job waited this long between becoming due and being claimed.
    Waited(Duration),
    /// An attempt ran this long, and ended as `outcome`.
    Ran(Duration, &'static str),
}

#[derive(Default)]
pub struct Timings {
    due: HashMap<JobId, Timestamp>,
    started: HashMap<JobId, Timestamp>,
    /// Samples lost because a map was full.
    pub untracked: u64,
}

impl Timings {
    /// Takes in one event; the sample it completes, if any.
    pub fn observe(&mut self, event: &JobEvent, change: &Change) -> Option<Timing> {
        let job = &event.job_id;
        let ran = |this: &mut Self, outcome| {
            let started = this.started.remove(job)?;
            Some(Timing::Ran(event.at.since(started), outcome))
        };
        match change {
            Change::Submitted { run_at } => {
                self.due_at(job, (*run_at).max(event.at));
                None
            }
            Change::Released => {
                self.started.remove(job);
                self.due_at(job, event.at);
                None
            }
            Change::Retried { .. } => {
                self.due_at(job, event.at);
                None
            }
            Change::Claimed { .. } => {
                let waited = self.due.remove(job).map(|due| event.at.since(due));
                if self.started.len() < MAX_TRACKED {
                    self.started.insert(job.clone(), event.at);
                } else {
                    self.untracked += 1;
                }
                waited.map(Timing::Waited)
            }
            Change::RetryScheduled { retry_at, .. } => {
                self.due_at(job, (*retry_at).max(event.at));
                ran(self, "retried")
            }
            Change::Completed { .. } => ran(self, "completed"),
            Change::Failed { .. } => ran(self, "failed"),
            Change::Canceled { .. } => {
                self.due.remove(job);
                ran(self, "canceled")
            }
            Change::Progress(_)
            | Change::Log { .. }
            | Change::Checkpoint { .. }
            | Change::CancelRequested
            | Change::Webhook(_) => None,
        }
    }

    fn due_at(&mut self, job: &JobId, at: Timestamp) {
        if self.due.len() < MAX_TRACKED || self.due.contains_key(job) {
            self.due.insert(job.clone(), at);
        } else {
            self.untracked += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::{EventKind, JobError};
    use serde_json::json;

    fn event(job: &str, at_secs: i64, change: &Change) -> (JobEvent, Change) {
        let event = JobEvent {
            id: 1,
            job_id: JobId::from(job.to_owned()),
            seq: 1,
            kind: change.kind(),
            status: change.status(),
            app: "a".into(),
            command: "b".into(),
            data: change.data(),
            at: Timestamp::from_micros(at_secs * 1_000_000),
        };
        (event, change.clone())
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn waits_run_from_due_to_claim_and_runs_from_claim_to_the_end() {
        let mut t = Timings::default();
        let mut see = |job: &str, at: i64, change: Change| {
            let (event, change) = event(job, at, &change);
            assert_ne!(event.kind, EventKind::Webhook);
            t.observe(&event, &change)
        };
        let claimed = || Change::Claimed {
            attempt: 1,
            worker_id: "w".into(),
        };
        let at = |s: i64| Timestamp::from_micros(s * 1_000_000);
        // Delayed to t=10, claimed at 12: waited 2 s, not 12.
        assert_eq!(see("j", 0, Change::Submitted { run_at: at(10) }), None);
        assert_eq!(see("j", 12, claimed()), Some(Timing::Waited(secs(2))));
        let error = JobError {
            kind: "x".into(),
            message: "x".into(),
            retryable: true,
            attempt: 1,
        };
        // Failed at 15, retried from 20, claimed at 21, completed at 24.
        let retry = Change::RetryScheduled {
            error,
            retry_at: at(20),
        };
        assert_eq!(see("j", 15, retry), Some(Timing::Ran(secs(3), "retried")));
        assert_eq!(see("j", 21, claimed()), Some(Timing::Waited(secs(1))));
        let done = Change::Completed {
            attempt: 2,
            result: json!(1),
        };
        assert_eq!(
            see("j", 24, done.clone()),
            Some(Timing::Ran(secs(3), "completed"))
        );
        // An end the server did not see start gives nothing.
        assert_eq!(see("k", 30, done), None);
        assert_eq!(see("k", 31, claimed()), None);
        // Canceled while waiting: no sample, and nothing left behind.
        see("c", 40, Change::Submitted { run_at: at(40) });
        let canceled = Change::Canceled {
            reason: "asked".into(),
            attempt: None,
            error: None,
        };
        assert_eq!(see("c", 41, canceled), None);
        assert!(
            t.due.is_empty() && t.started.len() == 1,
            "only k still runs"
        );
    }
}
