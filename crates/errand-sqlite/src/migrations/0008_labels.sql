-- errand's SQLite schema, version 8: what a job can be found by. Its tags
-- (a JSON array, NULL when it has none) are on the row for reading; each
-- tag and each plain top-level context value is a label, written once when
-- the job is submitted, so that a filter is an index range however many
-- jobs there are. Jobs without tags or context cost nothing here.
ALTER TABLE jobs ADD COLUMN tags TEXT;

CREATE TABLE job_labels (
    -- `tag`, or `context.` and the context key.
    key     TEXT    NOT NULL,
    -- The tag, or the value's text (a number as JSON writes it).
    value   TEXT    NOT NULL,
    job_seq INTEGER NOT NULL,
    PRIMARY KEY (key, value, job_seq)
) WITHOUT ROWID;
-- A job's labels, for deleting them with it.
CREATE INDEX job_labels_job ON job_labels (job_seq);

-- The jobs already there: their context's plain values (strings, numbers,
-- booleans of at most 256 characters), as the writer labels new jobs.
INSERT INTO job_labels (key, value, job_seq)
    SELECT 'context.' || c.key,
           CASE c.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                ELSE CAST(c.value AS TEXT) END,
           jobs.seq
    FROM jobs, json_each(jobs.context) AS c
    WHERE jobs.context IS NOT NULL AND json_type(jobs.context) = 'object'
      AND c.type IN ('text', 'integer', 'real', 'true', 'false')
      AND length(CAST(c.value AS TEXT)) <= 256;
