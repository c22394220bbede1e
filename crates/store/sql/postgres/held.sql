SELECT id, attempt FROM jobs
WHERE lease_expires_at = ANY($2) AND lease_owner = $1
AND (status = 'RUNNING') IS TRUE
