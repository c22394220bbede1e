-- The backlog (the estimated seconds of work waiting in each queue, which the API's
-- `jobsched_backlog_seconds` gauge reports for autoscalers) is kept with the counts instead of
-- summed over the queue entries.
--
-- The sum was a scan of `job_queue`: with 10M jobs pending it took 1-5 s, every ten seconds
-- or more, and it was a transaction open for that long, which the queue floors (migration
-- 0019) wait for before they rise. Measured in the 10M runs (BENCHMARKS.md, 2026-12-07): a
-- floor stalled 4 s behind it, and the raise that followed read 133k heap blocks.
--
-- `est` is the summed `estimated_duration` of the jobs a delta row counts, for the PENDING key
-- only (0 for every other key, DELAYED included): every statement that moves jobs into or out
-- of PENDING writes it with its count (`job_pending_est`). A process of an earlier version that
-- still moves jobs after this migration (during a rolling upgrade) writes 0; the engine
-- leader's recount (when it takes over and every hour after, DispatchStore::recount) corrects
-- the sums as it corrects the counts.
ALTER TABLE job_counts ADD COLUMN est double precision NOT NULL DEFAULT 0;

-- What a delta row of count key `key` adds to the backlog for jobs whose estimates sum to
-- `est` (NULL: none).
CREATE FUNCTION job_pending_est(key text, est double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN key = 'PENDING' THEN coalesce(est, 0) ELSE 0 END
$$;

-- The estimates of the jobs pending now (their counts are kept already), from their queue
-- entries: a read of the narrow table, during which `job_counts` stays locked by the ALTER
-- above (seconds with millions of jobs pending). An entry whose job is no longer PENDING (left
-- by an earlier version) is corrected by the recount.
INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
SELECT queue, job_type, 'PENDING', 0, 0, sum(estimated_duration)
  FROM job_queue WHERE NOT delayed
 GROUP BY 1, 2;

CREATE OR REPLACE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
    SELECT queue, job_type, job_count_key(status, delayed), count(*),
           sum(job_run_ms(status, started_at, completed_at)),
           sum(job_pending_est(job_count_key(status, delayed), estimated_duration))
      FROM new_rows GROUP BY 1, 2, 3;
    INSERT INTO job_catalog (id, created_at, seq, name)
    SELECT id, created_at, seq, name FROM new_rows;
    INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, delayed,
                           created_at, job_type)
    SELECT id, queue, seq, priority, estimated_duration, run_at, delayed, created_at, job_type
      FROM new_rows WHERE status = 'PENDING';
    IF EXISTS (SELECT 1 FROM new_rows WHERE job_rare_end(status) IS NOT NULL) THEN
        UPDATE jobs j SET rare_end = job_rare_end(n.status)
          FROM new_rows n
         WHERE j.id = n.id AND job_rare_end(n.status) IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
    SELECT queue, job_type, job_count_key(status, delayed), -count(*),
           -sum(job_run_ms(status, started_at, completed_at)),
           -sum(job_pending_est(job_count_key(status, delayed), estimated_duration))
      FROM old_rows GROUP BY 1, 2, 3;
    DELETE FROM job_catalog c USING old_rows o WHERE c.id = o.id;
    DELETE FROM job_keys k USING old_rows o WHERE k.job_id = o.id;
    DELETE FROM job_queue q USING old_rows o WHERE q.id = o.id;
    RETURN NULL;
END
$$;
