UPDATE jobs SET status = 'RUNNING', lease_owner = ?3, lease_expires_at = ?5,
started_at = CASE WHEN status = 'SCHEDULED' THEN ?4 ELSE started_at END,
slices = slices + (status = 'SCHEDULED')
WHERE id = ?1 AND attempt = ?2
AND (status = 'SCHEDULED' OR (status = 'RUNNING' AND lease_owner = ?3))
