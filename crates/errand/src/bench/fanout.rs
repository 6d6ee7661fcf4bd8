//! `errand bench sse-fanout`: one job's progress events to N SSE clients
//! through a real server on a local socket; latency from the event's
//! commit time (`at`) to its arrival at each client.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use errand::{
    Clock, CommandOptions, NewJob, Registry, Store, SystemClock, Timestamp, Worker, WorkerConfig,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::RunResult;

/// Progress events the job emits, one every `STEP`.
const EMITS: u32 = 20;
const STEP: Duration = Duration::from_millis(50);

pub(crate) async fn sse_fanout(
    store: Arc<dyn Store>,
    subscribers: usize,
) -> anyhow::Result<RunResult> {
    let mut registry = Registry::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let open = gate.clone();
    registry.register_fn(
        "bench",
        "emit",
        CommandOptions::default(),
        move |_input, ctx| {
            let open = open.clone();
            async move {
                open.notified().await; // start once every client is connected
                for step in 1..=EMITS {
                    tokio::time::sleep(STEP).await;
                    ctx.progress(f64::from(step) / f64::from(EMITS), "tick")
                        .await?;
                }
                Ok(Value::Null)
            }
        },
    )?;
    let stop = CancellationToken::new();
    let config = WorkerConfig {
        progress_interval: Duration::ZERO,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(store.clone(), registry, config);
    worker.register().await?;
    let worker = tokio::spawn(worker.run(stop.clone()));
    // Every client comes from 127.0.0.1: lift the per-client stream cap.
    let server_config = errand_server::ServerConfig {
        max_streams_per_client: subscribers + 1,
        ..errand_server::ServerConfig::default()
    };
    let state = errand_server::AppState::new(store.clone(), server_config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(errand_server::serve(listener, state.clone()));

    let job_id = store
        .submit(NewJob::new("bench", "emit", Value::Null))
        .await?
        .job_id;
    let mut clients = tokio::task::JoinSet::new();
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel(subscribers);
    for _ in 0..subscribers {
        let path = format!("/api/commands/jobs/{job_id}/stream");
        let connected = connected_tx.clone();
        clients.spawn(async move { subscribe(address, path, connected).await });
    }
    for _ in 0..subscribers {
        connected_rx
            .recv()
            .await
            .context("a client failed to connect")?;
    }
    gate.notify_one();
    let started = std::time::Instant::now();
    let mut latencies_ms = Vec::with_capacity(subscribers * EMITS as usize);
    let mut missed = 0;
    while let Some(client) = clients.join_next().await {
        let received = client??;
        missed += (EMITS as usize).saturating_sub(received.len());
        latencies_ms.extend(received);
    }
    let elapsed = started.elapsed();
    state.shutdown.cancel();
    stop.cancel();
    worker.await??;
    server.await??;
    // Here a "job" is one progress event delivered to one client.
    Ok(RunResult {
        jobs_per_sec: latencies_ms.len() as f64 / elapsed.as_secs_f64(),
        jobs: subscribers * EMITS as usize,
        latencies_ms,
        lost: missed,
        ..RunResult::default()
    })
}

/// One SSE client on a raw HTTP/1.1 connection; returns the latency of
/// each progress event it received, in ms, when the stream ends.
async fn subscribe(
    address: std::net::SocketAddr,
    path: String,
    connected: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<f64>> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("the stream was refused: {}", line.trim());
    }
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        if line == "\r\n" {
            break; // end of headers
        }
        if line.is_empty() {
            bail!("connection closed before the headers ended");
        }
    }
    let _ = connected.send(()).await;
    let mut latencies = Vec::new();
    let mut pending = String::new();
    loop {
        // Chunked transfer encoding: a hex size line, the bytes, CRLF.
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        let size = usize::from_str_radix(line.trim(), 16).context("a chunk size")?;
        if size == 0 {
            break;
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).await?;
        let received = SystemClock.now();
        pending.push_str(&String::from_utf8_lossy(&chunk[..size]));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            if !block.contains("event: progress") {
                continue;
            }
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .context("a data line")?;
            let event: Value = serde_json::from_str(data)?;
            let at = event["at"]
                .as_str()
                .and_then(Timestamp::parse_rfc3339)
                .context("an event time")?;
            latencies.push(received.since(at).as_secs_f64() * 1000.0);
        }
    }
    Ok(latencies)
}
