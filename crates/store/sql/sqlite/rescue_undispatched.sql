-- SCHEDULED job ?1, never started, back to PENDING at queue position ?2 (nothing counted).
UPDATE jobs
SET status = 'PENDING', seq = ?2, lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1 AND status = 'SCHEDULED'
