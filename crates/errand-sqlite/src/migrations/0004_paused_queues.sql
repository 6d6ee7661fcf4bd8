-- errand's SQLite schema, version 4: queues paused for every worker.
CREATE TABLE paused_queues (
    queue TEXT PRIMARY KEY,
    paused_at INTEGER NOT NULL
) WITHOUT ROWID;
