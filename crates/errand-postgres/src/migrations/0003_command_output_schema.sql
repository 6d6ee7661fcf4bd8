-- errand's PostgreSQL schema, version 3: a command publishes the JSON
-- Schema of its result too (workers in other languages describe both ends).
ALTER TABLE errand_commands ADD COLUMN output_schema jsonb;
