SELECT id, attempt FROM jobs
WHERE status = 'RUNNING' AND lease_owner = ?1 AND lease_expires_at = ?2
