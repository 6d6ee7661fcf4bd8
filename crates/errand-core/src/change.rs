//! Every change a job goes through, typed, with the one form its event log
//! stores, the SSE streams send and every reader decodes; and the decisions
//! that pick a change (a lease expiry, a cancel, a manual retry) as pure
//! functions. A store only persists what these say.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::event::EventKind;
use crate::job::{error_kind, JobError, Progress};
use crate::status::{IllegalTransition, JobStatus, Transition};
use crate::time::Timestamp;
use crate::webhook::DeliveryRecord;

/// Why a job went back to `new` when a worker shut down.
pub const RELEASED_REASON: &str = "released by a worker shutting down";
/// Why a job whose cancel was pending ended when its worker was lost.
pub const WORKER_LOST_REASON: &str = "canceled; its worker was lost";
pub(crate) const SUBMITTED: &str = "submitted";
pub(crate) const RETRIED: &str = "retried";

/// One change of one job: what its event records.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The job entered the queue, to run from `run_at`.
    Submitted { run_at: Timestamp },
    /// A worker took the job for attempt `attempt`.
    Claimed { attempt: u32, worker_id: String },
    /// The handler of attempt `attempt` reported progress.
    Progress(Progress),
    /// The handler of attempt `attempt` wrote a log line.
    Log { line: String, attempt: u32 },
    /// The handler saved a checkpoint for the next attempt.
    Checkpoint { checkpoint: Value },
    /// Attempt `attempt` returned `result`.
    Completed { attempt: u32, result: Value },
    /// An attempt failed (or was abandoned); the job runs again from `retry_at`.
    RetryScheduled {
        error: JobError,
        retry_at: Timestamp,
    },
    /// An attempt failed and no other will follow.
    Failed { error: JobError },
    /// Someone asked a running job to stop; its handler is told.
    CancelRequested,
    /// The job ended canceled: before it ran, when its handler stopped
    /// (`attempt`), or when its worker was lost with a cancel pending
    /// (`error`).
    Canceled {
        reason: String,
        attempt: Option<u32>,
        error: Option<JobError>,
    },
    /// A worker shutting down handed the job back; the attempt is not counted.
    Released,
    /// Someone asked a failed or canceled job to run again.
    Retried {
        previous_status: JobStatus,
        checkpoint_cleared: bool,
    },
    /// The server tried to deliver one of the job's events to its webhook
    /// (the job's status stays).
    Webhook(DeliveryRecord),
}

/// An event whose data is not what its kind promises.
#[derive(Debug, thiserror::Error)]
#[error("a {kind} event with data {data} is not a change errand knows: {why}")]
pub struct UndecodableEvent {
    pub kind: &'static str,
    pub data: String,
    pub why: String,
}

/// The fields a stored status or failure event may carry.
#[derive(Deserialize)]
struct Fields {
    status: JobStatus,
    reason: Option<String>,
    run_at: Option<Timestamp>,
    attempt: Option<u32>,
    worker_id: Option<String>,
    error: Option<JobError>,
    retry_at: Option<Timestamp>,
    #[serde(default)]
    cancel_requested: bool,
    previous_status: Option<JobStatus>,
    #[serde(default)]
    checkpoint_cleared: bool,
    result: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct LogFields {
    line: String,
    attempt: u32,
}

#[derive(Serialize, Deserialize)]
struct CheckpointFields {
    checkpoint: Value,
}

impl Change {
    pub fn kind(&self) -> EventKind {
        match self {
            Change::Progress(_) => EventKind::Progress,
            Change::Log { .. } => EventKind::Log,
            Change::Checkpoint { .. } => EventKind::Checkpoint,
            Change::Webhook(_) => EventKind::Webhook,
            Change::Completed { .. } => EventKind::Result,
            Change::RetryScheduled { .. } | Change::Failed { .. } => EventKind::Failure,
            Change::Submitted { .. }
            | Change::Claimed { .. }
            | Change::CancelRequested
            | Change::Canceled { .. }
            | Change::Released
            | Change::Retried { .. } => EventKind::Status,
        }
    }

