WITH gone AS (DELETE FROM job_counts
RETURNING queue, job_type, status, n, run_ms, est)
INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
SELECT queue, job_type, status, sum(n), sum(run_ms), sum(est) FROM gone
GROUP BY queue, job_type, status
HAVING sum(n) <> 0 OR sum(est) <> 0
