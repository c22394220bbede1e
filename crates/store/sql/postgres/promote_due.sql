WITH due AS (
SELECT ctid FROM jobs WHERE queued AND delayed AND run_at <= $1
ORDER BY run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE jobs j SET delayed = false, seq = nextval('job_seq')
WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM due))
AND j.delayed AND j.status = 'PENDING'
