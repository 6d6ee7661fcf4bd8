//! Parameters and replies of the [`Store`](crate::Store) methods.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::StoreError;
use errand_core::{Job, JobId, JobStatus, MissedTicks, RetryPolicy, Timestamp, Webhook};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use errand_core::Outcome;

pub const DEFAULT_QUEUE: &str = "default";

/// A job to submit, with every scheduling choice already made.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    pub app: String,
    pub command: String,
    pub input: Value,
    pub context: Option<Value>,
    pub priority: i32,
    pub queue: String,
    /// Not before this time; `None` means now.
    pub run_at: Option<Timestamp>,
    pub timeout_secs: Option<f64>,
    /// `retry.max_attempts` is the job's attempt limit.
    pub retry: RetryPolicy,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<JobId>,
    /// What the job can be found by (with its context's plain values).
    pub tags: Vec<String>,
    /// Where to report the job's end (or every change of status). The
    /// server checks the address against its allow-list before a store
    /// sees it.
    pub webhook: Option<Webhook>,
}

impl NewJob {
    pub fn new(app: impl Into<String>, command: impl Into<String>, input: Value) -> Self {
        Self {
            app: app.into(),
            command: command.into(),
            input,
            context: None,
            priority: 0,
            queue: DEFAULT_QUEUE.to_owned(),
            run_at: None,
            timeout_secs: None,
            retry: RetryPolicy::default(),
            idempotency_key: None,
            parent_id: None,
            tags: Vec::new(),
            webhook: None,
        }
    }

    pub fn webhook(mut self, webhook: Webhook) -> Self {
        self.webhook = Some(webhook);
        self
    }

    /// Adds `tags` (kept once each, in the order first given).
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self.tags = errand_core::labels::normalize_tags(std::mem::take(&mut self.tags));
        self
    }

    /// Every label the job is found by: its tags and its context's plain
    /// values.
    pub fn labels(&self) -> Vec<errand_core::Label> {
        errand_core::job_labels(&self.tags, self.context.as_ref())
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn timeout_secs(mut self, secs: f64) -> Self {
        self.timeout_secs = Some(secs);
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.retry.max_attempts = max_attempts;
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub fn context(mut self, context: Value) -> Self {
        self.context = Some(context);
        self
    }

    pub fn parent(mut self, parent: JobId) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// Checks what a store cannot repair later: names, limits, the policy.
    pub fn validate(&self) -> Result<(), String> {
        if self.app.is_empty() || self.command.is_empty() {
            return Err("app and command must not be empty".into());
        }
        if self.queue.is_empty() {
            return Err("queue must not be empty".into());
        }
        if let Some(secs) = self.timeout_secs {
            if !secs.is_finite() || secs <= 0.0 || secs > errand_core::MAX_SPAN_SECS {
                return Err(format!(
                    "timeout_secs must be > 0 and at most 315576000 (ten years), got {secs}"
                ));
            }
        }
        errand_core::labels::validate_tags(&self.tags)?;
        if let Some(webhook) = &self.webhook {
            if webhook.url.is_empty()
                || webhook.url.chars().count() > errand_core::webhook::MAX_WEBHOOK_URL_CHARS
            {
                return Err(format!(
                    "webhook.url must be 1 to {} characters",
                    errand_core::webhook::MAX_WEBHOOK_URL_CHARS
                ));
            }
        }
        self.retry.validate().map_err(|e| e.to_string())
    }
}

/// The answer to a submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitReceipt {
    pub job_id: JobId,
    /// False when the idempotency key matched an existing job.
    pub created: bool,
    pub status: JobStatus,
}

/// What [`Store::finish_and_claim`](crate::Store::finish_and_claim) did:
/// each outcome's answer, in the order given, and the jobs claimed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinishedAndClaimed {
    pub recorded: Vec<Result<(), StoreError>>,
    pub claimed: Vec<Job>,
}