    /// The job's status right after the change.
    pub fn status(&self) -> JobStatus {
        match self {
            Change::Submitted { .. }
            | Change::RetryScheduled { .. }
            | Change::Released
            | Change::Retried { .. } => JobStatus::New,
            Change::Claimed { .. }
            | Change::Progress(_)
            | Change::Log { .. }
            | Change::Checkpoint { .. }
            | Change::CancelRequested => JobStatus::Running,
            Change::Completed { .. } => JobStatus::Completed,
            Change::Failed { .. } => JobStatus::Failed,
            Change::Canceled { .. } => JobStatus::Canceled,
            Change::Webhook(record) => record.status,
        }
    }

    /// The error the change records, if any.
    pub fn error(&self) -> Option<&JobError> {
        match self {
            Change::RetryScheduled { error, .. } | Change::Failed { error } => Some(error),
            Change::Canceled { error, .. } => error.as_ref(),
            _ => None,
        }
    }

    /// The event's `data`, as stored and sent.
    pub fn data(&self) -> Value {
        let status = self.status();
        match self {
            Change::Submitted { run_at } => {
                json!({"status": status, "reason": SUBMITTED, "run_at": run_at})
            }
            Change::Claimed { attempt, worker_id } => {
                json!({"status": status, "attempt": attempt, "worker_id": worker_id})
            }
            Change::Progress(progress) => {
                serde_json::to_value(progress).expect("progress serializes")
            }
            Change::Log { line, attempt } => json!({"line": line, "attempt": attempt}),
            Change::Checkpoint { checkpoint } => json!({ "checkpoint": checkpoint }),
            Change::Completed { attempt, result } => {
                json!({"status": status, "attempt": attempt, "result": result})
            }
            Change::RetryScheduled { error, retry_at } => {
                json!({"status": status, "error": error, "retry_at": retry_at})
            }
            Change::Failed { error } => json!({"status": status, "error": error}),
            Change::CancelRequested => json!({"status": status, "cancel_requested": true}),
            Change::Canceled {
                reason,
                attempt,
                error,
            } => {
                let mut data = Map::new();
                data.insert("status".into(), json!(status));
                data.insert("reason".into(), json!(reason));
                if let Some(attempt) = attempt {
                    data.insert("attempt".into(), json!(attempt));
                }
                if let Some(error) = error {
                    data.insert("error".into(), json!(error));
                }
                Value::Object(data)
            }
            Change::Released => json!({"status": status, "reason": RELEASED_REASON}),
            Change::Retried {
                previous_status,
                checkpoint_cleared,
            } => json!({"status": status, "reason": RETRIED,
                        "previous_status": previous_status,
                        "checkpoint_cleared": checkpoint_cleared}),
            Change::Webhook(record) => {
                serde_json::to_value(record).expect("a delivery record serializes")
            }
        }
    }

