-- A dead letter (FAILED) -> PENDING with fresh retries, back in its queue (`entered`);
-- counted from FAILED to PENDING.
WITH retried AS (
UPDATE jobs SET status = 'PENDING', rare_end = NULL, retry_count = 0, dead_letter = false,
completed_at = NULL, failed_at = NULL, run_at = $2,
seq = nextval('job_seq'), lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'FAILED' AND dead_letter
RETURNING id, queue, job_type, job_count_key(status, delayed) AS k, seq, priority,
estimated_duration, run_at, delayed, created_at),
entered AS (
INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, delayed,
created_at, job_type)
SELECT id, queue, seq, priority, estimated_duration, run_at, delayed, created_at, job_type
FROM retried
ON CONFLICT (id) DO UPDATE SET queue = EXCLUDED.queue, seq = EXCLUDED.seq,
priority = EXCLUDED.priority, estimated_duration = EXCLUDED.estimated_duration,
run_at = EXCLUDED.run_at, delayed = EXCLUDED.delayed, created_at = EXCLUDED.created_at,
job_type = EXCLUDED.job_type),
counted AS (
INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
SELECT queue, job_type, 'FAILED', -1, 0, 0 FROM retried
UNION ALL SELECT queue, job_type, k, 1, 0, job_pending_est(k, estimated_duration) FROM retried)
SELECT count(*) FROM retried
