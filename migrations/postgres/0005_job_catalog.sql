-- Listing keys in a table written once per job.
--
-- A claim (PENDING -> SCHEDULED) is not a HOT update: it must leave the queue's partial
-- indexes, so Postgres inserts the new row version into every other index of `jobs`. The
-- listing indexes (newest first; name prefix) were two of those four inserts per claim, and per
-- completion that found no room on its page. Their keys never change after submission, so they
-- move here: one row per job, written by the insert trigger (every writer of `jobs` keeps it
-- whole), read by the listings that have no partial index of their own.

CREATE TABLE job_catalog (
    id         uuid        NOT NULL,
    created_at timestamptz NOT NULL,
    -- The job's queue-entry sequence number at submission (ties on created_at, newest first).
    seq        bigint      NOT NULL,
    name       text        NOT NULL
);

INSERT INTO job_catalog (id, created_at, seq, name) SELECT id, created_at, seq, name FROM jobs;

CREATE INDEX job_catalog_created ON job_catalog (created_at DESC, seq DESC) INCLUDE (id);
CREATE INDEX job_catalog_name ON job_catalog (name COLLATE "C") INCLUDE (id);

DROP INDEX jobs_created;
DROP INDEX jobs_name_prefix;

CREATE OR REPLACE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT status, count(*), sum(job_run_ms(status, started_at, completed_at))
      FROM new_rows GROUP BY status;
    INSERT INTO job_catalog (id, created_at, seq, name)
    SELECT id, created_at, seq, name FROM new_rows;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT status, -count(*), -sum(job_run_ms(status, started_at, completed_at))
      FROM old_rows GROUP BY status;
    DELETE FROM job_catalog c USING old_rows o WHERE c.id = o.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_counts;
    DELETE FROM job_catalog;
    RETURN NULL;
END
$$;
