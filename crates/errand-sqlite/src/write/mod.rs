//! Every write, as a function run by the writer thread inside a group
//! transaction. Each change of a job is an UPDATE whose WHERE clause is the
//! compare-and-set: status, and for a worker's writes attempt and worker id.
//! What a change records is decided by the core (`errand_core::Change`);
//! these files persist it. PostgreSQL's store has the same files.
//!
//! - `events`: appending a change's event to the log.
//! - `submit`: new jobs.
//! - `lease`: claims, heartbeats, expired leases, and the workers that hold them.
//! - `running`: what a running attempt writes (progress, log lines, checkpoints).
//! - `finish`: how an attempt ended (one outcome, or a batch of completions).
//! - `admin`: what people ask for (cancel, retry, pause a queue, prune).

mod admin;
mod events;
mod finish;
pub(crate) mod lease;
mod running;
mod submit;
#[cfg(test)]
mod tests;
pub(crate) mod webhooks;

pub(crate) use admin::{add_counts, cancel, delete_jobs, pause_queue, prune, retry};
pub(crate) use events::{changed_from_row, insert_events, returning, Changed, EventRow};
pub(crate) use finish::{complete_many, finish, prepare_completions};
pub(crate) use lease::{
    claim, deregister_worker, heartbeat, reap_expired, register_worker, WORKER_TTL,
};
pub(crate) use running::{append_log, report_progress, save_checkpoint};
pub(crate) use submit::{submit, submit_batch, PreparedJob};
