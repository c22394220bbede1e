-- A new lease for runs this owner holds, fenced by the attempt (no status change), listed in
-- `job_leases`. Waits for row locks, so a concurrent outcome is never skipped.
WITH renewed AS (
UPDATE jobs j SET lease_expires_at = $4
FROM UNNEST($1::uuid[], $2::int4[]) AS t(id, attempt)
WHERE j.id = t.id AND j.attempt = t.attempt AND (j.status = 'RUNNING') IS TRUE
AND j.lease_owner = $3
RETURNING j.id, j.attempt),
leased AS (
INSERT INTO job_leases (expires_at, owner, ids)
SELECT $4, $3, array_agg(id) FROM renewed HAVING count(*) > 0)
SELECT id, attempt FROM renewed
