//! Flags shared by several subcommands. Each is optional: given (or set in
//! its `ERRAND_*` variable, which clap reads) it overrides the setting from
//! `errand.toml`, which overrides the default.

use errand::client::Client;
use errand::config::Settings;

#[derive(clap::Args, Debug, Default)]
pub struct StoreArg {
    /// Store URL: sqlite://PATH[?synchronous=full] or postgres://...
    /// [default: sqlite://errand.db]
    #[arg(long, env = "ERRAND_STORE")]
    pub store: Option<String>,
}

impl StoreArg {
    pub fn apply(self, settings: &mut Settings) {
        if let Some(store) = self.store {
            settings.store = store;
        }
    }
}

#[derive(clap::Args, Debug, Default)]
pub struct TokenArg {
    /// Bearer token: required by the server from clients when set on it.
    #[arg(long, env = "ERRAND_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl TokenArg {
    pub fn apply(self, settings: &mut Settings) {
        if let Some(token) = self.api_token {
            settings.api_token = Some(token).filter(|t| !t.is_empty());
        }
    }
}

/// How a client subcommand reaches the server.
#[derive(clap::Args, Debug, Default)]
pub struct ClientArgs {
    /// The errand server. [default: http://127.0.0.1:5055]
    #[arg(long, env = "ERRAND_URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub token: TokenArg,
}

impl ClientArgs {
    pub fn apply(self, settings: &mut Settings) {
        if let Some(url) = self.url {
            settings.url = url;
        }
        self.token.apply(settings);
    }

    pub fn client(self, settings: &mut Settings) -> anyhow::Result<Client> {
        self.apply(settings);
        Ok(Client::new(&settings.url, settings.api_token.clone())?)
    }
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeOverrides {
    /// Address to listen on. [default: 127.0.0.1:5055]
    #[arg(long, env = "ERRAND_BIND")]
    pub bind: Option<String>,
    /// Serve the API only; run workers elsewhere (errand worker).
    #[arg(long, env = "ERRAND_NO_WORKER")]
    pub no_worker: bool,
    /// Largest request body, in bytes. [default: 1048576]
    #[arg(long, env = "ERRAND_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Origins allowed by CORS (repeat, or comma-separated; `*` for any).
    /// CORS is off when none is given.
    #[arg(
        long = "cors-origin",
        env = "ERRAND_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// The token workers over HTTP (the worker protocol) must send; the
    /// API token then no longer opens it. [default: the API token]
    #[arg(long, env = "ERRAND_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// Signs webhook requests (HMAC-SHA256); webhooks are off without it.
    #[arg(long, env = "ERRAND_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Hosts webhooks may call (host, host:port, *.domain; repeat, or
    /// comma-separated). None when empty.
    #[arg(
        long = "webhook-allow",
        env = "ERRAND_WEBHOOK_ALLOW",
        value_delimiter = ','
    )]
    pub webhook_allow: Vec<String>,
}

impl ServeOverrides {
    pub fn apply(self, settings: &mut Settings) {
        let serve = &mut settings.serve;
        if let Some(bind) = self.bind {
            serve.bind = bind;
        }
        serve.no_worker |= self.no_worker;
        if let Some(limit) = self.body_limit {
            serve.body_limit = limit;
        }
        if !self.cors_origins.is_empty() {
            serve.cors_origins = self.cors_origins;
        }
        if let Some(token) = self.worker_token {
            settings.worker_token = Some(token).filter(|t| !t.is_empty());
        }
        if let Some(secret) = self.webhook_secret {
            settings.webhooks.secret = Some(secret).filter(|s| !s.is_empty());
        }
        if !self.webhook_allow.is_empty() {
            settings.webhooks.allow = self.webhook_allow;
        }
    }
}

#[derive(clap::Args, Debug, Default)]
pub struct WorkerOverrides {
    /// Jobs run at once. [default: 5]
    #[arg(long, env = "ERRAND_MAX_TASKS")]
    pub max_tasks: Option<usize>,
    /// Queues to claim from (repeat for several). [default: default]
    #[arg(long = "queue", env = "ERRAND_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Only these commands (APP.NAME, comma-separated); default: all the
    /// built-in and configured ones.
    #[arg(long, env = "ERRAND_COMMANDS", value_delimiter = ',')]
    pub commands: Vec<String>,
    /// Also claim jobs of commands this worker does not know, failing them.
    #[arg(long)]
    pub claim_unknown: bool,
    /// This worker's id. [default: host-pid-random]
    #[arg(long, env = "ERRAND_WORKER_ID")]
    pub worker_id: Option<String>,
    /// How often the worker renews its leases. [default: 5000]
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// How long a claim lasts without a heartbeat. [default: 15000]
    #[arg(long)]
    pub lease_ms: Option<u64>,
    /// How often the worker looks for jobs without a wake-up. [default: 1000]
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// On SIGINT/SIGTERM, how long running jobs may take to finish.
    /// [default: 30]
    #[arg(long)]
    pub shutdown_timeout_secs: Option<u64>,
    /// A worker that cannot reach its store this long exits non-zero, for
    /// its supervisor to restart it. [default: 60]
    #[arg(long)]
    pub store_unavailable_limit_secs: Option<u64>,
}

impl WorkerOverrides {
    pub fn apply(self, settings: &mut Settings) {
        let worker = &mut settings.worker;
        let set = |target: &mut u64, value: Option<u64>| {
            if let Some(value) = value {
                *target = value;
            }
        };
        if let Some(max_tasks) = self.max_tasks {
            worker.max_tasks = max_tasks;
        }
        if !self.queues.is_empty() {
            worker.queues = self.queues;
        }
        if !self.commands.is_empty() {
            worker.commands = self.commands;
        }
        worker.claim_unknown |= self.claim_unknown;
        if self.worker_id.is_some() {
            worker.worker_id = self.worker_id;
        }
        set(&mut worker.heartbeat_ms, self.heartbeat_ms);
        set(&mut worker.lease_ms, self.lease_ms);
        set(&mut worker.poll_ms, self.poll_ms);
        set(
            &mut worker.shutdown_timeout_secs,
            self.shutdown_timeout_secs,
        );
        set(
            &mut worker.store_unavailable_limit_secs,
            self.store_unavailable_limit_secs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_overrides_the_file_and_an_absent_flag_keeps_it() {
        let mut settings =
            Settings::parse("store = \"sqlite://from-file.db\"\n[worker]\nmax_tasks = 9\n")
                .unwrap();
        WorkerOverrides {
            queues: vec!["media".into()],
            ..WorkerOverrides::default()
        }
        .apply(&mut settings);
        StoreArg { store: None }.apply(&mut settings);
        assert_eq!(settings.store, "sqlite://from-file.db");
        assert_eq!(settings.worker.max_tasks, 9);
        assert_eq!(settings.worker.queues, vec!["media"]);
        StoreArg {
            store: Some("sqlite://flag.db".into()),
        }
        .apply(&mut settings);
        assert_eq!(settings.store, "sqlite://flag.db");
    }
}
