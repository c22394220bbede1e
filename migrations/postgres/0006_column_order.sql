-- Runtime v2 row layout, second step: the columns a claim or a completion writes sit together at
-- the end of the row, and each page keeps room for a job's whole trip through it.
--
-- WAL: when the new row version lands on the same page as the old one, Postgres logs only the
-- bytes between the longest common prefix and the longest common suffix of the two versions.
-- With the columns in submission order, a claim (status near the front, `queued` at the end)
-- and a completion (status near the front, lease owner near the end) each logged nearly the
-- whole row, payload included. In this order the submission's immutable columns come first,
-- then what retries and failures change, then what every claim and completion changes, so a
-- claim or a completion logs only its last ~100 bytes (records of ~135 and ~120 bytes, headers
-- included, against ~250 and ~210 before).
--
-- Room: a job's row version is written at submission, again at the claim (a new version: it
-- leaves the queue's partial indexes) and again at the completion (HOT, on the same page only).
-- At fillfactor 70 a page full of submitted jobs had room for about half of their claimed
-- versions; the rest moved to other pages (each such move logs an extra lock record and makes
-- the completion of the moved row non-HOT where its new page is full). At 40, a page's claims
-- fit, and its completions fit once the claims' old versions are pruned.
--
-- The table is rebuilt (Postgres cannot reorder columns in place); indexes, triggers, the
-- sequence and the per-status counts carry over unchanged.

ALTER TABLE jobs RENAME TO jobs_v5;
ALTER INDEX jobs_pkey RENAME TO jobs_v5_pkey;
DROP INDEX jobs_queued_seq;
DROP INDEX jobs_queued_priority;
DROP INDEX jobs_queued_sjf;
DROP INDEX jobs_queued_created;
DROP INDEX jobs_rare_end_created;
DROP INDEX jobs_lease;
DROP INDEX jobs_dead_letters;

CREATE TABLE jobs (
    -- Set at submission, never changed.
    id                 uuid             PRIMARY KEY,
    created_at         timestamptz      NOT NULL,
    estimated_duration double precision NOT NULL,
    timeout_seconds    double precision,
    priority           smallint         NOT NULL,
    max_retries        integer          NOT NULL,
    name               text             NOT NULL,
    job_type           text             NOT NULL,
    payload            jsonb            NOT NULL,
    -- Changed when the job re-enters the queue, fails or is dead-lettered.
    seq                bigint           NOT NULL DEFAULT nextval('job_seq'),
    run_at             timestamptz      NOT NULL,
    retry_count        integer          NOT NULL DEFAULT 0,
    dead_letter        boolean          NOT NULL DEFAULT false,
    failed_at          timestamptz,
    error_message      text,
    checkpoint         jsonb,
    -- Changed by every claim (PENDING -> RUNNING) and completion.
    scheduled_at       timestamptz,
    started_at         timestamptz,
    attempt            integer          NOT NULL DEFAULT 0,
    slices             integer          NOT NULL DEFAULT 0,
    lease_expires_at   timestamptz,
    completed_at       timestamptz,
    result             jsonb,
    status             text             NOT NULL CONSTRAINT jobs_status_check
        CHECK (status IN ('PENDING', 'SCHEDULED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    lease_owner        text,
    queued             boolean GENERATED ALWAYS AS (status = 'PENDING') STORED,
    rare_end           smallint
        GENERATED ALWAYS AS (CASE status WHEN 'FAILED' THEN 1 WHEN 'CANCELLED' THEN 2 END) STORED
) WITH (fillfactor = 40);

-- No trigger is on the new table yet: job_counts and job_catalog already hold these rows.
INSERT INTO jobs (id, created_at, estimated_duration, timeout_seconds, priority, max_retries,
                  name, job_type, payload, seq, run_at, retry_count, dead_letter, failed_at,
                  error_message, checkpoint, scheduled_at, started_at, attempt, slices,
                  lease_expires_at, completed_at, result, status, lease_owner)
SELECT id, created_at, estimated_duration, timeout_seconds, priority, max_retries,
       name, job_type, payload, seq, run_at, retry_count, dead_letter, failed_at,
       error_message, checkpoint, scheduled_at, started_at, attempt, slices,
       lease_expires_at, completed_at, result, status, lease_owner
  FROM jobs_v5 ORDER BY seq;

ALTER SEQUENCE job_seq OWNED BY jobs.seq;
DROP TABLE jobs_v5;

-- The same indexes as before (see 0004 and 0005 for what each is for).
CREATE INDEX jobs_queued_seq ON jobs (seq) WHERE queued;
CREATE INDEX jobs_queued_priority ON jobs (priority, seq) WHERE queued;
CREATE INDEX jobs_queued_sjf ON jobs (estimated_duration, seq) WHERE queued;
CREATE INDEX jobs_queued_created ON jobs (created_at DESC, seq DESC) WHERE queued;
CREATE INDEX jobs_rare_end_created ON jobs (rare_end, created_at DESC, seq DESC)
    WHERE rare_end IS NOT NULL;
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX jobs_dead_letters ON jobs (failed_at DESC) WHERE dead_letter;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_counts_inserted();
CREATE TRIGGER jobs_counted_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_updated();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION job_counts_deleted();
CREATE TRIGGER jobs_counted_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_truncated();

ANALYZE jobs;
