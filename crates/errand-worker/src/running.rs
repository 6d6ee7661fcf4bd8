//! The attempts a worker has in flight, and how to stop each one.

use std::collections::HashMap;
use std::sync::Mutex;

use errand_core::JobId;
use errand_store::Fence;
use tokio::sync::watch;

/// Why an attempt is being stopped before its handler returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// Someone asked to cancel the job.
    Canceled,
    /// The worker no longer holds the job: record nothing.
    LeaseLost,
    /// The worker is shutting down and its drain deadline passed.
    Shutdown,
}

struct Entry {
    fence: Fence,
    command: String,
    stop: watch::Sender<Option<StopReason>>,
}

#[derive(Default)]
pub(crate) struct Running {
    entries: Mutex<HashMap<JobId, Entry>>,
}

impl Running {
    /// Tracks a new attempt; the receiver learns when it must stop.
    pub(crate) fn insert(
        &self,
        fence: Fence,
        command: String,
    ) -> watch::Receiver<Option<StopReason>> {
        let (stop, receiver) = watch::channel(None);
        let job_id = fence.job_id.clone();
        self.lock().insert(
            job_id,
            Entry {
                fence,
                command,
                stop,
            },
        );
        receiver
    }

    /// Stops tracking `fence`'s attempt; a later attempt of the same job
    /// (claimed again by this worker) stays.
    pub(crate) fn remove(&self, fence: &Fence) {
        let mut entries = self.lock();
        if entries
            .get(&fence.job_id)
            .is_some_and(|entry| entry.fence.attempt == fence.attempt)
        {
            entries.remove(&fence.job_id);
        }
    }

    /// Asks the attempt to stop; the first reason given wins.
    pub(crate) fn stop(&self, job_id: &JobId, reason: StopReason) -> bool {
        match self.lock().get(job_id) {
            Some(entry) => {
                entry.stop.send_if_modified(|current| {
                    let first = current.is_none();
                    if first {
                        *current = Some(reason);
                    }
                    first
                });
                true
            }
            None => false,
        }
    }

    /// [`Self::stop`], only while `fence`'s attempt is the one tracked: a
    /// heartbeat's answer about an attempt whose outcome was recorded
    /// meanwhile must not stop the job's next attempt, which this worker
    /// may have claimed since.
    pub(crate) fn stop_attempt(&self, fence: &Fence, reason: StopReason) {
        let current = self
            .lock()
            .get(&fence.job_id)
            .is_some_and(|entry| entry.fence.attempt == fence.attempt);
        if current {
            self.stop(&fence.job_id, reason);
        }
    }

    pub(crate) fn stop_all(&self, reason: StopReason) {
        let ids: Vec<JobId> = self.lock().keys().cloned().collect();
        for id in ids {
            self.stop(&id, reason);
        }
    }

    pub(crate) fn fences(&self) -> Vec<Fence> {
        self.lock().values().map(|e| e.fence.clone()).collect()
    }

    pub(crate) fn contains(&self, job_id: &JobId) -> bool {
        self.lock().contains_key(job_id)
    }

    /// How many attempts of each command run now, leaving out the
    /// `leaving` ones (their outcomes are being recorded).
    pub(crate) fn per_command(&self, leaving: &[&Fence]) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for entry in self.lock().values() {
            if !leaving.contains(&&entry.fence) {
                *counts.entry(entry.command.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Entry>> {
        self.entries.lock().expect("never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(attempt: u32) -> Fence {
        Fence {
            job_id: "j".into(),
            attempt,
            worker_id: "w".into(),
        }
    }

    /// A heartbeat sent while attempt 1's outcome was in flight answers
    /// that attempt 1 is lost; by then this worker may run attempt 2.
    #[test]
    fn an_answer_about_an_earlier_attempt_does_not_stop_the_next_one() {
        let running = Running::default();
        running.insert(fence(1), "t.c".into());
        let next = running.insert(fence(2), "t.c".into());
        running.stop_attempt(&fence(1), StopReason::LeaseLost);
        assert_eq!(*next.borrow(), None);
        running.stop_attempt(&fence(2), StopReason::LeaseLost);
        assert_eq!(*next.borrow(), Some(StopReason::LeaseLost));
    }
}
