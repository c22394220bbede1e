-- The RUNNING jobs held under `$1`'s leases with the expiries `$2` (the claims of exchanges
-- whose replies were lost), found through `job_leases`.
SELECT id, attempt FROM jobs
WHERE id IN (SELECT unnest(ids) FROM job_leases WHERE expires_at = ANY($2) AND owner = $1)
AND lease_expires_at = ANY($2) AND lease_owner = $1
AND (status = 'RUNNING') IS TRUE
