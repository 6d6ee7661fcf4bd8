-- errand's SQLite schema, version 6: cluster-wide limits per command.
-- A job of a limited command carries its limit key (`app.name` or
-- `app.name:VALUE`), set when it is inserted (or when the limit is set);
-- claims count the key's running jobs and recent starts.
ALTER TABLE jobs ADD COLUMN limit_key TEXT;
-- Running jobs per key, for the claim's count; only limited jobs are in it.
CREATE INDEX jobs_limit_running ON jobs (limit_key)
    WHERE status = 'running' AND limit_key IS NOT NULL;

CREATE TABLE limits (
    command      TEXT PRIMARY KEY,
    -- The key as given (`context.user_id`), and as json_extract reads it.
    key          TEXT,
    key_source   TEXT,
    key_path     TEXT,
    max_running  INTEGER,
    max_starts   INTEGER,
    per_secs     REAL,
    updated      INTEGER NOT NULL
) WITHOUT ROWID;

-- When each rate-limited key started a job, within its window.
CREATE TABLE limit_starts (
    limit_key TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX limit_starts_key ON limit_starts (limit_key, at);