/// Which jobs a worker may claim.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimParams {
    pub worker_id: String,
    /// Claim from these queues (at least one).
    pub queues: Vec<String>,
    /// Only these `app.name` commands; `None` claims any command.
    pub commands: Option<Vec<String>>,
    /// How many jobs at most: the worker's free slots.
    pub limit: usize,
    /// The lease each claimed job gets; renewed by heartbeats.
    pub lease: Duration,
}

impl ClaimParams {
    /// The commands named, read as `app.name`; `None` claims any command.
    pub fn command_names(&self) -> Result<Option<Vec<errand_core::CommandName>>, StoreError> {
        self.commands
            .as_ref()
            .map(|names| {
                names
                    .iter()
                    .map(|full| errand_core::CommandName::parse(full))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| StoreError::Invalid(err.to_string()))
            })
            .transpose()
    }
}

/// Identifies one attempt of one job held by one worker. Every write a
/// worker makes is checked against it (compare-and-set).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    pub job_id: JobId,
    pub attempt: u32,
    pub worker_id: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatParams {
    pub worker_id: String,
    /// The attempts the worker runs now.
    pub running: Vec<Fence>,
    pub lease: Duration,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct HeartbeatReply {
    /// Jobs whose cancel was requested: cancel their tokens.
    pub cancel_requested: Vec<JobId>,
    /// Jobs the worker no longer holds: stop them, record nothing.
    pub lost: Vec<JobId>,
    /// The store had no record of the worker (it was silent too long and
    /// was dropped): it should register again.
    pub unknown_worker: bool,
}

/// Filters and paging for [`Store::list`](crate::Store::list). Newest first.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ListParams {
    pub app: Option<String>,
    pub command: Option<String>,
    pub status: Option<JobStatus>,
    pub queue: Option<String>,
    pub parent_id: Option<JobId>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
    /// Jobs carrying every one of these tags.
    pub tags: Vec<String>,
    /// Jobs whose context has each key with this value, compared as text
    /// (`("notebook_id", "42")` matches `42` and `"42"`).
    pub context: Vec<(String, String)>,
    /// Jobs whose id starts with this (hex digits, as ids are written).
    pub id_prefix: Option<String>,
    /// 1 to 1000; `0` means the default of 50.
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub const MAX_LIST_LIMIT: usize = 1000;
pub const DEFAULT_LIST_LIMIT: usize = 50;

impl ListParams {
    pub fn effective_limit(&self) -> Result<usize, String> {
        match self.limit {
            0 => Ok(DEFAULT_LIST_LIMIT),
            n if n <= MAX_LIST_LIMIT => Ok(n),
            n => Err(format!("limit must be at most {MAX_LIST_LIMIT}, got {n}")),
        }
    }
}

/// One condition of a list query, with the parameters' meaning decided
/// once for every store: `command` may be `name` or `app.name`, and the
/// cursor is the `seq` of the last job of the previous page.
#[derive(Clone, Debug, PartialEq)]
pub enum ListCondition {
    App(String),
    Command(String),
    Status(JobStatus),
    Queue(String),
    Parent(JobId),
    CreatedAfter(Timestamp),
    CreatedBefore(Timestamp),
    /// Jobs inserted before this one (the page cursor).
    SeqBelow(i64),
    /// Jobs with this label (a tag, or a context key's value): an index
    /// lookup in a store's label table, never a scan of the jobs.
    Label(errand_core::Label),
    /// Jobs whose id is at least this.
    IdFrom(String),
    /// Jobs whose id is below this.
    IdBelow(String),
}

impl ListParams {
    /// The conditions the list must meet, or why the request is invalid.
    pub fn conditions(&self) -> Result<Vec<ListCondition>, String> {
        use ListCondition::*;
        let mut conditions = Vec::new();
        if let Some(app) = &self.app {
            conditions.push(App(app.clone()));
        }
        if let Some(command) = &self.command {
            match errand_core::CommandName::parse(command) {
                Ok(full) if self.app.is_none() => {
                    let (app, name) = full.into_parts();
                    conditions.push(App(app));
                    conditions.push(Command(name));
                }
                _ => conditions.push(Command(command.clone())),
            }
        }
        conditions.extend(self.status.map(Status));
        conditions.extend(self.queue.clone().map(Queue));
        conditions.extend(self.parent_id.clone().map(Parent));
        conditions.extend(self.created_after.map(CreatedAfter));
        conditions.extend(self.created_before.map(CreatedBefore));
        for tag in &self.tags {
            errand_core::labels::validate_tag(tag)?;
            conditions.push(Label(errand_core::Label::tag(tag.as_str())));
        }
        for (key, value) in &self.context {
            errand_core::labels::validate_context_filter(key, value)?;
            conditions.push(Label(errand_core::Label::context(key, value.as_str())));
        }
        if let Some(prefix) = &self.id_prefix {
            // Ids are lowercase hex, so those starting with the prefix are
            // the range [prefix, prefix + "g"): an index range.
            if prefix.is_empty()
                || prefix.len() > 32
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
            {
                return Err(format!(
                    "an id prefix is 1 to 32 lowercase hex digits (0-9, a-f), got {prefix:?}"
                ));
            }
            conditions.push(IdFrom(prefix.clone()));
            conditions.push(IdBelow(format!("{prefix}g")));
        }
        if let Some(cursor) = &self.cursor {
            let seq = cursor
                .parse()
                .map_err(|_| format!("cursor {cursor:?} is not one we gave out"))?;
            conditions.push(SeqBelow(seq));
        }
        Ok(conditions)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<errand_core::Job>,
    pub next_cursor: Option<String>,
}

/// Per-command figures for `GET /api/commands/stats`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandStats {
    pub app: String,
    pub command: String,
    /// Jobs by status, every status present (zero when none).
    pub counts: BTreeMap<String, u64>,
    /// Run time (started → finished) of recently finished jobs, in seconds.
    pub mean_run_secs: Option<f64>,
    pub p50_run_secs: Option<f64>,
    pub p95_run_secs: Option<f64>,
    /// failed / (completed + failed).
    pub failure_rate: Option<f64>,
    /// Age of the oldest `new` job whose `run_at` has come, in seconds.
    pub oldest_new_age_secs: Option<f64>,
}

/// Jobs that ended in one minute: the dashboard's throughput chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinishedInMinute {
    /// The minute's first instant (a whole minute since the epoch).
    pub minute: Timestamp,
    pub completed: u64,
    pub failed: u64,
}

