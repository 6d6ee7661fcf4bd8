-- errand's SQLite schema, version 5: periodic jobs. `next_run` is the
-- earliest tick not yet taken; a scheduler takes due ticks by moving it on
-- (compare-and-set), so each tick is taken once.
CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    cron        TEXT    NOT NULL,
    timezone    TEXT    NOT NULL,
    missed      TEXT    NOT NULL,
    -- The submit request each tick makes, as JSON.
    job         TEXT    NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    next_run    INTEGER,
    last_tick   INTEGER,
    last_job_id TEXT,
    last_error  TEXT,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
) WITHOUT ROWID;
