//! The `errand` command line.

mod bench;

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
    /// Run a worker with the built-in commands against a store.
    Worker(WorkerArgs),
    /// Measure the store and the worker runtime (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Store URL: sqlite://PATH[?synchronous=full].
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ERRAND_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Worker(args) => run_worker(args).await,
        Cmd::Bench(args) => bench::run(args).await,
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
