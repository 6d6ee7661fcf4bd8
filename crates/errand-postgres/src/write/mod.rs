//! Every write, inside a transaction the caller commits. Each change of a
//! job is an UPDATE whose WHERE clause is the compare-and-set, and its
//! event is inserted by the same statement. What a change records is
//! decided by the core (`errand_core::Change`); these files persist it.
//! SQLite's store has the same files.
//!
//! - `events`: an UPDATE of a job together with the insert of its event.
//! - `submit`: new jobs.
//! - `lease`: claims, heartbeats, expired leases, and the workers that hold them.
//! - `running`: what a running attempt writes (progress, log lines, checkpoints).
//! - `finish`: how an attempt ended (one outcome, or a batch of completions).
//! - `admin`: what people ask for (cancel, retry, prune).

mod admin;
mod events;
mod finish;
mod lease;
mod running;
mod submit;
pub(crate) mod webhooks;

pub(crate) use admin::{cancel, delete_jobs, prune, retry, FOLD_COUNTS};
pub(crate) use finish::{complete_many, fenced_out, finish_one, COMPLETE_MANY};
pub(crate) use lease::{
    claim, claim_chosen_sql, claim_sql, claims_something, heartbeat, in_claim_order, reap_expired,
    register_worker, started_jobs, RENEW_LEASES, WORKER_TTL,
};
pub(crate) use running::{append_log, report_progress, save_checkpoint};
pub(crate) use submit::{submit, submit_alone, submit_many};
