//! `errand schedules` and `errand schedule set|rm|pause|resume`.

use errand::client::Client;
use errand::{Clock, SystemClock};
use errand_api::{MissedTicks, ScheduleInfo, ScheduleRequest, SubmitOptions};

use super::jobs::JobArgs;
use super::render::{relative, Table};
use super::tables::print_table;
use super::Exit;

#[derive(clap::Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Create a schedule, or replace its definition (same cron and time
    /// zone: its next run is kept).
    Set {
        /// The schedule's name.
        name: String,
        /// Five fields (minute hour day-of-month month day-of-week), or
        /// six with seconds first: "0 */15 * * * *".
        #[arg(long)]
        cron: String,
        /// The IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Ticks missed while no server ran: skip them, or run once.
        #[arg(long, value_enum, default_value = "skip")]
        missed: Missed,
        /// Store it paused.
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        job: Box<JobArgs>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a schedule (the jobs it enqueued stay).
    Rm { name: String },
    /// Pause a schedule: its ticks go by without a job.
    Pause { name: String },
    /// Resume a paused schedule from its next tick.
    Resume { name: String },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Missed {
    Skip,
    RunOnce,
}

pub async fn run(client: &Client, command: ScheduleCmd) -> anyhow::Result<Exit> {
    match command {
        ScheduleCmd::Set {
            name,
            cron,
            timezone,
            missed,
            paused,
            job,
            json,
        } => {
            let request = ScheduleRequest {
                cron,
                timezone: Some(timezone),
                missed: Some(match missed {
                    Missed::Skip => MissedTicks::Skip,
                    Missed::RunOnce => MissedTicks::RunOnce,
                }),
                paused: Some(paused),
                job: job.request(SubmitOptions::default())?,
            };
            let stored = client.put_schedule(&name, &request).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stored)?);
            } else {
                println!("{}", summary(&stored));
            }
        }
        ScheduleCmd::Rm { name } => {
            client.delete_schedule(&name).await?;
            println!("{name} deleted");
        }
        ScheduleCmd::Pause { name } => {
            println!("{}", summary(&client.pause_schedule(&name, true).await?))
        }
        ScheduleCmd::Resume { name } => {
            println!("{}", summary(&client.pause_schedule(&name, false).await?))
        }
    }
    Ok(Exit::Success)
}

/// One line: the name, its state and its next run.
fn summary(schedule: &ScheduleInfo) -> String {
    let state = if schedule.paused { "paused" } else { "active" };
    match schedule.next_run {
        Some(next) => format!("{} {state}, next run {next}", schedule.name),
        None => format!("{} {state}, no further run", schedule.name),
    }
}

pub async fn list(client: &Client, json: bool) -> anyhow::Result<Exit> {
    let list = client.schedules().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Success);
    }
    let now = SystemClock.now();
    let mut table = Table::new(vec![
        "SCHEDULE",
        "CRON",
        "ZONE",
        "COMMAND",
        "STATE",
        "NEXT RUN",
        "LAST JOB",
        "LAST ERROR",
    ]);
    for schedule in &list.schedules {
        let command = schedule.job["command"].as_str().unwrap_or("?").to_owned();
        table.row(vec![
            schedule.name.clone(),
            schedule.cron.clone(),
            schedule.timezone.clone(),
            command,
            if schedule.paused { "paused" } else { "active" }.to_owned(),
            schedule
                .next_run
                .map(|at| format!("{at} ({})", relative(at, now)))
                .unwrap_or_else(|| "never".into()),
            schedule
                .last_job_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            schedule.last_error.clone().unwrap_or_default(),
        ]);
    }
    print_table(&table, "no schedules");
    Ok(Exit::Success)
}