    /// Reads a stored event back: the inverse of [`Change::kind`] and
    /// [`Change::data`].
    pub fn decode(kind: EventKind, data: &Value) -> Result<Change, UndecodableEvent> {
        let refuse = |why: String| UndecodableEvent {
            kind: kind.as_str(),
            data: data.to_string(),
            why,
        };
        let parse = |data: &Value| {
            serde_json::from_value::<Fields>(data.clone()).map_err(|err| refuse(err.to_string()))
        };
        let missing = |field: &str| refuse(format!("it has no {field}"));
        match kind {
            EventKind::Progress => serde_json::from_value(data.clone())
                .map(Change::Progress)
                .map_err(|err| refuse(err.to_string())),
            EventKind::Log => serde_json::from_value::<LogFields>(data.clone())
                .map(|f| Change::Log {
                    line: f.line,
                    attempt: f.attempt,
                })
                .map_err(|err| refuse(err.to_string())),
            EventKind::Webhook => serde_json::from_value(data.clone())
                .map(Change::Webhook)
                .map_err(|err| refuse(err.to_string())),
            EventKind::Checkpoint => serde_json::from_value::<CheckpointFields>(data.clone())
                .map(|f| Change::Checkpoint {
                    checkpoint: f.checkpoint,
                })
                .map_err(|err| refuse(err.to_string())),
            EventKind::Result => {
                let f = parse(data)?;
                Ok(Change::Completed {
                    attempt: f.attempt.ok_or_else(|| missing("attempt"))?,
                    result: f.result.unwrap_or(Value::Null),
                })
            }
            EventKind::Failure => {
                let f = parse(data)?;
                let error = f.error.ok_or_else(|| missing("error"))?;
                match f.status {
                    JobStatus::New => Ok(Change::RetryScheduled {
                        error,
                        retry_at: f.retry_at.ok_or_else(|| missing("retry_at"))?,
                    }),
                    JobStatus::Failed => Ok(Change::Failed { error }),
                    other => Err(refuse(format!("a failure cannot leave a job {other}"))),
                }
            }
            EventKind::Status => {
                let f = parse(data)?;
                match (f.status, f.reason.as_deref()) {
                    (JobStatus::New, Some(SUBMITTED)) => Ok(Change::Submitted {
                        run_at: f.run_at.ok_or_else(|| missing("run_at"))?,
                    }),
                    (JobStatus::New, Some(RETRIED)) => Ok(Change::Retried {
                        previous_status: f
                            .previous_status
                            .ok_or_else(|| missing("previous_status"))?,
                        checkpoint_cleared: f.checkpoint_cleared,
                    }),
                    (JobStatus::New, Some(RELEASED_REASON)) => Ok(Change::Released),
                    (JobStatus::Running, _) if f.cancel_requested => Ok(Change::CancelRequested),
                    (JobStatus::Running, _) => Ok(Change::Claimed {
                        attempt: f.attempt.ok_or_else(|| missing("attempt"))?,
                        worker_id: f.worker_id.ok_or_else(|| missing("worker_id"))?,
                    }),
                    (JobStatus::Canceled, reason) => Ok(Change::Canceled {
                        reason: reason.ok_or_else(|| missing("reason"))?.to_owned(),
                        attempt: f.attempt,
                        error: f.error,
                    }),
                    (status, reason) => Err(refuse(format!(
                        "no status change leads to {status} for the reason {reason:?}"
                    ))),
                }
            }
        }
    }
}

/// How a change moves its job between statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusMove {
    /// `None` when the change created the job.
    pub from: Option<JobStatus>,
    pub to: JobStatus,
}

impl Change {
    /// The move between statuses the change makes; `None` when the status
    /// stays (progress, a log line, a checkpoint, a cancel request).
    pub fn status_move(&self) -> Option<StatusMove> {
        let to = self.status();
        let from = match self {
            Change::Submitted { .. } => None,
            Change::Claimed { .. } => Some(JobStatus::New),
            Change::Progress(_)
            | Change::Log { .. }
            | Change::Checkpoint { .. }
            | Change::Webhook(_)
            | Change::CancelRequested => return None,
            Change::Completed { .. }
            | Change::RetryScheduled { .. }
            | Change::Failed { .. }
            | Change::Released => Some(JobStatus::Running),
            // Canceled while it ran (its handler stopped, or its worker
            // was lost) or before it started.
            Change::Canceled { attempt, error, .. } => {
                Some(if attempt.is_some() || error.is_some() {
                    JobStatus::Running
                } else {
                    JobStatus::New
                })
            }
            Change::Retried {
                previous_status, ..
            } => Some(*previous_status),
        };
        Some(StatusMove { from, to })
    }
}

