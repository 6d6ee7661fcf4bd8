//! `errand bench http-submit`: `POST /api/commands/jobs` through the real
//! server on a local socket, from 64 keep-alive connections, each sending
//! its next request as soon as the last is answered. The clients run in
//! the same process and share its CPU (wrk from another process measures
//! the server alone: docs/benchmarks.md).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use errand::{Store, Worker, WorkerConfig};
use serde_json::json;

use super::workloads::{enqueue_result, Tally};
use super::RunResult;

pub(crate) async fn http_submit(
    store: Arc<dyn Store>,
    jobs: usize,
    connections: usize,
) -> anyhow::Result<RunResult> {
    // Publish bench.noop so the server validates input against its schema,
    // as it does for every command.
    let registry = Tally::default().registry(false)?;
    Worker::new(store.clone(), registry, WorkerConfig::default())
        .register()
        .await?;
    let state = errand_server::AppState::new(store.clone(), errand_server::ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/commands/jobs", listener.local_addr()?);
    let server = tokio::spawn(errand_server::serve(listener, state.clone()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let commits_before = store.commits();
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (http, url, next) = (http.clone(), url.clone(), next.clone());
        clients.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return Ok::<_, anyhow::Error>(());
                }
                let response = http
                    .post(&url)
                    .json(&json!({"command": "bench.noop", "input": {"i": i}}))
                    .send()
                    .await
                    .context("submit over HTTP")?;
                if response.status() != reqwest::StatusCode::ACCEPTED {
                    bail!("submit answered {}", response.status());
                }
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    state.shutdown.cancel();
    server.await??;
    enqueue_result(&store, jobs, elapsed, commits_before).await
}
