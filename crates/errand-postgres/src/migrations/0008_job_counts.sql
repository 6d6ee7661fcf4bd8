-- errand's PostgreSQL schema, version 8: jobs by command and status, kept
-- by the writes so that the stats read costs the same at any table size.
-- Each commit inserts what it moved as delta rows, never updating a shared
-- row (concurrent transactions would queue on its lock); a fold sums the
-- rows of each count into one, now and then and before each stats read.
CREATE TABLE errand_job_counts (
    app     text NOT NULL,
    command text NOT NULL,
    status  text NOT NULL,
    n       bigint NOT NULL
);
-- The jobs already there, counted once.
INSERT INTO errand_job_counts (app, command, status, n)
    SELECT app, command, status, count(*) FROM errand_jobs GROUP BY app, command, status;
