-- errand's PostgreSQL schema, version 9: what a job can be found by. Its
-- tags (a JSON array, NULL when it has none) are on the row for reading;
-- each tag and each plain top-level context value is a label, written once
-- when the job is submitted, so that a filter is an index range however
-- many jobs there are. A label table rather than a GIN index on the jobs
-- table: a job's row is updated at every transition and never HOT, so a
-- GIN entry on it would be written again each time; a label row is written
-- once. Jobs without tags or context cost nothing here.
ALTER TABLE errand_jobs ADD COLUMN tags jsonb;

CREATE TABLE errand_job_labels (
    -- `tag`, or `context.` and the context key.
    key     text   NOT NULL,
    -- The tag, or the value's text (a number as JSON writes it).
    value   text   NOT NULL,
    job_seq bigint NOT NULL,
    PRIMARY KEY (key, value, job_seq)
);
-- A job's labels, for deleting them with it.
CREATE INDEX errand_job_labels_job ON errand_job_labels (job_seq);

-- The jobs already there: their context's plain values (strings, numbers,
-- booleans of at most 256 characters), as the store labels new jobs.
INSERT INTO errand_job_labels (key, value, job_seq)
    SELECT 'context.' || c.key, c.value #>> '{}', j.seq
    FROM errand_jobs j, jsonb_each(j.context) AS c
    WHERE jsonb_typeof(j.context) = 'object'
      AND jsonb_typeof(c.value) IN ('string', 'number', 'boolean')
      AND length(c.value #>> '{}') <= 256;
