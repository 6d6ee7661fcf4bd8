//! Limits kept by the store, not by a worker: four `errand worker`
//! processes with four slots each run a command limited to two jobs per
//! user. Each job's program writes down when it began and ended (inside
//! the time its job was `running`, so what it saw cannot overstate the
//! overlap); afterwards those times show that no user ever had more than
//! two at once, and that two did run together. On SQLite (one file, four
//! processes) and on PostgreSQL.

use std::process::{Command, Stdio};
use std::time::Duration;

use errand::{JobStatus, ListParams, NewJob, Queue};
use serde_json::json;

mod common;
use common::serve::ERRAND;
use common::Database;
use common::Processes;

/// The most jobs whose [start, end) intervals overlap at once.
fn most_at_once(mut spans: Vec<(i64, i64)>) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for (start, end) in spans.drain(..) {
        edges.push((start, 1));
        edges.push((end, -1));
    }
    // An end and a start at the same instant: the end first.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// Notes its start and end (nanoseconds) in a file named after its job.
const CONFIG: &str = r#"
[commands."test.hold"]
argv = ["sh", "-c", "cat >/dev/null; s=$(date +%s%N); sleep 0.3; echo \"$s $(date +%s%N)\" > \"span-$ERRAND_JOB_ID\"; echo '{}'"]
"#;

async fn four_workers_keep_a_limit_of_two_per_user(store_url: &str, dir: &std::path::Path) {
    std::fs::write(dir.join("errand.toml"), CONFIG).unwrap();
    let queue = Queue::open(store_url).await.unwrap();
    queue
        .set_limit(errand::CommandLimit {
            command: "test.hold".into(),
            key: Some("context.user".into()),
            max_running: Some(2),
            max_starts: None,
            per_secs: None,
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..24 {
        let user = if n % 3 == 0 { "b" } else { "a" };
        let job = NewJob::new("test", "hold", json!({})).context(json!({"user": user}));
        ids.push((user, queue.submit(job).await.unwrap()));
    }
    // One slot each: the limit allows four jobs at once, so four workers
    // share them, and a user's two run in two processes. (With more
    // slots one worker could hold all four, each finished job claiming
    // the next in its own transaction, and the limit would be kept by one
    // process alone.)
    let mut workers = Processes(Vec::new());
    for n in 0..4 {
        workers.0.push(
            Command::new(ERRAND)
                .args(["worker", "--store", store_url, "--max-tasks", "1"])
                .current_dir(dir)
                .env("ERRAND_LOG", "warn")
                .env("ERRAND_PG_POOL_SIZE", "3")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("worker{n}.log"))).unwrap())
                .spawn()
                .unwrap(),
        );
    }
    // Waits for the work (a lower bound, never a deadline on it: 24 jobs
    // of 0.3 s, four at a time, take about 1.8 s).
    for _ in 0..1200 {
        let page = queue
            .store()
            .list(ListParams {
                status: Some(JobStatus::Completed),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.jobs.len() == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(workers);
    let mut workers_used = std::collections::BTreeSet::new();
    for user in ["a", "b"] {
        let mut spans = Vec::new();
        for (_, id) in ids.iter().filter(|(u, _)| *u == user) {
            let job = queue.status(id).await.unwrap();
            assert_eq!(job.status, JobStatus::Completed, "{job:?}");
            assert_eq!(
                job.limit_key.as_deref(),
                Some(format!("test.hold:{user}").as_str())
            );
            let span = std::fs::read_to_string(dir.join(format!("span-{id}"))).unwrap();
            let (start, end) = span.trim().split_once(' ').unwrap();
            spans.push((start.parse::<i64>().unwrap(), end.parse::<i64>().unwrap()));
            workers_used.insert(job.worker_id.clone().unwrap());
        }
        let shown = spans.clone();
        let most = most_at_once(spans);
        assert_eq!(
            most, 2,
            "user {user}: at most two at once, and two did run together: {shown:#?}"
        );
    }
    assert!(
        workers_used.len() > 1,
        "the work was shared: {workers_used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_keep_a_limit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("errand.db").display());
    four_workers_keep_a_limit_of_two_per_user(&url, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_keep_a_limit_on_postgres() {
    let Some(db) = Database::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    four_workers_keep_a_limit_of_two_per_user(&db.url, dir.path()).await;
}

/// The limits API and CLI: set, list, lift; bad limits named in a 422;
/// a held job waits with its key shown, and starts once the limit is
/// lifted.
#[tokio::test]
async fn limits_are_managed_over_http_and_the_cli() {
    let server = common::serve::Server::start_in(tempfile::tempdir().unwrap(), &[]);
    let client = reqwest::Client::new();
    let base = &server.url;
    for (body, says) in [
        (json!({"max_running": 0}), "at least 1"),
        (
            json!({"key": "user", "max_running": 1}),
            "input. or context.",
        ),
        (json!({"max_starts": 5}), "go together"),
        (json!({}), "sets max_running"),
        (json!({"max_running": 2_000_000}), "at most 1000000"),
    ] {
        let response = client
            .put(format!("{base}/api/limits/demo.sleep"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let out = server.errand(&[
        "limit",
        "set",
        "demo.sleep",
        "--max-running",
        "1",
        "--key",
        "context.user",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        common::serve::text(&out.stderr)
    );
    assert_eq!(
        common::serve::text(&out.stdout).trim(),
        "demo.sleep: at most 1 running, per context.user"
    );
    let listed = common::serve::json(&server.errand(&["limits", "--json"]));
    assert_eq!(listed["limits"][0]["max_running"], 1);

    let submit = |secs: f64| {
        let body =
            json!({"command": "demo.sleep", "input": {"secs": secs}, "context": {"user": "u"}});
        let client = client.clone();
        async move {
            let answer: serde_json::Value = client
                .post(format!("{base}/api/commands/jobs"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["job_id"].as_str().unwrap().to_owned()
        }
    };
    let long = submit(30.0).await;
    server.wait_for_status(&long, "running");
    let held = submit(0.1).await;
    let job = server.job(&held);
    assert_eq!(job["status"], "new");
    assert_eq!(job["limit_key"], "demo.sleep:u");
    assert_eq!(
        job["held"],
        "held by its limit: 1 of 1 running for demo.sleep:u"
    );
    let out = server.errand(&["limit", "rm", "demo.sleep"]);
    assert_eq!(out.status.code(), Some(0));
    server.wait_for_status(&held, "completed");
    let missing = client
        .delete(format!("{base}/api/limits/demo.sleep"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.errand(&["cancel", &long]);
}
