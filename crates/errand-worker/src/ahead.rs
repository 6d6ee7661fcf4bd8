//! Jobs claimed ahead of the slots.
//!
//! A slot that finishes its job and then waits for the store to hand it the
//! next one spends a round trip idle. With quick jobs that round trip is
//! most of a slot's time: ten slots of no-op jobs drained several times
//! slower than 256 did, because each transaction carried at most ten
//! outcomes. So the worker keeps a few jobs claimed beyond its slots: as
//! many as its slots finish during one round trip, and none while its jobs
//! take longer than a round trip. A slot that finishes takes the next job
//! from here at once and hands its outcome to the completer without waiting
//! for the commit; the outcomes of many jobs then share one transaction,
//! which also claims the jobs that refill this buffer.
//!
//! A job held here is `running` in the store, tracked in `Running` (its
//! lease is renewed, a cancel reaches it) but not started. One that waits
//! longer than [`MAX_WAIT`] (its slots got slow jobs meanwhile) is handed
//! back without counting its attempt, as is every one at shutdown.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use errand_core::JobId;
use tokio::time::Instant;

use crate::completer::NextJob;

/// The most jobs held beyond the slots by default: a full batch of the
/// completer.
pub(crate) const MAX_AHEAD: usize = 256;
/// A job held longer than this goes back to the queue for another worker.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);
/// Weight of the newest sample in the running averages of run time and
/// round trip: they follow a change of workload within a few dozen jobs.
const SMOOTHING: f64 = 1.0 / 16.0;

/// How many jobs to hold beyond `slots`: what the slots finish during one
/// round trip to the store (rounded down, so jobs about as long as a round
/// trip or longer get none), at most `cap`. Nothing is held before both
/// have been measured.
pub(crate) fn lookahead(
    slots: usize,
    run_time: Option<Duration>,
    round_trip: Option<Duration>,
    cap: usize,
) -> usize {
    let (Some(run_time), Some(round_trip)) = (run_time, round_trip) else {
        return 0;
    };
    // A job that took no measurable time finishes many per round trip.
    let run_secs = run_time.as_secs_f64().max(1e-7);
    let per_slot = round_trip.as_secs_f64() / run_secs;
    let jobs = (slots as f64 * per_slot).floor();
    if jobs >= cap as f64 {
        cap
    } else {
        jobs as usize
    }
}

struct Held {
    next: NextJob,
    since: Instant,
}

/// A running average that starts at its first sample.
#[derive(Default)]
struct Average(Option<f64>);

impl Average {
    fn add(&mut self, sample: Duration) {
        let secs = sample.as_secs_f64();
        self.0 = Some(match self.0 {
            None => secs,
            Some(mean) => mean + SMOOTHING * (secs - mean),
        });
    }

    fn get(&self) -> Option<Duration> {
        self.0.map(Duration::from_secs_f64)
    }
}

#[derive(Default)]
struct Pace {
    run_time: Average,
    round_trip: Average,
}

#[derive(Default)]
pub(crate) struct Ahead {
    held: Mutex<VecDeque<Held>>,
    pace: Mutex<Pace>,
    /// Jobs asked for this buffer by store calls still in flight.
    asked: AtomicUsize,
}

impl Ahead {
    /// A handler ran for `elapsed`.
    pub(crate) fn ran(&self, elapsed: Duration) {
        self.pace().run_time.add(elapsed);
    }

    /// A store call that claims took `elapsed`.
    pub(crate) fn round_trip(&self, elapsed: Duration) {
        self.pace().round_trip.add(elapsed);
    }

    /// Reserves the jobs to claim for this buffer now (what it lacks,
    /// counting the claims in flight); give them back with [`Self::asked`]
    /// once the call answered.
    pub(crate) fn reserve(&self, config: &crate::WorkerConfig) -> usize {
        let target = {
            let pace = self.pace();
            let (run_time, round_trip) = (pace.run_time.get(), pace.round_trip.get());
            lookahead(config.max_tasks, run_time, round_trip, config.claim_ahead)
        };
        let have = self.len() + self.asked.load(Ordering::Relaxed);
        let wanted = target.saturating_sub(have);
        self.asked.fetch_add(wanted, Ordering::Relaxed);
        wanted
    }

    /// The store call that asked for `count` jobs answered.
    pub(crate) fn asked(&self, count: usize) {
        self.asked.fetch_sub(count, Ordering::Relaxed);
    }

    pub(crate) fn push(&self, next: NextJob) {
        self.lock().push_back(Held {
            next,
            since: Instant::now(),
        });
    }

    /// The job held longest, for a slot that just finished.
    pub(crate) fn take_next(&self) -> Option<NextJob> {
        self.lock().pop_front().map(|held| held.next)
    }

    /// Every held job whose attempt was stopped (canceled, lost) or that
    /// waited past [`MAX_WAIT`].
    pub(crate) fn take_stale(&self) -> Vec<NextJob> {
        let mut held = self.lock();
        let mut stale = Vec::new();
        let mut kept = VecDeque::with_capacity(held.len());
        for entry in held.drain(..) {
            if entry.since.elapsed() >= MAX_WAIT || entry.next.stop.borrow().is_some() {
                stale.push(entry.next);
            } else {
                kept.push_back(entry);
            }
        }
        *held = kept;
        stale
    }

    pub(crate) fn take_all(&self) -> Vec<NextJob> {
        self.lock().drain(..).map(|held| held.next).collect()
    }

    pub(crate) fn holds(&self, job_id: &JobId) -> bool {
        self.lock()
            .iter()
            .any(|held| &held.next.job.job_id == job_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Held>> {
        self.held.lock().expect("never poisoned")
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().expect("never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nothing_is_held_before_the_pace_is_known() {
        assert_eq!(lookahead(10, None, Some(MS), 256), 0);
        assert_eq!(lookahead(10, Some(MS), None, 256), 0);
    }

    #[test]
    fn slots_hold_what_they_finish_during_one_round_trip() {
        // 100 µs jobs, 1 ms round trip: each slot finishes ten meanwhile.
        assert_eq!(lookahead(10, Some(MS / 10), Some(MS), 256), 100);
        assert_eq!(lookahead(2, Some(MS / 4), Some(MS), 256), 8);
        // Instant jobs: as many as the cap allows.
        assert_eq!(lookahead(10, Some(Duration::ZERO), Some(MS), 256), 256);
        assert_eq!(lookahead(10, Some(MS / 1000), Some(MS), 64), 64);
    }

    #[test]
    fn jobs_longer_than_a_round_trip_are_not_claimed_ahead() {
        assert_eq!(lookahead(1, Some(MS), Some(MS), 256), 1);
        assert_eq!(lookahead(1, Some(MS * 2), Some(MS), 256), 0);
        assert_eq!(
            lookahead(10, Some(Duration::from_secs(60)), Some(MS), 256),
            0
        );
        // Ten slots of jobs five times a round trip finish two meanwhile.
        assert_eq!(lookahead(10, Some(MS * 5), Some(MS), 256), 2);
    }

    #[test]
    fn the_averages_follow_a_change_of_workload() {
        let mut average = Average::default();
        average.add(MS);
        assert_eq!(average.get(), Some(MS));
        for _ in 0..64 {
            average.add(Duration::from_secs(1));
        }
        let mean = average.get().unwrap();
        assert!(mean > Duration::from_millis(980), "{mean:?}");
    }
}
