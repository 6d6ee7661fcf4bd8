-- errand's SQLite schema, version 9: webhooks. A job's webhook (JSON
-- {"url", "on"}, NULL when it has none) is on its row. Each event its
-- webhook asks for gets one delivery row, queued by a scan of the event
-- log from `meta.webhook_cursor`; a sender takes a due delivery for a
-- lease, and its attempts are recorded in the job's event log.
ALTER TABLE jobs ADD COLUMN webhook TEXT;

CREATE TABLE webhook_deliveries (
    id       INTEGER PRIMARY KEY,
    job_seq  INTEGER NOT NULL,
    -- The event delivered: one delivery per event.
    event_id INTEGER NOT NULL UNIQUE,
    url      TEXT    NOT NULL,
    -- pending (due at next_at), sending (a sender holds it until next_at),
    -- delivered or failed.
    state    TEXT    NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at  INTEGER NOT NULL,
    sender   TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at)
    WHERE state IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_seq);

-- Events already in the log are not delivered: no job had a webhook.
INSERT OR REPLACE INTO meta (key, value)
    VALUES ('webhook_cursor', max(coalesce((SELECT max(id) FROM events), 0),
        coalesce((SELECT value FROM meta WHERE key = 'events_floor'), 0)));
