//! The contract every [`Store`] keeps, written once and run against each
//! store by [`store_contract_tests!`](crate::store_contract_tests).
//!
//! Each test gets a fresh, empty store whose clock is a [`ManualClock`], so
//! leases and `run_at` are tested by moving time, never by sleeping.

mod admin;
mod changes;
mod checkpoints;
mod fencing;
mod labels;
mod lifecycle;
mod limits;
mod queries;
mod queues;
mod schedules;
mod upgrade;
mod webhooks;

pub use admin::*;
pub use changes::*;
pub use checkpoints::*;
pub use fencing::*;
pub use labels::*;
pub use lifecycle::*;
pub use limits::*;
pub use queries::*;
pub use queues::*;
pub use schedules::*;
pub use upgrade::*;
pub use webhooks::*;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

pub use errand_core::Clock;
use errand_core::{Job, ManualClock};
use serde_json::json;

use crate::{ClaimParams, Fence, NewJob, Store, DEFAULT_QUEUE};

/// A store under test, its clock, and whatever keeps it alive (a temporary
/// directory, a database to drop).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub clock: Arc<ManualClock>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl TestStore {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<ManualClock>,
        guard: impl Any + Send + Sync,
    ) -> Self {
        Self {
            store,
            clock,
            _guard: Box::new(guard),
        }
    }
}

pub const LEASE: Duration = Duration::from_secs(30);

pub fn new_job(command: &str) -> NewJob {
    NewJob::new("test", command, json!({"n": 1}))
}

pub fn claim_params(worker: &str, limit: usize) -> ClaimParams {
    ClaimParams {
        worker_id: worker.to_owned(),
        queues: vec![DEFAULT_QUEUE.to_owned()],
        commands: None,
        limit,
        lease: LEASE,
    }
}

pub fn fence(job: &Job, worker: &str) -> Fence {
    Fence {
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        worker_id: worker.to_owned(),
    }
}

/// Claims exactly one job for `worker`, failing the test otherwise.
pub async fn claim_one(t: &TestStore, worker: &str) -> Job {
    let mut jobs = t.store.claim(claim_params(worker, 1)).await.unwrap();
    assert_eq!(jobs.len(), 1, "expected one claimable job");
    jobs.pop().unwrap()
}

/// Runs every contract test against a store. `$factory` is an async fn
/// `(Arc<ManualClock>) -> Option<TestStore>`; `None` skips the suite (e.g.
/// no PostgreSQL configured), after the factory printed why.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:path) => {
        $crate::store_contract_tests!(@each $factory;
            submit_then_get_round_trips_every_field,
            submit_writes_a_status_event,
            idempotency_key_returns_the_existing_job,
            batch_submit_is_all_or_nothing,
            invalid_jobs_are_rejected_with_a_reason,
            get_of_an_unknown_job_is_not_found,
            claim_orders_by_priority_then_fifo,
            claim_waits_for_run_at,
            claim_filters_by_queue_and_command,
            concurrent_claims_never_share_a_job,
            complete_records_the_result,
            retryable_failure_goes_back_to_new_at_run_at,
            final_failure_fails_the_job,
            a_success_after_a_failed_attempt_clears_the_error,
            stale_worker_cannot_complete_reclaimed_job,
            a_checkpoint_is_handed_to_the_next_attempt,
            a_paused_queue_takes_jobs_and_starts_none,
            prune_by_status_keeps_the_other_statuses,
            queues_are_listed_with_their_depth_and_pause,
            a_concurrency_limit_holds_per_key_across_workers,
            a_limit_set_later_holds_the_jobs_already_queued,
            a_rate_limit_counts_the_starts_in_its_window,
            a_full_key_does_not_hold_up_the_jobs_behind_it,
            racing_claims_never_exceed_a_limit,
            limits_are_listed_replaced_and_lifted,
            schedules_are_created_listed_paused_and_deleted,
            a_redefinition_keeps_the_next_run_unless_the_timing_changes,
            a_tick_is_taken_once_however_many_race_for_it,
            a_skipped_tick_says_why_and_stale_decisions_write_nothing,
            a_stale_attempt_cannot_save_a_checkpoint,
            a_retry_keeps_or_clears_the_checkpoint,
            a_batch_of_completions_fences_each_job_on_its_own,
            a_batch_with_two_attempts_of_one_job_completes_the_current_one,
            finishing_claims_the_next_jobs_in_the_same_transaction,
            stale_worker_cannot_report_progress_or_log,
            wrong_worker_is_fenced_out,
            heartbeat_renews_leases_and_reports_cancel_and_loss,
            heartbeats_and_batched_finishes_of_the_same_jobs_never_collide,
            expired_lease_is_reaped_and_counts_the_attempt,
            expired_lease_on_last_attempt_fails_the_job,
            a_reaped_job_keeps_its_place_in_the_queue,
            live_leases_are_not_reaped,
            cancel_of_a_new_job_is_immediate,
            cancel_of_a_running_job_asks_its_worker,
            cancel_of_a_finished_job_is_a_conflict,
            cancel_cascades_to_the_jobs_under_it,
            retry_resets_attempts_and_keeps_history,
            retry_of_a_running_or_completed_job_is_a_conflict,
            a_refused_change_leaves_the_job_free_at_once,
            release_returns_the_job_without_counting_the_attempt,
            progress_is_stored_clamped_and_logged,
            list_filters_by_every_field,
            list_paginates_without_gaps_or_duplicates,
            list_rejects_bad_limits_and_cursors,
            list_filters_by_tags_and_context,
            label_filters_and_tags_are_checked,
            events_are_sequenced_per_job_and_resume_after_seq,
            feed_orders_all_events_and_resumes_after_id,
            feed_head_is_where_the_feed_ends_and_outlives_prune,
            prune_removes_old_finished_jobs_and_their_events,
            change_feed_delivers_committed_events,
            stats_count_statuses_and_time_runs,
            finished_per_minute_counts_completed_and_failed,
            workers_and_their_commands_are_published,
            every_event_is_a_change_the_core_defines,
            counts_kept_by_the_writes_are_the_jobs_there_are,
            webhook_deliveries_are_queued_once_and_held_by_one_sender,
            a_pruned_jobs_deliveries_go_with_it,
            delete_removes_the_ended_jobs_named_and_nothing_else,
            list_finds_jobs_by_the_start_of_their_id,
        );
    };
    (@each $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let clock = ::std::sync::Arc::new($crate::__ManualClock::starting_now());
                if let Some(store) = $factory(clock).await {
                    $crate::contract::$name(store).await;
                }
            }
        )*
    };
}
