//! The client subcommands: what a person at a terminal (or a shell script)
//! uses to run, watch and manage work on a server.
//!
//! - `jobs`: submit, status, watch, cancel, retry.
//! - `follow`: the live progress bar fed by a job's SSE stream.
//! - `tables`: list, stats, commands, workers, events.
//! - `schedules`: list, set, delete, pause and resume schedules.
//! - `limits`: list, set and lift commands' limits.
//! - `render`: colours, relative times, column layout.

pub mod follow;
pub mod jobs;
pub mod limits;
pub mod render;
pub mod schedules;
pub mod tables;

use std::process::ExitCode;

use errand::client::ClientError;
use errand::{Job, JobStatus};

/// What `errand` exits with; scripts branch on these (docs/cli.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// Anything else that went wrong (bad configuration, I/O).
    Error = 1,
    // 2 is clap's: the command line itself is wrong.
    /// The job ended `failed`.
    JobFailed = 3,
    /// The job ended `canceled`.
    JobCanceled = 4,
    /// The server refused the request: invalid input, unknown command or
    /// job, illegal transition, missing token.
    Rejected = 5,
    /// The server (or its store) cannot be reached.
    Unreachable = 6,
    /// `--wait-timeout` passed before the job ended.
    StillRunning = 7,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

impl Exit {
    /// How a job that `--wait` or `watch` saw end makes the command exit.
    pub fn for_job(job: &Job) -> Self {
        match job.status {
            JobStatus::Completed => Self::Success,
            JobStatus::Failed => Self::JobFailed,
            JobStatus::Canceled => Self::JobCanceled,
            JobStatus::New | JobStatus::Running => Self::StillRunning,
        }
    }

    /// The exit code for an error a subcommand returned.
    pub fn for_error(error: &anyhow::Error) -> Self {
        if error.downcast_ref::<InputError>().is_some() {
            return Self::Rejected;
        }
        match error.downcast_ref::<ClientError>() {
            Some(e) if e.is_unavailable() => Self::Unreachable,
            Some(ClientError::Api { .. }) => Self::Rejected,
            _ => Self::Error,
        }
    }
}

/// Input the CLI refused before sending it (e.g. `--input` is not JSON).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);
