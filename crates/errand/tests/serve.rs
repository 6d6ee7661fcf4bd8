//! `errand serve` as a real process: it starts on a fresh clone's
//! defaults, serves, and shuts down gracefully on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until_up(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("errand serve did not come up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_running_jobs_and_open_streams_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_errand"))
        .arg("serve")
        .current_dir(dir.path()) // the default store, ./errand.db
        .env("ERRAND_BIND", format!("127.0.0.1:{port}"))
        .env("ERRAND_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_until_up(&client, &base).await;
    let submitted: Value = client
        .post(format!("{base}/commands/jobs"))
        .json(&json!({"app": "demo", "command": "sleep", "input": {"secs": 1.5, "steps": 3}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["job_id"].as_str().unwrap().to_owned();
    // An open SSE stream must not keep the server from stopping.
    let stream = client
        .get(format!("{base}/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    for _ in 0..100 {
        let job: Value = client
            .get(format!("{base}/api/commands/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let pid = server.id();
    let exited = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || server.wait()),
    )
    .await;
    let Ok(status) = exited else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("errand serve did not exit within 30 s of SIGTERM");
    };
    let status = status.unwrap().unwrap();
    assert!(status.success(), "errand serve exited with {status}");
    drop(stream);
    // The job that was running when SIGTERM came finished before the exit.
    let db = dir.path().join("errand.db");
    let queue = errand::Queue::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let job = queue
        .status(&errand::JobId::from(id.as_str()))
        .await
        .unwrap();
    assert_eq!(job.status, errand::JobStatus::Completed, "{job:?}");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("shutdown requested"), "{log}");
}
