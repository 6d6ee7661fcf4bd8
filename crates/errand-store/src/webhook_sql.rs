//! The event filter of a webhook scan, written once from the core's rule
//! for both stores' SQL.

use errand_core::{EventKind, JobStatus, WebhookOn};

/// `AND …` conditions on an event `e` (`kind`, `status`) of a job whose
/// webhook's `on` is the SQL expression `on`: exactly the events
/// [`WebhookOn::wants`] delivers. Only errand's own names go in.
pub fn wanted_events_sql(on: &str) -> String {
    let quoted = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kinds = quoted(
        EventKind::ALL
            .into_iter()
            .filter(|k| WebhookOn::Status.wants(*k, JobStatus::Completed))
            .map(EventKind::as_str)
            .collect(),
    );
    let ends = quoted(
        JobStatus::ALL
            .into_iter()
            .filter(|s| WebhookOn::End.wants(EventKind::Status, *s))
            .map(JobStatus::as_str)
            .collect(),
    );
    format!(
        "AND e.kind IN ({kinds}) AND ({on} = '{status}' OR e.status IN ({ends}))",
        status = WebhookOn::Status.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_names_the_kinds_and_statuses_the_core_delivers() {
        assert_eq!(
            wanted_events_sql("x"),
            "AND e.kind IN ('status', 'result', 'failure') \
             AND (x = 'status' OR e.status IN ('completed', 'failed', 'canceled'))"
        );
    }
}
