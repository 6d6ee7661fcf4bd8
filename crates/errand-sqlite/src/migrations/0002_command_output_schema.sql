-- errand's SQLite schema, version 2: a command publishes the JSON Schema
-- of its result too (workers in other languages describe both ends).
ALTER TABLE commands ADD COLUMN output_schema TEXT;
