//! The worker runtime against a real SQLite store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use errand_core::{error_kind, EventKind, JobId, JobStatus, RetryPolicy, WaitStrategy};
use errand_store::NewJob;
use errand_worker::{
    ClaimFilter, Command, CommandOptions, HandlerError, JobContext, Registry, RegistryError,
    WorkerConfig,
};
use serde_json::{json, Value};

mod common;
use common::{fast_config, Harness};

fn options() -> CommandOptions {
    CommandOptions::default()
}

fn job(name: &str, input: Value) -> NewJob {
    NewJob::new("t", name, input)
}

fn echo_registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register_fn(
            "t",
            "echo",
            options(),
            |input, _ctx| async move { Ok(input) },
        )
        .unwrap();
    registry
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct AddInput {
    a: i64,
    b: i64,
}

struct Add;

impl Command for Add {
    const APP: &'static str = "t";
    const NAME: &'static str = "add";
    type Input = AddInput;
    type Output = i64;

    async fn run(&self, input: AddInput, _ctx: JobContext) -> Result<i64, HandlerError> {
        Ok(input.a + input.b)
    }
}

#[tokio::test]
async fn runs_a_typed_command_and_records_its_result() {
    let registry = Registry::new().with(Add).unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h.submit(job("add", json!({"a": 2, "b": 3}))).await;
    let done = h.wait_for(&id, JobStatus::Completed).await;
    assert_eq!(done.result, Some(json!(5)));
    assert_eq!(done.attempt, 1);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn undecodable_input_fails_the_job_once_with_a_clear_error() {
    let registry = Registry::new().with(Add).unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h.submit(job("add", json!({"a": "two"}))).await;
    let failed = h.wait_for(&id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!(error.kind, error_kind::INVALID_INPUT);
    assert!(error.message.contains("t.add"), "{}", error.message);
    assert_eq!(failed.attempt, 1, "a poison pill is not retried");
    // The worker is still healthy.
    let ok = h.submit(job("add", json!({"a": 1, "b": 1}))).await;
    h.wait_for(&ok, JobStatus::Completed).await;
    h.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_command_fails_when_claiming_everything() {
    let config = WorkerConfig {
        claim_filter: ClaimFilter::All,
        ..fast_config()
    };
    let mut h = Harness::start(echo_registry(), config).await;
    let id = h.submit(job("nobody-has-this", json!({}))).await;
    let failed = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(failed.error.unwrap().kind, error_kind::UNKNOWN_COMMAND);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_worker_leaves_other_workers_commands_alone() {
    let mut h = Harness::start(echo_registry(), fast_config()).await;
    let theirs = h.submit(job("theirs", json!({}))).await;
    let mine = h.submit(job("echo", json!({"x": 1}))).await;
    h.wait_for(&mine, JobStatus::Completed).await;
    assert_eq!(h.store.get(&theirs).await.unwrap().status, JobStatus::New);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn progress_logs_and_child_jobs_reach_the_store() {
    let mut registry = echo_registry();
    registry
        .register_fn(
            "t",
            "parent",
            options(),
            |_input, ctx: JobContext| async move {
                ctx.progress(0.5, "halfway").await?;
                ctx.log("spawning a child").await?;
                let child = ctx
                    .submit(NewJob::new("t", "echo", json!({"from": "parent"})))
                    .await?;
                assert_eq!(ctx.attempt(), 1);
                assert_eq!(ctx.context(), Some(&json!({"user": "u1"})));
                ctx.progress(1.0, "done").await?;
                Ok(json!({"child": child}))
            },
        )
        .unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h
        .submit(job("parent", json!({})).context(json!({"user": "u1"})))
        .await;
    let done = h.wait_for(&id, JobStatus::Completed).await;
    assert_eq!(done.progress.unwrap().fraction, Some(1.0));
    let child = JobId::from(done.result.unwrap()["child"].as_str().unwrap());
    let child = h.wait_for(&child, JobStatus::Completed).await;
    assert_eq!(child.parent_id, Some(id.clone()));
    let events = h.store.events(&id, 0, 100).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Status,
            EventKind::Status,
            EventKind::Progress,
            EventKind::Log,
            EventKind::Progress,
            EventKind::Result
        ]
    );
    assert_eq!(events[2].data["message"], json!("halfway"));
    h.stop().await.unwrap();
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        wait_strategy: WaitStrategy::Fixed,
        wait_time: 0.01,
        ..RetryPolicy::default()
    }
}

/// A handler that saves where it got to continues from there on its next
/// attempt instead of starting over.
#[tokio::test]
async fn a_retried_attempt_continues_from_the_last_checkpoint() {
    let mut registry = Registry::new();
    registry
        .register_fn(
            "t",
            "lines",
            options(),
            |_input, ctx: JobContext| async move {
                let start: u32 = ctx.checkpoint_as().unwrap_or(0);
                let mut spoken = Vec::new();
                for line in start..6 {
                    if ctx.attempt() == 1 && line == 3 {
                        return Err(HandlerError::retryable("the TTS provider timed out"));
                    }
                    spoken.push(line);
                    ctx.save_checkpoint(line + 1).await?;
                }
                Ok(json!({"attempt": ctx.attempt(), "spoken": spoken}))
            },
        )
        .unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h
        .submit(job("lines", json!({})).retry(quick_retry(3)))
        .await;
    let done = h.wait_for(&id, JobStatus::Completed).await;
    assert_eq!(
        done.result,
        Some(json!({"attempt": 2, "spoken": [3, 4, 5]})),
        "the second attempt spoke only the lines the first had not"
    );
    assert_eq!(done.checkpoint, Some(json!(6)));
    h.stop().await.unwrap();
}

#[tokio::test]
async fn retryable_errors_retry_through_run_at_until_success() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let mut registry = Registry::new();
    registry
        .register_fn("t", "flaky", options(), move |_input, ctx: JobContext| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt() < 3 {
                    Err(HandlerError::retryable(format!(
                        "attempt {} failed",
                        ctx.attempt()
                    )))
                } else {
                    Ok(json!("third time lucky"))
                }
            }
        })
        .unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h
        .submit(job("flaky", json!({})).retry(quick_retry(5)))
        .await;
    let done = h.wait_for(&id, JobStatus::Completed).await;
    assert_eq!((done.attempt, calls.load(Ordering::SeqCst)), (3, 3));
    let failures = h
        .store
        .events(&id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Failure)
        .count();
    assert_eq!(failures, 2, "each failed attempt is in the history");
    h.stop().await.unwrap();
}

