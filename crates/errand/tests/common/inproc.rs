//! `errand serve` in this process on a fresh SQLite file, with the demo
//! commands' worker (or only their registration), driven over real HTTP.

use std::time::Duration;

use errand::url::StoreUrl;
use errand::{SystemClock, Worker, WorkerConfig};
use errand_server::{AppState, ServerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub worker_stop: CancellationToken,
    _dir: tempfile::TempDir,
}

pub async fn server(config: ServerConfig, with_worker: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("http.db").display());
    let store = StoreUrl::parse(&url)
        .unwrap()
        .open(std::sync::Arc::new(SystemClock))
        .await
        .unwrap();
    let worker_stop = CancellationToken::new();
    let worker_config = WorkerConfig {
        heartbeat_interval: Duration::from_millis(200),
        lease: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        cancel_grace: Duration::from_secs(1),
        progress_interval: Duration::ZERO,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(
        store.clone(),
        errand::demo::registry().unwrap(),
        worker_config,
    );
    if with_worker {
        worker.register().await.unwrap();
        tokio::spawn(worker.run(worker_stop.clone()));
    } else {
        // Publish the commands the way a worker elsewhere would, then leave.
        let registry = errand::demo::registry().unwrap();
        store
            .register_worker(errand_store::WorkerRegistration {
                worker_id: "elsewhere".into(),
                host: "other-host".into(),
                pid: 1,
                queues: vec!["default".into()],
                slots: 1,
                commands: registry.command_infos("elsewhere", errand::Timestamp::default()),
            })
            .await
            .unwrap();
    }
    let state = AppState::new(store, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(errand_server::serve(listener, state.clone()));
    Server {
        base,
        client: reqwest::Client::new(),
        state,
        worker_stop,
        _dir: dir,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.worker_stop.cancel();
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn submit(&self, command: &str, input: Value) -> String {
        let (status, body) = self
            .post(
                "/api/commands/jobs",
                json!({"app": "demo", "command": command, "input": input}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    pub async fn wait_for(&self, id: &str, status: &str) -> Value {
        for _ in 0..300 {
            let (_, job) = self.get(&format!("/api/commands/jobs/{id}")).await;
            if job["status"] == status {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {id} never became {status}");
    }
}
