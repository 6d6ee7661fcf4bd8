//! The worker protocol over a real socket: a server with no worker of its
//! own, and "remote workers" that are this test speaking HTTP, as a worker
//! in another language would.

use std::sync::Arc;
use std::time::Duration;

use errand::url::StoreUrl;
use errand::SystemClock;
use errand_server::{AppState, ServerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

struct Server {
    base: String,
    client: reqwest::Client,
    state: AppState,
    token: Option<String>,
    _dir: tempfile::TempDir,
}

async fn server(config: ServerConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("protocol.db").display());
    let store = StoreUrl::parse(&url)
        .unwrap()
        .open(Arc::new(SystemClock))
        .await
        .unwrap();
    let state = AppState::new(store, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(errand_server::serve(listener, state.clone()));
    Server {
        base,
        client: reqwest::Client::new(),
        state,
        token: None,
        _dir: dir,
    }
}

fn quick() -> ServerConfig {
    ServerConfig {
        reap_interval: Duration::from_millis(100),
        ..ServerConfig::default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body
    }

    async fn job(&self, job_id: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/api/commands/jobs/{job_id}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Registers worker `id` with the `t.echo` command (input needs `n`).
    async fn register(&self, id: &str) -> Value {
        self.ok(
            "/api/worker/v1/register",
            json!({
                "worker_id": id, "slots": 10,
                "commands": [
                    {"app": "t", "name": "echo", "description": "echoes n",
                     "input_schema": {"type": "object", "required": ["n"],
                                      "properties": {"n": {"type": "integer"}}},
                     "output_schema": {"type": "object"},
                     "defaults": {"retry": {"max_attempts": 2, "wait_strategy": "fixed", "wait_time": 0}}},
                    {"app": "t", "name": "limited", "defaults": {"max_concurrency": 1}},
                ],
            }),
        )
        .await
    }

    async fn submit(&self, command: &str, input: Value) -> String {
        let (status, body) = self
            .post(
                "/api/commands/jobs",
                json!({"command": command, "input": input}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    async fn claim(&self, worker: &str, limit: usize, extra: Value) -> Vec<Value> {
        let mut body =
            json!({"worker_id": worker, "limit": limit, "commands": ["t.echo", "t.limited"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let answer = self.ok("/api/worker/v1/claim", body).await;
        answer["jobs"].as_array().unwrap().clone()
    }
}

fn attempt(job: &Value) -> Value {
    json!({"job_id": job["job_id"], "attempt": job["attempt"]})
}

#[tokio::test]
async fn a_remote_worker_publishes_claims_reports_and_completes() {
    let s = server(quick()).await;
    let registered = s.register("py-1").await;
    assert_eq!(registered["worker_id"], "py-1");
    assert_eq!(registered["protocol"], 1);
    // Its schema is the server's now: bad input is refused before any job.
    let (status, body) = s
        .post(
            "/api/commands/jobs",
            json!({"command": "t.echo", "input": {"n": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("/n"));
    let commands: Value = s
        .client
        .get(format!("{}/api/commands", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let echo = &commands["commands"][0];
    assert_eq!(echo["output_schema"], json!({"type": "object"}));
    assert_eq!(echo["defaults"]["retry"]["max_attempts"], 2);

    let job_id = s.submit("t.echo", json!({"n": 7})).await;
    let jobs = s.claim("py-1", 5, json!({})).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job_id"], job_id.as_str());
    assert_eq!(jobs[0]["status"], "running");
    assert_eq!(jobs[0]["input"], json!({"n": 7}));
    assert_eq!(jobs[0]["attempt"], 1);

    let mut update = attempt(&jobs[0]);
    update["progress"] = json!({"fraction": 0.5, "message": "half"});
    update["logs"] = json!(["first line", "second line"]);
    let answer = s
        .ok(
            "/api/worker/v1/updates",
            json!({"worker_id": "py-1", "updates": [update]}),
        )
        .await;
    assert_eq!(answer["results"], json!([{"ok": true}]));
    assert_eq!(s.job(&job_id).await["progress"]["message"], "half");

    let mut outcome = attempt(&jobs[0]);
    outcome["outcome"] = json!("completed");
    outcome["result"] = json!({"n": 7});
    let answer = s
        .ok(
            "/api/worker/v1/finish",
            json!({"worker_id": "py-1", "outcomes": [outcome]}),
        )
        .await;
    assert_eq!(answer["results"], json!([{"ok": true}]));
    let job = s.job(&job_id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"], json!({"n": 7}));
    let events: Value = s
        .client
        .get(format!("{}/api/commands/jobs/{job_id}/events", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let logs: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "log")
        .map(|e| e["data"]["line"].as_str().unwrap())
        .collect();
    assert_eq!(logs, ["first line", "second line"]);
}

#[tokio::test]
async fn a_waiting_claim_is_woken_by_a_submit_not_by_polling() {
    // With the backstop a minute away, only the submit's event can answer
    // the claim before its wait is over.
    let s = server(ServerConfig {
        claim_poll_interval: Duration::from_secs(60),
        ..quick()
    })
    .await;
    s.register("py-1").await;
    let waiting = {
        let (client, base) = (s.client.clone(), s.base.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let answer: Value = client
                .post(format!("{base}/api/worker/v1/claim"))
                .json(&json!({"worker_id": "py-1", "limit": 4, "wait_secs": 60, "commands": ["t.echo"]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the claim waits while there is no job"
    );
    let job_id = s.submit("t.echo", json!({"n": 1})).await;
    let (answer, took) = waiting.await.unwrap();
    assert_eq!(answer["jobs"][0]["job_id"], job_id.as_str());
    assert!(
        took < Duration::from_secs(30),
        "woken, not timed out: {took:?}"
    );
}

#[tokio::test]
async fn a_claim_with_nothing_to_do_answers_empty_after_its_wait() {
    let s = server(quick()).await;
    s.register("py-1").await;
    let started = Instant::now();
    let jobs = s.claim("py-1", 1, json!({"wait_secs": 0.3})).await;
    assert!(jobs.is_empty());
    // A lower bound: the claim held for its wait instead of answering at
    // once (what the wait is for). A slow host can only make it longer.
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_changes_nothing_and_is_told_so() {
    let s = server(quick()).await;
    s.register("py-1").await;
    s.register("py-2").await;
    let job_id = s.submit("t.echo", json!({"n": 1})).await;
    let first = s.claim("py-1", 1, json!({"lease_secs": 1})).await;
    assert_eq!(first.len(), 1);
    // py-1 goes silent; the server's reaper hands the job back. Each
    // claim long-polls up to a second; twenty of them are far past the
    // one-second lease (a bound on tries, so a slow host only waits).
    let mut second = Vec::new();
    for _ in 0..20 {
        second = s.claim("py-2", 1, json!({"wait_secs": 1})).await;
        if !second.is_empty() {
            break;
        }
    }
    assert!(!second.is_empty(), "the job was never reaped");
    assert_eq!(second[0]["attempt"], 2);

    let heartbeat = s
        .ok(
            "/api/worker/v1/heartbeat",
            json!({"worker_id": "py-1", "running": [attempt(&first[0])]}),
        )
        .await;
    assert_eq!(heartbeat["lost"], json!([job_id]));
    let mut late = attempt(&first[0]);
    late["progress"] = json!({"message": "late"});
    let answer = s
        .ok(
            "/api/worker/v1/updates",
            json!({"worker_id": "py-1", "updates": [late]}),
        )
        .await;
    assert_eq!(answer["results"][0]["ok"], false);
    assert_eq!(answer["results"][0]["error"]["code"], "lease_lost");
    for outcome in [
        json!({"outcome": "completed", "result": "late"}),
        json!({"outcome": "failed", "error": {"message": "late"}}),
    ] {
        let mut item = attempt(&first[0]);
        item.as_object_mut()
            .unwrap()
            .extend(outcome.as_object().unwrap().clone());
        let answer = s
            .ok(
                "/api/worker/v1/finish",
                json!({"worker_id": "py-1", "outcomes": [item]}),
            )
            .await;
        assert_eq!(answer["results"][0]["error"]["code"], "lease_lost");
    }
    let job = s.job(&job_id).await;
    assert_eq!(job["status"], "running");
    assert_eq!(job["worker_id"], "py-2");
    assert_ne!(
        job["progress"]["message"], "late",
        "the late progress was not written"
    );

    let mut done = attempt(&second[0]);
    done["outcome"] = json!("completed");
    done["result"] = json!("second");
    s.ok(
        "/api/worker/v1/finish",
        json!({"worker_id": "py-2", "outcomes": [done]}),
    )
    .await;
    assert_eq!(s.job(&job_id).await["result"], "second");
}

#[tokio::test]
async fn outcomes_in_one_request_are_one_transaction_each_answered_in_its_place() {
    let s = server(quick()).await;
    s.register("py-1").await;
    let jobs: Vec<Value> = (0..30)
        .map(|n| json!({"command": "t.echo", "input": {"n": n}}))
        .collect();
    let (status, _) = s
        .post("/api/commands/jobs/batch", json!({ "jobs": jobs }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let claimed = s.claim("py-1", 20, json!({})).await;
    assert_eq!(claimed.len(), 20, "one claim takes up to its limit");
    let mut outcomes: Vec<Value> = claimed
        .iter()
        .map(|job| {
            let mut item = attempt(job);
            item["outcome"] = json!("completed");
            item["result"] = job["input"].clone();
            item
        })
        .collect();
    outcomes[3]["attempt"] = json!(9);
    outcomes[7]["job_id"] = json!("no-such-job");
    let commits = s.state.store.commits();
    let answer = s
        .ok(
            "/api/worker/v1/finish",
            json!({"worker_id": "py-1", "outcomes": outcomes}),
        )
        .await;
    assert_eq!(s.state.store.commits() - commits, 1, "one transaction");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    for (place, result) in results.iter().enumerate() {
        match place {
            3 => assert_eq!(result["error"]["code"], "lease_lost"),
            7 => assert_eq!(result["error"]["code"], "job_not_found"),
            _ => assert_eq!(result, &json!({"ok": true}), "item {place}"),
        }
    }
    assert_eq!(
        s.job(claimed[3]["job_id"].as_str().unwrap()).await["status"],
        "running"
    );
    assert_eq!(
        s.job(claimed[4]["job_id"].as_str().unwrap()).await["status"],
        "completed"
    );
}

#[tokio::test]
async fn failures_follow_the_commands_retry_policy() {
    let s = server(quick()).await;
    s.register("py-1").await;
    let retried = s.submit("t.echo", json!({"n": 1})).await;
    let permanent = s.submit("t.echo", json!({"n": 2})).await;
    let jobs = s.claim("py-1", 2, json!({})).await;
    let outcomes: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let mut item = attempt(job);
            item["outcome"] = json!("failed");
            item["error"] = if job["job_id"] == retried.as_str() {
                json!({"message": "the LLM timed out", "kind": "provider"})
            } else {
                json!({"message": "no such notebook", "retryable": false})
            };
            item
        })
        .collect();
    s.ok(
        "/api/worker/v1/finish",
        json!({"worker_id": "py-1", "outcomes": outcomes}),
    )
    .await;
    let job = s.job(&retried).await;
    assert_eq!(job["status"], "new", "{job}");
    assert_eq!(job["error"]["kind"], "provider");
    let job = s.job(&permanent).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error_message"], "no such notebook");
    assert_eq!(job["error"]["kind"], "handler");
    // The retried job's second failure is its last (max_attempts 2).
    let again = s.claim("py-1", 1, json!({"wait_secs": 5})).await;
    assert_eq!(again[0]["attempt"], 2);
    let mut item = attempt(&again[0]);
    item["outcome"] = json!("failed");
    s.ok(
        "/api/worker/v1/finish",
        json!({"worker_id": "py-1", "outcomes": [item]}),
    )
    .await;
    assert_eq!(s.job(&retried).await["status"], "failed");
}

#[tokio::test]
async fn a_cancel_reaches_the_worker_in_its_heartbeat() {
    let s = server(quick()).await;
    s.register("py-1").await;
    let job_id = s.submit("t.echo", json!({"n": 1})).await;
    let jobs = s.claim("py-1", 1, json!({})).await;
    let response = s
        .client
        .delete(format!("{}/api/commands/jobs/{job_id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let heartbeat = s
        .ok(
            "/api/worker/v1/heartbeat",
            json!({"worker_id": "py-1", "running": [attempt(&jobs[0])]}),
        )
        .await;
    assert_eq!(heartbeat["cancel_requested"], json!([job_id]));
    assert_eq!(heartbeat["lost"], json!([]));
    let mut item = attempt(&jobs[0]);
    item["outcome"] = json!("canceled");
    s.ok(
        "/api/worker/v1/finish",
        json!({"worker_id": "py-1", "outcomes": [item]}),
    )
    .await;
    assert_eq!(s.job(&job_id).await["status"], "canceled");
}

#[tokio::test]
async fn a_leaving_worker_releases_its_jobs_without_counting_the_attempt() {
    let s = server(quick()).await;
    s.register("py-1").await;
    let job_id = s.submit("t.echo", json!({"n": 1})).await;
    let jobs = s.claim("py-1", 1, json!({})).await;
    let answer = s
        .ok(
            "/api/worker/v1/deregister",
            json!({"worker_id": "py-1", "release": [attempt(&jobs[0])]}),
        )
        .await;
    assert_eq!(answer["results"], json!([{"ok": true}]));
    let job = s.job(&job_id).await;
    assert_eq!(job["status"], "new");
    let workers: Value = s
        .client
        .get(format!("{}/api/workers", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(workers["workers"], json!([]), "deregistered");
    s.register("py-2").await;
    let again = s.claim("py-2", 1, json!({})).await;
    assert_eq!(again[0]["attempt"], 1, "the released attempt did not count");
}

#[tokio::test]
async fn a_command_at_its_limit_is_not_claimed_past_its_room() {
    let s = server(quick()).await;
    s.register("py-1").await;
    for n in 0..3 {
        s.submit("t.limited", json!({ "n": n })).await;
        s.submit("t.echo", json!({ "n": n })).await;
    }
    let jobs = s
        .claim("py-1", 10, json!({"limits": {"t.limited": 1}}))
        .await;
    let limited = jobs.iter().filter(|j| j["command"] == "limited").count();
    assert_eq!((jobs.len(), limited), (4, 1));
    let none = s
        .claim("py-1", 10, json!({"limits": {"t.limited": 0}}))
        .await;
    assert!(none.is_empty(), "no room: none of the limited jobs");
}

#[tokio::test]
async fn bad_registrations_are_refused_with_the_field_named() {
    let s = server(quick()).await;
    for (command, named) in [
        (
            json!({"app": "t", "name": "a.b"}),
            "commands[0]: app and name",
        ),
        (
            json!({"app": "t", "name": "x", "input_schema": {"type": 5}}),
            "commands[0]: input_schema",
        ),
        (
            json!({"app": "t", "name": "x", "defaults": {"retry": {"max_attempts": 0}}}),
            "commands[0]: defaults.retry",
        ),
    ] {
        let (status, body) = s
            .post(
                "/api/worker/v1/register",
                json!({"slots": 1, "commands": [command]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(named), "{message}");
    }
    let (status, body) = s.post("/api/worker/v1/register", json!({"slots": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("at slots: 0 is not from 1 to 10000"),
        "{message}"
    );
    let (status, _) = s
        .post(
            "/api/worker/v1/claim",
            json!({"worker_id": "w", "limit": 1, "lease_secs": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let heartbeat = s
        .ok("/api/worker/v1/heartbeat", json!({"worker_id": "stranger"}))
        .await;
    assert_eq!(heartbeat["unknown_worker"], true);
}

#[tokio::test]
async fn a_worker_token_is_the_only_key_to_the_worker_protocol() {
    let mut s = server(ServerConfig {
        api_token: Some("api-secret".into()),
        worker_token: Some("worker-secret".into()),
        ..quick()
    })
    .await;
    let register = json!({"worker_id": "w", "slots": 1});
    for (token, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("api-secret"), StatusCode::UNAUTHORIZED),
        (Some("worker-secret"), StatusCode::OK),
    ] {
        s.token = token.map(str::to_owned);
        let (status, _) = s.post("/api/worker/v1/register", register.clone()).await;
        assert_eq!(status, expected, "with {token:?}");
    }
    // And it opens nothing else.
    let response = s
        .client
        .get(format!("{}/api/commands/jobs", s.base))
        .bearer_auth("worker-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Without a worker token, the API token opens the protocol.
    let mut s = server(ServerConfig {
        api_token: Some("api-secret".into()),
        ..quick()
    })
    .await;
    s.token = Some("api-secret".into());
    let (status, _) = s.post("/api/worker/v1/register", register.clone()).await;
    assert_eq!(status, StatusCode::OK);
    s.token = None;
    let (status, body) = s.post("/api/worker/v1/register", register).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn a_checkpoint_saved_over_the_protocol_reaches_the_next_attempt() {
    let s = server(quick()).await;
    s.register("py-1").await;
    let job_id = s.submit("t.echo", json!({"n": 1})).await;
    let first = s.claim("py-1", 1, json!({})).await;
    let mut update = attempt(&first[0]);
    update["checkpoint"] = json!({"line": 12});
    let answer = s
        .ok(
            "/api/worker/v1/updates",
            json!({"worker_id": "py-1", "updates": [update]}),
        )
        .await;
    assert_eq!(answer["results"], json!([{"ok": true}]));
    assert_eq!(s.job(&job_id).await["checkpoint"], json!({"line": 12}));
    let fail = |job: &Value| {
        let mut item = attempt(job);
        item["outcome"] = json!("failed");
        item["error"] = json!({"message": "no", "retryable": false});
        json!({"worker_id": "py-1", "outcomes": [item]})
    };
    s.ok("/api/worker/v1/finish", fail(&first[0])).await;

    let (status, job) = s
        .post(&format!("/api/commands/jobs/{job_id}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["checkpoint"], json!({"line": 12}), "a retry keeps it");
    let second = s.claim("py-1", 1, json!({})).await;
    assert_eq!(second[0]["checkpoint"], json!({"line": 12}));
    s.ok("/api/worker/v1/finish", fail(&second[0])).await;

    let (status, job) = s
        .post(
            &format!("/api/commands/jobs/{job_id}/retry?clear_checkpoint=true"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["checkpoint"], Value::Null);
    assert_eq!(
        s.claim("py-1", 1, json!({})).await[0]["checkpoint"],
        Value::Null
    );
}

#[tokio::test]
async fn ended_jobs_are_pruned_once_old_enough_per_status() {
    let s = server(ServerConfig {
        retention: errand_server::Retention {
            completed: Some(Duration::from_millis(300)),
            canceled: None,
            failed: None,
            interval: Duration::from_millis(100),
        },
        ..quick()
    })
    .await;
    s.register("py-1").await;
    let done = s.submit("t.echo", json!({"n": 1})).await;
    let failed = s.submit("t.echo", json!({"n": 2})).await;
    let jobs = s.claim("py-1", 2, json!({})).await;
    let outcomes: Vec<Value> = jobs
        .iter()
        .map(|job| {
            let mut item = attempt(job);
            if job["job_id"] == done.as_str() {
                item["outcome"] = json!("completed");
            } else {
                item["outcome"] = json!("failed");
                item["error"] = json!({"message": "no", "retryable": false});
            }
            item
        })
        .collect();
    s.ok(
        "/api/worker/v1/finish",
        json!({"worker_id": "py-1", "outcomes": outcomes}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = s
            .client
            .get(format!("{}/api/commands/jobs/{done}", s.base))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the completed job was never pruned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.job(&failed).await["status"],
        "failed",
        "failed jobs are kept"
    );
}

#[tokio::test]
async fn a_bulk_cancel_takes_every_job_that_fits_its_filter() {
    let s = server(quick()).await;
    s.register("py-1").await;
    for n in 0..3 {
        s.submit("t.echo", json!({ "n": n })).await;
    }
    let other = s.submit("t.limited", json!({})).await;
    let running = s.claim("py-1", 1, json!({"commands": ["t.echo"]})).await;
    let (status, answer) = s
        .post("/api/commands/jobs/cancel", json!({"command": "t.echo"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"canceled": 2, "cancel_requested": 1}));
    let running = s.job(running[0]["job_id"].as_str().unwrap()).await;
    assert_eq!(running["cancel_requested"], true);
    assert_eq!(s.job(&other).await["status"], "new", "another command");
    let (status, _) = s
        .post("/api/commands/jobs/cancel", json!({"status": "completed"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only jobs that have not ended"
    );
    let (status, body) = s
        .post("/api/commands/jobs/cancel", json!({"queue": ""}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("queue"));
}

/// A deleted notebook stops its jobs: a bulk cancel by a context key's
/// value takes exactly the jobs whose context has it.
#[tokio::test]
async fn a_bulk_cancel_by_context_takes_the_jobs_of_one_notebook() {
    let s = server(quick()).await;
    s.register("py-1").await;
    let mut ids = Vec::new();
    for (notebook, user) in [(42, "a"), (42, "b"), (7, "a")] {
        let (status, body) = s
            .post(
                "/api/commands/jobs",
                json!({"command": "t.echo", "input": {"n": 1}, "context": {"notebook_id": notebook, "user": user}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["job_id"].as_str().unwrap().to_owned());
    }
    let no_context = s.submit("t.echo", json!({"n": 2})).await;
    let (status, answer) = s
        .post(
            "/api/commands/jobs/cancel",
            json!({"context": {"notebook_id": 42}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"canceled": 2, "cancel_requested": 0}));
    let statuses = [
        s.job(&ids[0]).await["status"].clone(),
        s.job(&ids[1]).await["status"].clone(),
        s.job(&ids[2]).await["status"].clone(),
        s.job(&no_context).await["status"].clone(),
    ];
    assert_eq!(statuses, ["canceled", "canceled", "new", "new"]);
    // Every key must match; a number is not its string.
    let (_, answer) = s
        .post(
            "/api/commands/jobs/cancel",
            json!({"context": {"notebook_id": "7", "user": "a"}}),
        )
        .await;
    assert_eq!(answer["canceled"], 0);
    let (status, body) = s
        .post("/api/commands/jobs/cancel", json!({"context": {}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}
