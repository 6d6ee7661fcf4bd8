//! A process whose stderr's reader has gone (`errand worker 2>&1 | tee
//! w.log`, then Ctrl-C kills `tee` too) still obeys SIGTERM and SIGINT and
//! exits cleanly; a client command whose stdout's reader has gone ends
//! quietly, without a panic.

use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;
use common::serve::ERRAND;

/// Starts `errand ARGS` with stderr on a pipe nobody reads: the read end
/// is closed at once, so every write to stderr fails with EPIPE.
fn with_closed_stderr(dir: &std::path::Path, args: &[&str]) -> Child {
    // Close-on-exec, so the child does not hold the read end open itself.
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let child = Command::new(ERRAND)
        .args(args)
        .current_dir(dir)
        .env("ERRAND_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(write))
        .spawn()
        .unwrap();
    drop(read);
    child
}

/// Waits for the process to exit, at most `limit`; kills it after that.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn stops_on(signal: Signal, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = with_closed_stderr(dir.path(), args);
    // Let it start and write (and fail to write) its first log lines.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "errand {args:?} died of its closed stderr: {:?}",
        child.try_wait()
    );
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = exit_within(&mut child, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("errand {args:?} ignored {signal} with stderr closed"));
    assert!(status.success(), "errand {args:?} after {signal}: {status}");
}

#[test]
fn a_worker_with_a_closed_stderr_stops_on_sigterm() {
    stops_on(Signal::SIGTERM, &["worker", "--store", "sqlite://w.db"]);
}

#[test]
fn a_worker_with_a_closed_stderr_stops_on_sigint() {
    stops_on(Signal::SIGINT, &["worker", "--store", "sqlite://w.db"]);
}

#[test]
fn a_server_with_a_closed_stderr_stops_on_sigint() {
    let port = common::free_port().to_string();
    stops_on(
        Signal::SIGINT,
        &[
            "serve",
            "--store",
            "sqlite://s.db",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ],
    );
}

#[test]
fn a_client_command_whose_reader_left_ends_without_a_panic() {
    // stdout on a pipe whose reader has gone, as after `| head -1`.
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    drop(read);
    let out = Command::new(ERRAND)
        .args(["completions", "bash"])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Ended by SIGPIPE, like other Unix tools, not exit 101 from a panic.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(Signal::SIGPIPE as i32),
        "{stderr}"
    );
}
