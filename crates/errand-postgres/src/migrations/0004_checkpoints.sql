-- errand's PostgreSQL schema, version 4: a job keeps the last checkpoint
-- its handler saved, for the next attempt to continue from.
ALTER TABLE errand_jobs ADD COLUMN checkpoint jsonb;
