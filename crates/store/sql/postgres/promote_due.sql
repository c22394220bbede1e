-- Delayed jobs whose time has come join their queue (a new sequence number: behind the jobs
-- already waiting); counted from DELAYED to PENDING.
WITH due AS (
SELECT ctid FROM jobs WHERE queued AND delayed AND run_at <= $1
ORDER BY run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED),
promoted AS (
UPDATE jobs j SET delayed = false, seq = nextval('job_seq')
WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM due))
AND j.delayed AND j.status = 'PENDING'
RETURNING j.queue, j.job_type),
counted AS (
INSERT INTO job_counts (queue, job_type, status, n, run_ms)
SELECT queue, job_type, 'DELAYED', -count(*), 0 FROM promoted GROUP BY 1, 2
UNION ALL
SELECT queue, job_type, 'PENDING', count(*), 0 FROM promoted GROUP BY 1, 2)
SELECT count(*) FROM promoted
