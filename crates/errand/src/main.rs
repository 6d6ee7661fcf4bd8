//! The `errand` command line.

mod bench;
mod bench_target;
mod fanout;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use errand::url::StoreUrl;
use errand::{ClaimFilter, SystemClock, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "errand",
    version,
    about = "A durable command queue for long-running work"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP API, and by default workers, in one process.
    Serve(ServeArgs),
    /// Run a worker with the built-in commands against a store.
    Worker(WorkerArgs),
    /// Measure the store and the worker runtime (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Store URL: sqlite://PATH[?synchronous=full] or postgres://...
    #[arg(long, env = "ERRAND_STORE", default_value = "sqlite://errand.db")]
    store: String,
    /// Address to listen on.
    #[arg(long, env = "ERRAND_BIND", default_value = "127.0.0.1:5055")]
    bind: String,
    /// Jobs the in-process worker runs at once.
    #[arg(long, env = "ERRAND_MAX_TASKS", default_value_t = 5)]
    max_tasks: usize,
    /// Serve the API only; run workers elsewhere (errand worker).
    #[arg(long, env = "ERRAND_NO_WORKER")]
    no_worker: bool,
    /// Queues the in-process worker claims from (repeat for several).
    #[arg(long = "queue", default_value = "default")]
    queues: Vec<String>,
    /// Require `Authorization: Bearer TOKEN` on every route but /api/health.
    #[arg(long, env = "ERRAND_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Largest request body, in bytes.
    #[arg(long, env = "ERRAND_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,
    /// Origins allowed by CORS (repeat, or comma-separated; `*` for any).
    /// CORS is off when none is given.
    #[arg(
        long = "cors-origin",
        env = "ERRAND_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// On SIGINT/SIGTERM, how long running jobs may take to finish.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout_secs: u64,
    /// A worker that cannot reach its store this long exits non-zero, for
    /// its supervisor to restart it.
    #[arg(long, default_value_t = 60)]
    store_unavailable_limit_secs: u64,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Store URL: sqlite://PATH[?synchronous=full] or postgres://...
    #[arg(long, env = "ERRAND_STORE", default_value = "sqlite://errand.db")]
    store: String,
    /// Jobs run at once.
    #[arg(long, env = "ERRAND_MAX_TASKS", default_value_t = 5)]
    max_tasks: usize,
    /// Queues to claim from (repeat for several).
    #[arg(long = "queue", default_value = "default")]
    queues: Vec<String>,
    /// Only these commands (app.name, comma-separated); default: all built in.
    #[arg(long, value_delimiter = ',')]
    commands: Vec<String>,
    /// Also claim jobs of commands this worker does not know, failing them.
    #[arg(long)]
    claim_unknown: bool,
    /// This worker's id (default: host-pid-random).
    #[arg(long)]
    worker_id: Option<String>,
    #[arg(long, default_value_t = 5000)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 15000)]
    lease_ms: u64,
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// On SIGINT/SIGTERM, how long running jobs may take to finish.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout_secs: u64,
    /// A worker that cannot reach its store this long exits non-zero, for
    /// its supervisor to restart it.
    #[arg(long, default_value_t = 60)]
    store_unavailable_limit_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ERRAND_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("ERRAND_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    match Cli::parse().command {
        Cmd::Serve(args) => run_serve(args).await,
        Cmd::Worker(args) => run_worker(args).await,
        Cmd::Bench(args) => bench::run(args).await,
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = StoreUrl::parse(&args.store)?
        .open(std::sync::Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot open the store {}", args.store))?;
    let config = errand_server::ServerConfig {
        api_token: args.api_token.filter(|t| !t.is_empty()),
        body_limit: args.body_limit,
        cors_origins: args.cors_origins,
        ..errand_server::ServerConfig::default()
    };
    let state = errand_server::AppState::new(store.clone(), config);
    tokio::spawn(stop_on_signal(state.shutdown.clone()));
    let worker_shutdown = CancellationToken::new();
    let mut worker = None;
    if !args.no_worker {
        let config = WorkerConfig {
            max_tasks: args.max_tasks,
            queues: args.queues,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
            store_unavailable_limit: Duration::from_secs(args.store_unavailable_limit_secs),
            ..WorkerConfig::default()
        };
        let in_process = Worker::new(store, errand::demo::registry()?, config);
        // Published before the first request, so submits of its commands
        // are accepted from the start.
        in_process.register().await?;
        worker = Some(tokio::spawn(in_process.run(worker_shutdown.clone())));
    }
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    tracing::info!(
        address = %listener.local_addr()?,
        store = %args.store,
        worker = !args.no_worker,
        auth = state.config.api_token.is_some(),
        "errand is serving on http://{}/api", listener.local_addr()?
    );
    let shutdown = state.shutdown.clone();
    let mut server = tokio::spawn(errand_server::serve(listener, state));
    let Some(mut worker) = worker else {
        return Ok(server.await??);
    };
    tokio::select! {
        served = &mut server => {
            served??;
            // Responses are finished; now let the worker drain.
            worker_shutdown.cancel();
            worker.await??;
            Ok(())
        }
        stopped = &mut worker => {
            // The worker gave up (its store was unreachable too long): do
            // not go on serving without it; exit non-zero for a restart.
            shutdown.cancel();
            let _ = server.await;
            stopped??;
            anyhow::bail!("the in-process worker stopped")
        }
    }
}

async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let store = StoreUrl::parse(&args.store)?
        .open(std::sync::Arc::new(SystemClock))
        .await
        .with_context(|| format!("cannot open the store {}", args.store))?;
    let mut registry = errand::demo::registry()?;
    if !args.commands.is_empty() {
        let all = registry.clone();
        registry = errand::Registry::new();
        for name in &args.commands {
            let command = all
                .get_full(name)
                .with_context(|| format!("unknown command {name:?}; known: {:?}", all.names()))?;
            registry.register_dyn(
                &command.app,
                &command.name,
                command.input_schema.clone(),
                command.options.clone(),
                command.handler(),
            )?;
        }
    }
    let mut config = WorkerConfig {
        queues: args.queues,
        max_tasks: args.max_tasks,
        claim_filter: if args.claim_unknown {
            ClaimFilter::All
        } else {
            ClaimFilter::Registered
        },
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        lease: Duration::from_millis(args.lease_ms),
        poll_interval: Duration::from_millis(args.poll_ms),
        reap_interval: Duration::from_millis(args.heartbeat_ms),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_secs),
        store_unavailable_limit: Duration::from_secs(args.store_unavailable_limit_secs),
        ..WorkerConfig::default()
    };
    if let Some(id) = args.worker_id {
        config.worker_id = id;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    Worker::new(store, registry, config).run(shutdown).await?;
    Ok(())
}

/// Fires `shutdown` on the first SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
