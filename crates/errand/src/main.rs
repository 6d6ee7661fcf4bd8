//! The `errand` command line. Settings come from flags, then
//! `ERRAND_*` variables, then `errand.toml`, then defaults.

mod admin;
mod args;
mod bench;
mod logging;
mod run;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use args::{ClientArgs, ServeOverrides, StoreArg, TokenArg, WorkerOverrides};
use clap::{CommandFactory, Parser, Subcommand};
use errand::config::Settings;
use terminal::jobs::SubmitArgs;
use terminal::tables::ListArgs;
use terminal::Exit;

// The SQLite writer thread frees what other threads allocated (jobs handed
// to it, events it publishes); glibc's malloc made that a tenth of its time
// (docs/decisions.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "errand",
    version,
    about = "A durable command queue for long-running work",
    after_help = "Exit codes: 0 ok, 1 error, 2 bad usage, 3 job failed, 4 job canceled, \
                  5 request refused by the server, 6 server unreachable, 7 still running."
)]
struct Cli {
    /// Configuration file [default: ./errand.toml when it exists]
    #[arg(long, env = "ERRAND_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP API, and by default a worker, in one process.
    Serve {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        token: TokenArg,
        #[command(flatten)]
        serve: ServeOverrides,
        #[command(flatten)]
        worker: WorkerOverrides,
    },
    /// Run a worker: the built-in and configured commands, on a store.
    Worker {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        worker: WorkerOverrides,
    },
    /// Submit a job; print its id, or with --wait/--follow its result.
    Submit {
        #[command(flatten)]
        args: SubmitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a job.
    Status {
        job_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a job live (progress bar, log lines) until it ends.
    Watch {
        job_id: String,
        /// Print the final job as JSON.
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        args: ListArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a job (a running one is stopped by its worker).
    Cancel {
        job_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queue a failed or canceled job again.
    Retry {
        job_id: String,
        /// Start from scratch: drop the checkpoint the last attempt saved.
        #[arg(long)]
        clear_checkpoint: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Per command: counts by status, failure rate, run times.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The commands workers have registered.
    Commands {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Live workers.
    Workers {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Queues: waiting and running jobs, and which are paused.
    Queues {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a queue for every worker: it takes submits, starts nothing.
    Pause {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused queue.
    Resume {
        queue: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Commands' limits: running jobs and starts, per command or key.
    Limits {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set or lift a command's cluster-wide limits.
    Limit {
        #[command(subcommand)]
        command: terminal::limits::LimitCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Schedules: when each runs next, and what it ran last.
    Schedules {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create, delete, pause or resume a schedule (periodic jobs).
    Schedule {
        #[command(subcommand)]
        command: terminal::schedules::ScheduleCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A job's event log.
    Events {
        job_id: String,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete finished jobs (and their events) older than a duration.
    Prune {
        /// e.g. 7d, 12h, 30m.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Bring the store's schema up to date (opening it does too).
    Migrate {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Print the effective configuration, secrets redacted.
    Config {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        serve: ServeOverrides,
        #[command(flatten)]
        worker: WorkerOverrides,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Measure the store and the worker runtime (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let _flush_logs_at_exit = logging::init();
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Serve { .. } | Cmd::Worker { .. }) {
        logging::die_quietly_on_closed_stdout();
    }
    match run(cli).await {
        Ok(exit) => exit.into(),
        Err(error) => {
            let exit = Exit::for_error(&error);
            logging::report_error(&error);
            exit.into()
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    let settings = &mut settings;
    let done = |result: anyhow::Result<()>| result.map(|()| Exit::Success);
    match cli.command {
        Cmd::Serve {
            store,
            token,
            serve,
            worker,
        } => {
            store.apply(settings);
            token.apply(settings);
            serve.apply(settings);
            worker.apply(settings);
            done(run::serve(settings.clone()).await)
        }
        Cmd::Worker { store, worker } => {
            store.apply(settings);
            worker.apply(settings);
            done(run::worker(settings.clone()).await)
        }
        Cmd::Submit { args, client } => {
            terminal::jobs::submit(&client.client(settings)?, args).await
        }
        Cmd::Status {
            job_id,
            json,
            client,
        } => terminal::jobs::status(&client.client(settings)?, &job_id, json).await,
        Cmd::Watch {
            job_id,
            json,
            client,
        } => terminal::jobs::watch(&client.client(settings)?, &job_id, json).await,
        Cmd::List { args, client } => terminal::tables::list(&client.client(settings)?, args).await,
        Cmd::Cancel {
            job_id,
            json,
            client,
        } => terminal::jobs::cancel(&client.client(settings)?, &job_id, json).await,
        Cmd::Retry {
            job_id,
            clear_checkpoint,
            json,
            client,
        } => {
            terminal::jobs::retry(&client.client(settings)?, &job_id, clear_checkpoint, json).await
        }
        Cmd::Stats { json, client } => {
            terminal::tables::stats(&client.client(settings)?, json).await
        }
        Cmd::Commands { json, client } => {
            terminal::tables::commands(&client.client(settings)?, json).await
        }
        Cmd::Workers { json, client } => {
            terminal::tables::workers(&client.client(settings)?, json).await
        }
        Cmd::Queues { json, client } => {
            terminal::tables::queues(&client.client(settings)?, json).await
        }
        Cmd::Pause { queue, client } => {
            terminal::tables::pause(&client.client(settings)?, &queue, true).await
        }
        Cmd::Resume { queue, client } => {
            terminal::tables::pause(&client.client(settings)?, &queue, false).await
        }
        Cmd::Limits { json, client } => {
            terminal::limits::list(&client.client(settings)?, json).await
        }
        Cmd::Limit { command, client } => {
            terminal::limits::run(&client.client(settings)?, command).await
        }
        Cmd::Schedules { json, client } => {
            terminal::schedules::list(&client.client(settings)?, json).await
        }
        Cmd::Schedule { command, client } => {
            terminal::schedules::run(&client.client(settings)?, command).await
        }
        Cmd::Events {
            job_id,
            after,
            json,
            client,
        } => terminal::tables::events(&client.client(settings)?, &job_id, after, json).await,
        Cmd::Prune { older_than, store } => {
            store.apply(settings);
            done(admin::prune(settings, older_than).await)
        }
        Cmd::Migrate { store } => {
            store.apply(settings);
            done(admin::migrate(settings).await)
        }
        Cmd::Config {
            store,
            client,
            serve,
            worker,
        } => {
            store.apply(settings);
            client.apply(settings);
            serve.apply(settings);
            worker.apply(settings);
            // Reported here, not at the first job.
            settings.registry()?;
            admin::print_config(settings);
            Ok(Exit::Success)
        }
        Cmd::Completions { shell } => {
            admin::completions(shell, &mut Cli::command());
            Ok(Exit::Success)
        }
        Cmd::Bench(args) => done(bench::run(args).await),
    }
}
