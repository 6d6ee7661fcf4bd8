-- errand's PostgreSQL schema, version 7: cluster-wide limits per command.
-- A job of a limited command carries its limit key (`app.name` or
-- `app.name:VALUE`), set when it is inserted (or when the limit is set);
-- claims count the key's running jobs and recent starts under an advisory
-- lock per key, so two servers never both take the last place.
ALTER TABLE errand_jobs ADD COLUMN limit_key text;
CREATE INDEX errand_jobs_limit_running ON errand_jobs (limit_key)
    WHERE status = 'running' AND limit_key IS NOT NULL;

CREATE TABLE errand_limits (
    command     text PRIMARY KEY,
    -- The key as given (`context.user_id`), and as `#>>` reads it.
    key         text,
    key_source  text,
    key_path    text[],
    max_running integer,
    max_starts  integer,
    per_secs    double precision,
    updated     timestamptz NOT NULL
);

-- When each rate-limited key started a job, within its window.
CREATE TABLE errand_limit_starts (
    limit_key text        NOT NULL,
    at        timestamptz NOT NULL
);
CREATE INDEX errand_limit_starts_key ON errand_limit_starts (limit_key, at);
