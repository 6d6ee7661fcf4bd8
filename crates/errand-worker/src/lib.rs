//! errand's worker runtime: runs registered commands on jobs
//! claimed from a [`Store`](errand_store::Store).
//!
//! # Layout
//! - [`command`]: the [`Command`] trait handlers implement, their
//!   [`CommandOptions`], and [`HandlerError`] (retryable or permanent).
//! - [`registry`]: the [`Registry`] of commands a worker can run, with their
//!   input JSON Schemas (published to the store for API-side validation).
//! - [`context`]: the [`JobContext`] a handler gets: progress, log lines,
//!   the cancellation token, child jobs.
//! - [`worker`]: the [`Worker`] loop: claims for free slots, wakes on the
//!   store's change feed with a periodic poll as the guarantee, and shuts
//!   down gracefully.
//! - [`external`]: [`ExternalProgram`], a command that is a program in any
//!   language: JSON on stdin and stdout, events on stderr.
//! - `execute`: one attempt: timeout, cancel, grace period, panic → outcome.
//! - `completer`: records outcomes in batches, one store call for many.
//! - `ahead`: jobs claimed beyond the slots, so a slot that finishes a
//!   quick job starts the next without waiting for the store.
//! - `running`: the attempts in flight and how to stop each.
//! - `services`: the heartbeat and reaper loops.

mod ahead;
pub mod command;
mod completer;
pub mod context;
mod execute;
pub mod external;
mod orphans;
pub mod registry;
mod running;
mod services;
pub mod worker;

pub use command::{Command, CommandOptions, HandlerError, ResultExt};
pub use context::JobContext;
pub use external::ExternalProgram;
pub use registry::{DynCommand, RegisteredCommand, Registry, RegistryError};
pub use worker::{ClaimFilter, Worker, WorkerConfig, WorkerError};
