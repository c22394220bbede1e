-- Runtime v2 row layout: a job's trip from SCHEDULED to COMPLETED is a HOT update.
--
-- An UPDATE is HOT (a new row version on the same page, no index touched) when no indexed
-- column changes and the page has room. So no index and no partial-index predicate refers to
-- `status` itself; they refer to two generated columns whose values only change when a job
-- enters or leaves the queue, fails or is cancelled:
--   queued   = status is PENDING (the dispatch orders and the PENDING listing);
--   rare_end = 1 for FAILED, 2 for CANCELLED (their listings), NULL otherwise.
-- SCHEDULED -> RUNNING -> COMPLETED changes neither, nor any other indexed column: the
-- completion leaves `lease_expires_at` as it was (reads show it only while the job is in
-- flight), and `fillfactor` leaves each page room for the new version.
--
-- Counts per status come from `job_counts`, kept by statement triggers (one aggregate per
-- statement, not per row), instead of an index on status that every transition would update.

ALTER TABLE jobs SET (fillfactor = 70);
ALTER TABLE jobs ADD COLUMN queued boolean GENERATED ALWAYS AS (status = 'PENDING') STORED;
ALTER TABLE jobs ADD COLUMN rare_end smallint
    GENERATED ALWAYS AS (CASE status WHEN 'FAILED' THEN 1 WHEN 'CANCELLED' THEN 2 END) STORED;

DROP INDEX jobs_pending_seq;
DROP INDEX jobs_pending_priority;
DROP INDEX jobs_pending_sjf;
DROP INDEX jobs_status;
DROP INDEX jobs_status_created;
DROP INDEX jobs_lease_expiry;

-- The dispatch orders (FCFS / Round Robin by seq, Priority, SJF) over queued rows only.
CREATE INDEX jobs_queued_seq ON jobs (seq) WHERE queued;
CREATE INDEX jobs_queued_priority ON jobs (priority, seq) WHERE queued;
CREATE INDEX jobs_queued_sjf ON jobs (estimated_duration, seq) WHERE queued;
-- Listings by status, newest first: PENDING, and FAILED / CANCELLED. SCHEDULED, RUNNING and
-- COMPLETED are listed from jobs_created.
CREATE INDEX jobs_queued_created ON jobs (created_at DESC, seq DESC) WHERE queued;
CREATE INDEX jobs_rare_end_created ON jobs (rare_end, created_at DESC, seq DESC)
    WHERE rare_end IS NOT NULL;
-- The rescuer's scan: leases that expired since its last pass (see rescue_marks). Completed
-- rows keep their last lease, so the rescuer reads each row about once, after its lease ends.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- Older rows from before this layout: a completed or failed row's lease means nothing.
UPDATE jobs SET lease_expires_at = NULL
 WHERE status NOT IN ('SCHEDULED', 'RUNNING') AND lease_expires_at IS NOT NULL;

-- How far the rescuer has looked: leases that ended before `scanned_to` were examined.
CREATE TABLE rescue_marks (
    name       text        PRIMARY KEY,
    scanned_to timestamptz NOT NULL
);

-- Deltas of the number of jobs per status (and of the summed run time of COMPLETED jobs, in
-- ms). Appended by the triggers below; summed by readers; folded into one row per status now
-- and then (see PgStore::stats), so it stays a few rows long.
CREATE TABLE job_counts (
    status text             NOT NULL,
    n      bigint           NOT NULL,
    run_ms double precision NOT NULL
);
INSERT INTO job_counts (status, n, run_ms)
SELECT status, count(*),
       coalesce(sum(EXTRACT(EPOCH FROM (completed_at - started_at)) * 1000)
                    FILTER (WHERE status = 'COMPLETED'), 0)
  FROM jobs GROUP BY status;

-- Run time in ms that a row adds to the COMPLETED sum (0 for any other status).
CREATE FUNCTION job_run_ms(status text, started timestamptz, completed timestamptz)
RETURNS double precision LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN status = 'COMPLETED' AND started IS NOT NULL AND completed IS NOT NULL
                THEN EXTRACT(EPOCH FROM (completed - started))::float8 * 1000 ELSE 0 END
$$;

CREATE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT status, count(*), sum(job_run_ms(status, started_at, completed_at))
      FROM new_rows GROUP BY status;
    RETURN NULL;
END
$$;

CREATE FUNCTION job_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT status, sum(n), sum(run_ms)
      FROM (SELECT status, 1 AS n, job_run_ms(status, started_at, completed_at) AS run_ms
              FROM new_rows
            UNION ALL
            SELECT status, -1, -job_run_ms(status, started_at, completed_at) FROM old_rows) d
     GROUP BY status
    HAVING sum(n) <> 0 OR sum(run_ms) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT status, -count(*), -sum(job_run_ms(status, started_at, completed_at))
      FROM old_rows GROUP BY status;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_counts_inserted();
CREATE TRIGGER jobs_counted_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_updated();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION job_counts_deleted();

CREATE FUNCTION job_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_counts;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_counted_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_truncated();
