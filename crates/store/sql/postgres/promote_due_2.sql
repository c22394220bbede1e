-- The jobs of the entries promote_due.sql promoted ($1 ids, $2 their new sequence numbers):
-- delayed PENDING -> PENDING, counted from DELAYED to PENDING.
WITH promoted AS (
UPDATE jobs j SET delayed = false, seq = t.seq
FROM UNNEST($1::uuid[], $2::int8[]) AS t(id, seq)
WHERE j.id = t.id AND j.delayed AND j.status = 'PENDING'
RETURNING j.queue, j.job_type),
counted AS (
INSERT INTO job_counts (queue, job_type, status, n, run_ms)
SELECT queue, job_type, 'DELAYED', -count(*), 0 FROM promoted GROUP BY 1, 2
UNION ALL
SELECT queue, job_type, 'PENDING', count(*), 0 FROM promoted GROUP BY 1, 2)
SELECT count(*) FROM promoted
