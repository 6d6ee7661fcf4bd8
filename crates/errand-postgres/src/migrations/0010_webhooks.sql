-- errand's PostgreSQL schema, version 10: webhooks. A job's webhook
-- ({"url", "on"}, NULL when it has none) is on its row. Each event its
-- webhook asks for gets one delivery row, queued by a scan of the event
-- log from the one cursor row (moved by compare-and-set, so servers
-- sharing the database queue each delivery once); a sender takes a due
-- delivery for a lease (SKIP LOCKED), and each attempt is recorded in the
-- job's event log.
ALTER TABLE errand_jobs ADD COLUMN webhook jsonb;

CREATE TABLE errand_webhook_deliveries (
    id       bigserial PRIMARY KEY,
    job_seq  bigint      NOT NULL,
    -- The event delivered: one delivery per event.
    event_id bigint      NOT NULL UNIQUE,
    url      text        NOT NULL,
    -- pending (due at next_at), sending (a sender holds it until next_at),
    -- delivered or failed.
    state    text        NOT NULL,
    attempts int         NOT NULL DEFAULT 0,
    next_at  timestamptz NOT NULL,
    sender   text
);
CREATE INDEX errand_webhook_deliveries_due ON errand_webhook_deliveries (next_at)
    WHERE state IN ('pending', 'sending');
CREATE INDEX errand_webhook_deliveries_job ON errand_webhook_deliveries (job_seq);

-- Where the next scan starts. Events already in the log are not
-- delivered: no job had a webhook.
CREATE TABLE errand_webhook_cursor (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    cursor bigint  NOT NULL
);
INSERT INTO errand_webhook_cursor (cursor)
    SELECT coalesce((SELECT last_value FROM errand_events_id_seq WHERE is_called), 0);
