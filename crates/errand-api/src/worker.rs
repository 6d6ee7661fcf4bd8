//! The worker protocol's wire types (`/api/worker/v1/...`): how a worker
//! in another process or language registers, claims jobs, renews leases,
//! reports progress and records outcomes over HTTP.
//!
//! Every call that touches a job names the attempt it holds
//! ([`AttemptRef`]); the server checks it in the same transaction as the
//! write, so a worker that lost its lease changes nothing and is told so
//! (`lease_lost`) in the item's place of the answer.

use std::collections::BTreeMap;

use errand_core::{Job, JobId, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::ErrorDetail;

/// The protocol version these types describe; the path carries it
/// (`/api/worker/v1`), so a later version can be served beside it.
pub const WORKER_PROTOCOL_VERSION: u32 = 1;

fn default_queues() -> Vec<String> {
    vec![errand_store::DEFAULT_QUEUE.to_owned()]
}

/// The schema of a list of queues: 1 to 100 names, none empty.
fn queues_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        )
        .min_items(Some(1))
        .max_items(Some(100))
        .build()
}

/// The schema of a claim's commands: full names (`app.name`), or null.
fn commands_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    let names = ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                // app.name: an app without a dot, then a name.
                .pattern(Some(r"^[^.]+\.[\s\S]+$")),
        )
        .max_items(Some(1000));
    Schema::OneOf(
        OneOfBuilder::new()
            .item(names)
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// The schema of `limits`: command name → jobs of it at most (0 to 10000).
fn limits_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let room = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(10000));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(room.into())))
        .build()
}

/// A whole number from `MIN` to `MAX` (written `3` or `3.0`).
fn bounded<'de, D, T, const MIN: i64, const MAX: i64>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    let whole: i64 = errand_core::whole::integer(deserializer)?;
    if !(MIN..=MAX).contains(&whole) {
        return Err(serde::de::Error::custom(format!(
            "{whole} is not from {MIN} to {MAX}"
        )));
    }
    T::try_from(whole).map_err(|_| serde::de::Error::custom("out of range"))
}

fn optional_bounded<'de, D, T, const MIN: i64, const MAX: i64>(
    deserializer: D,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => bounded::<_, T, MIN, MAX>(Value::Number(number))
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn room_per_command<'de, D>(deserializer: D) -> Result<BTreeMap<String, usize>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    BTreeMap::<String, serde_json::Number>::deserialize(deserializer)?
        .into_iter()
        .map(|(command, room)| {
            bounded::<_, usize, 0, 10000>(Value::Number(room))
                .map(|room| (command, room))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

/// `POST /api/worker/v1/register`: a worker and the commands it runs.
/// Registering again (after `unknown_worker`, or with new commands)
/// replaces what was published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Unique per worker process; the server makes one when left out.
    #[schema(min_length = 1, max_length = 200)]
    pub worker_id: Option<String>,
    /// Shown on the Workers page.
    #[schema(max_length = 200)]
    pub host: Option<String>,
    #[serde(default, deserialize_with = "optional_bounded::<_, _, 0, 2147483647>")]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub pid: Option<u32>,
    /// The queues it claims from (default `["default"]`).
    #[serde(default = "default_queues")]
    #[schema(schema_with = queues_schema)]
    pub queues: Vec<String>,
    /// Jobs it runs at once.
    #[serde(deserialize_with = "bounded::<_, _, 1, 10000>")]
    #[schema(minimum = 1, maximum = 10000)]
    pub slots: usize,
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub commands: Vec<CommandSpec>,
}

/// A command as a worker describes it: submits are checked against
/// `input_schema` by every server, and jobs get `defaults` unless the
/// submit overrides them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,100}$")]
    pub app: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,100}$")]
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the input (any object when left out). A schema that
    /// does not compile is refused.
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
    /// JSON Schema of the result, published for clients.
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    #[serde(default)]
    pub defaults: CommandDefaultsSpec,
}

/// A command's defaults; each left out takes the server's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandDefaultsSpec {
    /// An attempt fails past this many seconds.
    #[schema(exclusive_minimum = 0, maximum = 315576000)]
    pub timeout_secs: Option<f64>,
    #[serde(default, deserialize_with = "crate::retry_object")]
    pub retry: Option<RetryPolicy>,
    #[schema(min_length = 1)]
    pub queue: Option<String>,
    #[serde(default, deserialize_with = "errand_core::whole::optional_integer")]
    pub priority: Option<i32>,
    /// Jobs of this command one worker runs at once.
    #[serde(default, deserialize_with = "optional_bounded::<_, _, 1, 10000>")]
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrency: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub worker_id: String,
    /// The protocol version the server speaks on this path.
    pub protocol: u32,
    /// The lease a claim gives when it names none.
    pub lease_secs: f64,
    /// How often to renew leases: well inside the lease.
    pub heartbeat_secs: f64,
    /// The longest `wait_secs` a claim may hold.
    pub max_wait_secs: f64,
}

