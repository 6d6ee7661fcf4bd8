//! Jobs by command and status, kept by the writes so that reading them
//! costs the same at ten million jobs as at ten thousand: each commit adds
//! what its events moved, each prune takes away what it deletes.

use std::collections::BTreeMap;

use errand_core::{JobEvent, JobStatus};

/// A change to one count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountDelta {
    pub app: String,
    pub command: String,
    pub status: JobStatus,
    pub delta: i64,
}

/// What `events` (one commit's) move, summed: one delta per count that
/// changed, none for moves that cancel out.
pub fn count_deltas<'a>(events: impl IntoIterator<Item = &'a JobEvent>) -> Vec<CountDelta> {
    let mut sums: BTreeMap<(&str, &str, JobStatus), i64> = BTreeMap::new();
    for event in events {
        let Some(moved) = event.status_move() else {
            continue;
        };
        let (app, command) = (event.app.as_str(), event.command.as_str());
        if let Some(from) = moved.from {
            *sums.entry((app, command, from)).or_default() -= 1;
        }
        *sums.entry((app, command, moved.to)).or_default() += 1;
    }
    collect(sums)
}

fn collect(sums: BTreeMap<(&str, &str, JobStatus), i64>) -> Vec<CountDelta> {
    sums.into_iter()
        .filter(|(_, delta)| *delta != 0)
        .map(|((app, command, status), delta)| CountDelta {
            app: app.to_owned(),
            command: command.to_owned(),
            status,
            delta,
        })
        .collect()
}

/// Counts read back, as [`CommandStats::counts`](crate::CommandStats)
/// wants them: every status of every command present, commands with no
/// job left dropped.
pub fn by_command(
    rows: impl IntoIterator<Item = (String, String, String, i64)>,
) -> BTreeMap<(String, String), BTreeMap<String, u64>> {
    let mut by_command: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    for (app, command, status, count) in rows {
        let counts = by_command.entry((app, command)).or_insert_with(|| {
            JobStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect()
        });
        counts.insert(status, count.max(0) as u64);
    }
    by_command.retain(|_, counts| counts.values().any(|n| *n > 0));
    by_command
}

/// How many of the most recently finished jobs (of all commands) the
/// run-time figures are taken from: a window that costs the same to read
/// however many jobs the table holds.
pub const RUN_TIME_WINDOW: i64 = 10_000;

/// The stats of every command from what a store read: the counts, the run
/// times (seconds) in the window of recently finished jobs, and the age
/// (seconds) of each command's oldest job ready to run.
pub fn assemble(
    counts: BTreeMap<(String, String), BTreeMap<String, u64>>,
    run_times: impl IntoIterator<Item = (String, String, f64)>,
    oldest_ready: impl IntoIterator<Item = (String, String, f64)>,
) -> Vec<crate::CommandStats> {
    let mut runs: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (app, command, secs) in run_times {
        runs.entry((app, command)).or_default().push(secs);
    }
    let oldest: BTreeMap<(String, String), f64> = oldest_ready
        .into_iter()
        .map(|(app, command, age)| ((app, command), age))
        .collect();
    counts
        .into_iter()
        .map(|(key, counts)| {
            let mut run_times = runs.remove(&key).unwrap_or_default();
            run_times.sort_by(f64::total_cmp);
            let completed = counts.get("completed").copied().unwrap_or(0);
            let failed = counts.get("failed").copied().unwrap_or(0);
            let oldest_new_age_secs = oldest.get(&key).copied();
            let (app, command) = key;
            crate::CommandStats {
                app,
                command,
                counts,
                mean_run_secs: (!run_times.is_empty())
                    .then(|| run_times.iter().sum::<f64>() / run_times.len() as f64),
                p50_run_secs: crate::nearest_rank(&run_times, 0.50),
                p95_run_secs: crate::nearest_rank(&run_times, 0.95),
                failure_rate: (completed + failed > 0)
                    .then(|| failed as f64 / (completed + failed) as f64),
                oldest_new_age_secs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::{Change, JobId, Timestamp};

    fn event(command: &str, change: Change) -> JobEvent {
        JobEvent {
            id: 1,
            job_id: JobId::from("j".to_owned()),
            seq: 1,
            kind: change.kind(),
            status: change.status(),
            app: "t".into(),
            command: command.into(),
            data: change.data(),
            at: Timestamp::from_micros(0),
        }
    }

    #[test]
    fn moves_that_cancel_out_leave_no_delta() {
        let run_at = Timestamp::from_micros(0);
        let events = [
            event("a", Change::Submitted { run_at }),
            event("a", Change::Submitted { run_at }),
            event(
                "a",
                Change::Claimed {
                    attempt: 1,
                    worker_id: "w".into(),
                },
            ),
            event(
                "a",
                Change::Completed {
                    attempt: 1,
                    result: serde_json::json!(1),
                },
            ),
            event("b", Change::CancelRequested),
        ];
        let deltas = count_deltas(&events);
        let seen: Vec<(&str, JobStatus, i64)> = deltas
            .iter()
            .map(|d| (d.command.as_str(), d.status, d.delta))
            .collect();
        assert_eq!(
            seen,
            vec![("a", JobStatus::New, 1), ("a", JobStatus::Completed, 1)]
        );
    }
}
