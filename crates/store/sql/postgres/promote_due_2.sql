-- The delayed jobs promote_due.sql locked ($1, earliest first) join their queue, each with a
-- new sequence number in that order (behind the jobs already waiting): their entries, and
-- their jobs (delayed PENDING -> PENDING, counted from DELAYED to PENDING). An entry whose job
-- is no longer a delayed PENDING one (left by a process of an earlier version) moves too, and
-- the claim that meets it drops it.
WITH t AS (
SELECT u.id, nextval('job_seq') AS seq
FROM UNNEST($1::uuid[]) WITH ORDINALITY AS u(id, ord) ORDER BY u.ord),
moved AS (
UPDATE job_queue q SET delayed = false, seq = t.seq FROM t WHERE q.id = t.id),
promoted AS (
UPDATE jobs j SET delayed = false, seq = t.seq
FROM t
WHERE j.id = t.id AND j.delayed AND j.status = 'PENDING'
RETURNING j.queue, j.job_type, j.estimated_duration),
counted AS (
INSERT INTO job_counts (queue, job_type, status, n, run_ms, est)
SELECT queue, job_type, 'DELAYED', -count(*), 0, 0 FROM promoted GROUP BY 1, 2
UNION ALL
SELECT queue, job_type, 'PENDING', count(*), 0, sum(estimated_duration) FROM promoted
GROUP BY 1, 2)
SELECT count(*) FROM promoted
