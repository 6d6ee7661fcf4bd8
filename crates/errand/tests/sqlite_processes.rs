//! The README's scale-out recipe on SQLite: `errand serve --no-worker` and
//! a separate `errand worker` process on one database file. Every way of
//! following a job through the server (long-poll, the job's SSE stream,
//! `errand watch`) sees the events the other process writes, as they
//! happen, not at the end of a timeout.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

mod common;
use common::serve::{text, Server, ERRAND};

const CONFIG: &str = r#"
[commands."ext.steps"]
argv = ["sh", "-c", "for i in 1 2 3; do echo \"{\\\"progress\\\": 0.$((i * 3))}\" >&2; sleep 0.3; done; echo '{\"done\": true}'"]

[commands."ext.gated"]
# Reports 0.3, then waits until the test opens the gate: what follows can
# only reach the test live. (Pauses keep the worker's progress throttle,
# 250 ms, from merging the reports.)
argv = ["sh", "-c", "echo '{\"progress\": 0.3}' >&2; while [ ! -e \"gate-$ERRAND_JOB_ID\" ]; do sleep 0.05; done; sleep 0.3; echo '{\"progress\": 0.6}' >&2; sleep 0.3; echo '{\"done\": true}'"]
"#;

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server without a worker, and a worker process beside it.
fn server_and_worker() -> (Server, Worker) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("errand.toml"), CONFIG).unwrap();
    let server = Server::start_in(dir, &["--no-worker"]);
    let worker = Command::new(ERRAND)
        .args(["worker"])
        .current_dir(server.dir.path())
        .env("ERRAND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(server.dir.path().join("worker.log")).unwrap())
        .spawn()
        .unwrap();
    let worker = Worker(worker);
    // The worker publishes its commands; the server accepts them after.
    for _ in 0..500 {
        let out = server.errand(&["commands", "--json"]);
        if text(&out.stdout).contains("ext.steps") || text(&out.stdout).contains("\"steps\"") {
            return (server, worker);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the worker never registered ext.steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_another_process_finishes_the_job() {
    let (server, _worker) = server_and_worker();
    let id = server.submit("ext.steps", "{}");
    let started = Instant::now();
    let job: Value = reqwest::get(format!("{}/api/commands/jobs/{id}?wait=60", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    // The job takes about a second; before the fix the answer came when
    // the 60 s were up.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_stream_carries_the_other_processes_events_to_the_end() {
    let (server, _worker) = server_and_worker();
    let id = server.submit("ext.gated", "{}");
    server.wait_for_status(&id, "running");
    let response = reqwest::get(format!("{}/api/commands/jobs/{id}/stream", server.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut body = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The first chunk is the job's state; only then may the job go on.
    match tokio::time::timeout_at(deadline, stream.next()).await {
        Ok(Some(chunk)) => body.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
        other => panic!("no first event: {other:?}"),
    }
    std::fs::write(server.dir.path().join(format!("gate-{id}")), "").unwrap();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => body.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            Ok(None) => break,
            Err(_) => panic!("the stream never ended; it sent:\n{body}"),
        }
    }
    let names: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"status"), "{body}");
    // Written by the worker process after the stream began.
    assert!(body.contains("\"fraction\":0.6"), "{body}");
    assert_eq!(names[names.len() - 2..], ["result", "end"], "{body}");
}

#[test]
fn watch_follows_a_job_run_by_another_process_to_its_result() {
    let (server, _worker) = server_and_worker();
    let id = server.submit("ext.steps", "{}");
    let started = Instant::now();
    // Bounded: before the fix `watch` waited forever.
    let out = Command::new("timeout")
        .args(["30", ERRAND, "watch", &id, "--json"])
        .env("ERRAND_URL", &server.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"done\""),
        "{}",
        text(&out.stdout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "watch took {:?}",
        started.elapsed()
    );
}
