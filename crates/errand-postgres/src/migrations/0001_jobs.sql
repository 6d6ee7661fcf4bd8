-- errand's PostgreSQL schema, version 1. Applied under an advisory lock.

CREATE TABLE errand_jobs (
    -- Insertion order: the FIFO tie-breaker and the list cursor.
    seq              bigserial PRIMARY KEY,
    id               text        NOT NULL UNIQUE,
    app              text        NOT NULL,
    command          text        NOT NULL,
    input            jsonb       NOT NULL,
    context          jsonb,
    status           text        NOT NULL,
    result           jsonb,
    error            jsonb,
    progress         jsonb,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    retry            jsonb       NOT NULL,
    priority         integer     NOT NULL DEFAULT 0,
    queue            text        NOT NULL,
    run_at           timestamptz NOT NULL,
    timeout_secs     double precision,
    idempotency_key  text UNIQUE,
    parent_id        text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    worker_id        text,
    lease_until      timestamptz,
    created          timestamptz NOT NULL,
    updated          timestamptz NOT NULL,
    started          timestamptz,
    finished         timestamptz,
    event_seq        bigint      NOT NULL DEFAULT 0
);

-- The claim walks this index in order and stops at LIMIT, skipping rows
-- other workers hold (FOR UPDATE SKIP LOCKED).
CREATE INDEX errand_jobs_ready ON errand_jobs (queue, priority DESC, run_at, seq)
    WHERE status = 'new';
CREATE INDEX errand_jobs_lease ON errand_jobs (lease_until) WHERE status = 'running';
CREATE INDEX errand_jobs_command ON errand_jobs (app, command, seq);
CREATE INDEX errand_jobs_failed ON errand_jobs (seq) WHERE status = 'failed';
CREATE INDEX errand_jobs_canceled ON errand_jobs (seq) WHERE status = 'canceled';
CREATE INDEX errand_jobs_parent ON errand_jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX errand_jobs_finished ON errand_jobs (finished) WHERE finished IS NOT NULL;

CREATE TABLE errand_events (
    id       bigserial   PRIMARY KEY,
    job_seq  bigint      NOT NULL,
    seq      bigint      NOT NULL,
    kind     text        NOT NULL,
    status   text        NOT NULL,
    data     jsonb       NOT NULL,
    at       timestamptz NOT NULL,
    UNIQUE (job_seq, seq)
);

CREATE TABLE errand_workers (
    id             text PRIMARY KEY,
    host           text        NOT NULL,
    pid            bigint      NOT NULL,
    queues         jsonb       NOT NULL,
    commands       jsonb       NOT NULL,
    slots          bigint      NOT NULL,
    started        timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL
);

CREATE TABLE errand_commands (
    app          text NOT NULL,
    name         text NOT NULL,
    description  text,
    input_schema jsonb NOT NULL,
    defaults     jsonb NOT NULL,
    worker_id    text,
    updated      timestamptz NOT NULL,
    PRIMARY KEY (app, name)
);
