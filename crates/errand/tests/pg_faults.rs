//! Faults with real processes on PostgreSQL: a worker SIGKILLed mid-run,
//! and the database itself restarted mid-run. Needs `ERRAND_TEST_PG_URL`;
//! the restart test also needs `ERRAND_TEST_PG_RESTART=1` and a local
//! cluster it may restart (`pg_ctlcluster`), as `.ci/run` provides.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::NoTls;

mod common;
use common::Processes;
use common::{free_port, Database};

/// The restart test stops the whole cluster: the tests here take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn worker(db: &Database, id: &str, log: std::path::PathBuf) -> Child {
    Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "worker",
            "--store",
            &db.url,
            "--max-tasks",
            "4",
            "--worker-id",
            id,
        ])
        .args([
            "--heartbeat-ms",
            "200",
            "--lease-ms",
            "1500",
            "--poll-ms",
            "200",
        ])
        .env("ERRAND_LOG", "info")
        .env("ERRAND_PG_POOL_SIZE", "4")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn count(pg: &tokio_postgres::Client, sql: &str) -> i64 {
    pg.query_one(sql, &[]).await.unwrap().get(0)
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn submit_sleeps(db: &Database, count: usize, secs: f64) {
    let store = db.store().await;
    let jobs = (0..count)
        .map(|_| {
            errand::NewJob::new("demo", "sleep", json!({"secs": secs, "steps": 2})).max_attempts(5)
        })
        .collect();
    errand::Store::submit_batch(&store, jobs).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_jobs_run_again_within_the_lease() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(db) = Database::create().await else {
        return;
    };
    let logs = tempfile::tempdir().unwrap();
    submit_sleeps(&db, 12, 0.5).await;
    let (pg, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut doomed = Processes(vec![worker(&db, "doomed", logs.path().join("doomed.log"))]);
    wait_until(
        "the doomed worker runs 4 jobs",
        Duration::from_secs(60),
        async || {
            count(
                &pg,
                "SELECT count(*) FROM errand_jobs WHERE status = 'running'",
            )
            .await
                == 4
        },
    )
    .await;
    let killed: Vec<String> = pg
        .query(
            "SELECT id FROM errand_jobs WHERE status = 'running' AND worker_id = 'doomed'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    doomed.0[0].kill().unwrap(); // SIGKILL
    let _rescuer = Processes(vec![worker(
        &db,
        "rescuer",
        logs.path().join("rescuer.log"),
    )]);
    wait_until("every job completes", Duration::from_secs(90), async || {
        count(
            &pg,
            "SELECT count(*) FROM errand_jobs WHERE status = 'completed'",
        )
        .await
            == 12
    })
    .await;
    for id in &killed {
        let row = pg
            .query_one(
                "SELECT j.attempt, j.worker_id, (SELECT count(*) FROM errand_events e WHERE e.job_seq = j.seq AND e.kind = 'result'), \
                 (SELECT count(*) FROM errand_events e WHERE e.job_seq = j.seq AND e.data->'error'->>'kind' = 'lease_expired') \
                 FROM errand_jobs j WHERE j.id = $1",
                &[id],
            )
            .await
            .unwrap();
        let (attempt, worker, results, expiries): (i32, String, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert!(attempt >= 2, "the killed attempt of {id} was counted");
        assert_eq!(worker, "rescuer");
        assert_eq!(
            (results, expiries),
            (1, 1),
            "one outcome, and the lost attempt in the history"
        );
    }
    let doubles = count(
        &pg,
        "SELECT count(*) FROM (SELECT job_seq FROM errand_events WHERE kind = 'result' GROUP BY job_seq HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(doubles, 0);
}

/// An errand process (`args` start with its subcommand) on the `unused`
/// queue that gives up after one second without its store.
fn quitting(db: &Database, logs: &tempfile::TempDir, log: &str, args: &[&str]) -> Child {
    giving_up_after(
        &db.url,
        "1",
        logs,
        log,
        &[args, &["--poll-ms", "200"]].concat(),
    )
}

/// An errand process on `store`'s `unused` queue that gives up after
/// `limit` seconds without its store, logging to `log`.
fn giving_up_after(
    store: &str,
    limit: &str,
    logs: &tempfile::TempDir,
    log: &str,
    args: &[&str],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(args)
        .args(["--store", store, "--queue", "unused"])
        .args(["--store-unavailable-limit-secs", limit])
        .env("ERRAND_LOG", "info")
        .env("ERRAND_PG_POOL_SIZE", "2")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(logs.path().join(log)).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `process` to exit; kills it and fails after `limit`.
async fn exit_of(mut process: Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = process.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = process.kill();
            panic!("the process is still running after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts the local cluster, and makes sure it is up again whatever
/// happens in the test.
struct Cluster {
    version: String,
}

impl Cluster {
    fn find() -> Option<Self> {
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .max()?;
        Command::new("pg_ctlcluster").arg("--help").output().ok()?;
        Some(Self { version })
    }

    fn ctl(&self, action: &str) {
        let status = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", action])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctlcluster {action} failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", "start"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_loses_nothing_and_submits_fail_fast_meanwhile() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(db) = Database::create().await else {
        return;
    };
    // Stopping the server disturbs whatever else uses it: only when asked.
    if std::env::var("ERRAND_TEST_PG_RESTART").is_err() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: the PostgreSQL restart test (set ERRAND_TEST_PG_RESTART=1 to let it restart the local cluster)\n",
        );
        return;
    }
    let Some(cluster) = Cluster::find() else {
        panic!("ERRAND_TEST_PG_RESTART is set but there is no local cluster to restart (pg_ctlcluster)");
    };
    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut processes = Processes(vec![Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "serve",
            "--no-worker",
            "--store",
            &db.url,
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .env("ERRAND_LOG", "info")
        .env("ERRAND_PG_POOL_SIZE", "4")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(logs.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap()]);
    processes
        .0
        .push(worker(&db, "survivor", logs.path().join("worker.log")));
    // A worker told to give up after one second without its store, and a
    // whole server whose in-process worker is told the same: it must not go
    // on serving without its worker.
    let quitter = quitting(
        &db,
        &logs,
        "quitter.log",
        &["worker", "--worker-id", "quitter"],
    );
    let quitting_bind = format!("127.0.0.1:{}", free_port());
    let quitting_server = quitting(
        &db,
        &logs,
        "quitting-serve.log",
        &["serve", "--bind", &quitting_bind],
    );
    submit_sleeps(&db, 20, 0.3).await;
    let client = reqwest::Client::new();
    wait_until("the server is ready", Duration::from_secs(30), async || {
        client
            .get(format!("{base}/api/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    cluster.ctl("stop");
    let started = Instant::now();
    let response = client
        .post(format!("{base}/api/commands/jobs"))
        .json(&json!({"app": "demo", "command": "echo", "input": {}}))
        .send()
        .await
        .unwrap();
    let answered_in = started.elapsed();
    assert_eq!(
        response.status(),
        503,
        "a submit during the outage is refused, not hung"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");
    assert!(
        answered_in < Duration::from_secs(15),
        "answered after {answered_in:?}"
    );
    let ready = client
        .get(format!("{base}/api/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (process, log, what) in [
        (quitter, "quitter.log", "a worker"),
        (
            quitting_server,
            "quitting-serve.log",
            "errand serve whose worker gave up",
        ),
    ] {
        let status = exit_of(process, Duration::from_secs(60)).await;
        assert!(
            !status.success(),
            "{what} without its store past its limit exits non-zero, for its supervisor to restart it"
        );
        let log = std::fs::read_to_string(logs.path().join(log)).unwrap();
        assert!(log.contains("unreachable"), "{log}");
    }
    cluster.ctl("start");

    // Back: the server and the worker reconnect on their own.
    wait_until(
        "the server is ready again",
        Duration::from_secs(60),
        async || {
            client
                .get(format!("{base}/api/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let response = client
        .post(format!("{base}/api/commands/jobs"))
        .json(&json!({"app": "demo", "command": "echo", "input": {"after": "restart"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (pg, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    wait_until(
        "every job completes",
        Duration::from_secs(120),
        async || {
            count(
                &pg,
                "SELECT count(*) FROM errand_jobs WHERE status = 'completed'",
            )
            .await
                == 21
        },
    )
    .await;
    let doubles = count(
        &pg,
        "SELECT count(*) FROM (SELECT job_seq FROM errand_events WHERE kind = 'result' GROUP BY job_seq HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(doubles, 0, "no job has two outcomes");
    assert!(
        processes.0[1].try_wait().unwrap().is_none(),
        "the worker survived the outage"
    );
}

/// Forwards connections on `port` to the real database, from now on.
async fn start_forwarding(port: u16, to: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    })
}

/// A worker started before its database can be reached waits for it (as a
/// running worker does when it loses it), and starts working when it
/// comes; without it for longer than the limit, it exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_its_database_waits_for_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(db) = Database::create().await else {
        eprintln!("SKIPPED: set ERRAND_TEST_PG_URL to run the PostgreSQL fault tests");
        return;
    };
    let url = url::Url::parse(&db.url).unwrap();
    let real = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let port = free_port();
    let mut through_port = url.clone();
    through_port.set_port(Some(port)).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let start = |limit: &str, log: &str| {
        giving_up_after(through_port.as_str(), limit, &logs, log, &["worker"])
    };

    // Nothing there for longer than its limit: it gives up, non-zero.
    let gives_up = start("1", "gives-up.log");
    let status = exit_of(gives_up, Duration::from_secs(20)).await;
    assert!(!status.success());
    let log = std::fs::read_to_string(logs.path().join("gives-up.log")).unwrap();
    assert!(log.contains("retrying"), "{log}");

    // The database comes two seconds after the worker: it waits, then works.
    let waits = Processes(vec![start("60", "waits.log")]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _forwarding = start_forwarding(port, real).await;
    let (pg, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    wait_until(
        "the worker registers",
        Duration::from_secs(30),
        async || {
            // The table exists once the worker has migrated the database.
            pg.query_one("SELECT count(*) FROM errand_workers", &[])
                .await
                .is_ok_and(|row| row.get::<_, i64>(0) == 1)
        },
    )
    .await;
    drop(waits);
}
