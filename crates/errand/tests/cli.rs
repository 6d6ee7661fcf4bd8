//! The `errand` CLI driven as a user drives it: a real `errand serve` with an
//! `errand.toml` declaring external commands, and the client subcommands
//! run as processes, checked by their output and exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::serve::{errand_in, json, text, Server, ERRAND};

/// Exit codes (docs/cli.md).
const JOB_FAILED: i32 = 3;
const JOB_CANCELED: i32 = 4;
const REJECTED: i32 = 5;
const UNREACHABLE: i32 = 6;

const CONFIG: &str = r#"
[worker]
max_tasks = 4

[commands."ext.upper"]
description = "Upper-cases its input's text"
argv = ["sh", "-c", "tr a-z A-Z"]
input_schema = { type = "object", required = ["text"], properties = { text = { type = "string" } } }

[commands."ext.garbage"]
argv = ["sh", "-c", "echo 'this is not json'"]

[commands."ext.flaky"]
# Exit 75 (EX_TEMPFAIL) on the first attempt asks for a retry.
argv = ["sh", "-c", "if [ \"$ERRAND_ATTEMPT\" = 1 ]; then echo 'not yet' >&2; exit 75; fi; echo \"{\\\"attempt\\\": $ERRAND_ATTEMPT}\""]
retry = { max_attempts = 3, wait_strategy = "fixed", wait_time = 0.1, wait_min = 0.1 }

[commands."ext.forever"]
# A program that ignores SIGTERM, with a child of its own: cancel must end
# both.
argv = ["sh", "-c", "trap '' TERM; sleep 600 & echo $$ $! > \"pids-$ERRAND_JOB_ID\"; wait"]
kill_grace_secs = 0.3

[commands."ext.progress"]
argv = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo \"{\\\"progress\\\": 0.$i, \\\"message\\\": \\\"step $i\\\"}\" >&2; sleep 0.4; done; echo '{\"done\": true}'"]
"#;

/// `errand serve` in a folder of its own, with [`CONFIG`].
fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("errand.toml"), CONFIG).unwrap();
    Server::start_in(dir, &[])
}

