//! One job at a time: submit, status, watch, cancel, retry.

use std::io::Read;
use std::time::Duration;

use errand::client::Client;
use errand::{Job, JobStatus, Timestamp};
use errand_api::{SubmitOptions, SubmitRequest};
use serde_json::Value;

use super::follow::follow;
use super::render::{bold, dim, duration, paint, relative, status_style};
use super::{Exit, InputError};

/// What a job is: its command, input and options; for `submit`, and for
/// the job each tick of a schedule submits.
#[derive(clap::Args, Debug)]
pub struct JobArgs {
    /// The command, APP.NAME (e.g. demo.sleep).
    pub command: String,
    /// The input: JSON, @FILE to read it from a file, or - for stdin.
    #[arg(long, short, default_value = "{}")]
    pub input: String,
    /// JSON handed to the handler as is (user, tenant, request id...).
    /// Its top-level plain values can be listed by: `jobs --context KEY=VALUE`.
    #[arg(long)]
    pub context: Option<String>,
    /// A tag to find the job by (`jobs --tag TAG`); repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Higher runs first among waiting jobs [default: the command's].
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// The queue to wait in [default: the command's].
    #[arg(long)]
    pub queue: Option<String>,
    /// Per-attempt time limit (30s, 10m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Attempts in all, the first included [default: the command's].
    #[arg(long)]
    pub max_attempts: Option<u32>,
}

impl JobArgs {
    /// The submit request; `options` holds what the caller set beyond
    /// these arguments (run_at, delay, idempotency key).
    pub fn request(self, mut options: SubmitOptions) -> anyhow::Result<SubmitRequest> {
        options.priority = self.priority;
        options.queue = self.queue;
        options.timeout_secs = self.timeout.map(|d| d.as_secs_f64());
        options.max_attempts = self.max_attempts;
        Ok(SubmitRequest {
            command: self.command,
            app: None,
            input: read_json("--input", &self.input)?,
            context: self
                .context
                .as_deref()
                .map(|c| read_json("--context", c))
                .transpose()?,
            tags: self.tags,
            options: Some(options).filter(|o| *o != SubmitOptions::default()),
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Not before this time (RFC 3339).
    #[arg(long, conflicts_with = "delay")]
    pub run_at: Option<String>,
    /// Not before this long from now (30s, 5m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// A second submit with the same key returns the first job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A URL the server POSTs to when the job ends (its host must be on
    /// the server's webhook allow-list).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// With --webhook: `end` (once, when the job ends) or `status` (every
    /// change of status).
    #[arg(long, requires = "webhook", default_value = "end", value_parser = ["end", "status"])]
    pub webhook_on: String,
    /// Wait for the job to end; print its result; exit non-zero if it
    /// failed (3) or was canceled (4).
    #[arg(long)]
    pub wait: bool,
    /// Like --wait, drawing a live progress bar and the job's log lines.
    #[arg(long, conflicts_with = "wait")]
    pub follow: bool,
    /// With --wait: give up after this long (exit 7; the job goes on).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait_timeout: Option<Duration>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads `--input`/`--context`. A file or stdin that cannot be read is
/// an ordinary error (exit 1); JSON that does not parse is refused before
/// it is sent (exit 5).
fn read_json(what: &str, text: &str) -> anyhow::Result<Value> {
    let text = match text {
        "-" => {
            let mut all = String::new();
            std::io::stdin()
                .read_to_string(&mut all)
                .map_err(|e| anyhow::anyhow!("cannot read {what} from stdin: {e}"))?;
            all
        }
        _ => match text.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {what} from {path}: {e}"))?,
            None => text.to_owned(),
        },
    };
    serde_json::from_str(&text)
        .map_err(|e| InputError(format!("{what} is not valid JSON: {e}")).into())
}

pub async fn submit(client: &Client, args: SubmitArgs) -> anyhow::Result<Exit> {
    let run_at = args
        .run_at
        .as_deref()
        .map(|text| {
            Timestamp::parse_rfc3339(text)
                .ok_or_else(|| InputError(format!("--run-at {text:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    let request = args.job.request(SubmitOptions {
        run_at,
        delay_secs: args.delay.map(|d| d.as_secs_f64()),
        idempotency_key: args.idempotency_key,
        webhook: args.webhook.map(|url| errand::Webhook {
            url,
            on: errand::WebhookOn::parse(&args.webhook_on).unwrap_or_default(),
        }),
        ..SubmitOptions::default()
    })?;
    let submitted = client.submit(&request).await?;
    let job_id = submitted.job_id.to_string();
    if !args.wait && !args.follow {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&submitted)?);
        } else {
            println!("{job_id}");
        }
        return Ok(Exit::Success);
    }
    let job = if args.follow {
        follow(client, &job_id).await?
    } else {
        client.wait(&job_id, args.wait_timeout).await?
    };
    Ok(print_outcome(&job, args.json))
}

/// The result on stdout, or why there is none on stderr; the exit code.
fn print_outcome(job: &Job, json: bool) -> Exit {
    let exit = Exit::for_job(job);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(job).expect("jobs serialize")
        );
        return exit;
    }
    match job.status {
        JobStatus::Completed => {
            let result = job.result.clone().unwrap_or(Value::Null);
            println!(
                "{}",
                serde_json::to_string_pretty(&result).expect("JSON serializes")
            );
        }
        JobStatus::Failed | JobStatus::Canceled => {
            let why = job
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .or_else(|| job.error_message.clone())
                .unwrap_or_else(|| "by request".into());
            anstream::eprintln!(
                "{} {} {why}",
                paint(status_style(job.status), job.status),
                job.job_id
            );
        }
        JobStatus::New | JobStatus::Running => {
            anstream::eprintln!("job {} is still {}", job.job_id, job.status);
        }
    }
    exit
}

pub async fn status(client: &Client, job_id: &str, json: bool) -> anyhow::Result<Exit> {
    let job = client.job(job_id, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        anstream::print!(
            "{}",
            describe(&job, errand::Clock::now(&errand::SystemClock))
        );
    }
    Ok(Exit::Success)
}

/// `errand status` in words: one field a line, the ones that matter.
fn describe(job: &Job, now: Timestamp) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("job", job.job_id.to_string()),
        ("command", job.full_command()),
        (
            "status",
            format!(
                "{} (attempt {} of {})",
                paint(status_style(job.status), job.status),
                job.attempt,
                job.max_attempts
            ),
        ),
        (
            "queue",
            format!("{} (priority {})", job.queue, job.priority),
        ),
    ];
    if let Some(progress) = &job.progress {
        let percent = progress
            .fraction
            .map(|f| format!("{:.0}%", f * 100.0))
            .unwrap_or_default();
        let message = progress.message.clone().unwrap_or_default();
        lines.push(("progress", format!("{percent} {message}").trim().to_owned()));
    }
    lines.push(("created", relative(job.created, now)));
    if job.status == JobStatus::New && job.run_at > now {
        lines.push(("runs", relative(job.run_at, now)));
    }
    // A queued job (waiting for a retry) is not running: no run time.
    if let Some(started) = job.started.filter(|_| job.status != JobStatus::New) {
        let ran = job.finished.unwrap_or(now).since(started).as_secs_f64();
        lines.push((
            "started",
            format!("{} (ran {})", relative(started, now), duration(ran)),
        ));
    }
    if let Some(worker) = &job.worker_id {
        lines.push(("worker", worker.clone()));
    }
    if job.cancel_requested && !job.status.is_terminal() {
        lines.push(("cancel", "requested".into()));
    }
    if let Some(error) = &job.error {
        lines.push((
            "error",
            format!(
                "{}: {} (attempt {})",
                error.kind, error.message, error.attempt
            ),
        ));
    }
    if let Some(result) = &job.result {
        lines.push((
            "result",
            serde_json::to_string(result).expect("JSON serializes"),
        ));
    }
    if let Some(parent) = &job.parent_id {
        lines.push(("parent", parent.to_string()));
    }
    lines
        .into_iter()
        .map(|(name, value)| format!("{} {value}\n", paint(bold(), format!("{name:<9}"))))
        .collect()
}

