//! The append-only event log every job keeps.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::{Change, StatusMove, UndecodableEvent};
use crate::id::JobId;
use crate::status::JobStatus;
use crate::time::Timestamp;

/// What an event records. The spellings are the SSE event names.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The job's status changed (submitted, claimed, retried, canceled,
    /// released, or its lease expired), or a cancel was requested.
    Status,
    /// The handler reported progress.
    Progress,
    /// The handler wrote a log line.
    Log,
    /// The job completed; `data.result` holds the output.
    Result,
    /// An attempt failed; `data.error` says how, `status` whether it retries.
    Failure,
    /// The handler saved a checkpoint; `data.checkpoint` holds it.
    Checkpoint,
    /// The server tried to deliver one of the job's events to its webhook;
    /// `data.state` says how it went.
    Webhook,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Status,
        EventKind::Progress,
        EventKind::Log,
        EventKind::Result,
        EventKind::Failure,
        EventKind::Checkpoint,
        EventKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::Progress => "progress",
            EventKind::Log => "log",
            EventKind::Result => "result",
            EventKind::Failure => "failure",
            EventKind::Checkpoint => "checkpoint",
            EventKind::Webhook => "webhook",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One entry of a job's event log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// Position in the store-wide feed (resumes `/api/events`).
    pub id: i64,
    pub job_id: JobId,
    /// Position in this job's log, from 1 (resumes a job's SSE stream).
    pub seq: i64,
    pub kind: EventKind,
    /// The job's status right after this event.
    pub status: JobStatus,
    pub app: String,
    pub command: String,
    pub data: Value,
    pub at: Timestamp,
}

impl JobEvent {
    /// The move between statuses this event records, read from its kind,
    /// its status and at most two fields of its data: what the stores'
    /// status counters need at every commit, without decoding results.
    pub fn status_move(&self) -> Option<StatusMove> {
        let field = |name: &str| self.data.get(name);
        let from = match (self.kind, self.status) {
            (
                EventKind::Progress | EventKind::Log | EventKind::Checkpoint | EventKind::Webhook,
                _,
            ) => return None,
            (EventKind::Result | EventKind::Failure, _) => Some(JobStatus::Running),
            (EventKind::Status, JobStatus::Running) => {
                if field("cancel_requested").is_some() {
                    return None;
                }
                Some(JobStatus::New)
            }
            (EventKind::Status, JobStatus::Canceled) => {
                Some(if field("attempt").is_some() || field("error").is_some() {
                    JobStatus::Running
                } else {
                    JobStatus::New
                })
            }
            (EventKind::Status, JobStatus::New) => match field("reason").and_then(|r| r.as_str()) {
                Some(crate::change::SUBMITTED) => None,
                Some(crate::change::RETRIED) => field("previous_status")
                    .and_then(|s| s.as_str())
                    .and_then(JobStatus::parse),
                _ => Some(JobStatus::Running),
            },
            (EventKind::Status, _) => return None,
        };
        Some(StatusMove {
            from,
            to: self.status,
        })
    }

    /// The change this event records.
    pub fn change(&self) -> Result<Change, UndecodableEvent> {
        Change::decode(self.kind, &self.data)
    }

    /// True for the last event a job emits until someone retries it.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
            && matches!(
                self.kind,
                EventKind::Status | EventKind::Result | EventKind::Failure
            )
    }
}
