//! Commands that are external programs, so a handler can be
//! written in any language.
//!
//! The protocol: the job's input JSON on stdin; the result JSON on stdout;
//! each stderr line that is `{"progress": ...}` or `{"log": ...}` JSON
//! becomes a progress or log event, any other line a log event. Exit code 0
//! is success, 75 (`EX_TEMPFAIL`) a retryable error, anything else a
//! permanent one.
//!
//! The program runs in a process group of its own. Cancel, timeout and
//! shutdown send SIGTERM to the whole group, then SIGKILL after
//! [`ExternalProgram::kill_grace`]; whatever the program leaves running in
//! its group when it exits is killed too, so no stray process outlives its
//! job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use errand_core::{error_kind, Progress};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::command::HandlerError;
use crate::context::JobContext;
use crate::registry::{DynCommand, HandlerFuture};

/// The exit code that asks for a retry (`EX_TEMPFAIL` from sysexits.h).
pub const EXIT_RETRYABLE: i32 = 75;

/// Longest stderr line kept; the rest of a longer line is dropped.
const MAX_STDERR_LINE: usize = 64 * 1024;

/// Plain stderr lines that arrive together go in one log event, up to this
/// size: a chatty program costs the store one write per burst it prints,
/// not one per line.
const LOG_BATCH_BYTES: usize = 16 * 1024;

/// Most stderr text logged per attempt; past it, one line says how much
/// more there was (the store is not a log archive).
const MAX_LOGGED_BYTES: usize = 1024 * 1024;

/// How to start one external command's program.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalProgram {
    /// The program and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Variables set for the program, over the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the worker's.
    pub clear_env: bool,
    /// The working directory; the worker's when `None`.
    pub cwd: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when the job is stopped.
    pub kill_grace: Duration,
    /// Most bytes read from stdout; more fails the job.
    pub max_output_bytes: usize,
}

impl ExternalProgram {
    pub fn new(argv: Vec<String>) -> Self {
        Self {
            argv,
            env: BTreeMap::new(),
            clear_env: false,
            cwd: None,
            kill_grace: Duration::from_secs(5),
            max_output_bytes: 1024 * 1024,
        }
    }
}

impl DynCommand for ExternalProgram {
    fn call(&self, input: Value, ctx: JobContext) -> HandlerFuture {
        let program = self.clone();
        Box::pin(async move { program.run(input, ctx).await })
    }
}

/// How the program's run ended, as far as the handler can tell.
enum Ended {
    Exited(ExitStatus),
    Stopped,
}

impl ExternalProgram {
    async fn run(self, input: Value, ctx: JobContext) -> Result<Value, HandlerError> {
        let mut child = self.spawn(&ctx)?;
        let group = ProcessGroup::of(&child)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // A program that never reads its input must not block the rest.
        let input = serde_json::to_vec(&input).expect("a JSON value serializes");
        tokio::spawn(async move {
            let mut stdin = stdin;
            let _ = stdin.write_all(&input).await;
        });
        let output = read_output(stdout, self.max_output_bytes, &group);
        let last_line = forward_stderr(stderr, &ctx);
        let ended = async {
            let ended = tokio::select! {
                status = child.wait() => Ended::Exited(status.map_err(|e| {
                    HandlerError::retryable(format!("cannot wait for {}: {e}", self.argv[0]))
                })?),
                () = ctx.canceled() => {
                    group.terminate(self.kill_grace, &mut child).await;
                    Ended::Stopped
                }
            };
            // Whatever it left behind would hold its pipes open.
            group.kill();
            Ok::<_, HandlerError>(ended)
        };
        let (ended, output, last_line) = tokio::join!(ended, output, last_line);
        group.disarm();
        let status = match ended? {
            Ended::Exited(status) => status,
            Ended::Stopped => return Err(HandlerError::canceled()),
        };
        let output = output?;
        let said = last_line
            .map(|line| format!(": {line}"))
            .unwrap_or_default();
        match status.code() {
            Some(0) => parse_result(&output),
            Some(EXIT_RETRYABLE) => Err(HandlerError::retryable(format!(
                "{} exited with code {EXIT_RETRYABLE} (retryable){said}",
                self.argv[0]
            ))),
            Some(code) => Err(HandlerError::permanent(format!(
                "{} exited with code {code}{said}",
                self.argv[0]
            ))),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let signal = status.signal().unwrap_or_default();
                Err(HandlerError::permanent(format!(
                    "{} was killed by signal {signal}{said}",
                    self.argv[0]
                )))
            }
        }
    }

    fn spawn(&self, ctx: &JobContext) -> Result<Child, HandlerError> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| HandlerError::permanent("the command's argv is empty"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if self.clear_env {
            command.env_clear();
        }
        command
            .envs(&self.env)
            .env("ERRAND_JOB_ID", ctx.job_id().to_string())
            .env("ERRAND_ATTEMPT", ctx.attempt().to_string());
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        die_with_this_process(&mut command);
        command.spawn().map_err(|e| {
            HandlerError::permanent(format!("cannot start {program}: {e}"))
                .with_kind(error_kind::HANDLER)
        })
    }
}