/// The JSON Schema of an event's `data`: one branch per change, each
/// closed (no other fields), so exactly one branch fits any event. The
/// OpenAPI document and the SSE documentation show it; a test holds every
/// change's [`Change::data`] to it.
pub fn data_schema() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let attempt = json!({"type": "integer", "minimum": 1});
    let error = json!({
        "type": "object",
        "required": ["kind", "message", "retryable", "attempt"],
        "properties": {
            "kind": {"type": "string"},
            "message": {"type": "string"},
            "retryable": {"type": "boolean"},
            "attempt": {"type": "integer", "minimum": 0},
        },
    });
    let status = |s: JobStatus| json!({"const": s.as_str()});
    let branch = |title: &str, required: &[&str], properties: Value| {
        json!({
            "title": title,
            "type": "object",
            "required": required,
            "properties": properties,
            "additionalProperties": false,
        })
    };
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    json!({
        "description": "What the event records; its `kind` and `status` say which branch.",
        "oneOf": [
            branch("submitted", &["status", "reason", "run_at"], json!({
                "status": status(JobStatus::New), "reason": {"const": SUBMITTED}, "run_at": time,
            })),
            branch("claimed", &["status", "attempt", "worker_id"], json!({
                "status": status(JobStatus::Running), "attempt": attempt,
                "worker_id": {"type": "string"},
            })),
            branch("progress", &[], json!({
                "fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "message": {"type": ["string", "null"]},
                "stage": {"type": ["string", "null"]},
                "data": {},
                "updated": {"anyOf": [time, {"type": "null"}]},
            })),
            branch("log", &["line", "attempt"], json!({
                "line": {"type": "string"}, "attempt": attempt,
            })),
            branch("checkpoint", &["checkpoint"], json!({"checkpoint": {}})),
            branch("completed", &["status", "attempt", "result"], json!({
                "status": status(JobStatus::Completed), "attempt": attempt, "result": {},
            })),
            branch("retry scheduled", &["status", "error", "retry_at"], json!({
                "status": status(JobStatus::New), "error": error, "retry_at": time,
            })),
            branch("failed", &["status", "error"], json!({
                "status": status(JobStatus::Failed), "error": error,
            })),
            branch("cancel requested", &["status", "cancel_requested"], json!({
                "status": status(JobStatus::Running), "cancel_requested": {"const": true},
            })),
            branch("canceled", &["status", "reason"], json!({
                "status": status(JobStatus::Canceled), "reason": {"type": "string"},
                "attempt": attempt, "error": error,
            })),
            branch("released", &["status", "reason"], json!({
                "status": status(JobStatus::New), "reason": {"const": RELEASED_REASON},
            })),
            branch("retried", &["status", "reason", "previous_status", "checkpoint_cleared"], json!({
                "status": status(JobStatus::New), "reason": {"const": RETRIED},
                "previous_status": {"enum": statuses},
                "checkpoint_cleared": {"type": "boolean"},
            })),
            branch("webhook", &["status", "delivery_id", "event_id", "url", "attempt", "state"], json!({
                "status": {"enum": statuses}, "delivery_id": {"type": "integer"},
                "event_id": {"type": "integer"}, "url": {"type": "string"}, "attempt": attempt,
                "state": {"enum": ["delivered", "retrying", "failed"]},
                "http_status": {"type": "integer", "minimum": 100, "maximum": 999},
                "error": {"type": "string"}, "retry_at": time,
            })),
        ],
    })
}

/// What becomes of a running job whose worker stopped renewing its lease:
/// a pending cancel ends it canceled; otherwise the lost attempt counts as
/// a retryable failure, retried at once while attempts remain.
pub fn on_lease_expired(
    attempt: u32,
    max_attempts: u32,
    cancel_requested: bool,
    now: Timestamp,
) -> Change {
    let error = JobError {
        kind: error_kind::LEASE_EXPIRED.into(),
        message: format!("attempt {attempt} was abandoned: its worker stopped renewing the lease"),
        retryable: true,
        attempt,
    };
    if cancel_requested {
        Change::Canceled {
            reason: WORKER_LOST_REASON.into(),
            attempt: None,
            error: Some(error),
        }
    } else if attempt >= max_attempts {
        Change::Failed { error }
    } else {
        Change::RetryScheduled {
            error,
            retry_at: now,
        }
    }
}

