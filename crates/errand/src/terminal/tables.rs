//! Many things at once, as tables: list, stats, commands, workers, events.
//! Each takes `--json` for the server's own JSON, for scripts.

use std::time::Duration;

use errand::client::Client;
use errand::{Clock, JobStatus, SystemClock, Timestamp};
use errand_api::ListQuery;

use super::render::{dim, duration, paint, relative, status_style, Table};
use super::Exit;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this command (NAME or APP.NAME).
    #[arg(long)]
    pub command: Option<String>,
    /// Only jobs in this status (new, running, completed, failed, canceled).
    #[arg(long)]
    pub status: Option<JobStatusArg>,
    /// Only commands of this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only jobs in this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only children of this job.
    #[arg(long)]
    pub parent: Option<String>,
    /// Only jobs created within this long (10m, 2h, 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only jobs with this tag; repeat for jobs with all of them.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only jobs whose context has KEY with VALUE (compared as text:
    /// notebook_id=42 matches 42 and "42"); repeat for several keys.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_context_filter)]
    pub context: Vec<(String, String)>,
    /// At most this many jobs (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// The page after the one that printed this cursor.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print the server's JSON (`{jobs, next_cursor}`).
    #[arg(long)]
    pub json: bool,
}

/// `KEY=VALUE`, split at the first `=`.
fn parse_context_filter(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "expected KEY=VALUE (e.g. notebook_id=42), got {text:?}"
        )),
    }
}

/// Job statuses as clap values, so a typo is refused with the choices.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum JobStatusArg {
    New,
    Running,
    Completed,
    Failed,
    Canceled,
}

impl From<JobStatusArg> for JobStatus {
    fn from(status: JobStatusArg) -> Self {
        match status {
            JobStatusArg::New => Self::New,
            JobStatusArg::Running => Self::Running,
            JobStatusArg::Completed => Self::Completed,
            JobStatusArg::Failed => Self::Failed,
            JobStatusArg::Canceled => Self::Canceled,
        }
    }
}

/// How far a job got matters while it runs; after, its status says it
/// (a completed job is not "92%").
fn progress_cell(job: &errand::Job) -> String {
    job.progress
        .as_ref()
        .filter(|_| job.status == JobStatus::Running)
        .and_then(|p| p.fraction)
        .map(|f| format!("{:>3.0}%", f * 100.0))
        .unwrap_or_default()
}

pub async fn list(client: &Client, args: ListArgs) -> anyhow::Result<Exit> {
    let now = SystemClock.now();
    let query = ListQuery {
        command_filter: args.command,
        status_filter: args.status.map(|s| JobStatus::from(s).to_string()),
        app: args.app,
        queue: args.queue,
        parent_id: args.parent,
        created_after: args.since.map(|ago| now.minus(ago).to_rfc3339()),
        created_before: None,
        limit: Some(args.limit),
        cursor: args.cursor,
        tag: args.tags,
        context: args.context,
    };
    let page = client.list(&query).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(Exit::Success);
    }
    let mut table = Table::new(vec![
        "JOB", "COMMAND", "STATUS", "PROGRESS", "TRY", "CREATED", "UPDATED",
    ]);
    for job in &page.jobs {
        table.row(vec![
            job.job_id.to_string(),
            job.full_command(),
            paint(status_style(job.status), job.status),
            progress_cell(job),
            format!("{}/{}", job.attempt, job.max_attempts),
            relative(job.created, now),
            relative(job.updated, now),
        ]);
    }
    if table.is_empty() {
        anstream::eprintln!("{}", paint(dim(), "no jobs match"));
    } else {
        anstream::print!("{}", table.render());
    }
    if let Some(cursor) = page.next_cursor {
        anstream::eprintln!("{}", paint(dim(), format!("more: --cursor {cursor}")));
    }
    Ok(Exit::Success)
}

pub async fn stats(client: &Client, json: bool) -> anyhow::Result<Exit> {
    let stats = client.stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(Exit::Success);
    }
    let mut header = vec!["COMMAND"];
    header.extend(JobStatus::ALL.iter().map(|s| s.as_str()));
    header.extend(["FAIL%", "P50", "P95", "OLDEST NEW"]);
    let mut table = Table::new(header);
    let secs = |value: Option<f64>| value.map(duration).unwrap_or_else(|| "-".into());
    for command in &stats.commands {
        let mut row = vec![command.full_name()];
        for status in JobStatus::ALL {
            let count = command.counts.get(status.as_str()).copied().unwrap_or(0);
            row.push(if count == 0 {
                paint(dim(), 0)
            } else {
                paint(status_style(status), count)
            });
        }
        row.push(
            command
                .failure_rate
                .map(|rate| format!("{:.1}", rate * 100.0))
                .unwrap_or_else(|| "-".into()),
        );
        row.push(secs(command.p50_run_secs));
        row.push(secs(command.p95_run_secs));
        row.push(secs(command.oldest_new_age_secs));
        table.row(row);
    }
    print_table(&table, "no jobs yet");
    Ok(Exit::Success)
}

