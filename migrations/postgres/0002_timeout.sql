-- Per-run timeout asked for by the submission, seconds; NULL = the job type's default.
ALTER TABLE jobs ADD COLUMN timeout_seconds double precision;
