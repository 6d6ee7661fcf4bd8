//! What the API answers when its store cannot be reached: 503 with a clear
//! code, never a 500 and never a hang; liveness stays up, readiness goes down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use errand::url::StoreUrl;
use errand::SystemClock;
use errand_core::Timestamp;
use errand_server::{AppState, ServerConfig};
use errand_store::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_gives_503_not_500() {
    let dir = tempfile::tempdir().unwrap();
    let inner = StoreUrl::parse(&format!("sqlite://{}", dir.path().join("u.db").display()))
        .unwrap()
        .open(Arc::new(SystemClock))
        .await
        .unwrap();
    let registry = errand::demo::registry().unwrap();
    inner
        .register_worker(WorkerRegistration {
            worker_id: "w".into(),
            host: "h".into(),
            pid: 1,
            queues: vec!["default".into()],
            slots: 1,
            commands: registry.command_infos("w", Timestamp::default()),
        })
        .await
        .unwrap();
    // A real SQLite store behind a switch that makes every call fail the
    // way an unreachable database does.
    let down = Arc::new(AtomicBool::new(false));
    let unplugged = down.clone();
    let store: Arc<dyn Store> = Arc::new(Observed::new(inner, move |_| {
        if unplugged.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }));
    let state = AppState::new(store.clone(), ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(errand_server::serve(listener, state.clone()));
    let client = reqwest::Client::new();
    let submit = || {
        client
            .post(format!("{base}/api/commands/jobs"))
            .json(&json!({"app": "demo", "command": "echo", "input": {}}))
            .send()
    };
    assert_eq!(submit().await.unwrap().status(), 202);

    down.store(true, Ordering::SeqCst);
    let response = submit().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");
    for path in [
        "/api/commands/jobs",
        "/api/commands/jobs/x",
        "/api/commands/stats",
        "/api/workers",
    ] {
        let status = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 503, "{path}");
    }
    assert_eq!(
        client
            .get(format!("{base}/api/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        client
            .get(format!("{base}/api/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    down.store(false, Ordering::SeqCst);
    assert_eq!(
        submit().await.unwrap().status(),
        202,
        "back when the store is"
    );
    assert_eq!(
        client
            .get(format!("{base}/api/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    state.shutdown.cancel();
}
