-- Named queues: every job waits in one (`default` unless the submission names another) and
-- keeps it for life. Each queue has its own settings (policy, quantum, paused, concurrency
-- limit, weight): `default`'s are the `policy` settings row, another queue's the row
-- `queue:<name>`.
--
-- A claim takes jobs from one queue in that queue's order, so the claim orders lead with the
-- queue. `queue` never changes, so completions stay HOT.

ALTER TABLE jobs ADD COLUMN queue text NOT NULL DEFAULT 'default';

DROP INDEX jobs_queued_seq;
DROP INDEX jobs_queued_priority;
DROP INDEX jobs_queued_sjf;
CREATE INDEX jobs_queued_seq ON jobs (queue, seq) WHERE queued AND NOT delayed;
CREATE INDEX jobs_queued_priority ON jobs (queue, priority, seq) WHERE queued AND NOT delayed;
CREATE INDEX jobs_queued_sjf ON jobs (queue, estimated_duration, seq) WHERE queued AND NOT delayed;

-- The kept counts are per queue too: a queue's depth and running count (and the running
-- count a concurrency limit is checked against) are sums over a few rows, not scans.
ALTER TABLE job_counts ADD COLUMN queue text NOT NULL DEFAULT 'default';

CREATE OR REPLACE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, status, n, run_ms)
    SELECT queue, job_count_key(status, delayed), count(*),
           sum(job_run_ms(status, started_at, completed_at))
      FROM new_rows GROUP BY 1, 2;
    INSERT INTO job_catalog (id, created_at, seq, name)
    SELECT id, created_at, seq, name FROM new_rows;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, status, n, run_ms)
    SELECT q, k, sum(n), sum(run_ms)
      FROM (SELECT queue AS q, job_count_key(status, delayed) AS k, 1 AS n,
                   job_run_ms(status, started_at, completed_at) AS run_ms
              FROM new_rows
            UNION ALL
            SELECT queue, job_count_key(status, delayed), -1,
                   -job_run_ms(status, started_at, completed_at)
              FROM old_rows) d
     GROUP BY q, k
    HAVING sum(n) <> 0 OR sum(run_ms) <> 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, status, n, run_ms)
    SELECT queue, job_count_key(status, delayed), -count(*),
           -sum(job_run_ms(status, started_at, completed_at))
      FROM old_rows GROUP BY 1, 2;
    DELETE FROM job_catalog c USING old_rows o WHERE c.id = o.id;
    DELETE FROM job_keys k USING old_rows o WHERE k.job_id = o.id;
    RETURN NULL;
END
$$;
