-- errand's PostgreSQL schema, version 5: queues paused for every worker.
CREATE TABLE errand_paused_queues (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL
);
