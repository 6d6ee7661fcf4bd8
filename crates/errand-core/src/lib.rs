//! The heart of errand, with no I/O: what a job is, which state changes are
//! legal, how long to wait before a retry, and what time it is.
//!
//! # Layout
//! - [`time`]: [`Timestamp`] (microseconds since the epoch, RFC 3339 on the
//!   wire) and the injectable [`Clock`] that every component asks for "now",
//!   so tests of leases, timeouts and back-off are deterministic.
//! - [`id`]: [`JobId`], a time-ordered opaque string.
//! - [`command`]: [`CommandName`], `app.name` written and read in one place.
//! - [`status`]: [`JobStatus`] and the state machine as pure
//!   functions.
//! - [`retry`]: [`RetryPolicy`] with its four wait strategies.
//! - [`job`]: the [`Job`] record with its wire field names, its
//!   [`Progress`] and structured [`JobError`].
//! - [`event`]: the append-only per-job event log ([`JobEvent`]).
//! - [`change`]: every change a job goes through ([`Change`]), the one form
//!   its event stores, and the decisions that pick one (lease expiry,
//!   cancel, manual retry).
//! - [`outcome`]: how an attempt ended ([`Outcome`]) and the change it makes.
//! - [`labels`]: what a job can be found by (its tags, its context's
//!   plain values) as indexed [`Label`]s.
//! - [`limits`]: cluster-wide concurrency and rate limits per command or
//!   key ([`CommandLimit`]), and which jobs a claim may start ([`admit`]).
//! - [`schedule`]: cron ticks in a time zone ([`CronTicks`]) and what a
//!   scheduler does with due and missed ticks ([`plan_tick`]).
//! - [`webhook`]: which events a job's [`Webhook`] hears, the allow-list of
//!   destinations, the back-off of failed deliveries, their signature.

pub mod change;
pub mod command;
pub mod event;
pub mod id;
pub mod job;
pub mod labels;
pub mod limits;
#[cfg(feature = "openapi")]
mod openapi;
pub mod outcome;
pub mod retry;
pub mod schedule;
pub mod status;
pub mod time;
pub mod webhook;
pub mod whole;
pub use change::{on_cancel, on_lease_expired, on_retry, Change, StatusMove, UndecodableEvent};
pub use command::{CommandName, NotACommandName};
pub use event::{EventKind, JobEvent};
pub use id::JobId;
pub use job::{error_kind, Job, JobError, Progress};
pub use labels::{job_labels, Label};
pub use limits::{admit, hold_reason, Candidate, CommandLimit, KeyPath, KeySource, KeyUsage};
pub use outcome::Outcome;
pub use retry::{RetryPolicy, RetryPolicyError, WaitStrategy};
pub use schedule::{
    plan_tick, tick_key, CronTicks, MissedTicks, ScheduleError, TickPlan, TICK_GRACE,
};
pub use status::{FailureDecision, IllegalTransition, JobStatus, Transition};
pub use time::{Clock, ManualClock, SystemClock, Timestamp, MAX_SPAN_SECS};
pub use webhook::{
    DeliveryPolicy, DeliveryRecord, DeliveryState, Webhook, WebhookAllowList, WebhookOn,
    WebhookRefused,
};
