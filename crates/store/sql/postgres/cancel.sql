-- An open job -> CANCELLED; `old` locks it and reads the status (and count key) it leaves.
-- `gone` deletes its queue entry unless another statement holds it: it never waits, so it
-- cannot deadlock with a claim, which locks the entry before the job. An entry left so (a
-- claim holds it: that claim finds the job CANCELLED and deletes it; the promoter holds it: a
-- later claim does) is never claimed.
WITH old AS (
SELECT id, status, job_count_key(status, delayed) AS k, queue, job_type, estimated_duration FROM jobs
WHERE id = $1 AND status IN ('PENDING', 'SCHEDULED', 'RUNNING') FOR UPDATE),
cancelled AS (
UPDATE jobs j SET status = 'CANCELLED', rare_end = 2, completed_at = $2,
lease_owner = NULL, lease_expires_at = NULL
FROM old WHERE j.id = old.id
RETURNING old.status, old.k, old.queue, old.job_type, old.estimated_duration AS est),
gone AS (
DELETE FROM job_queue WHERE id IN (
SELECT id FROM job_queue WHERE id = $1 AND EXISTS (SELECT 1 FROM cancelled)
FOR UPDATE SKIP LOCKED)),
counted AS (
INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
SELECT queue, job_type, k, -1, 0, -job_pending_est(k, est) FROM cancelled
UNION ALL SELECT queue, job_type, 'CANCELLED', 1, 0, 0 FROM cancelled)
SELECT status FROM cancelled
