//! errand: a durable command queue for long-running work behind web APIs.
//!
//! Open a [`Queue`] on a store URL, submit jobs, follow them, and run
//! workers in the same process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), errand::Error> {
//! use errand::{NewJob, Queue};
//! use serde_json::json;
//!
//! let queue = Queue::open("sqlite://errand.db").await?;
//! let id = queue.submit(NewJob::new("demo", "echo", json!({"hello": "world"}))).await?;
//! let job = queue.wait(&id, std::time::Duration::from_secs(30)).await?;
//! println!("{} ended {}", job.job_id, job.status);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`queue`]: [`Queue`], the embedding API.
//! - [`url`]: store URLs (`sqlite://path?synchronous=full`).
//! - [`client`]: [`client::Client`], for a remote `errand serve`.
//! - [`config`]: `errand.toml` and the effective [`config::Settings`].
//! - [`demo`]: the built-in `demo.*` commands.
//! - `bench` (in the binary): `errand bench`.

pub mod client;
pub mod config;
pub mod demo;
pub mod queue;
pub mod url;

/// Webhooks: a receiver checks a request's signature with
/// [`webhook::verify`].
pub use errand_core::webhook;
pub use errand_core::{
    error_kind, Change, Clock, CommandLimit, EventKind, Job, JobError, JobEvent, JobId, JobStatus,
    Progress, RetryPolicy, SystemClock, Timestamp, WaitStrategy, Webhook, WebhookOn,
};
pub use errand_store::{JobPage, ListParams, NewJob, Store, StoreError};
pub use errand_worker::{
    ClaimFilter, Command, CommandOptions, HandlerError, JobContext, Registry, ResultExt, Worker,
    WorkerConfig,
};
pub use queue::{Error, Queue};
