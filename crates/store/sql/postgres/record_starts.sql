-- SCHEDULED -> RUNNING, fenced by the attempt, for runs that began at t.started. A row already
-- RUNNING under this owner counts as applied (a retry after a lost reply) and is left as it is
-- but for the lease. `old` decides which rows apply and locks them in id order (the lock holds
-- what it read until the UPDATE), with the status each leaves: only the ones that were
-- SCHEDULED are counted again (`counted`). `leased` lists the lease.
WITH old AS (
SELECT j.id, j.status,
CASE WHEN j.status = 'SCHEDULED' THEN t.started ELSE j.started_at END AS started_at,
j.slices + (j.status = 'SCHEDULED')::int AS slices
FROM jobs j
JOIN UNNEST($1::uuid[], $2::int4[], $3::timestamptz[]) AS t(id, attempt, started)
ON j.id = t.id AND j.attempt = t.attempt
WHERE (j.status = 'SCHEDULED' OR (j.status = 'RUNNING' AND j.lease_owner = $4)) IS TRUE
ORDER BY j.id
FOR UPDATE OF j),
started AS (
UPDATE jobs j SET status = 'RUNNING', lease_owner = $4, lease_expires_at = $5,
started_at = o.started_at, slices = o.slices
FROM old o WHERE j.id = o.id
RETURNING j.id, j.attempt, j.queue, j.job_type, o.status AS was),
leased AS (
INSERT INTO job_leases (expires_at, owner, ids)
SELECT $5, $4, array_agg(id) FROM started HAVING count(*) > 0),
counted AS (
INSERT INTO job_counts (queue, job_type, status, n, run_ms)
SELECT queue, job_type, 'SCHEDULED', -count(*), 0 FROM started WHERE was = 'SCHEDULED'
GROUP BY 1, 2
UNION ALL
SELECT queue, job_type, 'RUNNING', count(*), 0 FROM started WHERE was = 'SCHEDULED'
GROUP BY 1, 2)
SELECT id, attempt FROM started
