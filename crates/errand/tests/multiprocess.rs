//! Many processes on one PostgreSQL database: two API servers
//! and three worker processes, 10,000 jobs of mixed commands. Every job
//! ends with exactly one recorded outcome; an SSE client on one server sees
//! a job run by a worker that another server started; a cancel sent to one
//! server stops a job running in a separately started worker process.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::NoTls;

mod common;
use common::Processes;
use common::{free_port, Database};

fn errand(args: &[&str], log: std::path::PathBuf) -> Child {
    Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(args)
        .env("ERRAND_LOG", "warn")
        // Five processes share the server's connections with other tests.
        .env("ERRAND_PG_POOL_SIZE", "6")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("errand starts")
}

async fn up(client: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(response) = client.get(format!("{base}/api/ready")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} did not come up");
}

async fn submit(client: &reqwest::Client, base: &str, body: Value) -> String {
    let response = client
        .post(format!("{base}/api/commands/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The last lines of each process's log, to see why a check failed.
fn log_tails(dir: &std::path::Path, files: &[&str]) -> String {
    let mut out = String::new();
    for file in files {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(15)..];
        out.push_str(&format!("==== {file}\n{}\n", tail.join("\n")));
    }
    out
}

async fn job(client: &reqwest::Client, base: &str, id: &str) -> Value {
    client
        .get(format!("{base}/api/commands/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_and_three_workers_share_one_database_exactly() {
    let Some(db) = Database::create().await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    );
    let fast = [
        "--heartbeat-ms",
        "300",
        "--lease-ms",
        "3000",
        "--poll-ms",
        "200",
    ];
    let mut processes = Processes(Vec::new());
    // Server A serves the API only; server B also runs a worker, on queue "b".
    processes.0.push(errand(
        &[
            "serve",
            "--no-worker",
            "--store",
            &db.url,
            "--bind",
            &format!("127.0.0.1:{port_a}"),
        ],
        logs.path().join("a.log"),
    ));
    processes.0.push(errand(
        &[
            "serve",
            "--store",
            &db.url,
            "--bind",
            &format!("127.0.0.1:{port_b}"),
            "--queue",
            "b",
        ],
        logs.path().join("b.log"),
    ));
    for i in 0..3 {
        let mut args = vec![
            "worker",
            "--store",
            &db.url,
            "--max-tasks",
            "8",
            "--queue",
            "default",
            "--queue",
            "w",
        ];
        args.extend_from_slice(&fast);
        let id = format!("separate-{i}");
        args.extend_from_slice(&["--worker-id", &id]);
        processes
            .0
            .push(errand(&args, logs.path().join(format!("w{i}.log"))));
    }
    let client = reqwest::Client::new();
    up(&client, &a).await;
    up(&client, &b).await;

    // 10,000 jobs of three commands, in batches through both servers.
    let mut submitted = 0;
    for batch in 0..100 {
        let jobs: Vec<Value> = (0..100)
            .map(|i| match i % 3 {
                0 => json!({"app": "demo", "command": "echo", "input": {"b": batch, "i": i}}),
                1 => json!({"app": "demo", "command": "noop", "input": {}}),
                _ => json!({"app": "demo", "command": "fail", "input": {"times": 1},
                            "options": {"retry": {"max_attempts": 3, "wait_strategy": "fixed", "wait_time": 0.05}}}),
            })
            .collect();
        let base = if batch % 2 == 0 { &a } else { &b };
        let response = client
            .post(format!("{base}/api/commands/jobs/batch"))
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        submitted += 100;
    }

    // SSE on A for a job that only B's in-process worker can run (queue b).
    let watched = submit(
        &client,
        &b,
        json!({"app": "demo", "command": "sleep",
        "input": {"secs": 0.6, "steps": 3}, "options": {"queue": "b"}}),
    )
    .await;
    let stream = client
        .get(format!("{a}/api/commands/jobs/{watched}/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(60), stream.text())
        .await
        .expect("the stream on A ends after the job ends")
        .unwrap();
    assert!(body.contains("event: progress"), "{body}");
    assert!(body.contains("event: result"), "{body}");
    let watched_job = job(&client, &a, &watched).await;
    assert_eq!(watched_job["status"], "completed");
    let runner = watched_job["worker_id"].as_str().unwrap();
    assert!(
        !runner.starts_with("separate-"),
        "queue b is served by B's worker, got {runner}"
    );

    // A cancel sent to B stops a job running in a separate worker process.
    // Its priority puts it ahead of whatever is left of the 10,000: on a slow
    // host the backlog outlasted the wait below (a CI run saw it stay "new").
    let long = submit(
        &client,
        &a,
        json!({"app": "demo", "command": "sleep",
        "input": {"secs": 120, "steps": 120}, "options": {"queue": "w", "priority": 100}}),
    )
    .await;
    let mut running = Value::Null;
    for _ in 0..600 {
        running = job(&client, &b, &long).await;
        if running["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        running["status"],
        "running",
        "{}",
        log_tails(logs.path(), &["w0.log", "w1.log", "w2.log"])
    );
    assert!(running["worker_id"]
        .as_str()
        .unwrap()
        .starts_with("separate-"));
    let cancel = client
        .delete(format!("{b}/api/commands/jobs/{long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let mut canceled = Value::Null;
    for _ in 0..600 {
        canceled = job(&client, &a, &long).await;
        if canceled["status"] == "canceled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        canceled["status"], "canceled",
        "stopped within a heartbeat or two"
    );

    // Every job ends, each with exactly one recorded outcome.
    let (pg, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut done = 0i64;
    for _ in 0..1200 {
        done = pg
            .query_one("SELECT count(*) FROM errand_jobs WHERE status IN ('completed', 'failed', 'canceled')", &[])
            .await
            .unwrap()
            .get(0);
        if done == submitted + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done, submitted + 2, "every job ended");
    let not_completed: i64 = pg
        .query_one(
            "SELECT count(*) FROM errand_jobs WHERE status <> 'completed' AND id <> $1",
            &[&long],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(not_completed, 0);
    let outcomes: Vec<(i64, i64)> = pg
        .query(
            "SELECT j.seq, count(e.id) FROM errand_jobs j LEFT JOIN errand_events e \
             ON e.job_seq = j.seq AND e.kind = 'result' WHERE j.id <> $1 GROUP BY j.seq \
             HAVING count(e.id) <> 1",
            &[&long],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        outcomes.is_empty(),
        "jobs without exactly one outcome: {outcomes:?}"
    );
    let retried: i64 = pg
        .query_one(
            "SELECT count(*) FROM errand_jobs WHERE command = 'fail' AND attempt = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let fail_jobs = 100 * (0..100).filter(|i| i % 3 == 2).count() as i64;
    assert_eq!(
        retried, fail_jobs,
        "each demo.fail job failed once and succeeded on its retry"
    );
    let workers: i64 = pg
        .query_one(
            "SELECT count(DISTINCT worker_id) FROM errand_jobs WHERE queue = 'default'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(workers, 3, "the three worker processes shared the work");
}
