-- The counts per (queue, job type, key) as the rows have them, minus what the kept deltas sum
-- to, both on this transaction's snapshot, added to job_counts as corrections. A delta written
-- by a statement that commits after the snapshot is in neither side, so it stays right. The
-- summed run times are corrected with the counts they go with; the PENDING key's summed
-- estimates (`est`, migration 0020) whenever they are off by more than a millisecond (sums of
-- millions of estimates differ by rounding alone). Returns the jobs' worth of difference found.
WITH truth AS (
    SELECT queue, job_type, job_count_key(status, delayed) AS status, count(*) AS n,
           sum(job_run_ms(status, started_at, completed_at)) AS run_ms,
           sum(job_pending_est(job_count_key(status, delayed), estimated_duration)) AS est
    FROM jobs
    GROUP BY 1, 2, 3
), kept AS (
    SELECT queue, job_type, status, sum(n) AS n, sum(run_ms) AS run_ms, sum(est) AS est
    FROM job_counts
    GROUP BY 1, 2, 3
), drift AS (
    SELECT queue, job_type, status, coalesce(t.n, 0) - coalesce(k.n, 0) AS n,
           coalesce(t.run_ms, 0) - coalesce(k.run_ms, 0) AS run_ms,
           coalesce(t.est, 0) - coalesce(k.est, 0) AS est
    FROM truth t FULL JOIN kept k USING (queue, job_type, status)
), corrected AS (
    INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
    SELECT queue, job_type, status, n, CASE WHEN n <> 0 THEN run_ms ELSE 0 END, est
    FROM drift WHERE n <> 0 OR abs(est) > 1e-3
    RETURNING n
)
SELECT coalesce(sum(abs(n)), 0)::int8 FROM corrected
