//! The append-only event log every job keeps.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::{Change, UndecodableEvent};
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
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Status,
        EventKind::Progress,
        EventKind::Log,
        EventKind::Result,
        EventKind::Failure,
        EventKind::Checkpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::Progress => "progress",
            EventKind::Log => "log",
            EventKind::Result => "result",
            EventKind::Failure => "failure",
            EventKind::Checkpoint => "checkpoint",
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
    /// The change this event records.
    pub fn change(&self) -> Result<Change, UndecodableEvent> {
        Change::decode(self.kind, &self.data)
    }

    /// True for the last event a job emits until someone retries it.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal() && self.kind != EventKind::Log && self.kind != EventKind::Progress
    }
}
