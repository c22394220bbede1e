UPDATE jobs SET lease_expires_at = ?4
WHERE id = ?1 AND attempt = ?2 AND status = 'RUNNING' AND lease_owner = ?3