pub async fn commands(client: &Client, json: bool) -> anyhow::Result<Exit> {
    let list = client.commands().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Success);
    }
    let mut table = Table::new(vec![
        "COMMAND",
        "QUEUE",
        "TIMEOUT",
        "ATTEMPTS",
        "DESCRIPTION",
    ]);
    for command in &list.commands {
        let defaults = &command.defaults;
        table.row(vec![
            command.full_name(),
            defaults.queue.clone(),
            defaults
                .timeout_secs
                .map(duration)
                .unwrap_or_else(|| "-".into()),
            defaults.retry.max_attempts.to_string(),
            command.description.clone().unwrap_or_default(),
        ]);
    }
    print_table(&table, "no commands registered (is a worker running?)");
    Ok(Exit::Success)
}

pub async fn queues(client: &Client, json: bool) -> anyhow::Result<Exit> {
    let list = client.queues().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Success);
    }
    let mut table = Table::new(vec!["QUEUE", "WAITING", "RUNNING", "STATE"]);
    for queue in &list.queues {
        table.row(vec![
            queue.name.clone(),
            queue.new.to_string(),
            queue.running.to_string(),
            if queue.paused { "paused" } else { "active" }.to_owned(),
        ]);
    }
    print_table(&table, "no queue has jobs");
    Ok(Exit::Success)
}

/// Pauses (or resumes) a queue and says what it holds.
pub async fn pause(client: &Client, queue: &str, pause: bool) -> anyhow::Result<Exit> {
    let info = client.pause_queue(queue, pause).await?;
    let state = if info.paused { "paused" } else { "resumed" };
    println!(
        "{} {state}: {} waiting, {} running",
        info.name, info.new, info.running
    );
    Ok(Exit::Success)
}

pub async fn workers(client: &Client, json: bool) -> anyhow::Result<Exit> {
    let list = client.workers().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Success);
    }
    let now = SystemClock.now();
    let mut table = Table::new(vec![
        "WORKER",
        "HOST",
        "PID",
        "QUEUES",
        "BUSY",
        "HEARTBEAT",
        "COMMANDS",
    ]);
    for worker in &list.workers {
        table.row(vec![
            worker.worker_id.clone(),
            worker.host.clone(),
            worker.pid.to_string(),
            worker.queues.join(","),
            format!("{}/{}", worker.running.len(), worker.slots),
            relative(worker.last_heartbeat, now),
            worker.commands.join(","),
        ]);
    }
    print_table(&table, "no live workers");
    Ok(Exit::Success)
}

pub async fn events(client: &Client, job_id: &str, after: i64, json: bool) -> anyhow::Result<Exit> {
    let list = client.events(job_id, after).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Success);
    }
    let mut table = Table::new(vec!["SEQ", "AT", "KIND", "STATUS", "DATA"]);
    for event in &list.events {
        table.row(vec![
            event.seq.to_string(),
            utc_time(event.at),
            event.kind.as_str().to_owned(),
            paint(status_style(event.status), event.status),
            serde_json::to_string(&event.data)?,
        ]);
    }
    print_table(&table, "no events");
    Ok(Exit::Success)
}

fn utc_time(at: Timestamp) -> String {
    at.to_datetime()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

pub(super) fn print_table(table: &Table, when_empty: &str) {
    if table.is_empty() {
        anstream::eprintln!("{}", paint(dim(), when_empty));
    } else {
        anstream::print!("{}", table.render());
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    #[test]
    fn only_a_running_job_shows_how_far_it_got() {
        let mut job: errand::Job = serde_json::from_value(serde_json::json!({
            "job_id": "j", "app": "a", "command": "c", "input": {}, "context": null,
            "status": "completed", "result": null, "error_message": null, "error": null,
            "progress": {"fraction": 0.92, "message": null, "stage": null, "data": null, "updated": null},
            "attempt": 1, "max_attempts": 3, "retry": errand::RetryPolicy::default(),
            "priority": 0, "queue": "default", "run_at": "2026-01-01T00:00:00Z",
            "timeout_secs": null, "idempotency_key": null, "parent_id": null,
            "cancel_requested": false, "worker_id": null, "lease_until": null,
            "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:00Z",
            "started": null, "finished": null
        }))
        .unwrap();
        assert_eq!(progress_cell(&job), "");
        job.status = JobStatus::Running;
        assert_eq!(progress_cell(&job), " 92%");
    }
}
