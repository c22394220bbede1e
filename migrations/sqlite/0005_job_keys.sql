-- Idempotency keys (see migrations/postgres/0008_job_keys.sql).
CREATE TABLE job_keys (
    key         TEXT    PRIMARY KEY NOT NULL,
    job_id      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX job_keys_job ON job_keys (job_id);
CREATE TRIGGER job_keys_follow_jobs AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_keys WHERE job_id = OLD.id;
END;
