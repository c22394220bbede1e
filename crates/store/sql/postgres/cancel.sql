WITH old AS (
SELECT id, status FROM jobs
WHERE id = $1 AND status IN ('PENDING', 'SCHEDULED', 'RUNNING') FOR UPDATE)
UPDATE jobs j SET status = 'CANCELLED', completed_at = $2,
lease_owner = NULL, lease_expires_at = NULL
FROM old WHERE j.id = old.id RETURNING old.status
