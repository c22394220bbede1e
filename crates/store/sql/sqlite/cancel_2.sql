UPDATE jobs SET status = 'CANCELLED', completed_at = ?2,
lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1