/// What a cancel does to a job in `status`: a queued job ends at once, a
/// running one is asked to stop (its worker records how it ended); a
/// finished job cannot be canceled.
pub fn on_cancel(status: JobStatus, reason: &str) -> Result<Change, IllegalTransition> {
    status.apply(Transition::Cancel)?;
    Ok(match status {
        JobStatus::Running => Change::CancelRequested,
        _ => Change::Canceled {
            reason: reason.to_owned(),
            attempt: None,
            error: None,
        },
    })
}

/// What a manual retry of a job in `status` records.
pub fn on_retry(status: JobStatus, clear_checkpoint: bool) -> Result<Change, IllegalTransition> {
    status.apply(Transition::Retry)?;
    Ok(Change::Retried {
        previous_status: status,
        checkpoint_cleared: clear_checkpoint,
    })
}

impl Progress {
    /// The progress as stored: stamped with `now`, the fraction kept
    /// within 0 to 1 (a fraction that is not a number reads as 0).
    pub fn as_reported(&self, now: Timestamp) -> Progress {
        let mut progress = self.clone();
        progress.updated = Some(now);
        progress.fraction = progress.fraction.map(|fraction| {
            if fraction.is_finite() {
                fraction.clamp(0.0, 1.0)
            } else {
                0.0
            }
        });
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_micros(micros)
    }