/// Defaults a command carries; a submit may override each.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct CommandDefaults {
    pub timeout_secs: Option<f64>,
    pub retry: RetryPolicy,
    pub queue: String,
    pub priority: i32,
    pub max_concurrency: Option<usize>,
}

/// A command as a worker publishes it, so API servers can validate input
/// without linking the handler.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandInfo {
    pub app: String,
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
    /// The JSON Schema of its result, when the worker says (published
    /// for clients; results are not checked against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    pub defaults: CommandDefaults,
    /// The worker that published it last.
    pub worker_id: Option<String>,
    pub updated: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRegistration {
    pub worker_id: String,
    pub host: String,
    pub pid: u32,
    pub queues: Vec<String>,
    pub slots: usize,
    pub commands: Vec<CommandInfo>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub host: String,
    pub pid: u32,
    pub queues: Vec<String>,
    pub commands: Vec<String>,
    pub slots: usize,
    pub running: Vec<JobId>,
    pub started: Timestamp,
    pub last_heartbeat: Timestamp,
}

/// A queue: its depth and whether it is paused.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    /// Paused: it takes submits, and no job of it starts until resumed.
    pub paused: bool,
    pub paused_at: Option<Timestamp>,
    /// Jobs waiting (`new`), due or not.
    pub new: u64,
    pub running: u64,
}

