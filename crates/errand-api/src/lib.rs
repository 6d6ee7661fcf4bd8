//! errand's HTTP wire types, shared by the server, the client and
//! the tests, so all of them speak exactly the same JSON.
//!
//! Jobs, events, commands, stats and workers go over the wire as the core
//! and store types themselves ([`Job`], [`JobEvent`], [`CommandInfo`],
//! [`CommandStats`], [`WorkerInfo`]); this crate adds the requests and the
//! envelopes around them.

pub mod worker;

use std::collections::BTreeMap;

pub use errand_core::{CommandLimit, MissedTicks};
pub use errand_core::{Job, JobEvent, JobId, JobStatus, RetryPolicy, Timestamp};
pub use errand_store::{CommandInfo, CommandStats, QueueInfo, ScheduleInfo, WorkerInfo};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /api/commands/jobs`: Open Notebook's body, plus `context` and
/// `options`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The command's name (`generate_podcast`), or its full name
    /// (`open_notebook.generate_podcast`) when `app` is left out.
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The command's input, a JSON object (`{}` for none); checked
    /// against the command's JSON Schema.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Handed to the handler as is (user, tenant, request id...). Its
    /// top-level strings, numbers and booleans (up to 256 characters) can
    /// be filtered on: `GET /api/commands/jobs?context.KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// What the job can be found by (`?tag=`): up to 20, each 1 to 100
    /// characters with no control characters, kept once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 20, value_type = Vec<errand_core::labels::TagSchema>)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SubmitOptions>,
}

/// Per-job overrides of the command's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitOptions {
    #[serde(default, deserialize_with = "errand_core::whole::optional_integer")]
    pub priority: Option<i32>,
    #[schema(min_length = 1)]
    pub queue: Option<String>,
    /// Not before this time (RFC 3339). Not with `delay_secs`.
    pub run_at: Option<Timestamp>,
    /// Not before this many seconds from now (at most ten years).
    #[schema(minimum = 0, maximum = 315576000)]
    pub delay_secs: Option<f64>,
    /// The attempt fails past this many seconds (at most ten years).
    #[schema(exclusive_minimum = 0, maximum = 315576000)]
    pub timeout_secs: Option<f64>,
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "errand_core::whole::optional_integer")]
    pub max_attempts: Option<u32>,
    /// A second submit with the same key returns the first job.
    pub idempotency_key: Option<String>,
    /// A whole retry policy; `max_attempts` above still wins.
    #[serde(default, deserialize_with = "retry_object")]
    pub retry: Option<RetryPolicy>,
    /// Where the server reports the job's end (or, with `"on": "status"`,
    /// every change of status), in place of the command's configured
    /// webhook. The host must be on the server's webhook allow-list.
    pub webhook: Option<errand_core::Webhook>,
}

/// A retry policy, which must be a JSON object: serde would also read a
/// struct from an array (`[]` as every default).
pub(crate) fn retry_object<'de, D>(deserializer: D) -> Result<Option<RetryPolicy>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value @ Value::Object(_)) => serde_json::from_value(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(_) => Err(serde::de::Error::custom("retry must be an object")),
    }
}

/// The answer to a submit (202).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmitResponse {
    pub job_id: JobId,
    /// Always `submitted`, as Open Notebook's clients expect.
    pub status: String,
    pub message: String,
    /// False when an idempotency key matched an existing job.
    pub created: bool,
}

/// `POST /api/commands/jobs/batch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub jobs: Vec<SubmitRequest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    pub jobs: Vec<SubmitResponse>,
}

/// `GET /api/commands/jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/commands/jobs` query parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
// Said outright: the route reads the raw query, so nothing tells utoipa.
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `name` or `app.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_filter: Option<String>,
    /// new, running, completed, failed or canceled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<JobStatus>)]
    pub status_filter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub created_after: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(format = DateTime)]
    pub created_before: Option<String>,
    /// 1 to 1000, default 50.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Jobs carrying this tag; repeat it (`tag=a&tag=b`) for jobs carrying
    /// all of them. Read by [`ListQuery::parse`]; the route declares it in
    /// the OpenAPI document.
    #[serde(skip)]
    #[param(ignore)]
    pub tag: Vec<String>,
    /// `context.KEY=VALUE`: jobs whose context has KEY with this value,
    /// compared as text (`context.notebook_id=42` matches `42` and `"42"`).
    /// Any number of them; not in the schema, whose parameters have fixed
    /// names.
    #[serde(skip)]
    #[param(ignore)]
    pub context: Vec<(String, String)>,
}

impl ListQuery {
    /// The query's repeated and prefixed parameters (`tag`, `context.KEY`),
    /// which a plain form decoder does not read: append these to the
    /// query string built from the rest.
    pub fn label_pairs(&self) -> Vec<(String, String)> {
        let tags = self.tag.iter().map(|t| ("tag".to_owned(), t.clone()));
        let context = self
            .context
            .iter()
            .map(|(k, v)| (format!("context.{k}"), v.clone()));
        tags.chain(context).collect()
    }

    /// Reads a query string: the named parameters, every `tag` and every
    /// `context.KEY`.
    pub fn parse(query: &str) -> Result<Self, String> {
        let (rest, labels) = LabelFilters::split(query)?;
        let query: Self = decode_query(&rest)?;
        Ok(Self {
            tag: labels.tags,
            context: labels.context,
            ..query
        })
    }
}

/// The repeated and prefixed parameters of a query string (`tag`,
/// `context.KEY`), which a plain form decoder does not read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelFilters {
    pub tags: Vec<String>,
    pub context: Vec<(String, String)>,
}

impl LabelFilters {
    /// Takes the label parameters out of `query`; returns the rest, form
    /// encoded again, and the filters.
    pub fn split(query: &str) -> Result<(String, Self), String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| format!("query string: {e}"))?;
        let (mut labels, mut rest) = (Self::default(), Vec::new());
        for (key, value) in pairs {
            if key == "tag" {
                labels.tags.push(value);
            } else if let Some(name) = key.strip_prefix("context.") {
                labels.context.push((name.to_owned(), value));
            } else {
                rest.push((key, value));
            }
        }
        Ok((
            serde_urlencoded::to_string(rest).expect("pairs encode"),
            labels,
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.context.is_empty()
    }
}

/// Decodes a form-encoded query; an error names the parameter.
pub fn decode_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, String> {
    let decoder = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(decoder).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// `DELETE /api/commands/jobs/{job_id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub job_id: JobId,
    pub cancelled: bool,
    /// `canceled` for a job that had not started; `running` while its
    /// worker stops it (`cancel_requested` is then true).
    pub status: JobStatus,
    pub cancel_requested: bool,
}

