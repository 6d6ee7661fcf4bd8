-- errand's PostgreSQL schema, version 6: periodic jobs. `next_run` is the
-- earliest tick not yet taken; a scheduler takes due ticks by moving it on
-- (compare-and-set), so each tick is taken once however many servers run.
CREATE TABLE errand_schedules (
    name        text PRIMARY KEY,
    cron        text        NOT NULL,
    timezone    text        NOT NULL,
    missed      text        NOT NULL,
    -- The submit request each tick makes.
    job         jsonb       NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    next_run    timestamptz,
    last_tick   timestamptz,
    last_job_id text,
    last_error  text,
    created     timestamptz NOT NULL,
    updated     timestamptz NOT NULL
);