#[test]
fn submit_wait_prints_the_result_and_exits_zero() {
    let server = start();
    let out = server.errand(&[
        "submit",
        "ext.upper",
        "--input",
        r#"{"text": "quiet"}"#,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // `tr` upper-cased the JSON itself, keys included.
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["TEXT"], "QUIET");
}

#[test]
fn submit_wait_exits_3_with_the_reason_when_the_job_fails() {
    let server = start();
    let out = server.errand(&["submit", "ext.garbage", "--wait"]);
    assert_eq!(out.status.code(), Some(JOB_FAILED));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(stderr.contains("invalid_output"), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(stderr.contains("this is not json"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn refused_input_and_an_unreachable_server_have_their_own_exit_codes() {
    let server = start();
    // Fails the command's schema: the server's 422 names the field.
    let out = server.errand(&["submit", "ext.upper", "--input", r#"{"text": 5}"#]);
    assert_eq!(out.status.code(), Some(REJECTED));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid_input") && stderr.contains("text"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Not JSON at all: refused before it is sent.
    let out = server.errand(&["submit", "ext.upper", "--input", "{oops"]);
    assert_eq!(out.status.code(), Some(REJECTED));
    assert!(text(&out.stderr).contains("--input is not valid JSON"));
    let out = server.errand(&["status", "0000000000000000000000000000000f"]);
    assert_eq!(out.status.code(), Some(REJECTED));
    assert!(text(&out.stderr).contains("job_not_found"));

    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let out = errand_in(server.dir.path(), &closed, &["list"]);
    assert_eq!(out.status.code(), Some(UNREACHABLE));
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exit_code_75_requeues_the_job_and_the_next_attempt_completes() {
    let server = start();
    let id = server.submit("ext.flaky", "{}");
    let out = server.errand(&["watch", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job = server.job(&id);
    assert_eq!(job["status"], "completed");
    assert_eq!(job["attempt"], 2);
    assert_eq!(job["result"]["attempt"], 2);
    let events = json(&server.errand(&["events", &id, "--json"]));
    let failure = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "failure")
        .expect("the first attempt's failure is in the log");
    assert_eq!(failure["status"], "new", "re-queued, not failed: {failure}");
    let message = failure["data"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("75") && message.contains("not yet"),
        "{message}"
    );
    assert_eq!(failure["data"]["error"]["retryable"], true);
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

#[test]
fn cancel_kills_the_external_programs_whole_process_group() {
    let server = start();
    let id = server.submit("ext.forever", "{}");
    server.wait_for_status(&id, "running");
    let pids = program_pids(&server, &id);
    assert!(pids.iter().all(|pid| alive(*pid)));

    let out = server.errand(&["cancel", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cancel requested"));
    let out = server.errand(&["watch", &id]);
    assert_eq!(
        out.status.code(),
        Some(JOB_CANCELED),
        "{}",
        text(&out.stderr)
    );
    for _ in 0..250 {
        if pids.iter().all(|pid| !alive(*pid)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "still alive after cancel: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

/// Reads the program's two pids (the shell and its `sleep`) once written.
fn program_pids(server: &Server, id: &str) -> Vec<i32> {
    let pid_file: PathBuf = server.dir.path().join(format!("pids-{id}"));
    for _ in 0..500 {
        if let Ok(found) = std::fs::read_to_string(&pid_file) {
            let pids: Vec<i32> = found
                .split_whitespace()
                .map(|p| p.parse::<i32>().unwrap())
                .collect();
            if pids.len() == 2 {
                return pids;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the program never wrote its pids");
}

#[test]
fn a_sigkilled_worker_takes_its_program_and_the_programs_children_with_it() {
    let mut server = start();
    let id = server.submit("ext.forever", "{}");
    server.wait_for_status(&id, "running");
    let pids = program_pids(&server, &id);
    assert!(pids.iter().all(|pid| alive(*pid)));
    server.process.kill().unwrap();
    server.process.wait().unwrap();
    for _ in 0..250 {
        if pids.iter().all(|pid| !alive(*pid)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "outlived their SIGKILLed worker: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

#[test]
fn list_json_parses_and_filters_by_status_and_command() {
    let server = start();
    let done = server.submit("ext.upper", r#"{"text": "a"}"#);
    let failed = server.submit("ext.garbage", "{}");
    let waiting = server.submit("demo.sleep", r#"{"secs": 0}"#);
    // Far in the future: stays `new`.
    let later = server.errand(&["submit", "demo.echo", "--delay", "1h"]);
    let later = text(&later.stdout).trim().to_owned();
    server.wait_for_status(&done, "completed");
    server.wait_for_status(&failed, "failed");
    server.wait_for_status(&waiting, "completed");

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        let page = json(&server.errand(&all));
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let everything = ids(&[]);
    for id in [&done, &failed, &waiting, &later] {
        assert!(everything.contains(id));
    }
    assert_eq!(ids(&["--status", "failed"]), vec![failed.clone()]);
    assert_eq!(ids(&["--status", "new"]), vec![later.clone()]);
    assert_eq!(ids(&["--command", "ext.upper"]), vec![done.clone()]);
    let completed = ids(&["--status", "completed", "--app", "demo"]);
    assert_eq!(completed, vec![waiting.clone()]);
    assert_eq!(ids(&["--limit", "2"]).len(), 2);

    // The table names each job and its status.
    let table = text(&server.errand(&["list"]).stdout);
    assert!(table.starts_with("JOB"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&failed) && l.contains("failed")),
        "{table}"
    );
    // A bad filter value is refused by the CLI with the choices.
    let out = server.errand(&["list", "--status", "done"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("completed"));

    // Tags and context values given at submit find the job again.
    let submit = |extra: &[&str]| {
        let mut args = vec!["submit", "demo.echo", "--delay", "1h"];
        args.extend_from_slice(extra);
        let out = server.errand(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let podcast = submit(&[
        "--tag",
        "podcast",
        "--tag",
        "urgent",
        "--context",
        r#"{"notebook_id": 42}"#,
    ]);
    let other = submit(&["--tag", "podcast", "--context", r#"{"notebook_id": 7}"#]);
    assert_eq!(ids(&["--tag", "podcast"]), vec![other, podcast.clone()]);
    assert_eq!(
        ids(&["--tag", "podcast", "--context", "notebook_id=42"]),
        vec![podcast.clone()]
    );
    assert_eq!(ids(&["--tag", "podcast", "--tag", "urgent"]), vec![podcast]);
    let out = server.errand(&["list", "--context", "notebook_id"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("KEY=VALUE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn stats_commands_and_workers_answer_in_json_and_tables() {
    let server = start();
    let id = server.submit("ext.upper", r#"{"text": "a"}"#);
    server.wait_for_status(&id, "completed");
    let commands = json(&server.errand(&["commands", "--json"]));
    let names: Vec<String> = commands["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}.{}",
                c["app"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    for name in ["ext.upper", "ext.flaky", "demo.echo"] {
        assert!(names.contains(&name.to_owned()), "{names:?}");
    }
    let stats = json(&server.errand(&["stats", "--json"]));
    let upper = stats["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["command"] == "upper")
        .unwrap();
    assert_eq!(upper["counts"]["completed"], 1);
    let workers = json(&server.errand(&["workers", "--json"]));
    assert_eq!(
        workers["workers"][0]["slots"], 4,
        "max_tasks from errand.toml"
    );
    let table = text(&server.errand(&["commands"]).stdout);
    assert!(table.contains("Upper-cases its input's text"), "{table}");
}

#[test]
fn prune_deletes_finished_jobs_and_migrate_prepares_a_new_store() {
    let server = start();
    let id = server.submit("ext.upper", r#"{"text": "a"}"#);
    server.wait_for_status(&id, "completed");
    let out = server.errand(&["prune", "--older-than", "0s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("deleted 1 finished job"),
        "{}",
        text(&out.stdout)
    );
    let out = server.errand(&["status", &id]);
    assert_eq!(out.status.code(), Some(REJECTED));

    let out = server.errand(&["prune", "--older-than", "soon"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad duration is a usage error"
    );

    let fresh = server.dir.path().join("fresh.db");
    let store = format!("sqlite://{}", fresh.display());
    let out = server.errand(&["migrate", "--store", &store]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let version = format!("schema version {}", errand_sqlite::SCHEMA_VERSION);
    assert!(
        text(&out.stdout).contains(&version),
        "{}",
        text(&out.stdout)
    );
    assert!(fresh.exists());
}

#[test]
fn config_layers_flags_over_environment_over_file_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("errand.toml"),
        "api_token = \"file-token\"\nstore = \"postgres://u:hunter2@db/q\"\n[worker]\nmax_tasks = 3\nlease_ms = 9000\n",
    )
    .unwrap();
    let config = |env: &[(&str, &str)], args: &[&str]| -> toml::Table {
        let out = Command::new(ERRAND)
            .arg("config")
            .args(args)
            .current_dir(dir.path())
            .env_remove("ERRAND_API_TOKEN")
            .env_remove("ERRAND_MAX_TASKS")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(
            !shown.contains("hunter2") && !shown.contains("file-token"),
            "{shown}"
        );
        shown.parse().unwrap()
    };
    let max_tasks = |table: &toml::Table| table["worker"]["max_tasks"].as_integer().unwrap();
    assert_eq!(max_tasks(&config(&[], &[])), 3);
    assert_eq!(max_tasks(&config(&[("ERRAND_MAX_TASKS", "4")], &[])), 4);
    let both = config(&[("ERRAND_MAX_TASKS", "4")], &["--max-tasks", "6"]);
    assert_eq!(max_tasks(&both), 6);
    assert_eq!(both["worker"]["lease_ms"].as_integer(), Some(9000));
    assert_eq!(both["api_token"].as_str(), Some("[redacted]"));

    // A mistake in the file is named, with a non-zero exit.
    std::fs::write(dir.path().join("errand.toml"), "[worker]\nmax_taks = 3\n").unwrap();
    let out = Command::new(ERRAND)
        .arg("config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_taks"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_latency_load_offers_the_chosen_rate_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(ERRAND)
        .args([
            "bench",
            "latency-load",
            "--load-rate",
            "200",
            "--load-secs",
            "1",
        ])
        .args(["--runs", "1", "--json"])
        .current_dir(dir.path())
        .env("ERRAND_LOG", "warn")
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(text(&out.stdout).lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(report["workload"], "latency-load (200/s)", "{report}");
    assert_eq!(
        report["store"].as_str().map(|s| s.starts_with("sqlite")),
        Some(true)
    );
    // The rate offered is the one asked for, not half of a measured drain.
    assert_eq!(report["jobs_per_sec"].as_f64(), Some(200.0), "{report}");
    assert_eq!(
        (report["lost"].as_u64(), report["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        report["p99_ms"].as_f64().is_some_and(|p| p > 0.0),
        "{report}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(ERRAND)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let script = text(&out.stdout);
        assert!(
            script.contains("submit") && script.contains("--follow"),
            "{shell}"
        );
    }
}

/// A tmux session on a private socket, for what only a terminal shows.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn available() -> bool {
        Command::new("tmux").arg("-V").output().is_ok()
    }

    fn start(dir: &Path, command: &str) -> Self {
        let socket = dir.join("tmux.sock");
        let started = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-x", "120", "-y", "20", command])
            .status()
            .unwrap();
        assert!(started.success());
        Self { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["capture-pane", "-p"])
            .output()
            .unwrap();
        text(&out.stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}

/// The percentage on the progress bar's line, if the bar is on screen.
fn bar_percent(screen: &str) -> Option<u32> {
    let line = screen
        .lines()
        .find(|l| l.contains('[') && l.contains("]"))?;
    let end = line.find('%')?;
    line[..end].split_whitespace().last()?.parse().ok()
}

#[test]
fn follow_draws_a_progress_bar_that_advances_and_ends_with_the_result() {
    if !Tmux::available() {
        assert!(
            std::env::var("CI").is_err(),
            "tmux is missing; .ci/run installs it"
        );
        eprintln!("SKIPPED: the terminal test needs tmux");
        return;
    }
    let server = start();
    let command = format!(
        "ERRAND_URL={} {ERRAND} submit ext.progress --follow; echo EXIT=$?; sleep 60",
        server.url
    );
    let tmux = Tmux::start(server.dir.path(), &command);
    let mut seen = Vec::new();
    let mut screen = String::new();
    for _ in 0..1000 {
        screen = tmux.screen();
        if let Some(percent) = bar_percent(&screen) {
            if seen.last() != Some(&percent) {
                seen.push(percent);
            }
        }
        if screen.contains("EXIT=") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains("\"done\": true"),
        "the result is printed:\n{screen}"
    );
    assert!(screen.contains("completed"), "{screen}");
    // The bar moved through several values, never backwards, to 100%.
    assert!(
        seen.len() >= 3,
        "the bar did not advance: {seen:?}\n{screen}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100), "{seen:?}\n{screen}");
}

#[test]
fn the_example_python_and_shell_handlers_run_as_documented() {
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "python3 is missing");
        eprintln!("SKIPPED: the example Python handler needs python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/external/errand.toml");
    let store = format!("sqlite://{}", dir.path().join("examples.db").display());
    let config = config.to_str().unwrap();
    let server = Server::start_in(dir, &["--config", config, "--store", &store]);

    let out = server.errand(&[
        "submit",
        "media.transcribe",
        "--input",
        r#"{"path": "talk.mp3", "chunks": 3, "secs_per_chunk": 0, "simulate_outage": true}"#,
        "--wait",
        "--json",
    ]);
    let job = json(&out);
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempt"], 2, "the outage (exit 75) was retried: {job}");
    assert_eq!(job["result"]["text"], "chunk1 chunk2 chunk3");
    // The schema from errand.toml is enforced by the server.
    let out = server.errand(&[
        "submit",
        "media.transcribe",
        "--input",
        r#"{"language": "xx"}"#,
    ]);
    assert_eq!(out.status.code(), Some(REJECTED), "{}", text(&out.stderr));

    let out = server.errand(&[
        "submit",
        "demo_sh.count",
        "--input",
        r#"{"to": 3}"#,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["counted"], 3);
}

/// A paused queue takes submits and starts nothing; resumed, its job runs.
#[test]
fn pause_holds_a_queues_jobs_until_resume() {
    let server = start();
    let out = server.errand(&["pause", "default"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("default paused"),
        "{}",
        text(&out.stdout)
    );
    let out = server.errand(&["submit", "ext.upper", "--input", r#"{"text": "held"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    std::thread::sleep(Duration::from_millis(1500));
    let status = json(&server.errand(&["status", &id, "--json"]));
    assert_eq!(status["status"], "new", "nothing starts in a paused queue");
    let queues = json(&server.errand(&["queues", "--json"]));
    assert_eq!(queues["queues"][0]["name"], "default");
    assert_eq!(queues["queues"][0]["paused"], true);
    assert_eq!(queues["queues"][0]["new"], 1);

    let out = server.errand(&["resume", "default"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = server.errand(&["watch", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json(&out)["result"]["TEXT"], "HELD");
}
