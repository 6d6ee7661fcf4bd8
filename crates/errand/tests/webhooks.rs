//! Webhooks against a real receiver the test starts: each request signed
//! and checked, a 500 retried with the same delivery id, the attempts in
//! the job's event log, bad webhooks refused at submit, and two servers
//! on one PostgreSQL database sending each delivery once.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use errand_core::webhook::{verify, SIGNATURE_HEADER};
use errand_core::{DeliveryPolicy, Webhook, WebhookAllowList, WebhookOn};
use errand_server::webhooks::WebhookConfig;
use errand_server::ServerConfig;
use serde_json::{json, Value};

mod common;
use common::inproc::Server;
use common::{free_port, Database, Processes};

const SECRET: &str = "webhook-test-secret";

/// One request the receiver got, its signature already checked.
#[derive(Clone, Debug)]
struct Received {
    delivery: String,
    body: Value,
}

/// An HTTP server that records every POST to `/hook`, refusing any whose
/// signature does not verify, and answers 500 to the first `fail_first`.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<Vec<String>>>,
    fail_first: Arc<Mutex<usize>>,
    url: String,
    port: u16,
}

async fn hook(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(why) = verify(
        SECRET.as_bytes(),
        signature,
        &body,
        now,
        Duration::from_secs(300),
    ) {
        r.refused.lock().unwrap().push(why.to_string());
        return StatusCode::UNAUTHORIZED;
    }
    let received = Received {
        delivery: headers["errand-delivery"].to_str().unwrap().to_owned(),
        body: serde_json::from_slice(&body).unwrap(),
    };
    r.got.lock().unwrap().push(received);
    let mut fail = r.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = Receiver {
            got: Arc::default(),
            refused: Arc::default(),
            fail_first: Arc::new(Mutex::new(fail_first)),
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
        };
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..600 {
            let got = self.got();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver got {:?}, not {count} requests", self.got());
    }
}

fn webhook_config(receiver: &Receiver) -> WebhookConfig {
    WebhookConfig {
        secret: Some(SECRET.into()),
        allow: WebhookAllowList::parse(&[format!("127.0.0.1:{}", receiver.port)]).unwrap(),
        policy: DeliveryPolicy {
            max_attempts: 4,
            first_wait: Duration::from_millis(200),
            max_wait: Duration::from_secs(1),
        },
        timeout: Duration::from_secs(5),
        commands: [(
            "demo.noop".to_owned(),
            Webhook {
                url: receiver.url.clone(),
                on: WebhookOn::End,
            },
        )]
        .into(),
    }
}

/// `errand serve` in process on SQLite with the demo worker, sending
/// webhooks as `webhooks` says.
async fn server(webhooks: WebhookConfig) -> Server {
    let config = ServerConfig {
        webhooks,
        ..ServerConfig::default()
    };
    common::inproc::server(config, true).await
}

