-- Scheduled jobs: a submission may ask not to run before a given time (`run_at`).
--
-- Such a job is PENDING but *delayed*: it is in none of the claim orders until the leader
-- promotes it (`delayed = false`, a fresh `seq`) when its time comes. The claim indexes only
-- hold rows that may run now, so a claim never steps over a backlog of future jobs (with the
-- claim ordered by `seq` and a `run_at` filter, a million jobs scheduled for tomorrow would be
-- read by every claim today). A promoted job enters the queue like a new submission: behind the
-- jobs that were waiting before its time came.
--
-- `delayed` is only written at submission and by the promotion, so completions stay HOT.

ALTER TABLE jobs ADD COLUMN delayed boolean NOT NULL DEFAULT false;

DROP INDEX jobs_queued_seq;
DROP INDEX jobs_queued_priority;
DROP INDEX jobs_queued_sjf;
CREATE INDEX jobs_queued_seq ON jobs (seq) WHERE queued AND NOT delayed;
CREATE INDEX jobs_queued_priority ON jobs (priority, seq) WHERE queued AND NOT delayed;
CREATE INDEX jobs_queued_sjf ON jobs (estimated_duration, seq) WHERE queued AND NOT delayed;
-- The promotion's order, and the next time one is due.
CREATE INDEX jobs_delayed ON jobs (run_at, seq) WHERE queued AND delayed;

-- The counts keep delayed PENDING jobs apart, under the key DELAYED (readers add them to
-- PENDING), so `/jobs/stats` reports them without a scan.
CREATE FUNCTION job_count_key(status text, delayed boolean)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN delayed AND status = 'PENDING' THEN 'DELAYED' ELSE status END
$$;

CREATE OR REPLACE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT job_count_key(status, delayed), count(*),
           sum(job_run_ms(status, started_at, completed_at))
      FROM new_rows GROUP BY 1;
    INSERT INTO job_catalog (id, created_at, seq, name)
    SELECT id, created_at, seq, name FROM new_rows;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT k, sum(n), sum(run_ms)
      FROM (SELECT job_count_key(status, delayed) AS k, 1 AS n,
                   job_run_ms(status, started_at, completed_at) AS run_ms
              FROM new_rows
            UNION ALL
            SELECT job_count_key(status, delayed), -1,
                   -job_run_ms(status, started_at, completed_at)
              FROM old_rows) d
     GROUP BY k
    HAVING sum(n) <> 0 OR sum(run_ms) <> 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (status, n, run_ms)
    SELECT job_count_key(status, delayed), -count(*),
           -sum(job_run_ms(status, started_at, completed_at))
      FROM old_rows GROUP BY 1;
    DELETE FROM job_catalog c USING old_rows o WHERE c.id = o.id;
    RETURN NULL;
END
$$;