    fn any_time() -> impl Strategy<Value = Timestamp> {
        (0i64..4_000_000_000_000_000).prop_map(at)
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(|s| json!(s)),
            (".{0,6}", any::<bool>()).prop_map(|(k, b)| json!({ k: [b, null] })),
        ]
    }

    use crate::webhook::DeliveryState;

    fn any_error() -> impl Strategy<Value = JobError> {
        ("[a-z_]{1,12}", ".{0,30}", any::<bool>(), 1u32..100).prop_map(
            |(kind, message, retryable, attempt)| JobError {
                kind,
                message,
                retryable,
                attempt,
            },
        )
    }

    fn any_status() -> impl Strategy<Value = JobStatus> {
        prop::sample::select(JobStatus::ALL.to_vec())
    }

    fn any_change() -> impl Strategy<Value = Change> {
        prop_oneof![
            any_time().prop_map(|run_at| Change::Submitted { run_at }),
            (1u32..100, "[a-z0-9-]{1,20}")
                .prop_map(|(attempt, worker_id)| Change::Claimed { attempt, worker_id }),
            (
                prop::option::of((0u32..=8).prop_map(|n| f64::from(n) / 8.0)),
                prop::option::of(".{0,20}"),
                prop::option::of("[a-z]{1,8}"),
                // `data: null` and no data read the same: progress never
                // tells them apart.
                prop::option::of(any_value().prop_filter("not null", |v| !v.is_null())),
                any_time(),
            )
                .prop_map(|(fraction, message, stage, data, updated)| {
                    Change::Progress(Progress {
                        fraction,
                        message,
                        stage,
                        data,
                        updated: Some(updated),
                    })
                }),
            (".{0,40}", 1u32..100).prop_map(|(line, attempt)| Change::Log { line, attempt }),
            any_value().prop_map(|checkpoint| Change::Checkpoint { checkpoint }),
            (1u32..100, any_value())
                .prop_map(|(attempt, result)| Change::Completed { attempt, result }),
            (any_error(), any_time())
                .prop_map(|(error, retry_at)| Change::RetryScheduled { error, retry_at }),
            any_error().prop_map(|error| Change::Failed { error }),
            Just(Change::CancelRequested),
            (
                ".{0,30}",
                prop::option::of(1u32..100),
                prop::option::of(any_error())
            )
                .prop_map(|(reason, attempt, error)| Change::Canceled {
                    reason,
                    attempt,
                    error
                }),
            Just(Change::Released),
            (any_status(), any::<bool>()).prop_map(|(previous_status, checkpoint_cleared)| {
                Change::Retried {
                    previous_status,
                    checkpoint_cleared,
                }
            }),
            (
                any_status(),
                (1i64..1_000_000, 1i64..1_000_000, 1u32..20),
                prop::sample::select(vec![
                    DeliveryState::Delivered,
                    DeliveryState::Retrying,
                    DeliveryState::Failed,
                ]),
                prop::option::of(100u16..600),
                prop::option::of(".{0,30}"),
                prop::option::of(any_time()),
            )
                .prop_map(
                    |(
                        status,
                        (delivery_id, event_id, attempt),
                        state,
                        http_status,
                        error,
                        retry_at,
                    )| {
                        Change::Webhook(DeliveryRecord {
                            status,
                            delivery_id,
                            event_id,
                            url: "https://hooks.example.com/errand".into(),
                            attempt,
                            state,
                            http_status,
                            error,
                            retry_at,
                        })
                    }
                ),
        ]
    }

    proptest! {
        #[test]
        fn every_change_reads_back_as_itself(change in any_change()) {
            let data = change.data();
            prop_assert_eq!(data.get("status").is_some(), !matches!(
                change,
                Change::Progress(_) | Change::Log { .. } | Change::Checkpoint { .. }
            ));
            let decoded = Change::decode(change.kind(), &data).unwrap();
            prop_assert_eq!(decoded, change);
        }

        #[test]
        fn every_change_fits_exactly_one_branch_of_the_data_schema(change in any_change()) {
            let data = change.data();
            let branches = data_schema()["oneOf"].as_array().unwrap().clone();
            let fits: Vec<String> = branches
                .iter()
                .filter(|branch| jsonschema::is_valid(branch, &data))
                .map(|branch| branch["title"].to_string())
                .collect();
            prop_assert_eq!(fits.len(), 1, "{} fits {:?}", data, fits);
        }

        #[test]
        fn an_event_tells_its_status_move_without_a_full_decode(change in any_change()) {
            let event = crate::JobEvent {
                id: 1,
                job_id: crate::JobId::from("j".to_owned()),
                seq: 1,
                kind: change.kind(),
                status: change.status(),
                app: "a".into(),
                command: "c".into(),
                data: change.data(),
                at: at(0),
            };
            prop_assert_eq!(event.status_move(), change.status_move());
        }

        #[test]
        fn a_status_in_the_data_is_the_status_the_change_leads_to(change in any_change()) {
            if let Some(status) = change.data().get("status") {
                prop_assert_eq!(status, &json!(change.status()));
            }
        }

        #[test]
        fn a_lost_lease_retries_while_attempts_remain_unless_a_cancel_waits(
            attempt in 1u32..30, max in 1u32..30, cancel in any::<bool>(), now in any_time()
        ) {
            let change = on_lease_expired(attempt, max, cancel, now);
            let transition = Transition::LeaseExpired { will_retry: change.status() == JobStatus::New };
            match &change {
                Change::Canceled { error: Some(error), .. } => {
                    prop_assert!(cancel);
                    prop_assert_eq!(error.attempt, attempt);
                }
                Change::Failed { error } => {
                    prop_assert!(!cancel && attempt >= max);
                    prop_assert_eq!(error.kind.as_str(), error_kind::LEASE_EXPIRED);
                    prop_assert_eq!(JobStatus::Running.apply(transition), Ok(JobStatus::Failed));
                }
                Change::RetryScheduled { error, retry_at } => {
                    prop_assert!(!cancel && attempt < max);
                    prop_assert!(error.retryable);
                    prop_assert_eq!(*retry_at, now);
                    prop_assert_eq!(JobStatus::Running.apply(transition), Ok(JobStatus::New));
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }

        #[test]
        fn a_cancel_ends_a_queued_job_asks_a_running_one_and_refuses_the_rest(
            status in any_status()
        ) {
            match (status, on_cancel(status, "no longer needed")) {
                (JobStatus::New, Ok(Change::Canceled { reason, attempt: None, error: None })) => {
                    prop_assert_eq!(reason, "no longer needed");
                }
                (JobStatus::Running, Ok(Change::CancelRequested)) => {}
                (status, Err(refused)) => prop_assert!(status.is_terminal(), "{}", refused),
                (status, answer) => prop_assert!(false, "{} gave {:?}", status, answer),
            }
        }

        #[test]
        fn only_a_failed_or_canceled_job_can_be_retried(status in any_status(), clear in any::<bool>()) {
            let retried = on_retry(status, clear);
            prop_assert_eq!(
                retried.is_ok(),
                matches!(status, JobStatus::Failed | JobStatus::Canceled)
            );
            if let Ok(change) = retried {
                prop_assert_eq!(change.status(), JobStatus::New);
            }
        }

        #[test]
        fn reported_progress_stays_between_zero_and_one(fraction in any::<f64>(), now in any_time()) {
            let progress = Progress { fraction: Some(fraction), ..Progress::default() };
            let stored = progress.as_reported(now);
            let kept = stored.fraction.unwrap();
            prop_assert!((0.0..=1.0).contains(&kept));
            if (0.0..=1.0).contains(&fraction) {
                prop_assert_eq!(kept, fraction);
            }
            prop_assert_eq!(stored.updated, Some(now));
        }
    }

    /// Events written before the change types existed must still read: the
    /// stored form is these exact objects.
    #[test]
    fn the_stored_form_is_the_one_existing_logs_hold() {
        let error = json!({"kind": "handler", "message": "boom", "retryable": true, "attempt": 2});
        let cases = [
            (
                EventKind::Status,
                json!({"status": "new", "reason": "submitted", "run_at": "2026-01-02T03:04:05.000006Z"}),
            ),
            (
                EventKind::Status,
                json!({"status": "running", "attempt": 2, "worker_id": "w-1"}),
            ),
            (
                EventKind::Result,
                json!({"status": "completed", "attempt": 2, "result": {"ok": true}}),
            ),
            (
                EventKind::Failure,
                json!({"status": "new", "error": error, "retry_at": "2026-01-02T03:04:05.000006Z"}),
            ),
            (
                EventKind::Failure,
                json!({"status": "failed", "error": error}),
            ),
            (
                EventKind::Status,
                json!({"status": "canceled", "reason": "stop", "attempt": 2}),
            ),
            (
                EventKind::Status,
                json!({"status": "canceled", "reason": WORKER_LOST_REASON, "error": error}),
            ),
            (
                EventKind::Status,
                json!({"status": "new", "reason": RELEASED_REASON}),
            ),
            (
                EventKind::Status,
                json!({"status": "running", "cancel_requested": true}),
            ),
            (
                EventKind::Status,
                json!({"status": "new", "reason": "retried", "previous_status": "failed", "checkpoint_cleared": false}),
            ),
            (EventKind::Log, json!({"line": "hello", "attempt": 1})),
            (EventKind::Checkpoint, json!({"checkpoint": {"line": 3}})),
            (
                EventKind::Progress,
                json!({"fraction": 0.5, "message": "half", "stage": null, "data": null,
                       "updated": "2026-01-02T03:04:05.000006Z"}),
            ),
        ];
        for (kind, data) in cases {
            let change = Change::decode(kind, &data).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(change.kind(), kind);
            assert_eq!(change.data(), data, "{change:?}");
        }
    }

    #[test]
    fn data_that_is_no_change_is_refused_saying_why() {
        let err = Change::decode(EventKind::Failure, &json!({"status": "completed"})).unwrap_err();
        assert!(err.to_string().contains("no error"), "{err}");
        let err = Change::decode(EventKind::Status, &json!({"status": "new"})).unwrap_err();
        assert!(err.to_string().contains("no status change"), "{err}");
        assert!(Change::decode(EventKind::Log, &json!({"line": 3})).is_err());
    }
}