async fn submitted(s: &Server, body: Value) -> String {
    let (status, answer) = s.post("/api/commands/jobs", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["job_id"].as_str().unwrap().to_owned()
}

/// The job's webhook records (`data` of its `webhook` events), once
/// there are `count`.
async fn records(s: &Server, job_id: &str, count: usize) -> Vec<Value> {
    for _ in 0..600 {
        let (_, events) = s.get(&format!("/api/commands/jobs/{job_id}/events")).await;
        let records: Vec<Value> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "webhook")
            .map(|e| e["data"].clone())
            .collect();
        if records.len() >= count {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {job_id} has fewer than {count} webhook records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_s_end_is_posted_signed_to_its_webhook_and_recorded() {
    let receiver = Receiver::start(0).await;
    let s = server(webhook_config(&receiver)).await;
    let job_id = submitted(
        &s,
        json!({"command": "demo.echo", "input": {"say": "hi"},
            "options": {"webhook": {"url": receiver.url}}}),
    )
    .await;
    let got = receiver.wait_for(1).await;
    let body = &got[0].body;
    assert_eq!(body["event"]["job_id"], job_id.as_str());
    assert_eq!(body["event"]["kind"], "result");
    assert_eq!(body["event"]["status"], "completed");
    assert_eq!(body["job"]["status"], "completed");
    assert_eq!(body["job"]["result"], json!({"say": "hi"}));
    assert_eq!(
        body["job"]["webhook"],
        json!({"url": receiver.url, "on": "end"})
    );
    assert_eq!(body["attempt"], 1);
    assert_eq!(got[0].delivery, body["delivery_id"].to_string());
    let records = records(&s, &job_id, 1).await;
    assert_eq!(records[0]["state"], "delivered");
    assert_eq!(records[0]["http_status"], 204);
    assert_eq!(records[0]["event_id"], body["event"]["id"]);
    assert_eq!(records[0]["status"], "completed");

    // The command line says the same.
    let dir = tempfile::tempdir().unwrap();
    let out = common::serve::errand_in(
        dir.path(),
        &s.base,
        &[
            "submit",
            "demo.echo",
            "--webhook",
            &receiver.url,
            "--webhook-on",
            "end",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        common::serve::text(&out.stderr)
    );
    let cli_job = common::serve::text(&out.stdout).trim().to_owned();
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].body["event"]["job_id"], cli_job.as_str());
    let out = common::serve::errand_in(
        dir.path(),
        &s.base,
        &["submit", "demo.echo", "--webhook", "http://10.0.0.1/"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        common::serve::text(&out.stderr).contains("allow-list"),
        "{}",
        common::serve::text(&out.stderr)
    );

    // A command's configured webhook serves the submits that name none.
    let noop = submitted(&s, json!({"command": "demo.noop", "input": {}})).await;
    let got = receiver.wait_for(3).await;
    assert_eq!(got[2].body["event"]["job_id"], noop.as_str());
    assert!(receiver.refused.lock().unwrap().is_empty());
    // Nothing else was sent: one delivery per job's end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_with_its_delivery_id_until_it_lands() {
    let receiver = Receiver::start(2).await;
    let s = server(webhook_config(&receiver)).await;
    let job_id = submitted(
        &s,
        json!({"command": "demo.echo", "input": {},
            "options": {"webhook": {"url": receiver.url}}}),
    )
    .await;
    let got = receiver.wait_for(3).await;
    let deliveries: Vec<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(
        deliveries, [deliveries[0]; 3],
        "one delivery, sent three times"
    );
    let attempts: Vec<&Value> = got.iter().map(|r| &r.body["attempt"]).collect();
    assert_eq!(attempts, [&json!(1), &json!(2), &json!(3)]);
    let records = records(&s, &job_id, 3).await;
    let states: Vec<(&Value, &Value)> = records
        .iter()
        .map(|r| (&r["state"], &r["http_status"]))
        .collect();
    assert_eq!(
        states,
        [
            (&json!("retrying"), &json!(500)),
            (&json!("retrying"), &json!(500)),
            (&json!("delivered"), &json!(204)),
        ]
    );
    assert!(records[0]["retry_at"].is_string());
    assert!(records[0]["error"].as_str().unwrap().contains("500"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_webhook_hears_every_change_and_an_unreachable_one_gives_up() {
    let receiver = Receiver::start(0).await;
    let mut config = webhook_config(&receiver);
    config.policy.max_attempts = 2;
    // Port 1 on the loopback: allowed, and nothing listens.
    config.allow =
        WebhookAllowList::parse(&[format!("127.0.0.1:{}", receiver.port), "127.0.0.1:1".into()])
            .unwrap();
    let s = server(config).await;
    let job_id = submitted(
        &s,
        json!({"command": "demo.echo", "input": {},
            "options": {"webhook": {"url": receiver.url, "on": "status"}}}),
    )
    .await;
    let got = receiver.wait_for(3).await;
    let mut statuses: Vec<String> = got
        .iter()
        .map(|r| r.body["event"]["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["completed", "new", "running"]);
    assert!(got
        .iter()
        .all(|r| r.body["event"]["job_id"] == job_id.as_str()));

    let lost = submitted(
        &s,
        json!({"command": "demo.echo", "input": {},
            "options": {"webhook": {"url": "http://127.0.0.1:1/nobody"}}}),
    )
    .await;
    let records = records(&s, &lost, 2).await;
    assert_eq!(records[0]["state"], "retrying");
    assert_eq!(records[1]["state"], "failed");
    assert!(records[1]["http_status"].is_null());
    assert!(
        records[1]["error"].as_str().unwrap().contains("connect"),
        "{}",
        records[1]
    );
}

/// A job whose webhook the allow-list no longer names (stored before the
/// list changed, or by another server) is never sent: its delivery is
/// recorded failed at once, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_off_the_allow_list_at_send_time_is_failed_unsent() {
    let receiver = Receiver::start(0).await;
    let s = server(webhook_config(&receiver)).await;
    let off_list = Webhook {
        url: "http://127.0.0.2:9/hook".into(),
        on: WebhookOn::End,
    };
    // Straight into the store: the submit's check would refuse it.
    let job = errand::NewJob::new("demo", "echo", json!({})).webhook(off_list);
    let job_id = s.state.store.submit(job).await.unwrap().job_id;
    let records = records(&s, job_id.as_str(), 1).await;
    assert_eq!(records[0]["state"], "failed", "{}", records[0]);
    assert_eq!(records[0]["attempt"], 1);
    assert!(records[0]["http_status"].is_null());
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("not sent: the webhook URL names 127.0.0.2:9, which is not on"),
        "{error}"
    );
    assert!(receiver.got().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_a_server_cannot_or_may_not_call_are_refused_at_submit() {
    let receiver = Receiver::start(0).await;
    let s = server(webhook_config(&receiver)).await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let (port, other) = (receiver.port, receiver.port + 1);
    for (webhook, status, says) in [
        (json!({"url": "http://10.0.0.1/hook"}), unprocessable,
         "options.webhook.url names 10.0.0.1:80, which is not on this server's webhook allow-list"),
        (json!({"url": format!("http://127.0.0.1:{other}/x")}), unprocessable, "allow-list"),
        (json!({"url": "ftp://127.0.0.1/hook"}), unprocessable, "must be http or https, not ftp"),
        (json!({"url": "not a url"}), unprocessable, "is not a URL"),
        (json!({"url": format!("http://user:pw@127.0.0.1:{port}/")}), unprocessable,
         "must not carry a user name or password"),
        (json!({"url": receiver.url, "on": "sometimes"}), StatusCode::BAD_REQUEST,
         "options.webhook.on: unknown variant `sometimes`"),
        (json!({"url": receiver.url, "secret": "x"}), StatusCode::BAD_REQUEST, "unknown field `secret`"),
        (json!("http://example.com"), StatusCode::BAD_REQUEST, "options.webhook"),
    ] {
        let (got, body) = s
            .post("/api/commands/jobs", json!({"command": "demo.echo", "input": {}, "options": {"webhook": webhook}}))
            .await;
        assert_eq!(got, status, "{webhook}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{webhook}: {message}");
    }
    let unconfigured = server(WebhookConfig::default()).await;
    let (status, body) = unconfigured
        .post(
            "/api/commands/jobs",
            json!({"command": "demo.echo", "input": {},
            "options": {"webhook": {"url": receiver.url}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("no webhook secret"), "{body}");

    // Each server's OpenAPI document says what it takes: a null webhook at
    // most without a secret, else a URL on its allow-list.
    let options = |server: &Server| {
        let client = server.client.clone();
        let url = format!("{}/api/openapi.json", server.base);
        async move {
            let doc: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            let schemas = &doc["components"]["schemas"];
            (
                schemas["SubmitOptions"]["properties"]["webhook"].clone(),
                schemas["Webhook"]["properties"]["url"]["pattern"].clone(),
            )
        }
    };
    assert_eq!(options(&unconfigured).await.0["type"], "null");
    let (webhook, pattern) = options(&s).await;
    assert!(webhook.is_object());
    let pattern = pattern.as_str().unwrap();
    assert!(
        pattern.contains(&format!("127\\.0\\.0\\.1:{}", receiver.port)),
        "{pattern}"
    );
}

fn errand(args: &[&str], log: std::path::PathBuf) -> Child {
    Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(args)
        .env("ERRAND_LOG", "warn")
        .env("ERRAND_PG_POOL_SIZE", "4")
        .env("ERRAND_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("errand starts")
}

/// Two `errand serve` processes on one PostgreSQL database both send
/// webhooks: every job's end reaches the receiver exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgres_send_each_delivery_once() {
    let Some(db) = Database::create().await else {
        return;
    };
    let receiver = Receiver::start(0).await;
    let logs = tempfile::tempdir().unwrap();
    let allow = format!("127.0.0.1:{}", receiver.port);
    let bases: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut processes = Processes(Vec::new());
    for (i, bind) in bases.iter().enumerate() {
        processes.0.push(errand(
            &[
                "serve",
                "--store",
                &db.url,
                "--bind",
                bind,
                "--webhook-allow",
                &allow,
            ],
            logs.path().join(format!("serve-{i}.log")),
        ));
    }
    let client = reqwest::Client::new();
    for bind in &bases {
        let mut up = false;
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("http://{bind}/api/ready")).send().await {
                up |= r.status() == 200;
            }
            if up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "{bind} came up");
    }
    const JOBS: usize = 200;
    let mut ids = Vec::new();
    for batch in 0..(JOBS / 50) {
        let jobs: Vec<Value> = (0..50)
            .map(|i| {
                json!({"app": "demo", "command": "echo", "input": {"i": i},
                "options": {"webhook": {"url": receiver.url}}})
            })
            .collect();
        let answer: Value = client
            .post(format!(
                "http://{}/api/commands/jobs/batch",
                bases[batch % 2]
            ))
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for job in answer["jobs"].as_array().unwrap() {
            ids.push(job["job_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ids.len(), JOBS);
    receiver.wait_for(JOBS).await;
    // Time for a second sender to double one, if it would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.got();
    let mut per_job = std::collections::BTreeMap::<String, usize>::new();
    for r in &got {
        *per_job
            .entry(r.body["event"]["job_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let doubled: Vec<_> = per_job.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "delivered more than once: {doubled:?}");
    assert_eq!(per_job.len(), JOBS);
    assert!(ids.iter().all(|id| per_job.contains_key(id)));
    assert!(receiver.refused.lock().unwrap().is_empty());
}
