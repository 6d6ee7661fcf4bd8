//! Schedules over real HTTP: managed through the API, ticking into jobs,
//! paused and resumed; and three servers on one PostgreSQL database
//! racing for the same ticks, each tick enqueued once.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::serve::Server;
use common::Processes;
use common::{free_port, Database};

async fn put(client: &reqwest::Client, base: &str, name: &str, body: Value) -> (u16, Value) {
    let response = client
        .put(format!("{base}/api/schedules/{name}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The ticks of a schedule's jobs, read from their idempotency keys.
async fn ticks_of(client: &reqwest::Client, base: &str, schedule: &str) -> Vec<String> {
    let jobs = get(client, format!("{base}/api/commands/jobs?limit=500")).await;
    let prefix = format!("schedule:{schedule}:");
    let mut ticks: Vec<String> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|job| job["idempotency_key"].as_str())
        .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    ticks.sort();
    ticks
}

async fn schedule(client: &reqwest::Client, base: &str, name: &str) -> Value {
    get(client, format!("{base}/api/schedules/{name}")).await
}

/// Polls `check` until it holds (a lower bound on waiting, never a
/// deadline on the work: 20 s is far past the few ticks awaited).
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn a_schedule_is_managed_over_http_and_ticks_into_jobs() {
    let server = Server::start_in(tempfile::tempdir().unwrap(), &[]);
    let base = server.url.clone();
    let client = reqwest::Client::new();
    let every_second = json!({
        "cron": "* * * * * *",
        "job": {"command": "demo.echo", "input": {"n": 1}, "context": {"user": "u1"}}
    });

    // Refused, with the reason named.
    for (body, code, says) in [
        (
            json!({"cron": "61 * * * *", "job": {"command": "demo.echo", "input": {}}}),
            "invalid_input",
            "61 * * * *",
        ),
        (
            json!({"cron": "* * * * *", "timezone": "Mars/Base", "job": {"command": "demo.echo", "input": {}}}),
            "invalid_input",
            "Mars/Base",
        ),
        (
            json!({"cron": "* * * * *", "job": {"command": "nope.echo", "input": {}}}),
            "unknown_command",
            "nope.echo",
        ),
        (
            json!({"cron": "* * * * *", "job": {"command": "demo.sleep", "input": {}}}),
            "invalid_input",
            "secs",
        ),
        (
            json!({"cron": "* * * * *", "job": {"command": "demo.echo", "input": {}, "options": {"idempotency_key": "k"}}}),
            "invalid_input",
            "idempotency_key",
        ),
    ] {
        let (status, error) = put(&client, &base, "bad", body).await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["error"]["code"], code, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let missing = client
        .get(format!("{base}/api/schedules/bad"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "schedule_not_found");

    let (status, stored) = put(&client, &base, "every", every_second.clone()).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["timezone"], "UTC");
    assert_eq!(stored["missed"], "skip");
    assert!(stored["next_run"].is_string());

    // It ticks: one job per tick, run with the schedule's input and context.
    until("two ticks enqueued", || async {
        ticks_of(&client, &base, "every").await.len() >= 2
    })
    .await;
    let last = schedule(&client, &base, "every").await;
    let job_id = last["last_job_id"].as_str().unwrap().to_owned();
    let job = get(
        &client,
        format!("{base}/api/commands/jobs/{job_id}?wait=10"),
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result"], json!({"n": 1}));
    assert_eq!(job["context"], json!({"user": "u1"}));

    // Paused: ticks go by (the next run moves on) without a job.
    let paused: Value = client
        .post(format!("{base}/api/schedules/every/pause"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    let before = ticks_of(&client, &base, "every").await;
    let paused_at = paused["next_run"].as_str().unwrap().to_owned();
    until("two ticks pass while paused", || async {
        let now = schedule(&client, &base, "every").await;
        now["last_tick"].as_str().unwrap() > paused_at.as_str()
            && now["next_run"].as_str().unwrap() > now["last_tick"].as_str().unwrap()
    })
    .await;
    let during = ticks_of(&client, &base, "every").await;
    assert!(
        during
            .iter()
            .all(|tick| before.contains(tick) || tick < &paused_at),
        "no job for a tick while paused: before {before:?}, during {during:?}"
    );

    // Resumed: jobs again; listed with its next run.
    client
        .post(format!("{base}/api/schedules/every/resume"))
        .send()
        .await
        .unwrap();
    let resumed = during.len();
    until("a tick after resuming", || async {
        ticks_of(&client, &base, "every").await.len() > resumed
    })
    .await;
    let list = get(&client, format!("{base}/api/schedules")).await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(list["schedules"][0]["name"], "every");

    let deleted = client
        .delete(format!("{base}/api/schedules/every"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let list = get(&client, format!("{base}/api/schedules")).await;
    assert_eq!(list["schedules"], json!([]));
}

/// Three servers share one PostgreSQL database and the same every-second
/// schedule from their errand.toml: every tick gets exactly one job, and
/// no tick is left out while they race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_racing_enqueue_each_tick_once() {
    let Some(db) = Database::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("errand.toml"),
        "[schedules.race]\ncron = \"* * * * * *\"\njob = { command = \"demo.echo\", input = { n = 1 } }\n",
    )
    .unwrap();
    let client = reqwest::Client::new();
    let mut processes = Processes(Vec::new());
    let mut bases = Vec::new();
    for n in 0..3 {
        let port = free_port();
        processes.0.push(
            Command::new(env!("CARGO_BIN_EXE_errand"))
                .args([
                    "serve",
                    "--bind",
                    &format!("127.0.0.1:{port}"),
                    "--store",
                    &db.url,
                ])
                .current_dir(dir.path())
                .env("ERRAND_LOG", "warn")
                .env("ERRAND_PG_POOL_SIZE", "4")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(format!("serve{n}.log"))).unwrap())
                .spawn()
                .unwrap(),
        );
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for base in &bases {
        until("the server is ready", || async {
            client
                .get(format!("{base}/api/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
    until("eight ticks enqueued", || async {
        ticks_of(&client, &bases[0], "race").await.len() >= 8
    })
    .await;
    drop(processes);

    let store = db.store().await;
    use errand_store::Store;
    let jobs = store
        .list(errand_store::ListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    let ticks: Vec<errand_core::Timestamp> = jobs
        .iter()
        .map(|job| {
            let key = job.idempotency_key.as_deref().unwrap();
            errand_core::Timestamp::parse_rfc3339(key.strip_prefix("schedule:race:").unwrap())
                .unwrap()
        })
        .collect();
    let distinct: BTreeSet<_> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick enqueued twice");
    let (first, last) = (*distinct.first().unwrap(), *distinct.last().unwrap());
    let seconds = (last.as_micros() - first.as_micros()) / 1_000_000 + 1;
    assert_eq!(
        seconds as usize,
        distinct.len(),
        "every second from the first tick to the last has its job: {distinct:?}"
    );
    let schedules = store.schedules().await.unwrap();
    assert_eq!(schedules[0].last_error, None);
}
