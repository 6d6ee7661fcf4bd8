//! External-program commands run by a real worker on a real
//! store: the stdin/stdout/stderr protocol, limits, and that no process of
//! a stopped job survives it.

use std::sync::Arc;
use std::time::Duration;

use errand_core::{error_kind, EventKind, JobStatus};
use errand_store::NewJob;
use errand_worker::{CommandOptions, ExternalProgram, Registry};
use serde_json::{json, Value};

mod common;
use common::{fast_config, Harness};

fn sh(script: &str) -> ExternalProgram {
    ExternalProgram::new(vec!["sh".into(), "-c".into(), script.into()])
}

/// One attempt only (jobs submitted to the store directly do not take the
/// command's defaults).
fn job(input: Value) -> NewJob {
    NewJob::new("ext", "run", input).max_attempts(1)
}

async fn start(program: ExternalProgram) -> Harness {
    let mut registry = Registry::new();
    registry
        .register_dyn(
            "ext",
            "run",
            json!({}),
            CommandOptions::default(),
            Arc::new(program),
        )
        .unwrap();
    Harness::start(registry, fast_config()).await
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

async fn read_pids(path: &std::path::Path) -> Vec<i32> {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path) {
            let pids: Vec<i32> = text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.len() >= 2 {
                return pids;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the program never wrote its pids to {}", path.display());
}

async fn wait_gone(pids: &[i32]) {
    for _ in 0..500 {
        if pids.iter().all(|pid| !alive(*pid)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "processes still alive: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn input_on_stdin_result_on_stdout_events_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let mut program = sh(r#"
        input=$(cat)
        echo '{"progress": 0.5, "message": "half way"}' >&2
        echo '{"log": "structured line"}' >&2
        echo 'a plain line' >&2
        printf '{"input": %s, "job": "%s", "greeting": "%s", "dir": "%s"}' \
            "$input" "$ERRAND_JOB_ID" "$GREETING" "$(pwd)"
    "#);
    program.env.insert("GREETING".into(), "hello".into());
    program.cwd = Some(dir.path().to_owned());
    let mut harness = start(program).await;
    let id = harness.submit(job(json!({"n": 7}))).await;
    let job = harness.wait_for(&id, JobStatus::Completed).await;
    let result = job.result.unwrap();
    assert_eq!(result["input"], json!({"n": 7}));
    assert_eq!(result["job"], json!(id.to_string()));
    assert_eq!(result["greeting"], json!("hello"));
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(result["dir"], json!(cwd.to_string_lossy()));

    let events = harness.store.events(&id, 0, 1000).await.unwrap();
    let progress: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind == EventKind::Progress)
        .map(|e| &e.data)
        .collect();
    assert!(
        progress
            .iter()
            .any(|p| p["fraction"] == json!(0.5) && p["message"] == json!("half way")),
        "{progress:?}"
    );
    let logs: Vec<&Value> = events
        .iter()
        .filter(|e| e.kind == EventKind::Log)
        .map(|e| &e.data)
        .collect();
    let text = serde_json::to_string(&logs).unwrap();
    assert!(text.contains("structured line"), "{text}");
    assert!(text.contains("a plain line"), "{text}");
    harness.stop().await.unwrap();
}

/// The log text of a job's events, in order, and how many log events.
async fn logged(harness: &Harness, id: &errand_core::JobId) -> (String, usize) {
    let events = harness.store.events(id, 0, 100_000).await.unwrap();
    let lines: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Log)
        .map(|e| e.data["line"].as_str().unwrap())
        .collect();
    (lines.join("\n"), lines.len())
}

/// A chatty program costs the store a write per burst, not per line, and
/// every line is kept, in order.
#[tokio::test]
async fn stderr_lines_that_arrive_together_are_logged_together() {
    let mut harness = start(sh("seq 1 5000 | sed 's/^/line /' >&2; echo '{}'")).await;
    let id = harness.submit(job(json!({}))).await;
    harness.wait_for(&id, JobStatus::Completed).await;
    let (text, events) = logged(&harness, &id).await;
    let expected: Vec<String> = (1..=5000).map(|i| format!("line {i}")).collect();
    assert_eq!(text, expected.join("\n"), "every line, in order");
    assert!(events <= 100, "{events} log events for 5,000 lines");
    harness.stop().await.unwrap();
}

/// Past a megabyte, stderr is not logged; one line says how much was not.
#[tokio::test]
async fn stderr_past_the_cap_is_counted_not_logged() {
    // 20,000 lines of 100 bytes: 2 MB.
    let mut harness = start(sh(
        "i=0; line=$(printf '%099d' 0); while [ $i -lt 20000 ]; do echo $line; i=$((i+1)); done >&2; echo '{}'",
    ))
    .await;
    let id = harness.submit(job(json!({}))).await;
    harness.wait_for(&id, JobStatus::Completed).await;
    let (text, _) = logged(&harness, &id).await;
    let note = text.lines().last().unwrap();
    // Read back as lines, what was kept is at most the cap, exactly,
    // whatever sizes the pipe's reads had (they differ between debug and
    // release builds).
    let kept = text.len() - note.len();
    assert!(kept <= 1024 * 1024, "{kept} bytes logged");
    assert!(kept > 1024 * 1024 - 200, "up to the cap is kept: {kept}");
    assert!(
        note.contains("more bytes of stderr were not logged"),
        "{note}"
    );
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_program_says_why_with_its_last_stderr_line() {
    let mut harness = start(sh("echo 'no such file: a.wav' >&2; exit 3")).await;
    let id = harness.submit(job(json!({}))).await;
    let job = harness.wait_for(&id, JobStatus::Failed).await;
    let error = job.error.unwrap();
    assert!(!error.retryable);
    assert!(
        error.message.contains("exited with code 3"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("no such file: a.wav"),
        "{}",
        error.message
    );
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn stdout_past_the_cap_fails_the_job_and_stops_the_program() {
    let mut program = sh("yes '{}'");
    program.max_output_bytes = 10_000;
    let mut harness = start(program).await;
    let id = harness.submit(job(json!({}))).await;
    let job = harness.wait_for(&id, JobStatus::Failed).await;
    let error = job.error.unwrap();
    assert_eq!(error.kind, error_kind::INVALID_OUTPUT);
    assert!(
        error.message.contains("more than 10000 bytes"),
        "{}",
        error.message
    );
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn a_timeout_terms_then_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The program ignores SIGTERM and leaves a child of its own running.
    let mut program = sh(&format!(
        "trap '' TERM; sleep 600 & echo $$ $! > {}; wait",
        pids.display()
    ));
    program.kill_grace = Duration::from_millis(200);
    let mut harness = start(program).await;
    let id = harness.submit(job(json!({})).timeout_secs(0.5)).await;
    let pids = read_pids(&pids).await;
    let job = harness.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(job.error.unwrap().kind, error_kind::TIMEOUT);
    wait_gone(&pids).await;
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn what_a_program_leaves_running_is_killed_when_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The background sleep keeps stdout open: without the group kill the
    // job would wait for it.
    let program = sh(&format!(
        "sleep 600 & echo $$ $! > {}; echo '\"done\"'",
        pids.display()
    ));
    let mut harness = start(program).await;
    let id = harness.submit(job(json!({}))).await;
    let job = harness.wait_for(&id, JobStatus::Completed).await;
    assert_eq!(job.result, Some(json!("done")));
    wait_gone(&read_pids(&pids).await).await;
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_program_fails_the_job_with_its_name() {
    let program = ExternalProgram::new(vec!["/nonexistent/errand-handler".into()]);
    let mut harness = start(program).await;
    let id = harness.submit(job(json!({}))).await;
    let job = harness.wait_for(&id, JobStatus::Failed).await;
    let message = job.error.unwrap().message;
    assert!(
        message.contains("cannot start /nonexistent/errand-handler"),
        "{message}"
    );
    harness.stop().await.unwrap();
}

#[tokio::test]
async fn clear_env_leaves_only_the_configured_variables_and_errands_own() {
    let mut program = ExternalProgram::new(vec![
        "/bin/sh".into(),
        "-c".into(),
        r#"printf '{"home": "%s", "greeting": "%s", "job": "%s"}' "$HOME" "$GREETING" "$ERRAND_JOB_ID""#.into(),
    ]);
    program.clear_env = true;
    program.env.insert("GREETING".into(), "hi".into());
    let mut harness = start(program).await;
    let id = harness.submit(job(json!({}))).await;
    let result = harness
        .wait_for(&id, JobStatus::Completed)
        .await
        .result
        .unwrap();
    assert_eq!(
        result["home"],
        json!(""),
        "the worker's environment is not passed on"
    );
    assert_eq!(result["greeting"], json!("hi"));
    assert_eq!(result["job"], json!(id.to_string()));
    harness.stop().await.unwrap();
}