/// `POST /api/worker/v1/claim`: up to `limit` jobs, waiting up to
/// `wait_secs` for one when there is none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub worker_id: String,
    #[serde(default = "default_queues")]
    #[schema(schema_with = queues_schema)]
    pub queues: Vec<String>,
    /// Full names (`app.name`) it may claim; any command when left out.
    #[schema(schema_with = commands_schema)]
    pub commands: Option<Vec<String>>,
    /// Room left per command that has a concurrency limit
    /// (`{"app.name": 1}`): no more jobs of it than that.
    #[serde(default, deserialize_with = "room_per_command")]
    #[schema(schema_with = limits_schema)]
    pub limits: BTreeMap<String, usize>,
    /// Jobs at most: the worker's free slots.
    #[serde(deserialize_with = "bounded::<_, _, 1, 1000>")]
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: usize,
    /// Long-poll: with no job ready, wait this long for one (cut to the
    /// server's `max_wait_secs`). The answer comes as soon as one is.
    #[schema(minimum = 0)]
    pub wait_secs: Option<f64>,
    /// The lease each claimed job gets, renewed by heartbeats.
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    /// Running now, each on attempt `attempt` for this worker.
    pub jobs: Vec<Job>,
}

/// One attempt of one job, as the worker holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptRef {
    pub job_id: JobId,
    #[serde(deserialize_with = "bounded::<_, _, 1, 10000>")]
    #[schema(minimum = 1, maximum = 10000)]
    pub attempt: u32,
}

/// `POST /api/worker/v1/heartbeat`: renews the leases of every job the
/// worker runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub worker_id: String,
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub running: Vec<AttemptRef>,
    #[schema(minimum = 1, maximum = 3600)]
    pub lease_secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Stop these: their cancel was requested. Report `canceled` (or the
    /// result, if the work was done anyway).
    pub cancel_requested: Vec<JobId>,
    /// Stop these and report nothing: the worker no longer holds them.
    pub lost: Vec<JobId>,
    /// The server had dropped this worker (silent too long): register
    /// again.
    pub unknown_worker: bool,
}

/// `POST /api/worker/v1/updates`: progress and log lines of running jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatesRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub worker_id: String,
    #[schema(max_items = 1000)]
    pub updates: Vec<AttemptUpdate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptUpdate {
    pub job_id: JobId,
    #[serde(deserialize_with = "bounded::<_, _, 1, 10000>")]
    #[schema(minimum = 1, maximum = 10000)]
    pub attempt: u32,
    /// Saved first, durable once the answer says `ok`: every later attempt
    /// of the job starts with it (`null` saves nothing).
    pub checkpoint: Option<Value>,
    pub progress: Option<ProgressReport>,
    /// Appended to the job's event log in this order, after the progress.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub logs: Vec<String>,
}

/// A job's progress; the server stamps the time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    /// From 0 to 1 (clamped).
    pub fraction: Option<f64>,
    pub message: Option<String>,
    pub stage: Option<String>,
    pub data: Option<Value>,
}

/// `POST /api/worker/v1/finish`: how attempts ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub worker_id: String,
    #[schema(max_items = 1000)]
    pub outcomes: Vec<AttemptOutcome>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptOutcome {
    pub job_id: JobId,
    #[serde(deserialize_with = "bounded::<_, _, 1, 10000>")]
    #[schema(minimum = 1, maximum = 10000)]
    pub attempt: u32,
    pub outcome: OutcomeKind,
    /// The result, for `completed` (null when left out).
    pub result: Option<Value>,
    /// What went wrong, for `failed` (a generic message when left out).
    pub error: Option<FailureReport>,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Completed,
    /// Tried again later if the error is retryable and the job's retry
    /// policy allows, else the job fails.
    Failed,
    /// The handler stopped after a cancel request.
    Canceled,
    /// Handed back unfinished (graceful shutdown): back to `new`, the
    /// attempt not counted.
    Released,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    pub message: String,
    /// The error's kind (`handler` when left out): a retry policy's
    /// `retry_on` / `stop_on` name kinds.
    #[schema(min_length = 1)]
    pub kind: Option<String>,
    /// False for an error that no retry can fix (default true).
    pub retryable: Option<bool>,
}

/// The answer to a batch: one result per item, in the items' order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemResults {
    pub results: Vec<ItemResult>,
}

/// `{"ok": true}`, or `{"ok": false, "error": {...}}` with the code
/// `lease_lost` (the attempt no longer holds the job; nothing changed),
/// `job_not_found` or `illegal_transition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemResult {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /api/worker/v1/deregister`: the worker is leaving. Jobs it still
/// holds are released first (back to `new`, attempt not counted) when
/// listed in `release`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeregisterRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub worker_id: String,
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub release: Vec<AttemptRef>,
}
