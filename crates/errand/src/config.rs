//! `errand.toml`: the configuration file, and the effective settings that
//! flags and `ERRAND_*` variables override (flags > environment > file >
//! defaults; the binary applies the first two).
//!
//! ```toml
//! store = "sqlite://errand.db"
//!
//! [worker]
//! max_tasks = 8
//!
//! [commands."media.transcribe"]
//! argv = ["python3", "transcribe.py"]
//! timeout_secs = 600
//! max_concurrency = 1
//!
//! [limits."media.transcribe"]
//! max_running = 2
//! key = "context.user_id"
//!
//! [schedules.nightly-cleanup]
//! cron = "0 30 3 * * *"
//! timezone = "Europe/Paris"
//! job = { command = "media.cleanup", input = {} }
//! ```
//!
//! Relative paths in the file (a command's `cwd`) are relative to the
//! file's folder, and a command runs there unless it says otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use errand_core::RetryPolicy;
use errand_worker::{CommandOptions, ExternalProgram, Registry, RegistryError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file looked for in the working directory when none is named.
pub const DEFAULT_FILE: &str = "errand.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The causes are in the messages, not error sources: a report that
    // prints the chain would say them twice.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("command {name:?} in {path}: {reason}")]
    Command {
        path: String,
        name: String,
        reason: String,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Every setting, with its default; also the shape of `errand.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `sqlite://PATH[?synchronous=full]` or `postgres://...`.
    pub store: String,
    /// The server the client subcommands talk to.
    pub url: String,
    /// The server requires it; the client subcommands send it.
    pub api_token: Option<String>,
    /// Workers over HTTP must send it (and the API token then does not
    /// do); when unset they send the API token.
    pub worker_token: Option<String>,
    pub serve: ServeSettings,
    pub worker: WorkerSettings,
    pub retention: RetentionSettings,
    pub webhooks: WebhookSettings,
    /// External-program commands by full name (`app.name`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, ExternalCommand>,
    /// Commands' cluster-wide limits by full name (`app.name`), set by
    /// `errand serve` when it starts (one left out of the file later is
    /// not lifted).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, errand_api::LimitRequest>,
    /// Periodic jobs by name, stored by `errand serve` when it starts (a
    /// schedule left out of the file later is not deleted).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, errand_api::ScheduleRequest>,
    /// The file these settings were read from, if any.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            store: "sqlite://errand.db".into(),
            url: "http://127.0.0.1:5055".into(),
            api_token: None,
            worker_token: None,
            serve: ServeSettings::default(),
            worker: WorkerSettings::default(),
            retention: RetentionSettings::default(),
            webhooks: WebhookSettings::default(),
            commands: BTreeMap::new(),
            limits: BTreeMap::new(),
            schedules: BTreeMap::new(),
            file: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    pub bind: String,
    /// Serve the API only; workers run elsewhere.
    pub no_worker: bool,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Origins allowed by CORS (`*` for any); CORS is off when empty.
    pub cors_origins: Vec<String>,
    /// Open connections at most (SSE streams included); also bounded by
    /// the process's open-file limit, which serve raises to its maximum.
    pub max_connections: usize,
    /// Seconds a connection's first request, and each request's headers,
    /// may take to arrive.
    pub header_timeout_secs: f64,
    /// Seconds a kept-alive connection may sit with no request in progress.
    pub idle_timeout_secs: f64,
    /// Seconds a request's body may take to arrive.
    pub body_timeout_secs: f64,
    /// The longest long-poll (`?wait=`) in seconds; longer asks are cut
    /// to it.
    pub max_wait_secs: f64,
    /// The lease, in seconds, of a job claimed over the worker protocol
    /// when the worker asks for none.
    pub worker_lease_secs: f64,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:5055".into(),
            no_worker: false,
            body_limit: 1024 * 1024,
            cors_origins: Vec::new(),
            max_connections: 4096,
            header_timeout_secs: 10.0,
            idle_timeout_secs: 60.0,
            body_timeout_secs: 30.0,
            max_wait_secs: 300.0,
            worker_lease_secs: 15.0,
        }
    }
}

/// How long `errand serve` keeps ended jobs, per status, in seconds;
/// 0 keeps them for ever.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    pub completed_after_secs: f64,
    pub canceled_after_secs: f64,
    pub failed_after_secs: f64,
    /// How often a server looks for jobs to delete.
    pub interval_secs: f64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        const WEEK: f64 = 7.0 * 24.0 * 3600.0;
        Self {
            completed_after_secs: WEEK,
            canceled_after_secs: WEEK,
            failed_after_secs: 0.0,
            interval_secs: 60.0,
        }
    }
}

