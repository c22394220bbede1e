DELETE FROM jobs WHERE id = ?1 AND dead_letter = 0
AND ((status = 'COMPLETED' AND coalesce(completed_at, created_at) < ?2)
OR (status IN ('FAILED', 'CANCELLED')
AND coalesce(completed_at, failed_at, created_at) < ?3))
