//! `submit --follow` and `watch`: a live progress bar from the job's SSE
//! stream, its log lines above the bar, until the job ends. The stream is
//! resumed with `Last-Event-ID` if the connection drops, so nothing is
//! shown twice or missed.

use std::time::Duration;

use errand::client::{Client, ClientError, StreamEvent};
use errand::{Change, Job, JobEvent, JobStatus};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::render::{paint, status_style};

/// Connection failures in a row before giving up on the server.
const RECONNECTS: u32 = 30;

/// Follows the job until it ends and returns it as it ended.
pub async fn follow(client: &Client, job_id: &str) -> anyhow::Result<Job> {
    let view = View::new();
    let mut last_seq = None;
    let mut failures = 0;
    loop {
        match client.stream(job_id, last_seq).await {
            Ok(stream) => {
                failures = 0;
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    let Ok(item) = item else { break };
                    let ended = match item {
                        StreamEvent::Snapshot(job) => {
                            last_seq = Some(job.event_seq);
                            view.snapshot(&job);
                            job.status.is_terminal()
                        }
                        StreamEvent::Event(event) => {
                            last_seq = Some(event.seq);
                            view.event(&event);
                            event.is_terminal()
                        }
                        StreamEvent::End(_) => true,
                    };
                    if ended {
                        view.finish();
                        return Ok(client.job(job_id, None).await?);
                    }
                }
            }
            Err(error) if error.is_unavailable() && failures < RECONNECTS => failures += 1,
            Err(error) => {
                view.finish();
                return Err(error.into());
            }
        }
        // The stream ended before the job did (a server restarting):
        // resume where it stopped.
        if failures >= RECONNECTS {
            view.finish();
            return Err(ClientError::Unreachable {
                url: "the job's event stream".into(),
                reason: format!("{RECONNECTS} reconnects failed"),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The bar on a terminal; plain lines on stderr otherwise.
struct View {
    bar: ProgressBar,
    /// The job's status as last seen: the bar fills only for `completed`.
    status: std::cell::Cell<Option<JobStatus>>,
}

impl View {
    fn new() -> Self {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {percent:>3}% {wide_msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            status: std::cell::Cell::new(None),
        }
    }

    /// A line above the bar, or on stderr when there is no bar.
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            anstream::eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn set_status(&self, status: JobStatus) {
        self.status.set(Some(status));
        self.bar.set_prefix(paint(status_style(status), status));
    }

    fn snapshot(&self, job: &Job) {
        self.say(format!(
            "{} {} {}",
            job.job_id,
            job.full_command(),
            paint(status_style(job.status), job.status)
        ));
        self.set_status(job.status);
        if let Some(progress) = &job.progress {
            self.progress(progress.fraction, progress.message.as_deref());
        }
    }

    fn progress(&self, fraction: Option<f64>, message: Option<&str>) {
        if let Some(fraction) = fraction {
            self.bar
                .set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
        }
        if let Some(message) = message {
            self.bar.set_message(message.to_owned());
            if self.bar.is_hidden() {
                let percent = fraction.map(|f| format!("{:>3.0}% ", f * 100.0));
                self.say(format!("{}{message}", percent.unwrap_or_default()));
            }
        }
    }

    fn event(&self, event: &JobEvent) {
        let Ok(change) = event.change() else {
            // Not a change this version knows (a newer server): say so.
            self.say(format!("{} {}", event.kind.as_str(), event.data));
            return;
        };
        match change {
            Change::Progress(progress) => {
                self.progress(progress.fraction, progress.message.as_deref());
            }
            Change::Log { line, .. } => self.say(line),
            Change::Checkpoint { .. } => {
                self.say(paint(status_style(event.status), "checkpoint saved"))
            }
            Change::CancelRequested => {
                self.say(paint(status_style(JobStatus::Canceled), "cancel requested"));
            }
            Change::RetryScheduled { error, .. } | Change::Failed { error } => {
                self.set_status(event.status);
                let then = if event.status == JobStatus::New {
                    "; it will be retried"
                } else {
                    ""
                };
                self.say(format!(
                    "{} {}{then}",
                    paint(status_style(JobStatus::Failed), "attempt failed:"),
                    error.message
                ));
            }
            Change::Completed { .. } => {
                self.set_status(event.status);
                self.bar.set_position(1000);
            }
            change => {
                self.set_status(event.status);
                let mut line = paint(status_style(event.status), event.status);
                let attempt = match &change {
                    Change::Claimed { attempt, .. } => Some(*attempt),
                    Change::Canceled { attempt, .. } => *attempt,
                    _ => None,
                };
                if let Some(attempt) = attempt {
                    line.push_str(&format!(" (attempt {attempt})"));
                }
                if let Some(reason) = event.data.get("reason").and_then(Value::as_str) {
                    line.push_str(&format!(": {reason}"));
                }
                self.say(line);
            }
        }
    }

    /// Leaves the bar where the job left it: full only for a completed
    /// job, never for one that failed or was canceled part way.
    fn finish(&self) {
        if self.status.get() == Some(JobStatus::Completed) {
            self.bar.finish();
        } else {
            self.bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_stays_where_a_failed_or_canceled_job_left_it() {
        for (status, position) in [
            (JobStatus::Failed, 300),
            (JobStatus::Canceled, 300),
            (JobStatus::Completed, 1000),
        ] {
            let view = View::new();
            view.progress(Some(0.3), None);
            view.set_status(status);
            view.finish();
            assert_eq!(view.bar.position(), position, "{status}");
        }
    }
}