/// `POST /api/commands/jobs/cancel`: every job that fits, canceled.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCancelRequest {
    /// `name` or `app.name`.
    #[schema(min_length = 1)]
    pub command: Option<String>,
    #[schema(min_length = 1)]
    pub app: Option<String>,
    #[schema(min_length = 1)]
    pub queue: Option<String>,
    /// `new` or `running`; both when left out.
    pub status: Option<BulkCancelStatus>,
    #[schema(min_length = 1)]
    pub parent_id: Option<String>,
    /// Only jobs whose context has each of these keys with this value
    /// (`{"notebook_id": 42}`: the jobs of notebook 42).
    #[schema(schema_with = context_filter_schema)]
    pub context: Option<serde_json::Map<String, Value>>,
}

/// A context filter: an object with at least one key, or null.
fn context_filter_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .min_properties(Some(1))
        .build()
}

/// The statuses a bulk cancel can take (only jobs that have not ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkCancelStatus {
    New,
    Running,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BulkCancelResponse {
    /// Jobs that had not started: canceled.
    pub canceled: u64,
    /// Running jobs: their workers stop them.
    pub cancel_requested: u64,
}

/// `GET /api/commands/jobs/{job_id}/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<JobEvent>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandList {
    pub commands: Vec<CommandInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsResponse {
    pub commands: Vec<CommandStats>,
}

/// `GET /api/queues`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// `PUT /api/schedules/{name}` (and a `[schedules.NAME]` table in
/// errand.toml): a periodic job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Five fields (minute hour day-of-month month day-of-week), or six
    /// with seconds first: `0 */15 * * * *` is every quarter hour.
    #[schema(min_length = 1, example = "0 0 3 * * *")]
    pub cron: String,
    /// The IANA zone the expression is read in; `UTC` when left out.
    #[schema(example = "Europe/Paris")]
    pub timezone: Option<String>,
    /// What becomes of ticks missed while no server ran: `skip` (the
    /// default) or `run_once`.
    pub missed: Option<MissedTicks>,
    /// Pause or resume along with the definition; left out, a new
    /// schedule runs and an existing one keeps its state.
    pub paused: Option<bool>,
    /// The job each tick submits, as `POST /api/commands/jobs` takes it,
    /// without `run_at` or `idempotency_key` (each tick gives its own).
    pub job: SubmitRequest,
}

/// `PUT /api/limits/{command}` (and a `[limits."APP.NAME"]` table in
/// errand.toml): a command's cluster-wide limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// Count per value of this path into each job (`context.user_id`,
    /// `input.notebook_id`); left out, the command's jobs count together.
    #[schema(example = "context.user_id")]
    pub key: Option<String>,
    /// At most this many running at once (per key).
    #[serde(default, deserialize_with = "errand_core::whole::optional_integer")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_running: Option<u32>,
    /// At most this many starts in any `per_secs` seconds (per key).
    #[serde(default, deserialize_with = "errand_core::whole::optional_integer")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_starts: Option<u32>,
    #[schema(exclusive_minimum = 0, maximum = 31622400)]
    pub per_secs: Option<f64>,
}

/// `GET /api/limits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LimitList {
    pub limits: Vec<CommandLimit>,
}

/// `GET /api/schedules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// `GET /api/commands/registry/debug`, as Open Notebook shapes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegistryDebug {
    pub total_commands: usize,
    /// App → its command names.
    pub commands_by_app: BTreeMap<String, Vec<String>>,
    pub command_items: Vec<CommandInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or for readiness `unavailable` with the reason in `detail`.
    pub status: String,
    pub detail: Option<String>,
}

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`,
    /// `job_not_found`, `illegal_transition`, `payload_too_large`,
    /// `unknown_command`, `invalid_input`, `store_unavailable`, `internal`;
    /// in the worker protocol's item results also `lease_lost`.
    pub code: String,
    /// For people; names the field for `invalid_input`.
    pub message: String,
}
