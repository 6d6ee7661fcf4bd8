//! A worker host cut off from the network: the worker runs in
//! a network namespace of its own, reaching PostgreSQL through a veth pair
//! and a forwarder; the link is cut while it runs a job, another worker
//! takes the job over when the lease expires, and when the link comes back
//! the cut-off worker's late outcome is rejected by fencing.
//!
//! Needs `ERRAND_TEST_PG_URL`, root and iproute2 (`ip netns`); skipped with
//! a message otherwise.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::NoTls;

mod common;
use common::Database;
use common::Processes;

/// A network namespace with one veth link to the host; deleted on drop.
struct Namespace {
    name: String,
    host_side: String,
    host_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Namespace {
    fn create() -> Result<Self, String> {
        let n = std::process::id() % 250 + 1;
        let name = format!("errand{n}");
        let (host_side, inner_side) = (format!("veh{n}"), format!("vei{n}"));
        let (host_ip, inner_ip) = (format!("10.231.{n}.1"), format!("10.231.{n}.2"));
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Self {
            name: name.clone(),
            host_side: host_side.clone(),
            host_ip: host_ip.clone(),
        };
        ip(&[
            "link",
            "add",
            &host_side,
            "type",
            "veth",
            "peer",
            "name",
            &inner_side,
        ])?;
        ip(&["link", "set", &inner_side, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_side])?;
        ip(&["link", "set", &host_side, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{inner_ip}/24"),
            "dev",
            &inner_side,
        ])?;
        ip(&["-n", &name, "link", "set", &inner_side, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_side, "down"]).unwrap();
    }

    fn restore(&self) {
        ip(&["link", "set", &self.host_side, "up"]).unwrap();
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_side]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Forwards connections from the namespace's side of the link to the
/// PostgreSQL server on the host's loopback.
async fn forward(listener: TcpListener, target: String) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

fn worker_args<'a>(store: &'a str, id: &'a str) -> Vec<&'a str> {
    vec![
        "worker",
        "--store",
        store,
        "--worker-id",
        id,
        "--queue",
        "partition",
        "--heartbeat-ms",
        "300",
        "--lease-ms",
        "1500",
        "--poll-ms",
        "200",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_workers_late_outcome_is_rejected() {
    let Some(db) = Database::create().await else {
        return;
    };
    let ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(err) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the network-partition test: cannot make a network namespace here: {err}"
            );
            return;
        }
    };
    let logs = tempfile::tempdir().unwrap();
    let pg_target = {
        let config: errand_postgres::PgConfig = db.url.parse().unwrap();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!("127.0.0.1:{port}")
    };
    let listener = TcpListener::bind(format!("{}:0", ns.host_ip))
        .await
        .unwrap();
    let forward_port = listener.local_addr().unwrap().port();
    tokio::spawn(forward(listener, pg_target));
    let user = db
        .url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .unwrap_or("postgres");
    let remote_url = format!(
        "postgres://{user}@{}:{forward_port}/{}",
        ns.host_ip, db.name
    );

    let store = db.store().await;
    let job = errand::Store::submit(
        &store,
        errand::NewJob::new("demo", "sleep", json!({"secs": 3, "steps": 3}))
            .queue("partition")
            .max_attempts(3),
    )
    .await
    .unwrap()
    .job_id;
    let exe = env!("CARGO_BIN_EXE_errand");
    let mut processes = Processes(vec![Command::new("ip")
        .args(["netns", "exec", &ns.name, exe])
        .args(worker_args(&remote_url, "cut-off"))
        .env("ERRAND_LOG", "info")
        .env("ERRAND_PG_POOL_SIZE", "4")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(logs.path().join("cut-off.log")).unwrap())
        .spawn()
        .unwrap()]);
    let (pg, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let state = async || -> (String, Option<String>, i32) {
        let row = pg
            .query_one(
                "SELECT status, worker_id, attempt FROM errand_jobs WHERE id = $1",
                &[&job.as_str()],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    let started = Instant::now();
    loop {
        let (status, worker, _) = state().await;
        if status == "running" && worker.as_deref() == Some("cut-off") {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!("the cut-off worker never started the job");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    ns.cut();
    processes.0.push(
        Command::new(exe)
            .args(worker_args(&db.url, "rescuer"))
            .env("ERRAND_LOG", "info")
            .env("ERRAND_PG_POOL_SIZE", "4")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.path().join("rescuer.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        let (status, worker, attempt) = state().await;
        if status == "completed" {
            assert_eq!(worker.as_deref(), Some("rescuer"));
            assert_eq!(attempt, 2, "the cut-off attempt counted");
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!("the rescuer never completed the job");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The link comes back: the cut-off worker's writes arrive late and are fenced out.
    ns.restore();
    let log = logs.path().join("cut-off.log");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("outcome not recorded") || text.contains("lost the lease") {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!("the cut-off worker never noticed:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, worker, _) = state().await;
    assert_eq!(
        (status.as_str(), worker.as_deref()),
        ("completed", Some("rescuer")),
        "the late write changed nothing"
    );
    let results: i64 = pg
        .query_one(
            "SELECT count(*) FROM errand_events e JOIN errand_jobs j ON e.job_seq = j.seq WHERE j.id = $1 AND e.kind = 'result'",
            &[&job.as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(results, 1, "exactly one outcome");
}
