WITH gone AS (DELETE FROM job_counts
RETURNING queue, job_type, status, n, run_ms)
INSERT INTO job_counts (queue, job_type, status, n, run_ms)
SELECT queue, job_type, status, sum(n), sum(run_ms) FROM gone
GROUP BY queue, job_type, status
HAVING sum(n) <> 0
