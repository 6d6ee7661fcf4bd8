-- errand's SQLite schema, version 3: a job keeps the last checkpoint its
-- handler saved, for the next attempt to continue from.
ALTER TABLE jobs ADD COLUMN checkpoint TEXT;