#[tokio::test]
async fn permanent_errors_and_stop_on_kinds_fail_at_once() {
    let mut registry = Registry::new();
    registry
        .register_fn("t", "permanent", options(), |_input, _ctx| async {
            Err(HandlerError::permanent("source was deleted"))
        })
        .unwrap()
        .register_fn("t", "validation", options(), |_input, _ctx| async {
            Err(HandlerError::retryable("bad field").with_kind("validation"))
        })
        .unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let permanent = h
        .submit(job("permanent", json!({})).retry(quick_retry(15)))
        .await;
    let stop_on = RetryPolicy {
        stop_on: vec!["validation".into()],
        ..quick_retry(15)
    };
    let validation = h.submit(job("validation", json!({})).retry(stop_on)).await;
    for id in [&permanent, &validation] {
        let failed = h.wait_for(id, JobStatus::Failed).await;
        assert_eq!(failed.attempt, 1, "not retried");
        assert!(!failed.error.unwrap().retryable);
    }
    assert_eq!(
        h.store
            .get(&permanent)
            .await
            .unwrap()
            .error_message
            .as_deref(),
        Some("source was deleted")
    );
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_panicking_handler_fails_its_attempt_not_the_worker() {
    let mut registry = echo_registry();
    registry
        .register_fn("t", "panics", options(), |_input, _ctx| async {
            panic!("handler bug");
        })
        .unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h
        .submit(job("panics", json!({})).retry(quick_retry(2)))
        .await;
    let failed = h.wait_for(&id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!(error.kind, error_kind::PANIC);
    assert!(error.message.contains("handler bug"), "{}", error.message);
    assert_eq!(failed.attempt, 2);
    let ok = h.submit(job("echo", json!(1))).await;
    h.wait_for(&ok, JobStatus::Completed).await;
    h.stop().await.unwrap();
}

fn sleeper(registry: &mut Registry, name: &str, cooperative: bool, options: CommandOptions) {
    registry
        .register_fn(
            "t",
            name,
            options,
            move |_input, ctx: JobContext| async move {
                if cooperative {
                    tokio::select! {
                        () = ctx.canceled() => Err(HandlerError::canceled()),
                        () = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!("slept")),
                    }
                } else {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(json!("slept"))
                }
            },
        )
        .unwrap();
}

#[tokio::test]
async fn a_timeout_is_a_retryable_error_of_kind_timeout() {
    let mut registry = Registry::new();
    sleeper(&mut registry, "slow", true, options());
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h
        .submit(
            job("slow", json!({}))
                .timeout_secs(0.2)
                .retry(quick_retry(2)),
        )
        .await;
    let failed = h.wait_for(&id, JobStatus::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!(
        (error.kind.as_str(), error.retryable),
        (error_kind::TIMEOUT, true)
    );
    assert_eq!(failed.attempt, 2, "the timeout was retried once");
    h.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_cooperative_handler() {
    let mut registry = Registry::new();
    sleeper(&mut registry, "sleep", true, options());
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h.submit(job("sleep", json!({}))).await;
    h.wait_for(&id, JobStatus::Running).await;
    h.store.cancel(&id).await.unwrap();
    let canceled = h.wait_for(&id, JobStatus::Canceled).await;
    assert!(canceled.finished.is_some());
    h.stop().await.unwrap();
}

/// Counts the handler futures that were dropped before they finished.
struct DroppedUnfinished(Arc<AtomicUsize>);

impl Drop for DroppedUnfinished {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn cancel_aborts_a_handler_that_ignores_it_after_the_grace_period() {
    let aborted = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    let counter = aborted.clone();
    registry
        .register_fn("t", "stubborn", options(), move |_input, _ctx| {
            let guard = DroppedUnfinished(counter.clone());
            async move {
                let _guard = guard;
                // Never looks at its context: only an abort ends it.
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
        .unwrap();
    // One slot: the second job can run only if the first one's came back.
    let config = WorkerConfig {
        max_tasks: 1,
        ..fast_config()
    };
    let mut h = Harness::start(registry, config).await;
    let id = h.submit(job("stubborn", json!({}))).await;
    h.wait_for(&id, JobStatus::Running).await;
    h.store.cancel(&id).await.unwrap();
    h.wait_for(&id, JobStatus::Canceled).await;
    assert_eq!(aborted.load(Ordering::SeqCst), 1, "the handler was aborted");
    let next = h.submit(job("stubborn", json!({}))).await;
    h.wait_for(&next, JobStatus::Running).await;
    h.store.cancel(&next).await.unwrap();
    h.wait_for(&next, JobStatus::Canceled).await;
    assert_eq!(aborted.load(Ordering::SeqCst), 2);
    h.stop().await.unwrap();
}

/// Records the most attempts of a command that ever ran at once.
fn concurrency_probe(
    registry: &mut Registry,
    name: &str,
    options: CommandOptions,
) -> Arc<AtomicUsize> {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let peak_out = peak.clone();
    registry
        .register_fn("t", name, options, move |_input, _ctx| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(json!(null))
            }
        })
        .unwrap();
    peak_out
}

#[tokio::test]
async fn max_tasks_and_per_command_limits_bound_concurrency() {
    let mut registry = Registry::new();
    let wide = concurrency_probe(&mut registry, "wide", options());
    let narrow = concurrency_probe(
        &mut registry,
        "narrow",
        CommandOptions {
            max_concurrency: Some(1),
            ..options()
        },
    );
    let config = WorkerConfig {
        max_tasks: 3,
        ..fast_config()
    };
    let mut h = Harness::start(registry, config).await;
    let mut jobs: Vec<NewJob> = (0..12).map(|_| job("wide", json!({}))).collect();
    jobs.extend((0..6).map(|_| job("narrow", json!({}))));
    h.run_to_completion(jobs).await;
    assert_eq!(narrow.load(Ordering::SeqCst), 1, "one narrow job at a time");
    let wide_peak = wide.load(Ordering::SeqCst);
    assert!((2..=3).contains(&wide_peak), "wide peak {wide_peak}");
    h.stop().await.unwrap();
}

/// A slot's next job is claimed by the transaction that records its last
/// outcome: while jobs keep coming, a slot costs one store call per job,
/// with no claim of its own in between. (With no jobs claimed ahead of the
/// slots: those make a slot start its next job before the call.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_s_next_job_is_claimed_with_its_last_outcome() {
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut registry = Registry::new();
    let handler_log = log.clone();
    registry
        .register_fn("t", "stamp", options(), move |input, _ctx| {
            let log = handler_log.clone();
            async move {
                log.lock().unwrap().push(format!("start {input}"));
                Ok(input)
            }
        })
        .unwrap();
    let store_log = log.clone();
    let config = WorkerConfig {
        max_tasks: 1,
        claim_ahead: 0,
        // Only the change feed and freed slots wake a claim.
        poll_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let mut h = Harness::start_seen_through(registry, config, move |store| {
        Arc::new(errand_store::Observed::new(store, move |op| {
            if op == "claim" || op == "finish_and_claim" || op == "finish" {
                store_log.lock().unwrap().push(op.into());
            }
            Ok(())
        }))
    })
    .await;
    h.run_to_completion((0..3).map(|i| job("stamp", json!(i))).collect())
        .await;
    let log = log.lock().unwrap().clone();
    let at = |entry: &str| log.iter().position(|e| e == entry).unwrap();
    assert_eq!(
        log[at("start 0")..=at("start 2")],
        [
            "start 0",
            "finish_and_claim",
            "start 1",
            "finish_and_claim",
            "start 2"
        ],
        "{log:?}"
    );
    h.stop().await.unwrap();
}

/// An echo worker with `slots` slots that only the change feed and freed
/// slots wake, counting its calls of the store operations `ops`.
async fn echo_worker_counting(
    slots: usize,
    ops: &'static [&'static str],
) -> (Harness, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let config = WorkerConfig {
        max_tasks: slots,
        poll_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let h = Harness::start_seen_through(echo_registry(), config, move |store| {
        Arc::new(errand_store::Observed::new(store, move |op| {
            if ops.contains(&op) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }))
    })
    .await;
    (h, calls)
}

/// Jobs submitted together are claimed together: the wake-ups their
/// events bring stand for one claim, and a finished job wakes no claim
/// when the queue was already empty (each used to cost a claim that found
/// nothing: 139 claims for these 200 jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_jobs_costs_a_few_claims_not_one_per_job() {
    let (mut h, claims) = echo_worker_counting(500, &["claim"]).await;
    // Let the worker reach its wait: only the feed can wake it now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = claims.load(Ordering::SeqCst);
    h.run_to_completion((0..200).map(|i| job("echo", json!(i))).collect())
        .await;
    let used = claims.load(Ordering::SeqCst) - before;
    assert!(used <= 5, "{used} claims for 200 jobs submitted together");
    h.stop().await.unwrap();
}

/// Quick jobs are claimed ahead of the slots: a slot that finishes one
/// starts the next at once, and its outcome joins the next batch. So even
/// two slots share one store call among many outcomes (each call carried
/// at most two before: 200 or more calls for these 400 jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_jobs_are_claimed_ahead_so_two_slots_share_store_calls() {
    let (mut h, calls) = echo_worker_counting(2, &["finish", "finish_and_claim"]).await;
    let jobs = (0..400).map(|i| job("echo", json!(i))).collect();
    for done in h.run_to_completion(jobs).await {
        assert_eq!(done.attempt, 1);
    }
    let used = calls.load(Ordering::SeqCst);
    assert!(used < 100, "{used} store calls recorded 400 outcomes");
    h.stop().await.unwrap();
}

/// Jobs left waiting because their command was at its concurrency limit
/// are claimed as soon as a slot frees, with no poll to find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_back_by_its_command_limit_starts_when_a_slot_frees() {
    let mut registry = Registry::new();
    let narrow = concurrency_probe(
        &mut registry,
        "narrow",
        CommandOptions {
            max_concurrency: Some(1),
            ..options()
        },
    );
    let config = WorkerConfig {
        max_tasks: 10,
        poll_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let mut h = Harness::start(registry, config).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.run_to_completion((0..3).map(|_| job("narrow", json!({}))).collect())
        .await;
    assert_eq!(narrow.load(Ordering::SeqCst), 1);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn new_jobs_are_picked_up_by_notification_without_polling() {
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(3600),
        ..fast_config()
    };
    let mut h = Harness::start(echo_registry(), config).await;
    // Let the worker reach its wait, then submit: only the feed can wake it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        let id = h.submit(job("echo", json!(i))).await;
        h.wait_for(&id, JobStatus::Completed).await;
    }
    h.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_running_jobs_finish() {
    let mut registry = Registry::new();
    registry
        .register_fn("t", "short", options(), |_input, _ctx| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(json!("finished"))
        })
        .unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h.submit(job("short", json!({}))).await;
    h.wait_for(&id, JobStatus::Running).await;
    h.stop().await.unwrap();
    assert_eq!(h.store.get(&id).await.unwrap().status, JobStatus::Completed);
    assert!(
        h.store.workers().await.unwrap().is_empty(),
        "the worker deregistered"
    );
}

#[tokio::test]
async fn shutdown_past_its_deadline_releases_jobs_without_counting_the_attempt() {
    let mut registry = Registry::new();
    sleeper(&mut registry, "long", true, options());
    let config = WorkerConfig {
        shutdown_timeout: Duration::from_millis(200),
        ..fast_config()
    };
    let mut h = Harness::start(registry, config).await;
    let id = h.submit(job("long", json!({}))).await;
    h.wait_for(&id, JobStatus::Running).await;
    h.stop().await.unwrap();
    let job = h.store.get(&id).await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::New, 0));
}