/// The program dies with its worker: SIGKILL the worker (or crash it) and
/// the kernel kills the program (the `orphans` watchdog kills the rest of
/// its group).
///
/// Linux sends the signal when the *thread* that forked the program ends;
/// the program is spawned from an async task, on one of the runtime's
/// worker threads, which live as long as the runtime.
#[cfg(target_os = "linux")]
fn die_with_this_process(command: &mut Command) {
    let parent = std::process::id() as i32;
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe system calls.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            // The worker may have died before the call above: then the
            // program was already re-parented and no signal will come.
            if nix::unistd::getppid().as_raw() != parent {
                return Err(std::io::Error::other(
                    "the worker exited while starting the program",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_this_process(_command: &mut Command) {}

/// The program's stdout, at most `limit` bytes; past that the group is
/// killed and the job fails.
async fn read_output(
    stdout: impl AsyncRead + Unpin,
    limit: usize,
    group: &ProcessGroup,
) -> Result<Vec<u8>, HandlerError> {
    let mut output = Vec::new();
    let mut capped = stdout.take(limit as u64 + 1);
    if let Err(e) = capped.read_to_end(&mut output).await {
        return Err(HandlerError::retryable(format!("cannot read stdout: {e}")));
    }
    if output.len() > limit {
        group.kill();
        return Err(HandlerError::permanent(format!(
            "the program wrote more than {limit} bytes to stdout (max_output_bytes)"
        ))
        .with_kind(error_kind::INVALID_OUTPUT));
    }
    Ok(output)
}

fn parse_result(output: &[u8]) -> Result<Value, HandlerError> {
    if output.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(output).map_err(|e| {
        let text = String::from_utf8_lossy(output);
        let start: String = text.trim().chars().take(80).collect();
        HandlerError::permanent(format!(
            "the program's stdout is not JSON ({e}); it began: {start:?}"
        ))
        .with_kind(error_kind::INVALID_OUTPUT)
    })
}

/// Turns stderr lines into progress and log events; returns the last plain
/// line, which says best why a program failed. Log lines already waiting
/// in the pipe are batched into one event; none waits for more output.
async fn forward_stderr(stderr: impl AsyncRead + Unpin, ctx: &JobContext) -> Option<String> {
    let mut reader = BufReader::with_capacity(64 * 1024, stderr);
    let mut last_plain = None;
    let mut line = Vec::new();
    let mut log = LogBatch::default();
    loop {
        if !reader.buffer().contains(&b'\n') {
            // About to wait for the program: what was read goes out first.
            log.flush(ctx).await;
        }
        line.clear();
        let read = (&mut reader)
            .take(MAX_STDERR_LINE as u64)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => {
                log.finish(ctx).await;
                return last_plain;
            }
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() == MAX_STDERR_LINE {
            skip_rest_of_line(&mut reader).await;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        // Store errors are the worker's to notice (fencing, heartbeats);
        // losing a log line must not fail the job.
        match StderrLine::parse(text) {
            StderrLine::Progress(progress) => {
                // Logged lines before a progress report stay before it.
                log.flush(ctx).await;
                let _ = ctx.report(progress).await;
            }
            StderrLine::Log(message) => log.push(ctx, &message).await,
            StderrLine::Plain => {
                log.push(ctx, text).await;
                last_plain = Some(text.chars().take(500).collect());
            }
        }
    }
}

/// Log lines waiting to be written together, and what the attempt has
/// logged so far.
#[derive(Default)]
struct LogBatch {
    text: String,
    /// Bytes of stderr kept so far, each line counted with its newline:
    /// what the log holds once its events are read back as lines, however
    /// the pipe's reads cut the output into events.
    kept: usize,
    dropped: usize,
}

impl LogBatch {
    async fn push(&mut self, ctx: &JobContext, line: &str) {
        let cost = line.len() + 1;
        if self.kept + cost > MAX_LOGGED_BYTES {
            self.dropped += cost;
            return;
        }
        self.kept += cost;
        if self.text.len() + line.len() > LOG_BATCH_BYTES {
            self.flush(ctx).await;
        }
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(line);
    }

    async fn flush(&mut self, ctx: &JobContext) {
        if self.text.is_empty() {
            return;
        }
        let _ = ctx.log(std::mem::take(&mut self.text)).await;
    }

    async fn finish(&mut self, ctx: &JobContext) {
        self.flush(ctx).await;
        if self.dropped > 0 {
            let note = format!(
                "[errand] {} more bytes of stderr were not logged (at most {MAX_LOGGED_BYTES} per attempt)",
                self.dropped
            );
            let _ = ctx.log(note).await;
        }
    }
}

async fn skip_rest_of_line(reader: &mut (impl AsyncBufReadExt + Unpin)) {
    loop {
        let Ok(buf) = reader.fill_buf().await else {
            return;
        };
        if buf.is_empty() {
            return;
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return;
            }
            None => {
                let all = buf.len();
                reader.consume(all);
            }
        }
    }
}

/// What one stderr line means.
#[derive(Debug, PartialEq)]
enum StderrLine {
    Progress(Progress),
    Log(String),
    Plain,
}

impl StderrLine {
    /// `{"progress": 0.5, "message": "..."}` or `{"progress": {"fraction":
    /// 0.5, "message": "...", "stage": "...", "data": ...}}`;
    /// `{"log": "..."}`; anything else is a plain line.
    fn parse(line: &str) -> Self {
        if !line.starts_with('{') {
            return Self::Plain;
        }
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(line) else {
            return Self::Plain;
        };
        let text = |value: Option<Value>| match value {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        if let Some(progress) = object.remove("progress") {
            let progress = match progress {
                Value::Number(fraction) => Progress {
                    fraction: fraction.as_f64(),
                    message: text(object.remove("message")),
                    stage: text(object.remove("stage")),
                    data: object.remove("data"),
                    updated: None,
                },
                Value::Object(mut fields) => Progress {
                    fraction: fields.remove("fraction").and_then(|f| f.as_f64()),
                    message: text(fields.remove("message")),
                    stage: text(fields.remove("stage")),
                    data: fields.remove("data"),
                    updated: None,
                },
                _ => return Self::Plain,
            };
            return Self::Progress(Progress {
                fraction: progress.fraction.map(|f| f.clamp(0.0, 1.0)),
                ..progress
            });
        }
        match object.remove("log") {
            Some(log) => Self::Log(text(Some(log)).unwrap_or_default()),
            None => Self::Plain,
        }
    }
}

/// The program's process group; killed with SIGKILL if the handler is
/// dropped (aborted past the worker's grace period) before it is disarmed.
struct ProcessGroup {
    id: Pid,
    armed: std::sync::atomic::AtomicBool,
}

impl ProcessGroup {
    fn of(child: &Child) -> Result<Self, HandlerError> {
        let pid = child
            .id()
            .ok_or_else(|| HandlerError::retryable("the program exited before it was tracked"))?;
        crate::orphans::guard(pid as i32);
        Ok(Self {
            id: Pid::from_raw(pid as i32),
            armed: true.into(),
        })
    }

    fn signal(&self, signal: Signal) {
        // ESRCH: the group is already gone, which is what we want.
        let _ = killpg(self.id, signal);
    }

    fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// SIGTERM, then SIGKILL if the leader has not exited after `grace`.
    async fn terminate(&self, grace: Duration, leader: &mut Child) {
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout(grace, leader.wait()).await.is_err() {
            tracing::warn!(
                ?grace,
                "the program ignored SIGTERM; killing its process group"
            );
            self.kill();
            let _ = leader.wait().await;
        }
    }

    fn disarm(&self) {
        self.armed
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed.load(std::sync::atomic::Ordering::Relaxed) {
            self.kill();
        }
        crate::orphans::release(self.id.as_raw());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_lines_take_a_number_or_an_object() {
        assert_eq!(
            StderrLine::parse(r#"{"progress": 0.5, "message": "half"}"#),
            StderrLine::Progress(Progress {
                fraction: Some(0.5),
                message: Some("half".into()),
                ..Progress::default()
            })
        );
        assert_eq!(
            StderrLine::parse(
                r#"{"progress": {"fraction": 2, "stage": "encode", "data": {"n": 1}}}"#
            ),
            StderrLine::Progress(Progress {
                fraction: Some(1.0),
                stage: Some("encode".into()),
                data: Some(json!({"n": 1})),
                ..Progress::default()
            })
        );
    }

    #[test]
    fn log_lines_and_plain_lines() {
        assert_eq!(
            StderrLine::parse(r#"{"log": "fetched 3 files"}"#),
            StderrLine::Log("fetched 3 files".into())
        );
        assert_eq!(
            StderrLine::parse("Traceback (most recent call last):"),
            StderrLine::Plain
        );
        assert_eq!(StderrLine::parse(r#"{"other": 1}"#), StderrLine::Plain);
        assert_eq!(
            StderrLine::parse(r#"{"progress": "soon"}"#),
            StderrLine::Plain
        );
        assert_eq!(StderrLine::parse("{not json"), StderrLine::Plain);
    }

    #[test]
    fn stdout_must_be_json_or_empty() {
        assert_eq!(parse_result(b" \n").unwrap(), Value::Null);
        assert_eq!(
            parse_result(b"{\"ok\": true}\n").unwrap(),
            json!({"ok": true})
        );
        let error = parse_result(b"hello world").unwrap_err();
        assert_eq!(error.kind, error_kind::INVALID_OUTPUT);
        assert!(!error.retryable);
        assert!(error.message.contains("not JSON"), "{}", error.message);
        assert!(error.message.contains("hello world"), "{}", error.message);
    }
}
