-- errand's SQLite schema, version 1.
-- Times are integer microseconds since the Unix epoch (UTC).

CREATE TABLE jobs (
    -- Insertion order: the FIFO tie-breaker and the list cursor.
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL,
    app              TEXT    NOT NULL,
    command          TEXT    NOT NULL,
    input            TEXT    NOT NULL,
    context          TEXT,
    status           TEXT    NOT NULL,
    result           TEXT,
    error            TEXT,
    progress         TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    retry            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    queue            TEXT    NOT NULL,
    run_at           INTEGER NOT NULL,
    timeout_secs     REAL,
    idempotency_key  TEXT,
    parent_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_until      INTEGER,
    created          INTEGER NOT NULL,
    updated          INTEGER NOT NULL,
    started          INTEGER,
    finished         INTEGER,
    -- The last sequence number used in this job's event log.
    event_seq        INTEGER NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX jobs_id ON jobs (id);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim walks this index in order and stops after LIMIT rows: O(log n)
-- however many jobs are queued. Only `new` rows are in it.
CREATE INDEX jobs_ready ON jobs (queue, priority DESC, run_at, seq)
    WHERE status = 'new';
-- The reaper finds expired leases without scanning finished jobs.
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE status = 'running';
-- No index has `status` as a plain column: every status change would then
-- rewrite it. Lists by a rare status use these partial indexes; `new` and
-- `running` jobs are found through jobs_ready and jobs_lease.
CREATE INDEX jobs_command ON jobs (app, command, seq);
CREATE INDEX jobs_failed ON jobs (seq) WHERE status = 'failed';
CREATE INDEX jobs_canceled ON jobs (seq) WHERE status = 'canceled';
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished) WHERE finished IS NOT NULL;

CREATE TABLE events (
    -- Assigned by the writer above both max(id) and meta.events_floor, so a
    -- pruned newest event's id is never reused (a resuming /api/events
    -- client would skip an event). Cheaper than AUTOINCREMENT, which
    -- rewrites sqlite_sequence on every insert.
    id        INTEGER PRIMARY KEY,
    job_seq   INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    status    TEXT    NOT NULL,
    data      TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX events_job ON events (job_seq, seq);

CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    host           TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    queues         TEXT    NOT NULL,
    commands       TEXT    NOT NULL,
    slots          INTEGER NOT NULL,
    started        INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL
);

CREATE TABLE commands (
    app          TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    input_schema TEXT NOT NULL,
    defaults     TEXT NOT NULL,
    worker_id    TEXT,
    updated      INTEGER NOT NULL,
    PRIMARY KEY (app, name)
);

-- Small facts the store keeps about itself, e.g. events_floor: the highest
-- event id ever pruned.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