impl QueueInfo {
    /// A queue with no jobs, not paused: what the stores fill in.
    pub fn empty(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            paused: false,
            paused_at: None,
            new: 0,
            running: 0,
        }
    }
}

/// The names of `statuses`, which must all be terminal (a job that has
/// not ended is never pruned).
pub fn terminal_statuses(statuses: &[JobStatus]) -> Result<Vec<&'static str>, crate::StoreError> {
    statuses
        .iter()
        .map(|status| match status.is_terminal() {
            true => Ok(status.as_str()),
            false => Err(crate::StoreError::Invalid(format!(
                "only ended jobs are pruned, not {status} ones"
            ))),
        })
        .collect()
}

/// Nearest-rank percentile `p` (0..1) of sorted values; `None` when empty.
/// Shared by the stores so their stats agree.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A periodic job: when it ticks (a cron expression in a time zone), what
/// each tick submits, and what becomes of ticks missed while no server ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDefinition {
    pub name: String,
    pub cron: String,
    /// An IANA zone name (`UTC`, `Europe/Paris`).
    pub timezone: String,
    pub missed: MissedTicks,
    /// The submit request each tick makes (command, app, input, context,
    /// options), kept as given: the server builds it into a job at each
    /// tick, with the command's defaults of that moment.
    pub job: Value,
}

/// A schedule as stored, with where it stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub missed: MissedTicks,
    /// The submit request each tick makes.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub job: Value,
    /// A paused schedule's ticks go by without a job.
    pub paused: bool,
    /// The next tick; `null` when the expression fires no more.
    pub next_run: Option<Timestamp>,
    /// The last tick taken (with or without a job).
    pub last_tick: Option<Timestamp>,
    /// The job the last job-making tick enqueued.
    pub last_job_id: Option<JobId>,
    /// Why the last tick taken made no job (the command was unknown, its
    /// input no longer fits its schema...), until a tick makes one.
    pub last_error: Option<String>,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// What taking a schedule's due ticks writes: a compare-and-set on the
/// schedule's `next_run` (and paused state), and the job, if any, in the
/// same transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct TakeTick {
    pub name: String,
    /// The `next_run` and paused state the decision was made from.
    pub expected_next_run: Timestamp,
    pub expected_paused: bool,
    /// Where `next_run` moves (`None`: the expression fires no more).
    pub next_run: Option<Timestamp>,
    /// The latest tick taken.
    pub tick: Timestamp,
    pub outcome: TickOutcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TickOutcome {
    /// Submit this job; its idempotency key names the tick.
    Job(Box<NewJob>),
    /// No job: the ticks were missed and skipped, or the schedule is
    /// paused (`reason: None`), or the job could not be built (`reason`
    /// says why, shown as the schedule's `last_error`).
    Skipped { reason: Option<String> },
}

/// Ticks taken by this caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenTick {
    /// The job submitted, when the outcome was one.
    pub job: Option<SubmitReceipt>,
}

impl CommandInfo {
    /// `app.name`.
    pub fn full_name(&self) -> String {
        errand_core::CommandName::new(self.app.as_str(), self.name.as_str()).to_string()
    }
}

impl CommandStats {
    /// `app.name`.
    pub fn full_name(&self) -> String {
        errand_core::CommandName::new(self.app.as_str(), self.command.as_str()).to_string()
    }
}

impl CommandDefaults {
    /// A job of `app.name` with these defaults: the one place a command's
    /// defaults become a job's settings (a submit's options then override
    /// what they name).
    pub fn new_job(&self, app: impl Into<String>, name: impl Into<String>, input: Value) -> NewJob {
        let mut job = NewJob::new(app, name, input)
            .queue(&self.queue)
            .priority(self.priority)
            .retry(self.retry.clone());
        job.timeout_secs = self.timeout_secs;
        job
    }
}
