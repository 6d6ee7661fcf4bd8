//! Where the process's log lines go, and what may never happen because of
//! them.
//!
//! Logging must neither panic nor block: a worker started as `errand worker
//! 2>&1 | tee w.log` whose `tee` dies (Ctrl-C kills the whole pipeline)
//! still has to hear SIGTERM, release its jobs and exit. So lines go
//! through a bounded in-memory queue to a thread of their own, which drops
//! them when the queue is full (stderr stalled) and ignores write errors
//! (stderr closed); the fmt layer's own error reports, which would go to
//! the same broken stderr with a panicking `eprintln!`, are off.

use std::io::{IsTerminal, Write};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

/// Lines queued for stderr before new ones are dropped.
const QUEUED_LINES: usize = 64 * 1024;

/// stderr, with write errors swallowed: nobody is left to tell.
struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the global subscriber (`ERRAND_LOG` filter, `ERRAND_LOG_FORMAT=json`
/// for JSON lines). Keep the guard until exit: dropping it flushes, waiting
/// a bounded time.
pub fn init() -> WorkerGuard {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ERRAND_LOG").unwrap_or_else(|_| "info".into());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("errand-log")
        .finish(QuietStderr);
    // Colours only for a person at a terminal, never in a log file.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .log_internal_errors(false);
    if std::env::var("ERRAND_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    guard
}

/// Client commands write to stdout for a pipeline (`errand list | head`):
/// when the reader goes away they end quietly, as Unix tools do, instead
/// of panicking on the failed write. Long-running processes keep SIGPIPE
/// ignored (Rust's default), so a closed stderr cannot kill a worker.
pub fn die_quietly_on_closed_stdout() {
    // SAFETY: restoring a signal's default disposition at start, before any
    // other thread of ours could rely on it; sockets are written with
    // MSG_NOSIGNAL by the standard library and never raise SIGPIPE.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

/// The last word of a failed command, on stderr if stderr is still there.
pub fn report_error(error: &anyhow::Error) {
    let _ = writeln!(anstream::stderr(), "errand: {error:#}");
}
