//! Schema migrations, embedded in the binary and applied on open.

use rusqlite::Connection;

/// Each entry moves the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_jobs.sql"),
    include_str!("migrations/0002_command_output_schema.sql"),
    include_str!("migrations/0003_checkpoints.sql"),
    include_str!("migrations/0004_paused_queues.sql"),
    include_str!("migrations/0005_schedules.sql"),
    include_str!("migrations/0006_limits.sql"),
    include_str!("migrations/0007_job_counts.sql"),
    include_str!("migrations/0008_labels.sql"),
    include_str!("migrations/0009_webhooks.sql"),
];

/// The schema version this build brings a database to.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the database to the newest schema in one transaction, tracked by
/// SQLite's `user_version`. Refuses a database newer than this binary.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<MigrationOutcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > MIGRATIONS.len() {
        return Ok(MigrationOutcome::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for sql in &MIGRATIONS[current..] {
        tx.execute_batch(sql)?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))?;
    tx.commit()?;
    Ok(MigrationOutcome::UpToDate {
        applied: MIGRATIONS.len() - current,
    })
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MigrationOutcome {
    UpToDate { applied: usize },
    TooNew { found: usize, known: usize },
}

/// How SQLite plans `sql` on a fresh database of this schema (its
/// parameters bound to NULL), one line per step: for tests of plans.
#[cfg(test)]
pub(crate) fn query_plan(sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("plan.db")).unwrap();
    migrate(&mut conn).unwrap();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    let rows = stmt
        .query_map(rusqlite::params_from_iter(nulls), |row| {
            row.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows.join("\n")
}