/// How `errand serve` calls jobs' webhooks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Signs each request (HMAC-SHA256); webhooks are off without it.
    pub secret: Option<String>,
    /// Destinations a webhook may name: `host`, `host:port`, `*.domain`
    /// or `*.domain:port`. None is allowed when empty.
    pub allow: Vec<String>,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// The wait after a first failed attempt; it doubles after each.
    pub first_retry_secs: f64,
    /// No wait between attempts is longer.
    pub max_retry_secs: f64,
    /// How long a receiver may take to answer.
    pub timeout_secs: f64,
    /// The webhook of a command's jobs whose submit names none, by full
    /// name (`app.name`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, errand_core::Webhook>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        let policy = errand_core::DeliveryPolicy::default();
        Self {
            secret: None,
            allow: Vec::new(),
            max_attempts: policy.max_attempts,
            first_retry_secs: policy.first_wait.as_secs_f64(),
            max_retry_secs: policy.max_wait.as_secs_f64(),
            timeout_secs: 10.0,
            commands: BTreeMap::new(),
        }
    }
}

/// For `errand worker` and the worker inside `errand serve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    pub max_tasks: usize,
    /// The most jobs held claimed beyond the slots for quick jobs; 0: none.
    pub claim_ahead: usize,
    pub queues: Vec<String>,
    /// Run only these commands (full names); all known ones when empty.
    pub commands: Vec<String>,
    /// Also claim jobs of commands this worker does not know, failing them.
    pub claim_unknown: bool,
    pub worker_id: Option<String>,
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    pub poll_ms: u64,
    pub shutdown_timeout_secs: u64,
    pub store_unavailable_limit_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            max_tasks: 5,
            claim_ahead: 256,
            queues: vec![errand_store::DEFAULT_QUEUE.into()],
            commands: Vec::new(),
            claim_unknown: false,
            worker_id: None,
            heartbeat_ms: 5000,
            lease_ms: 15000,
            poll_ms: 1000,
            shutdown_timeout_secs: 30,
            store_unavailable_limit_secs: 60,
        }
    }
}

/// A command that is an external program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalCommand {
    /// The program and its arguments.
    pub argv: Vec<String>,
    pub description: Option<String>,
    /// Set for the program, over the worker's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the worker's.
    #[serde(default)]
    pub clear_env: bool,
    /// Where it runs; relative to the configuration file's folder, which is
    /// also the default.
    pub cwd: Option<PathBuf>,
    pub timeout_secs: Option<f64>,
    /// Between SIGTERM and SIGKILL when a job is canceled or times out.
    #[serde(default = "default_kill_grace")]
    pub kill_grace_secs: f64,
    /// More output on stdout fails the job.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
    /// At most this many at once per worker.
    pub max_concurrency: Option<usize>,
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The input's JSON Schema; any JSON when absent.
    pub input_schema: Option<Value>,
}

fn default_kill_grace() -> f64 {
    5.0
}

fn default_max_output() -> usize {
    1024 * 1024
}

/// Whether `program` would be found to run: a path (relative to `cwd`)
/// to an executable file, or a name found in one of `path_var`'s folders.
fn program_exists(program: &str, cwd: Option<&Path>, path_var: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = Path::new(program);
        return match (path.is_relative(), cwd) {
            (true, Some(cwd)) => executable(&cwd.join(path)),
            _ => executable(path),
        };
    }
    std::env::split_paths(path_var).any(|folder| executable(&folder.join(program)))
}

/// `sqlite://PATH[?options]` with a relative PATH made relative to `base`;
/// any other store URL as it is.
fn sqlite_relative_to(store: &str, base: &Path) -> String {
    let Some(rest) = store.strip_prefix("sqlite://") else {
        return store.to_owned();
    };
    let (path, options) = match rest.split_once('?') {
        Some((path, options)) => (path, Some(options)),
        None => (rest, None),
    };
    if path.is_empty() || Path::new(path).is_absolute() {
        return store.to_owned();
    }
    let joined = base.join(path);
    match options {
        Some(options) => format!("sqlite://{}?{options}", joined.display()),
        None => format!("sqlite://{}", joined.display()),
    }
}

