-- errand's PostgreSQL schema, version 2.
--
-- The idempotency key's unique index covered every job, so every job
-- without a key (nearly all) had a NULL entry in it, and every update of
-- a job that is not HOT (each claim and each outcome: they change
-- indexed columns) inserted another. Only keyed jobs need the index.
ALTER TABLE errand_jobs DROP CONSTRAINT errand_jobs_idempotency_key_key;
CREATE UNIQUE INDEX errand_jobs_idempotency_key ON errand_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
