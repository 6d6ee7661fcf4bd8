//! The HTTP API over a real socket: a server on port 0 with the
//! demo commands in-process, driven by an HTTP client as a user would.

use std::time::Duration;

use errand::{JobStatus, SystemClock};
use errand_server::ServerConfig;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

mod common;
use common::inproc::{server, Server};

/// One parsed SSE event.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
    /// The data as sent (the dashboard's streams send HTML).
    text: String,
}

/// Reads SSE events from a response until the stream ends or `max` came.
async fn read_events(response: reqwest::Response, max: usize) -> Vec<SseEvent> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < max {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(chunk)) => chunk.unwrap(),
            Ok(None) => break,
            Err(_) => panic!("stream stalled; got {events:#?}"),
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !data.is_empty() {
                // The dashboard's streams send HTML (its `end` too); the
                // API's send JSON.
                let parsed = if event == "state" || event == "log" || event == "jobs" {
                    Value::Null
                } else if event == "end" {
                    serde_json::from_str(&data).unwrap_or(Value::Null)
                } else {
                    serde_json::from_str(&data).unwrap()
                };
                events.push(SseEvent {
                    event,
                    id,
                    data: parsed,
                    text: data,
                });
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_notebook_client_submits_and_polls_unchanged() {
    let s = server(ServerConfig::default(), true).await;
    // Exactly what Open Notebook's API sends, without the /api prefix too.
    let (status, body) = s
        .post(
            "/commands/jobs",
            json!({"command": "echo", "app": "demo", "input": {"text": "hi"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["status"], "submitted");
    assert!(body["message"].as_str().unwrap().contains("submitted"));
    let id = body["job_id"].as_str().unwrap();
    let (status, job) = s.get(&format!("/commands/jobs/{id}?wait=10")).await;
    assert_eq!(status, StatusCode::OK);
    for field in [
        "job_id",
        "status",
        "result",
        "error_message",
        "created",
        "updated",
        "progress",
    ] {
        assert!(job.get(field).is_some(), "missing {field}: {job}");
    }
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"], json!({"text": "hi"}));
    assert!(job["created"].as_str().unwrap().ends_with('Z'));
    // The registry view Open Notebook's debug page reads.
    let (_, registry) = s.get("/api/commands/registry/debug").await;
    assert_eq!(registry["total_commands"], 4);
    assert!(registry["commands_by_app"]["demo"]
        .as_array()
        .unwrap()
        .contains(&json!("sleep")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_then_follow_the_sse_stream_to_completion() {
    let s = server(ServerConfig::default(), true).await;
    let id = s.submit("sleep", json!({"secs": 0.4, "steps": 4})).await;
    let response = s
        .client
        .get(s.url(&format!("/api/commands/jobs/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut events = read_events(response, 100).await;
    assert_eq!(events[0].event, "status", "first comes the whole job");
    assert_eq!(events[0].data["job_id"], id.as_str());
    let end = events.pop().unwrap();
    assert_eq!(
        (end.event.as_str(), &end.data, &end.id),
        ("end", &json!({"status": "completed"}), &None),
        "an explicit end closes the stream"
    );
    let last = events.last().unwrap();
    assert_eq!(last.event, "result", "the terminal event comes before it");
    assert_eq!(
        last.data["data"]["result"],
        json!({"slept_secs": 0.4, "steps": 4})
    );
    let progress: Vec<f64> = events
        .iter()
        .filter(|e| e.event == "progress")
        .map(|e| e.data["data"]["fraction"].as_f64().unwrap())
        .collect();
    assert_eq!(progress, vec![0.25, 0.5, 0.75, 1.0]);
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids increase one by one: {ids:?}"
    );
    // A browser reconnects after the close with the last id it saw: 204
    // tells it to stop.
    let reconnect = s
        .client
        .get(s.url(&format!("/api/commands/jobs/{id}/stream")))
        .header("Last-Event-ID", ids.last().unwrap().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reconnect.status(), StatusCode::NO_CONTENT);
    // A new follower of the finished job gets its state, then the end.
    let late = s
        .client
        .get(s.url(&format!("/api/commands/jobs/{id}/stream")))
        .send()
        .await
        .unwrap();
    let late = read_events(late, 10).await;
    let names: Vec<&str> = late.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["status", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_with_exactly_the_missed_events() {
    let s = server(ServerConfig::default(), true).await;
    let id = s.submit("sleep", json!({"secs": 0.3, "steps": 3})).await;
    s.wait_for(&id, "completed").await;
    let (_, all) = s.get(&format!("/api/commands/jobs/{id}/events")).await;
    let all = all["events"].as_array().unwrap().clone();
    assert!(all.len() >= 5, "{all:?}");
    // A client that saw up to seq 2 reconnects.
    let response = s
        .client
        .get(s.url(&format!("/api/commands/jobs/{id}/stream")))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let resumed = read_events(response, 100).await;
    let (end, resumed) = resumed.split_last().unwrap();
    assert_eq!(end.event, "end");
    let seqs: Vec<i64> = resumed
        .iter()
        .map(|e| e.data["seq"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = all
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .filter(|s| *s > 2)
        .collect();
    assert_eq!(seqs, expected, "no loss, no duplicates");
    assert_eq!(resumed.last().unwrap().event, "result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_jobs_stream_sends_its_state_and_ends() {
    let s = server(ServerConfig::default(), true).await;
    let id = s.submit("echo", json!({"a": 1})).await;
    s.wait_for(&id, "completed").await;
    let response = s
        .client
        .get(s.url(&format!("/api/commands/jobs/{id}/stream")))
        .send()
        .await
        .unwrap();
    let events = read_events(response, 10).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].data["status"], "completed");
    assert_eq!(events[1].event, "end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_of_an_unknown_job_is_a_404_not_a_reconnect_loop() {
    let s = server(ServerConfig::default(), true).await;
    let response = s
        .client
        .get(s.url("/api/commands/jobs/nope/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "job_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_when_the_job_ends_or_the_time_is_up() {
    let s = server(ServerConfig::default(), true).await;
    let id = s.submit("sleep", json!({"secs": 0.3})).await;
    let (status, job) = s.get(&format!("/api/commands/jobs/{id}?wait=20")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "completed");
    let slow = s.submit("sleep", json!({"secs": 30})).await;
    let (status, job) = s.get(&format!("/api/commands/jobs/{slow}?wait=0.3")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        job["status"] == "new" || job["status"] == "running",
        "{job}"
    );
    let (status, body) = s.get(&format!("/api/commands/jobs/{slow}?wait=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_running_sleep_ends_it_canceled() {
    let s = server(ServerConfig::default(), true).await;
    let id = s.submit("sleep", json!({"secs": 60, "steps": 60})).await;
    s.wait_for(&id, "running").await;
    let response = s
        .client
        .delete(s.url(&format!("/api/commands/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cancelled"], true);
    let job = s.wait_for(&id, "canceled").await;
    assert!(job["finished"].is_string());
    // Canceling again is a conflict: the job has ended.
    let response = s
        .client
        .delete(s.url(&format!("/api/commands/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "illegal_transition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_a_failed_job_again_and_keeps_its_history() {
    let s = server(ServerConfig::default(), true).await;
    let (_, body) = s
        .post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "fail", "input": {"times": 5}, "options": {"max_attempts": 1}}),
        )
        .await;
    let id = body["job_id"].as_str().unwrap().to_owned();
    let failed = s.wait_for(&id, "failed").await;
    assert_eq!(failed["error"]["kind"], "handler");
    assert!(failed["error_message"]
        .as_str()
        .unwrap()
        .contains("demo failure"));
    let (status, job) = s
        .post(&format!("/api/commands/jobs/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "new");
    s.wait_for(&id, "failed").await;
    let (_, events) = s.get(&format!("/api/commands/jobs/{id}/events")).await;
    let failures = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "failure")
        .count();
    assert_eq!(failures, 2, "both runs are in the history");
    // Retrying a running job is a conflict.
    let sleeping = s.submit("sleep", json!({"secs": 30})).await;
    s.wait_for(&sleeping, "running").await;
    let (status, body) = s
        .post(&format!("/api/commands/jobs/{sleeping}/retry"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_get_4xx_with_a_clear_message() {
    let config = ServerConfig {
        body_limit: 4096,
        max_json_depth: 8,
        ..ServerConfig::default()
    };
    let s = server(config, true).await;
    let send_raw = |body: &'static str| {
        s.client
            .post(s.url("/api/commands/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = send_raw("{\"app\": ").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    // serde would read a struct from an array of its fields; errand does not.
    let (status, body) = s
        .post("/api/worker/v1/deregister", json!(["worker-1"]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("must be a JSON object, got an array"));

    let huge = json!({"app": "demo", "command": "echo", "input": {"blob": "x".repeat(10_000)}});
    let (status, body) = s.post("/api/commands/jobs", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let deep = json!({"app": "demo", "command": "echo", "input": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}});
    let (status, body) = s.post("/api/commands/jobs", deep).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("levels deep"));

    let (status, body) = s
        .post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "nope", "input": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "unknown_command");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("demo.nope"));

    let (status, body) = s
        .post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "sleep", "input": {"secs": "long"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_input");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input/secs"),
        "{body}"
    );

    let (status, body) = s
        .post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "sleep", "input": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("secs"),
        "{body}"
    );

    let (status, body) = s
        .post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "echo", "input": {}, "options": {"timeout_secs": -5}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout_secs"),
        "{body}"
    );

    let (status, body) = s.get("/api/commands/jobs/no-such-job").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "job_not_found");

    let (status, body) = s.get("/api/commands/jobs?status_filter=done").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("status_filter"));
    let (status, _) = s.get("/api/commands/jobs?limit=5000").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.get("/api/commands/jobs?cursor=garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = s.get("/api/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let response = s
        .client
        .put(s.url("/api/commands/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route_but_health() {
    let config = ServerConfig {
        api_token: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let s = server(config, true).await;
    let (status, _) = s.get("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/commands/jobs",
        "/api/commands",
        "/api/ready",
        "/metrics",
        "/api/openapi.json",
        "/api/events",
        "/commands/jobs",
    ] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let wrong = s
        .client
        .get(s.url("/api/commands"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let right = s
        .client
        .get(s.url("/api/commands"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    let id = {
        let response = s
            .client
            .post(s.url("/api/commands/jobs"))
            .bearer_auth("s3cret")
            .json(&json!({"app": "demo", "command": "echo", "input": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let stream = s
        .client
        .get(s.url(&format!("/api/commands/jobs/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.status(),
        StatusCode::UNAUTHORIZED,
        "SSE needs the token too"
    );
    let stream = s
        .client
        .get(s.url(&format!("/api/commands/jobs/{id}/stream")))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_submit_is_one_transaction() {
    let s = server(ServerConfig::default(), true).await;
    let good = json!({"jobs": [
        {"app": "demo", "command": "echo", "input": {"n": 1}},
        {"command": "demo.echo", "input": {"n": 2}},
    ]});
    let (status, body) = s.post("/api/commands/jobs/batch", good).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2);
    let bad = json!({"jobs": [
        {"app": "demo", "command": "echo", "input": {"n": 3}},
        {"app": "demo", "command": "sleep", "input": {"secs": "x"}},
    ]});
    let (status, body) = s.post("/api/commands/jobs/batch", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("jobs[1]"),
        "{body}"
    );
    let (_, list) = s.get("/api/commands/jobs?limit=100").await;
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        2,
        "nothing of the bad batch was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_paginates() {
    let s = server(ServerConfig::default(), false).await;
    for i in 0..7 {
        s.submit("echo", json!({"i": i})).await;
    }
    s.submit("sleep", json!({"secs": 1})).await;
    let (_, page) = s
        .get("/api/commands/jobs?command_filter=echo&limit=3")
        .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    let mut seen = 3;
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    while let Some(next) = cursor {
        let (_, page) = s
            .get(&format!(
                "/api/commands/jobs?command_filter=echo&limit=3&cursor={next}"
            ))
            .await;
        seen += page["jobs"].as_array().unwrap().len();
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, 7);
    let (_, page) = s
        .get("/api/commands/jobs?status_filter=new&command_filter=demo.sleep")
        .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
}

/// Jobs submitted with tags and a context are found by either over HTTP;
/// the filters combine with each other and with the named ones; bad tags
/// and filters get a 4xx naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_found_by_tag_and_by_context_value() {
    let s = server(ServerConfig::default(), false).await;
    let submit = |body: Value| {
        let s = &s;
        async move {
            let (status, body) = s.post("/api/commands/jobs", body).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["job_id"].as_str().unwrap().to_owned()
        }
    };
    let podcast = submit(json!({"command": "demo.echo", "input": {},
        "context": {"notebook_id": 42, "user": "ada lovelace"}, "tags": ["podcast", "urgent"]}))
    .await;
    let embed = submit(json!({"command": "demo.echo", "input": {},
        "context": {"notebook_id": "42"}, "tags": ["embeddings"]}))
    .await;
    submit(json!({"command": "demo.sleep", "input": {"secs": 1},
        "context": {"notebook_id": 7}, "tags": ["podcast"]}))
    .await;
    let (_, job) = s.get(&format!("/api/commands/jobs/{podcast}")).await;
    assert_eq!(job["tags"], json!(["podcast", "urgent"]));
    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, expected) in [
        (
            "context.notebook_id=42",
            vec![embed.clone(), podcast.clone()],
        ),
        ("context.notebook_id=42&tag=podcast", vec![podcast.clone()]),
        ("tag=podcast&tag=urgent", vec![podcast.clone()]),
        ("context.user=ada%20lovelace", vec![podcast.clone()]),
        (
            "tag=embeddings&command_filter=demo.echo",
            vec![embed.clone()],
        ),
        (
            "tag=podcast&command_filter=demo.echo",
            vec![podcast.clone()],
        ),
        ("tag=none", vec![]),
    ] {
        let (status, page) = s.get(&format!("/api/commands/jobs?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        assert_eq!(ids(&page), expected, "{query}");
    }
    let long = "x".repeat(300);
    for (query, says) in [
        ("tag=".to_owned(), "tag"),
        (format!("context.k={long}"), "256"),
        ("context.=1".to_owned(), "KEY"),
        ("limit=abc&tag=a".to_owned(), "limit"),
    ] {
        let (status, body) = s.get(&format!("/api/commands/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    // The document says where these parameters go: the routes read the
    // raw query, so nothing but the document's own declaration says so.
    let (_, doc) = s.get("/api/openapi.json").await;
    for path in ["/api/commands/jobs", "/api/events"] {
        let parameters = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let query: Vec<&str> = parameters
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(query.contains(&"tag"), "{path}: {query:?}");
        assert!(
            parameters
                .iter()
                .all(|p| p["in"] == "query" || p["in"] == "header"),
            "{path}: {parameters:?}"
        );
    }
    let too_many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
    for tags in [json!(too_many), json!([""]), json!(["a\nb"])] {
        let (status, body) = s
            .post(
                "/api/commands/jobs",
                json!({"command": "demo.echo", "input": {}, "tags": tags}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("tag"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_only_server_validates_with_the_schemas_workers_published() {
    let s = server(ServerConfig::default(), false).await;
    let (status, body) = s
        .post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "sleep", "input": {"secs": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let id = s.submit("sleep", json!({"secs": 1})).await;
    let (_, job) = s.get(&format!("/api/commands/jobs/{id}")).await;
    assert_eq!(job["status"], "new", "no worker here runs it");
    let (_, workers) = s.get("/api/workers").await;
    assert_eq!(workers["workers"][0]["worker_id"], "elsewhere");
    let (_, commands) = s.get("/api/commands").await;
    assert_eq!(commands["commands"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_feed_streams_filtered_events_and_resumes() {
    let s = server(ServerConfig::default(), true).await;
    let response = s
        .client
        .get(s.url("/api/events?command=demo.echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reader = tokio::spawn(read_events(response, 3));
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.submit("sleep", json!({"secs": 0.01})).await;
    let id = s.submit("echo", json!({"x": 1})).await;
    let events = reader.await.unwrap();
    assert!(
        events.iter().all(|e| e.data["command"] == "echo"),
        "{events:#?}"
    );
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e.data["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["new", "running", "completed"]);
    assert!(events.iter().all(|e| e.data["job_id"] == id.as_str()));
    // Resume after the first: exactly the two others, from the stored log.
    let first_id = events[0].id.clone().unwrap();
    let response = s
        .client
        .get(s.url("/api/events?command=demo.echo"))
        .header("Last-Event-ID", first_id)
        .send()
        .await
        .unwrap();
    let resumed = read_events(response, 2).await;
    let ids: Vec<_> = resumed.iter().map(|e| e.id.clone().unwrap()).collect();
    let expected: Vec<_> = events[1..].iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids, expected);
}

/// The global feed follows the jobs of one tag and context value, live
/// and on resume; a bad label filter is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_feed_follows_the_jobs_of_a_tag_and_context_value() {
    let s = server(ServerConfig::default(), true).await;
    let feed = "/api/events?tag=podcast&context.notebook_id=42";
    let response = s.client.get(s.url(feed)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reader = tokio::spawn(read_events(response, 3));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let submit = |context: Value, tags: Value| {
        let s = &s;
        async move {
            let (status, body) = s
                .post(
                    "/api/commands/jobs",
                    json!({"command": "demo.echo", "input": {}, "context": context, "tags": tags}),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["job_id"].as_str().unwrap().to_owned()
        }
    };
    submit(json!({"notebook_id": 42}), json!(["other"])).await;
    submit(json!({"notebook_id": 7}), json!(["podcast"])).await;
    let id = submit(json!({"notebook_id": "42"}), json!(["podcast"])).await;
    let events = reader.await.unwrap();
    assert!(
        events.iter().all(|e| e.data["job_id"] == id.as_str()),
        "{events:#?}"
    );
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e.data["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["new", "running", "completed"]);
    // Resumed from the start of the stored log: the same three.
    let response = s
        .client
        .get(s.url(feed))
        .header("Last-Event-ID", "0")
        .send()
        .await
        .unwrap();
    let resumed = read_events(response, 3).await;
    let ids: Vec<_> = resumed.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, expected);
    let (status, body) = s.get("/api/events?tag=").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_stats_and_metrics_answer() {
    let s = server(ServerConfig::default(), true).await;
    let id = s.submit("echo", json!({})).await;
    s.wait_for(&id, "completed").await;
    let (status, health) = s.get("/api/health").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _) = s.get("/api/ready").await;
    assert_eq!(status, StatusCode::OK);
    let (_, stats) = s.get("/api/commands/stats").await;
    let echo = stats["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"] == "echo")
        .unwrap();
    assert_eq!(echo["counts"]["completed"], 1);
    let metrics = || async {
        let response = s.client.get(s.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    };
    let text = metrics().await;
    assert!(
        text.contains("errand_jobs{command=\"demo.echo\",status=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("errand_http_requests_total"), "{text}");
    // Queue waits and run times are histograms per command, read off the
    // change feed (a moment behind the job), with their help lines.
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics().await;
        if text.contains("errand_job_run_seconds_count{command=\"demo.echo\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for expected in [
        "# TYPE errand_queue_wait_seconds histogram",
        "errand_queue_wait_seconds_bucket{command=\"demo.echo\",le=\"0.005\"}",
        "errand_queue_wait_seconds_count{command=\"demo.echo\"}",
        "# TYPE errand_job_run_seconds histogram",
        "errand_job_run_seconds_bucket{command=\"demo.echo\",outcome=\"completed\",le=\"3600\"}",
        "# HELP errand_job_run_seconds Seconds attempts ran from claim to end",
        "# HELP errand_jobs Jobs in the store by command and status",
        "# HELP errand_http_requests_total HTTP requests",
        "# TYPE errand_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_s_data_is_what_the_openapi_document_says() {
    let s = server(ServerConfig::default(), true).await;
    let (_, doc) = s.get("/api/openapi.json").await;
    assert_eq!(
        doc["components"]["schemas"]["JobEvent"]["properties"]["data"]["$ref"],
        "#/components/schemas/ChangeData"
    );
    let schema = jsonschema::validator_for(&doc["components"]["schemas"]["ChangeData"]).unwrap();
    let slept = s.submit("sleep", json!({"secs": 0.2, "steps": 2})).await;
    let failed_once = s.submit("fail", json!({"times": 1})).await;
    s.wait_for(&slept, "completed").await;
    s.wait_for(&failed_once, "completed").await;
    let mut kinds = std::collections::BTreeSet::new();
    for id in [slept, failed_once] {
        let (_, page) = s.get(&format!("/api/commands/jobs/{id}/events")).await;
        for event in page["events"].as_array().unwrap() {
            let errors: Vec<String> = schema
                .iter_errors(&event["data"])
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{event}: {errors:?}");
            kinds.insert(event["kind"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        kinds,
        ["failure", "progress", "result", "status"]
            .map(String::from)
            .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_openapi_document() {
    let s = server(ServerConfig::default(), true).await;
    let (status, doc) = s.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let routes = [
        ("post", "/api/commands/jobs"),
        ("get", "/api/commands/jobs"),
        ("post", "/api/commands/jobs/batch"),
        ("post", "/api/commands/jobs/cancel"),
        ("get", "/api/commands/jobs/{job_id}"),
        ("delete", "/api/commands/jobs/{job_id}"),
        ("post", "/api/commands/jobs/{job_id}/retry"),
        ("get", "/api/commands/jobs/{job_id}/events"),
        ("get", "/api/commands/jobs/{job_id}/stream"),
        ("post", "/api/commands/jobs/{job_id}/links"),
        ("get", "/api/commands"),
        ("get", "/api/commands/stats"),
        ("get", "/api/commands/registry/debug"),
        ("get", "/api/workers"),
        ("get", "/api/events"),
        ("get", "/api/health"),
        ("get", "/api/ready"),
        ("get", "/api/openapi.json"),
        ("get", "/metrics"),
        ("get", "/api/queues"),
        ("post", "/api/queues/{queue}/pause"),
        ("post", "/api/queues/{queue}/resume"),
        ("get", "/api/schedules"),
        ("get", "/api/schedules/{name}"),
        ("put", "/api/schedules/{name}"),
        ("delete", "/api/schedules/{name}"),
        ("post", "/api/schedules/{name}/pause"),
        ("post", "/api/schedules/{name}/resume"),
        ("get", "/api/limits"),
        ("put", "/api/limits/{command}"),
        ("delete", "/api/limits/{command}"),
        ("post", "/api/worker/v1/register"),
        ("post", "/api/worker/v1/claim"),
        ("post", "/api/worker/v1/heartbeat"),
        ("post", "/api/worker/v1/updates"),
        ("post", "/api/worker/v1/finish"),
        ("post", "/api/worker/v1/deregister"),
    ];
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        // ...and the route really exists (a made-up id gives 404
        // job_not_found or its kin, not a missing route).
        let url = s.url(
            &path
                .replace("{job_id}", "x")
                .replace("{queue}", "x")
                .replace("{name}", "x")
                .replace("{command}", "x.y"),
        );
        let response = s
            .client
            .request(method.to_uppercase().parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let code = response.status();
        if code == StatusCode::NOT_FOUND {
            let body: Value = response.json().await.unwrap();
            let code = body["error"]["code"].as_str().unwrap_or_default();
            assert!(
                ["job_not_found", "schedule_not_found", "limit_not_found"].contains(&code),
                "{method} {path}: {body}"
            );
        }
        assert_ne!(code, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "the document has no route the server lacks"
    );
    let _ = JobStatus::New;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_streams_than_allowed() {
    let config = ServerConfig {
        max_streams_per_client: 2,
        ..ServerConfig::default()
    };
    let s = server(config, true).await;
    let first = s.client.get(s.url("/api/events")).send().await.unwrap();
    let second = s.client.get(s.url("/api/events")).send().await.unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = s.client.get(s.url("/api/events")).send().await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    // Closing one gives its slot back.
    drop(first);
    let mut reopened = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..100 {
        let response = s.client.get(s.url("/api/events")).send().await.unwrap();
        reopened = response.status();
        if reopened == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reopened, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_answers_configured_origins() {
    let s = server(ServerConfig::default(), true).await;
    let response = s
        .client
        .get(s.url("/api/commands"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let config = ServerConfig {
        cors_origins: vec!["https://app.example".into()],
        ..ServerConfig::default()
    };
    let s = server(config, true).await;
    let preflight = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/api/commands/jobs"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = s
        .client
        .get(s.url("/api/commands"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// The dashboard's pages render from the store, and Cancel works both as
/// a plain form (303 back to the page) and through htmx (the new panel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_render_and_cancel_from_the_job_page() {
    let s = server(ServerConfig::default(), true).await;
    let long = s.submit("sleep", json!({"secs": 60, "steps": 60})).await;
    s.wait_for(&long, "running").await;
    let html = |path: &'static str| {
        let client = s.client.clone();
        let url = s.url(path);
        async move {
            let response = client.get(url).send().await.unwrap();
            let status = response.status();
            let kind = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            (status, kind, response.text().await.unwrap())
        }
    };
    let (status, kind, jobs) = html("/ui").await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(jobs.contains(&long[long.len() - 12..]), "the job is listed");
    assert!(jobs.contains("demo.sleep") && jobs.contains("running"));
    let (_, _, filtered) = html("/ui?status=completed").await;
    assert!(
        !filtered.contains(&long[long.len() - 12..]),
        "the filter applies"
    );
    let (_, _, recent) = html("/ui?created=15m").await;
    assert!(recent.contains(&long[long.len() - 12..]), "made just now");
    assert!(
        !jobs.contains("/ui/logout"),
        "no log-out without a token to log in with"
    );
    for page in ["/ui/workers", "/ui/stats"] {
        let (status, _, body) = html(page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(body.contains("demo.sleep"), "{page}");
    }
    let (status, kind, script) = html("/ui/assets/htmx-2.0.11.min.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/javascript") && script.contains("htmx"));

    let page_path = format!("/ui/jobs/{long}");
    let page = s
        .client
        .get(s.url(&page_path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Cancel") && page.contains("hx-confirm"),
        "{page}"
    );
    assert!(page.contains("Event log"));
    // Through htmx: the panel comes back with what happened.
    let panel = s
        .client
        .post(s.url(&format!("{page_path}/cancel")))
        .header("HX-Request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(panel.status(), StatusCode::OK);
    let panel = panel.text().await.unwrap();
    assert!(
        panel.contains("Cancel requested") && !panel.contains("<html"),
        "{panel}"
    );
    s.wait_for(&long, "canceled").await;
    // As a plain form, on a job that has ended: back to its page, which
    // now offers Retry.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let again = no_redirects
        .post(s.url(&format!("{page_path}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(again.headers()["location"], page_path.as_str());
    let root = no_redirects.get(s.url("/")).send().await.unwrap();
    assert_eq!(root.headers()["location"], "/ui");
    let (status, _, _) = html("/ui/jobs/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The dashboard's live streams send rendered HTML: the jobs table again
/// when a job changes, and one job's state and log until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_live_streams_redraw_the_table_and_follow_a_job() {
    let s = server(ServerConfig::default(), true).await;
    let table = s.client.get(s.url("/ui/live/jobs")).send().await.unwrap();
    assert_eq!(table.status(), StatusCode::OK);
    assert!(table.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut table = table.bytes_stream();
    let mut seen = String::new();
    let mut read_until = async |wanted: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !seen.contains(wanted) {
            match tokio::time::timeout_at(deadline, table.next()).await {
                Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
                _ => panic!("no {wanted:?} in the table stream; got {seen}"),
            }
        }
    };
    // Drawn at once, so nothing between the page and the stream is missed.
    read_until("event: jobs").await;
    read_until("No jobs match.").await;
    let id = s.submit("sleep", json!({"secs": 0.6, "steps": 3})).await;
    read_until(&format!("id=\"job-{id}\" data-status=\"running\"")).await;
    read_until(&format!("id=\"job-{id}\" data-status=\"completed\"")).await;

    let job = s.submit("sleep", json!({"secs": 0.6, "steps": 3})).await;
    let stream = s
        .client
        .get(s.url(&format!("/ui/live/jobs/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    // The stream ends by itself after the job's end.
    let events = read_events(stream, 1000).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last.event.as_str(), last.text.as_str()),
        ("end", "completed")
    );
    let states: Vec<&SseEvent> = events.iter().filter(|e| e.event == "state").collect();
    assert!(states.len() >= 2, "{events:#?}");
    assert!(states.iter().any(|e| e.text.contains("<progress")));
    let final_state = &states.last().unwrap().text;
    assert!(
        final_state.contains("status completed") && final_state.contains("Result"),
        "{final_state}"
    );
    assert!(!final_state.contains("<html"), "a fragment, not a page");
    let final_log = &events.iter().rfind(|e| e.event == "log").unwrap().text;
    assert!(
        final_log.contains("step 3 of 3") && final_log.contains("result"),
        "{final_log}"
    );

    let unknown = s
        .client
        .get(s.url("/ui/live/jobs/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// A server whose token is `s3cret`, and a client that, like a browser,
/// does not follow redirects by itself.
async fn token_server_and_browser() -> (Server, reqwest::Client) {
    let config = ServerConfig {
        api_token: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (server(config, false).await, browser)
}

/// With a token set, a browser is sent to log in; the token typed once
/// becomes a cookie that the dashboard and the API (SSE included) accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_logs_in_with_the_token_and_keeps_a_cookie() {
    let (s, browser) = token_server_and_browser().await;
    let away = browser.get(s.url("/ui/stats")).send().await.unwrap();
    assert_eq!(away.status(), StatusCode::SEE_OTHER);
    assert_eq!(away.headers()["location"], "/ui/login?next=%2Fui%2Fstats");
    let form = browser
        .get(s.url("/ui/login?next=/ui/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.unwrap().contains("type=\"password\""));
    // A program still gets the JSON 401.
    let (status, body) = s.get("/api/commands/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");

    let login = |token: &'static str, next: &'static str| {
        browser
            .post(s.url("/ui/login"))
            .form(&[("token", token), ("next", next)])
            .send()
    };
    let wrong = login("guess", "/ui/stats").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.unwrap().contains("not right"));
    // Somewhere else than the dashboard is not a place to be sent.
    let right = login("s3cret", "https://evil.example/").await.unwrap();
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(right.headers()["location"], "/ui");
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("s3cret"),
        "the cookie does not show the token as is"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for path in ["/ui/stats", "/api/commands/jobs", "/api/events"] {
        let response = browser
            .get(s.url(path))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path} with the cookie");
    }
    let page = browser
        .get(s.url("/ui/workers"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"action="/ui/logout""#),
        "a logged-in page offers to log out"
    );
}

/// The submit form is generated from the command's schema, refuses bad
/// input with the message next to the field, and submits good input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_submit_form_follows_the_schema_and_shows_422_by_field() {
    let s = server(ServerConfig::default(), false).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let chooser = browser
        .get(s.url("/ui/submit"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(chooser.contains("demo.sleep") && chooser.contains("demo.echo"));
    let form = browser
        .get(s.url("/ui/submit?command=demo.sleep"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        form.contains("name=\"input.secs\"") && form.contains("type=\"number\""),
        "{form}"
    );
    assert!(
        form.contains("<label for=\"field-secs\">secs *</label>"),
        "required is marked: {form}"
    );

    let post = |pairs: Vec<(&'static str, &'static str)>| {
        browser.post(s.url("/ui/submit")).form(&pairs).send()
    };
    // Not a number: refused before the API, next to the field.
    let bad = post(vec![("command", "demo.sleep"), ("input.secs", "soon")])
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = bad.text().await.unwrap();
    let at = page.find("id=\"field-secs\"").expect("the field is there");
    let message = page.find("is not a number").expect("the message is there");
    assert!(message > at, "the message follows its field");
    assert!(page.contains("value=\"soon\""), "what was typed is kept");
    // Missing: the API's own 422, placed at the field it names.
    let missing = post(vec![("command", "demo.sleep"), ("input.steps", "2")])
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = missing.text().await.unwrap();
    assert!(page.contains("is a required property"), "{page}");
    assert!(page.find("required property").unwrap() > page.find("id=\"field-secs\"").unwrap());

    let good = post(vec![
        ("command", "demo.sleep"),
        ("input.secs", "0.1"),
        ("input.steps", "1"),
    ])
    .await
    .unwrap();
    assert_eq!(good.status(), StatusCode::SEE_OTHER);
    let location = good.headers()["location"].to_str().unwrap().to_owned();
    let id = location
        .strip_prefix("/ui/jobs/")
        .expect("sent to the job's page");
    let (_, job) = s.get(&format!("/api/commands/jobs/{id}")).await;
    assert_eq!(job["input"], json!({"secs": 0.1, "steps": 1}));
}

/// Asserts a refusal: its status, its code, and that the message names
/// `needle`.
fn refused(answer: (StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

#[tokio::test]
async fn absurd_times_and_durations_are_refused_naming_the_field() {
    let s = server(ServerConfig::default(), false).await;
    let echo =
        |options: Value| json!({"app": "demo", "command": "echo", "input": {}, "options": options});
    for (options, field) in [
        (json!({"delay_secs": 9.3e12}), "delay_secs"),
        (json!({"delay_secs": 1e12}), "delay_secs"),
        (json!({"delay_secs": -1}), "delay_secs"),
        (json!({"timeout_secs": 1e300}), "timeout_secs"),
        (json!({"retry": {"wait_time": 1e308}}), "wait_time"),
        (json!({"retry": {"wait_max": 1e20}}), "wait_max"),
    ] {
        refused(
            s.post("/api/commands/jobs", echo(options.clone())).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            field,
        );
    }
    refused(
        s.post(
            "/api/commands/jobs",
            echo(json!({"run_at": "10000-01-01T00:00:00Z"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "RFC 3339",
    );
    // Nothing was stored by the refusals.
    let (_, list) = s.get("/api/commands/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
    // A long but sane delay is kept and written as RFC 3339.
    let id = s
        .post("/api/commands/jobs", echo(json!({"delay_secs": 3e8})))
        .await
        .1["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, job) = s.get(&format!("/api/commands/jobs/{id}")).await;
    let run_at = job["run_at"].as_str().unwrap();
    assert!(run_at.starts_with("2036-"), "{run_at}");
}

#[tokio::test]
async fn a_submit_is_refused_unless_its_input_is_an_object_and_its_fields_known() {
    let s = server(ServerConfig::default(), false).await;
    for input in [json!(null), json!("text"), json!([1, 2]), json!(3)] {
        refused(
            s.post(
                "/api/commands/jobs",
                json!({"app": "demo", "command": "echo", "input": input}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "input must be a JSON object",
        );
    }
    refused(
        s.post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "echo"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "input",
    );
    refused(
        s.post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "echo", "input": {}, "priorty": 5}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "priorty",
    );
    refused(
        s.post(
            "/api/commands/jobs",
            json!({"app": "demo", "command": "sleep", "input": {"secs": 1, "stepz": 3}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
        "stepz",
    );
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_input_is_refused() {
    let s = server(ServerConfig::default(), false).await;
    let keyed = |text: &str| {
        json!({"app": "demo", "command": "echo", "input": {"text": text},
               "options": {"idempotency_key": "k-1"}})
    };
    let (status, first) = s.post("/api/commands/jobs", keyed("a")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The same request again: the same job.
    let (status, again) = s.post("/api/commands/jobs", keyed("a")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (again["job_id"].clone(), again["created"].clone()),
        (first["job_id"].clone(), json!(false))
    );
    // Another input under the same key: refused, naming the job.
    refused(
        s.post("/api/commands/jobs", keyed("b")).await,
        StatusCode::CONFLICT,
        "idempotency_conflict",
        first["job_id"].as_str().unwrap(),
    );
    // In a batch, the answer for that job says so.
    let (status, batch) = s
        .post("/api/commands/jobs/batch", json!({"jobs": [keyed("c")]}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{batch}");
    let message = batch["jobs"][0]["message"].as_str().unwrap();
    assert!(message.contains("another command or input"), "{message}");
}

#[tokio::test]
async fn json_routes_refuse_form_and_text_bodies_but_allow_no_content_type() {
    let s = server(ServerConfig::default(), false).await;
    let body = r#"{"app": "demo", "command": "echo", "input": {}}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let response = s
            .client
            .post(s.url("/api/commands/jobs"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        refused(
            (status, answer),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type",
        );
    }
    let response = s
        .client
        .post(s.url("/api/commands/jobs"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let response = s
        .client
        .post(s.url("/api/commands/jobs"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// The dashboard's session is a revocable, signed session, not the token;
/// wrong tokens are braked; `next` cannot break the Location header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_session_is_revocable_and_guessing_is_braked() {
    let (s, browser) = token_server_and_browser().await;
    // A CR/LF in `next` is not a 500: the page falls back to /ui.
    let form = browser
        .get(s.url("/ui/login?next=/ui%0aSet-Cookie:x"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form
        .text()
        .await
        .unwrap()
        .contains(r#"name="next" value="/ui""#));
    let login = |token: &'static str, next: &'static str| {
        browser
            .post(s.url("/ui/login"))
            .form(&[("token", token), ("next", next)])
            .send()
    };
    let right = login("s3cret", "/ui\r\nX: y").await.unwrap();
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(right.headers()["location"], "/ui");
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let hex: String = "s3cret".bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!pair.contains(&hex), "the cookie is not the token: {pair}");
    let with_cookie = |path: &str| browser.get(s.url(path)).header("cookie", &pair).send();
    assert_eq!(
        with_cookie("/api/commands/jobs").await.unwrap().status(),
        StatusCode::OK
    );
    // Behind an HTTPS proxy the cookie is Secure.
    let behind_tls = browser
        .post(s.url("/ui/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", "s3cret"), ("next", "/ui")])
        .send()
        .await
        .unwrap();
    assert!(behind_tls.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    // Logging out revokes the session: the same cookie no longer works.
    let out = browser
        .post(s.url("/ui/logout"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = with_cookie("/api/commands/jobs").await.unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    assert!(
        after.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
        "a 401 says how to authenticate"
    );

    // Ten wrong tokens, then the client must wait, even with the right one.
    for _ in 0..10 {
        assert_eq!(
            login("guess", "/ui").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let braked = login("s3cret", "/ui").await.unwrap();
    assert_eq!(braked.status(), StatusCode::TOO_MANY_REQUESTS);
    let api = s
        .client
        .get(s.url("/api/commands/jobs"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(api.headers().contains_key("retry-after"));
}

/// A page on another origin (another port of the same host included)
/// cannot make a logged-in browser cancel, retry or submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_form_posts_are_refused() {
    let s = server(ServerConfig::default(), true).await;
    let id = s.submit("sleep", json!({"secs": 30})).await;
    s.wait_for(&id, "running").await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let other_port = format!("http://{}:1", host.split(':').next().unwrap());
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (site, origin) in [
        ("same-site", other_port.as_str()),
        ("cross-site", "https://evil.example"),
    ] {
        let forged = browser
            .post(s.url(&format!("/ui/jobs/{id}/cancel")))
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{site}");
        // An older browser without Sec-Fetch-Site: Origin alone tells.
        let forged = browser
            .delete(s.url(&format!("/api/commands/jobs/{id}")))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    let (_, job) = s.get(&format!("/api/commands/jobs/{id}")).await;
    assert_eq!(job["status"], "running", "nothing was canceled");
    assert_eq!(job["cancel_requested"], false);
    // The dashboard's own form post passes.
    let own = browser
        .post(s.url(&format!("/ui/jobs/{id}/cancel")))
        .header("origin", &s.base)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert!(
        own.status().is_success() || own.status().is_redirection(),
        "{}",
        own.status()
    );
    s.wait_for(&id, "canceled").await;
}

/// Bad query parameters and undecodable paths get the JSON error body.
#[tokio::test]
async fn malformed_queries_and_paths_get_json_errors() {
    let s = server(ServerConfig::default(), false).await;
    for path in [
        "/api/commands/jobs?limit=abc",
        "/api/commands/jobs/x?wait=abc",
        "/api/commands/jobs/%ff%fe",
        "/api/commands/jobs/x/events?after=soon",
    ] {
        let response = s.client.get(s.url(path)).send().await.unwrap();
        let status = response.status();
        assert!(status.is_client_error(), "{path}: {status}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
}

/// A per-job link reads that job (its status, events, stream, follow
/// page) without the token, until it expires; it opens no other job and
/// no other route, and a forged or stretched one opens nothing.
#[tokio::test]
async fn a_job_link_reads_its_job_alone_without_the_token() {
    let config = ServerConfig {
        api_token: Some("s3cret".into()),
        ..ServerConfig::default()
    };
    let s = server(config, true).await;
    let authed = |request: reqwest::RequestBuilder| request.bearer_auth("s3cret");
    let submit = |input: Value| {
        let request = authed(s.client.post(s.url("/api/commands/jobs")))
            .json(&json!({"command": "demo.echo", "input": input}));
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["job_id"].as_str().unwrap().to_owned()
        }
    };
    let (mine, other) = (submit(json!({"a": 1})).await, submit(json!({"b": 2})).await);
    let link = |job: &str, query: &str| {
        let request = authed(
            s.client
                .post(s.url(&format!("/api/commands/jobs/{job}/links{query}"))),
        );
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, made) = link(&mine, "").await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().unwrap();
    let expires = errand::Timestamp::parse_rfc3339(made["expires"].as_str().unwrap()).unwrap();
    let left = expires.since(errand::Clock::now(&SystemClock));
    assert!(
        (3590..=3600).contains(&left.as_secs()),
        "an hour by default: {left:?}"
    );
    for path in ["job_url", "events_url", "stream_url", "page_url"] {
        let url = made[path].as_str().unwrap();
        assert!(
            url.contains(&mine) && url.ends_with(&format!("?link={token}")),
            "{url}"
        );
        let response = s.client.get(s.url(url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}: {url}");
    }
    let (_, job) = s.get(made["job_url"].as_str().unwrap()).await;
    assert_eq!(job["job_id"], mine.as_str());
    let (_, events) = s.get(made["events_url"].as_str().unwrap()).await;
    assert!(!events["events"].as_array().unwrap().is_empty());

    let refused = [
        format!("/api/commands/jobs/{other}?link={token}"),
        format!("/api/commands/jobs/{other}/stream?link={token}"),
        format!("/api/commands/jobs?link={token}"),
        format!("/api/events?link={token}"),
        format!(
            "/api/commands/jobs/{mine}?link={}",
            token.replacen('.', "0.", 1)
        ),
        format!(
            "/api/commands/jobs/{mine}?link=4102444800.{}",
            &token[token.find('.').unwrap() + 1..]
        ),
        format!("/api/commands/jobs/{mine}?link=garbage"),
    ];
    for path in &refused {
        let (status, _) = s.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    for (method, path) in [
        (
            reqwest::Method::DELETE,
            format!("/api/commands/jobs/{mine}?link={token}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/commands/jobs/{mine}/retry?link={token}"),
        ),
        (
            reqwest::Method::POST,
            format!("/api/commands/jobs/{mine}/links?link={token}"),
        ),
    ] {
        let response = s
            .client
            .request(method.clone(), s.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }

    // A link that has run out opens nothing.
    let (status, short) = link(&mine, "?ttl_secs=1").await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = s.get(short["job_url"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    for (query, why) in [
        ("?ttl_secs=0", "ttl_secs"),
        ("?ttl_secs=604801", "ttl_secs"),
        ("?ttl_secs=604800.0000000001", "ttl_secs"),
        ("?ttl_secs=NaN", "ttl_secs"),
    ] {
        let (status, body) = link(&mine, query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(why));
    }
    let (status, _) = link("no-such-job", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