#[tokio::test]
async fn the_worker_publishes_its_commands_with_schemas() {
    let registry = Registry::new().with(Add).unwrap();
    let mut h = Harness::start(registry, fast_config()).await;
    let id = h.submit(job("add", json!({"a": 1, "b": 2}))).await;
    h.wait_for(&id, JobStatus::Completed).await;
    let commands = h.store.commands().await.unwrap();
    assert_eq!(commands.len(), 1);
    let schema = &commands[0].input_schema;
    assert_eq!(schema["properties"]["a"]["type"], json!("integer"));
    assert_eq!(schema["required"], json!(["a", "b"]));
    let workers = h.store.workers().await.unwrap();
    assert_eq!(workers[0].commands, vec!["t.add".to_owned()]);
    h.stop().await.unwrap();
}

#[test]
fn registering_a_command_twice_is_an_error() {
    let registry = Registry::new().with(Add).unwrap();
    assert!(matches!(registry.with(Add), Err(RegistryError::Duplicate(name)) if name == "t.add"));
    let mut registry = Registry::new();
    let bad = registry.register_fn("t", "has.dot", options(), |i, _| async move { Ok(i) });
    assert!(matches!(bad, Err(RegistryError::InvalidCommand { .. })));
}

#[tokio::test]
async fn throttled_progress_is_written_when_the_interval_is_up() {
    let mut registry = Registry::new();
    registry
        .register_fn(
            "t",
            "bursty",
            options(),
            |_input, ctx: JobContext| async move {
                ctx.progress(0.1, "first").await?;
                ctx.progress(0.2, "dropped: superseded").await?;
                ctx.progress(0.5, "latest").await?;
                tokio::time::sleep(Duration::from_millis(600)).await;
                Ok(json!(null))
            },
        )
        .unwrap();
    let config = WorkerConfig {
        progress_interval: Duration::from_millis(200),
        ..fast_config()
    };
    let mut h = Harness::start(registry, config).await;
    let id = h.submit(job("bursty", json!({}))).await;
    h.wait_for(&id, JobStatus::Completed).await;
    let messages: Vec<Value> = h
        .store
        .events(&id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Progress)
        .map(|e| e.data["message"].clone())
        .collect();
    assert_eq!(messages, vec![json!("first"), json!("latest")]);
    h.stop().await.unwrap();
}
