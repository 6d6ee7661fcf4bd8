//! errand in one file. Run it with `cargo run --release -p quickstart`.
//!
//! It opens (or creates) `quickstart.db`, starts a worker in this process
//! with one typed command, submits jobs, follows their progress, cancels
//! one, and prints what happened.

use std::time::Duration;

use errand::{
    Command, CommandOptions, HandlerError, JobContext, JobStatus, NewJob, Queue, Registry,
    RetryPolicy, WaitStrategy, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The input of our command; its JSON Schema is published for validation.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct PodcastInput {
    episode: String,
    /// How many segments to "render".
    segments: u32,
}

#[derive(Serialize)]
struct PodcastOutput {
    episode: String,
    audio_url: String,
}

/// A long-running command, like Open Notebook's `generate_podcast`.
struct GeneratePodcast;

impl Command for GeneratePodcast {
    const APP: &'static str = "notebook";
    const NAME: &'static str = "generate_podcast";
    type Input = PodcastInput;
    type Output = PodcastOutput;

    fn options(&self) -> CommandOptions {
        CommandOptions {
            timeout: Some(Duration::from_secs(600)),
            retry: RetryPolicy {
                max_attempts: 3,
                wait_strategy: WaitStrategy::ExponentialJitter,
                wait_min: 1.0,
                wait_max: 30.0,
                stop_on: vec!["validation".into()],
                ..RetryPolicy::default()
            },
            max_concurrency: Some(2),
            ..CommandOptions::default()
        }
    }

    async fn run(
        &self,
        input: PodcastInput,
        ctx: JobContext,
    ) -> Result<PodcastOutput, HandlerError> {
        if input.segments == 0 {
            return Err(
                HandlerError::permanent("segments must be at least 1").with_kind("validation")
            );
        }
        for segment in 1..=input.segments {
            tokio::select! {
                () = ctx.canceled() => return Err(HandlerError::canceled()),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let fraction = f64::from(segment) / f64::from(input.segments);
            ctx.progress(fraction, format!("rendered segment {segment}"))
                .await?;
        }
        ctx.log("uploading the audio").await?;
        Ok(PodcastOutput {
            audio_url: format!("https://example.invalid/{}.mp3", input.episode),
            episode: input.episode,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let queue = Queue::open("sqlite://quickstart.db").await?;

    // A worker in this process; `errand worker` runs one as its own process.
    let registry = Registry::new().with(GeneratePodcast)?;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        queue
            .worker(registry, WorkerConfig::default())
            .run(shutdown.clone()),
    );

    let episode = |name: &str, segments| PodcastInput {
        episode: name.into(),
        segments,
    };
    let first = queue
        .submit_command(&GeneratePodcast, &episode("pilot", 5))
        .await?;
    let invalid = queue
        .submit_command(&GeneratePodcast, &episode("empty", 0))
        .await?;
    let doomed = queue
        .submit_command(&GeneratePodcast, &episode("cut", 50))
        .await?;
    let raw = queue
        .submit(NewJob::new(
            "notebook",
            "generate_podcast",
            serde_json::json!({"episode": 7}),
        ))
        .await?;
    println!("submitted {first}, {invalid}, {doomed} and {raw}");

    // Follow the first job's progress until it ends.
    loop {
        let job = queue.status(&first).await?;
        if let Some(progress) = &job.progress {
            println!(
                "  {first}: {} {:.0}% {}",
                job.status,
                100.0 * progress.fraction.unwrap_or(0.0),
                progress.message.as_deref().unwrap_or("")
            );
        }
        if job.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    queue.cancel(&doomed).await?;
    for id in [&first, &invalid, &doomed, &raw] {
        let job = queue.wait(id, Duration::from_secs(30)).await?;
        match job.status {
            JobStatus::Completed => {
                println!("{id}: completed → {}", job.result.unwrap_or_default())
            }
            status => println!(
                "{id}: {status} ({})",
                job.error_message.unwrap_or_else(|| "no error".into())
            ),
        }
    }
    println!("history of {first}:");
    for event in queue.events(&first, 0).await? {
        println!("  #{} {:<8} {}", event.seq, event.kind.as_str(), event.data);
    }

    shutdown.cancel();
    worker.await??;
    Ok(())
}
