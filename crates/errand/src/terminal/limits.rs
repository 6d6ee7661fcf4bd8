//! `errand limits` and `errand limit set|rm`.

use std::time::Duration;

use errand::client::Client;
use errand_api::{CommandLimit, LimitRequest};

use super::render::Table;
use super::tables::print_table;
use super::Exit;

#[derive(clap::Subcommand, Debug)]
pub enum LimitCmd {
    /// Set (or replace) a command's limits, for every worker on every host.
    Set {
        /// The command, APP.NAME.
        command: String,
        /// Count per value of this path into each job (context.user_id,
        /// input.notebook_id); left out, the command's jobs count together.
        #[arg(long)]
        key: Option<String>,
        /// At most this many running at once (per key).
        #[arg(long)]
        max_running: Option<u32>,
        /// At most this many starts per --per (per key).
        #[arg(long, requires = "per")]
        max_starts: Option<u32>,
        /// The rate window (1m, 1h).
        #[arg(long, value_parser = humantime::parse_duration, requires = "max_starts")]
        per: Option<Duration>,
    },
    /// Lift a command's limits.
    Rm { command: String },
}

pub async fn run(client: &Client, command: LimitCmd) -> anyhow::Result<Exit> {
    match command {
        LimitCmd::Set {
            command,
            key,
            max_running,
            max_starts,
            per,
        } => {
            let request = LimitRequest {
                key,
                max_running,
                max_starts,
                per_secs: per.map(|d| d.as_secs_f64()),
            };
            let stored = client.set_limit(&command, &request).await?;
            println!("{}: {}", stored.command, describe(&stored));
        }
        LimitCmd::Rm { command } => {
            client.delete_limit(&command).await?;
            println!("{command}: no limits");
        }
    }
    Ok(Exit::Success)
}

/// `at most 2 running, 60 starts per 60s, per context.user_id`.
fn describe(limit: &CommandLimit) -> String {
    let mut parts = Vec::new();
    if let Some(n) = limit.max_running {
        parts.push(format!("at most {n} running"));
    }
    if let (Some(n), Some(secs)) = (limit.max_starts, limit.per_secs) {
        parts.push(format!("{n} starts per {secs}s"));
    }
    let scope = match &limit.key {
        Some(key) => format!("per {key}"),
        None => "for the command as a whole".to_owned(),
    };
    format!("{}, {scope}", parts.join(", "))
}

pub async fn list(client: &Client, json: bool) -> anyhow::Result<Exit> {
    let list = client.limits().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(Exit::Success);
    }
    let mut table = Table::new(vec!["COMMAND", "LIMIT"]);
    for limit in &list.limits {
        table.row(vec![limit.command.clone(), describe(limit)]);
    }
    print_table(&table, "no limits");
    Ok(Exit::Success)
}