pub async fn watch(client: &Client, job_id: &str, json: bool) -> anyhow::Result<Exit> {
    let job = follow(client, job_id).await?;
    Ok(print_outcome(&job, json))
}

pub async fn cancel(client: &Client, job_id: &str, json: bool) -> anyhow::Result<Exit> {
    let answer = client.cancel(job_id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if answer.status == JobStatus::Canceled {
        anstream::println!(
            "{} {job_id}",
            paint(status_style(JobStatus::Canceled), "canceled")
        );
    } else {
        anstream::println!(
            "{} {job_id} {}",
            paint(status_style(answer.status), "cancel requested"),
            paint(dim(), "(its worker is stopping it)")
        );
    }
    Ok(Exit::Success)
}

pub async fn retry(
    client: &Client,
    job_id: &str,
    clear_checkpoint: bool,
    json: bool,
) -> anyhow::Result<Exit> {
    let job = client.retry(job_id, clear_checkpoint).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        anstream::println!(
            "{} {job_id}",
            paint(status_style(job.status), "queued again")
        );
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_comes_inline_from_a_file_or_refused_with_the_reason() {
        assert_eq!(read_json("--input", r#"{"a": 1}"#).unwrap()["a"], 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        std::fs::write(&path, "[1, 2]").unwrap();
        let from_file = read_json("--input", &format!("@{}", path.display())).unwrap();
        assert_eq!(from_file, serde_json::json!([1, 2]));
        let error = read_json("--input", "{oops").unwrap_err().to_string();
        assert!(error.contains("--input is not valid JSON"), "{error}");
        let error = read_json("--input", "@/nonexistent.json")
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent.json"), "{error}");
    }
}
