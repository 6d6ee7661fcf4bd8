//! The job record, with its wire field names.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::JobId;
use crate::retry::RetryPolicy;
use crate::status::JobStatus;
use crate::time::Timestamp;

/// One submission of a command, as a store holds it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: JobId,
    pub app: String,
    pub command: String,
    pub input: Value,
    pub context: Option<Value>,
    pub status: JobStatus,
    pub result: Option<Value>,
    /// The human message of the last failure, the field Open Notebook reads.
    pub error_message: Option<String>,
    pub error: Option<JobError>,
    pub progress: Option<Progress>,
    /// Attempts started so far; the running attempt's number while running.
    pub attempt: u32,
    pub max_attempts: u32,
    pub retry: RetryPolicy,
    pub priority: i32,
    pub queue: String,
    pub run_at: Timestamp,
    pub timeout_secs: Option<f64>,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<JobId>,
    pub cancel_requested: bool,
    pub worker_id: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    /// The sequence number of the job's latest event: resume its event
    /// stream after this one to miss nothing.
    #[serde(default)]
    pub event_seq: i64,
    /// The last checkpoint a handler saved: where the next attempt
    /// continues from (after a crash, a timeout, a retry).
    #[serde(default)]
    pub checkpoint: Option<Value>,
    /// When its command has limits: the key they count it under
    /// (`app.name`, or `app.name:VALUE` per key). A `new` job with a key
    /// may be waiting for its key's running jobs or starts to go down.
    #[serde(default)]
    pub limit_key: Option<String>,
    /// What the job can be found by besides its context (`?tag=`): each
    /// once, in the order first given.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::labels::TagSchema>))]
    pub tags: Vec<String>,
    /// Where the server reports the job's end (or every change of status).
    #[serde(default)]
    pub webhook: Option<crate::webhook::Webhook>,
    /// For a `new` job its limit holds back, why (filled in by the API
    /// when the job is read, not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl Job {
    /// `app.name`, the command's full name.
    pub fn full_command(&self) -> String {
        self.command_name().to_string()
    }

    pub fn command_name(&self) -> crate::CommandName {
        crate::CommandName::new(self.app.as_str(), self.command.as_str())
    }
}

/// How far along a running job is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Progress {
    /// From 0 to 1; clamped by whoever reports it.
    pub fraction: Option<f64>,
    pub message: Option<String>,
    pub stage: Option<String>,
    pub data: Option<Value>,
    pub updated: Option<Timestamp>,
}

/// The structured description of the last failure.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// What went wrong, e.g. `handler`, `timeout`, `panic`, or a kind the
    /// application chose such as `validation`. See [`error_kind`].
    pub kind: String,
    pub message: String,
    pub retryable: bool,
    /// The attempt that failed.
    pub attempt: u32,
}

/// The error kinds errand itself produces.
pub mod error_kind {
    /// A handler returned an error without naming a kind.
    pub const HANDLER: &str = "handler";
    /// The attempt ran past its `timeout_secs`.
    pub const TIMEOUT: &str = "timeout";
    /// The handler panicked.
    pub const PANIC: &str = "panic";
    /// The worker holding the job stopped renewing its lease (it died).
    pub const LEASE_EXPIRED: &str = "lease_expired";
    /// No handler is registered for the job's command.
    pub const UNKNOWN_COMMAND: &str = "unknown_command";
    /// The input does not decode into the command's input type.
    pub const INVALID_INPUT: &str = "invalid_input";
    /// An external program's stdout is not JSON, or longer than allowed.
    pub const INVALID_OUTPUT: &str = "invalid_output";
    /// The job was canceled while it ran.
    pub const CANCELED: &str = "canceled";
}
