-- errand's SQLite schema, version 7: jobs by command and status, kept by
-- the writer at each commit (one upsert per count a group moved), so that
-- the stats read costs the same however many jobs the table holds.
CREATE TABLE job_counts (
    app     TEXT NOT NULL,
    command TEXT NOT NULL,
    status  TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (app, command, status)
) WITHOUT ROWID;
-- The jobs already there, counted once.
INSERT INTO job_counts (app, command, status, n)
    SELECT app, command, status, count(*) FROM jobs GROUP BY app, command, status;
