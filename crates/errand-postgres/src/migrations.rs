//! Schema migrations, embedded and applied on open. An advisory lock makes
//! processes that start together take turns instead of racing.

use tokio_postgres::Client;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_jobs.sql"),
    include_str!("migrations/0002_idempotency_index.sql"),
    include_str!("migrations/0003_command_output_schema.sql"),
    include_str!("migrations/0004_checkpoints.sql"),
    include_str!("migrations/0005_paused_queues.sql"),
    include_str!("migrations/0006_schedules.sql"),
    include_str!("migrations/0007_limits.sql"),
    include_str!("migrations/0008_job_counts.sql"),
    include_str!("migrations/0009_labels.sql"),
    include_str!("migrations/0010_webhooks.sql"),
];

/// The schema version this build brings a database to.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Any constant unique to errand: the lock key of its migrations.
const MIGRATION_LOCK: i64 = 0x6572_7261_6e64; // "errand"

pub(crate) async fn migrate(client: &mut Client) -> Result<usize, String> {
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| e.to_string())?;
    // Created only where missing: CREATE ... IF NOT EXISTS would log a
    // NOTICE ("already exists, skipping") at every start.
    tx.batch_execute(
        "DO $$ BEGIN \
           IF to_regclass('errand_schema') IS NULL THEN \
             CREATE TABLE errand_schema (version integer NOT NULL); \
           END IF; \
         END $$; \
         INSERT INTO errand_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM errand_schema)",
    )
    .await
    .map_err(|e| e.to_string())?;
    let current: i32 = tx
        .query_one("SELECT version FROM errand_schema", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let current = current as usize;
    if current > MIGRATIONS.len() {
        return Err(format!(
            "the database has schema version {current}, newer than this errand knows ({}); upgrade errand",
            MIGRATIONS.len()
        ));
    }
    for sql in &MIGRATIONS[current..] {
        tx.batch_execute(sql).await.map_err(|e| e.to_string())?;
    }
    tx.execute(
        "UPDATE errand_schema SET version = $1",
        &[&(MIGRATIONS.len() as i32)],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(MIGRATIONS.len() - current)
}