impl Settings {
    /// Reads `path`, or `./errand.toml` when it exists, or nothing.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match path {
            Some(path) => path.to_owned(),
            None if Path::new(DEFAULT_FILE).is_file() => PathBuf::from(DEFAULT_FILE),
            None => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
            path: path.clone(),
            error,
        })?;
        let mut settings = Self::parse(&text).map_err(|error| ConfigError::Parse {
            path: path.clone(),
            error: Box::new(error),
        })?;
        settings.file = Some(std::path::absolute(&path).unwrap_or(path));
        // One rule for every path the file names: relative to its folder.
        let names_store = text
            .parse::<toml::Table>()
            .is_ok_and(|table| table.contains_key("store"));
        if let (true, Some(base)) = (names_store, settings.base_dir()) {
            settings.store = sqlite_relative_to(&settings.store, base);
        }
        Ok(settings)
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The folder relative paths in the file are resolved against.
    fn base_dir(&self) -> Option<&Path> {
        self.file.as_deref().and_then(Path::parent)
    }

    /// Adds the external commands to `registry`.
    pub fn register_commands(&self, registry: &mut Registry) -> Result<(), ConfigError> {
        for (full_name, command) in &self.commands {
            let invalid = |reason: String| ConfigError::Command {
                path: self
                    .file
                    .as_ref()
                    .map_or("the configuration".into(), |p| p.display().to_string()),
                name: full_name.clone(),
                reason,
            };
            let Ok(command_name) = errand_core::CommandName::parse(full_name) else {
                return Err(invalid(
                    "name it APP.NAME, e.g. \"media.transcribe\"".into(),
                ));
            };
            let (app, name) = (command_name.app(), command_name.name());
            if command.argv.is_empty() {
                return Err(invalid("argv is empty".into()));
            }
            let seconds = |what: &str, secs: f64| {
                Duration::try_from_secs_f64(secs)
                    .map_err(|_| invalid(format!("{what} must be a non-negative number")))
            };
            let timeout = command
                .timeout_secs
                .map(|secs| seconds("timeout_secs", secs))
                .transpose()?;
            let mut program = ExternalProgram::new(command.argv.clone());
            program.env = command.env.clone();
            program.clear_env = command.clear_env;
            program.kill_grace = seconds("kill_grace_secs", command.kill_grace_secs)?;
            program.max_output_bytes = command.max_output_bytes;
            program.cwd = match (&command.cwd, self.base_dir()) {
                (Some(cwd), Some(base)) => Some(base.join(cwd)),
                (Some(cwd), None) => Some(cwd.clone()),
                (None, base) => base.map(Path::to_owned),
            };
            // Found now, not when the first job runs and fails.
            let path_var = command
                .env
                .get("PATH")
                .cloned()
                .or_else(|| (!command.clear_env).then(|| std::env::var("PATH").unwrap_or_default()))
                .unwrap_or_default();
            if !program_exists(&command.argv[0], program.cwd.as_deref(), &path_var) {
                return Err(invalid(format!(
                    "the program {:?} is not found (looked {})",
                    command.argv[0],
                    if command.argv[0].contains('/') {
                        "from the command's cwd".to_owned()
                    } else {
                        format!("in PATH={path_var}")
                    }
                )));
            }
            let options = CommandOptions {
                description: command.description.clone(),
                timeout,
                retry: command.retry.clone(),
                queue: command
                    .queue
                    .clone()
                    .unwrap_or_else(|| errand_store::DEFAULT_QUEUE.into()),
                priority: command.priority,
                max_concurrency: command.max_concurrency,
            };
            let schema = command
                .input_schema
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default()));
            registry.register_dyn(app, name, schema, options, Arc::new(program))?;
        }
        Ok(())
    }

    /// The built-in demo commands, the configured external ones, narrowed
    /// to `worker.commands` when that is set.
    pub fn registry(&self) -> Result<Registry, ConfigError> {
        let mut all = crate::demo::registry()?;
        self.register_commands(&mut all)?;
        if self.worker.commands.is_empty() {
            return Ok(all);
        }
        let mut chosen = Registry::new();
        for name in &self.worker.commands {
            let command = all.get_full(name).ok_or_else(|| ConfigError::Command {
                path: "worker.commands".into(),
                name: name.clone(),
                reason: format!("no such command; known: {}", all.names().join(", ")),
            })?;
            chosen.register_dyn(
                &command.app,
                &command.name,
                command.input_schema.clone(),
                command.options.clone(),
                command.handler(),
            )?;
        }
        Ok(chosen)
    }

    /// These settings as TOML, with secrets replaced by `[redacted]`: the
    /// API token, a password in the store URL, and command environment
    /// values whose names look secret.
    pub fn redacted_toml(&self) -> String {
        const REDACTED: &str = "[redacted]";
        let mut shown = self.clone();
        for token in [
            &mut shown.api_token,
            &mut shown.worker_token,
            &mut shown.webhooks.secret,
        ] {
            if token.is_some() {
                *token = Some(REDACTED.into());
            }
        }
        if let Ok(mut url) = ::url::Url::parse(&shown.store) {
            // Brackets would be percent-encoded in a URL.
            if url.password().is_some() && url.set_password(Some("redacted")).is_ok() {
                shown.store = url.to_string();
            }
        }
        for command in shown.commands.values_mut() {
            for (name, value) in command.env.iter_mut() {
                let name = name.to_ascii_uppercase();
                if ["TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL"]
                    .iter()
                    .any(|word| name.contains(word))
                {
                    *value = REDACTED.into();
                }
            }
        }
        let mut text = String::new();
        if let Some(file) = &self.file {
            text.push_str(&format!("# read from {}\n", file.display()));
        }
        text.push_str(&toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# {e}\n")));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let error = Settings::parse("[worker]\nmax_taks = 3\n").unwrap_err();
        assert!(error.to_string().contains("max_taks"), "{error}");
    }

    #[test]
    fn external_commands_register_with_their_options() {
        let mut settings = Settings::parse(
            r#"
            [commands."media.transcribe"]
            argv = ["python3", "transcribe.py"]
            cwd = "handlers"
            timeout_secs = 600
            max_concurrency = 1
            queue = "media"
            retry = { max_attempts = 5, wait_strategy = "fixed", wait_time = 2 }
            input_schema = { type = "object", required = ["path"] }
            "#,
        )
        .unwrap();
        settings.file = Some(PathBuf::from("/etc/errand/errand.toml"));
        let registry = settings.registry().unwrap();
        let command = registry.get("media", "transcribe").unwrap();
        assert_eq!(command.options.timeout, Some(Duration::from_secs(600)));
        assert_eq!(command.options.max_concurrency, Some(1));
        assert_eq!(command.options.queue, "media");
        assert_eq!(command.options.retry.max_attempts, 5);
        assert_eq!(command.input_schema["required"][0], "path");
        assert!(registry.get("demo", "echo").is_some());
    }

    #[test]
    fn a_program_that_is_not_there_is_refused_at_start() {
        let settings =
            Settings::parse("[commands.\"a.b\"]\nargv = [\"no-such-program-here\"]\n").unwrap();
        let error = settings.registry().unwrap_err().to_string();
        assert!(
            error.contains("no-such-program-here") && error.contains("not found"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::parse(&format!(
            "[commands.\"a.b\"]\nargv = [\"./missing.sh\"]\ncwd = \"{}\"\n",
            dir.path().display()
        ))
        .unwrap();
        assert!(settings.registry().is_err());
    }

    #[test]
    fn the_store_in_the_file_is_relative_to_the_file_like_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(&file, "store = \"sqlite://data/q.db?synchronous=full\"\n").unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        let expected = format!(
            "sqlite://{}?synchronous=full",
            dir.path().join("data/q.db").display()
        );
        assert_eq!(settings.store, expected);
        // Not named in the file: the default stays relative to where errand runs.
        std::fs::write(&file, "[worker]\nmax_tasks = 2\n").unwrap();
        assert_eq!(
            Settings::load(Some(&file)).unwrap().store,
            Settings::default().store
        );
    }

    #[test]
    fn a_toml_error_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(&file, "[worker\n").unwrap();
        let error = anyhow::Error::new(Settings::load(Some(&file)).unwrap_err());
        let report = format!("{error:#}");
        let first_line = report.lines().next().unwrap();
        assert_eq!(
            report
                .matches(first_line.split(": ").nth(1).unwrap_or(first_line))
                .count(),
            1,
            "{report}"
        );
    }

    #[test]
    fn a_badly_named_command_is_refused() {
        let settings = Settings::parse("[commands.transcribe]\nargv = [\"x\"]\n").unwrap();
        let error = settings.registry().unwrap_err().to_string();
        assert!(error.contains("APP.NAME"), "{error}");
    }

    #[test]
    fn worker_commands_narrow_the_registry() {
        let mut settings = Settings::default();
        settings.worker.commands = vec!["demo.echo".into()];
        assert_eq!(settings.registry().unwrap().names(), vec!["demo.echo"]);
        settings.worker.commands = vec!["demo.nope".into()];
        assert!(settings.registry().is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let settings = Settings::parse(
            r#"
            store = "postgres://errand:hunter2@db/errand"
            api_token = "s3cret"
            [commands."a.b"]
            argv = ["x"]
            env = { OPENAI_API_KEY = "sk-123", MODEL = "small" }
            "#,
        )
        .unwrap();
        let shown = settings.redacted_toml();
        for secret in ["hunter2", "s3cret", "sk-123"] {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        assert!(shown.contains("small"), "{shown}");
        // What is printed reads back as a configuration.
        assert!(Settings::parse(&shown).is_ok(), "{shown}");
    }
}
