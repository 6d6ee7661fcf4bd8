//! What a handler is, and how it says it failed.

use std::future::Future;
use std::time::Duration;

use errand_core::{error_kind, RetryPolicy};
use errand_store::{CommandDefaults, DEFAULT_QUEUE};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::JobContext;

/// A named, typed unit of work: `APP.NAME` with a JSON input and output.
///
/// ```
/// use errand_worker::{Command, HandlerError, JobContext};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Input { text: String }
///
/// struct Shout;
///
/// impl Command for Shout {
///     const APP: &'static str = "demo";
///     const NAME: &'static str = "shout";
///     type Input = Input;
///     type Output = String;
///
///     async fn run(&self, input: Input, _ctx: JobContext) -> Result<String, HandlerError> {
///         Ok(input.text.to_uppercase())
///     }
/// }
/// ```
pub trait Command: Send + Sync + 'static {
    const APP: &'static str;
    const NAME: &'static str;
    type Input: DeserializeOwned + JsonSchema + Send + 'static;
    type Output: Serialize + Send + 'static;

    /// Defaults for jobs of this command; a submit may override each.
    fn options(&self) -> CommandOptions {
        CommandOptions::default()
    }

    fn run(
        &self,
        input: Self::Input,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Self::Output, HandlerError>> + Send;
}

/// A command's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandOptions {
    pub description: Option<String>,
    /// Per-attempt time limit; `None` means no limit.
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub queue: String,
    pub priority: i32,
    /// At most this many attempts of the command at once in one worker.
    pub max_concurrency: Option<usize>,
}

impl CommandOptions {
    /// The defaults a job of the command gets, as the store publishes them.
    pub fn defaults(&self) -> CommandDefaults {
        CommandDefaults {
            timeout_secs: self.timeout.map(|t| t.as_secs_f64()),
            retry: self.retry.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            max_concurrency: self.max_concurrency,
        }
    }
}

impl Default for CommandOptions {
    fn default() -> Self {
        Self {
            description: None,
            timeout: None,
            retry: RetryPolicy::default(),
            queue: DEFAULT_QUEUE.to_owned(),
            priority: 0,
            max_concurrency: None,
        }
    }
}

/// Why a handler failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    /// `handler` unless the handler names one (e.g. `validation`), which
    /// a retry policy's `retry_on` / `stop_on` can match.
    pub kind: String,
    pub message: String,
    pub retryable: bool,
}

impl HandlerError {
    /// A failure that may go away: the job is retried per its policy.
    pub fn retryable(message: impl std::fmt::Display) -> Self {
        Self {
            kind: error_kind::HANDLER.into(),
            message: message.to_string(),
            retryable: true,
        }
    }

    /// A failure that will not go away (bad input, missing record): the job
    /// fails at once, without burning its remaining attempts.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Self {
            kind: error_kind::HANDLER.into(),
            message: message.to_string(),
            retryable: false,
        }
    }

    /// The handler stopped because its cancellation token fired.
    pub fn canceled() -> Self {
        Self {
            kind: error_kind::CANCELED.into(),
            message: "canceled".into(),
            retryable: false,
        }
    }

    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// `?` on any error makes a retryable failure; use [`ResultExt`] to choose.
impl<E: std::error::Error> From<E> for HandlerError {
    fn from(err: E) -> Self {
        Self::retryable(err)
    }
}

/// Classifies an error where it happens: `fetch().retryable()?`,
/// `parse().permanent()?`.
pub trait ResultExt<T> {
    fn retryable(self) -> Result<T, HandlerError>;
    fn permanent(self) -> Result<T, HandlerError>;
}

impl<T, E: std::fmt::Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::retryable)
    }

    fn permanent(self) -> Result<T, HandlerError> {
        self.map_err(HandlerError::permanent)
    }
}
